/*
 * tests/cuda/test_cuda_layer_elem.c — CUDA vs CPU for the per-token ops of the V4 layer:
 * RMSNorm, softmax, scale, RoPE tail, Hadamard, FP8/FP4 round trips, hyper-connections
 * (MODEL_MATH §3-4), MoE routing / SwiGLU / combine (§9) and argmax; plus their timings at
 * Flash shapes. Tolerances are explained in test_cuda_layer.c.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/ops.h"
#include "cuda/cuda_api.h"
#include "format/quant.h"
#include "model/hc.h"

#include "layer_check.h"

#define EPS 1e-6f

static float *copy_vec(const float *x, int64_t n) {
    float *y = malloc((size_t)n * sizeof *y);
    memcpy(y, x, (size_t)n * sizeof *y);
    return y;
}

void test_rmsnorm(void) {
    static const struct { int64_t rows, n; int weighted, in_place; } cs[] = {
        {7, 4096, 1, 0}, {64, 512, 0, 1}, {3, 1000, 1, 1}, {2, 7, 0, 0}};
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        ds4_error err;
        int64_t rows = cs[c].rows, n = cs[c].n, N = rows * n;
        float *x = rnd_vec(N, 3.0f), *w = rnd_vec(n, 0.1f), *ref = malloc(N * sizeof *ref),
              *got = malloc(N * sizeof *got);
        for (int64_t i = 0; i < n; i++) w[i] += 1.0f;
        for (int64_t r = 0; r < rows; r++)
            cpu_rmsnorm(ref + r * n, x + r * n, cs[c].weighted ? w : NULL, n, EPS);
        float *dx = dev_put(x, N * 4), *dw = dev_put(w, n * 4);
        float *dout = cs[c].in_place ? dx : dev_alloc(N * 4);
        char name[96];
        snprintf(name, sizeof name, "rmsnorm %lldx%lld%s%s", (long long)rows, (long long)n,
                 cs[c].weighted ? " weighted" : "", cs[c].in_place ? " in place" : "");
        if (ok_call(cuda_rmsnorm(dout, dx, cs[c].weighted ? dw : NULL, rows, n, EPS, &err), name,
                    &err)) {
            dev_get(got, dout, N * 4);
            /* The squares' sum is a ref_dsum on both sides (order-free): r is the CPU's. */
            cmp_f32(name, ref, got, N, 0, 0);
        }
        dev_free_all();
        free(x); free(w); free(ref); free(got);
    }
}

void test_softmax(void) {
    static const int64_t cs[][2] = {{3, 1000}, {2, 129280}, {4, 6}};
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        ds4_error err;
        int64_t rows = cs[c][0], n = cs[c][1], N = rows * n;
        float *x = rnd_vec(N, 4.0f), *ref = copy_vec(x, N), *got = malloc(N * sizeof *got);
        for (int64_t r = 0; r < rows; r++) cpu_softmax(ref + r * n, n);
        float *dx = dev_put(x, N * 4);
        char name[64];
        snprintf(name, sizeof name, "softmax %lldx%lld", (long long)rows, (long long)n);
        if (ok_call(cuda_softmax(dx, rows, n, &err), name, &err)) {
            dev_get(got, dx, N * 4);
            /* Same exp (cpu/refmath.h); the double sums part only if one lands next to an f32
             * rounding boundary of 1/s (~2^-25 odds a row): bit-identical. */
            cmp_f32(name, ref, got, N, 0, 0);
        }
        dev_free_all();
        free(x); free(ref); free(got);
    }
    /* scale: one IEEE product per value, bit-identical. */
    ds4_error err;
    int64_t n = 4099;
    float *x = rnd_vec(n, 2.0f), *ref = copy_vec(x, n), *got = malloc(n * sizeof *got);
    float s = (float)(1.0 / sqrt(128.0 * 64.0));
    for (int64_t i = 0; i < n; i++) ref[i] *= s;
    float *dx = dev_put(x, n * 4);
    if (ok_call(cuda_scale(dx, n, s, &err), "scale", &err)) {
        dev_get(got, dx, n * 4);
        cmp_f32("scale 4099 by 1/sqrt(8192)", ref, got, n, 0, 0);
    }
    dev_free_all();
    free(x); free(ref); free(got);
}

