/*
 * format/quant.c — block geometry, row decoders (GGUF_LAYOUT §4) and the dispatch of
 * format/quant.h: argument checks, then the scalar or AVX2 kernel. The kernels themselves
 * live in quant_dot.c / quant_avx2.c and the encoders in quant_encode.c / quant_iq2.c.
 * Must not know tensor names or files.
 */
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/safemath.h"
#include "format/fp8.h"
#include "format/quant_impl.h"

/* ---- Geometry ---------------------------------------------------------------------------- */

size_t q_block_elems(int type) {
    switch (type) {
    case Q_TYPE_F32: case Q_TYPE_F16: case Q_TYPE_BF16: return 1;
    case Q_TYPE_Q8_0: return Q_QK8_0;
    case Q_TYPE_Q2_K: case Q_TYPE_Q4_K: case Q_TYPE_Q8_K: case Q_TYPE_IQ2_XXS: return Q_QK_K;
    default: return 0;
    }
}

size_t q_block_bytes(int type) {
    switch (type) {
    case Q_TYPE_F32: return 4;
    case Q_TYPE_F16: case Q_TYPE_BF16: return 2;
    case Q_TYPE_Q8_0: return Q_Q8_0_BYTES;
    case Q_TYPE_Q2_K: return Q_Q2_K_BYTES;
    case Q_TYPE_Q4_K: return Q_Q4_K_BYTES;
    case Q_TYPE_Q8_K: return sizeof(q8k_block);
    case Q_TYPE_IQ2_XXS: return Q_IQ2_XXS_BYTES;
    default: return 0;
    }
}

const char *q_type_name(int type) {
    switch (type) {
    case Q_TYPE_F32: return "F32";
    case Q_TYPE_F16: return "F16";
    case Q_TYPE_BF16: return "BF16";
    case Q_TYPE_Q8_0: return "Q8_0";
    case Q_TYPE_Q2_K: return "Q2_K";
    case Q_TYPE_Q4_K: return "Q4_K";
    case Q_TYPE_Q8_K: return "Q8_K";
    case Q_TYPE_IQ2_XXS: return "IQ2_XXS";
    default: return "unknown";
    }
}

bool q_type_is_weight(int type) {
    return q_block_elems(type) != 0 && type != Q_TYPE_Q8_K;
}

/* Checks that n elements of `type` form whole blocks; `what` names the operation. */
static ds4_status check_row(int type, uint64_t n, bool weight_only, const char *what,
                            ds4_error *err) {
    size_t be = q_block_elems(type);
    if (be == 0 || (weight_only && !q_type_is_weight(type)))
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED, "quant: %s: type id %d is not supported",
                          what, type);
    if (n % be != 0)
        return ds4_seterr(err, DS4_ERR_FORMAT,
                          "quant: %s: row of %llu elements is not a multiple of the %s block "
                          "size %zu", what, (unsigned long long)n, q_type_name(type), be);
    return DS4_OK;
}

ds4_status q_row_bytes(int type, uint64_t n, uint64_t *out_bytes, ds4_error *err) {
    ds4_status st = check_row(type, n, false, "row size", err);
    if (st != DS4_OK) return st;
    if (!ds4_mul_u64(out_bytes, n / q_block_elems(type), q_block_bytes(type)))
        return ds4_seterr(err, DS4_ERR_RANGE, "quant: row size: %llu elements of %s overflow",
                          (unsigned long long)n, q_type_name(type));
    return DS4_OK;
}

/* ---- Decoders (GGUF_LAYOUT §4.2-§4.5; quants README §1) ---------------------------------- */

static void decode_q8_0(const uint8_t *b, float *y, uint64_t nb) {
    for (uint64_t i = 0; i < nb; i++, b += Q_Q8_0_BYTES, y += Q_QK8_0) {
        float d = fp_f16_to_f32(q_load_u16(b));
        for (int k = 0; k < Q_QK8_0; k++) y[k] = d * (float)(int8_t)b[2 + k];
    }
}

