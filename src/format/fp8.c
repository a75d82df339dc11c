/*
 * format/fp8.c — f32 encoders for f16/bf16 and the FP8 E4M3 / E8M0 / FP4 E2M1 decoders of
 * format/fp8.h. Bit manipulation only: results do not depend on FP flags or contraction.
 * Must not know about blocks, tensors or files.
 */
#include "format/fp8.h"

uint16_t fp_f32_to_f16(float f) {
    /* GGUF_LAYOUT §4.1: round to nearest even, overflow -> inf, NaN -> 0x7E00 | sign. */
    uint32_t u = fp_f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return sign | 0x7E00u;
    /* 65520 is halfway between 65504 (odd mantissa) and 65536: ties to even go to inf. */
    if (a >= 0x477FF000u) return sign | 0x7C00u;
    if (a >= 0x38800000u) {   /* >= 2^-14: normal half */
        uint32_t h = ((((a >> 23) - 112u) << 10) | ((a & 0x7FFFFFu) >> 13));
        uint32_t rem = a & 0x1FFFu;
        if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;   /* carry may reach the exponent: fine */
        return sign | (uint16_t)h;
    }
    /* Subnormal half: h = round(|f|·2^24). f32 subnormals (exp 0) are far below 2^-25. */
    uint32_t e = a >> 23;
    if (e < 102) return sign;                   /* |f| < 2^-25: rounds to zero */
    uint32_t m = (a & 0x7FFFFFu) | 0x800000u;   /* |f| = m·2^(e-150) */
    uint32_t shift = 126u - e;                  /* 14..24 */
    uint32_t h = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (h & 1u))) h++;
    return sign | (uint16_t)h;
}

uint16_t fp_f32_to_bf16(float f) {
    uint32_t u = fp_f32_bits(f);
    /* NaN: keep the sign and payload top, force the quiet bit (quants README §3.3 BF16). */
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7FFFu + ((u >> 16) & 1u);   /* round to nearest even; overflow carries to inf */
    return (uint16_t)(u >> 16);
}

float fp_e4m3_to_f32(uint8_t b) {
    /* GGUF_LAYOUT §4.7. */
    uint32_t sign = (uint32_t)(b & 0x80u) << 24;
    uint32_t e = (b >> 3) & 15u;
    uint32_t m = b & 7u;
    if (e == 15 && m == 7) return fp_bits_f32(sign | 0x7FC00000u);
    if (e == 0) {
        float v = (float)m * 0x1p-9f;   /* exact: m < 8 */
        return (b & 0x80u) ? -v : v;
    }
    return fp_bits_f32(sign | ((e + 120u) << 23) | (m << 20));
}

float fp_e8m0_to_f32(uint8_t e) {
    if (e == 0xFF) return fp_bits_f32(0x7FC00000u);
    if (e == 0) return fp_bits_f32(0x00400000u);   /* 2^-127 is an f32 subnormal */
    return fp_bits_f32((uint32_t)e << 23);
}

float fp_e2m1_to_f32(uint8_t code) {
    static const float mag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    float v = mag[code & 7u];
    return (code & 8u) ? -v : v;
}

void fp_f16_to_f32_row(const uint16_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = fp_f16_to_f32(src[i]);
}

void fp_f32_to_f16_row(const float *src, uint16_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = fp_f32_to_f16(src[i]);
}

void fp_bf16_to_f32_row(const uint16_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = fp_bf16_to_f32(src[i]);
}

void fp_f32_to_bf16_row(const float *src, uint16_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = fp_f32_to_bf16(src[i]);
}

void fp_e4m3_to_f32_row(const uint8_t *src, float scale, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = fp_e4m3_to_f32(src[i]) * scale;
}

void fp_e2m1_unpack_row(const uint8_t *packed, float scale, float *dst, size_t n) {
    for (size_t j = 0; j < n / 2; j++) {
        dst[2 * j] = fp_e2m1_to_f32(packed[j] & 15u) * scale;
        dst[2 * j + 1] = fp_e2m1_to_f32(packed[j] >> 4) * scale;
    }
}
