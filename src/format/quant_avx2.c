/*
 * format/quant_avx2.c — AVX2 twins of the scalar kernels in quant_dot.c, built with
 * -mavx2 -mfma -mf16c and called only after q_cpu_has_avx2() (quant.c dispatch).
 *
 * Contract: bit-equal to the scalar reference. Integer sums are exact in any order, so they
 * run in SIMD; the f32 steps per block then run in scalar code in exactly the scalar order
 * (quants README §4.2). The F32/F16/BF16 dots keep 8 lane sums, which is the scalar order by
 * definition (quant.h). No FMA is used anywhere (an FMA rounds once where the reference
 * rounds twice).
 *
 * Signed int8 × int8 products never use the _mm256_sign_epi8 trick: it cannot negate −128,
 * which both the weights and the activations may hold (quants README §4.1 record 3).
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "format/fp8.h"
#include "format/quant_impl.h"

static inline int32_t hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

static float combine_lanes(const float l[8]) {
    return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

/* ---- F32 / F16 / BF16 -------------------------------------------------------------------- */

float q_dot_f32_avx2(const void *w, const void *x, uint64_t n) {
    const float *a = w, *b = x;
    __m256 acc = _mm256_setzero_ps();
    uint64_t i = 0;
    for (; i + 8 <= n; i += 8)
        acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    float l[8];
    _mm256_storeu_ps(l, acc);
    for (; i < n; i++) l[i % 8] += a[i] * b[i];
    return combine_lanes(l);
}

float q_dot_f16_avx2(const void *w, const void *x, uint64_t n) {
    const uint8_t *a = w;
    const float *b = x;
    __m256 acc = _mm256_setzero_ps();
    uint64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 wv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + 2 * i)));
        acc = _mm256_add_ps(acc, _mm256_mul_ps(wv, _mm256_loadu_ps(b + i)));
    }
    float l[8];
    _mm256_storeu_ps(l, acc);
    for (; i < n; i++) l[i % 8] += fp_f16_to_f32(q_load_u16(a + 2 * i)) * b[i];
    return combine_lanes(l);
}

float q_dot_bf16_avx2(const void *w, const void *x, uint64_t n) {
    const uint8_t *a = w;
    const float *b = x;
    __m256 acc = _mm256_setzero_ps();
    uint64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(a + 2 * i)));
        __m256 wv = _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
        acc = _mm256_add_ps(acc, _mm256_mul_ps(wv, _mm256_loadu_ps(b + i)));
    }
    float l[8];
    _mm256_storeu_ps(l, acc);
    for (; i < n; i++) l[i % 8] += fp_bf16_to_f32(q_load_u16(a + 2 * i)) * b[i];
    return combine_lanes(l);
}

/* ---- Quantized rows ---------------------------------------------------------------------- */

/* Σ a[i]·b[i] over 32 signed bytes, exact (int16 widening). */
static inline __m256i dot32_i8(const void *a, const void *b) {
    __m256i va = _mm256_loadu_si256((const __m256i *)a);
    __m256i vb = _mm256_loadu_si256((const __m256i *)b);
    __m256i lo = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_castsi256_si128(va)),
                                   _mm256_cvtepi8_epi16(_mm256_castsi256_si128(vb)));
    __m256i hi = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_extracti128_si256(va, 1)),
                                   _mm256_cvtepi8_epi16(_mm256_extracti128_si256(vb, 1)));
    return _mm256_add_epi32(lo, hi);
}

float q_dot_q8_0_avx2(const void *w, const void *act, uint64_t n) {
    const uint8_t *b = w;
    const q8act_block *y = act;
    float acc = 0.0f;
    for (uint64_t i = 0; i < n / Q_QK8_0; i++, b += Q_Q8_0_BYTES) {
        int32_t isum = hsum_i32(dot32_i8(b + 2, y[i].q));
        acc += (fp_f16_to_f32(q_load_u16(b)) * y[i].d) * (float)isum;
    }
    return acc;
}