void test_rope(void) {
    /* MODEL_MATH §0: compressed layers θ=160000 + YaRN (factor 16, β 32/1, 65536); others plain. */
    cpu_rope_cfg yarn = {64, 160000.0, 16.0, 32.0, 1.0, 65536.0};
    cpu_rope_cfg plain = {64, 10000.0, 1.0, 32.0, 1.0, 0.0};
    static const struct { int yarn, inverse; int64_t n_tok, H, Dh, pos0; } cs[] = {
        {1, 0, 3, 8, 512, 70000}, {0, 1, 2, 64, 512, 1000000}, {1, 0, 5, 1, 512, 0},
        {0, 0, 2, 64, 128, 123456}};
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        ds4_error err;
        float freqs[32];
        cpu_rope_freqs(cs[c].yarn ? &yarn : &plain, freqs);
        int64_t rows = cs[c].n_tok * cs[c].H, Dh = cs[c].Dh, N = rows * Dh;
        float *x = rnd_vec(N, 1.0f), *ref = copy_vec(x, N), *got = malloc(N * sizeof *got);
        for (int64_t r = 0; r < rows; r++)
            cpu_rope_tail(ref + r * Dh + Dh - 64, 64, freqs, cs[c].pos0 + r / cs[c].H,
                          cs[c].inverse);
        float *dx = dev_put(x, N * 4), *df = dev_put(freqs, sizeof freqs);
        char name[96];
        snprintf(name, sizeof name, "rope_tail %s%s %lld tok x %lld heads x %lld at pos %lld",
                 cs[c].yarn ? "yarn" : "plain", cs[c].inverse ? " inverse" : "",
                 (long long)cs[c].n_tok, (long long)cs[c].H, (long long)Dh, (long long)cs[c].pos0);
        if (ok_call(cuda_rope_tail(dx, rows, Dh, Dh - 64, cs[c].H, 64, df, cs[c].pos0,
                                   cs[c].inverse, &err),
                    name, &err)) {
            dev_get(got, dx, N * 4);
            /* Same f32 angle, same cos/sin (cpu/refmath.h ref_sincosf): bit-identical. */
            cmp_f32(name, ref, got, N, 0, 0);
        }
        dev_free_all();
        free(x); free(ref); free(got);
    }
}

void test_hadamard(void) {
    static const int64_t cs[][3] = {{64, 128, 128}, {5, 512, 520}, {3, 1, 1}, {2, 4096, 4096}};
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        ds4_error err;
        int64_t rows = cs[c][0], n = cs[c][1], stride = cs[c][2], N = rows * stride;
        float *x = rnd_vec(N, 1.5f), *ref = copy_vec(x, N), *got = malloc(N * sizeof *got);
        for (int64_t r = 0; r < rows; r++) cpu_hadamard(ref + r * stride, (int)n);
        float *dx = dev_put(x, N * 4);
        char name[64];
        snprintf(name, sizeof name, "hadamard %lld rows of %lld (stride %lld)", (long long)rows,
                 (long long)n, (long long)stride);
        if (ok_call(cuda_hadamard(dx, rows, stride, (int)n, &err), name, &err)) {
            dev_get(got, dx, N * 4);
            cmp_f32(name, ref, got, N, 0, 0);
        }
        dev_free_all();
        free(x); free(ref); free(got);
    }
}

/* Rows that exercise the round trips: per-row magnitude from tiny (amax under the floor) to
 * huge, exact ties between codes, subnormal codes, zeros and negative zeros. */
