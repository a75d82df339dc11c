/*
 * model/moe.c — the MoE sub-layer (MODEL_MATH §9): sqrt-softplus router, hash routing
 * (tid2eid) or biased top-k selection, normalised and scaled routing weights, clamped SwiGLU
 * experts and the shared expert.
 *
 * Batching: tokens of a chunk are grouped by expert so each expert's weights are read once per
 * chunk; each token's routed outputs are summed in ascending expert order, then the shared
 * expert is added, so chunking does not change any sum.
 */
#include <math.h>
#include <string.h>

#include "core/error.h"
#include "cpu/ops.h"
#include "model/forward.h"


/* MODEL_MATH §9.4: g = min(g, c); v = clamp(v, -c, c); h = silu(g)·v·w. */
static void swiglu(float *g, const float *u, int64_t n, float clamp, float w) {
    for (int64_t i = 0; i < n; i++) {
        float gv = g[i] > clamp ? clamp : g[i];
        float uv = u[i] > clamp ? clamp : (u[i] < -clamp ? -clamp : u[i]);
        g[i] = cpu_silu(gv) * uv * w;
    }
}

/* One SwiGLU MLP over m gathered rows: xg [m][D] -> y [m][D], weights per row (or NULL = 1). */
static ds4_status mlp(model *m, const cpu_mat *wg, const cpu_mat *wu, const cpu_mat *wd,
                      const float *xg, int64_t mrows, const float *rw, float clamp, float *gbuf,
                      float *ubuf, float *y, fwd_ws *ws, ds4_error *err) {
    int64_t D = m->hp.n_embd, F = m->hp.n_ff_exp;
    ds4_status st;
    if ((st = cpu_matmul(m->pool, wg, xg, D, mrows, gbuf, F, &ws->act, err))) return st;
    if ((st = cpu_matmul(m->pool, wu, xg, D, mrows, ubuf, F, &ws->act, err))) return st;
    for (int64_t r = 0; r < mrows; r++)
        swiglu(gbuf + r * F, ubuf + r * F, F, clamp, rw ? rw[r] : 1.0f);
    return cpu_matmul(m->pool, wd, gbuf, F, mrows, y, D, &ws->act, err);
}

ds4_status moe_forward(model *m, const layer_weights *L, int64_t il, const int32_t *tokens,
                       int64_t pos0, int64_t n, fwd_ws *ws, const model_capture *cap,
                       ds4_error *err) {
    const model_hparams *hp = &m->hp;
    int64_t D = hp->n_embd, E = hp->n_expert, K = hp->n_expert_used, F = hp->n_ff_exp;
    ds4_status st;
    /* §9.1: router probabilities (f32). */
    if ((st = cpu_matmul(m->pool, &L->gate_inp, ws->a, D, n, ws->rl, E, &ws->act, err))) return st;
    for (int64_t t = 0; t < n; t++) {
        float *p = ws->rl + t * E;
        for (int64_t e = 0; e < E; e++) p[e] = sqrtf(cpu_softplus(p[e]));
        int32_t *sel = ws->sel + t * K;
        if (L->tid2eid) {
            /* §9.2 hash layers: the token's fixed expert list. */
            memcpy(sel, L->tid2eid + (int64_t)tokens[t] * K, (size_t)K * sizeof(int32_t));
        } else {
            /* §9.2: top-k of p + bias; ties to the lower expert id. */
            for (int64_t k = 0; k < K; k++) {
                int32_t best = -1;
                float bv = -INFINITY;
                for (int64_t e = 0; e < E; e++) {
                    bool used = false;
                    for (int64_t j = 0; j < k; j++) used |= sel[j] == e;
                    if (used) continue;
                    float v = p[e] + L->exp_bias[e];
                    if (best < 0 || v > bv) { best = (int32_t)e; bv = v; }
                }
                sel[k] = best;
            }
        }
        /* Ascending ids: the summation order below, and what capture reports. */
        for (int64_t a = 1; a < K; a++)
            for (int64_t b = a; b > 0 && sel[b - 1] > sel[b]; b--) {
                int32_t x = sel[b]; sel[b] = sel[b - 1]; sel[b - 1] = x;
            }
        /* §9.3: weights from the unbiased scores. */
        float sum = 0.0f;
        for (int64_t k = 0; k < K; k++) sum += p[sel[k]];
        for (int64_t k = 0; k < K; k++)
            ws->selw[t * K + k] = hp->expert_weights_norm ? p[sel[k]] / sum * hp->route_scale
                                                          : p[sel[k]] * hp->route_scale;
        if (cap && cap->experts) cap->experts(cap->user, il, pos0 + t, sel, (int)K);
    }
    /* Scratch: gathered rows, gate, up, down outputs, row map. */
    size_t need = (size_t)(n * (2 * D + 2 * F + 2)) * sizeof(float);
    if ((st = cpu_buf_reserve(&ws->moe, need, err))) return st;
    float *xg = ws->moe.p, *gb = xg + n * D, *ub = gb + n * F, *yb = ub + n * F;
    float *rw = yb + n * D;
    int32_t *rows = (int32_t *)(rw + n);
    memset(ws->f, 0, (size_t)(n * D) * sizeof(float));
    float clamp = hp->swiglu_clamp[il];
    for (int64_t e = 0; e < E; e++) {
        int64_t mr = 0;
        for (int64_t t = 0; t < n; t++)
            for (int64_t k = 0; k < K; k++)
                if (ws->sel[t * K + k] == e) {
                    rows[mr] = (int32_t)t;
                    rw[mr] = ws->selw[t * K + k];
                    memcpy(xg + mr * D, ws->a + t * D, (size_t)D * sizeof(float));
                    mr++;
                }
        if (!mr) continue;
        cpu_mat wg = experts_get(&L->gate_exps, e), wu = experts_get(&L->up_exps, e);
        cpu_mat wd = experts_get(&L->down_exps, e);
        if ((st = mlp(m, &wg, &wu, &wd, xg, mr, rw, clamp, gb, ub, yb, ws, err))) return st;
        for (int64_t r = 0; r < mr; r++) {
            float *f = ws->f + (int64_t)rows[r] * D;
            for (int64_t i = 0; i < D; i++) f[i] += yb[r * D + i];
        }
    }
    /* §9.5: + shared expert (clamped too, §16 #9). */
    if (L->has_shared) {
        if ((st = mlp(m, &L->sh_gate, &L->sh_up, &L->sh_down, ws->a, n, NULL,
                      hp->swiglu_clamp_shared[il], gb, ub, yb, ws, err)))
            return st;
        for (int64_t i = 0; i < n * D; i++) ws->f[i] += yb[i];
    }
    return DS4_OK;
}
