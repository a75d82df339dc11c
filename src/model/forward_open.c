/*
 * model/forward_open.c — model open/close (hparams + weights + RoPE tables + pool), state
 * lifetime and the memory estimate (MODEL_MATH §13).
 */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "cpu/ops.h"
#include "model/forward.h"

ds4_status model_open(model **out, const gguf_ctx *g, const model_options *opt, ds4_error *err) {
    *out = NULL;
    model_options def = {0};
    if (!opt) opt = &def;
    model *m = calloc(1, sizeof *m);
    if (!m) return ds4_seterr(err, DS4_ERR_NOMEM, "model: out of memory");
    ds4_status st = hparams_load(&m->hp, g, opt->idx_topk_override, err);
    if (st) goto fail_free;
    if ((st = weights_bind(&m->w, g, opt->mtp_gguf, &m->hp, err))) goto fail_hp;
    int64_t half = m->hp.n_rope / 2;
    m->freqs_plain = malloc((size_t)half * sizeof(float));
    m->freqs_comp = malloc((size_t)half * sizeof(float));
    if (!m->freqs_plain || !m->freqs_comp) {
        st = ds4_seterr(err, DS4_ERR_NOMEM, "model: out of memory");
        goto fail_w;
    }
    /* MODEL_MATH §3.4: plain table for ratio-0 layers, YaRN on compressed layers. */
    cpu_rope_cfg plain = {(int)m->hp.n_rope, m->hp.rope_base, 1.0, 0, 0, 0};
    cpu_rope_cfg comp = {(int)m->hp.n_rope, m->hp.compress_rope_base, m->hp.yarn_factor,
                         m->hp.yarn_beta_fast, m->hp.yarn_beta_slow, (double)m->hp.yarn_orig_ctx};
    cpu_rope_freqs(&plain, m->freqs_plain);
    cpu_rope_freqs(&comp, m->freqs_comp);
    if ((st = ds4_pool_create(&m->pool, opt->n_threads, err))) goto fail_w;
    /* Internal chunk: bounded so the workspace stays ~100 MB at Flash widths. */
    m->ubatch = m->hp.n_embd >= 2048 ? 128 : 512;
    m->exact_act = opt->exact_activations;
    *out = m;
    return DS4_OK;
fail_w:
    free(m->freqs_plain);
    free(m->freqs_comp);
    weights_free(&m->w, &m->hp);
fail_hp:
    hparams_free(&m->hp);
fail_free:
    free(m);
    return st;
}

void model_close(model *m) {
    if (!m) return;
    ds4_pool_free(m->pool);
    free(m->freqs_plain);
    free(m->freqs_comp);
    weights_free(&m->w, &m->hp);
    hparams_free(&m->hp);
    free(m);
}

const model_hparams *model_get_hparams(const model *m) { return &m->hp; }
bool model_has_mtp(const model *m) { return m->w.has_mtp; }
int model_n_threads(const model *m) { return ds4_pool_size(m->pool); }

void model_memory_estimate(const model *m, int64_t n_ctx, model_mem_estimate *out) {
    uint64_t fixed, per_tok;
    kv_sizes(&m->hp, m->w.has_mtp, &fixed, &per_tok);
    const model_hparams *hp = &m->hp;
    /* Workspace of one internal chunk (fwd_ws_reserve) plus the indexer scratch. */
    int64_t D = hp->n_embd, hc = hp->n_hc, Dh = hp->head_dim, H = hp->n_head;
    int64_t per = 3 * hc * D + 3 * D + 2 * H * Dh + 5 * Dh + hp->q_lora + 4 * hp->idx_head_dim +
                  hp->idx_n_head * (hp->idx_head_dim + 1) + hp->o_groups * hp->o_lora +
                  hp->n_expert + hp->idx_topk + 64 + 2 * hp->n_ff_exp + 2 * D;
    fixed += (uint64_t)(per * m->ubatch) * 4;
    out->fixed_bytes = fixed;
    out->kv_bytes_per_token = per_tok;
    out->total_bytes = fixed + per_tok * (uint64_t)(n_ctx > 0 ? n_ctx : 0) +
                       (uint64_t)(n_ctx / 4 + 1) * 4;
}

ds4_status model_state_create(model_state **out, const model *m, int64_t n_ctx, ds4_error *err) {
    *out = NULL;
    model_state *s = calloc(1, sizeof *s);
    if (!s) return ds4_seterr(err, DS4_ERR_NOMEM, "model: out of memory");
    s->m = m;
    ds4_status st = kv_create(&s->kv, &m->hp, m->w.has_mtp, n_ctx, err);
    if (st) {
        free(s);
        return st;
    }
    *out = s;
    return DS4_OK;
}

void model_state_free(model_state *s) {
    if (!s) return;
    kv_free(&s->kv);
    fwd_ws_free(&s->ws);
    free(s);
}

void model_state_reset(model_state *s) { kv_reset(&s->kv); }
int64_t model_state_pos(const model_state *s) { return s->kv.pos; }
int64_t model_state_ctx(const model_state *s) { return s->kv.n_ctx; }

size_t model_state_serialized_bytes(const model_state *s) { return kv_payload_bytes(&s->kv); }

ds4_status model_state_serialize(const model_state *s, void *buf, size_t n_bytes,
                                 ds4_error *err) {
    return kv_save(&s->kv, buf, n_bytes, err);
}

ds4_status model_state_deserialize(model_state *s, const void *buf, size_t n_bytes,
                                   ds4_error *err) {
    return kv_load(&s->kv, buf, n_bytes, err);
}