static void decode_q2_k(const uint8_t *b, float *y, uint64_t nb) {
    for (uint64_t i = 0; i < nb; i++, b += Q_Q2_K_BYTES, y += Q_QK_K) {
        const uint8_t *scales = b, *qs = b + 16;
        float d = fp_f16_to_f32(q_load_u16(b + 80));
        float dmin = fp_f16_to_f32(q_load_u16(b + 82));
        for (int e = 0; e < Q_QK_K; e++) {
            int q = (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
            int j = e / 16;
            /* Both products are exact (README §7.1); one rounding in the subtraction. */
            y[e] = d * (float)((scales[j] & 15) * q) - dmin * (float)(scales[j] >> 4);
        }
    }
}

static void decode_q4_k(const uint8_t *b, float *y, uint64_t nb) {
    for (uint64_t i = 0; i < nb; i++, b += Q_Q4_K_BYTES, y += Q_QK_K) {
        float d = fp_f16_to_f32(q_load_u16(b));
        float dmin = fp_f16_to_f32(q_load_u16(b + 2));
        const uint8_t *qs = b + 16;
        for (int j = 0; j < 8; j++) {
            int sc, m;
            q_q4k_scale_min(j, b + 4, &sc, &m);
            const uint8_t *q = qs + 32 * (j / 2);
            int shift = (j & 1) ? 4 : 0;
            for (int l = 0; l < 32; l++)
                y[32 * j + l] = d * (float)(sc * ((q[l] >> shift) & 15)) - dmin * (float)m;
        }
    }
}

static void decode_iq2_xxs(const uint8_t *b, float *y, uint64_t nb) {
    for (uint64_t i = 0; i < nb; i++, b += Q_IQ2_XXS_BYTES, y += Q_QK_K) {
        float d = fp_f16_to_f32(q_load_u16(b));
        for (int g = 0; g < 8; g++) {
            uint32_t A = q_load_u32(b + 2 + 8 * g), B = q_load_u32(b + 6 + 8 * g);
            float db = d * (0.5f + (float)(B >> 28)) * 0.25f;
            for (int k = 0; k < 4; k++) {
                uint64_t grid = q_iq2xxs_grid[(A >> (8 * k)) & 255u];
                uint8_t signs = q_iq2xxs_signs[(B >> (7 * k)) & 127u];
                for (int l = 0; l < 8; l++) {
                    float v = db * (float)((grid >> (8 * l)) & 255u);
                    y[32 * g + 8 * k + l] = (signs >> l) & 1 ? -v : v;
                }
            }
        }
    }
}

ds4_status q_decode_row(int type, const void *src, float *dst, uint64_t n, ds4_error *err) {
    ds4_status st = check_row(type, n, true, "decode", err);
    if (st != DS4_OK) return st;
    const uint8_t *b = src;
    switch (type) {
    case Q_TYPE_F32: memcpy(dst, src, n * sizeof(float)); break;
    case Q_TYPE_F16:
        for (uint64_t i = 0; i < n; i++) dst[i] = fp_f16_to_f32(q_load_u16(b + 2 * i));
        break;
    case Q_TYPE_BF16:
        for (uint64_t i = 0; i < n; i++) dst[i] = fp_bf16_to_f32(q_load_u16(b + 2 * i));
        break;
    case Q_TYPE_Q8_0: decode_q8_0(b, dst, n / Q_QK8_0); break;
    case Q_TYPE_Q2_K: decode_q2_k(b, dst, n / Q_QK_K); break;
    case Q_TYPE_Q4_K: decode_q4_k(b, dst, n / Q_QK_K); break;
    case Q_TYPE_IQ2_XXS: decode_iq2_xxs(b, dst, n / Q_QK_K); break;
    default: return ds4_seterr(err, DS4_ERR_INTERNAL, "quant: decode: type %d", type);
    }
    return DS4_OK;
}

/* ---- Encoders ---------------------------------------------------------------------------- */

ds4_status q_encode_row(int type, const float *src, void *dst, uint64_t n,
                        const float *importance, ds4_error *err) {
    ds4_status st = check_row(type, n, true, "encode", err);
    if (st != DS4_OK) return st;
    uint8_t *out = dst;
    switch (type) {
    case Q_TYPE_F32: memcpy(dst, src, n * sizeof(float)); break;
    case Q_TYPE_F16:
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h = fp_f32_to_f16(src[i]);
            memcpy(out + 2 * i, &h, 2);
        }
        break;
    case Q_TYPE_BF16:
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h = fp_f32_to_bf16(src[i]);
            memcpy(out + 2 * i, &h, 2);
        }
        break;
    case Q_TYPE_Q8_0: q_encode_q8_0(src, out, n); break;
    case Q_TYPE_Q2_K: q_encode_q2_k(src, out, n, importance); break;
    case Q_TYPE_Q4_K: q_encode_q4_k(src, out, n, importance); break;
    case Q_TYPE_IQ2_XXS: return q_encode_iq2_xxs(src, out, n, importance, err);
    default: return ds4_seterr(err, DS4_ERR_INTERNAL, "quant: encode: type %d", type);
    }
    return DS4_OK;
}