static float *qat_input(int64_t rows, int64_t stride, int64_t n, int block, float qmax) {
    float *x = malloc((size_t)(rows * stride) * sizeof *x);
    static const float mags[] = {1e-9f, 1e-5f, 0.01f, 1.0f, 37.0f, 3e4f};
    for (int64_t r = 0; r < rows; r++) {
        float m = mags[r % 6];
        for (int64_t i = 0; i < stride; i++) x[r * stride + i] = rnd_normal() * m;
        if (r % 7 == 3) {
            /* One block with amax = qmax (scale 1) and values on and between code points. */
            for (int k = 0; k < block; k++) {
                float v = (float)(k - block / 2) * (qmax > 10 ? 0.0625f : 0.25f);
                x[r * stride + k] = v;
            }
            x[r * stride + block - 1] = qmax;
            x[r * stride + 1] = -0.0f;
            x[r * stride + 2] = 0.001953125f * 1.5f; /* between E4M3 subnormal codes */
        }
    }
    (void)n;
    return x;
}

void test_qat(void) {
    static const struct { int fp4; int64_t rows, stride, n; int block; } cs[] = {
        {0, 42, 512, 448, 64}, {1, 42, 128, 128, 32}, {0, 3, 64, 64, 64}, {1, 64, 512, 512, 32}};
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        ds4_error err;
        int64_t rows = cs[c].rows, stride = cs[c].stride, n = cs[c].n, N = rows * stride;
        float *x = qat_input(rows, stride, n, cs[c].block, cs[c].fp4 ? 6.0f : 448.0f);
        float *ref = copy_vec(x, N), *got = malloc(N * sizeof *got);
        for (int64_t r = 0; r < rows; r++) {
            if (cs[c].fp4) cpu_fp4_roundtrip(ref + r * stride, n, cs[c].block);
            else cpu_fp8_roundtrip(ref + r * stride, n, cs[c].block);
        }
        float *dx = dev_put(x, N * 4);
        char name[96];
        snprintf(name, sizeof name, "%s round trip %lld rows, %lld of %lld, block %d",
                 cs[c].fp4 ? "fp4 e2m1" : "fp8 e4m3", (long long)rows, (long long)n,
                 (long long)stride, cs[c].block);
        ds4_status st = cs[c].fp4 ? cuda_fp4_roundtrip(dx, rows, stride, n, cs[c].block, &err)
                                  : cuda_fp8_roundtrip(dx, rows, stride, n, cs[c].block, &err);
        if (ok_call(st, name, &err)) {
            dev_get(got, dx, N * 4);
            cmp_f32(name, ref, got, N, 0, 0);
        }
        dev_free_all();
        free(x); free(ref); free(got);
    }
}

