/*
 * tests/test_quant_encode.c — the weight encoders: byte-exactness against ds4's converter on
 * the published real blocks (quants README §3.2, §8), encode→decode error bounds per type on
 * Gaussian rows, the effect of importance weights, and dot == decode-then-dot (README §7.2).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/quant.h"
#include "format/quant_impl.h"
#include "testutil.h"

static void *read_q(const char *name, size_t *len) {
    char rel[256];
    snprintf(rel, sizeof rel, "testdata/quants/%s", name);
    return tu_read_shared(rel, len);
}

/* Encodes the rows of <stem>.src.f32 with the per-row recipe of README §3.2 and counts how
 * many of the 64 real blocks equal the published bytes; prints the first mismatches. */
typedef enum { IMP_NONE, IMP_ONES, IMP_FALLBACK_PAIR } imp_kind;

static int count_exact(int type, const char *stem, int n_rows, const imp_kind *recipe) {
    char name[64];
    size_t ns, nb;
    snprintf(name, sizeof name, "%s.src.f32", stem);
    float *src = read_q(name, &ns);
    snprintf(name, sizeof name, "%s.blocks", stem);
    uint8_t *want = read_q(name, &nb);
    size_t n_cols = ns / 4 / (size_t)n_rows;
    size_t bb = q_block_bytes(type), be = q_block_elems(type);
    size_t blocks_per_row = n_cols / be;
    cr_assert_eq(blocks_per_row * (size_t)n_rows, 64, "%s: expected 64 real blocks", stem);
    uint8_t *got = malloc(64 * bb);
    float *imp = malloc(2 * n_cols * sizeof(float));
    for (int r = 0; r < n_rows; r++) {
        const float *x = src + (size_t)r * n_cols;
        const float *w = NULL;
        if (recipe[r] == IMP_ONES) {
            for (size_t c = 0; c < n_cols; c++) imp[c] = 1.0f;
            w = imp;
        } else if (recipe[r] == IMP_FALLBACK_PAIR) {
            /* The converter's synthetic importance over the 2-row matrix (r & ~1, r | 1). */
            q_importance_fallback(src + (size_t)(r & ~1) * n_cols, 2, n_cols, imp);
            w = imp;
        }
        ds4_error err = {0};
        cr_assert_eq(q_encode_row(type, x, got + (size_t)r * blocks_per_row * bb, n_cols, w, &err),
                     DS4_OK, "%s", err.msg);
    }
    int exact = 0, shown = 0;
    for (int b = 0; b < 64; b++) {
        if (memcmp(got + b * bb, want + b * bb, bb) == 0) {
            exact++;
        } else if (shown++ < 3) {
            size_t i = 0;
            while (got[b * bb + i] == want[b * bb + i]) i++;
            fprintf(stderr, "%s encode: block %d differs first at byte %zu: expected 0x%02x got 0x%02x\n",
                    stem, b, i, want[b * bb + i], got[b * bb + i]);
        }
    }
    fprintf(stderr, "%s encoder: %d/64 real blocks byte-exact\n", stem, exact);
    free(imp);
    free(got);
    free(want);
    free(src);
    return exact;
}

Test(quant_encode, q8_0_reproduces_published_blocks) {
    const imp_kind r[2] = {IMP_NONE, IMP_NONE};
    cr_assert_eq(count_exact(Q_TYPE_Q8_0, "Q8_0", 2, r), 64);
}

Test(quant_encode, q2_k_reproduces_published_blocks) {
    const imp_kind r[8] = {IMP_NONE, IMP_NONE, IMP_ONES, IMP_ONES,
                           IMP_NONE, IMP_NONE, IMP_ONES, IMP_ONES};
    cr_assert_eq(count_exact(Q_TYPE_Q2_K, "Q2_K", 8, r), 64);
}

Test(quant_encode, q4_k_reproduces_published_blocks) {
    const imp_kind r[4] = {IMP_NONE, IMP_NONE, IMP_ONES, IMP_ONES};
    cr_assert_eq(count_exact(Q_TYPE_Q4_K, "Q4_K", 4, r), 64);
}

