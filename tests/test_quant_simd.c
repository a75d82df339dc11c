/*
 * tests/test_quant_simd.c — the AVX2 kernels equal the scalar reference bit for bit
 * (quant.h contract) on random and edge data: every dot type, odd F32 lengths (tails), the
 * fast paths with engine-made activations and their exact redo on a planted -128, q_dot_rows
 * against single-row dots, and both activation quantizers including ties, zeros,
 * subnormals, huge values, inf and NaN.
 * Also checks the compiled IQ2_XXS tables against the shared data files.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/fp8.h"
#include "format/quant.h"
#include "format/quant_impl.h"
#include "testutil.h"

static uint64_t g_state;
static uint32_t rnd(void) {
    g_state = g_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(g_state >> 33);
}
static float rnd_gauss(void) {
    double u = ((double)rnd() + 0.5) / 2147483648.0, v = ((double)rnd() + 0.5) / 2147483648.0;
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* A finite random f16 with exponent <= 28 (keeps products far from overflow). */
static uint16_t rnd_f16_finite(void) {
    uint16_t h = (uint16_t)rnd();
    uint16_t e = (h >> 10) & 31;
    if (e > 28) h = (uint16_t)((h & ~(31u << 10)) | ((e - 8u) << 10));
    return h;
}

/* Random blocks of `type` with finite f16 scales; `edge` selects extreme bytes. */
static void fill_blocks(int type, uint8_t *b, size_t n_blocks, int edge) {
    size_t bb = q_block_bytes(type);
    for (size_t i = 0; i < n_blocks * bb; i++)
        b[i] = edge == 1 ? 0x80 : edge == 2 ? 0xFF : (uint8_t)rnd();
    for (size_t k = 0; k < n_blocks; k++) {
        uint8_t *p = b + k * bb;
        uint16_t d = edge ? 0x7BFF : rnd_f16_finite(), dm = edge ? 0xFBFF : rnd_f16_finite();
        if (type == Q_TYPE_Q8_0 || type == Q_TYPE_IQ2_XXS) memcpy(p, &d, 2);
        if (type == Q_TYPE_Q4_K) { memcpy(p, &d, 2); memcpy(p + 2, &dm, 2); }
        if (type == Q_TYPE_Q2_K) { memcpy(p + 80, &d, 2); memcpy(p + 82, &dm, 2); }
    }
}

static void fill_q8k(q8k_block *a, size_t n_blocks, int edge) {
    for (size_t k = 0; k < n_blocks; k++) {
        a[k].d = edge ? -1.5e-3f : rnd_gauss() * 0.01f;
        for (int i = 0; i < 256; i++) a[k].q[i] = edge == 1 ? -128 : edge == 2 ? 127 : (int8_t)rnd();
        for (int j = 0; j < 16; j++) {
            int s = 0;
            for (int i = 0; i < 16; i++) s += a[k].q[16 * j + i];
            a[k].bsums[j] = (int16_t)s;
        }
    }
}

static void fill_q8act(q8act_block *a, size_t n_blocks, int edge) {
    for (size_t k = 0; k < n_blocks; k++) {
        a[k].d = edge ? 2.5e-2f : rnd_gauss() * 0.01f;
        for (int i = 0; i < 32; i++) a[k].q[i] = edge == 1 ? -128 : edge == 2 ? 127 : (int8_t)rnd();
    }
}

static float dot_with(int type, bool simd, const void *w, const void *act, uint64_t n) {
    q_set_simd(simd);
    q_dot_fn f = q_dot_kernel(type);
    cr_assert_not_null(f);
    return f(w, act, n);
}

