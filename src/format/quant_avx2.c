/*
 * format/quant_avx2.c — AVX2 twins of the scalar kernels in quant_dot.c, built with
 * -mavx2 -mfma -mf16c and called only after q_cpu_has_avx2() (quant.c dispatch).
 *
 * Contract: bit-equal to the scalar reference. Integer sums are exact in any order, so they
 * run in SIMD; each block's f32 value then takes exactly the scalar operations in the scalar
 * order (quants README §4.2) — several blocks' (or activation rows') values side by side in
 * vector lanes, which round like scalar operations — and is added to its row's running sum
 * in block order. The F32/F16/BF16 dots keep 8 lane sums, which is the scalar order by
 * definition (quant.h). No FMA is used anywhere (an FMA rounds once where the reference
 * rounds twice).
 *
 * _mm256_sign_epi8 cannot negate −128, which weights and activations may hold (quants README
 * §4.1 record 3; ds4's quantizer never emits it, NaN input and hand-made data do). Q8_0 uses
 * it only on a fast path that tracks the minimum activation byte and redoes any batch of
 * blocks that met a −128 with int16 arithmetic; IQ2_XXS only ever negates grid values.
 * The f16 block scales are converted with F16C, exact like fp_f16_to_f32.
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

/* ---- Quantized rows ----------------------------------------------------------------------
 * Shared shape: the exact integer sums of 4 blocks are built in vectors and reduced together
 * (hsum4_i32); the 4 block values are computed lane by lane with quant_dot.c's operations,
 * then added to acc one by one in block order (add4_in_order). Batching matters: a per-block
 * horizontal sum plus a scalar f32 chain was a large share of these kernels' time. */

/* The four totals Σa, Σb, Σc, Σd of four int32x8 vectors, in that lane order. */
static inline __m128i hsum4_i32(__m256i a, __m256i b, __m256i c, __m256i d) {
    __m256i abcd = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
    return _mm_add_epi32(_mm256_castsi256_si128(abcd), _mm256_extracti128_si256(abcd, 1));
}

/* f16 -> f32 with F16C: exact for every finite and infinite value, as fp_f16_to_f32. */
static inline float f16_to_f32(const uint8_t *p) {
    return _cvtsh_ss(q_load_u16(p));
}

/* True when some byte of `mn` (a running _mm256_min_epi8) is -128. */
static inline bool has_min_i8(__m256i mn) {
    return _mm256_movemask_epi8(_mm256_cmpeq_epi8(mn, _mm256_set1_epi8(-128))) != 0;
}

/* Σ a[i]·b[i] over 32 signed bytes, exact for every input (int16 widening). */
static inline __m256i dot32_i8(const void *a, const void *b) {
    __m256i va = _mm256_loadu_si256((const __m256i *)a);
    __m256i vb = _mm256_loadu_si256((const __m256i *)b);
    __m256i lo = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_castsi256_si128(va)),
                                   _mm256_cvtepi8_epi16(_mm256_castsi256_si128(vb)));
    __m256i hi = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_extracti128_si256(va, 1)),
                                   _mm256_cvtepi8_epi16(_mm256_extracti128_si256(vb, 1)));
    return _mm256_add_epi32(lo, hi);
}

/* The same sum as |w|·(±y) with maddubs: exact while no y byte is -128 (|w| <= 128 as an
 * unsigned byte, |±y| <= 127, so a pair is at most 32512). Folds y into *mn for the check. */
static inline __m256i dot32_i8_fast(const uint8_t *w, const int8_t *y, __m256i *mn) {
    __m256i vw = _mm256_loadu_si256((const __m256i *)w);
    __m256i vy = _mm256_loadu_si256((const __m256i *)y);
    *mn = _mm256_min_epi8(*mn, vy);
    __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(vw), _mm256_sign_epi8(vy, vw));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

/* acc + v0 + v1 + v2 + v3, left to right (the scalar block order). */
static inline float add4_in_order(float acc, __m128 v) {
    float t[4];
    _mm_storeu_ps(t, v);
    acc += t[0];
    acc += t[1];
    acc += t[2];
    return acc + t[3];
}

/* (f16(d_k)·yd_k)·(float)isum_k of 4 blocks in lanes 0..3, as the scalar code computes each:
 * d_k = the f16 at b + k·bbytes, yd_k = the float at yd + k·ystride (activation scales). */