Test(quant_encode, iq2_xxs_reproduces_published_blocks) {
    const imp_kind r[4] = {IMP_FALLBACK_PAIR, IMP_FALLBACK_PAIR, IMP_ONES, IMP_ONES};
    cr_assert_eq(count_exact(Q_TYPE_IQ2_XXS, "IQ2_XXS", 4, r), 64);
}

/* ---- Encode -> decode error on Gaussian rows ---- */

/* Deterministic N(0,1) source (PCG-style LCG + Box-Muller) so the bounds are reproducible. */
typedef struct { uint64_t s; } rng;
static double rng_u01(rng *r) {
    r->s = r->s * 6364136223846793005ULL + 1442695040888963407ULL;
    return ((double)(r->s >> 11) + 0.5) / 9007199254740992.0;
}
static float rng_gauss(rng *r) {
    double u = rng_u01(r), v = rng_u01(r);
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

enum { ERR_COLS = 4096, ERR_ROWS = 8 };

/* Relative RMSE sqrt(Σ(x-y)²/Σx²) and importance-weighted squared error Σ imp·(x-y)². */
static void measure(int type, const float *x, const float *enc_imp, const float *score_imp,
                    double *rel_rmse, double *weighted) {
    uint64_t rb;
    cr_assert_eq(q_row_bytes(type, ERR_COLS, &rb, NULL), DS4_OK);
    uint8_t *buf = malloc(rb);
    float *y = malloc(ERR_COLS * sizeof(float));
    double e = 0, xx = 0, we = 0;
    for (int r = 0; r < ERR_ROWS; r++) {
        const float *xr = x + (size_t)r * ERR_COLS;
        ds4_error err = {0};
        cr_assert_eq(q_encode_row(type, xr, buf, ERR_COLS, enc_imp, &err), DS4_OK, "%s", err.msg);
        cr_assert_eq(q_decode_row(type, buf, y, ERR_COLS, &err), DS4_OK, "%s", err.msg);
        for (int i = 0; i < ERR_COLS; i++) {
            double d = (double)xr[i] - y[i];
            e += d * d;
            xx += (double)xr[i] * xr[i];
            we += (score_imp ? score_imp[i] : 1.0) * d * d;
        }
    }
    *rel_rmse = sqrt(e / xx);
    *weighted = we;
    free(y);
    free(buf);
}

static float *gaussian_rows(uint64_t seed, float sigma) {
    rng r = {seed};
    float *x = malloc((size_t)ERR_ROWS * ERR_COLS * sizeof(float));
    for (size_t i = 0; i < (size_t)ERR_ROWS * ERR_COLS; i++) x[i] = sigma * rng_gauss(&r);
    return x;
}

/* Bounds: measured on this data (Q8_0 0.0054, Q4_K 0.071, Q2_K 0.297, IQ2_XXS 0.342, F16
 * 0.00021, BF16 0.0017 — the same algorithms as ds4's converter, GGUF_LAYOUT §4.8 quotes
 * 0.55 % and 7.6 %) plus ~20 % margin. */
Test(quant_encode, gaussian_error_within_bounds) {
    static const struct { int type; double bound; } cases[] = {
        {Q_TYPE_Q8_0, 0.0065}, {Q_TYPE_Q4_K, 0.085}, {Q_TYPE_Q2_K, 0.35},
        {Q_TYPE_IQ2_XXS, 0.41}, {Q_TYPE_F16, 0.00026}, {Q_TYPE_BF16, 0.0021},
    };
    float *x = gaussian_rows(12345, 0.02f);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        double rel, we;
        measure(cases[c].type, x, NULL, NULL, &rel, &we);
        fprintf(stderr, "%s: relative RMSE %.5f (bound %.5f)\n", q_type_name(cases[c].type), rel,
                cases[c].bound);
        cr_assert(rel < cases[c].bound, "%s: relative RMSE %.5f exceeds bound %.5f",
                  q_type_name(cases[c].type), rel, cases[c].bound);
        cr_assert(rel > cases[c].bound / 10, "%s: relative RMSE %.5g is implausibly small",
                  q_type_name(cases[c].type), rel);
    }
    free(x);
}

/* Weighted encoders spend precision where the importance is high (GGUF_LAYOUT §5.6): the
 * imp-weighted error must drop clearly versus encoding without importance (IQ2_XXS: versus
 * unit weights). Measured ratios: Q4_K 0.46, Q2_K 0.30, IQ2_XXS 0.58; Q8_0 ignores it (1.0). */
