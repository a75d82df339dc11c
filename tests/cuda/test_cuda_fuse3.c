/*
 * tests/cuda/test_cuda_fuse3.c — the decode launch fusions of the attention half and the
 * hyper-connections (issue #7, h3 session 3) against the separate ops they replace, bit for bit
 * (max |Δ| = 0): cuda_hc_mix_fused = cuda_hc_post + cuda_matvec (F32) + cuda_hc_pre_quant;
 * cuda_comp_push_dpos1 = cuda_comp_push step by step; cuda_norm_rope_qat_ring =
 * cuda_norm_rope_qat + the ring copy; cuda_matvec_pair_f = two cuda_matvec. The separate ops
 * themselves are checked against the CPU by test_cuda_ops.c / test_cuda_layer*.c.
 * Called from the layer runner (test_cuda_layer.c). Test code only.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/ops.h"
#include "format/fp8.h"
#include "cuda/cuda_api.h"
#include "layer_check.h"

#define F3_EPS 1e-6f

static int bytes_equal(const char *name, const void *a, const void *b, size_t n) {
    char buf[96];
    int ok = memcmp(a, b, n) == 0;
    snprintf(buf, sizeof buf, "%zu bytes %s", n, ok ? "identical" : "differ");
    result(ok, name, buf);
    return ok;
}

/* One token's HC step at (hc, d, rows = (2+hc)·hc): reference = the three ops, fused = one call
 * (one_launch 1 and 0), with and without a pending hc_post; post/comb updated in place as the
 * forward does. Three fused calls in a row: the device counter must reset each time. */
