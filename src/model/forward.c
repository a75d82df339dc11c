/*
 * model/forward.c — the V4 forward pass over a chunk of tokens (MODEL_MATH §2): embedding,
 * per layer hc_pre -> norm -> attention -> hc_post and hc_pre -> norm -> MoE -> hc_post,
 * then hc_head, final norm and the output head (§10). Splits long inputs into internal
 * chunks of m->ubatch tokens (bounded workspace; the result does not depend on chunking).
 *
 * Owns: the workspace and the layer loop. Must not: hold state between calls except
 * through the kv_state of the model_state.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "cpu/ops.h"
#include "model/forward.h"
#include "model/hc.h"

ds4_status fwd_ws_reserve(fwd_ws *ws, const model *m, int64_t n, int64_t n_ctx,
                          ds4_error *err) {
    const model_hparams *hp = &m->hp;
    ds4_status st;
    ws->act.exact_act = m->exact_act; /* every cpu_matmul of the pass gets `act` = &ws->act */
    /* Indexer score scratch covers every compressed row of the context (§8). */
    if ((st = cpu_buf_reserve(&ws->idx, (size_t)(n_ctx / 4 + 1) * sizeof(float), err))) return st;
    if (n <= ws->n_cap) return DS4_OK;
    int64_t D = hp->n_embd, hc = hp->n_hc, Dh = hp->head_dim, H = hp->n_head;
    int64_t nmix = (2 + hc) * hc, id = hp->idx_head_dim, ih = hp->idx_n_head;
    int64_t sizes[] = {hc * D, hc * D, D, nmix, hc, hc, hc * hc, hp->q_lora, H * Dh, H * Dh, Dh,
                       2 * Dh, 2 * Dh, 2 * id, 2 * id, ih * id, ih,
                       hp->o_groups * hp->o_lora, D, hp->n_expert, hp->n_expert_used, D};
    float **ptrs[] = {&ws->X, &ws->X2, &ws->a, &ws->mix, &ws->pre, &ws->post, &ws->comb,
                      &ws->qr, &ws->q, &ws->o, &ws->kv, &ws->cA, &ws->cB, &ws->iA, &ws->iB,
                      &ws->iq, &ws->iw, &ws->oa, &ws->f, &ws->rl, &ws->selw, &ws->tmp};
    /* int32 arrays: routed expert ids, indexer selections and their counts. */
    int64_t isizes[] = {hp->n_expert_used, hp->idx_topk, 1};
    int32_t **iptrs[] = {&ws->sel, &ws->isel, &ws->n_isel};
    size_t n_arr = sizeof sizes / sizeof sizes[0], n_iarr = sizeof isizes / sizeof isizes[0];
    size_t total = 0;
    for (size_t i = 0; i < n_arr; i++) total += ((size_t)(sizes[i] * n) + 15) & ~(size_t)15;
    for (size_t i = 0; i < n_iarr; i++) total += ((size_t)(isizes[i] * n) + 15) & ~(size_t)15;
    if ((st = cpu_buf_reserve(&ws->mem, total * 4, err))) return st;
    uint8_t *p = ws->mem.p;
    for (size_t i = 0; i < n_arr; i++) {
        *ptrs[i] = (float *)p;
        p += (((size_t)(sizes[i] * n) + 15) & ~(size_t)15) * sizeof(float);
    }
    for (size_t i = 0; i < n_iarr; i++) {
        *iptrs[i] = (int32_t *)p;
        p += (((size_t)(isizes[i] * n) + 15) & ~(size_t)15) * sizeof(int32_t);
    }
    /* Scratch the layers would otherwise grow on demand, reserved up front so that a failing
     * allocation is reported before any layer has changed the state. */
    int64_t max_in = hc * D;
    int64_t ins[] = {hp->q_lora, H * Dh, hp->n_ff_exp, hp->o_groups * hp->o_lora, D};
    for (size_t i = 0; i < sizeof ins / sizeof ins[0]; i++) if (ins[i] > max_in) max_in = ins[i];
    /* Exact mode adds one decoded f32 weight row per worker (cpu/matmul.h). */
    size_t act = (size_t)(max_in * n) * sizeof(float) * 2;
    if (m->exact_act) act += (size_t)(max_in * ds4_pool_size(m->pool)) * sizeof(float) + 64;
    if ((st = cpu_buf_reserve(&ws->act, act, err))) return st;
    size_t moe = (size_t)(n * (2 * D + 2 * hp->n_ff_exp + 2)) * sizeof(float);
    if ((st = cpu_buf_reserve(&ws->moe, moe, err))) return st;
    int64_t max_comp = 0;
    for (int64_t il = 0; il < hp->n_layer; il++) {
        int64_t r = hparams_ratio(hp, il), c = r == 4 ? hp->idx_topk : (r ? n_ctx / r : 0);
        if (c > max_comp) max_comp = c;
    }
    size_t attn = (size_t)((hp->n_window + max_comp + Dh + 16) * ds4_pool_size(m->pool)) * sizeof(float);
    if ((st = cpu_buf_reserve(&ws->attn, attn, err))) return st;
    ws->n_cap = n;
    return DS4_OK;
}