Test(quant_simd, quantized_dots_equal_scalar) {
    if (!q_cpu_has_avx2()) cr_skip_test("CPU has no AVX2");
    static const int types[] = {Q_TYPE_Q8_0, Q_TYPE_Q2_K, Q_TYPE_Q4_K, Q_TYPE_IQ2_XXS};
    enum { N = 4096 };
    uint8_t *w = malloc(N / 32 * 34 + N);
    q8k_block *ak = malloc(N / 256 * sizeof *ak);
    q8act_block *a8 = malloc(N / 32 * sizeof *a8);
    g_state = 2024;
    for (size_t t = 0; t < 4; t++) {
        int type = types[t];
        for (int trial = 0; trial < 40; trial++) {
            /* trials 0..8: every combination of weight and activation edge patterns (random, all
             * 0x80 / -128, all 0xFF / 127), then random data */
            int we = trial < 9 ? trial % 3 : 0, ae = trial < 9 ? trial / 3 : 0;
            fill_blocks(type, w, N / q_block_elems(type), we);
            fill_q8k(ak, N / 256, ae);
            fill_q8act(a8, N / 32, ae);
            const void *act = type == Q_TYPE_Q8_0 ? (const void *)a8 : (const void *)ak;
            uint64_t n = trial % 2 ? N : q_block_elems(type) * (1 + trial % 5);
            float s = dot_with(type, false, w, act, n), v = dot_with(type, true, w, act, n);
            cr_assert_eq(bits(s), bits(v),
                         "%s trial %d (w edge %d, act edge %d, n %llu): scalar %.9g (0x%08x) avx2 %.9g (0x%08x)",
                         q_type_name(type), trial, we, ae, (unsigned long long)n, s, bits(s), v, bits(v));
        }
    }
    free(a8); free(ak); free(w);
}

/* Activations as the engine makes them (no -128 byte), so the AVX2 fast paths run, then the
 * same rows with one -128 planted in one block, which must send that batch to the exact path.
 * Weights: random, all 0x80 and all 0xFF bytes; rows of 1..9 blocks (batch tails) and 4096. */
Test(quant_simd, quantized_dots_fast_and_exact_paths_equal_scalar) {
    if (!q_cpu_has_avx2()) cr_skip_test("CPU has no AVX2");
    static const int types[] = {Q_TYPE_Q8_0, Q_TYPE_Q2_K, Q_TYPE_Q4_K, Q_TYPE_IQ2_XXS};
    enum { N = 4096 };
    uint8_t *w = malloc(N / 32 * 34 + N);
    float *x = malloc(N * sizeof(float));
    q8k_block *ak = malloc(N / 256 * sizeof *ak);
    q8act_block *a8 = malloc(N / 32 * sizeof *a8);
    g_state = 99;
    for (size_t t = 0; t < 4; t++) {
        int type = types[t];
        uint64_t be = q_block_elems(type);
        for (int trial = 0; trial < 24; trial++) {
            int we = trial % 3;
            fill_blocks(type, w, N / be, we);
            for (int i = 0; i < N; i++) x[i] = rnd_gauss() * (trial % 4 == 3 ? 30.0f : 1.0f);
            q_set_simd(false);
            cr_assert_eq(q_quantize_q8k(x, ak, N, NULL), DS4_OK);
            cr_assert_eq(q_quantize_q8act(x, a8, N, NULL), DS4_OK);
            const void *act = type == Q_TYPE_Q8_0 ? (const void *)a8 : (const void *)ak;
            uint64_t n = trial < 18 ? be * (uint64_t)(1 + trial % 9) : N;
            for (int plant = 0; plant < 2; plant++) {
                if (plant) {   /* one -128 in a block chosen by the trial */
                    uint64_t blk = (uint64_t)trial % (n / be), pos = rnd() % be;
                    if (type == Q_TYPE_Q8_0) a8[blk].q[pos] = -128;
                    else ak[blk].q[pos] = -128;
                }
                float s = dot_with(type, false, w, act, n), v = dot_with(type, true, w, act, n);
                cr_assert_eq(bits(s), bits(v),
                             "%s trial %d (w edge %d, n %llu, planted -128: %d): scalar %.9g "
                             "(0x%08x) avx2 %.9g (0x%08x)", q_type_name(type), trial, we,
                             (unsigned long long)n, plant, s, bits(s), v, bits(v));
            }
        }
    }
    free(a8); free(ak); free(x); free(w);
}

