/*
 * tests/test_fp8.c — small-float conversions (format/fp8.h) against values computed a
 * different way (ldexp formulas from GGUF_LAYOUT §4.7) and hand-checked spec values:
 * all 256 E4M3 and E8M0 codes, all 16 E2M1 codes, packed FP4 order, f16/bf16 both ways.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "format/fp8.h"

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

Test(fp8, e4m3_all_codes_match_formula) {
    for (int c = 0; c < 256; c++) {
        int s = c >> 7, e = (c >> 3) & 15, m = c & 7;
        float got = fp_e4m3_to_f32((uint8_t)c);
        if (e == 15 && m == 7) {
            cr_assert(isnan(got), "E4M3 0x%02x must be NaN, got %g", c, got);
            cr_assert_eq(signbit(got) != 0, s == 1, "E4M3 0x%02x NaN sign", c);
            continue;
        }
        double mag = e == 0 ? ldexp(m, -9) : ldexp(1.0 + m / 8.0, e - 7);
        float want = (float)(s ? -mag : mag);
        cr_assert_eq(bits(got), bits(want), "E4M3 0x%02x: expected %g (0x%08x) got %g (0x%08x)", c,
                     want, bits(want), got, bits(got));
    }
    /* Hand-checked (GGUF_LAYOUT §4.7): max finite 448, smallest subnormal 2^-9, ±0. */
    cr_assert_eq(fp_e4m3_to_f32(0x7E), 448.0f);
    cr_assert_eq(fp_e4m3_to_f32(0xFE), -448.0f);
    cr_assert_eq(fp_e4m3_to_f32(0x01), 0.001953125f);
    cr_assert_eq(fp_e4m3_to_f32(0x38), 1.0f);
    cr_assert_eq(bits(fp_e4m3_to_f32(0x80)), 0x80000000u);
    cr_assert_eq(bits(fp_e4m3_to_f32(0x00)), 0u);
    cr_assert(isnan(fp_e4m3_to_f32(0xFF)));
}

Test(fp8, e8m0_all_codes_match_formula) {
    for (int e = 0; e < 255; e++) {
        float want = ldexpf(1.0f, e - 127);
        float got = fp_e8m0_to_f32((uint8_t)e);
        cr_assert_eq(bits(got), bits(want), "E8M0 %d: expected 0x%08x got 0x%08x", e, bits(want),
                     bits(got));
    }
    cr_assert_eq(fp_e8m0_to_f32(127), 1.0f);
    cr_assert_eq(bits(fp_e8m0_to_f32(0)), 0x00400000u, "2^-127 is the f32 subnormal 0x00400000");
    cr_assert(isnan(fp_e8m0_to_f32(255)));
}

Test(fp8, e2m1_codes_and_packing) {
    static const float spec[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};   /* GGUF_LAYOUT §4.7 */
    for (int c = 0; c < 16; c++) {
        int e = (c >> 1) & 3, m = c & 1;
        double mag = e == 0 ? 0.5 * m : ldexp(1.0 + 0.5 * m, e - 1);
        float want = (float)((c & 8) ? -mag : mag);
        cr_assert_eq(bits(fp_e2m1_to_f32((uint8_t)c)), bits(want), "E2M1 code %d", c);
        cr_assert_eq(fabsf(fp_e2m1_to_f32((uint8_t)c)), spec[c & 7], "E2M1 code %d vs spec table", c);
    }
    /* Low nibble = even column, high nibble = odd column; scale applied to each. */
    const uint8_t packed[2] = {0x72, 0xF9};   /* cols: 1.0, 6, -0.5, -6 */
    float out[4];
    fp_e2m1_unpack_row(packed, 0.25f, out, 4);
    cr_assert_eq(out[0], 0.25f);
    cr_assert_eq(out[1], 1.5f);
    cr_assert_eq(out[2], -0.125f);
    cr_assert_eq(out[3], -1.5f);
    float e4[2];
    const uint8_t raw[2] = {0x38, 0xC0};   /* 1.0, -2.0 */
    fp_e4m3_to_f32_row(raw, 0.5f, e4, 2);
    cr_assert_eq(e4[0], 0.5f);
    cr_assert_eq(e4[1], -1.0f);
}