float q_dot_q2_k_avx2(const void *w, const void *act, uint64_t n) {
    const uint8_t *b = w;
    const q8k_block *y = act;
    const __m256i m3 = _mm256_set1_epi8(3);
    float acc = 0.0f;
    for (uint64_t i = 0; i < n / Q_QK_K; i++, b += Q_Q2_K_BYTES) {
        const uint8_t *sc = b;
        /* summs = Σ bsums[j]·(sc[j] >> 4) */
        __m128i scb = _mm_loadu_si128((const __m128i *)sc);
        __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(scb, 4), _mm_set1_epi8(15)));
        __m256i bs = _mm256_loadu_si256((const __m256i *)y[i].bsums);
        int32_t summs = hsum_i32(_mm256_madd_epi16(bs, mins));
        __m256i isum = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            __m256i qs = _mm256_loadu_si256((const __m256i *)(b + 16 + 32 * h));
            for (int s = 0; s < 4; s++) {
                /* Elements 128h+32s .. +31: sub-blocks j and j+1 (16 each). */
                int j = 8 * h + 2 * s;
                __m256i codes = _mm256_and_si256(_mm256_srli_epi16(qs, 2 * s), m3);
                __m256i yq = _mm256_loadu_si256((const __m256i *)(y[i].q + 128 * h + 32 * s));
                __m256i p = _mm256_maddubs_epi16(codes, yq);   /* |p| <= 3·128·2 */
                __m256i scv = _mm256_setr_m128i(_mm_set1_epi16((short)(sc[j] & 15)),
                                                _mm_set1_epi16((short)(sc[j + 1] & 15)));
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, scv));
            }
        }
        float dall = y[i].d * fp_f16_to_f32(q_load_u16(b + 80));
        float dmin = y[i].d * fp_f16_to_f32(q_load_u16(b + 82));
        acc += dall * (float)hsum_i32(isum) - dmin * (float)summs;
    }
    return acc;
}

float q_dot_q4_k_avx2(const void *w, const void *act, uint64_t n) {
    const uint8_t *b = w;
    const q8k_block *y = act;
    const __m256i m4 = _mm256_set1_epi8(15);
    float acc = 0.0f;
    for (uint64_t i = 0; i < n / Q_QK_K; i++, b += Q_Q4_K_BYTES) {
        int sc[8], m[8];
        for (int j = 0; j < 8; j++) q_q4k_scale_min(j, b + 4, &sc[j], &m[j]);
        int32_t summs = 0;
        for (int j = 0; j < 8; j++) summs += m[j] * (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]);
        __m256i isum = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            __m256i qs = _mm256_loadu_si256((const __m256i *)(b + 16 + 32 * c));
            __m256i lo = _mm256_and_si256(qs, m4);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qs, 4), m4);
            __m256i ylo = _mm256_loadu_si256((const __m256i *)(y[i].q + 64 * c));
            __m256i yhi = _mm256_loadu_si256((const __m256i *)(y[i].q + 64 * c + 32));
            __m256i plo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, ylo),
                                            _mm256_set1_epi16((short)sc[2 * c]));
            __m256i phi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, yhi),
                                            _mm256_set1_epi16((short)sc[2 * c + 1]));
            isum = _mm256_add_epi32(isum, _mm256_add_epi32(plo, phi));
        }
        float dall = y[i].d * fp_f16_to_f32(q_load_u16(b));
        float dmin = y[i].d * fp_f16_to_f32(q_load_u16(b + 2));
        acc += (dall * (float)hsum_i32(isum)) - (dmin * (float)summs);
    }
    return acc;
}

/* One 32-value group: Σ_i grid·sign·y as 8 int32 partial sums scaled by ls = 2s+1. */
static inline __m256i iq2_group(const uint8_t *g8, const int8_t *yq) {
    uint32_t A = q_load_u32(g8), B = q_load_u32(g8 + 4);
    __m256i grid = _mm256_setr_epi64x((long long)q_iq2xxs_grid[A & 255u],
                                      (long long)q_iq2xxs_grid[(A >> 8) & 255u],
                                      (long long)q_iq2xxs_grid[(A >> 16) & 255u],
                                      (long long)q_iq2xxs_grid[A >> 24]);
    __m256i neg = _mm256_setr_epi64x((long long)q_iq2xxs_sign_mask[B & 127u],
                                     (long long)q_iq2xxs_sign_mask[(B >> 7) & 127u],
                                     (long long)q_iq2xxs_sign_mask[(B >> 14) & 127u],
                                     (long long)q_iq2xxs_sign_mask[(B >> 21) & 127u]);
    __m256i y = _mm256_loadu_si256((const __m256i *)yq);
    /* grid <= 43 is unsigned: positive part minus negative part, each |.| <= 43·128·2. */
    __m256i pos = _mm256_maddubs_epi16(_mm256_andnot_si256(neg, grid), y);
    __m256i ngv = _mm256_maddubs_epi16(_mm256_and_si256(neg, grid), y);
    return _mm256_madd_epi16(_mm256_sub_epi16(pos, ngv),
                             _mm256_set1_epi16((short)(2 * (B >> 28) + 1)));
}

