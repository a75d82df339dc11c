/*
 * serve/engine_ds4.c — srv_engine over libds4's public API (include/ds4.h): tokenizer, official
 * chat encoder, DSML parser, engine/session and snapshots. Owns the mapping from srv_request to
 * ds4_chat messages; must not hold server policy (slots, cache, sampling choices).
 */
#include "serve/engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

typedef struct ds4_srv_ctx {
    ds4_engine *engine;
    ds4_tokenizer *tok;
    int n_ctx;
} ds4_srv_ctx;

static ds4_thinking map_think(srv_think t) {
    return t == SRV_THINK_NONE ? DS4_THINKING_NONE : t == SRV_THINK_MAX ? DS4_THINKING_MAX : DS4_THINKING_HIGH;
}

static ds4_chat_role map_role(srv_role r) {
    switch (r) {
    case SRV_ROLE_SYSTEM: return DS4_ROLE_SYSTEM;
    case SRV_ROLE_ASSISTANT: return DS4_ROLE_ASSISTANT;
    case SRV_ROLE_TOOL: return DS4_ROLE_TOOL;
    default: return DS4_ROLE_USER;
    }
}

/* tools → the OpenAI array shape the encoder takes (CHAT_ENCODING §5). */
static char *tools_json(const srv_request *req) {
    srv_buf b;
    srv_buf_init(&b);
    srv_buf_puts(&b, "[");
    for (size_t i = 0; i < req->n_tools; i++) {
        if (i) srv_buf_puts(&b, ",");
        srv_buf_puts(&b, "{\"type\":\"function\",\"function\":");
        srv_buf_puts(&b, req->tools[i]);
        srv_buf_puts(&b, "}");
    }
    srv_buf_puts(&b, "]");
    return srv_buf_take(&b, NULL);
}

static ds4_status e_render(void *vctx, const srv_request *req, srv_buf *text, ds4_error *err) {
    (void)vctx;
    ds4_chat *chat = NULL;
    ds4_status st = ds4_chat_create(&chat, map_think(req->think), err);
    if (st) return st;
    if (req->api == SRV_API_COMPLETIONS) {
        /* Completions are one user turn of the chat template (SERVER_CLI §3.4). */
        ds4_chat_msg m = {.role = DS4_ROLE_USER, .content = req->prompt ? req->prompt : ""};
        st = ds4_chat_add(chat, &m, err);
    }
    /* Structured output rides on the first system message (CHAT_ENCODING §5.2). */
    bool rf_first = req->response_format && req->n_msgs && req->msgs[0].role == SRV_ROLE_SYSTEM;
    if (!st && req->response_format && !rf_first) {
        ds4_chat_msg m = {.role = DS4_ROLE_SYSTEM, .content = "", .response_format_json = req->response_format};
        st = ds4_chat_add(chat, &m, err);
    }
    for (size_t i = 0; !st && i < req->n_msgs; i++) {
        const srv_message *sm = &req->msgs[i];
        ds4_tool_call *calls = NULL;
        if (sm->n_calls) {
            calls = calloc(sm->n_calls, sizeof *calls);
            if (!calls) { st = ds4_seterr(err, DS4_ERR_NOMEM, "render: out of memory"); break; }
            for (size_t k = 0; k < sm->n_calls; k++) {
                calls[k].id = sm->calls[k].id && *sm->calls[k].id ? sm->calls[k].id : NULL;
                calls[k].name = sm->calls[k].name;
                calls[k].arguments = sm->calls[k].arguments;
            }
        }
        ds4_chat_msg m = {.role = map_role(sm->role), .content = sm->content, .reasoning = sm->reasoning,
                          .tool_calls = calls, .n_tool_calls = sm->n_calls, .tool_call_id = sm->tool_call_id,
                          .response_format_json = i == 0 && rf_first ? req->response_format : NULL};
        st = ds4_chat_add(chat, &m, err);
        free(calls);
        if (st) ds4_err_prefix(err, "messages[%zu]", i);
    }
    if (!st && req->tools_active && req->n_tools) {
        char *tj = tools_json(req);
        st = tj ? ds4_chat_set_tools(chat, tj, err) : ds4_seterr(err, DS4_ERR_NOMEM, "render: out of memory");
        free(tj);
    }
    char *out = NULL;
    size_t n = 0;
    if (!st) st = ds4_chat_render(chat, &out, &n, err);
    if (!st) srv_buf_append(text, out, n);
    free(out);
    ds4_chat_free(chat);
    return st;
}

static ds4_status e_tokenize(void *vctx, const char *text, size_t len, int32_t **toks, size_t *n, ds4_error *err) {
    ds4_srv_ctx *c = vctx;
    return ds4_tokenize(c->tok, text, len, 0, toks, n, err);
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
    static const char hx[] = "0123456789abcdef";
    memcpy(out->model_id, "ds4:", 4);
    for (int i = 0; i < 32; i++) {
        out->model_id[4 + 2 * i] = hx[info.model_id[i] >> 4];
        out->model_id[5 + 2 * i] = hx[info.model_id[i] & 15];
    }
    out->model_id[68] = '\0';
    out->render = e_render;
    out->tokenize = e_tokenize;
    out->token_bytes = e_token_bytes;
    out->session_create = e_session_create;
    out->session_free = e_session_free;
    out->session_sync = e_sync;
    out->session_checkpoint = e_checkpoint;
    out->session_tokens = e_tokens;
    out->session_eval = e_eval;
    out->session_logits = e_logits;
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