void fwd_ws_free(fwd_ws *ws) {
    cpu_buf_free(&ws->mem);
    cpu_buf_free(&ws->act);
    cpu_buf_free(&ws->moe);
    cpu_buf_free(&ws->attn);
    cpu_buf_free(&ws->idx);
    memset(ws, 0, sizeof *ws);
}

ds4_status fwd_hc_pre(model *m, const cpu_mat *fn, const float *scale, const float *base,
                      const float *norm, int64_t n, fwd_ws *ws, ds4_error *err) {
    const model_hparams *hp = &m->hp;
    int64_t D = hp->n_embd, hc = hp->n_hc, nmix = (2 + hc) * hc;
    /* MODEL_MATH §4.1: m = ρ·(fn·v). */
    ds4_status st = cpu_matmul(m->pool, fn, ws->X, hc * D, n, ws->mix, nmix, &ws->act, err);
    if (st) return st;
    for (int64_t t = 0; t < n; t++) {
        const float *X = ws->X + t * hc * D;
        float rho = hc_rho(X, hc * D, hp->norm_eps);
        float *mx = ws->mix + t * nmix;
        for (int64_t i = 0; i < nmix; i++) mx[i] *= rho;
        hc_split(mx, scale, base, (int)hc, (int)hp->sinkhorn_iters, hp->hc_eps,
                 ws->pre + t * hc, ws->post + t * hc, ws->comb + t * hc * hc);
        float *a = ws->a + t * D;
        hc_weighted_sum(X, ws->pre + t * hc, (int)hc, D, a);
        cpu_rmsnorm(a, a, norm, D, hp->norm_eps);
    }
    return DS4_OK;
}

void fwd_hc_post(model *m, int64_t n, fwd_ws *ws) {
    int64_t D = m->hp.n_embd, hc = m->hp.n_hc;
    for (int64_t t = 0; t < n; t++)
        hc_post(ws->f + t * D, ws->X + t * hc * D, ws->post + t * hc, ws->comb + t * hc * hc,
                (int)hc, D, ws->X2 + t * hc * D);
    float *x = ws->X;
    ws->X = ws->X2;
    ws->X2 = x;
}

ds4_status fwd_block(model *m, const layer_weights *L, int64_t il, kv_layer *kvl,
                     const int32_t *tokens, int64_t pos0, int64_t n, fwd_ws *ws,
                     const model_capture *cap, ds4_error *err) {
    int64_t D = m->hp.n_embd, hcD = m->hp.n_hc * D;
    ds4_status st;
    if ((st = fwd_hc_pre(m, &L->hc_attn_fn, L->hc_attn_scale, L->hc_attn_base, L->attn_norm, n,
                         ws, err)))
        return st;
    if ((st = attn_forward(m, L, il, kvl, pos0, n, ws, cap, err))) return st;
    fwd_hc_post(m, n, ws);
    if (cap && cap->layer) {
        cap->layer(cap->user, il, "attn_out", pos0, n, ws->f, D);
        cap->layer(cap->user, il, "h_attn", pos0, n, ws->X, hcD);
    }
    if ((st = fwd_hc_pre(m, &L->hc_ffn_fn, L->hc_ffn_scale, L->hc_ffn_base, L->ffn_norm, n, ws,
                         err)))
        return st;
    if ((st = moe_forward(m, L, il, tokens, pos0, n, ws, cap, err))) return st;
    fwd_hc_post(m, n, ws);
    if (cap && cap->layer) {
        cap->layer(cap->user, il, "ffn_out", pos0, n, ws->f, D);
        cap->layer(cap->user, il, "h_out", pos0, n, ws->X, hcD);
    }
    return DS4_OK;
}

ds4_status fwd_output(model *m, const cpu_mat *hc_fn, const float *hc_scale,
                      const float *hc_base, const float *norm, int64_t n, bool last_only,
                      float *logits, fwd_ws *ws, ds4_error *err) {
    const model_hparams *hp = &m->hp;
    int64_t D = hp->n_embd, hc = hp->n_hc;
    int64_t t0 = last_only ? n - 1 : 0, nt = n - t0;
    const float *X = ws->X + t0 * hc * D;
    /* MODEL_MATH §4.4: hc_head; §10: norm and head. */
    ds4_status st = cpu_matmul(m->pool, hc_fn, X, hc * D, nt, ws->mix, hc, &ws->act, err);
    if (st) return st;
    for (int64_t t = 0; t < nt; t++) {
        const float *Xt = X + t * hc * D;
        float rho = hc_rho(Xt, hc * D, hp->norm_eps);
        float *mx = ws->mix + t * hc;
        for (int64_t k = 0; k < hc; k++) mx[k] *= rho;
        hc_head_weights(mx, hc_scale[0], hc_base, (int)hc, hp->hc_eps, ws->pre + t * hc);
        float *y = ws->tmp + t * D;
        hc_weighted_sum(Xt, ws->pre + t * hc, (int)hc, D, y);
        cpu_rmsnorm(y, y, norm, D, hp->norm_eps);
    }
    return cpu_matmul(m->pool, &m->w.output, ws->tmp, D, nt, logits, hp->n_vocab, &ws->act, err);
}