static inline __m128 d_values4(const uint8_t *b, size_t bbytes, const void *yd, size_t ystride,
                               __m128i isum) {
    const uint8_t *yp = yd;
    float y[4];
    for (int k = 0; k < 4; k++) memcpy(&y[k], yp + k * ystride, sizeof(float));
    __m128i h = _mm_setr_epi16((short)q_load_u16(b), (short)q_load_u16(b + bbytes),
                               (short)q_load_u16(b + 2 * bbytes), (short)q_load_u16(b + 3 * bbytes),
                               0, 0, 0, 0);
    __m128 t = _mm_mul_ps(_mm_cvtph_ps(h), _mm_loadu_ps(y));
    return _mm_mul_ps(t, _mm_cvtepi32_ps(isum));
}

float q_dot_q8_0_avx2(const void *w, const void *act, uint64_t n) {
    const uint8_t *b = w;
    const q8act_block *y = act;
    uint64_t nb = n / Q_QK8_0, i = 0;
    float acc = 0.0f;
    for (; i + 4 <= nb; i += 4, b += 4 * Q_Q8_0_BYTES) {
        const uint8_t *b1 = b + Q_Q8_0_BYTES, *b2 = b1 + Q_Q8_0_BYTES, *b3 = b2 + Q_Q8_0_BYTES;
        __m256i mn = _mm256_set1_epi8(127);
        __m256i v0 = dot32_i8_fast(b + 2, y[i].q, &mn), v1 = dot32_i8_fast(b1 + 2, y[i + 1].q, &mn);
        __m256i v2 = dot32_i8_fast(b2 + 2, y[i + 2].q, &mn), v3 = dot32_i8_fast(b3 + 2, y[i + 3].q, &mn);
        if (has_min_i8(mn)) {   /* a -128 activation (NaN input, hand-made data): exact path */
            v0 = dot32_i8(b + 2, y[i].q);
            v1 = dot32_i8(b1 + 2, y[i + 1].q);
            v2 = dot32_i8(b2 + 2, y[i + 2].q);
            v3 = dot32_i8(b3 + 2, y[i + 3].q);
        }
        acc = add4_in_order(acc, d_values4(b, Q_Q8_0_BYTES, &y[i].d, sizeof *y,
                                           hsum4_i32(v0, v1, v2, v3)));
    }
    for (; i < nb; i++, b += Q_Q8_0_BYTES)
        acc += (f16_to_f32(b) * y[i].d) * (float)hsum_i32(dot32_i8(b + 2, y[i].q));
    return acc;
}

/* pshufb controls read from memory (a load is cheaper here than another vector op). */
static inline __m256i q_ctl(const int8_t tab[8][32], int t) {
    return _mm256_load_si256((const __m256i *)tab[t]);
}

/* Q2_K step t: int16 lanes of the low half = scale byte 2t, of the high half = byte 2t+1. */
static const int8_t q2k_ctl[8][32] __attribute__((aligned(32))) = {
#define Q2K_CTL(t) {2 * (t), -128, 2 * (t), -128, 2 * (t), -128, 2 * (t), -128,                \
                    2 * (t), -128, 2 * (t), -128, 2 * (t), -128, 2 * (t), -128,                \
                    2 * (t) + 1, -128, 2 * (t) + 1, -128, 2 * (t) + 1, -128, 2 * (t) + 1, -128, \
                    2 * (t) + 1, -128, 2 * (t) + 1, -128, 2 * (t) + 1, -128, 2 * (t) + 1, -128}
    Q2K_CTL(0), Q2K_CTL(1), Q2K_CTL(2), Q2K_CTL(3), Q2K_CTL(4), Q2K_CTL(5), Q2K_CTL(6), Q2K_CTL(7)
#undef Q2K_CTL
};

/* Q4_K sub-block j: every int16 lane = int16 j of the scale vector (bytes 2j, 2j+1). */
static const int8_t q4k_ctl[8][32] __attribute__((aligned(32))) = {
#define Q4K_CTL(j) {2 * (j), 2 * (j) + 1, 2 * (j), 2 * (j) + 1, 2 * (j), 2 * (j) + 1, 2 * (j), 2 * (j) + 1, \
                    2 * (j), 2 * (j) + 1, 2 * (j), 2 * (j) + 1, 2 * (j), 2 * (j) + 1, 2 * (j), 2 * (j) + 1, \
                    2 * (j), 2 * (j) + 1, 2 * (j), 2 * (j) + 1, 2 * (j), 2 * (j) + 1, 2 * (j), 2 * (j) + 1, \
                    2 * (j), 2 * (j) + 1, 2 * (j), 2 * (j) + 1, 2 * (j), 2 * (j) + 1, 2 * (j), 2 * (j) + 1}
    Q4K_CTL(0), Q4K_CTL(1), Q4K_CTL(2), Q4K_CTL(3), Q4K_CTL(4), Q4K_CTL(5), Q4K_CTL(6), Q4K_CTL(7)
#undef Q4K_CTL
};

