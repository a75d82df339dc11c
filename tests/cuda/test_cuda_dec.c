/*
 * tests/cuda/test_cuda_dec.c — the one-token decode attention (src/cuda/attention_dec.cu)
 * against the CPU loop attn_ref (test_cuda_layer_attn.c) BIT FOR BIT, at Flash shapes and at
 * the edges of its tiling (rows not a multiple of the 64-row tile, heads not a multiple of 8,
 * the position from the device with a larger bound, a list too long for it: the split/merge
 * kernels, a few ULP); the dense decode matvecs against q_dot_row (the float warp kernel
 * float ones under each kernel: k_mv_dense, the default choice, k_mv_fw forced by
 * DS4_CUDA_MVF_WARP=1 with every R and U); plus the decode benches used by
 * `ds4-cuda-tests --bench-dec` (DS4_CUDA_MVF_SWEEP=1: the float products' kernel sweep).
 * Called from test_attention() / the runner; timing is printed, never asserted.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/ops.h"
#include "cuda/cuda_api.h"
#include "format/quant.h"

#include "layer_check.h"

void attn_ref(const float *q, const float *kv_chunk, const float *ring, int64_t W,
              const float *comp, int ratio, const int32_t *isel, const int32_t *n_isel,
              int64_t topk, const float *sinks, int64_t n_tok, int64_t pos0, int64_t H,
              int64_t Dh, int n_rope, const float *freqs, float *out);
void test_attn_dec(void);
void bench_attn_dec(void);
void test_mv_dec(void);

static const cpu_rope_cfg dec_yarn = {64, 160000.0, 16.0, 32.0, 1.0, 65536.0};

typedef struct {
    const char *what;
    int64_t H, pos, bound; /* bound > 0: cuda_attn_dpos with the position on the device */
    int ratio, indexed, exact;
    int64_t topk, n_sel;
} dec_case;

/* One decode case: the CPU loop attn_ref (bit for bit where c->exact), and, with c->exact, the
 * prefill chunk kernel on a 2-token chunk whose second token is this query (positions pos-1,
 * pos; the ring then lacks pos-1, the chunk brings it), which must give the same bits. */