Test(quant_simd, float_row_dots_equal_scalar) {
    if (!q_cpu_has_avx2()) cr_skip_test("CPU has no AVX2");
    static const uint64_t lens[] = {1, 7, 8, 9, 31, 4096, 4099};
    enum { N = 4099 };
    float *x = malloc(N * sizeof(float)), *wf = malloc(N * sizeof(float));
    uint16_t *wh = malloc(N * 2), *wb = malloc(N * 2);
    g_state = 77;
    for (int trial = 0; trial < 8; trial++) {
        for (int i = 0; i < N; i++) {
            x[i] = rnd_gauss() * (trial == 7 ? 1e-30f : 1.0f);
            wf[i] = rnd_gauss() * (trial == 6 ? 1e30f : 0.1f);
            wh[i] = rnd_f16_finite();   /* includes subnormals */
            wb[i] = fp_f32_to_bf16(wf[i]);
        }
        for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++) {
            const struct { int type; const void *w; } rows[] = {
                {Q_TYPE_F32, wf}, {Q_TYPE_F16, wh}, {Q_TYPE_BF16, wb}};
            for (int r = 0; r < 3; r++) {
                float s = dot_with(rows[r].type, false, rows[r].w, x, lens[l]);
                float v = dot_with(rows[r].type, true, rows[r].w, x, lens[l]);
                cr_assert_eq(bits(s), bits(v), "%s trial %d n %llu: scalar 0x%08x avx2 0x%08x",
                             q_type_name(rows[r].type), trial, (unsigned long long)lens[l],
                             bits(s), bits(v));
            }
        }
    }
    /* The documented lane order: for n = 16, lanes hold w[i]·x[i] + w[i+8]·x[i+8]. */
    float a[16], b[16], l[8];
    for (int i = 0; i < 16; i++) { a[i] = rnd_gauss(); b[i] = rnd_gauss(); }
    for (int i = 0; i < 8; i++) l[i] = (0.0f + a[i] * b[i]) + a[i + 8] * b[i + 8];
    float want = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
    cr_assert_eq(bits(dot_with(Q_TYPE_F32, false, a, b, 16)), bits(want));
    free(wb); free(wh); free(wf); free(x);
}

/* Activation rows mixing Gaussians, .5 ties, zeros, subnormals, huge values, inf and NaN. */
static void fill_activation(float *x, size_t n, int kind) {
    for (size_t i = 0; i < n; i++) {
        switch (kind) {
        case 0: x[i] = rnd_gauss(); break;
        case 1: x[i] = (float)((int)(rnd() % 255) - 127) + 0.5f; break;   /* ties */
        case 2: x[i] = 0.0f; break;
        case 3: x[i] = rnd_gauss() * 1e-39f; break;                        /* subnormals */
        case 4: x[i] = rnd_gauss() * 1e37f; break;
        case 5: x[i] = (i % 97 == 3) ? INFINITY : rnd_gauss(); break;
        case 6: x[i] = (i % 53 == 1) ? NAN : rnd_gauss(); break;
        default: x[i] = (i % 7 == 0) ? -2.0f : (i % 7 == 1 ? 2.0f : rnd_gauss()); break;   /* equal |max| */
        }
    }
}

Test(quant_simd, activation_quantizers_equal_scalar) {
    if (!q_cpu_has_avx2()) cr_skip_test("CPU has no AVX2");
    enum { N = 2048 };
    float *x = malloc(N * sizeof(float));
    q8k_block *ks = malloc(N / 256 * sizeof *ks), *kv = malloc(N / 256 * sizeof *kv);
    q8act_block *as = malloc(N / 32 * sizeof *as), *av = malloc(N / 32 * sizeof *av);
    g_state = 5;
    for (int kind = 0; kind < 8; kind++) {
        fill_activation(x, N, kind);
        q_set_simd(false);
        cr_assert_eq(q_quantize_q8k(x, ks, N, NULL), DS4_OK);
        cr_assert_eq(q_quantize_q8act(x, as, N, NULL), DS4_OK);
        q_set_simd(true);
        cr_assert_eq(q_quantize_q8k(x, kv, N, NULL), DS4_OK);
        cr_assert_eq(q_quantize_q8act(x, av, N, NULL), DS4_OK);
        for (size_t b = 0; b < N / 256; b++)
            cr_assert_eq(memcmp(&ks[b], &kv[b], sizeof ks[b]), 0,
                         "Q8_K input kind %d block %zu: AVX2 differs from scalar (d 0x%08x vs 0x%08x)",
                         kind, b, bits(ks[b].d), bits(kv[b].d));
        for (size_t b = 0; b < N / 32; b++)
            cr_assert_eq(memcmp(&as[b], &av[b], sizeof as[b]), 0,
                         "Q8_0 activation input kind %d record %zu: AVX2 differs from scalar", kind, b);
    }
    free(av); free(as); free(kv); free(ks); free(x);
}