/* Q2_K block b: returns the isum partials, stores the summs partials (README §4.2 Q2_K).
 * Step t = 4h+s covers elements 128h+32s..+31, i.e. sub-blocks j = 2t (first 16, lane 0) and
 * 2t+1 (lane 1); their 4-bit scales reach the two lanes through one pshufb (q2k_ctl[t]). */
static inline __m256i q2k_block(const uint8_t *b, const q8k_block *y, __m256i *summs) {
    const __m256i m3 = _mm256_set1_epi8(3);
    __m128i sc = _mm_loadu_si128((const __m128i *)b);
    __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc, 4), _mm_set1_epi8(15)));
    *summs = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)y->bsums), mins);
    __m256i scb = _mm256_and_si256(_mm256_broadcastsi128_si256(sc), _mm256_set1_epi8(15));
    __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
    for (int h = 0; h < 2; h++) {
        __m256i qs = _mm256_loadu_si256((const __m256i *)(b + 16 + 32 * h));
        const int8_t *yq = y->q + 128 * h;
        /* codes <= 3 unsigned × int8: a pair is at most 768, never saturates */
        __m256i p0 = _mm256_maddubs_epi16(_mm256_and_si256(qs, m3),
                                          _mm256_loadu_si256((const __m256i *)yq));
        __m256i p1 = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(qs, 2), m3),
                                          _mm256_loadu_si256((const __m256i *)(yq + 32)));
        __m256i p2 = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(qs, 4), m3),
                                          _mm256_loadu_si256((const __m256i *)(yq + 64)));
        __m256i p3 = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(qs, 6), m3),
                                          _mm256_loadu_si256((const __m256i *)(yq + 96)));
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(p0, _mm256_shuffle_epi8(scb, q_ctl(q2k_ctl, 4 * h + 0))));
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(p1, _mm256_shuffle_epi8(scb, q_ctl(q2k_ctl, 4 * h + 1))));
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(p2, _mm256_shuffle_epi8(scb, q_ctl(q2k_ctl, 4 * h + 2))));
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(p3, _mm256_shuffle_epi8(scb, q_ctl(q2k_ctl, 4 * h + 3))));
    }
    return _mm256_add_epi32(a0, a1);
}

static inline float q2k_value(const uint8_t *b, const q8k_block *y, int32_t isum, int32_t summs) {
    float dall = y->d * f16_to_f32(b + 80);
    float dmin = y->d * f16_to_f32(b + 82);
    return dall * (float)isum - dmin * (float)summs;
}

/* The f32 values of 4 consecutive K-quant blocks (bbytes apart, f16 d at byte d_off and dmin
 * right after it) in lanes 0..3: (y.d·d)·isum − (y.d·dmin)·summs, every lane the same IEEE
 * operations in the same order as q2k_value / q4k_value. */
