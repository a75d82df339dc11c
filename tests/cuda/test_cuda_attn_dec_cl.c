/*
 * tests/cuda/test_cuda_attn_dec_cl.c — the one-launch cluster decode attention
 * (src/cuda/attn_dec_cl.cu, cuda_attn_dec_cluster) against the CPU loop attn_ref
 * (test_cuda_layer_attn.c) and against attention_dec.cu's two kernels, BIT FOR BIT, at Flash
 * shapes and at the edges of its slicing: rows not a multiple of the 8 slices (slices left
 * empty), heads not a multiple of its 4-head clusters, 1024 rows, the position from the device
 * with a larger bound, the ring wrapped; and with q's per-head norm + RoPE inside
 * (cuda_attn_dec_qnorm: fused, and its fallback through cuda_norm_rope_qat) against the CPU's
 * cpu_rmsnorm + cpu_rope_tail then attn_ref; plus, with --bench, the kernels timed in one process.
 * Called from test_cuda_indexer.c (test_indexer_prep / bench_indexer); test code only.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/ops.h"
#include "cuda/cuda_api.h"

#include "layer_check.h"

void attn_ref(const float *q, const float *kv_chunk, const float *ring, int64_t W,
              const float *comp, int ratio, const int32_t *isel, const int32_t *n_isel,
              int64_t topk, const float *sinks, int64_t n_tok, int64_t pos0, int64_t H,
              int64_t Dh, int n_rope, const float *freqs, float *out);
void test_attn_dec_cl(void);
void bench_attn_dec_cl(void);

static const cpu_rope_cfg cl_yarn = {64, 160000.0, 16.0, 32.0, 1.0, 65536.0};

typedef struct {
    const char *what;
    int64_t H, pos, bound; /* bound > 0: cuda_attn_dpos with the position on the device */
    int ratio;
    int64_t topk, n_sel;   /* topk > 0: the indexer's selection of n_sel rows (ratio 4) */
} cl_case;

static ds4_status cl_call(const cl_case *c, int qnorm, float *dq, const float *dkv, const float *dring,
                          const float *dcomp, const int32_t *disel, const int32_t *dn,
                          const float *dsinks, const int64_t *dpos, const float *dfreqs, float *dscr,
                          float *dout, ds4_error *err) {
    const int64_t W = 128, Dh = 512, topk = c->topk > 0 ? c->topk : 1;
    const int32_t *sel = c->topk > 0 ? disel : NULL;
    if (qnorm)
        return cuda_attn_dec_qnorm(dq, dkv, dring, W, dcomp, c->ratio, sel, dn, topk, dsinks,
                                   c->bound > 0 ? c->bound : c->pos, c->bound > 0 ? dpos : NULL, c->H, Dh,
                                   64, dfreqs, 1e-6f, dscr, dout, err);
    if (c->bound > 0)
        return cuda_attn_dpos(dq, dkv, dring, W, dcomp, c->ratio, sel, dn, topk, dsinks, 1, dpos,
                              c->bound, c->H, Dh, 64, dfreqs, dscr, dout, err);
    return cuda_attn(dq, dkv, dring, W, dcomp, c->ratio, sel, dn, topk, dsinks, 1, c->pos, c->H, Dh,
                     64, dfreqs, dscr, dout, err);
}

