/*
 * format/quant_encode.c — the converter's quantizers for Q8_0, Q2_K and Q4_K (GGUF_LAYOUT
 * §4.2-§4.4, §5.6) and the scale searches they share with IQ2_XXS (quant_iq2.c).
 *
 * Byte compatibility with ds4's converter (ds4 gguf-tools/quants.c, itself GGML's search
 * procedures) is the goal, so every f32 expression below keeps the operand order and the
 * strict/non-strict comparisons of that search: the encoders are float searches, and one
 * rounding difference changes the chosen codes (quants README §8). The Makefile builds
 * without contraction, which this relies on. Encoders assume finite input; non-finite
 * values give unspecified (but in-range) codes.
 *
 * Must not allocate, keep state, or know about tensors.
 */
#include <math.h>
#include <string.h>

#include "format/fp8.h"
#include "format/quant_impl.h"

#define GROUP_MAX_EPS 1e-15f

static int imin(int a, int b) { return a < b ? a : b; }
static int iclamp(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* qkx2 / qkx3 (GGUF_LAYOUT §5.6): asymmetric scale + min search over nstep+1 candidate inverse
 * scales, weighted least squares per candidate, lowest weighted error (|d| or d²) kept.
 * `strict_equal_exit` selects qkx2's `max == min` early exit versus qkx3's `max <= min`
 * (identical for finite input, kept for fidelity). Returns the scale; *neg_min = -min. */
static float search_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *L,
                              float *neg_min, uint8_t *Laux, float rmin, float rdelta,
                              int nstep, bool use_mad, bool qkx2) {
    float min = x[0], max = x[0];
    float sum_w = w[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (qkx2 ? max == min : max <= min) {
        memset(L, 0, (size_t)n);
        *neg_min = -min;
        return 0.0f;
    }
    float iscale = (float)nmax / (max - min);
    float scale = 1 / iscale;
    float best_err = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)iclamp(q_nearest_int(iscale * (x[i] - min)), 0, nmax);
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_err += w[i] * diff;
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = iclamp(q_nearest_int(iscale * (x[i] - min)), 0, nmax);
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * (float)l;
            sum_l2 += w[i] * (float)l * (float)l;
            sum_xl += w[i] * (float)l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (!(D > 0)) continue;
        float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
        float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        if (this_min > 0) {
            this_min = 0;
            this_scale = sum_xl / sum_l2;
        }
        float err = 0;
        for (int i = 0; i < n; i++) {
            float diff = this_scale * Laux[i] + this_min - x[i];
            diff = use_mad ? fabsf(diff) : diff * diff;
            err += w[i] * diff;
        }
        if (err < best_err) {
            memcpy(L, Laux, (size_t)n);
            best_err = err;
            scale = this_scale;
            min = this_min;
        }
    }
    *neg_min = -min;
    return scale;
}

