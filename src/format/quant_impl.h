/*
 * format/quant_impl.h — internals shared by the quant modules: the IQ2_XXS tables, the
 * scalar reference kernels and their AVX2 twins. Only src/format/quant*.c, the generated
 * iq2xxs_tables.c and the quant tests include this; everyone else uses format/quant.h.
 *
 * Split: quant.c (geometry, decode, dispatch), quant_dot.c (scalar dots and activation
 * quantizers), quant_encode.c (Q8_0/Q2_K/Q4_K encoders and their searches), quant_iq2.c
 * (IQ2_XXS encoder and its tables), quant_avx2.c (AVX2 kernels, bit-equal to the scalar).
 */
#ifndef DS4_FORMAT_QUANT_IMPL_H
#define DS4_FORMAT_QUANT_IMPL_H

#include <math.h>
#include <stdint.h>

#include "format/quant.h"

/* Block byte sizes (GGUF_LAYOUT §1.5). */
#define Q_Q8_0_BYTES 34
#define Q_Q2_K_BYTES 84
#define Q_Q4_K_BYTES 144
#define Q_IQ2_XXS_BYTES 66

/* iq2xxs_tables.c (generated). */
extern const uint64_t q_iq2xxs_grid[256];
extern const uint8_t q_iq2xxs_signs[128];
extern const uint64_t q_iq2xxs_sign_mask[128];   /* byte i = 0xFF if bit i of signs[s] */

/* Little-endian field loads (blocks are byte arrays with no alignment guarantee). */
static inline uint16_t q_load_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t q_load_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* Q4_K 6-bit scale and min of sub-block j (GGUF_LAYOUT §4.4). */
static inline void q_q4k_scale_min(int j, const uint8_t *s, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* Q8_0 block scale (GGUF_LAYOUT §4.2, quants README §4.4): d = amax/127 in f32 over the
 * Q_QK8_0 values at x, *id = 1/d (0 for an all-zero block). The Q8_0 weight encoder and the
 * Q8_0 activation quantizer share it; they differ only in how they round x·id. */
static inline float q_q8_0_scale(const float *x, float *id) {
    float amax = 0.0f;
    for (int j = 0; j < Q_QK8_0; j++) {
        float ax = fabsf(x[j]);
        if (ax > amax) amax = ax;
    }
    float d = amax / 127.0f;
    *id = d != 0.0f ? 1.0f / d : 0.0f;
    return d;
}

/* ---- Scalar reference kernels (quant_dot.c); n = elements, validated by the caller ---- */
float q_dot_f32_ref(const void *w, const void *x, uint64_t n);
float q_dot_f16_ref(const void *w, const void *x, uint64_t n);
float q_dot_bf16_ref(const void *w, const void *x, uint64_t n);
float q_dot_q8_0_ref(const void *w, const void *act, uint64_t n);
float q_dot_q2_k_ref(const void *w, const void *act, uint64_t n);
float q_dot_q4_k_ref(const void *w, const void *act, uint64_t n);
float q_dot_iq2_xxs_ref(const void *w, const void *act, uint64_t n);
void q_quantize_q8k_ref(const float *x, q8k_block *y, uint64_t n);
void q_quantize_q8act_ref(const float *x, q8act_block *y, uint64_t n);

/* ---- AVX2 kernels (quant_avx2.c); call only when the CPU has AVX2+FMA+F16C ---- */
float q_dot_f32_avx2(const void *w, const void *x, uint64_t n);
float q_dot_f16_avx2(const void *w, const void *x, uint64_t n);
float q_dot_bf16_avx2(const void *w, const void *x, uint64_t n);
float q_dot_q8_0_avx2(const void *w, const void *act, uint64_t n);
float q_dot_q2_k_avx2(const void *w, const void *act, uint64_t n);
float q_dot_q4_k_avx2(const void *w, const void *act, uint64_t n);
float q_dot_iq2_xxs_avx2(const void *w, const void *act, uint64_t n);
void q_quantize_q8k_avx2(const float *x, q8k_block *y, uint64_t n);
void q_quantize_q8act_avx2(const float *x, q8act_block *y, uint64_t n);

/* Several activation rows (q_dot_rows_fn), AVX2 (quant_avx2.c). */
void q_dot_rows_q2_k_avx2(const void *w, const void *act, size_t stride, int n_act, uint64_t n,
                          float *out);
void q_dot_rows_q4_k_avx2(const void *w, const void *act, size_t stride, int n_act, uint64_t n,
                          float *out);
void q_dot_rows_iq2_xxs_avx2(const void *w, const void *act, size_t stride, int n_act,
                             uint64_t n, float *out);
void q_dot_rows_q8_0_avx2(const void *w, const void *act, size_t stride, int n_act, uint64_t n,
                          float *out);

/* True when the running CPU can execute quant_avx2.c. */
bool q_cpu_has_avx2(void);

/* ---- Encoders (quant_encode.c, quant_iq2.c); n multiple of 32 / 256 ---- */
void q_encode_q8_0(const float *x, uint8_t *dst, uint64_t n);
void q_encode_q2_k(const float *x, uint8_t *dst, uint64_t n, const float *imp);
void q_encode_q4_k(const float *x, uint8_t *dst, uint64_t n, const float *imp);
ds4_status q_encode_iq2_xxs(const float *x, uint8_t *dst, uint64_t n, const float *imp,
                            ds4_error *err);

/* Round to nearest, ties to even, as ggml's nearest_int (exact for |x| < 2^22, where the
 * searches stay for finite input); out-of-range and NaN map to ±4194303 / 0 so that later
 * clamps stay defined. Shared by the encoders. */
static inline int q_nearest_int(float x) {
    if (!(fabsf(x) <= 4194303.0f)) return x > 0 ? 4194303 : (x < 0 ? -4194303 : 0);
    return (int)rintf(x);
}

/* The qp search (GGUF_LAYOUT §5.6), shared by the K-quant and IQ2_XXS encoders. */
float q_make_qp_quants(int n, int nmax, const float *x, uint8_t *L, const float *w);

#endif