Test(fp8, f16_decode_all_patterns) {
    for (uint32_t h = 0; h < 65536; h++) {
        float got = fp_f16_to_f32((uint16_t)h);
        int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
        if (e == 31) {
            /* Inf, or NaN with its payload shifted through (signalling NaNs stay signalling,
             * as ds4's f16_to_f32; quants README §7.1). */
            uint32_t want = ((uint32_t)s << 31) | 0x7F800000u | ((uint32_t)m << 13);
            cr_assert_eq(bits(got), want, "f16 0x%04x: expected 0x%08x got 0x%08x", h, want, bits(got));
            continue;
        }
        double mag = e == 0 ? ldexp(m, -24) : ldexp(1.0 + m / 1024.0, e - 15);
        float want = (float)(s ? -mag : mag);
        cr_assert_eq(bits(got), bits(want), "f16 0x%04x: expected 0x%08x got 0x%08x", h,
                     bits(want), bits(got));
        /* Encoding back is exact for every non-NaN half. */
        cr_assert_eq(fp_f32_to_f16(got), h, "f16 0x%04x does not round-trip", h);
    }
}

Test(fp8, f16_encode_rounding) {
    /* Ties to even, overflow, underflow, NaN (GGUF_LAYOUT §4.1). */
    cr_assert_eq(fp_f32_to_f16(1.0f + 0x1p-11f), 0x3C00);            /* tie -> even 1.0 */
    cr_assert_eq(fp_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3C02);        /* tie -> even up */
    cr_assert_eq(fp_f32_to_f16(65504.0f), 0x7BFF);
    cr_assert_eq(fp_f32_to_f16(65519.99f), 0x7BFF);
    cr_assert_eq(fp_f32_to_f16(65520.0f), 0x7C00);                   /* tie rounds to inf */
    cr_assert_eq(fp_f32_to_f16(-1e6f), 0xFC00);
    cr_assert_eq(fp_f32_to_f16(0x1p-24f), 0x0001);
    cr_assert_eq(fp_f32_to_f16(0x1p-25f), 0x0000);                   /* tie -> even 0 */
    cr_assert_eq(fp_f32_to_f16(0x1.000002p-25f), 0x0001);
    cr_assert_eq(fp_f32_to_f16(-0x1p-30f), 0x8000);
    cr_assert_eq(fp_f32_to_f16(3 * 0x1p-25f), 0x0002);               /* 1.5 ulp -> even 2 */
    cr_assert_eq(fp_f32_to_f16(0x1.ff8p-15f), 0x03FF);               /* largest subnormal */
    cr_assert_eq(fp_f32_to_f16(0x1.ffcp-15f), 0x0400);               /* tie rounds into normal */
    cr_assert_eq(fp_f32_to_f16(INFINITY), 0x7C00);
    cr_assert_eq(fp_f32_to_f16(NAN), 0x7E00);
    cr_assert_eq(fp_f32_to_f16(-NAN), 0xFE00);
}

Test(fp8, bf16_both_ways) {
    static const struct { uint32_t in; uint16_t out; } cases[] = {
        {0x3F808000u, 0x3F80}, {0x3F818000u, 0x3F82}, {0xBF818000u, 0xBF82},   /* ties to even */
        {0x3F808001u, 0x3F81}, {0x7F7F8000u, 0x7F80}, {0xFF7FFFFFu, 0xFF80},   /* overflow to inf */
        {0x7F7F7FFFu, 0x7F7F}, {0x7F800001u, 0x7FC0}, {0xFFC00001u, 0xFFC0},   /* NaN quieted */
        {0x7F800000u, 0x7F80}, {0x00000001u, 0x0000}, {0x80008000u, 0x8000},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        float f;
        memcpy(&f, &cases[i].in, 4);
        cr_assert_eq(fp_f32_to_bf16(f), cases[i].out, "bf16(0x%08x): expected 0x%04x got 0x%04x",
                     cases[i].in, cases[i].out, fp_f32_to_bf16(f));
    }
    for (uint32_t h = 0; h < 65536; h++)
        cr_assert_eq(bits(fp_bf16_to_f32((uint16_t)h)), h << 16, "bf16 0x%04x decode", h);
}