float q_make_qp_quants(int n, int nmax, const float *x, uint8_t *L, const float *w) {
    /* qp (GGUF_LAYOUT §5.6): symmetric levels 0..nmax for non-negative x. */
    float max = 0;
    for (int i = 0; i < n; i++) max = max > x[i] ? max : x[i];
    if (max < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = (float)nmax / max;
    for (int i = 0; i < n; i++) L[i] = (uint8_t)q_nearest_int(iscale * x[i]);
    float scale = 1 / iscale;
    float best_mse = 0;
    for (int i = 0; i < n; i++) {
        float diff = x[i] - scale * L[i];
        best_mse += w[i] * diff * diff;
    }
    for (int is = -4; is <= 4; is++) {
        if (is == 0) continue;
        float iscale_is = (0.1f * (float)is + (float)nmax) / max;
        float scale_is = 1 / iscale_is;
        float mse = 0;
        for (int i = 0; i < n; i++) {
            int l = imin(nmax, q_nearest_int(iscale_is * x[i]));
            float diff = x[i] - scale_is * (float)l;
            mse += w[i] * diff * diff;
        }
        if (mse < best_mse) {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = imin(nmax, q_nearest_int(iscale * x[i]));
        L[i] = (uint8_t)l;
        sumlx += w[i] * x[i] * (float)l;
        suml2 += w[i] * (float)l * (float)l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int n_changed = 0;
        for (int i = 0; i < n; i++) {
            float slx = sumlx - w[i] * x[i] * L[i];
            float sl2 = suml2 - w[i] * L[i] * L[i];
            if (!(slx > 0 && sl2 > 0)) continue;
            int new_l = imin(nmax, q_nearest_int(x[i] * sl2 / slx));
            if (new_l == L[i]) continue;
            slx += w[i] * x[i] * (float)new_l;
            sl2 += w[i] * (float)new_l * (float)new_l;
            if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                L[i] = (uint8_t)new_l;
                sumlx = slx;
                suml2 = sl2;
                n_changed++;
            }
        }
        if (!n_changed) break;
    }
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

static void store_f16(uint8_t *p, uint16_t h) {
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

/* ---- Q8_0 (GGUF_LAYOUT §4.2): round half away from zero with the unrounded f32 d. ---- */

void q_encode_q8_0(const float *x, uint8_t *dst, uint64_t n) {
    for (uint64_t b = 0; b < n / Q_QK8_0; b++, x += Q_QK8_0, dst += Q_Q8_0_BYTES) {
        float id;
        float d = q_q8_0_scale(x, &id);
        store_f16(dst, fp_f32_to_f16(d));
        for (int j = 0; j < Q_QK8_0; j++) {
            /* |x·id| <= 127 for finite rows; the guard only keeps inf/NaN input defined. */
            float r = roundf(x[j] * id);
            int8_t q = r >= -128.0f && r <= 127.0f ? (int8_t)r : (r > 0 ? 127 : r < 0 ? -128 : 0);
            dst[2 + j] = (uint8_t)q;
        }
    }
}

/* ---- Q2_K (GGUF_LAYOUT §4.3, §5.6) ---- */

/* Final 2-bit codes from the stored (f16) d/dmin and 4-bit scales; a sub-block whose scale
 * is 0 keeps the codes of the search (as ds4 does). Then packs qs. */
static void q2k_final_codes(const float *x, uint8_t *blk, uint8_t *L, float d, float dmin) {
    const uint8_t *sc = blk;
    for (int j = 0; j < 16; j++) {
        float dd = d * (float)(sc[j] & 15);
        if (dd == 0.0f) continue;
        float dm = dmin * (float)(sc[j] >> 4);
        for (int i = 0; i < 16; i++)
            L[16 * j + i] = (uint8_t)iclamp(q_nearest_int((x[16 * j + i] + dm) / dd), 0, 3);
    }
    uint8_t *qs = blk + 16;
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            const uint8_t *p = L + 128 * h + l;
            qs[32 * h + l] = (uint8_t)(p[0] | (p[32] << 2) | (p[64] << 4) | (p[96] << 6));
        }
}

static void q2k_block_ref(const float *x, uint8_t *blk) {
    uint8_t L[Q_QK_K], Laux[16];
    float w[16], mins[16], scales[16];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; j++) {
        for (int i = 0; i < 16; i++) w[i] = fabsf(x[16 * j + i]);
        scales[j] = search_scale_min(16, 3, x + 16 * j, w, L + 16 * j, &mins[j], Laux,
                                     -0.5f, 0.1f, 15, true, true);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    uint8_t *sc = blk;
    uint16_t hd = 0, hmin = 0;
    memset(sc, 0, 16);
    if (max_scale > 0) {
        float iscale = 15.0f / max_scale;
        for (int j = 0; j < 16; j++) sc[j] = (uint8_t)q_nearest_int(iscale * scales[j]);
        hd = fp_f32_to_f16(max_scale / 15.0f);
    }
    if (max_min > 0) {
        float iscale = 15.0f / max_min;
        for (int j = 0; j < 16; j++) sc[j] |= (uint8_t)((unsigned)q_nearest_int(iscale * mins[j]) << 4);
        hmin = fp_f32_to_f16(max_min / 15.0f);
    }
    store_f16(blk + 80, hd);
    store_f16(blk + 82, hmin);
    q2k_final_codes(x, blk, L, fp_f16_to_f32(hd), fp_f16_to_f32(hmin));
}

static void q2k_block_weighted(const float *x, uint8_t *blk, const float *imp) {
    uint8_t L[Q_QK_K], Laux[16], Ls[16], Lm[16];
    float w[16], mins[16], scales[16], sw[16];
    float sumx2 = 0;
    for (int i = 0; i < Q_QK_K; i++) sumx2 += x[i] * x[i];
    float sigma2 = sumx2 / (float)Q_QK_K;
    for (int j = 0; j < 16; j++) {
        for (int i = 0; i < 16; i++)
            w[i] = imp[16 * j + i] * sqrtf(sigma2 + x[16 * j + i] * x[16 * j + i]);
        sw[j] = 0;
        for (int i = 0; i < 16; i++) sw[j] += w[i];
        scales[j] = search_scale_min(16, 3, x + 16 * j, w, L + 16 * j, &mins[j], Laux,
                                     -0.9f, 0.05f, 36, false, false);
    }
    float dm = q_make_qp_quants(16, 15, scales, Ls, sw);
    float mm = q_make_qp_quants(16, 15, mins, Lm, sw);
    uint16_t hd = fp_f32_to_f16(dm), hmin = fp_f32_to_f16(mm);
    store_f16(blk + 80, hd);
    store_f16(blk + 82, hmin);
    for (int j = 0; j < 16; j++) blk[j] = (uint8_t)(Ls[j] | (Lm[j] << 4));
    q2k_final_codes(x, blk, L, fp_f16_to_f32(hd), fp_f16_to_f32(hmin));
}

void q_encode_q2_k(const float *x, uint8_t *dst, uint64_t n, const float *imp) {
    for (uint64_t b = 0; b < n / Q_QK_K; b++) {
        if (imp) q2k_block_weighted(x + Q_QK_K * b, dst + Q_Q2_K_BYTES * b, imp + Q_QK_K * b);
        else q2k_block_ref(x + Q_QK_K * b, dst + Q_Q2_K_BYTES * b);
    }
}

/* ---- Q4_K (GGUF_LAYOUT §4.4, §5.6) ---- */

/* Packs eight 6-bit scales/mins (GGUF_LAYOUT §4.4), final 4-bit codes, qs. */
static void q4k_finish(const float *x, uint8_t *blk, uint8_t *L, const uint8_t *ls,
                       const uint8_t *lm, uint16_t hd, uint16_t hmin) {
    uint8_t *s = blk + 4;
    for (int j = 0; j < 4; j++) {
        s[j] = ls[j];
        s[j + 4] = lm[j];
    }
    for (int j = 4; j < 8; j++) {
        s[j + 4] = (uint8_t)((ls[j] & 15) | ((lm[j] & 15) << 4));
        s[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
        s[j] |= (uint8_t)((lm[j] >> 4) << 6);
    }
    store_f16(blk, hd);
    store_f16(blk + 2, hmin);
    float d = fp_f16_to_f32(hd), dmin = fp_f16_to_f32(hmin);
    for (int j = 0; j < 8; j++) {
        int sc, m;
        q_q4k_scale_min(j, s, &sc, &m);
        float dd = d * (float)sc;
        if (dd == 0.0f) continue;
        float dm = dmin * (float)m;
        for (int i = 0; i < 32; i++)
            L[32 * j + i] = (uint8_t)iclamp(q_nearest_int((x[32 * j + i] + dm) / dd), 0, 15);
    }
    uint8_t *qs = blk + 16;
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++)
            qs[32 * c + l] = (uint8_t)(L[64 * c + l] | (L[64 * c + l + 32] << 4));
}

static void q4k_block_ref(const float *x, uint8_t *blk) {
    uint8_t L[Q_QK_K], Laux[32], ls[8], lm[8];
    float w[32], mins[8], scales[8];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        float sum_x2 = 0;
        for (int i = 0; i < 32; i++) sum_x2 += x[32 * j + i] * x[32 * j + i];
        float av_x = sqrtf(sum_x2 / 32);
        for (int i = 0; i < 32; i++) w[i] = av_x + fabsf(x[32 * j + i]);
        scales[j] = search_scale_min(32, 15, x + 32 * j, w, L + 32 * j, &mins[j], Laux,
                                     -1.0f, 0.1f, 20, false, true);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
    float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
    for (int j = 0; j < 8; j++) {
        /* ds4 stores nearest_int in a uint8_t before clamping to 63. */
        ls[j] = (uint8_t)q_nearest_int(inv_scale * scales[j]);
        lm[j] = (uint8_t)q_nearest_int(inv_min * mins[j]);
        if (ls[j] > 63) ls[j] = 63;
        if (lm[j] > 63) lm[j] = 63;
    }
    q4k_finish(x, blk, L, ls, lm, fp_f32_to_f16(max_scale / 63.0f),
               fp_f32_to_f16(max_min / 63.0f));
}

static void q4k_block_weighted(const float *x, uint8_t *blk, const float *imp) {
    uint8_t L[Q_QK_K], Laux[32], ls[8], lm[8];
    float w[32], mins[8], scales[8], sw[8];
    float sum_x2 = 0;
    for (int i = 0; i < Q_QK_K; i++) sum_x2 += x[i] * x[i];
    float sigma2 = 2 * sum_x2 / (float)Q_QK_K;
    for (int j = 0; j < 8; j++) {
        for (int i = 0; i < 32; i++)
            w[i] = imp[32 * j + i] * sqrtf(sigma2 + x[32 * j + i] * x[32 * j + i]);
        float sumw = 0;
        for (int i = 0; i < 32; i++) sumw += w[i];
        sw[j] = sumw;
        scales[j] = search_scale_min(32, 15, x + 32 * j, w, L + 32 * j, &mins[j], Laux,
                                     -0.9f, 0.05f, 36, false, false);
    }
    float d_block = q_make_qp_quants(8, 63, scales, ls, sw);
    float m_block = q_make_qp_quants(8, 63, mins, lm, sw);
    q4k_finish(x, blk, L, ls, lm, fp_f32_to_f16(d_block), fp_f32_to_f16(m_block));
}

void q_encode_q4_k(const float *x, uint8_t *dst, uint64_t n, const float *imp) {
    for (uint64_t b = 0; b < n / Q_QK_K; b++) {
        if (imp) q4k_block_weighted(x + Q_QK_K * b, dst + Q_Q4_K_BYTES * b, imp + Q_QK_K * b);
        else q4k_block_ref(x + Q_QK_K * b, dst + Q_Q4_K_BYTES * b);
    }
}