static inline __m128 kq_values4(const uint8_t *b, size_t bbytes, size_t d_off, const q8k_block *y,
                                __m128i isum, __m128i summs) {
    __m128i h = _mm_setr_epi32((int)q_load_u32(b + d_off), (int)q_load_u32(b + bbytes + d_off),
                               (int)q_load_u32(b + 2 * bbytes + d_off),
                               (int)q_load_u32(b + 3 * bbytes + d_off));
    __m256 f = _mm256_permutevar8x32_ps(_mm256_cvtph_ps(h), _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
    __m128 yd = _mm_setr_ps(y[0].d, y[1].d, y[2].d, y[3].d);
    __m128 dall = _mm_mul_ps(yd, _mm256_castps256_ps128(f));
    __m128 dmin = _mm_mul_ps(yd, _mm256_extractf128_ps(f, 1));
    return _mm_sub_ps(_mm_mul_ps(dall, _mm_cvtepi32_ps(isum)), _mm_mul_ps(dmin, _mm_cvtepi32_ps(summs)));
}

/* The single-row K-quant dot: 4 blocks at a time (integer sums reduced together, the f32
 * steps lane by lane, added into acc in block order), then the remaining blocks one by one.
 * BLOCK/VALUE are the type's block kernel and scalar f32 step, D_OFF its f16 d's offset. */
#define Q_DEFINE_KQ_DOT(NAME, BLOCK, VALUE, BYTES, D_OFF)                                      \
    float NAME(const void *w, const void *act, uint64_t n) {                                   \
        const uint8_t *b = w;                                                                  \
        const q8k_block *y = act;                                                              \
        uint64_t nb = n / Q_QK_K, i = 0;                                                       \
        float acc = 0.0f;                                                                      \
        for (; i + 4 <= nb; i += 4, b += 4 * (BYTES)) {                                        \
            __m256i m0, m1, m2, m3;                                                            \
            __m256i v0 = BLOCK(b, &y[i], &m0);                                                 \
            __m256i v1 = BLOCK(b + (BYTES), &y[i + 1], &m1);                                   \
            __m256i v2 = BLOCK(b + 2 * (BYTES), &y[i + 2], &m2);                               \
            __m256i v3 = BLOCK(b + 3 * (BYTES), &y[i + 3], &m3);                               \
            acc = add4_in_order(acc, kq_values4(b, (BYTES), (D_OFF), &y[i],                    \
                                                hsum4_i32(v0, v1, v2, v3),                     \
                                                hsum4_i32(m0, m1, m2, m3)));                   \
        }                                                                                      \
        for (; i < nb; i++, b += (BYTES)) {                                                    \
            __m256i m0, v0 = BLOCK(b, &y[i], &m0);                                             \
            acc += VALUE(b, &y[i], hsum_i32(v0), hsum_i32(m0));                                \
        }                                                                                      \
        return acc;                                                                            \
    }

Q_DEFINE_KQ_DOT(q_dot_q2_k_avx2, q2k_block, q2k_value, Q_Q2_K_BYTES, 80)

/* Q4_K block b (README §4.2 Q4_K). The 6-bit scales and mins of GGUF_LAYOUT §4.4 unpacked
 * four at a time in 32-bit words (byte j of each word is sub-block j or j+4). */
static inline __m256i q4k_block(const uint8_t *b, const q8k_block *y, __m256i *summs) {
    uint32_t u0 = q_load_u32(b + 4), u1 = q_load_u32(b + 8), u2 = q_load_u32(b + 12);
    uint32_t sc_lo = u0 & 0x3F3F3F3Fu, m_lo = u1 & 0x3F3F3F3Fu;
    uint32_t sc_hi = (u2 & 0x0F0F0F0Fu) | (((u0 >> 6) & 0x03030303u) << 4);
    uint32_t m_hi = ((u2 >> 4) & 0x0F0F0F0Fu) | (((u1 >> 6) & 0x03030303u) << 4);
    __m128i scm = _mm_setr_epi32((int)sc_lo, (int)sc_hi, (int)m_lo, (int)m_hi);
    /* summs = Σ_j m_j·(bsums[2j] + bsums[2j+1]): each m_j twice against the bsums pairs */
    __m256i m2 = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(scm, scm));
    *summs = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)y->bsums), m2);
    /* sc_j as int16 in both lanes; control bytes (2j, 2j+1) broadcast sc_j */
    __m256i sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scm));
    /* (the control advances in a register here: measured faster than q4k_ctl loads) */
    __m256i ctrl = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1,
                                    0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1);
    const __m256i two = _mm256_set1_epi8(2), m4 = _mm256_set1_epi8(15);
    __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
    for (int c = 0; c < 4; c++) {
        __m256i qs = _mm256_loadu_si256((const __m256i *)(b + 16 + 32 * c));
        /* nibble × int8: a pair is at most 3840 */
        __m256i plo = _mm256_maddubs_epi16(_mm256_and_si256(qs, m4),
                                           _mm256_loadu_si256((const __m256i *)(y->q + 64 * c)));
        __m256i phi = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(qs, 4), m4),
                                           _mm256_loadu_si256((const __m256i *)(y->q + 64 * c + 32)));
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(plo, _mm256_shuffle_epi8(sc16, ctrl)));
        ctrl = _mm256_add_epi8(ctrl, two);
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(phi, _mm256_shuffle_epi8(sc16, ctrl)));
        ctrl = _mm256_add_epi8(ctrl, two);
    }
    return _mm256_add_epi32(a0, a1);
}

static inline float q4k_value(const uint8_t *b, const q8k_block *y, int32_t isum, int32_t summs) {
    float dall = y->d * f16_to_f32(b);
    float dmin = y->d * f16_to_f32(b + 2);
    return (dall * (float)isum) - (dmin * (float)summs);
}

Q_DEFINE_KQ_DOT(q_dot_q4_k_avx2, q4k_block, q4k_value, Q_Q4_K_BYTES, 0)

/* ---- IQ2_XXS ----
 * Group g of a block: A = u32 at 2+8g (4 grid indices), B = u32 at 6+8g (4×7 sign bits,
 * scale s in bits 28..31). The signs are expanded from B in SIMD and put on the grid
 * (±grid fits int8); then |y|·sign(±grid, y) = grid·sign·y, exact for every activation byte
 * since |−128| = 128 is a valid unsigned maddubs operand (a pair is at most 128·43·2). */

