/*
 * model/mtp.c — the MTP (multi-token prediction) block (MODEL_MATH §11): combines a main-model
 * final HC state with a token embedding, runs one window-only block with its own weights and
 * window KV, and produces draft logits through its own hc_head and norm and the shared head.
 *
 * The alignment (which hidden state goes with which token and position) is the caller's
 * choice (MODEL_MATH §17 #1); this module only evaluates what it is given.
 */
#include <string.h>

#include "core/error.h"
#include "cpu/ops.h"
#include "model/forward.h"

ds4_status model_eval_mtp(model *m, model_state *s, const float *hc_in, const int32_t *tokens,
                          int64_t n, float *logits, float *hc_out, ds4_error *err) {
    if (!m || !s || s->m != m)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "model_eval_mtp: state does not belong to this model");
    if (!m->w.has_mtp || !s->kv.mtp.raw)
        return ds4_seterr(err, DS4_ERR_STATE, "model_eval_mtp: the model has no MTP block");
    if (n <= 0) return DS4_OK;
    if (!hc_in || !tokens)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "model_eval_mtp: NULL input");
    const model_hparams *hp = &m->hp;
    for (int64_t t = 0; t < n; t++)
        if (tokens[t] < 0 || tokens[t] >= hp->n_vocab)
            return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                              "model_eval_mtp: token %lld is %d, vocabulary is 0..%lld",
                              (long long)t, tokens[t], (long long)hp->n_vocab - 1);
    const layer_weights *L = &m->w.mtp;
    int64_t D = hp->n_embd, hc = hp->n_hc, ub = m->ubatch;
    fwd_ws *ws = &s->ws;
    ds4_status st = fwd_ws_reserve(ws, m, n < ub ? n : ub, s->kv.n_ctx, err);
    if (st) return st;
    for (int64_t done = 0; done < n; done += ub) {
        int64_t c = n - done < ub ? n - done : ub;
        /* MODEL_MATH §11: e = RMSNorm_enorm(embed[u]); X0[k] = e_proj·e + h_proj·RMSNorm_hnorm(H[k]). */
        for (int64_t t = 0; t < c; t++) {
            float *e = ws->tmp + t * D;
            if ((st = cpu_mat_row_f32(&m->w.tok_embd, tokens[done + t], e, err))) return st;
            cpu_rmsnorm(e, e, L->enorm, D, hp->norm_eps);
            for (int64_t k = 0; k < hc; k++)
                cpu_rmsnorm(ws->X2 + (t * hc + k) * D, hc_in + ((done + t) * hc + k) * D,
                            L->hnorm, D, hp->norm_eps);
        }
        if ((st = cpu_matmul(m->pool, &L->e_proj, ws->tmp, D, c, ws->f, D, &ws->act, err))) return st;
        if ((st = cpu_matmul(m->pool, &L->h_proj, ws->X2, D, c * hc, ws->X, D, &ws->act, err)))
            return st;
        for (int64_t t = 0; t < c; t++)
            for (int64_t k = 0; k < hc; k++) {
                float *x = ws->X + (t * hc + k) * D;
                for (int64_t i = 0; i < D; i++) x[i] = ws->f[t * D + i] + x[i];
            }
        int64_t pos0 = s->kv.mtp_pos;
        if ((st = fwd_block(m, L, hp->n_layer, &s->kv.mtp, tokens + done, pos0, c, ws, NULL, err)))
            return st;
        s->kv.mtp_pos = pos0 + c;
        if (hc_out) memcpy(hc_out + done * hc * D, ws->X, (size_t)(c * hc * D) * sizeof(float));
        if (logits &&
            (st = fwd_output(m, &L->hc_head_fn, L->hc_head_scale, L->hc_head_base, L->out_norm, c,
                             false, logits + done * hp->n_vocab, ws, err)))
            return st;
    }
    return DS4_OK;
}

int64_t model_state_mtp_pos(const model_state *st) { return st->kv.mtp_pos; }
void model_state_mtp_reset(model_state *st) { kv_reset_mtp(&st->kv); }