static void run_hc_case(const int hc, const int64_t d, const int64_t n) {
    ds4_error err;
    const int iters = 20;
    const int64_t nmix = (2 + hc) * hc;
    char nm[96];
    float *X = rnd_vec(n * hc * d, 1.0f), *mix = rnd_vec(n * nmix, 1.0f), *base = rnd_vec(nmix, 0.5f);
    float *norm = rnd_vec(d, 0.1f), scale[3] = {0.75f, 1.25f, 2.0f};
    for (int64_t i = 0; i < d; i++) norm[i] += 1.0f;
    float *pre = malloc(n * hc * 4), *post = malloc(n * hc * 4), *comb = malloc(n * hc * hc * 4);
    float *a = malloc(n * d * 4), *mx = malloc(nmix * 4);
    /* model/forward.c fwd_hc_pre after its matmul. */
    for (int64_t t = 0; t < n; t++) {
        const float *Xt = X + t * hc * d;
        float rho = hc_rho(Xt, hc * d, EPS);
        for (int64_t i = 0; i < nmix; i++) mx[i] = mix[t * nmix + i] * rho;
        hc_split(mx, scale, base, hc, iters, EPS, pre + t * hc, post + t * hc, comb + t * hc * hc);
        hc_weighted_sum(Xt, pre + t * hc, hc, d, a + t * d);
        cpu_rmsnorm(a + t * d, a + t * d, norm, d, EPS);
    }
    float *dX = dev_put(X, n * hc * d * 4), *dmix = dev_put(mix, n * nmix * 4);
    float *dscale = dev_put(scale, sizeof scale), *dbase = dev_put(base, nmix * 4);
    float *dnorm = dev_put(norm, d * 4), *dpre = dev_alloc(n * hc * 4), *dpost = dev_alloc(n * hc * 4);
    float *dcomb = dev_alloc(n * hc * hc * 4), *da = dev_alloc(n * d * 4);
    float *g1 = malloc(n * d * 4), *g2 = malloc(n * hc * d * 4);
    if (ok_call(cuda_hc_pre(dX, dmix, dscale, dbase, dnorm, n, hc, d, iters, EPS, EPS, dpre, dpost,
                            dcomb, da, &err),
                "hc_pre", &err)) {
        /* The same exp (cpu/refmath.h) through 20 Sinkhorn rounds and the same order-free rms
         * sums (ref_dsum) as hc_split / hc_rho / cpu_rmsnorm: bit-identical. */
        dev_get(g1, dpre, n * hc * 4);
        snprintf(nm, sizeof nm, "hc_pre pre (%lld tok, hc %d x %lld)", (long long)n, hc, (long long)d);
        cmp_f32(nm, pre, g1, n * hc, 0, 0);
        dev_get(g1, dpost, n * hc * 4);
        snprintf(nm, sizeof nm, "hc_pre post (hc %d)", hc);
        cmp_f32(nm, post, g1, n * hc, 0, 0);
        dev_get(g1, dcomb, n * hc * hc * 4);
        snprintf(nm, sizeof nm, "hc_pre comb, Sinkhorn 20 iters (hc %d)", hc);
        cmp_f32(nm, comb, g1, n * hc * hc, 0, 0);
        dev_get(g1, da, n * d * 4);
        snprintf(nm, sizeof nm, "hc_pre normalised input a (%lld x %lld)", (long long)n, (long long)d);
        cmp_f32(nm, a, g1, n * d, 0, 0);
    }
    /* hc_post on the CPU's pre/post/comb: pure ordered products and sums, bit-identical. */
    float *f = rnd_vec(n * d, 1.0f), *Xo = malloc(n * hc * d * 4);
    for (int64_t t = 0; t < n; t++)
        hc_post(f + t * d, X + t * hc * d, post + t * hc, comb + t * hc * hc, hc, d, Xo + t * hc * d);
    float *df = dev_put(f, n * d * 4), *dXo = dev_alloc(n * hc * d * 4);
    float *dpost2 = dev_put(post, n * hc * 4), *dcomb2 = dev_put(comb, n * hc * hc * 4);
    if (ok_call(cuda_hc_post(df, dX, dpost2, dcomb2, n, hc, d, dXo, &err), "hc_post", &err)) {
        dev_get(g2, dXo, n * hc * d * 4);
        snprintf(nm, sizeof nm, "hc_post (%lld tok, %d x %lld)", (long long)n, hc, (long long)d);
        cmp_f32(nm, Xo, g2, n * hc * d, 0, 0);
    }
    /* hc_head (model/forward.c fwd_output before the head matmul). */
    float *mixh = rnd_vec(n * hc, 1.0f), *baseh = rnd_vec(hc, 0.5f), *y = malloc(n * d * 4), ph[16];
    for (int64_t t = 0; t < n; t++) {
        const float *Xt = X + t * hc * d;
        float rho = hc_rho(Xt, hc * d, EPS), m4[16];
        for (int k = 0; k < hc; k++) m4[k] = mixh[t * hc + k] * rho;
        hc_head_weights(m4, scale[0], baseh, hc, EPS, ph);
        hc_weighted_sum(Xt, ph, hc, d, y + t * d);
        cpu_rmsnorm(y + t * d, y + t * d, norm, d, EPS);
    }
    float *dmixh = dev_put(mixh, n * hc * 4), *dbaseh = dev_put(baseh, hc * 4), *dy = dev_alloc(n * d * 4);
    if (ok_call(cuda_hc_head(dX, dmixh, dscale, dbaseh, dnorm, n, hc, d, EPS, EPS, dy, &err),
                "hc_head", &err)) {
        dev_get(g1, dy, n * d * 4);
        snprintf(nm, sizeof nm, "hc_head + output norm (%lld x %lld, hc %d)", (long long)n, (long long)d, hc);
        cmp_f32(nm, y, g1, n * d, 0, 0);
    }
    dev_free_all();
    free(X); free(mix); free(base); free(norm); free(pre); free(post); free(comb); free(a);
    free(mx); free(g1); free(g2); free(f); free(Xo); free(mixh); free(baseh); free(y);
}

