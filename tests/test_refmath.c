/* tests/test_refmath.c — cpu/refmath.h on the host: the transcendentals against libm's double
 * functions (the CPU reference's values before they were shared with the GPU) and the
 * order-free sum behind every RMSNorm (the GPU sums the same squares as block trees). The
 * device side is compared bit for bit in tests/cuda/test_cuda_refmath.c. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "cpu/refmath.h"

static float rm_f(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Every 4099th f32 in the model's ranges: the reference equals libm's double function rounded
 * to f32 (both within an ULP of the truth in double; they round apart only where the double
 * sits next to an f32 midpoint, which no swept input hits). */
Test(refmath, matches_libm_rounded_to_f32) {
    long n = 0;
    for (uint64_t u = 0; u < 0x100000000ull; u += 4099) {
        float x = rm_f((uint32_t)u), c, s;
        if (fabsf(x) < 104.0f) {
            cr_assert(ref_expf(x) == (float)exp((double)x), "exp(%.9g)", (double)x);
            n++;
        }
        if (x >= 0.0f && x < 4.9e8f)
            cr_assert((float)ref_log1p((double)x) == (float)log1p((double)x), "log1p(%.9g)",
                      (double)x);
        if (fabsf(x) < 2097152.0f) {
            ref_sincosf(x, &c, &s);
            cr_assert(c == (float)cos((double)x) && s == (float)sin((double)x), "sincos(%.9g)",
                      (double)x);
        }
    }
    cr_assert(n > 100000);
    cr_assert(ref_expf(-INFINITY) == 0.0f && isnan(ref_expf(NAN)));
    cr_assert(ref_log1p(0.0) == 0.0 && ref_log1p(1e-30) == 1e-30);
}

/* The same squares summed in three orders (sequential, reversed, a 256-lane strided tree):
 * the ref_dsum values are the same double in every row, where plain double sums of these rows
 * differ in almost all of them (measured: 99% at n = 4096). */
Test(refmath, dsum_does_not_depend_on_order) {
    enum { N = 4096, ROWS = 300, LANES = 256 };
    static float x[N];
    uint64_t r = 0x9e3779b97f4a7c15ull;
    int plain_differ = 0;
    for (int row = 0; row < ROWS; row++) {
        for (int i = 0; i < N; i++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            x[i] = (float)((double)(r >> 11) * 0x1p-53 * 8.0 - 4.0) * (row % 7 == 0 ? 1e-3f : 1.0f);
        }
        ref_dsum a = {0, 0}, b = {0, 0}, lanes[LANES];
        double pa = 0, pb = 0;
        for (int i = 0; i < N; i++) {
            ref_dsum_add(&a, (double)x[i] * x[i]);
            pa += (double)x[i] * x[i];
        }
        for (int i = N - 1; i >= 0; i--) {
            ref_dsum_add(&b, (double)x[i] * x[i]);
            pb += (double)x[i] * x[i];
        }
        for (int l = 0; l < LANES; l++) {
            lanes[l] = (ref_dsum){0, 0};
            for (int i = l; i < N; i += LANES) ref_dsum_add(&lanes[l], (double)x[i] * x[i]);
        }
        for (int o = LANES / 2; o > 0; o >>= 1)
            for (int l = 0; l < o; l++) ref_dsum_merge(&lanes[l], lanes[l + o]);
        double va = ref_dsum_value(a), vb = ref_dsum_value(b), vt = ref_dsum_value(lanes[0]);
        cr_assert(va == vb && va == vt, "row %d: %.17g %.17g %.17g", row, va, vb, vt);
        plain_differ += pa != pb;
    }
    cr_assert(plain_differ > ROWS / 2, "plain double sums differed in only %d rows", plain_differ);
}
