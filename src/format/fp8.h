/*
 * format/fp8.h — scalar conversions between f32 and the small float formats ds4 meets:
 * f16 and bf16 (GGUF tensors), FP8 E4M3 and the E8M0 scale (HF checkpoint dense/attention
 * weights), FP4 E2M1 (HF routed experts). Pure functions of their bits: no state, no I/O,
 * no knowledge of tensors or block layouts (those live in format/quant.h and the converter).
 *
 * The single-value converters are static inline because every decoder and dot kernel calls
 * them per element; the row helpers are in fp8.c.
 */
#ifndef DS4_FORMAT_FP8_H
#define DS4_FORMAT_FP8_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t fp_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float fp_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* IEEE half -> f32, exact widening (GGUF_LAYOUT §4.1). Subnormal halves become normal f32.
 * NaN payloads are shifted through unchanged, so signalling NaNs stay signalling, as ds4's
 * portable f16_to_f32 does (quants README §7.1). */
static inline float fp_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t man = h & 0x3FFu;
    if (exp == 0x1F) return fp_bits_f32(sign | 0x7F800000u | (man << 13));
    if (exp == 0) {
        if (man == 0) return fp_bits_f32(sign);
        /* Subnormal: man·2^-24, normalise the mantissa. */
        int e = -1;
        do { man <<= 1; e++; } while ((man & 0x400u) == 0);
        return fp_bits_f32(sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3FFu) << 13));
    }
    return fp_bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

/* f32 -> IEEE half, round to nearest even; overflow -> ±inf; NaN -> 0x7E00 with its sign
 * (GGUF_LAYOUT §4.1, the converter's ds4q_f32_to_f16). */
uint16_t fp_f32_to_f16(float f);

/* bf16 -> f32: the upper 16 bits (GGUF_LAYOUT §4.1). Subnormals and NaNs keep their bits. */
static inline float fp_bf16_to_f32(uint16_t h) { return fp_bits_f32((uint32_t)h << 16); }

/* f32 -> bf16, round to nearest even; NaN is returned quiet (quants README §3.3 BF16). */
uint16_t fp_f32_to_bf16(float f);

/* FP8 E4M3 ("e4m3fn", GGUF_LAYOUT §4.7): no infinities; magnitude 0x7F is NaN (returned as a
 * quiet NaN with the sign bit; the converter decides to map it to 0); E = 0 is subnormal
 * M·2^-9; ±0 preserved. */
float fp_e4m3_to_f32(uint8_t b);

/* UE8M0 scale byte: 2^(e-127); e = 0 gives the f32 subnormal 2^-127; 0xFF gives NaN. */
float fp_e8m0_to_f32(uint8_t e);

/* FP4 E2M1 code (low 4 bits of `code`; bit 3 = sign) -> {±0, 0.5, 1, 1.5, 2, 3, 4, 6}. */
float fp_e2m1_to_f32(uint8_t code);

/* Row helpers. n is the element count. */
void fp_f16_to_f32_row(const uint16_t *src, float *dst, size_t n);
void fp_f32_to_f16_row(const float *src, uint16_t *dst, size_t n);
void fp_bf16_to_f32_row(const uint16_t *src, float *dst, size_t n);
void fp_f32_to_bf16_row(const float *src, uint16_t *dst, size_t n);

/* n E4M3 bytes -> f32, each multiplied by `scale` (one E8M0 block scale, already decoded). */
void fp_e4m3_to_f32_row(const uint8_t *src, float scale, float *dst, size_t n);

/* Packed FP4 (GGUF_LAYOUT §4.7): byte j holds column 2j in its low nibble and column 2j+1 in
 * its high nibble. Writes n values (n even, n/2 bytes read), each multiplied by `scale`. */
void fp_e2m1_unpack_row(const uint8_t *packed, float scale, float *dst, size_t n);

#endif