/* hc_pre of few tokens (hc 4 x 4096: the two-block decode kernel, X in registers) against the
 * one-block-per-token kernel that runs from 32 tokens on: token 0 of a 32-token call holds the
 * same inputs, and every output (pre, post, comb, a, its Q8_0 and Q8_K) must match bit for bit. */
static void run_hc_dec_same(void) {
    ds4_error err;
    const int hc = 4, nmix = 24;
    const int64_t d = 4096, n = 32;
    size_t s80 = cuda_matvec_scratch_bytes(Q_TYPE_Q8_0, d), s8k = cuda_matvec_scratch_bytes(Q_TYPE_Q2_K, d);
    float *X = rnd_vec(n * hc * d, 1.0f), *mix = rnd_vec(n * nmix, 1.0f), *base = rnd_vec(nmix, 0.5f);
    float *norm = rnd_vec(d, 0.1f), scale[3] = {0.75f, 1.25f, 2.0f};
    for (int64_t i = 0; i < d; i++) norm[i] += 1.0f;
    float *dX = dev_put(X, n * hc * d * 4), *dmix = dev_put(mix, n * nmix * 4);
    float *dscale = dev_put(scale, sizeof scale), *dbase = dev_put(base, nmix * 4), *dnorm = dev_put(norm, d * 4);
    float *o[2], *da[2];
    uint8_t *dq[2], *hq[2] = {malloc(s80 + s8k), malloc(s80 + s8k)};
    float ho[2][48], *ha[2] = {malloc(d * 4), malloc(d * 4)};
    int ok = 1;
    for (int v = 0; v < 2; v++) {
        int64_t nt = v ? n : 1;
        o[v] = dev_alloc(nt * 24 * 4);
        da[v] = dev_alloc(nt * d * 4);
        dq[v] = dev_alloc(nt * (s80 + s8k));
        ok = ok && o[v] && da[v] && dq[v] &&
             ok_call(cuda_hc_pre_quant(dX, dmix, dscale, dbase, dnorm, nt, hc, d, 20, EPS, EPS, o[v],
                                       o[v] + nt * hc, o[v] + 2 * nt * hc, da[v], dq[v], dq[v] + nt * s80, &err),
                     "hc_pre_quant", &err);
        if (!ok) break;
        dev_get(ho[v], o[v], hc * 4);
        dev_get(ho[v] + hc, o[v] + nt * hc, hc * 4);
        dev_get(ho[v] + 2 * hc, o[v] + 2 * nt * hc, hc * hc * 4);
        dev_get(ha[v], da[v], d * 4);
        dev_get(hq[v], dq[v], s80);
        dev_get(hq[v] + s80, dq[v] + nt * s80, s8k);
    }
    if (ok) {
        const char *nm = "hc_pre decode kernel (1 token) = per-token kernel (32 tokens), bit for bit";
        int same = !memcmp(ho[0], ho[1], (2 * hc + hc * hc) * 4) && !memcmp(ha[0], ha[1], d * 4) &&
                   !memcmp(hq[0], hq[1], s80 + s8k);
        result(same, nm, same ? "" : "pre/post/comb, a or its Q8_0/Q8_K differ");
    }
    dev_free_all();
    free(X); free(mix); free(base); free(norm); free(hq[0]); free(hq[1]); free(ha[0]); free(ha[1]);
}

void test_hc(void) {
    run_hc_case(4, 4096, 3); /* Flash: comb in registers (the decode kernel) */
    run_hc_case(4, 4096, 33); /* Flash widths, one block per token */
    run_hc_dec_same();
    run_hc_case(6, 512, 2);  /* hc² > 32: the shared-memory Sinkhorn */
}