static void hc_mix_case_r(int type, int hc, int64_t d, int pending, int one_launch, int64_t rows_in) {
    ds4_error err;
    const int iters = 20, mix_only = rows_in > 0; /* mix_only: no hc_pre (d_scale NULL) */
    const int64_t cols = hc * d, rows = mix_only ? rows_in : (int64_t)(2 + hc) * hc, nc = hc * hc;
    const size_t s80 = d % 32 ? 0 : cuda_matvec_scratch_bytes(8, d);
    const size_t s8k = d % 256 ? 0 : cuda_matvec_scratch_bytes(10, d);
    float *fn = rnd_vec(rows * cols, 0.05f), *X = rnd_vec(cols, 1.0f), *f = rnd_vec(d, 1.0f);
    float *post = rnd_vec(hc, 0.5f), *comb = rnd_vec(nc, 0.3f), *norm = rnd_vec(d, 0.1f);
    float *base = rnd_vec(rows, 0.1f), scale[3];
    for (int64_t i = 0; i < d; i++) norm[i] += 1.0f;
    for (int i = 0; i < 3; i++) scale[i] = 0.5f + rnd_unit();
    uint16_t *fn16 = malloc((size_t)(rows * cols) * 2);
    fp_f32_to_f16_row(fn, fn16, (size_t)(rows * cols));
    void *dfn = type == 1 ? dev_put(fn16, rows * cols * 2) : dev_put(fn, rows * cols * 4);
    float *dX = dev_put(X, cols * 4), *df = dev_put(f, d * 4);
    float *dsc = dev_put(scale, sizeof scale), *dba = dev_put(base, rows * 4), *dno = dev_put(norm, d * 4);
    /* reference outputs [0], fused [1] */
    float *dpost[2], *dcomb[2], *dX2[2], *dmix[2], *dpre[2], *da[2];
    void *dq80[2], *dq8k[2];
    for (int k = 0; k < 2; k++) {
        dpost[k] = dev_put(post, hc * 4);
        dcomb[k] = dev_put(comb, nc * 4);
        dX2[k] = dev_alloc(cols * 4);
        dmix[k] = dev_alloc(rows * 4);
        dpre[k] = dev_alloc(hc * 4);
        da[k] = dev_alloc(d * 4);
        dq80[k] = s80 ? dev_alloc(s80) : NULL;
        dq8k[k] = s8k ? dev_alloc(s8k) : NULL;
    }
    char name[256];
    const char *v1 = getenv("DS4_CUDA_HCM_V1"), *pw = getenv("DS4_CUDA_HCM_PW");
    char kern[80];
    const char *so = getenv("DS4_CUDA_HCM_SOLO");
    const char *sc = getenv("DS4_CUDA_HCM_SC");
    snprintf(kern, sizeof kern, "%s%s%.4s%s%s", v1 && *v1 == '1' ? "k_hc_mix (V1)" : "default",
             pw ? ", producer warps " : "", pw ? pw : "", so && *so == '0' ? ", shared" : "",
             sc && *sc == '0' ? ", equal chunks" : "");
    snprintf(name, sizeof name, "hc_mix_fused [%s] %s hc %d x %lld, %lld rows, %s hc_post, %s", kern,
             type ? "F16" : "F32", hc, (long long)d, (long long)rows, pending ? "pending" : "no",
             mix_only ? "mix only" : one_launch ? "one launch" : "hc_pre apart");
    const float *x2 = pending ? dX2[0] : dX;
    int ok = ok_call(pending ? cuda_hc_post(df, dX, dpost[0], dcomb[0], 1, hc, d, dX2[0], &err) : DS4_OK,
                     name, &err) &&
             ok_call(cuda_matvec(type, dfn, rows, cols, x2, NULL, dmix[0], &err), name, &err) &&
             (mix_only || ok_call(cuda_hc_pre_quant(x2, dmix[0], dsc, dba, dno, 1, hc, d, iters, F3_EPS, F3_EPS,
                                       dpre[0], dpost[0], dcomb[0], da[0], dq80[0], dq8k[0], &err),
                     name, &err));
    float *h[2][6];
    uint8_t *hq[2][2];
    for (int k = 0; k < 2; k++) {
        h[k][0] = malloc(cols * 4); h[k][1] = malloc(rows * 4); h[k][2] = malloc(hc * 4);
        h[k][3] = malloc(hc * 4); h[k][4] = malloc(nc * 4); h[k][5] = malloc(d * 4);
        hq[k][0] = malloc(s80 + 1); hq[k][1] = malloc(s8k + 1);
    }
    for (int rep = 0; rep < 3 && ok; rep++) {
        /* the fused call's post/comb start from the same values each time */
        ds4_error e2;
        ok = ok_call(cuda_upload(dpost[1], post, hc * 4, &e2) || cuda_upload(dcomb[1], comb, nc * 4, &e2)
                         ? DS4_ERR_INTERNAL : DS4_OK, name, &e2) &&
             ok_call(cuda_hc_mix_fused(type, dfn, rows, dX, pending ? df : NULL, dpost[1], dcomb[1], dX2[1],
                                       hc, d, dmix[1], mix_only ? NULL : dsc, dba, dno, iters, F3_EPS,
                                       F3_EPS, dpre[1], dpost[1], dcomb[1], da[1], mix_only ? NULL : dq80[1],
                                       mix_only ? NULL : dq8k[1], one_launch, &err),
                     name, &err);
    }
    if (ok) {
        for (int k = 0; k < 2; k++) {
            dev_get(h[k][0], pending ? dX2[k] : dX, cols * 4);
            dev_get(h[k][1], dmix[k], rows * 4);
            dev_get(h[k][2], dpre[k], hc * 4);
            dev_get(h[k][3], dpost[k], hc * 4);
            dev_get(h[k][4], dcomb[k], nc * 4);
            dev_get(h[k][5], da[k], d * 4);
            if (s80) dev_get(hq[k][0], dq80[k], s80);
            if (s8k) dev_get(hq[k][1], dq8k[k], s8k);
        }
        static const char *what[6] = {"X2", "mix", "pre", "post", "comb", "a"};
        const int64_t n[6] = {cols, rows, hc, hc, nc, d};
        for (int i = 0; i < (mix_only ? 2 : 6); i++) {
            char nm[300];
            snprintf(nm, sizeof nm, "%s: %s", name, what[i]);
            cmp_f32(nm, h[0][i], h[1][i], n[i], 0, 0);
        }
        char nm[300];
        if (s80 && !mix_only) {
            snprintf(nm, sizeof nm, "%s: a as Q8_0", name);
            bytes_equal(nm, hq[0][0], hq[1][0], s80);
        }
        if (s8k && !mix_only) {
            snprintf(nm, sizeof nm, "%s: a as Q8_K", name);
            bytes_equal(nm, hq[0][1], hq[1][1], s8k);
        }
    }
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < 6; i++) free(h[k][i]);
        free(hq[k][0]);
        free(hq[k][1]);
    }
    free(fn); free(fn16); free(X); free(f); free(post); free(comb); free(norm); free(base);
    dev_free_all();
}

