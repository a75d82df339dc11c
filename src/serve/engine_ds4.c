/*
 * serve/engine_ds4.c — srv_engine over libds4's public API (include/ds4.h): tokenizer, official
 * chat encoder, DSML parser, engine/session and snapshots. The request → chat mapping is
 * serve/prompt.c; must not hold server policy (slots, cache, sampling choices).
 */
#include "serve/engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "serve/prompt.h"

typedef struct ds4_srv_ctx {
    ds4_engine *engine;
    ds4_tokenizer *tok;
    int n_ctx;
} ds4_srv_ctx;

static ds4_status e_prompt(void *vctx, const srv_request *req, int32_t **toks, size_t *n, ds4_error *err) {
    ds4_srv_ctx *c = vctx;
    return srv_prompt_tokens(req, c->tok, toks, n, NULL, NULL, err);
}

static ds4_status e_tokenize(void *vctx, const char *text, size_t len, uint32_t flags, int32_t **toks, size_t *n,
                             ds4_error *err) {
    ds4_srv_ctx *c = vctx;
    return ds4_tokenize(c->tok, text, len, flags, toks, n, err);
}

static ds4_status e_token_bytes(void *vctx, int32_t tok, const char **p, size_t *n, ds4_error *err) {
    ds4_srv_ctx *c = vctx;
    return ds4_tokenizer_token_bytes(c->tok, tok, p, n, err);
}

static ds4_status e_session_create(void *vctx, void **sess, ds4_error *err) {
    ds4_srv_ctx *c = vctx;
    return ds4_session_create((ds4_session **)sess, c->engine, (uint32_t)c->n_ctx, err);
}

static void e_session_free(void *s) { ds4_session_free(s); }

static ds4_status e_sync(void *s, const int32_t *toks, size_t n, size_t *reused, ds4_error *err) {
    ds4_sync_stats st = {0};
    ds4_status rc = ds4_session_sync(s, toks, (uint32_t)n, &st, err);
    if (reused) *reused = st.n_reused;
    return rc;
}

static ds4_status e_checkpoint(void *s, ds4_error *err) { return ds4_session_checkpoint(s, err); }

static const int32_t *e_tokens(void *s, size_t *n) {
    uint32_t k = 0;
    const int32_t *t = ds4_session_tokens(s, &k);
    *n = k;
    return t;
}

static ds4_status e_eval(void *s, int32_t tok, ds4_error *err) { return ds4_session_eval(s, tok, err); }
static ds4_status e_logits(void *s, const float **l, ds4_error *err) { return ds4_session_logits(s, l, err); }
static ds4_status e_sample(void *s, ds4_sampler *smp, int32_t *t, ds4_error *err) {
    return ds4_session_sample(s, smp, t, err);
}
static void e_reset(void *s) { ds4_session_reset(s); }
static ds4_status e_snapshot(void *s, uint8_t **out, uint64_t *n, ds4_error *err) { return ds4_session_snapshot(s, out, n, err); }
static ds4_status e_restore(void *s, const uint8_t *b, uint64_t n, ds4_error *err) { return ds4_session_restore(s, b, n, err); }

ds4_status srv_engine_ds4_open(srv_engine *out, const srv_ds4_opts *o, ds4_error *err) {
    memset(out, 0, sizeof *out);
    ds4_srv_ctx *c = calloc(1, sizeof *c);
    if (!c) return ds4_seterr(err, DS4_ERR_NOMEM, "engine: out of memory");
    ds4_engine_options eo;
    ds4_engine_options_init(&eo);
    eo.n_threads = o->n_threads;
    if (o->backend) eo.backend = o->backend;
    eo.gpu_layers_experts = o->gpu_layers_experts;
    eo.gpu_ctx_tokens = o->gpu_ctx_tokens;
    ds4_status st = ds4_engine_open(&c->engine, o->model_path, &eo, err);
    if (st) { free(c); return st; }
    if ((st = ds4_tokenizer_open(&c->tok, o->model_path, err))) goto out_engine;
    ds4_model_info info;
    if ((st = ds4_engine_info(c->engine, &info, err))) goto out_tok;
    if (o->n_ctx < 2 || (uint32_t)o->n_ctx > info.n_ctx_max) {
        st = ds4_seterr(err, DS4_ERR_INVALID_ARG, "engine: --ctx %d outside 2..%u", o->n_ctx, info.n_ctx_max);
        goto out_tok;
    }
    if ((st = ds4_tokenizer_special_id(c->tok, "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>", &out->eos, err)))
        goto out_tok;
    if (ds4_tokenizer_special_id(c->tok, "<\xef\xbd\x9cUser\xef\xbd\x9c>", &out->user_tok, NULL) != DS4_OK)
        out->user_tok = -1;
    c->n_ctx = o->n_ctx;
    out->ctx = c;
    out->n_ctx = o->n_ctx;
    out->n_vocab = info.n_vocab;
    out->n_layer = info.n_layer;
    out->gpu_layers_experts = info.gpu_layers_experts;
    out->host_expert_bytes = info.host_expert_bytes;
    static const char hx[] = "0123456789abcdef";
    memcpy(out->model_id, "ds4:", 4);
    for (int i = 0; i < 32; i++) {
        out->model_id[4 + 2 * i] = hx[info.model_id[i] >> 4];
        out->model_id[5 + 2 * i] = hx[info.model_id[i] & 15];
    }
    out->model_id[68] = '\0';
    out->prompt = e_prompt;
    out->tokenize = e_tokenize;
    out->token_bytes = e_token_bytes;
    out->session_create = e_session_create;
    out->session_free = e_session_free;
    out->session_sync = e_sync;
    out->session_checkpoint = e_checkpoint;
    out->session_tokens = e_tokens;
    out->session_eval = e_eval;
    out->session_logits = e_logits;
    out->session_sample = e_sample;
    out->session_reset = e_reset;
    out->session_snapshot = e_snapshot;
    out->session_restore = e_restore;
    return DS4_OK;
out_tok:
    ds4_tokenizer_free(c->tok);
out_engine:
    ds4_engine_close(c->engine);
    free(c);
    return st;
}

ds4_status srv_engine_ds4_session_bytes(const srv_engine *e, int n_ctx, uint64_t *bytes, ds4_error *err) {
    ds4_srv_ctx *c = e->ctx;
    ds4_memory_estimate m;
    ds4_status st = ds4_engine_memory_estimate(c->engine, (uint32_t)n_ctx, &m, err);
    if (!st) *bytes = m.total_bytes;
    return st;
}

void srv_engine_ds4_close(srv_engine *e) {
    if (!e || !e->ctx) return;
    ds4_srv_ctx *c = e->ctx;
    ds4_tokenizer_free(c->tok);
    ds4_engine_close(c->engine);
    free(c);
    memset(e, 0, sizeof *e);
}