/* The routing of model/moe.c moe_forward (static there): sqrt(softplus), hash table or K
 * rounds of "largest p + bias among the unused, first id on ties", ascending ids, weights. */
static void route_ref(const float *logits, const float *bias, const int32_t *tid2eid,
                      const int32_t *tokens, int64_t n, int E, int K, float route_scale,
                      int norm, int32_t *sel_out, float *w_out) {
    float *p = malloc((size_t)E * sizeof *p);
    for (int64_t t = 0; t < n; t++) {
        for (int e = 0; e < E; e++) p[e] = sqrtf(cpu_softplus(logits[t * E + e]));
        int32_t *sel = sel_out + t * K;
        if (tid2eid) {
            memcpy(sel, tid2eid + (int64_t)tokens[t] * K, (size_t)K * sizeof(int32_t));
        } else {
            for (int k = 0; k < K; k++) {
                int32_t best = -1;
                float bv = -INFINITY;
                for (int e = 0; e < E; e++) {
                    int used = 0;
                    for (int j = 0; j < k; j++) used |= sel[j] == e;
                    if (used) continue;
                    float v = p[e] + bias[e];
                    if (best < 0 || v > bv) { best = e; bv = v; }
                }
                sel[k] = best;
            }
        }
        for (int a = 1; a < K; a++)
            for (int b = a; b > 0 && sel[b - 1] > sel[b]; b--) {
                int32_t x = sel[b]; sel[b] = sel[b - 1]; sel[b - 1] = x;
            }
        float sum = 0.0f;
        for (int k = 0; k < K; k++) sum += p[sel[k]];
        for (int k = 0; k < K; k++)
            w_out[t * K + k] = norm ? p[sel[k]] / sum * route_scale : p[sel[k]] * route_scale;
    }
    free(p);
}

static void test_route_case(const char *name, int hash, int norm) {
    ds4_error err;
    const int E = 256, K = 6, vocab = 11;
    const int64_t n = 5;
    float *logits = rnd_vec(n * E, 2.0f), *bias = rnd_vec(E, 0.1f);
    /* Token 3: eight experts tie on p + bias for six slots: the lower ids must win. */
    static const int tied[] = {200, 7, 99, 150, 3, 64, 31, 250};
    for (int i = 0; i < 8; i++) {
        logits[3 * E + tied[i]] = 6.0f;
        bias[tied[i]] = 0.25f;
    }
    int32_t tid2eid[11 * 6], tokens[5] = {4, 0, 10, 4, 7};
    for (int v = 0; v < vocab; v++)
        for (int k = 0; k < K; k++) tid2eid[v * K + k] = (int32_t)((v * 37 + k * 41 + 5) % E);
    int32_t sel[5 * 6], gsel[5 * 6];
    float w[5 * 6], gw[5 * 6];
    route_ref(logits, hash ? NULL : bias, hash ? tid2eid : NULL, tokens, n, E, K, 1.5f, norm, sel, w);
    float *dl = dev_put(logits, n * E * 4), *db = dev_put(bias, E * 4), *dw = dev_alloc(sizeof w);
    int32_t *dt = dev_put(tid2eid, sizeof tid2eid), *dtok = dev_put(tokens, sizeof tokens);
    int32_t *ds = dev_alloc(sizeof sel);
    if (ok_call(cuda_moe_route(dl, hash ? NULL : db, hash ? dt : NULL, dtok, n, E, K, 1.5f, norm,
                               ds, dw, &err),
                name, &err)) {
        dev_get(gsel, ds, sizeof gsel);
        dev_get(gw, dw, sizeof gw);
        char nm[96];
        snprintf(nm, sizeof nm, "%s: selected experts", name);
        cmp_i32(nm, sel, gsel, n * K);
        snprintf(nm, sizeof nm, "%s: routing weights", name);
        cmp_f32(nm, w, gw, n * K, 0, 0); /* softplus's exp / log1p: cpu/refmath.h both sides */
    }
    dev_free_all();
    free(logits); free(bias);
}

