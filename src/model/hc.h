/*
 * model/hc.h — hyper-connections (MODEL_MATH §4): the split of the 24 (generally (2+hc)·hc)
 * mixes into pre / post / Sinkhorn-normalised combination weights, the weighted stream sum
 * (hc_pre), the stream update (hc_post) and the final collapse (hc_head).
 *
 * Owns only the per-token HC arithmetic on f32 rows. Must not: touch weights by name,
 * allocate, or know the layer structure.
 */
#ifndef DS4_MODEL_HC_H
#define DS4_MODEL_HC_H

#include <stdint.h>

/* MODEL_MATH §4.1-4.2: from the raw mixes m[(2+hc)*hc] (already ρ·(fn·v)), scale[3] and
 * base[(2+hc)*hc] computes pre[hc], post[hc] and comb[hc*hc] (row-major, comb[j*hc+k]). */
void hc_split(const float *m, const float *scale, const float *base, int hc, int iters,
              float eps, float *pre, float *post, float *comb);

/* ρ = 1/sqrt(mean(v^2) + eps) over the flattened state v[n] (MODEL_MATH §4.1). */
float hc_rho(const float *v, int64_t n, float eps);

/* a[d] = Σ_k pre[k]·X[k][·] (MODEL_MATH §4.1 last line, §4.4). */
void hc_weighted_sum(const float *X, const float *pre, int hc, int64_t d, float *a);

/* MODEL_MATH §4.3: Xout[k] = post[k]·f + Σ_j comb[j][k]·X[j]. Xout must not alias X. */
void hc_post(const float *f, const float *X, const float *post, const float *comb, int hc,
             int64_t d, float *Xout);

/* MODEL_MATH §4.4: pre[k] = σ(m[k]·scale0 + base[k]) + eps (no Sinkhorn, no post). */
void hc_head_weights(const float *m, float scale0, const float *base, int hc, float eps,
                     float *pre);

#endif