/* Grid rows of the four indices at a[0..3], lane k = row a[k]. */
static inline __m256i iq2_grid(const uint8_t *a) {
    __m128i lo = _mm_loadl_epi64((const __m128i *)(q_iq2xxs_grid + a[0]));
    lo = _mm_insert_epi64(lo, (long long)q_iq2xxs_grid[a[1]], 1);
    __m128i hi = _mm_loadl_epi64((const __m128i *)(q_iq2xxs_grid + a[2]));
    hi = _mm_insert_epi64(hi, (long long)q_iq2xxs_grid[a[3]], 1);
    return _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
}

/* From bv = B in every dword: byte 8k+l negative iff element 8k+l is negated, never zero.
 * Bit l < 7 of sign byte k is bit 7k+l of B (GGUF_LAYOUT §4.5.2): pshufb brings its byte,
 * the and/cmpeq tests it. Byte 7 comes out 0xFF; psadbw then counts 255·(n+1) for the n
 * set bits, so bit 0 of the count is set iff n is even, and that bit moved to bit 63 flips
 * byte 7 to positive exactly when the parity bit (KSIGNS bit 7) is clear. */
static inline __m256i iq2_signs(__m256i bv) {
    const __m256i ctrl = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1,
                                          1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3);
    const __m256i sel = _mm256_setr_epi8(1, 2, 4, 8, 16, 32, 64, 0, -128, 1, 2, 4, 8, 16, 32, 0,
                                         64, -128, 1, 2, 4, 8, 16, 0, 32, 64, -128, 1, 2, 4, 8, 0);
    __m256i m = _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(bv, ctrl), sel), sel);
    __m256i cnt = _mm256_sad_epu8(m, _mm256_setzero_si256());
    return _mm256_xor_si256(_mm256_or_si256(m, _mm256_set1_epi8(1)), _mm256_slli_epi64(cnt, 63));
}

/* ls = 2s+1 in every int16 lane: B's top byte into each high byte, >> 11 gives 2s plus
 * bit 27 of B, and | 1 replaces that bit. */
static inline __m256i iq2_scale(__m256i bv) {
    const __m256i ctrl = _mm256_setr_epi8(-128, 3, -128, 3, -128, 3, -128, 3, -128, 3, -128, 3,
                                          -128, 3, -128, 3, -128, 3, -128, 3, -128, 3, -128, 3,
                                          -128, 3, -128, 3, -128, 3, -128, 3);
    return _mm256_or_si256(_mm256_srli_epi16(_mm256_shuffle_epi8(bv, ctrl), 11),
                           _mm256_set1_epi16(1));
}

/* Group at q: the signed grid (±8, ±25, ±43) and the scale vector. */
static inline __m256i iq2_signed_grid(const uint8_t *q, __m256i *ls) {
    __m256i bv = _mm256_set1_epi32((int)q_load_u32(q + 4));
    *ls = iq2_scale(bv);
    return _mm256_sign_epi8(iq2_grid(q), iq2_signs(bv));
}

/* ls·Σ grid·sign·y of one group as 8 int32 partials. */
static inline __m256i iq2_group(__m256i sg, __m256i ls, const int8_t *yq) {
    __m256i y = _mm256_loadu_si256((const __m256i *)yq);
    __asm__("" : "+x"(y));   /* one load: gcc would fold it into both uses below */
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(y), _mm256_sign_epi8(sg, y)), ls);
}

/* always_inline: gcc otherwise calls it out of line and reloads every constant per block */
static inline __attribute__((always_inline)) __m256i iq2_block(const uint8_t *b, const int8_t *yq) {
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256(), ls0, ls1;
#pragma GCC unroll 8
    for (int g = 0; g < 8; g += 2) {
        __m256i sg0 = iq2_signed_grid(b + 2 + 8 * g, &ls0);
        __m256i sg1 = iq2_signed_grid(b + 10 + 8 * g, &ls1);
        s0 = _mm256_add_epi32(s0, iq2_group(sg0, ls0, yq + 32 * g));
        s1 = _mm256_add_epi32(s1, iq2_group(sg1, ls1, yq + 32 * g + 32));
    }
    return _mm256_add_epi32(s0, s1);
}

float q_dot_iq2_xxs_avx2(const void *w, const void *act, uint64_t n) {
    const uint8_t *b = w;
    const q8k_block *y = act;
    uint64_t nb = n / Q_QK_K, i = 0;
    float acc = 0.0f;
    for (; i + 4 <= nb; i += 4, b += 4 * Q_IQ2_XXS_BYTES) {
        __m256i v0 = iq2_block(b, y[i].q);
        __m256i v1 = iq2_block(b + Q_IQ2_XXS_BYTES, y[i + 1].q);
        __m256i v2 = iq2_block(b + 2 * Q_IQ2_XXS_BYTES, y[i + 2].q);
        __m256i v3 = iq2_block(b + 3 * Q_IQ2_XXS_BYTES, y[i + 3].q);
        acc = add4_in_order(acc, d_values4(b, Q_IQ2_XXS_BYTES, &y[i].d, sizeof *y,
                                           hsum4_i32(v0, v1, v2, v3)));
    }
    for (; i < nb; i++, b += Q_IQ2_XXS_BYTES)
        acc += (f16_to_f32(b) * y[i].d) * (float)hsum_i32(iq2_block(b, y[i].q));
    return 0.125f * acc;
}