static void hc_mix_case(int type, int hc, int64_t d, int pending, int one_launch) {
    hc_mix_case_r(type, hc, d, pending, one_launch, 0);
}

/* cuda_comp_push_dpos1 (one launch, position on the device) against cuda_comp_push with the
 * position from the host, n_pos steps: streaming state and finished rows bit for bit. */
static void comp_dpos1_case(int64_t ratio, int64_t coff, int64_t dim, int indexer, int64_t n_pos) {
    ds4_error err;
    const int n_rope = 64;
    float freqs[32];
    for (int i = 0; i < 32; i++) freqs[i] = powf(10000.0f, -(float)i / 32.0f);
    int64_t w = coff * dim, st_n = coff * ratio * w, cap = n_pos / ratio + 1;
    float *st_kv = calloc((size_t)st_n, 4), *st_sc = malloc((size_t)st_n * 4);
    for (int64_t i = 0; i < st_n; i++) st_sc[i] = -INFINITY; /* MODEL_MATH §6.4 */
    float *ape = rnd_vec(ratio * w, 0.5f), *norm = rnd_vec(dim, 0.1f);
    for (int64_t i = 0; i < dim; i++) norm[i] += 1.0f;
    float *A = rnd_vec(n_pos * w, 1.0f), *B = rnd_vec(n_pos * w, 1.0f);
    cuda_comp_state g[2];
    for (int k = 0; k < 2; k++) {
        g[k] = (cuda_comp_state){ratio, coff, dim, cap, dev_alloc(cap * dim * 4), dev_put(st_kv, st_n * 4),
                                 dev_put(st_sc, st_n * 4)};
    }
    float *dA = dev_put(A, n_pos * w * 4), *dB = dev_put(B, n_pos * w * 4);
    float *dape = dev_put(ape, ratio * w * 4), *dnorm = dev_put(norm, dim * 4);
    float *dfreqs = dev_put(freqs, sizeof freqs);
    int64_t *dpos = dev_alloc(sizeof(int64_t));
    char name[160];
    snprintf(name, sizeof name, "comp_push_dpos1 = comp_push: ratio %lld, coff %lld, dim %lld, %s, %lld positions",
             (long long)ratio, (long long)coff, (long long)dim, indexer ? "indexer" : "attention",
             (long long)n_pos);
    int ok = 1;
    for (int64_t p = 0; p < n_pos && ok; p++) {
        ok = ok_call(cuda_comp_push(&g[0], dA + p * w, dB + p * w, dape, dnorm, p, indexer, dfreqs,
                                    n_rope, F3_EPS, NULL, &err), name, &err) &&
             ok_call(cuda_upload(dpos, &p, sizeof p, &err), name, &err) &&
             ok_call(cuda_comp_push_dpos1(&g[1], dA + p * w, dB + p * w, dape, dnorm, dpos, n_pos,
                                          indexer, dfreqs, n_rope, F3_EPS, &err), name, &err);
    }
    if (ok) {
        int64_t nr = (n_pos / ratio) * dim, nmax = nr > st_n ? nr : st_n;
        float *r0 = malloc((size_t)nmax * 4), *r1 = malloc((size_t)nmax * 4);
        char nm[220];
        dev_get(r0, g[0].rows, nr * 4);
        dev_get(r1, g[1].rows, nr * 4);
        snprintf(nm, sizeof nm, "%s: %lld finished rows", name, (long long)(n_pos / ratio));
        cmp_f32(nm, r0, r1, nr, 0, 0);
        dev_get(r0, g[0].st_kv, st_n * 4);
        dev_get(r1, g[1].st_kv, st_n * 4);
        snprintf(nm, sizeof nm, "%s: kv state", name);
        cmp_f32(nm, r0, r1, st_n, 0, 0);
        dev_get(r0, g[0].st_sc, st_n * 4);
        dev_get(r1, g[1].st_sc, st_n * 4);
        snprintf(nm, sizeof nm, "%s: score state", name);
        cmp_f32(nm, r0, r1, st_n, 0, 0);
        free(r0);
        free(r1);
    }
    free(st_kv); free(st_sc); free(ape); free(norm); free(A); free(B);
    dev_free_all();
}

/* cuda_norm_rope_qat_ring = cuda_norm_rope_qat then ring[pos % W] = row: Flash's kv row
 * (512, weight, RoPE 64, FP8 of 448); the rest of the ring untouched. */
