/* tests/test_cpu_ops.c — the CPU op table (cpu/ops.h) against f64 references and the
 * MODEL_MATH §15 checklist items 1-4 (values quoted from the spec sections cited). */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "cpu/ops.h"
#include "format/fp8.h"

Test(cpu_ops, rmsnorm_matches_f64_reference) {
    float x[300], w[300], out[300];
    for (int i = 0; i < 300; i++) {
        x[i] = (float)(sin(0.37 * i) * 3.0 + 0.1);
        w[i] = (float)(1.0 + 0.01 * i);
    }
    cpu_rmsnorm(out, x, w, 300, 1e-6f);
    double ss = 0;
    for (int i = 0; i < 300; i++) ss += (double)x[i] * x[i];
    double r = 1.0 / sqrt(ss / 300 + 1e-6);
    for (int i = 0; i < 300; i++) {
        double ref = w[i] * x[i] * r;
        cr_assert(fabs(out[i] - ref) <= 1e-6 * fabs(ref) + 1e-9,
                  "rmsnorm i=%d ref %.9g got %.9g", i, ref, out[i]);
    }
}

/* MODEL_MATH §3.4 reference table (compressed layers, f64) at a few indices. */
Test(cpu_ops, yarn_frequencies_match_spec_table) {
    cpu_rope_cfg c = {64, 160000.0, 16.0, 32.0, 1.0, 65536.0};
    float f[32];
    cpu_rope_freqs(&c, f);
    const int idx[] = {0, 1, 8, 15, 16, 20, 24, 25, 31};
    const double ref[] = {1.0, 6.876560e-01, 5.000000e-02, 3.635539e-03, 2.265625e-03,
                          2.969778e-04, 1.953125e-05, 5.372313e-06, 5.680529e-07};
    for (int k = 0; k < 9; k++)
        cr_assert(fabs(f[idx[k]] - ref[k]) <= 2e-6 * ref[k], "f'[%d] ref %.7g got %.7g", idx[k],
                  ref[k], f[idx[k]]);
    cpu_rope_cfg p = {64, 10000.0, 1.0, 0, 0, 0};
    cpu_rope_freqs(&p, f);
    for (int i = 0; i < 32; i++) {
        double r = pow(10000.0, -i / 32.0);
        cr_assert(fabs(f[i] - r) <= 1e-6 * r, "plain f[%d] ref %.7g got %.7g", i, r, f[i]);
    }
}

Test(cpu_ops, rope_pair_convention_and_inverse) {
    cpu_rope_cfg c = {64, 160000.0, 16.0, 32.0, 1.0, 65536.0};
    float f[32], x[64] = {0};
    cpu_rope_freqs(&c, f);
    /* §15 #2: rotating e_448 (first rope dim) at t=1 gives (cos 1, sin 1). */
    x[0] = 1.0f;
    cpu_rope_tail(x, 64, f, 1, false);
    cr_assert(fabsf(x[0] - cosf(1.0f)) < 1e-7f && fabsf(x[1] - sinf(1.0f)) < 1e-7f,
              "got (%g, %g)", x[0], x[1]);
    for (int i = 2; i < 64; i++) cr_assert_eq(x[i], 0.0f);
    float y[64], y0[64];
    for (int i = 0; i < 64; i++) y[i] = y0[i] = (float)cos(0.9 * i);
    cpu_rope_tail(y, 64, f, 12345, false);
    cpu_rope_tail(y, 64, f, 12345, true);
    for (int i = 0; i < 64; i++)
        cr_assert(fabsf(y[i] - y0[i]) < 1e-5f, "inverse i=%d %g vs %g", i, y[i], y0[i]);
}