static void run_dec_case(const dec_case *c) {
    ds4_error err;
    const int64_t Dh = 512, W = 128, H = c->H, p = c->pos;
    const int n_rope = 64;
    float freqs[32];
    cpu_rope_freqs(&dec_yarn, freqs);
    int64_t n_comp_rows = c->ratio ? (p + 1) / c->ratio + 1 : 1;
    float *q2 = rnd_vec(2 * H * Dh, 1.0f), *kv2 = rnd_vec(2 * Dh, 1.0f), *ring = rnd_vec(W * Dh, 1.0f);
    float *comp = rnd_vec(n_comp_rows * Dh, 1.0f), *sinks = rnd_vec(H, 1.0f);
    float *q = q2 + H * Dh, *kv = kv2 + Dh; /* the decode token: the chunk's second */
    int64_t topk = c->indexed ? c->topk : 1;
    int32_t *isel2 = calloc((size_t)(2 * topk), sizeof *isel2), n_isel2[2] = {0, 0};
    for (int t = 0; t < 2 && c->indexed; t++) { /* n_sel distinct ascending complete rows */
        int64_t n_c = (p + t) / 4, k = c->n_sel - 7 * (1 - t);
        for (int64_t r = 0; r < n_c && n_isel2[t] < k; r++)
            if ((int64_t)(rnd_u64() % (uint64_t)(n_c - r)) < k - n_isel2[t]) isel2[t * topk + n_isel2[t]++] = (int32_t)r;
    }
    int32_t *isel = isel2 + topk, *n_isel = &n_isel2[1];
    float *ring_dec = malloc((size_t)(W * Dh) * sizeof *ring_dec); /* the ring after pos-1 was stored */
    memcpy(ring_dec, ring, (size_t)(W * Dh) * sizeof *ring_dec);
    memcpy(ring_dec + ((p - 1) % W) * Dh, kv2, (size_t)Dh * sizeof *ring_dec);
    float *ref = malloc((size_t)(H * Dh) * sizeof *ref), *got = malloc((size_t)(H * Dh) * sizeof *got);
    float *chk = malloc((size_t)(2 * H * Dh) * sizeof *chk);
    attn_ref(q, kv, ring_dec, W, comp, c->ratio, c->indexed ? isel : NULL, n_isel, topk, sinks, 1, p,
             H, Dh, n_rope, freqs, ref);
    int64_t sb = c->bound > 0 ? c->bound - 1 : p;
    float *dq2 = dev_put(q2, 2 * H * Dh * 4), *dkv2 = dev_put(kv2, 2 * Dh * 4), *dring = dev_put(ring, W * Dh * 4);
    float *dring_dec = dev_put(ring_dec, W * Dh * 4);
    float *dcomp = dev_put(comp, n_comp_rows * Dh * 4), *dsinks = dev_put(sinks, H * 4);
    float *dfreqs = dev_put(freqs, sizeof freqs), *dout = dev_alloc(H * Dh * 4), *dout2 = dev_alloc(2 * H * Dh * 4);
    float *dscr = dev_alloc(cuda_attn_scratch_bytes(1, H, Dh, W, c->ratio, topk, c->indexed, sb));
    float *dscr2 = dev_alloc(cuda_attn_scratch_bytes(2, H, Dh, W, c->ratio, topk, c->indexed, p - 1));
    int32_t *disel2 = dev_put(isel2, 2 * topk * 4), *dn2 = dev_put(n_isel2, 8);
    int64_t *dpos = dev_put(&p, sizeof p);
    float *dq = dq2 ? dq2 + H * Dh : NULL, *dkv = dkv2 ? dkv2 + Dh : NULL;
    int32_t *disel = disel2 ? disel2 + topk : NULL, *dn = dn2 ? dn2 + 1 : NULL;
    char name[200];
    snprintf(name, sizeof name, "attn decode %s: pos %lld%s, %lld heads x 512, ratio %d, %lld rows",
             c->what, (long long)p, c->bound > 0 ? " (device, bound)" : "", (long long)H, c->ratio,
             (long long)(p - (p >= W ? p - W + 1 : 0) + 1 + (c->indexed ? *n_isel : c->ratio ? (p + 1) / c->ratio : 0)));
    ds4_status st = c->bound > 0
        ? cuda_attn_dpos(dq, dkv, dring_dec, W, dcomp, c->ratio, c->indexed ? disel : NULL, dn, topk, dsinks, 1,
                         dpos, c->bound, H, Dh, n_rope, dfreqs, dscr, dout, &err)
        : cuda_attn(dq, dkv, dring_dec, W, dcomp, c->ratio, c->indexed ? disel : NULL, dn, topk, dsinks, 1,
                    p, H, Dh, n_rope, dfreqs, dscr, dout, &err);
    if (ok_call(st, name, &err)) {
        dev_get(got, dout, H * Dh * 4);
        double m = 0;
        for (int64_t i = 0; i < H * Dh; i++) m = fmax(m, fabs(ref[i]));
        char nm[240];
        snprintf(nm, sizeof nm, "%s vs CPU", name);
        /* exact: the CPU's order and exp (cpu/refmath.h on both sides), so the same bits;
         * split/merge: per-split maxima (most values, ~1e-7) */
        if (c->exact) cmp_f32(nm, ref, got, H * Dh, 0, 0);
        else cmp_f32(nm, ref, got, H * Dh, 1e-5, 1e-6 * m);
        snprintf(nm, sizeof nm, "%s vs the chunk kernel, bit-identical", name);
        if (c->exact &&
            ok_call(cuda_attn(dq2, dkv2, dring, W, dcomp, c->ratio, c->indexed ? disel2 : NULL, dn2, topk, dsinks, 2,
                              p - 1, H, Dh, n_rope, dfreqs, dscr2, dout2, &err), nm, &err)) {
            dev_get(chk, dout2, 2 * H * Dh * 4);
            cmp_f32(nm, chk + H * Dh, got, H * Dh, 0, 0);
        }
    }
    dev_free_all();
    free(q2); free(kv2); free(ring); free(ring_dec); free(comp); free(sinks); free(isel2); free(ref); free(got); free(chk);
}