static void norm_ring_case(int64_t n, int64_t W, int64_t pos, int use_dpos) {
    ds4_error err;
    const int nr = 64;
    float freqs[32];
    for (int i = 0; i < 32; i++) freqs[i] = powf(10000.0f, -(float)i / 32.0f);
    float *x = rnd_vec(n, 1.0f), *wt = rnd_vec(n, 0.1f), *ring = rnd_vec(W * n, 1.0f);
    float *dx0 = dev_put(x, n * 4), *dx1 = dev_put(x, n * 4), *dw = dev_put(wt, n * 4);
    float *dr0 = dev_put(ring, W * n * 4), *dr1 = dev_put(ring, W * n * 4), *dfr = dev_put(freqs, sizeof freqs);
    int64_t *dpos = dev_put(&pos, sizeof pos);
    char name[160];
    snprintf(name, sizeof name, "norm_rope_qat_ring (%lld, RoPE %d, FP8 %lld, W %lld, pos %lld%s)",
             (long long)n, nr, (long long)(n - nr), (long long)W, (long long)pos, use_dpos ? " on device" : "");
    const int64_t *dp = use_dpos ? dpos : NULL;
    int ok = ok_call(cuda_norm_rope_qat(dx0, dw, 1, n, F3_EPS, nr, dfr, pos, dp, n - nr, 64, NULL, &err), name, &err);
    if (ok) { /* the reference's ring copy: the normalised row downloaded and put in its slot */
        float *row = malloc(n * 4);
        dev_get(row, dx0, n * 4);
        ok = ok_call(cuda_upload(dr0 + (pos % W) * n, row, n * 4, &err), name, &err);
        free(row);
    }
    ok = ok && ok_call(cuda_norm_rope_qat_ring(dx1, dw, 1, n, F3_EPS, nr, dfr, pos, dp, n - nr, 64, NULL,
                                               dr1, W, &err), name, &err);
    if (ok) {
        float *a = malloc(W * n * 4), *b = malloc(W * n * 4);
        char nm[200];
        dev_get(a, dx0, n * 4);
        dev_get(b, dx1, n * 4);
        snprintf(nm, sizeof nm, "%s: row", name);
        cmp_f32(nm, a, b, n, 0, 0);
        dev_get(a, dr0, W * n * 4);
        dev_get(b, dr1, W * n * 4);
        snprintf(nm, sizeof nm, "%s: ring", name);
        cmp_f32(nm, a, b, W * n, 0, 0);
        free(a);
        free(b);
    }
    free(x); free(wt); free(ring);
    dev_free_all();
}

/* cuda_matvec_pair_f = two cuda_matvec (F16, the compressor's shapes). */
static void pair_f_case(int type, int64_t rows, int64_t cols) {
    ds4_error err;
    size_t eb = type == 0 ? 4 : 2, wb = (size_t)(rows * cols) * eb;
    uint16_t *w = malloc(2 * wb);
    float *x = rnd_vec(cols, 1.0f);
    for (size_t i = 0; i < 2 * wb / 2; i++) { /* finite f16/bf16/f32 halves: small random values */
        float v = 0.05f * rnd_normal();
        uint32_t u;
        memcpy(&u, &v, 4);
        w[i] = type == 1 ? (uint16_t)(0x2000 | (rnd_u64() & 0x13FF)) : (uint16_t)(u >> 16);
    }
    uint8_t *dw = dev_put(w, 2 * wb);
    float *dx = dev_put(x, cols * 4), *y[4];
    for (int k = 0; k < 4; k++) y[k] = dev_alloc(rows * 4);
    char name[128];
    snprintf(name, sizeof name, "matvec_pair_f type %d %lld x %lld = two matvecs", type, (long long)rows,
             (long long)cols);
    int ok = ok_call(cuda_matvec(type, dw, rows, cols, dx, NULL, y[0], &err), name, &err) &&
             ok_call(cuda_matvec(type, dw + wb, rows, cols, dx, NULL, y[1], &err), name, &err) &&
             ok_call(cuda_matvec_pair_f(type, dw, dw + wb, rows, cols, dx, y[2], y[3], &err), name, &err);
    if (ok) {
        float *h = malloc(4 * rows * 4);
        for (int k = 0; k < 4; k++) dev_get(h + k * rows, y[k], rows * 4);
        char nm[160];
        snprintf(nm, sizeof nm, "%s: first", name);
        cmp_f32(nm, h, h + 2 * rows, rows, 0, 0);
        snprintf(nm, sizeof nm, "%s: second", name);
        cmp_f32(nm, h + rows, h + 3 * rows, rows, 0, 0);
        free(h);
    }
    free(w); free(x);
    dev_free_all();
}