/* ---- One weight row, several activation rows (q_dot_rows) --------------------------------
 * Each weight block is decoded once into registers and applied to up to 8 (IQ2_XXS) or 4
 * activation rows; every row keeps its own integer sums and its own f32 chain in the scalar
 * order, so out[r] equals the single-row dot bit for bit. */

#define Q_ROWS_PASS 8

/* Row r's activation for block i of a Q8_K row set. */
static inline const q8k_block *rows_q8k(const uint8_t *act, size_t stride, int r, uint64_t i) {
    return (const q8k_block *)(act + (size_t)r * stride) + i;
}

/* Block totals of nr (1..8) int32x8 vectors in lanes 0..nr-1, zero above. */
static inline __attribute__((always_inline)) __m256i rows_hsum(const __m256i *v, int nr) {
    const __m256i z = _mm256_setzero_si256();
    __m128i lo = hsum4_i32(v[0], nr > 1 ? v[1] : z, nr > 2 ? v[2] : z, nr > 3 ? v[3] : z);
    __m128i hi = nr > 4 ? hsum4_i32(v[4], nr > 5 ? v[5] : z, nr > 6 ? v[6] : z, nr > 7 ? v[7] : z)
                        : _mm_setzero_si128();
    return _mm256_set_m128i(hi, lo);
}

/* The activation scales y.d of block i of rows 0..nr-1 in lanes 0..nr-1, zero above. */
static inline __attribute__((always_inline)) __m256 rows_yd(const uint8_t *act, size_t stride,
                                                            int nr, uint64_t i) {
    float d[Q_ROWS_PASS];
#pragma GCC unroll 8
    for (int r = 0; r < Q_ROWS_PASS; r++) d[r] = r < nr ? rows_q8k(act, stride, r, i)->d : 0.0f;
    return _mm256_setr_ps(d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]);
}

/* Row r's f32 sum sits in lane r of acc: out[r] = scale·lane r. */
static inline void rows_store(__m256 acc, float scale, int nr, float *out) {
    float a[Q_ROWS_PASS];
    _mm256_storeu_ps(a, acc);
    for (int r = 0; r < nr; r++) out[r] = scale * a[r];
}

/* K-quant block values of the rows in lanes: (y.d·d)·isum − (y.d·dmin)·summs, with the f16
 * d and dmin at dm (as q2k_value / q4k_value, lane by lane). */
static inline __m256 kq_rows_values(const uint8_t *dm, __m256 yd, __m256i isum, __m256i summs) {
    __m256 dall = _mm256_mul_ps(yd, _mm256_set1_ps(f16_to_f32(dm)));
    __m256 dmin = _mm256_mul_ps(yd, _mm256_set1_ps(f16_to_f32(dm + 2)));
    return _mm256_sub_ps(_mm256_mul_ps(dall, _mm256_cvtepi32_ps(isum)),
                         _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(summs)));
}

/* IQ2_XXS, nr rows: the signed grid and scale of each group are built once (see iq2_group). */
static inline __attribute__((always_inline)) void iq2_rows(const uint8_t *b, const uint8_t *act,
                                                           size_t stride, int nr, uint64_t nb,
                                                           float *out) {
    __m256 acc = _mm256_setzero_ps();   /* lane r: row r's running sum (README §4.2 order) */
    for (uint64_t i = 0; i < nb; i++, b += Q_IQ2_XXS_BYTES) {
        __m256i s[Q_ROWS_PASS];
#pragma GCC unroll 8
        for (int r = 0; r < nr; r++) s[r] = _mm256_setzero_si256();
        for (int g = 0; g < 8; g++) {
            __m256i ls, sg = iq2_signed_grid(b + 2 + 8 * g, &ls);
#pragma GCC unroll 8
            for (int r = 0; r < nr; r++)
                s[r] = _mm256_add_epi32(s[r], iq2_group(sg, ls, rows_q8k(act, stride, r, i)->q + 32 * g));
        }
        __m256 t = _mm256_mul_ps(_mm256_set1_ps(f16_to_f32(b)), rows_yd(act, stride, nr, i));
        acc = _mm256_add_ps(acc, _mm256_mul_ps(t, _mm256_cvtepi32_ps(rows_hsum(s, nr))));
    }
    rows_store(acc, 0.125f, nr, out);
}