void test_attn_dec(void) {
    /* With DS4_CUDA_ATTN_V1=1 the split/merge kernels run every case: a few ULP. */
    const char *v1 = getenv("DS4_CUDA_ATTN_V1");
    const int exact = !(v1 && atoi(v1) == 1);
    const dec_case cs[] = {
        {"Flash ratio 4, 512 indexed", 64, 70000, 0, 4, 1, exact, 512, 512},
        {"Flash ratio 4, 300 indexed (dpos)", 64, 70000, 1 << 20, 4, 1, exact, 512, 300},
        {"Flash ratio 128 at 64k", 64, 65535, 0, 128, 0, exact, 0, 0},
        {"Flash ratio 128 at 2k (dpos)", 64, 2047, 2048, 128, 0, exact, 0, 0},
        {"window only, partial window", 64, 50, 0, 0, 0, exact, 0, 0},
        {"window only, ring wrapped", 12, 1000, 0, 0, 0, exact, 0, 0},
        {"ratio 128, 909 rows", 8, 100000, 0, 128, 0, exact, 0, 0},
        {"ratio 128 past the exact kernel's rows (split/merge)", 8, 300000, 0, 128, 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) run_dec_case(&cs[i]);
    if (exact) { /* the first kernels, still reachable: two cases */
        setenv("DS4_CUDA_ATTN_V1", "1", 1);
        dec_case c0 = cs[0], c3 = cs[3];
        c0.exact = c3.exact = 0;
        c0.what = "v1 split/merge: Flash ratio 4";
        c3.what = "v1 split/merge: Flash ratio 128 at 2k (dpos)";
        run_dec_case(&c0);
        run_dec_case(&c3);
        unsetenv("DS4_CUDA_ATTN_V1");
    }
    test_mv_dec();
}

/* DS4_CUDA_MVF_SWEEP=1 with --bench-dec: the float decode products of Flash (the compressor
 * pairs, idx_wq_b, router, idx_proj, HC fn) under k_mv_dense, k_mv_fw with its own R and U,
 * and every forced R x U, us per call (eager launches back to back), to pick k_mv_fw's rule. */
static void bench_mv_fw_sweep(void) {
    static const struct { int type; int64_t rows, cols; int pair; const char *what; } sh[] = {
        {Q_TYPE_F16, 1024, 4096, 1, "comp kv+gate r4"}, {Q_TYPE_F16, 512, 4096, 1, "comp kv+gate r128"},
        {Q_TYPE_F16, 256, 4096, 1, "idx comp kv+gate"}, {Q_TYPE_F16, 8192, 1024, 0, "idx_wq_b"},
        {Q_TYPE_F16, 256, 4096, 0, "gate_inp"},        {Q_TYPE_F16, 64, 4096, 0, "idx_proj"},
        {Q_TYPE_F32, 24, 16384, 0, "HC fn F32"},       {Q_TYPE_F16, 24, 16384, 0, "HC fn F16"},
    };
    static const char *rs[] = {"1", "2", "4"}, *us[] = {"4", "8", "16"};
    for (size_t i = 0; i < sizeof sh / sizeof sh[0]; i++) {
        const int type = sh[i].type;
        const int64_t rows = sh[i].rows, cols = sh[i].cols, wb = rows * cols * (type == Q_TYPE_F32 ? 4 : 2);
        float *h = rnd_vec(cols, 1.0f);
        uint8_t *w = malloc((size_t)(2 * wb));
        for (int64_t k = 0; k < 2 * wb; k++) w[k] = (uint8_t)(k & 1 ? 0x38 : rnd_u64());
        void *dw = dev_put(w, (size_t)(2 * wb));
        float *dx = dev_put(h, (size_t)cols * 4), *dy = dev_alloc((size_t)(2 * rows) * 4);
        void *dact = dev_alloc(cuda_matvec_scratch_bytes(type, cols) + 16);
        const void *dw2 = dw ? (const uint8_t *)dw + wb : NULL;
        for (int v = -1; v < 10 && dw && dy; v++) { /* -1: k_mv_dense, 0: default, 1..9: R x U */
            char label[96];
            if (v == 0) unsetenv("DS4_CUDA_MVF_WARP");
            else setenv("DS4_CUDA_MVF_WARP", v < 0 ? "0" : "1", 1);
            if (v > 0) {
                setenv("DS4_CUDA_MVF_R", rs[(v - 1) / 3], 1);
                setenv("DS4_CUDA_MVF_U", us[(v - 1) % 3], 1);
            }
            snprintf(label, sizeof label, "mv %s %s%lld x %lld %s%s%s%s", sh[i].what, sh[i].pair ? "2x " : "",
                     (long long)rows, (long long)cols, v < 0 ? "dense" : v == 0 ? "default" : "warp R ",
                     v > 0 ? rs[(v - 1) / 3] : "", v > 0 ? " U " : "", v > 0 ? us[(v - 1) % 3] : "");
            if (sh[i].pair) BENCH(label, 200, cuda_matvec_pair_f(type, dw, dw2, rows, cols, dx, dy, dy + rows, &e_));
            else BENCH(label, 200, cuda_matvec(type, dw, rows, cols, dx, dact, dy, &e_));
            unsetenv("DS4_CUDA_MVF_R");
            unsetenv("DS4_CUDA_MVF_U");
        }
        unsetenv("DS4_CUDA_MVF_WARP");
        dev_free_all();
        free(h);
        free(w);
    }
}

void bench_attn_dec(void) {
    const char *sw = getenv("DS4_CUDA_MVF_SWEEP");
    if (sw && atoi(sw) == 1) bench_mv_fw_sweep();
    const int64_t H = 64, Dh = 512, W = 128, nc = 8192;
    float *h = rnd_vec(nc * Dh, 1.0f);
    float freqs[32];
    cpu_rope_freqs(&dec_yarn, freqs);
    int32_t *sel = malloc(512 * 4), n512 = 512;
    for (int i = 0; i < 512; i++) sel[i] = i * 13;
    float *dq = dev_put(h, H * Dh * 4), *dkv = dev_put(h, Dh * 4), *dring = dev_put(h, W * Dh * 4);
    float *dcomp = dev_put(h, nc * Dh * 4), *dsinks = dev_put(h, H * 4);
    float *dfreqs = dev_put(freqs, sizeof freqs), *dout = dev_alloc(H * Dh * 4);
    float *dscr = dev_alloc(cuda_attn_scratch_bytes(1, H, Dh, W, 128, 0, 0, 1048575));
    int32_t *dsel = dev_put(sel, 512 * 4), *dn = dev_put(&n512, 4);
    if (dscr && dcomp) {
        BENCH("attn decode window only (128 rows)", 200,
              cuda_attn(dq, dkv, dring, W, dcomp, 0, NULL, NULL, 0, dsinks, 1, 70000, H, Dh, 64, dfreqs, dscr, dout, &e_));
        BENCH("attn decode ratio 4, 128 + 512 indexed rows", 200,
              cuda_attn(dq, dkv, dring, W, dcomp, 4, dsel, dn, 512, dsinks, 1, 70000, H, Dh, 64, dfreqs, dscr, dout, &e_));
        BENCH("attn decode ratio 128 at 2k (128 + 16 rows)", 200,
              cuda_attn(dq, dkv, dring, W, dcomp, 128, NULL, NULL, 0, dsinks, 1, 2047, H, Dh, 64, dfreqs, dscr, dout, &e_));
        BENCH("attn decode ratio 128 at 64k (128 + 512 rows)", 200,
              cuda_attn(dq, dkv, dring, W, dcomp, 128, NULL, NULL, 0, dsinks, 1, 65535, H, Dh, 64, dfreqs, dscr, dout, &e_));
        BENCH("attn decode ratio 128 at 480k (128 + 3840 rows)", 50,
              cuda_attn(dq, dkv, dring, W, dcomp, 128, NULL, NULL, 0, dsinks, 1, 491519, H, Dh, 64, dfreqs, dscr, dout, &e_));
        BENCH("attn decode ratio 128 at 1M (128 + 8192 rows)", 20,
              cuda_attn(dq, dkv, dring, W, dcomp, 128, NULL, NULL, 0, dsinks, 1, 1048575, H, Dh, 64, dfreqs, dscr, dout, &e_));
    }
    dev_free_all();
    free(h);
    free(sel);
}

/* ---- decode matvecs of dense weights (matvec_dense.cu) against the CPU dot ----------------
 * Bit for bit (max |Δ| = 0) against q_dot_row on the Q8_0 activation records the engine
 * quantizes (Q8_0) or on x itself (F32, F16, BF16), at the real decode shapes and odd ones.
 * mv_tag: appended to the case names (which float kernel the switches select). */
static const char *mv_tag = "";

static void run_mv_dec(int type, int64_t rows, int64_t cols, int groups) {
    ds4_error err;
    uint64_t rb64 = 0;
    q_row_bytes(type, (uint64_t)cols, &rb64, &err);
    const size_t rb = (size_t)rb64, wb = rb * (size_t)rows * (size_t)groups;
    uint8_t *w = malloc(wb);
    for (size_t i = 0; i < wb; i++) w[i] = (uint8_t)rnd_u64();
    if (type == Q_TYPE_Q8_0) /* scales ~2^-9 .. 2^-8 */
        for (size_t i = 0; i < wb; i += 34) { w[i] = (uint8_t)rnd_u64(); w[i + 1] = (uint8_t)(0x18 + rnd_u64() % 8); }
    else if (type != Q_TYPE_F32) /* f16 / bf16 exponent bytes of modest values */
        for (size_t i = 1; i < wb; i += 2) w[i] = (uint8_t)((type == Q_TYPE_F16 ? 0x28 : 0x3C) + (w[i] & 0x83));
    else
        for (size_t i = 3; i < wb; i += 4) w[i] = (uint8_t)(0x3C + (w[i] & 0x81));
    float *x = rnd_vec(cols * groups, 1.0f);
    const size_t ab = type == Q_TYPE_Q8_0 ? (size_t)cols / 32 * sizeof(q8act_block) : (size_t)cols * 4;
    uint8_t *act = malloc(ab * (size_t)groups);
    float *ref = malloc((size_t)(rows * groups) * 4), *got = malloc((size_t)(rows * groups) * 4);
    for (int g = 0; g < groups; g++) {
        if (type == Q_TYPE_Q8_0) q_quantize_q8act(x + g * cols, (q8act_block *)(act + g * ab), (uint64_t)cols, &err);
        else memcpy(act + g * ab, x + g * cols, ab);
        for (int64_t r = 0; r < rows; r++)
            q_dot_row(type, w + ((size_t)g * rows + r) * rb, act + g * ab, (uint64_t)cols, &ref[g * rows + r], &err);
    }
    int32_t ids[16];
    for (int g = 0; g < groups; g++) ids[g] = g;
    void *dw = dev_put(w, wb), *dx = dev_put(x, (size_t)(cols * groups) * 4);
    void *dact = dev_alloc((size_t)groups * cuda_matvec_scratch_bytes(type, cols) + 16);
    float *dy = dev_alloc((size_t)(rows * groups) * 4);
    int32_t *dids = dev_put(ids, sizeof ids);
    char name[160];
    snprintf(name, sizeof name, "matvec decode %s %d x %lld x %lld%s, bit-identical to q_dot_row",
             q_type_name(type), groups, (long long)rows, (long long)cols, mv_tag);
    ds4_status st = groups > 1
        ? cuda_matvec_experts(type, dw, groups, rows, cols, dids, groups, dx, 1, dact, dy, &err)
        : cuda_matvec(type, dw, rows, cols, dx, dact, dy, &err);
    if (ok_call(st, name, &err)) {
        dev_get(got, dy, (size_t)(rows * groups) * 4);
        cmp_f32(name, ref, got, rows * groups, 0, 0);
    }
    dev_free_all();
    free(w); free(x); free(act); free(ref); free(got);
}

/* A pair launch (cuda_matvec_pair_f: the compressor's kv and gate, one launch): both products
 * bit for bit against q_dot_row. */
static void run_mv_pair(int type, int64_t rows, int64_t cols) {
    ds4_error err;
    uint64_t rb64 = 0;
    q_row_bytes(type, (uint64_t)cols, &rb64, &err);
    const size_t rb = (size_t)rb64, wb = rb * (size_t)rows;
    uint8_t *w = malloc(2 * wb);
    for (size_t i = 0; i < 2 * wb; i++) w[i] = (uint8_t)rnd_u64();
    if (type != Q_TYPE_F32) /* f16 / bf16 exponent bytes of modest values */
        for (size_t i = 1; i < 2 * wb; i += 2) w[i] = (uint8_t)((type == Q_TYPE_F16 ? 0x28 : 0x3C) + (w[i] & 0x83));
    else
        for (size_t i = 3; i < 2 * wb; i += 4) w[i] = (uint8_t)(0x3C + (w[i] & 0x81));
    float *x = rnd_vec(cols, 1.0f);
    float *ref = malloc((size_t)(2 * rows) * 4), *got = malloc((size_t)(2 * rows) * 4);
    for (int64_t r = 0; r < 2 * rows; r++) q_dot_row(type, w + (size_t)r * rb, x, (uint64_t)cols, &ref[r], &err);
    void *dw = dev_put(w, 2 * wb);
    float *dx = dev_put(x, (size_t)cols * 4), *dy = dev_alloc((size_t)(2 * rows) * 4);
    char name[160];
    snprintf(name, sizeof name, "matvec decode pair %s 2 x %lld x %lld%s, bit-identical to q_dot_row",
             q_type_name(type), (long long)rows, (long long)cols, mv_tag);
    if (dw && ok_call(cuda_matvec_pair_f(type, dw, (const uint8_t *)dw + wb, rows, cols, dx, dy, dy + rows, &err),
                      name, &err)) {
        dev_get(got, dy, (size_t)(2 * rows) * 4);
        cmp_f32(name, ref, got, 2 * rows, 0, 0);
    }
    dev_free_all();
    free(w); free(x); free(ref); free(got);
}

/* The float warp kernel k_mv_fw, forced by DS4_CUDA_MVF_WARP=1 (by default it takes 512
 * rows or more): every float decode shape of Flash (its own R and U choice), then R = 1, 2, 4
 * rows per warp x U = 4, 8, 16 steps in flight forced on shapes with partial rounds, partial
 * warps, several groups, one unit per row; cols % 8 != 0 must fall back to k_mv_dense. */
static void test_mv_dec_warp(void) {
    setenv("DS4_CUDA_MVF_WARP", "1", 1);
    mv_tag = " [warp kernel, auto]";
    run_mv_pair(Q_TYPE_F16, 1024, 4096);     /* compressor kv + gate, ratio 4 */
    run_mv_pair(Q_TYPE_F16, 512, 4096);      /* ratio 128 */
    run_mv_pair(Q_TYPE_F16, 256, 4096);      /* the indexer's compressor */
    run_mv_dec(Q_TYPE_F16, 1024, 4096, 1);
    run_mv_dec(Q_TYPE_F16, 512, 4096, 2);
    run_mv_dec(Q_TYPE_F16, 8192, 1024, 1);   /* idx_wq_b */
    run_mv_dec(Q_TYPE_F16, 256, 4096, 1);    /* router gate_inp */
    run_mv_dec(Q_TYPE_BF16, 256, 4096, 1);
    run_mv_dec(Q_TYPE_F32, 256, 4096, 1);
    run_mv_dec(Q_TYPE_F16, 64, 4096, 1);     /* idx_proj */
    run_mv_dec(Q_TYPE_F16, 24, 16384, 1);    /* HC fn (mix) */
    run_mv_dec(Q_TYPE_F32, 24, 16384, 1);
    run_mv_dec(Q_TYPE_F32, 4, 16384, 1);     /* output HC fn */
    run_mv_dec(Q_TYPE_F16, 3, 36, 1);        /* cols % 8 != 0: k_mv_dense */
    run_mv_dec(Q_TYPE_F32, 9, 3, 1);
    static const char *rs[] = {"1", "2", "4"}, *us[] = {"4", "8", "16"};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            char tag[64];
            snprintf(tag, sizeof tag, " [warp kernel, R %s, U %s]", rs[i], us[j]);
            mv_tag = tag;
            setenv("DS4_CUDA_MVF_R", rs[i], 1);
            setenv("DS4_CUDA_MVF_U", us[j], 1);
            run_mv_dec(Q_TYPE_F16, 7, 1000, 1);   /* 125 units: partial step and round */
            run_mv_dec(Q_TYPE_F32, 13, 4104, 1);  /* 513 units, rows not a multiple of 4R */
            run_mv_dec(Q_TYPE_BF16, 33, 520, 3); /* 3 groups (expert ids) */
            run_mv_dec(Q_TYPE_F16, 5, 8, 1);      /* one unit per row */
            run_mv_dec(Q_TYPE_F16, 70, 4096, 1);
            run_mv_pair(Q_TYPE_BF16, 6, 2056);
        }
    unsetenv("DS4_CUDA_MVF_R");
    unsetenv("DS4_CUDA_MVF_U");
    unsetenv("DS4_CUDA_MVF_WARP");
    mv_tag = "";
}