void test_moe(void) {
    test_route_case("moe_route biased top-6 of 256 (ties on token 3)", 0, 1);
    test_route_case("moe_route hash tid2eid", 1, 1);
    test_route_case("moe_route biased, unnormalised weights", 0, 0);
    /* SwiGLU with clamp 10 (MODEL_MATH §9.4), per-row weights and without. */
    for (int with_w = 0; with_w < 2; with_w++) {
        ds4_error err;
        const int64_t rows = 6, F = 2048, N = rows * F;
        const float clamp = 10.0f;
        float *g = rnd_vec(N, 8.0f), *u = rnd_vec(N, 8.0f), rw[6], *ref = malloc(N * 4), *got = malloc(N * 4);
        for (int r = 0; r < 6; r++) rw[r] = 0.05f + 0.1f * (float)r;
        for (int64_t i = 0; i < N; i++) { /* model/moe.c swiglu */
            float gv = g[i] > clamp ? clamp : g[i];
            float uv = u[i] > clamp ? clamp : (u[i] < -clamp ? -clamp : u[i]);
            ref[i] = cpu_silu(gv) * uv * (with_w ? rw[i / F] : 1.0f);
        }
        float *dg = dev_put(g, N * 4), *du = dev_put(u, N * 4), *drw = dev_put(rw, sizeof rw);
        float *dh = dev_alloc(N * 4);
        const char *name = with_w ? "swiglu 6x2048 clamp 10, routing weights" : "swiglu 6x2048 clamp 10";
        if (ok_call(cuda_swiglu(dg, du, with_w ? drw : NULL, rows, F, clamp, dh, &err), name, &err)) {
            dev_get(got, dh, N * 4);
            cmp_f32(name, ref, got, N, 0, 0); /* cpu_silu's exp is the kernel's */
        }
        dev_free_all();
        free(g); free(u); free(ref); free(got);
    }
    /* Combination: ((0 + y0) + y1) ... + shared, bit-identical. */
    for (int with_sh = 0; with_sh < 2; with_sh++) {
        ds4_error err;
        const int64_t n = 2, K = 6, D = 4096;
        float *y = rnd_vec(n * K * D, 1.0f), *sh = rnd_vec(n * D, 1.0f), *ref = malloc(n * D * 4),
              *got = malloc(n * D * 4);
        for (int64_t t = 0; t < n; t++)
            for (int64_t i = 0; i < D; i++) {
                float s = 0.0f;
                for (int64_t k = 0; k < K; k++) s += y[(t * K + k) * D + i];
                if (with_sh) s += sh[t * D + i];
                ref[t * D + i] = s;
            }
        float *dy = dev_put(y, n * K * D * 4), *dsh = dev_put(sh, n * D * 4), *dout = dev_alloc(n * D * 4);
        const char *name = with_sh ? "moe_combine 2 tok x 6 x 4096 + shared" : "moe_combine 2 tok x 6 x 4096";
        if (ok_call(cuda_moe_combine(dy, with_sh ? dsh : NULL, n, (int)K, D, dout, &err), name, &err)) {
            dev_get(got, dout, n * D * 4);
            cmp_f32(name, ref, got, n * D, 0, 0);
        }
        dev_free_all();
        free(y); free(sh); free(ref); free(got);
    }
}

void test_argmax(void) {
    ds4_error err;
    const int64_t V = 129280, rows = 4;
    float *x = rnd_vec(rows * V, 3.0f);
    x[7] = INFINITY;                         /* non-finite: skipped */
    x[1 * V + 500] = 40.0f;                  /* tie: lower id wins */
    x[1 * V + 100000] = 40.0f;
    x[1 * V + 3] = NAN;
    for (int64_t i = 0; i < V; i++) x[2 * V + i] = NAN; /* none finite: -1 */
    x[3 * V + V - 1] = 50.0f;                /* last id */
    int32_t ref[4], got[4];
    for (int64_t r = 0; r < rows; r++) ref[r] = ds4_argmax(x + r * V, (uint32_t)V);
    float *dx = dev_put(x, rows * V * 4);
    int32_t *dout = dev_alloc(sizeof got);
    if (ok_call(cuda_argmax(dx, rows, V, dout, &err), "argmax", &err)) {
        dev_get(got, dout, sizeof got);
        cmp_i32("argmax 4 rows of 129280 (inf, NaN, tie, all-NaN)", ref, got, rows);
    }
    dev_free_all();
    free(x);
}