Test(quant_encode, importance_reduces_weighted_error) {
    static const struct { int type; double max_ratio; } cases[] = {
        {Q_TYPE_Q4_K, 0.7}, {Q_TYPE_Q2_K, 0.6}, {Q_TYPE_IQ2_XXS, 0.8},
    };
    float *x = gaussian_rows(777, 0.02f);
    rng r = {99};
    float *imp = malloc(ERR_COLS * sizeof(float));
    for (int i = 0; i < ERR_COLS; i++) imp[i] = expf(2.0f * rng_gauss(&r));
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        double rel0, we0, rel1, we1;
        measure(cases[c].type, x, NULL, imp, &rel0, &we0);
        measure(cases[c].type, x, imp, imp, &rel1, &we1);
        fprintf(stderr, "%s: weighted error with/without importance = %.3f\n",
                q_type_name(cases[c].type), we1 / we0);
        cr_assert(we1 < cases[c].max_ratio * we0,
                  "%s: importance did not reduce weighted error enough: %.4g vs %.4g (ratio %.3f > %.2f)",
                  q_type_name(cases[c].type), we1, we0, we1 / we0, cases[c].max_ratio);
    }
    double rel0, we0, rel1, we1;
    measure(Q_TYPE_Q8_0, x, NULL, imp, &rel0, &we0);
    measure(Q_TYPE_Q8_0, x, imp, imp, &rel1, &we1);
    cr_assert_eq(we0, we1, "Q8_0 must ignore importance");
    free(imp);
    free(x);
}

Test(quant_encode, zero_and_constant_rows_decode_exactly) {
    static const int types[] = {Q_TYPE_Q8_0, Q_TYPE_Q2_K, Q_TYPE_Q4_K, Q_TYPE_IQ2_XXS};
    float x[512], y[512];
    uint8_t buf[512 * 2];
    for (size_t t = 0; t < 4; t++) {
        memset(x, 0, sizeof x);
        cr_assert_eq(q_encode_row(types[t], x, buf, 512, NULL, NULL), DS4_OK);
        cr_assert_eq(q_decode_row(types[t], buf, y, 512, NULL), DS4_OK);
        for (int i = 0; i < 512; i++)
            cr_assert_eq(y[i], 0.0f, "%s: zero row decodes to %g at %d", q_type_name(types[t]), y[i], i);
    }
    /* A constant positive row is representable by Q8_0 / Q2_K / Q4_K up to f16 rounding of d. */
    for (size_t t = 0; t < 3; t++) {
        for (int i = 0; i < 512; i++) x[i] = 0.75f;
        cr_assert_eq(q_encode_row(types[t], x, buf, 512, NULL, NULL), DS4_OK);
        cr_assert_eq(q_decode_row(types[t], buf, y, 512, NULL), DS4_OK);
        for (int i = 0; i < 512; i++)
            cr_assert(fabsf(y[i] - 0.75f) < 2e-3f, "%s: constant 0.75 decodes to %g at %d",
                      q_type_name(types[t]), y[i], i);
    }
}

/* ---- dot == decode-then-dot (README §7.2: |Δ| <= 1e-6·M) ---- */

static double act_value(int kind, const void *act, size_t i) {
    if (kind == Q_ACT_Q8_0) {
        const q8act_block *a = act;
        return (double)a[i / 32].d * a[i / 32].q[i % 32];
    }
    const q8k_block *a = act;
    return (double)a[i / 256].d * a[i / 256].q[i % 256];
}