/* ---- timing of the decode HC site (DS4_TEST_HCM_BENCH=1; read-only, never asserted) ----
 * Each variant is captured n times into one CUDA graph (the decode step runs as a graph: no
 * host launch cost, the device's gap between dependent kernels included) and the graph run 3
 * times after a warm-up; us per call of the fastest run. "cold": each call follows a 128 MB
 * F16 product that streams the L2 (as a decode layer's weights do), less that product alone. */
typedef struct {
    int type;
    void *fn, *q80, *q8k, *big;
    float *X, *f, *post, *comb, *X2, *mix, *sc, *ba, *no, *pre, *a, *bx, *by;
} hcb_ctx;

enum { HCB_MIX, HCB_MIX_POST, HCB_SITE, HCB_PRE, HCB_THREE, HCB_FLUSH, HCB_FLUSH_SITE };

static ds4_status hcb_call(const hcb_ctx *c, int v, ds4_error *err) {
    const int hc = 4, iters = 20;
    const int64_t d = 4096, rows = (2 + hc) * hc;
    ds4_status st = DS4_OK;
    if (v == HCB_FLUSH || v == HCB_FLUSH_SITE)
        st = cuda_matvec(1, c->big, 32768, 2048, c->bx, NULL, c->by, err);
    if (st || v == HCB_FLUSH) return st;
    switch (v) {
    case HCB_MIX:
    case HCB_MIX_POST:
        return cuda_hc_mix_fused(c->type, c->fn, rows, c->X, v == HCB_MIX ? NULL : c->f, c->post, c->comb,
                                 c->X2, hc, d, c->mix, NULL, NULL, NULL, iters, F3_EPS, F3_EPS, NULL, NULL,
                                 NULL, NULL, NULL, NULL, 1, err);
    case HCB_PRE:
        return cuda_hc_pre_quant(c->X2, c->mix, c->sc, c->ba, c->no, 1, hc, d, iters, F3_EPS, F3_EPS, c->pre,
                                 c->post, c->comb, c->a, c->q80, c->q8k, err);
    case HCB_THREE:
        if ((st = cuda_hc_post(c->f, c->X, c->post, c->comb, 1, hc, d, c->X2, err)) ||
            (st = cuda_matvec(c->type, c->fn, rows, hc * d, c->X2, NULL, c->mix, err)))
            return st;
        return cuda_hc_pre_quant(c->X2, c->mix, c->sc, c->ba, c->no, 1, hc, d, iters, F3_EPS, F3_EPS, c->pre,
                                 c->post, c->comb, c->a, c->q80, c->q8k, err);
    default: /* the whole site: pending hc_post, mix, hc_pre in the launch */
        return cuda_hc_mix_fused(c->type, c->fn, rows, c->X, c->f, c->post, c->comb, c->X2, hc, d, c->mix,
                                 c->sc, c->ba, c->no, iters, F3_EPS, F3_EPS, c->pre, c->post, c->comb, c->a,
                                 c->q80, c->q8k, 1, err);
    }
}

/* us per call of variant v captured n times in a graph; < 0 on failure. */
static double hcb_time(const hcb_ctx *c, int v, int n) {
    ds4_error err;
    cuda_graph *g = NULL;
    if (hcb_call(c, v, &err) || cuda_sync(&err) || cuda_graph_begin(&err)) return -1.0;
    for (int i = 0; i < n; i++)
        if (hcb_call(c, v, &err)) {
            cuda_graph_abort();
            return -1.0;
        }
    double best = -1.0;
    if (!cuda_graph_end(&g, &err) && !cuda_graph_launch(g, &err) && !cuda_sync(&err))
        for (int r = 0; r < 3; r++) {
            double t0 = now_s();
            if (cuda_graph_launch(g, &err) || cuda_sync(&err)) {
                best = -1.0;
                break;
            }
            double us = (now_s() - t0) / n * 1e6;
            if (best < 0 || us < best) best = us;
        }
    cuda_graph_free(g);
    return best;
}