static void run_cl_case(const cl_case *c) {
    ds4_error err;
    const int64_t Dh = 512, W = 128, H = c->H, p = c->pos;
    float freqs[32];
    cpu_rope_freqs(&cl_yarn, freqs);
    const int64_t n_comp_rows = c->ratio ? (p + 1) / c->ratio + 1 : 1, topk = c->topk > 0 ? c->topk : 1;
    float *qraw = rnd_vec(H * Dh, 3.0f), *q = malloc((size_t)(H * Dh) * sizeof *q);
    for (int64_t h = 0; h < H; h++) { /* the CPU's q norm + RoPE (model/attention.c §5.1) */
        cpu_rmsnorm(q + h * Dh, qraw + h * Dh, NULL, Dh, 1e-6f);
        cpu_rope_tail(q + h * Dh + Dh - 64, 64, freqs, p, false);
    }
    float *kv = rnd_vec(Dh, 1.0f), *ring = rnd_vec(W * Dh, 1.0f);
    float *comp = rnd_vec(n_comp_rows * Dh, 1.0f), *sinks = rnd_vec(H, 1.0f);
    int32_t *isel = calloc((size_t)topk, sizeof *isel), n_isel = 0;
    if (c->topk > 0) { /* n_sel distinct ascending complete rows */
        const int64_t n_c = (p + 1) / 4;
        for (int64_t r = 0; r < n_c && n_isel < c->n_sel; r++)
            if ((int64_t)(rnd_u64() % (uint64_t)(n_c - r)) < c->n_sel - n_isel) isel[n_isel++] = (int32_t)r;
    }
    float *ref = malloc((size_t)(H * Dh) * sizeof *ref), *got = malloc((size_t)(H * Dh) * sizeof *got);
    attn_ref(q, kv, ring, W, comp, c->ratio, c->topk > 0 ? isel : NULL, &n_isel, topk, sinks, 1, p, H, Dh,
             64, freqs, ref);
    const int64_t sb = c->bound > 0 ? c->bound - 1 : p;
    float *dq = dev_put(q, H * Dh * 4), *dqraw = dev_alloc(H * Dh * 4), *dkv = dev_put(kv, Dh * 4), *dring = dev_put(ring, W * Dh * 4);
    float *dcomp = dev_put(comp, n_comp_rows * Dh * 4), *dsinks = dev_put(sinks, H * 4);
    float *dfreqs = dev_put(freqs, sizeof freqs), *dout = dev_alloc(H * Dh * 4);
    float *dscr = dev_alloc(cuda_attn_scratch_bytes(1, H, Dh, W, c->ratio, topk, c->topk > 0, sb));
    int32_t *disel = dev_put(isel, topk * 4), *dn = dev_put(&n_isel, 4);
    int64_t *dpos = dev_put(&p, sizeof p);
    const int64_t rows = p - (p >= W ? p - W + 1 : 0) + 1 + (c->topk > 0 ? n_isel : c->ratio ? (p + 1) / c->ratio : 0);
    /* v: 0 attention_dec.cu's kernels, 1 the cluster kernel, 2 the cluster kernel with the q
     * norm inside, 3 cuda_attn_dec_qnorm's fallback (mode 1: the norm op, then the attention) */
    static const char *vn[] = {"two kernels", "clusters", "clusters, q norm inside", "q norm op + clusters"};
    for (int v = 0; v < 4; v++) {
        char name[240];
        snprintf(name, sizeof name, "attn decode %s (%s): pos %lld%s, %lld heads x 512, ratio %d, %lld rows, vs CPU",
                 c->what, vn[v], (long long)p, c->bound > 0 ? " (device, bound)" : "",
                 (long long)H, c->ratio, (long long)rows);
        const int was = cuda_attn_dec_cluster(v == 0 ? 0 : v == 2 ? 2 : 1);
        cuda_upload(dout, qraw, (size_t)(H * Dh) * 4, &err); /* a stale output must not pass */
        cuda_upload(dqraw, qraw, (size_t)(H * Dh) * 4, &err);
        ds4_status st = cl_call(c, v >= 2, v >= 2 ? dqraw : dq, dkv, dring, dcomp, disel, dn, dsinks, dpos, dfreqs,
                                dscr, dout, &err);
        cuda_attn_dec_cluster(was);
        if (!ok_call(st, name, &err)) continue;
        dev_get(got, dout, H * Dh * 4);
        cmp_f32(name, ref, got, H * Dh, 0, 0); /* max |Δ| 0: the CPU's steps and order */
    }
    dev_free_all();
    free(qraw); free(q); free(kv); free(ring); free(comp); free(sinks); free(isel); free(ref); free(got);
}