/* Q2_K, nr rows: codes and per-step scale vectors shared (see q2k_block). */
static inline __attribute__((always_inline)) void q2k_rows(const uint8_t *b, const uint8_t *act,
                                                           size_t stride, int nr, uint64_t nb,
                                                           float *out) {
    const __m256i m3 = _mm256_set1_epi8(3);
    __m256 acc = _mm256_setzero_ps();   /* lane r: row r's running sum */
    for (uint64_t i = 0; i < nb; i++, b += Q_Q2_K_BYTES) {
        __m128i sc = _mm_loadu_si128((const __m128i *)b);
        __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc, 4), _mm_set1_epi8(15)));
        __m256i scb = _mm256_and_si256(_mm256_broadcastsi128_si256(sc), _mm256_set1_epi8(15));
        __m256i is[Q_ROWS_PASS], ms[Q_ROWS_PASS];
#pragma GCC unroll 8
        for (int r = 0; r < nr; r++) {
            is[r] = _mm256_setzero_si256();
            ms[r] = _mm256_madd_epi16(
                _mm256_loadu_si256((const __m256i *)rows_q8k(act, stride, r, i)->bsums), mins);
        }
        for (int t = 0; t < 8; t++) {   /* step t: elements 32t..32t+31, sub-blocks 2t, 2t+1 */
            __m256i qs = _mm256_loadu_si256((const __m256i *)(b + 16 + 32 * (t / 4)));
            __m256i codes = _mm256_and_si256(_mm256_srli_epi16(qs, 2 * (t % 4)), m3);
            __m256i scv = _mm256_shuffle_epi8(scb, q_ctl(q2k_ctl, t));
#pragma GCC unroll 8
            for (int r = 0; r < nr; r++) {
                __m256i y = _mm256_loadu_si256((const __m256i *)(rows_q8k(act, stride, r, i)->q + 32 * t));
                is[r] = _mm256_add_epi32(is[r], _mm256_madd_epi16(_mm256_maddubs_epi16(codes, y), scv));
            }
        }
        acc = _mm256_add_ps(acc, kq_rows_values(b + 80, rows_yd(act, stride, nr, i),
                                                rows_hsum(is, nr), rows_hsum(ms, nr)));
    }
    rows_store(acc, 1.0f, nr, out);
}

/* Q4_K, nr rows: scales, mins and nibbles shared (see q4k_block). */
static inline __attribute__((always_inline)) void q4k_rows(const uint8_t *b, const uint8_t *act,
                                                           size_t stride, int nr, uint64_t nb,
                                                           float *out) {
    const __m256i m4 = _mm256_set1_epi8(15);
    __m256 acc = _mm256_setzero_ps();   /* lane r: row r's running sum */
    for (uint64_t i = 0; i < nb; i++, b += Q_Q4_K_BYTES) {
        uint32_t u0 = q_load_u32(b + 4), u1 = q_load_u32(b + 8), u2 = q_load_u32(b + 12);
        uint32_t sc_lo = u0 & 0x3F3F3F3Fu, m_lo = u1 & 0x3F3F3F3Fu;
        uint32_t sc_hi = (u2 & 0x0F0F0F0Fu) | (((u0 >> 6) & 0x03030303u) << 4);
        uint32_t m_hi = ((u2 >> 4) & 0x0F0F0F0Fu) | (((u1 >> 6) & 0x03030303u) << 4);
        __m128i scm = _mm_setr_epi32((int)sc_lo, (int)sc_hi, (int)m_lo, (int)m_hi);
        __m256i m2 = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(scm, scm));
        __m256i sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scm));
        __m256i is[Q_ROWS_PASS], ms[Q_ROWS_PASS];
#pragma GCC unroll 8
        for (int r = 0; r < nr; r++) {
            is[r] = _mm256_setzero_si256();
            ms[r] = _mm256_madd_epi16(
                _mm256_loadu_si256((const __m256i *)rows_q8k(act, stride, r, i)->bsums), m2);
        }
        for (int j = 0; j < 8; j++) {   /* sub-block j: elements 32j..32j+31 */
            __m256i qs = _mm256_loadu_si256((const __m256i *)(b + 16 + 32 * (j / 2)));
            __m256i nib = _mm256_and_si256(j & 1 ? _mm256_srli_epi16(qs, 4) : qs, m4);
            __m256i scv = _mm256_shuffle_epi8(sc16, q_ctl(q4k_ctl, j));
#pragma GCC unroll 8
            for (int r = 0; r < nr; r++) {
                __m256i y = _mm256_loadu_si256((const __m256i *)(rows_q8k(act, stride, r, i)->q + 32 * j));
                is[r] = _mm256_add_epi32(is[r], _mm256_madd_epi16(_mm256_maddubs_epi16(nib, y), scv));
            }
        }
        acc = _mm256_add_ps(acc, kq_rows_values(b + 0, rows_yd(act, stride, nr, i),
                                                rows_hsum(is, nr), rows_hsum(ms, nr)));
    }
    rows_store(acc, 1.0f, nr, out);
}