float q_dot_iq2_xxs_avx2(const void *w, const void *act, uint64_t n) {
    const uint8_t *b = w;
    const q8k_block *y = act;
    float acc = 0.0f;
    for (uint64_t i = 0; i < n / Q_QK_K; i++, b += Q_IQ2_XXS_BYTES) {
        __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
        for (int g = 0; g < 8; g += 2) {
            s0 = _mm256_add_epi32(s0, iq2_group(b + 2 + 8 * g, y[i].q + 32 * g));
            s1 = _mm256_add_epi32(s1, iq2_group(b + 10 + 8 * g, y[i].q + 32 * g + 32));
        }
        acc += (fp_f16_to_f32(q_load_u16(b)) * y[i].d) * (float)hsum_i32(_mm256_add_epi32(s0, s1));
    }
    return 0.125f * acc;
}

/* ---- Activation quantizers --------------------------------------------------------------- */

/* int32 x 8 (two vectors, 16 values) -> 16 saturated int8 in order (saturation = clamp). */
static inline __m128i pack16_i8(__m256i a, __m256i b) {
    __m256i w = _mm256_packs_epi32(a, b);                 /* a0-3 b0-3 | a4-7 b4-7 */
    w = _mm256_permute4x64_epi64(w, 0xD8);                /* a0-7 b0-7 as int16 */
    __m128i lo = _mm256_castsi256_si128(w), hi = _mm256_extracti128_si256(w, 1);
    return _mm_packs_epi16(lo, hi);
}

static inline __m256 abs_ps(__m256 v) {
    return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
}

/* Largest |x| of n (multiple of 8) values, NaNs skipped as the scalar `ax > amax` does:
 * _mm256_max_ps returns its second operand when the first is NaN. */
static inline float amax_ps(const float *x, int n) {
    __m256 m = _mm256_setzero_ps();
    for (int j = 0; j < n; j += 8) m = _mm256_max_ps(abs_ps(_mm256_loadu_ps(x + j)), m);
    float l[8];
    _mm256_storeu_ps(l, m);
    float r = 0.0f;
    for (int k = 0; k < 8; k++) if (l[k] > r) r = l[k];
    return r;
}

/* x[0..31]·s rounded to nearest even, clamped to int8 (cvtps uses the current rounding mode,
 * like lrintf; out-of-range gives INT_MIN, which clamps to -128 as lrintf's does). */
static inline void quant32(const float *x, float s, int8_t *q) {
    __m256 sv = _mm256_set1_ps(s);
    __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(sv, _mm256_loadu_ps(x)));
    __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(sv, _mm256_loadu_ps(x + 8)));
    __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(sv, _mm256_loadu_ps(x + 16)));
    __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(sv, _mm256_loadu_ps(x + 24)));
    _mm_storeu_si128((__m128i *)q, pack16_i8(i0, i1));
    _mm_storeu_si128((__m128i *)(q + 16), pack16_i8(i2, i3));
}

void q_quantize_q8k_avx2(const float *x, q8k_block *y, uint64_t n) {
    for (uint64_t b = 0; b < n / Q_QK_K; b++, x += Q_QK_K) {
        float amax = amax_ps(x, Q_QK_K);
        if (amax == 0.0f) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        int at = 0;   /* first element whose |x| is the maximum (README §5.1) */
        while (fabsf(x[at]) != amax) at++;
        float iscale = -127.0f / x[at];
        for (int j = 0; j < Q_QK_K; j += 32) quant32(x + j, iscale, y[b].q + j);
        for (int j = 0; j < 16; j++) {
            __m128i v = _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(y[b].q + 16 * j)));
            __m128i v2 = _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(y[b].q + 16 * j + 8)));
            __m128i s = _mm_madd_epi16(_mm_add_epi16(v, v2), _mm_set1_epi16(1));
            s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
            s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
            y[b].bsums[j] = (int16_t)_mm_cvtsi128_si32(s);
        }
        y[b].d = 1.0f / iscale;
    }
}

void q_quantize_q8act_avx2(const float *x, q8act_block *y, uint64_t n) {
    for (uint64_t b = 0; b < n / Q_QK8_0; b++, x += Q_QK8_0) {
        float amax = amax_ps(x, Q_QK8_0);
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = d;
        quant32(x, id, y[b].q);
    }
}