void test_attn_dec_cl(void) {
    static const cl_case cs[] = {
        {"Flash ratio 4, 512 indexed", 64, 70000, 0, 4, 512, 512},
        {"Flash ratio 4, 300 indexed (dpos)", 64, 70000, 1 << 20, 4, 512, 300},
        {"Flash ratio 4 at 2k, 512 indexed (dpos)", 64, 2100, 2112, 4, 512, 512},
        {"Flash ratio 128 at 64k", 64, 65535, 0, 128, 0, 0},
        {"Flash ratio 128 at 2k (dpos)", 64, 2047, 2048, 128, 0, 0},
        {"window only, partial window", 64, 50, 0, 0, 0, 0},
        {"window only, ring wrapped, 10 heads", 10, 1000, 0, 0, 0, 0},
        {"ratio 128, 909 rows, 7 heads", 7, 100000, 0, 128, 0, 0},
        {"ratio 128, exactly 1024 rows", 8, 114687, 0, 128, 0, 0},
        {"one row", 5, 0, 0, 0, 0, 0},
        {"9 rows: empty slices, 5 heads", 5, 8, 0, 0, 0, 0},
        {"ratio 4, 3 indexed (dpos)", 6, 20, 64, 4, 512, 3},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) run_cl_case(&cs[i]);
}

/* us per call, eager launches back to back (launch gaps included): the two kernels, the cluster
 * kernel, then with q's norm: the norm op + the two kernels against the cluster kernel doing it. */
void bench_attn_dec_cl(void) {
    const int64_t H = 64, Dh = 512, W = 128;
    float *h = rnd_vec(1 << 22, 1.0f);
    float freqs[32];
    cpu_rope_freqs(&cl_yarn, freqs);
    int32_t *sel = malloc(512 * 4), n512 = 512;
    for (int i = 0; i < 512; i++) sel[i] = i * 15; /* spread over the 8192 rows */
    float *dq = dev_put(h, H * Dh * 4), *dkv = dev_put(h, Dh * 4), *dring = dev_put(h, W * Dh * 4);
    float *dcomp = dev_put(h, (size_t)8192 * Dh * 4), *dsinks = dev_put(h, H * 4);
    float *dfreqs = dev_put(freqs, sizeof freqs), *dout = dev_alloc(H * Dh * 4);
    float *dscr = dev_alloc(cuda_attn_scratch_bytes(1, H, Dh, W, 128, 0, 0, 1048575));
    int32_t *dsel = dev_put(sel, 512 * 4), *dn = dev_put(&n512, 4);
    if (!dq || !dcomp || !dscr || !dsel) {
        printf("bench attn clusters: allocation failed\n");
        dev_free_all(); free(h); free(sel);
        return;
    }
    static const struct { const char *what; int ratio; int64_t pos; int sel; } bs[] = {
        {"window only (128 rows)", 0, 70000, 0},
        {"ratio 4, 128 + 512 indexed", 4, 70000, 1},
        {"ratio 128 at 2k (128 + 16 rows)", 128, 2047, 0},
        {"ratio 128 at 64k (128 + 512 rows)", 128, 65535, 0},
        {"ratio 128 at 112k (128 + 896 rows)", 128, 114687, 0},
    };
    const int was = cuda_attn_dec_cluster(0);
    static const char *vn[] = {"two kernels", "clusters", "q norm op + two kernels", "clusters, q norm inside"};
    for (size_t i = 0; i < sizeof bs / sizeof bs[0]; i++)
        for (int k = 0; k < 4; k++) {
            char label[120];
            snprintf(label, sizeof label, "attn decode %s, %s", bs[i].what, vn[k]);
            cuda_attn_dec_cluster(k == 0 || k == 2 ? 0 : k == 1 ? 1 : 2);
            const int32_t *sl = bs[i].sel ? dsel : NULL, *sn = bs[i].sel ? dn : NULL;
            const int64_t tk = bs[i].sel ? 512 : 0;
            if (k < 2)
                BENCH(label, 200, cuda_attn(dq, dkv, dring, W, dcomp, bs[i].ratio, sl, sn, tk, dsinks, 1, bs[i].pos, H,
                                            Dh, 64, dfreqs, dscr, dout, &e_));
            else
                BENCH(label, 200, cuda_attn_dec_qnorm(dq, dkv, dring, W, dcomp, bs[i].ratio, sl, sn, tk > 0 ? tk : 1,
                                                      dsinks, bs[i].pos, NULL, H, Dh, 64, dfreqs, 1e-6f, dscr, dout, &e_));
        }
    cuda_attn_dec_cluster(was);
    dev_free_all();
    free(h);
    free(sel);
}