Test(cpu_ops, hadamard_is_orthonormal_sylvester) {
    float e0[128] = {0};
    e0[0] = 1.0f;
    cpu_hadamard(e0, 128);
    for (int i = 0; i < 128; i++) cr_assert(fabsf(e0[i] - 0.08838834764831845f) < 1e-7f);
    float x[128], y[128];
    for (int i = 0; i < 128; i++) x[i] = y[i] = (float)sin(1.7 * i + 0.3);
    /* H_jk = (-1)^popcount(j&k) / sqrt(128) */
    float hx[128];
    for (int j = 0; j < 128; j++) {
        double s = 0;
        for (int k = 0; k < 128; k++) s += (__builtin_popcount(j & k) & 1 ? -1.0 : 1.0) * x[k];
        hx[j] = (float)(s / sqrt(128.0));
    }
    cpu_hadamard(y, 128);
    for (int i = 0; i < 128; i++) cr_assert(fabsf(y[i] - hx[i]) < 1e-5f, "i=%d", i);
    cpu_hadamard(y, 128); /* H·H = I */
    for (int i = 0; i < 128; i++) cr_assert(fabsf(y[i] - x[i]) < 1e-5f, "HH i=%d", i);
}

/* MODEL_MATH §12 examples. */
Test(cpu_ops, fp8_roundtrip_spec_vector) {
    float x[64] = {-5.536f, 0.94285f, -4.52191f, 3.3606f, -2.93044f, 1000.0f, 0.0009f, -9.17127f,
                   2.75771f, -7.13901f, 7.37197f, -1.557f};
    const float want[12] = {-5.5f, 0.9375f, -4.5f, 3.25f, -3.0f, 1024.0f, 0.0f, -9.0f, 2.75f,
                            -7.0f, 7.5f, -1.5f};
    cpu_fp8_roundtrip(x, 64, 64);
    for (int i = 0; i < 12; i++) cr_assert_eq(x[i], want[i], "i=%d got %g want %g", i, x[i], want[i]);
}

Test(cpu_ops, fp4_roundtrip_spec_vector) {
    float x[32] = {-0.9808f, -0.193095f, 0.675833f, -0.638662f, 0.298042f, -1.17354f, 0.948808f,
                   -1.39792f, 1.32103f, 1.82651f, -1.95177f, 2.51046f, -2.28342f, 3.43291f,
                   -2.64935f, 0.834545f};
    const float want[16] = {-1, 0, 0.5f, -0.5f, 0.5f, -1, 1, -1.5f, 1.5f, 2, -2, 3, -2, 3, -3, 1};
    cpu_fp4_roundtrip(x, 32, 32);
    for (int i = 0; i < 16; i++) cr_assert_eq(x[i], want[i], "i=%d got %g want %g", i, x[i], want[i]);
}

Test(cpu_ops, every_e4m3_and_e2m1_code_is_a_fixed_point) {
    for (int b = 0; b < 256; b++) {
        if ((b & 0x7F) == 0x7F) continue; /* NaN */
        float v = fp_e4m3_to_f32((uint8_t)b);
        cr_assert_eq(cpu_e4m3_round(v), v, "e4m3 code 0x%02x (%g)", b, v);
        if (b > 0 && (b & 0x7F) < 0x7E) { /* midpoint to the next code rounds to an even code */
            float nx = fp_e4m3_to_f32((uint8_t)(b + 1));
            float mid = (v + nx) / 2;
            float r = cpu_e4m3_round(mid);
            int even = (b & 1) ? b + 1 : b;
            cr_assert_eq(r, fp_e4m3_to_f32((uint8_t)even), "tie at 0x%02x", b);
        }
    }
    for (int c = 0; c < 16; c++) {
        float v = fp_e2m1_to_f32((uint8_t)c);
        cr_assert_eq(cpu_e2m1_round(v), v, "e2m1 code %d", c);
    }
    const float ties[7][2] = {{0.25f, 0}, {0.75f, 1}, {1.25f, 1}, {1.75f, 2}, {2.5f, 2}, {3.5f, 4}, {5, 4}};
    for (int i = 0; i < 7; i++) cr_assert_eq(cpu_e2m1_round(ties[i][0]), ties[i][1]);
}

Test(cpu_ops, pow2_scale_is_bit_exact_ceil) {
    cr_assert_eq(cpu_pow2_ceil(1.0f), 1.0f);
    cr_assert_eq(cpu_pow2_ceil(nextafterf(1.0f, 2.0f)), 2.0f);
    cr_assert_eq(cpu_pow2_ceil(0.75f), 1.0f);
    cr_assert_eq(cpu_pow2_ceil(1000.0f / 448.0f), 4.0f);
}