Test(quant_simd, disabled_simd_reports_scalar) {
    q_set_simd(false);
    cr_assert_not(q_simd_enabled());
    q_set_simd(true);
    cr_assert_eq(q_simd_enabled(), q_cpu_has_avx2());
}

/* ---- IQ2_XXS tables (generated file vs the shared data) ---- */

Test(quant_tables, iq2xxs_tables_match_shared_files) {
    size_t ng, ns;
    uint8_t *grid = tu_read_shared("testdata/quants/iq2xxs_grid.u64", &ng);
    uint8_t *signs = tu_read_shared("testdata/quants/iq2xxs_signs.u8", &ns);
    cr_assert_eq(ng, 2048);
    cr_assert_eq(ns, 128);
    for (int n = 0; n < 256; n++) {
        uint64_t want = 0;
        for (int b = 0; b < 8; b++) want |= (uint64_t)grid[8 * n + b] << (8 * b);
        cr_assert_eq(q_iq2xxs_grid[n], want, "grid entry %d: expected 0x%016llx got 0x%016llx", n,
                     (unsigned long long)want, (unsigned long long)q_iq2xxs_grid[n]);
    }
    for (int s = 0; s < 128; s++) {
        cr_assert_eq(q_iq2xxs_signs[s], signs[s], "sign entry %d: expected %u got %u", s, signs[s],
                     q_iq2xxs_signs[s]);
        for (int i = 0; i < 8; i++)
            cr_assert_eq((q_iq2xxs_sign_mask[s] >> (8 * i)) & 255u, (signs[s] >> i) & 1 ? 255u : 0u,
                         "sign mask %d byte %d disagrees with sign bit", s, i);
    }
    free(signs);
    free(grid);
}

/* ---- Several activation rows (q_dot_rows) ---- */

/* q_dot_rows, scalar and AVX2, equals the scalar single-row dot of each row, for 0..13 rows
 * (passes of 8 and 4 plus every remainder), padded strides, random activations (with -128 bytes)
 * and engine-made ones, and every weight type. */
Test(quant_rows, dot_rows_equal_single_row_dots) {
    static const int types[] = {Q_TYPE_F32, Q_TYPE_F16, Q_TYPE_BF16, Q_TYPE_Q8_0,
                                Q_TYPE_Q2_K, Q_TYPE_Q4_K, Q_TYPE_IQ2_XXS};
    enum { N = 1024, ROWS = 13 };
    uint8_t *w = malloc((size_t)N * 4);
    float *x = malloc(N * sizeof(float));
    size_t stride_max = (size_t)N * 4 + 36 * 8;
    uint8_t *act = malloc(stride_max * ROWS);
    g_state = 4242;
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        int type = types[t];
        uint64_t be = q_block_elems(type);
        q_act_kind kind = q_act_kind_for(type);
        for (int trial = 0; trial < 6; trial++) {
            uint64_t n = trial < 4 ? be * (uint64_t)(1 + trial) : N;
            size_t arow = q_act_row_bytes(type, n);
            cr_assert_gt(arow, 0);
            size_t stride = arow + (trial % 2 ? 36 * 8 : 0);   /* padded rows keep alignment */
            if (kind == Q_ACT_F32) {
                uint16_t *h = (uint16_t *)w;
                float *f = (float *)w;
                for (uint64_t i = 0; i < n; i++) {
                    f[i] = rnd_gauss();
                    if (type != Q_TYPE_F32) h[i] = type == Q_TYPE_F16 ? rnd_f16_finite() : fp_f32_to_bf16(rnd_gauss());
                }
            } else {
                fill_blocks(type, w, n / be, trial == 5 ? 1 : 0);
            }
            for (int r = 0; r < ROWS; r++) {
                uint8_t *row = act + (size_t)r * stride;
                bool made = (r + trial) % 2 == 0;   /* engine-made or raw random bytes */
                for (uint64_t i = 0; i < n; i++) x[i] = rnd_gauss();
                q_set_simd(false);
                if (kind == Q_ACT_F32) memcpy(row, x, n * sizeof(float));
                else if (kind == Q_ACT_Q8_0 && made) cr_assert_eq(q_quantize_q8act(x, (q8act_block *)row, n, NULL), DS4_OK);
                else if (kind == Q_ACT_Q8_0) fill_q8act((q8act_block *)row, n / 32, 0);
                else if (made) cr_assert_eq(q_quantize_q8k(x, (q8k_block *)row, n, NULL), DS4_OK);
                else fill_q8k((q8k_block *)row, n / 256, 0);
            }
            float want[ROWS], got[ROWS];
            q_set_simd(false);
            q_dot_fn single = q_dot_kernel(type);
            for (int r = 0; r < ROWS; r++) want[r] = single(w, act + (size_t)r * stride, n);
            for (int simd = 0; simd <= 1; simd++) {
                q_set_simd(simd);
                for (int n_act = 0; n_act <= ROWS; n_act++) {
                    for (int r = 0; r < ROWS; r++) got[r] = -7.0f;
                    cr_assert_eq(q_dot_rows(type, w, act, stride, n_act, n, got, NULL), DS4_OK);
                    for (int r = 0; r < ROWS; r++) {
                        float e = r < n_act ? want[r] : -7.0f;   /* rows past n_act untouched */
                        cr_assert_eq(bits(got[r]), bits(e),
                                     "%s simd %d trial %d n %llu n_act %d row %d: expected %.9g "
                                     "(0x%08x) got %.9g (0x%08x)", q_type_name(type), simd, trial,
                                     (unsigned long long)n, n_act, r, e, bits(e), got[r], bits(got[r]));
                    }
                }
            }
        }
    }
    free(act); free(x); free(w);
}