/* The phases of one more launch of variant v (cuda_hc_mix_trace), printed. */
static void hcb_trace(const hcb_ctx *c, int v, const char *type, const char *what, const char *kern) {
    char tr[900];
    ds4_error e;
    if (cuda_hc_mix_trace(1, NULL, 0, &e) || hcb_call(c, v, &e) || cuda_sync(&e) ||
        cuda_hc_mix_trace(0, tr, sizeof tr, &e))
        printf("bench hcm trace: %s\n", e.msg);
    else
        printf("bench hcm %s %s, %s: %s\n", type, what, kern, tr);
}

/* The switches of bench_hc_mix's kernel k (its kname), -1: none. */
static void hcb_env(int k) {
    unsetenv("DS4_CUDA_HCM_PW");
    unsetenv("DS4_CUDA_HCM_SOLO");
    unsetenv("DS4_CUDA_HCM_SC");
    unsetenv("DS4_CUDA_HCM_V1");
    if (k == 0) setenv("DS4_CUDA_HCM_V1", "1", 1);
    if (k == 2 || k == 3) setenv("DS4_CUDA_HCM_PW", k == 2 ? "8" : "16", 1);
    if (k == 4) setenv("DS4_CUDA_HCM_SOLO", "0", 1);
    if (k == 5) setenv("DS4_CUDA_HCM_SC", "0", 1);
}

static void bench_hc_mix(void) {
    const int hc = 4;
    const int64_t d = 4096, cols = hc * d, rows = (2 + hc) * hc;
    float *fn = rnd_vec(rows * cols, 0.05f), *X = rnd_vec(cols, 1.0f), *f = rnd_vec(d, 1.0f);
    float *post = rnd_vec(hc, 0.5f), *comb = rnd_vec(hc * hc, 0.3f), *no = rnd_vec(d, 0.1f);
    float *ba = rnd_vec(rows, 0.1f), sc[3] = {0.7f, 0.9f, 1.1f}, *bx = rnd_vec(2048, 1.0f);
    uint16_t *fn16 = malloc((size_t)(rows * cols) * 2);
    fp_f32_to_f16_row(fn, fn16, (size_t)(rows * cols));
    for (int64_t i = 0; i < d; i++) no[i] += 1.0f;
    hcb_ctx c = {0};
    c.X = dev_put(X, cols * 4); c.f = dev_put(f, d * 4); c.post = dev_put(post, hc * 4);
    c.comb = dev_put(comb, hc * hc * 4); c.X2 = dev_alloc(cols * 4); c.mix = dev_alloc(rows * 4);
    c.sc = dev_put(sc, sizeof sc); c.ba = dev_put(ba, rows * 4); c.no = dev_put(no, d * 4);
    c.pre = dev_alloc(hc * 4); c.a = dev_alloc(d * 4);
    c.q80 = dev_alloc(cuda_matvec_scratch_bytes(8, d)); c.q8k = dev_alloc(cuda_matvec_scratch_bytes(10, d));
    c.big = dev_alloc((size_t)32768 * 2048 * 2); /* contents do not matter for the time */
    c.bx = dev_put(bx, 2048 * 4); c.by = dev_alloc(32768 * 4);
    void *fns[2] = {dev_put(fn, rows * cols * 4), dev_put(fn16, rows * cols * 2)};
    static const char *vname[] = {"mix alone", "mix + pending hc_post", "site: hc_post + mix + hc_pre",
                                  "hc_pre alone (k_hc_pre_dec)", "three launches (post, matvec, pre)"};
    static const char *kname[] = {"V1", "new", "new PW 8", "new PW 16", "new shared", "new SC 0"};
    for (int type = 0; type < 2; type++) {
        c.type = type;
        c.fn = fns[type];
        const char *tn = type ? "F16" : "F32";
        for (int v = HCB_MIX; v <= HCB_THREE; v++)
            for (int k = 0; k < 6; k++) {
                if ((v >= HCB_PRE && k > 0) || (v < HCB_SITE && k > 1 && k < 5)) continue;
                hcb_env(k);
                double us = hcb_time(&c, v, 40);
                printf("bench hcm %s %-38s %-10s %8.2f us\n", tn, vname[v], v >= HCB_PRE ? "-" : kname[k], us);
                if (v == HCB_SITE && (k <= 1 || k >= 5)) hcb_trace(&c, v, tn, "trace", kname[k]);
                hcb_env(-1);
            }
        for (int k = 0; k < 6; k += k == 1 ? 4 : 1) { /* cold: after an L2-streaming product */
            hcb_env(k);
            double a = hcb_time(&c, HCB_FLUSH_SITE, 20), b = hcb_time(&c, HCB_FLUSH, 20);
            printf("bench hcm %s %-38s %-10s %8.2f us (flush alone %.2f us)\n", tn, "site, cold (after 128 MB)",
                   kname[k], a - b, b);
            hcb_trace(&c, HCB_FLUSH_SITE, tn, "cold trace", kname[k]);
            hcb_env(-1);
        }
    }
    free(fn); free(fn16); free(X); free(f); free(post); free(comb); free(no); free(ba); free(bx);
    dev_free_all();
}

