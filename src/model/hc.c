/*
 * model/hc.c — hyper-connection arithmetic (MODEL_MATH §4). All f32, per token.
 */
#include "model/hc.h"

#include <math.h>

#include "cpu/ops.h"
#include "cpu/refmath.h"

void hc_split(const float *m, const float *scale, const float *base, int hc, int iters,
              float eps, float *pre, float *post, float *comb) {
    /* MODEL_MATH §4.1: pre = σ(·)+eps, post = 2σ(·), comb from the last hc² mixes. */
    for (int k = 0; k < hc; k++) {
        pre[k] = cpu_sigmoid(m[k] * scale[0] + base[k]) + eps;
        post[k] = 2.0f * cpu_sigmoid(m[hc + k] * scale[1] + base[hc + k]);
    }
    for (int j = 0; j < hc; j++)
        for (int k = 0; k < hc; k++)
            comb[j * hc + k] = m[2 * hc + j * hc + k] * scale[2] + base[2 * hc + j * hc + k];
    /* MODEL_MATH §4.2 step 1: row softmax + eps. */
    for (int j = 0; j < hc; j++) {
        float *row = comb + j * hc;
        float mx = row[0];
        for (int k = 1; k < hc; k++) if (row[k] > mx) mx = row[k];
        float s = 0.0f;
        for (int k = 0; k < hc; k++) { row[k] = ref_expf(row[k] - mx); s += row[k]; }
        for (int k = 0; k < hc; k++) row[k] = row[k] / s + eps;
    }
    /* Step 2: column normalise; step 3: iters-1 (row, column) rounds. */
    for (int it = 0; it < iters; it++) {
        if (it > 0) {
            for (int j = 0; j < hc; j++) {
                float s = 0.0f;
                for (int k = 0; k < hc; k++) s += comb[j * hc + k];
                for (int k = 0; k < hc; k++) comb[j * hc + k] /= (s + eps);
            }
        }
        for (int k = 0; k < hc; k++) {
            float s = 0.0f;
            for (int j = 0; j < hc; j++) s += comb[j * hc + k];
            for (int j = 0; j < hc; j++) comb[j * hc + k] /= (s + eps);
        }
    }
}

float hc_rho(const float *v, int64_t n, float eps) {
    ref_dsum ss = {0.0, 0.0}; /* cpu_rmsnorm's sum: order-free, the GPU's bits (refmath.h) */
    for (int64_t i = 0; i < n; i++) ref_dsum_add(&ss, (double)v[i] * (double)v[i]);
    return ref_rms_inv(ref_dsum_value(ss), n, eps);
}

void hc_weighted_sum(const float *X, const float *pre, int hc, int64_t d, float *a) {
    for (int64_t i = 0; i < d; i++) {
        float s = 0.0f;
        for (int k = 0; k < hc; k++) s += pre[k] * X[(int64_t)k * d + i];
        a[i] = s;
    }
}

void hc_post(const float *f, const float *X, const float *post, const float *comb, int hc,
             int64_t d, float *Xout) {
    for (int k = 0; k < hc; k++) {
        float *o = Xout + (int64_t)k * d;
        for (int64_t i = 0; i < d; i++) {
            float s = post[k] * f[i];
            for (int j = 0; j < hc; j++) s += comb[j * hc + k] * X[(int64_t)j * d + i];
            o[i] = s;
        }
    }
}

void hc_head_weights(const float *m, float scale0, const float *base, int hc, float eps,
                     float *pre) {
    for (int k = 0; k < hc; k++) pre[k] = cpu_sigmoid(m[k] * scale0 + base[k]) + eps;
}