Test(quant_rows, bad_arguments_are_rejected) {
    float out[2];
    q8k_block a[2] = {0};
    uint8_t w[66] = {0};
    ds4_error e;
    cr_assert_eq(q_dot_rows(Q_TYPE_IQ2_XXS, w, a, sizeof a[0], -1, 256, out, &e), DS4_ERR_INVALID_ARG);
    cr_assert(strstr(e.msg, "n_act") != NULL, "message: %s", e.msg);
    cr_assert_eq(q_dot_rows(Q_TYPE_IQ2_XXS, w, a, sizeof a[0] - 1, 2, 256, out, &e), DS4_ERR_INVALID_ARG);
    cr_assert(strstr(e.msg, "stride") != NULL, "message: %s", e.msg);
    cr_assert_eq(q_dot_rows(Q_TYPE_IQ2_XXS, w, a, sizeof a[0], 2, 100, out, &e), DS4_ERR_FORMAT);
    cr_assert_eq(q_dot_rows(Q_TYPE_Q8_K, w, a, sizeof a[0], 2, 256, out, &e), DS4_ERR_UNSUPPORTED);
    cr_assert_null(q_dot_rows_kernel(Q_TYPE_Q8_K));
    cr_assert_eq(q_act_row_bytes(Q_TYPE_Q2_K, 512), 2 * sizeof(q8k_block));
    cr_assert_eq(q_act_row_bytes(Q_TYPE_Q8_0, 64), 2 * sizeof(q8act_block));
    cr_assert_eq(q_act_row_bytes(Q_TYPE_BF16, 3), 3 * sizeof(float));
    cr_assert_eq(q_act_row_bytes(Q_TYPE_Q4_K, 100), 0);
    uint64_t huge = (UINT64_MAX / 256) * 256;   /* whole blocks, but no size_t row size */
    cr_assert_eq(q_act_row_bytes(Q_TYPE_IQ2_XXS, huge), 0);
    cr_assert_eq(q_dot_rows(Q_TYPE_F32, w, a, sizeof a[0], 2, huge, out, &e), DS4_ERR_RANGE);
    cr_assert(strstr(e.msg, "overflow") != NULL, "message: %s", e.msg);
    /* an empty row is a valid dot (0), as for q_dot_row */
    cr_assert_eq(q_dot_rows(Q_TYPE_Q2_K, w, a, 0, 2, 0, out, &e), DS4_OK);
    cr_assert_eq(bits(out[0]), 0u);
    cr_assert_eq(bits(out[1]), 0u);
}