void q_importance_fallback(const float *rows, uint64_t n_rows, uint64_t n_cols, float *imp) {
    /* GGUF_LAYOUT §5.5: Σ_r w[r][c]², f32 from 0, rows in order. */
    for (uint64_t c = 0; c < n_cols; c++) imp[c] = 0.0f;
    for (uint64_t r = 0; r < n_rows; r++) {
        const float *x = rows + r * n_cols;
        for (uint64_t c = 0; c < n_cols; c++) imp[c] += x[c] * x[c];
    }
}

/* ---- SIMD dispatch ----------------------------------------------------------------------- */

bool q_cpu_has_avx2(void) {
#if defined(__x86_64__) || defined(__i386__)
    /* clang 14 has no "f16c" for __builtin_cpu_supports: read CPUID leaf 1 ECX bit 29. */
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 29))) return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

/* 0 = not decided yet, 1 = scalar, 2 = AVX2. */
static atomic_int g_simd_mode;

static int simd_mode(void) {
    int m = atomic_load_explicit(&g_simd_mode, memory_order_relaxed);
    if (m != 0) return m;
    const char *env = getenv("DS4_NO_SIMD");
    bool off = env && env[0] && strcmp(env, "0") != 0;
    m = (!off && q_cpu_has_avx2()) ? 2 : 1;
    atomic_store_explicit(&g_simd_mode, m, memory_order_relaxed);
    return m;
}

void q_set_simd(bool enable) {
    atomic_store_explicit(&g_simd_mode, (enable && q_cpu_has_avx2()) ? 2 : 1,
                          memory_order_relaxed);
}

bool q_simd_enabled(void) { return simd_mode() == 2; }

q_act_kind q_act_kind_for(int type) {
    switch (type) {
    case Q_TYPE_F32: case Q_TYPE_F16: case Q_TYPE_BF16: return Q_ACT_F32;
    case Q_TYPE_Q8_0: return Q_ACT_Q8_0;
    case Q_TYPE_Q2_K: case Q_TYPE_Q4_K: case Q_TYPE_IQ2_XXS: return Q_ACT_Q8_K;
    default: return Q_ACT_NONE;
    }
}

q_dot_fn q_dot_kernel(int type) {
    bool avx = simd_mode() == 2;
    switch (type) {
    case Q_TYPE_F32: return avx ? q_dot_f32_avx2 : q_dot_f32_ref;
    case Q_TYPE_F16: return avx ? q_dot_f16_avx2 : q_dot_f16_ref;
    case Q_TYPE_BF16: return avx ? q_dot_bf16_avx2 : q_dot_bf16_ref;
    case Q_TYPE_Q8_0: return avx ? q_dot_q8_0_avx2 : q_dot_q8_0_ref;
    case Q_TYPE_Q2_K: return avx ? q_dot_q2_k_avx2 : q_dot_q2_k_ref;
    case Q_TYPE_Q4_K: return avx ? q_dot_q4_k_avx2 : q_dot_q4_k_ref;
    case Q_TYPE_IQ2_XXS: return avx ? q_dot_iq2_xxs_avx2 : q_dot_iq2_xxs_ref;
    default: return NULL;
    }
}

ds4_status q_dot_row(int type, const void *w, const void *act, uint64_t n, float *out,
                     ds4_error *err) {
    ds4_status st = check_row(type, n, true, "dot", err);
    if (st != DS4_OK) return st;
    *out = q_dot_kernel(type)(w, act, n);
    return DS4_OK;
}

/* ---- Several activation rows: dispatch; types without a batched kernel loop ---- */

#define Q_ROWS_LOOP(NAME, SINGLE)                                                              \
    static void NAME(const void *w, const void *act, size_t stride, int n_act, uint64_t n,     \
                     float *out) {                                                             \
        for (int r = 0; r < n_act; r++) out[r] = SINGLE(w, (const uint8_t *)act + (size_t)r * stride, n); \
    }