void test_mv_dec(void) {
    run_mv_dec(Q_TYPE_Q8_0, 32768, 1024, 1); /* wq_b */
    run_mv_dec(Q_TYPE_Q8_0, 4096, 8192, 1);  /* wo_b */
    run_mv_dec(Q_TYPE_Q8_0, 1024, 4096, 8);  /* wo_a: 8 groups, one launch */
    run_mv_dec(Q_TYPE_Q8_0, 512, 4096, 1);   /* wkv: 4 warps per row */
    run_mv_dec(Q_TYPE_Q8_0, 100, 4096, 1);   /* 16 warps per row */
    run_mv_dec(Q_TYPE_Q8_0, 7, 96, 1);       /* 3 blocks per row, one warp */
    run_mv_dec(Q_TYPE_Q8_0, 4099, 4096, 1);  /* rows not a multiple of the tile */
    run_mv_dec(Q_TYPE_Q8_0, 600, 3072, 1);   /* an odd number of 16-byte units per row */
    run_mv_dec(Q_TYPE_Q8_0, 2048, 4096, 2);  /* gate + up of the shared expert as 2 groups */
    run_mv_dec(Q_TYPE_Q8_0, 1024, 4096, 1);  /* wq_a */
    run_mv_dec(Q_TYPE_Q8_0, 4096, 2048, 1);  /* shared expert down */
    run_mv_dec(Q_TYPE_Q8_0, 8192, 1024, 1);  /* idx_wq_b */
    run_mv_dec(Q_TYPE_Q8_0, 129280, 4096, 1); /* output head */
    run_mv_dec(Q_TYPE_Q8_0, 1, 4096, 1);     /* one row */
    run_mv_dec(Q_TYPE_Q8_0, 300, 32, 1);     /* one block per row */
    run_mv_dec(Q_TYPE_Q8_0, 33, 1024, 3);    /* rows not a multiple of the block's rows, 3 groups */
    run_mv_dec(Q_TYPE_Q8_0, 70, 32 * 300, 1); /* 300 blocks: two chunks, the second partial */
    /* the float products by k_mv_dense (DS4_CUDA_MVF_WARP=0) */
    setenv("DS4_CUDA_MVF_WARP", "0", 1);
    mv_tag = " [k_mv_dense]";
    run_mv_dec(Q_TYPE_F16, 1024, 4096, 1);   /* compressor kv (ratio 4) */
    run_mv_dec(Q_TYPE_F16, 512, 4096, 2);    /* compressor kv + gate as 2 groups */
    run_mv_dec(Q_TYPE_F16, 256, 4096, 1);    /* router gate_inp */
    run_mv_dec(Q_TYPE_F16, 64, 4096, 1);     /* indexer idx_proj */
    run_mv_dec(Q_TYPE_F16, 24, 16384, 1);    /* HC fn (mix) */
    run_mv_dec(Q_TYPE_F32, 24, 16384, 1);
    run_mv_dec(Q_TYPE_F32, 4, 16384, 1);     /* output HC fn */
    run_mv_dec(Q_TYPE_BF16, 256, 4096, 1);
    run_mv_dec(Q_TYPE_F16, 1, 8, 1);         /* the smallest vector unit */
    run_mv_dec(Q_TYPE_F16, 3, 40, 1);        /* 1-value units, a partial lane group */
    run_mv_dec(Q_TYPE_F16, 5, 4100, 1);      /* 1-value units, several chunks */
    run_mv_dec(Q_TYPE_F32, 7, 1000, 1);      /* 4-value units, cols not a multiple of 8 */
    run_mv_dec(Q_TYPE_F32, 9, 3, 1);
    run_mv_dec(Q_TYPE_BF16, 6, 40, 2);
    run_mv_pair(Q_TYPE_F16, 1024, 4096);
    /* the default choice on Flash's float shapes (k_mv_fw from 512 rows, k_mv_dense below) */
    unsetenv("DS4_CUDA_MVF_WARP");
    mv_tag = " [default kernel]";
    run_mv_pair(Q_TYPE_F16, 1024, 4096);
    run_mv_pair(Q_TYPE_F16, 256, 4096);
    run_mv_dec(Q_TYPE_F16, 8192, 1024, 1);
    run_mv_dec(Q_TYPE_F16, 512, 4096, 1);
    run_mv_dec(Q_TYPE_F16, 511, 4096, 1);
    run_mv_dec(Q_TYPE_F16, 256, 4096, 1);
    run_mv_dec(Q_TYPE_F16, 24, 16384, 1);
    mv_tag = "";
    test_mv_dec_warp();
}