void test_fuse3(void) {
    /* Flash (hc 4 x 4096: hc_pre in the launch) and a small width (hc 4 x 256: 4 warps per row,
     * hc_pre apart); d 258 (F32) is not a multiple of a unit's 4 values: the separate ops inside
     * the call; d 260 (F16) not of 8: k_hc_mix; hc 4 x 16384: the row's products pass the shared
     * memory, k_hc_mix */
    for (int type = 0; type < 2; type++) /* F32 (f32 GGUFs), F16 (q2/q4: the dense family) */
        for (int pending = 0; pending < 2; pending++)
            for (int one = 0; one < 2; one++) hc_mix_case(type, 4, 4096, pending, one);
    hc_mix_case(0, 4, 256, 1, 1);
    hc_mix_case(1, 4, 256, 1, 1);
    hc_mix_case(0, 2, 1024, 1, 1);
    hc_mix_case(0, 4, 258, 1, 1);
    hc_mix_case(1, 4, 260, 1, 1);
    hc_mix_case(0, 4, 16384, 1, 1);
    /* k_hc_mix2's edges: hc 3 (no compile-time hc; 375 units, a partial chunk), rows other than
     * (2+hc)·hc without hc_pre (mix only), few producer warps (many chunks, several units per
     * thread and chunk), and session 4's k_hc_mix by its switch */
    hc_mix_case(0, 3, 1000, 1, 1);
    hc_mix_case(1, 3, 1000, 1, 1);
    hc_mix_case_r(1, 4, 4096, 1, 1, 7);
    hc_mix_case_r(0, 4, 4096, 0, 1, 5);
    hc_mix_case_r(1, 3, 1000, 0, 1, 1);
    static const char *pws[] = {"1", "7", "30"};
    for (int i = 0; i < 4; i++) { /* the last: every producer on the chain warp's scheduler too */
        if (i < 3) setenv("DS4_CUDA_HCM_PW", pws[i], 1);
        else setenv("DS4_CUDA_HCM_SOLO", "0", 1);
        hc_mix_case(1, 4, 4096, 1, 1);
        hc_mix_case(0, 4, 4096, 1, 1);
        hc_mix_case(1, 3, 1000, 1, 1);
    }
    unsetenv("DS4_CUDA_HCM_PW");
    unsetenv("DS4_CUDA_HCM_SOLO");
    setenv("DS4_CUDA_HCM_SC", "0", 1); /* equal chunks instead of one per stream */
    for (int type = 0; type < 2; type++) {
        hc_mix_case(type, 4, 4096, 1, 1);
        hc_mix_case(type, 4, 256, 1, 1);
    }
    hc_mix_case_r(1, 4, 4096, 0, 1, 7);
    unsetenv("DS4_CUDA_HCM_SC");
    setenv("DS4_CUDA_HCM_V1", "1", 1);
    for (int type = 0; type < 2; type++)
        for (int pending = 0; pending < 2; pending++) hc_mix_case(type, 4, 4096, pending, 1);
    unsetenv("DS4_CUDA_HCM_V1");
    if (getenv("DS4_TEST_HCM_BENCH")) bench_hc_mix();
    /* Flash's compressors: attention ratio 4 (overlap) and 128, indexer ratio 4 (dim 128) */
    comp_dpos1_case(4, 2, 512, 0, 70);
    comp_dpos1_case(128, 1, 512, 0, 260);
    comp_dpos1_case(4, 2, 128, 1, 70);
    norm_ring_case(512, 128, 1234, 0);
    norm_ring_case(512, 128, 1234, 1);
    norm_ring_case(512, 128, 5, 1);
    pair_f_case(1, 1024, 4096);
    pair_f_case(1, 512, 4096);
    pair_f_case(1, 256, 4096); /* the indexer's compressor */
    pair_f_case(0, 24, 1024);
}