static ds4_status eval_chunk(model *m, model_state *s, const int32_t *tokens, int64_t n,
                             const model_eval_opts *o, int64_t done, int64_t n_total,
                             ds4_error *err) {
    const model_hparams *hp = &m->hp;
    fwd_ws *ws = &s->ws;
    int64_t D = hp->n_embd, hc = hp->n_hc, pos0 = s->kv.pos;
    ds4_status st;
    /* §2: e = embed[u]; X = [e, e, ..., e]. */
    for (int64_t t = 0; t < n; t++) {
        float *X = ws->X + t * hc * D;
        if ((st = cpu_mat_row_f32(&m->w.tok_embd, tokens[t], X, err))) return st;
        for (int64_t k = 1; k < hc; k++) memcpy(X + k * D, X, (size_t)D * sizeof(float));
    }
    for (int64_t il = 0; il < hp->n_layer; il++) {
        if ((st = fwd_block(m, &m->w.layers[il], il, &s->kv.layers[il], tokens, pos0, n, ws,
                            o ? o->capture : NULL, err)))
            return st;
    }
    s->kv.pos = pos0 + n;
    if (o && o->hc_out)
        memcpy(o->hc_out + done * hc * D, ws->X, (size_t)(n * hc * D) * sizeof(float));
    if (!o || o->logits_mode == MODEL_LOGITS_NONE) return DS4_OK;
    if (o->logits_mode == MODEL_LOGITS_LAST) {
        if (done + n != n_total) return DS4_OK;
        return fwd_output(m, &m->w.out_hc_fn, m->w.out_hc_scale, m->w.out_hc_base,
                          m->w.out_norm, n, true, o->logits, ws, err);
    }
    return fwd_output(m, &m->w.out_hc_fn, m->w.out_hc_scale, m->w.out_hc_base, m->w.out_norm,
                      n, false, o->logits + done * hp->n_vocab, ws, err);
}

static ds4_status model_eval_run(model *m, model_state *s, const int32_t *tokens, int64_t n_tokens,
                                 const model_eval_opts *o, ds4_error *err);

/* model_eval_opts.token_out: ds4_argmax of the last token's logits; with logits mode NONE the
 * head runs into a scratch row (the CUDA backend keeps that on the device). */
ds4_status model_eval(model *m, model_state *s, const int32_t *tokens, int64_t n_tokens,
                      const model_eval_opts *o, ds4_error *err) {
    if (!o || !o->token_out || !m || n_tokens <= 0) return model_eval_run(m, s, tokens, n_tokens, o, err);
    int64_t V = m->hp.n_vocab;
    model_eval_opts o1 = *o;
    float *row = NULL;
    if (o->logits_mode == MODEL_LOGITS_NONE) {
        if (!(row = malloc((size_t)V * sizeof(float))))
            return ds4_seterr(err, DS4_ERR_NOMEM, "model_eval: greedy token: out of memory");
        o1.logits_mode = MODEL_LOGITS_LAST;
        o1.logits = row;
    }
    ds4_status st = model_eval_run(m, s, tokens, n_tokens, &o1, err);
    if (!st) {
        const float *last = o1.logits + (o1.logits_mode == MODEL_LOGITS_ALL ? (n_tokens - 1) * V : 0);
        *o->token_out = ds4_argmax(last, (uint32_t)V);
    }
    free(row);
    return st;
}

static ds4_status model_eval_run(model *m, model_state *s, const int32_t *tokens, int64_t n_tokens,
                                 const model_eval_opts *o, ds4_error *err) {
    if (!m || !s || s->m != m)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "model_eval: state does not belong to this model");
    if (n_tokens <= 0) return DS4_OK;
    if (!tokens) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "model_eval: tokens is NULL");
    if (o && o->logits_mode != MODEL_LOGITS_NONE && !o->logits)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "model_eval: logits requested but NULL");
    if (n_tokens > s->kv.n_ctx - s->kv.pos)
        return ds4_seterr(err, DS4_ERR_RANGE,
                          "model_eval: context overflow: position %lld + %lld tokens > context %lld",
                          (long long)s->kv.pos, (long long)n_tokens, (long long)s->kv.n_ctx);
    for (int64_t t = 0; t < n_tokens; t++)
        if (tokens[t] < 0 || tokens[t] >= m->hp.n_vocab)
            return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                              "model_eval: token %lld is %d, vocabulary is 0..%lld", (long long)t,
                              tokens[t], (long long)m->hp.n_vocab - 1);
    int64_t ub = m->ubatch;
    ds4_status st = fwd_ws_reserve(&s->ws, m, n_tokens < ub ? n_tokens : ub, s->kv.n_ctx, err);
    if (st) return st;
    for (int64_t done = 0; done < n_tokens; done += ub) {
        int64_t n = n_tokens - done < ub ? n_tokens - done : ub;
        if ((st = eval_chunk(m, s, tokens + done, n, o, done, n_tokens, err))) return st;
    }
    return DS4_OK;
}
