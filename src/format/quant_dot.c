/*
 * format/quant_dot.c — scalar reference dot products and activation quantizers. These define
 * the results: quant_avx2.c must reproduce them bit for bit. The quantized dots follow the
 * evaluation order of quants README §4.2 (ds4's portable routines): exact integer sums per
 * block, then the f32 steps in the stated order, the block values summed in block order from
 * +0.0f. Must not allocate or touch global state.
 */
#include <math.h>
#include <string.h>

#include "format/fp8.h"
#include "format/quant_impl.h"

/* ---- F32 / F16 / BF16 rows with an f32 vector ---------------------------------------------
 * Fixed order shared with the AVX2 path (quant.h): lane i%8 accumulates w·x (no FMA), then
 * ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)). */

static float combine_lanes(const float l[8]) {
    return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

float q_dot_f32_ref(const void *w, const void *x, uint64_t n) {
    const float *a = w, *b = x;
    float l[8] = {0};
    for (uint64_t i = 0; i < n; i++) l[i % 8] += a[i] * b[i];
    return combine_lanes(l);
}

float q_dot_f16_ref(const void *w, const void *x, uint64_t n) {
    const uint8_t *a = w;
    const float *b = x;
    float l[8] = {0};
    for (uint64_t i = 0; i < n; i++) l[i % 8] += fp_f16_to_f32(q_load_u16(a + 2 * i)) * b[i];
    return combine_lanes(l);
}

float q_dot_bf16_ref(const void *w, const void *x, uint64_t n) {
    const uint8_t *a = w;
    const float *b = x;
    float l[8] = {0};
    for (uint64_t i = 0; i < n; i++) l[i % 8] += fp_bf16_to_f32(q_load_u16(a + 2 * i)) * b[i];
    return combine_lanes(l);
}

/* ---- Quantized rows ---------------------------------------------------------------------- */

float q_dot_q8_0_ref(const void *w, const void *act, uint64_t n) {
    /* README §4.2 Q8_0 (dot_q8_0_row): acc += (f16(d_w)·d_x)·(float)Σ q_w·q_x. */
    const uint8_t *b = w;
    const q8act_block *y = act;
    float acc = 0.0f;
    for (uint64_t i = 0; i < n / Q_QK8_0; i++, b += Q_Q8_0_BYTES) {
        int32_t isum = 0;
        for (int k = 0; k < Q_QK8_0; k++) isum += (int8_t)b[2 + k] * y[i].q[k];
        acc += (fp_f16_to_f32(q_load_u16(b)) * y[i].d) * (float)isum;
    }
    return acc;
}

float q_dot_q2_k_ref(const void *w, const void *act, uint64_t n) {
    /* README §4.2 Q2_K (ds4_vec_dot_q2_K_q8_K). */
    const uint8_t *b = w;
    const q8k_block *y = act;
    float acc = 0.0f;
    for (uint64_t i = 0; i < n / Q_QK_K; i++, b += Q_Q2_K_BYTES) {
        const uint8_t *sc = b, *qs = b + 16;
        int32_t summs = 0, isum = 0;
        for (int j = 0; j < 16; j++) summs += y[i].bsums[j] * (sc[j] >> 4);
        /* Element e = 128h + 32s + l takes bits 2s of qs[32h + l]; sub-block e/16. */
        for (int h = 0; h < 2; h++)
            for (int sh = 0; sh < 4; sh++)
                for (int half = 0; half < 2; half++) {
                    const uint8_t *q = qs + 32 * h + 16 * half;
                    const int8_t *yq = y[i].q + 128 * h + 32 * sh + 16 * half;
                    int32_t s = 0;
                    for (int l = 0; l < 16; l++) s += ((q[l] >> (2 * sh)) & 3) * yq[l];
                    isum += (sc[8 * h + 2 * sh + half] & 15) * s;
                }
        float dall = y[i].d * fp_f16_to_f32(q_load_u16(b + 80));
        float dmin = y[i].d * fp_f16_to_f32(q_load_u16(b + 82));
        acc += dall * (float)isum - dmin * (float)summs;
    }
    return acc;
}

float q_dot_q4_k_ref(const void *w, const void *act, uint64_t n) {
    /* README §4.2 Q4_K (dev_dot_q4_K_q8_K_block). */
    const uint8_t *b = w;
    const q8k_block *y = act;
    float acc = 0.0f;
    for (uint64_t i = 0; i < n / Q_QK_K; i++, b += Q_Q4_K_BYTES) {
        const uint8_t *qs = b + 16;
        int32_t isum = 0, summs = 0;
        for (int j = 0; j < 8; j++) {
            int sc, m;
            q_q4k_scale_min(j, b + 4, &sc, &m);
            const uint8_t *q = qs + 32 * (j / 2);
            int shift = (j & 1) ? 4 : 0;
            int32_t s = 0;
            for (int l = 0; l < 32; l++) s += ((q[l] >> shift) & 15) * y[i].q[32 * j + l];
            isum += sc * s;
            summs += m * (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]);
        }
        float dall = y[i].d * fp_f16_to_f32(q_load_u16(b));
        float dmin = y[i].d * fp_f16_to_f32(q_load_u16(b + 2));
        acc += (dall * (float)isum) - (dmin * (float)summs);
    }
    return acc;
}