Test(quant_dot, equals_decode_then_dot) {
    static const int types[] = {Q_TYPE_Q8_0, Q_TYPE_Q2_K, Q_TYPE_Q4_K, Q_TYPE_IQ2_XXS};
    enum { N = 4096 };
    float *w = gaussian_rows(31, 0.05f), *a = gaussian_rows(32, 1.0f);
    float *dec = malloc(N * sizeof(float)), *lo = malloc(N * sizeof(float));
    uint8_t *buf = malloc(N * 2), *buf0 = malloc(N * 2);
    q8k_block *ak = malloc(N / 256 * sizeof *ak);
    q8act_block *a8 = malloc(N / 32 * sizeof *a8);
    for (int simd = 0; simd <= 1; simd++) {
        if (simd && !q_cpu_has_avx2()) break;
        q_set_simd(simd);
        for (size_t t = 0; t < 4; t++) {
            int type = types[t];
            int kind = q_act_kind_for(type);
            for (int r = 0; r < ERR_ROWS; r++) {
                const float *wr = w + (size_t)r * N, *ar = a + (size_t)r * N;
                const void *act = kind == Q_ACT_Q8_0 ? (const void *)a8 : (const void *)ak;
                if (kind == Q_ACT_Q8_0) cr_assert_eq(q_quantize_q8act(ar, a8, N, NULL), DS4_OK);
                else cr_assert_eq(q_quantize_q8k(ar, ak, N, NULL), DS4_OK);
                cr_assert_eq(q_encode_row(type, wr, buf, N, NULL, NULL), DS4_OK);
                cr_assert_eq(q_decode_row(type, buf, dec, N, NULL), DS4_OK);
                /* The min term of Q2_K/Q4_K: decode with all codes zeroed gives -dmin·m. */
                uint64_t rb;
                q_row_bytes(type, N, &rb, NULL);
                memcpy(buf0, buf, rb);
                size_t bb = q_block_bytes(type);
                for (size_t b = 0; b < rb / bb; b++) {
                    if (type == Q_TYPE_Q2_K) memset(buf0 + b * bb + 16, 0, 64);
                    if (type == Q_TYPE_Q4_K) memset(buf0 + b * bb + 16, 0, 128);
                }
                bool has_min = type == Q_TYPE_Q2_K || type == Q_TYPE_Q4_K;
                if (has_min) q_decode_row(type, buf0, lo, N, NULL);
                double ref = 0, M = 0;
                for (size_t i = 0; i < N; i++) {
                    double av = act_value(kind, act, i);
                    ref += (double)dec[i] * av;
                    if (has_min) M += (fabs((double)dec[i] - lo[i]) + fabs((double)lo[i])) * fabs(av);
                    else M += fabs((double)dec[i] * av);
                }
                float got;
                cr_assert_eq(q_dot_row(type, buf, act, N, &got, NULL), DS4_OK);
                cr_assert(fabs(got - ref) <= 1e-6 * M,
                          "%s (%s) row %d: dot %.9g, decode-then-dot %.9g, |diff| %.3g > 1e-6·M = %.3g",
                          q_type_name(type), simd ? "avx2" : "scalar", r, got, ref,
                          fabs(got - ref), 1e-6 * M);
            }
        }
    }
    free(a8); free(ak); free(buf0); free(buf); free(lo); free(dec); free(a); free(w);
}

/* Encoders assume finite rows, but inf/NaN/huge input (a corrupt checkpoint) must still give
 * in-range codes without crashing or undefined behaviour (run under `make asan`). */
Test(quant_encode, non_finite_input_is_contained) {
    static const int types[] = {Q_TYPE_Q8_0, Q_TYPE_Q2_K, Q_TYPE_Q4_K, Q_TYPE_IQ2_XXS,
                                Q_TYPE_F16, Q_TYPE_BF16};
    enum { N = 1024 };
    float x[N], y[N], imp[N];
    uint8_t buf[N * 2];
    for (int pattern = 0; pattern < 4; pattern++) {
        for (int i = 0; i < N; i++) {
            x[i] = (float)((i * 37) % 101 - 50) * 0.01f;
            imp[i] = 1.0f + (float)(i % 3);
            if (i % 9 == 0) x[i] = pattern == 0 ? NAN : pattern == 1 ? INFINITY
                                  : pattern == 2 ? -3e38f : -INFINITY;
        }
        for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
            cr_assert_eq(q_encode_row(types[t], x, buf, N, NULL, NULL), DS4_OK);
            cr_assert_eq(q_decode_row(types[t], buf, y, N, NULL), DS4_OK);
            cr_assert_eq(q_encode_row(types[t], x, buf, N, imp, NULL), DS4_OK);
            cr_assert_eq(q_decode_row(types[t], buf, y, N, NULL), DS4_OK);
        }
    }
}