/* ---- timings at Flash shapes (MODEL_MATH §0), one decode token ---- */

void bench_elem_ops(void) {
    const int64_t D = 4096, H = 64, Dh = 512, hc = 4, E = 256, V = 129280;
    float *h = rnd_vec(V * 2, 1.0f);
    float *dx = dev_put(h, hc * D * 4), *dy = dev_alloc(hc * D * 4), *dq = dev_put(h, H * Dh * 4);
    float *dw = dev_put(h, D * 4), *dmix = dev_put(h, 24 * 4), *dscale = dev_put(h, 12);
    float *dbase = dev_put(h, 24 * 4), *dpre = dev_alloc(64), *dpost = dev_alloc(64);
    float *dcomb = dev_alloc(256), *da = dev_alloc(D * 4), *dfreq = dev_put(h, 32 * 4);
    float *dl = dev_put(h, V * 4), *dsel_w = dev_alloc(64), *dg = dev_put(h, 6 * 2048 * 4);
    float *dyk = dev_put(h, 6 * D * 4);
    int32_t *dsel = dev_alloc(64), *dam = dev_alloc(16);
    if (!dyk || !dam) { printf("bench elem: allocation failed\n"); dev_free_all(); free(h); return; }
    const int it = 200;
    printf("bench (one decode token, Flash shapes; launch + kernel, averaged over %d calls)\n", it);
    BENCH("rmsnorm 1 x 4096 weighted", it, cuda_rmsnorm(da, dx, dw, 1, D, EPS, &e_));
    BENCH("rmsnorm 64 heads x 512 (q, no weight)", it, cuda_rmsnorm(dq, dq, NULL, H, Dh, EPS, &e_));
    BENCH("rope_tail 64 heads x 64 dims", it, cuda_rope_tail(dq, H, Dh, Dh - 64, H, 64, dfreq, 5000, 0, &e_));
    BENCH("fp8 round trip kv 448 dims", it, cuda_fp8_roundtrip(dq, 1, Dh, 448, 64, &e_));
    BENCH("hadamard + fp4 64 indexer heads x 128", it,
          cuda_hadamard(dq, 64, 128, 128, &e_) || cuda_fp4_roundtrip(dq, 64, 128, 128, 32, &e_));
    BENCH("hc_pre (hc 4 x 4096, Sinkhorn 20)", it,
          cuda_hc_pre(dx, dmix, dscale, dbase, dw, 1, (int)hc, D, 20, EPS, EPS, dpre, dpost, dcomb, da, &e_));
    BENCH("hc_post (hc 4 x 4096)", it, cuda_hc_post(da, dx, dpost, dcomb, 1, (int)hc, D, dy, &e_));
    BENCH("hc_head + norm", it, cuda_hc_head(dx, dmix, dscale, dbase, dw, 1, (int)hc, D, EPS, EPS, da, &e_));
    BENCH("moe_route 256 experts, top 6", it,
          cuda_moe_route(dl, dl, NULL, NULL, 1, (int)E, 6, 1.5f, 1, dsel, dsel_w, &e_));
    BENCH("swiglu 6 x 2048", it, cuda_swiglu(dg, dg, dsel_w, 6, 2048, 10.0f, dg, &e_));
    BENCH("moe_combine 6 x 4096 + shared", it, cuda_moe_combine(dyk, dyk, 1, 6, D, da, &e_));
    BENCH("argmax 129280", it, cuda_argmax(dl, 1, V, dam, &e_));
    dev_free_all();
    free(h);
}