/* Q8_0, nr rows: |w| shared, sign(y, w) per row as in dot32_i8_fast; a block where some row's
 * activations hold -128 is redone for every row with dot32_i8 (exact). */
static inline __attribute__((always_inline)) void q8_0_rows(const uint8_t *b, const uint8_t *act,
                                                            size_t stride, int nr, uint64_t nb,
                                                            float *out) {
    const __m256i one16 = _mm256_set1_epi16(1);
    __m256 acc = _mm256_setzero_ps();   /* lane r: row r's running sum (README §4.2 order) */
    for (uint64_t i = 0; i < nb; i++, b += Q_Q8_0_BYTES) {
        __m256i w = _mm256_loadu_si256((const __m256i *)(b + 2)), aw = _mm256_abs_epi8(w);
        __m256i v[Q_ROWS_PASS], mn = _mm256_set1_epi8(127);
        float yd[Q_ROWS_PASS];
#pragma GCC unroll 8
        for (int r = 0; r < Q_ROWS_PASS; r++) {
            if (r >= nr) {
                yd[r] = 0.0f;
                continue;
            }
            const q8act_block *yr = (const q8act_block *)(act + (size_t)r * stride) + i;
            __m256i y = _mm256_loadu_si256((const __m256i *)yr->q);
            mn = _mm256_min_epi8(mn, y);
            v[r] = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(y, w)), one16);
            yd[r] = yr->d;
        }
        if (has_min_i8(mn)) {
            for (int r = 0; r < nr; r++)
                v[r] = dot32_i8(b + 2, ((const q8act_block *)(act + (size_t)r * stride) + i)->q);
        }
        __m256 t = _mm256_mul_ps(_mm256_set1_ps(f16_to_f32(b)),
                                 _mm256_setr_ps(yd[0], yd[1], yd[2], yd[3], yd[4], yd[5], yd[6], yd[7]));
        acc = _mm256_add_ps(acc, _mm256_mul_ps(t, _mm256_cvtepi32_ps(rows_hsum(v, nr))));
    }
    rows_store(acc, 1.0f, nr, out);
}

/* Rows in passes of WIDE (8 or 4), then one of 4, then the remainder; a single row takes the
 * single-row kernel. IQ2_XXS gains from 8 (its decode is the expensive part); the K-quants
 * measured faster with 4 (8 accumulator pairs spill). */
#define Q_DEFINE_ROWS(NAME, PASS, SINGLE, BLOCK_ELEMS, WIDE)                                   \
    void NAME(const void *w, const void *act, size_t stride, int n_act, uint64_t n, float *out) { \
        const uint8_t *a = act;                                                                 \
        uint64_t nb = n / (BLOCK_ELEMS);                                                        \
        int r = 0;                                                                              \
        for (; r + (WIDE) <= n_act; r += (WIDE))                                                \
            PASS(w, a + (size_t)r * stride, stride, (WIDE), nb, out + r);                       \
        if (n_act - r >= 4) {                                                                   \
            PASS(w, a + (size_t)r * stride, stride, 4, nb, out + r);                            \
            r += 4;                                                                             \
        }                                                                                       \
        switch (n_act - r) {                                                                    \
        case 3: PASS(w, a + (size_t)r * stride, stride, 3, nb, out + r); break;                 \
        case 2: PASS(w, a + (size_t)r * stride, stride, 2, nb, out + r); break;                 \
        case 1: out[r] = SINGLE(w, a + (size_t)r * stride, n); break;                           \
        default: break;                                                                         \
        }                                                                                       \
    }

Q_DEFINE_ROWS(q_dot_rows_iq2_xxs_avx2, iq2_rows, q_dot_iq2_xxs_avx2, Q_QK_K, 8)
Q_DEFINE_ROWS(q_dot_rows_q2_k_avx2, q2k_rows, q_dot_q2_k_avx2, Q_QK_K, 4)
Q_DEFINE_ROWS(q_dot_rows_q4_k_avx2, q4k_rows, q_dot_q4_k_avx2, Q_QK_K, 4)
Q_DEFINE_ROWS(q_dot_rows_q8_0_avx2, q8_0_rows, q_dot_q8_0_avx2, Q_QK8_0, 4)

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