Q_ROWS_LOOP(rows_f32_ref, q_dot_f32_ref)
Q_ROWS_LOOP(rows_f16_ref, q_dot_f16_ref)
Q_ROWS_LOOP(rows_bf16_ref, q_dot_bf16_ref)
Q_ROWS_LOOP(rows_q8_0_ref, q_dot_q8_0_ref)
Q_ROWS_LOOP(rows_q2_k_ref, q_dot_q2_k_ref)
Q_ROWS_LOOP(rows_q4_k_ref, q_dot_q4_k_ref)
Q_ROWS_LOOP(rows_iq2_xxs_ref, q_dot_iq2_xxs_ref)
Q_ROWS_LOOP(rows_f32_avx2, q_dot_f32_avx2)
Q_ROWS_LOOP(rows_f16_avx2, q_dot_f16_avx2)
Q_ROWS_LOOP(rows_bf16_avx2, q_dot_bf16_avx2)

q_dot_rows_fn q_dot_rows_kernel(int type) {
    bool avx = simd_mode() == 2;
    switch (type) {
    case Q_TYPE_F32: return avx ? rows_f32_avx2 : rows_f32_ref;
    case Q_TYPE_F16: return avx ? rows_f16_avx2 : rows_f16_ref;
    case Q_TYPE_BF16: return avx ? rows_bf16_avx2 : rows_bf16_ref;
    case Q_TYPE_Q8_0: return avx ? q_dot_rows_q8_0_avx2 : rows_q8_0_ref;
    case Q_TYPE_Q2_K: return avx ? q_dot_rows_q2_k_avx2 : rows_q2_k_ref;
    case Q_TYPE_Q4_K: return avx ? q_dot_rows_q4_k_avx2 : rows_q4_k_ref;
    case Q_TYPE_IQ2_XXS: return avx ? q_dot_rows_iq2_xxs_avx2 : rows_iq2_xxs_ref;
    default: return NULL;
    }
}

size_t q_act_row_bytes(int type, uint64_t n) {
    size_t be = q_block_elems(type);
    /* f32 rows are the largest kind (4 bytes per element): no product below overflows */
    if (be == 0 || !q_type_is_weight(type) || n % be != 0 || n > SIZE_MAX / sizeof(float))
        return 0;
    switch (q_act_kind_for(type)) {
    case Q_ACT_F32: return (size_t)n * sizeof(float);
    case Q_ACT_Q8_0: return (size_t)(n / Q_QK8_0) * sizeof(q8act_block);
    case Q_ACT_Q8_K: return (size_t)(n / Q_QK_K) * sizeof(q8k_block);
    default: return 0;
    }
}

ds4_status q_dot_rows(int type, const void *w, const void *act, size_t act_stride, int n_act,
                      uint64_t n, float *out, ds4_error *err) {
    ds4_status st = check_row(type, n, true, "dot rows", err);
    if (st != DS4_OK) return st;
    if (n_act < 0)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "quant: dot rows: n_act %d is negative", n_act);
    size_t arow = q_act_row_bytes(type, n);
    if (n != 0 && arow == 0)
        return ds4_seterr(err, DS4_ERR_RANGE, "quant: dot rows: %llu elements of %s overflow",
                          (unsigned long long)n, q_type_name(type));
    if (n_act > 1 && act_stride < arow)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                          "quant: dot rows: activation stride %zu is below the %s activation row "
                          "of %zu bytes", act_stride, q_type_name(type), arow);
    q_dot_rows_kernel(type)(w, act, act_stride, n_act, n, out);
    return DS4_OK;
}

ds4_status q_quantize_q8k(const float *x, q8k_block *y, uint64_t n, ds4_error *err) {
    ds4_status st = check_row(Q_TYPE_Q8_K, n, false, "quantize Q8_K", err);
    if (st != DS4_OK) return st;
    if (simd_mode() == 2) q_quantize_q8k_avx2(x, y, n);
    else q_quantize_q8k_ref(x, y, n);
    return DS4_OK;
}

ds4_status q_quantize_q8act(const float *x, q8act_block *y, uint64_t n, ds4_error *err) {
    if (n % Q_QK8_0 != 0)
        return ds4_seterr(err, DS4_ERR_FORMAT,
                          "quant: quantize Q8_0 activation: %llu elements is not a multiple "
                          "of %d", (unsigned long long)n, Q_QK8_0);
    if (simd_mode() == 2) q_quantize_q8act_avx2(x, y, n);
    else q_quantize_q8act_ref(x, y, n);
    return DS4_OK;
}