float q_dot_iq2_xxs_ref(const void *w, const void *act, uint64_t n) {
    /* README §4.2 IQ2_XXS (ds4_vec_dot_iq2_xxs_q8_K): ls = 2s+1, ×0.125 once at the end. */
    const uint8_t *b = w;
    const q8k_block *y = act;
    float acc = 0.0f;
    for (uint64_t i = 0; i < n / Q_QK_K; i++, b += Q_IQ2_XXS_BYTES) {
        int32_t bsum = 0;
        for (int g = 0; g < 8; g++) {
            uint32_t A = q_load_u32(b + 2 + 8 * g), B = q_load_u32(b + 6 + 8 * g);
            int32_t s = 0;
            for (int k = 0; k < 4; k++) {
                uint64_t grid = q_iq2xxs_grid[(A >> (8 * k)) & 255u];
                uint8_t signs = q_iq2xxs_signs[(B >> (7 * k)) & 127u];
                const int8_t *yq = y[i].q + 32 * g + 8 * k;
                for (int l = 0; l < 8; l++)
                    s += (int)((grid >> (8 * l)) & 255u) * yq[l] * (1 - 2 * ((signs >> l) & 1));
            }
            bsum += (int32_t)(2 * (B >> 28) + 1) * s;
        }
        acc += (fp_f16_to_f32(q_load_u16(b)) * y[i].d) * (float)bsum;
    }
    return 0.125f * acc;
}

/* ---- Activation quantizers --------------------------------------------------------------- */

static int8_t clamp_i8(long v) {
    return (int8_t)(v > 127 ? 127 : v < -128 ? -128 : v);
}

void q_quantize_q8k_ref(const float *x, q8k_block *y, uint64_t n) {
    /* README §5.1: first element of largest |x| keeps its sign; iscale = -127/max. */
    for (uint64_t b = 0; b < n / Q_QK_K; b++, x += Q_QK_K) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < Q_QK_K; j++) {
            float ax = fabsf(x[j]);
            if (ax > amax) {
                amax = ax;
                max = x[j];
            }
        }
        if (amax == 0.0f) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        float iscale = -127.0f / max;
        for (int j = 0; j < Q_QK_K; j++) y[b].q[j] = clamp_i8(lrintf(iscale * x[j]));
        for (int j = 0; j < 16; j++) {
            int sum = 0;
            for (int i = 0; i < 16; i++) sum += y[b].q[16 * j + i];
            y[b].bsums[j] = (int16_t)sum;
        }
        y[b].d = 1.0f / iscale;
    }
}

void q_quantize_q8act_ref(const float *x, q8act_block *y, uint64_t n) {
    /* README §4.4: d = amax/127 in f32 (not rounded to f16), q = clamp(lrintf(x/d)). */
    for (uint64_t b = 0; b < n / Q_QK8_0; b++, x += Q_QK8_0) {
        float id;
        y[b].d = q_q8_0_scale(x, &id);
        for (int j = 0; j < Q_QK8_0; j++) y[b].q[j] = clamp_i8(lrintf(x[j] * id));
    }
}
