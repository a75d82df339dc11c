/*
 * serve/fmt_openai.c — OpenAI Chat Completions and legacy Completions wire shapes, streaming
 * chunks and final bodies (SERVER_CLI §3.3, §3.4). Owns only JSON shapes and chunk order.
 */
#include "serve/fmt.h"

#include <stdlib.h>
#include <string.h>

/* ---- chat ---- */

/* Chat shape {"content":[entries]} (or null) for a chunk or the body. */
static json_t *chat_logprobs(json_t *entries) {
    return entries ? json_pack("{s:o}", "content", entries) : json_null();
}

/* Completions shape: parallel arrays (legacy API). Borrows entries. */
static json_t *cmpl_logprobs(json_t *entries) {
    if (!entries) return json_null();
    json_t *toks = json_array(), *lps = json_array(), *tops = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e) {
        json_array_append(toks, json_object_get(e, "token"));
        json_array_append(lps, json_object_get(e, "logprob"));
        json_t *m = json_object();
        size_t k;
        json_t *a;
        json_array_foreach(json_object_get(e, "top_logprobs"), k, a)
            json_object_set(m, json_string_value(json_object_get(a, "token")), json_object_get(a, "logprob"));
        json_array_append_new(tops, m);
    }
    return json_pack("{s:o,s:o,s:o}", "tokens", toks, "token_logprobs", lps, "top_logprobs", tops);
}

static json_t *chunk(srv_fmt *f, json_t *delta, const char *finish) {
    json_t *choice = json_pack("{s:i,s:o,s:o}", "index", 0, "delta", delta, "finish_reason",
                               finish ? json_string(finish) : json_null());
    json_t *lp = srv_fmt_take_logprobs(f);
    if (choice && lp) json_object_set_new(choice, "logprobs", chat_logprobs(lp));
    else json_decref(lp);
    return json_pack("{s:s,s:s,s:I,s:s,s:[o]}", "id", f->id, "object", "chat.completion.chunk",
                     "created", (json_int_t)f->created, "model", f->model, "choices", choice);
}

static void chat_begin(srv_fmt *f, const srv_usage *u) {
    (void)u;
    if (!f->stream) return;
    srv_sse_data(&f->out, chunk(f, json_pack("{s:s,s:s}", "role", "assistant", "content", ""), NULL));
}

static void chat_text(srv_fmt *f, const char *key, const char *s, size_t n) {
    if (!f->stream) return;
    srv_sse_data(&f->out, chunk(f, json_pack("{s:s%}", key, s, n), NULL));
}

static void chat_reasoning(srv_fmt *f, const char *s, size_t n) { chat_text(f, "reasoning_content", s, n); }
static void chat_content(srv_fmt *f, const char *s, size_t n) { chat_text(f, "content", s, n); }

static void chat_tool_begin(srv_fmt *f, srv_fmt_call *c) {
    if (!f->stream) return;
    json_t *tc = json_pack("{s:i,s:s,s:s,s:{s:s,s:s}}", "index", (int)(f->n_calls - 1), "id", c->id,
                           "type", "function", "function", "name", c->name, "arguments", "");
    srv_sse_data(&f->out, chunk(f, json_pack("{s:[o]}", "tool_calls", tc), NULL));
}

static void chat_tool_args(srv_fmt *f, srv_fmt_call *c, const char *s, size_t n) {
    (void)c;
    if (!f->stream) return;
    json_t *tc = json_pack("{s:i,s:{s:s%}}", "index", (int)(f->n_calls - 1), "function", "arguments", s, n);
    srv_sse_data(&f->out, chunk(f, json_pack("{s:[o]}", "tool_calls", tc), NULL));
}

static void chat_tool_end(srv_fmt *f, srv_fmt_call *c) { (void)f; (void)c; }

/* Sent tool_calls deltas cannot be withdrawn in this protocol; the finish_reason ("stop") and
 * the content that follows tell the client no call was made (fmt.h). */
static void no_tool_abort(srv_fmt *f) { (void)f; }

static void chat_finish(srv_fmt *f, srv_finish fin, const srv_usage *u, const char *stop) {
    (void)stop;
    const char *fr = srv_finish_openai(fin);
    if (f->stream) {
        srv_sse_data(&f->out, chunk(f, json_object(), fr));
        if (f->include_usage) {
            json_t *o = json_pack("{s:s,s:s,s:I,s:s,s:[],s:o}", "id", f->id, "object",
                                  "chat.completion.chunk", "created", (json_int_t)f->created, "model",
                                  f->model, "choices", "usage", srv_usage_json(f->api, u));
            srv_sse_data(&f->out, o);
        }
        srv_buf_puts(&f->out, "data: [DONE]\n\n");
        return;
    }
    json_t *msg = json_pack("{s:s,s:s%}", "role", "assistant", "content", f->content.data ? f->content.data : "",
                            f->content.len);
    if (f->reasoning.len)
        json_object_set_new(msg, "reasoning_content", json_stringn(f->reasoning.data, f->reasoning.len));
    if (f->n_calls) {
        json_t *arr = json_array();
        for (size_t i = 0; i < f->n_calls; i++)
            json_array_append_new(arr, json_pack("{s:s,s:s,s:{s:s,s:s}}", "id", f->calls[i].id, "type",
                                                 "function", "function", "name", f->calls[i].name,
                                                 "arguments", f->calls[i].args.data ? f->calls[i].args.data : "{}"));
        json_object_set_new(msg, "tool_calls", arr);
    }
    json_t *o = json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:o,s:o,s:s}],s:o}", "id", f->id, "object",
                          "chat.completion", "created", (json_int_t)f->created, "model", f->model,
                          "choices", "index", 0, "message", msg, "logprobs",
                          f->lp_all ? chat_logprobs(json_incref(f->lp_all)) : json_null(),
                          "finish_reason", fr, "usage", srv_usage_json(f->api, u));
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    if (!s) { f->out.oom = true; return; }
    srv_buf_puts(&f->out, s);
    free(s);
}

static void stream_error(srv_fmt *f, const char *msg) {
    if (!f->stream) return;
    srv_sse_event(&f->out, "error", json_pack("{s:{s:s,s:s}}", "error", "message", msg, "type", "server_error"));
}

const srv_fmt_ops srv_fmt_chat_ops = {chat_begin, chat_reasoning, chat_content, chat_tool_begin,
                                      chat_tool_args, chat_tool_end, no_tool_abort, chat_finish,
                                      stream_error};

/* ---- completions: one text stream; reasoning is already inline in the raw text (§3.4) ---- */

static json_t *text_chunk(srv_fmt *f, const char *s, size_t n, const char *finish, json_t *entries) {
    json_t *lp = cmpl_logprobs(entries);
    json_decref(entries);
    return json_pack("{s:s,s:s,s:I,s:s,s:[{s:s%,s:i,s:o,s:o}]}", "id", f->id, "object", "text_completion",
                     "created", (json_int_t)f->created, "model", f->model, "choices", "text", s, n,
                     "index", 0, "logprobs", lp, "finish_reason", finish ? json_string(finish) : json_null());
}

static void cmpl_begin(srv_fmt *f, const srv_usage *u) { (void)f; (void)u; }
static void cmpl_text(srv_fmt *f, const char *s, size_t n) {
    if (f->stream) srv_sse_data(&f->out, text_chunk(f, s, n, NULL, srv_fmt_take_logprobs(f)));
}
static void cmpl_tool_begin(srv_fmt *f, srv_fmt_call *c) { (void)f; (void)c; }
static void cmpl_tool_args(srv_fmt *f, srv_fmt_call *c, const char *s, size_t n) { (void)f; (void)c; (void)s; (void)n; }

static void cmpl_finish(srv_fmt *f, srv_finish fin, const srv_usage *u, const char *stop) {
    (void)stop;
    const char *fr = srv_finish_openai(fin == SRV_FINISH_TOOL_CALLS ? SRV_FINISH_STOP : fin);
    if (f->stream) {
        srv_sse_data(&f->out, text_chunk(f, "", 0, fr, srv_fmt_take_logprobs(f)));
        if (f->include_usage)
            srv_sse_data(&f->out, json_pack("{s:s,s:s,s:I,s:s,s:[],s:o}", "id", f->id, "object",
                                            "text_completion", "created", (json_int_t)f->created,
                                            "model", f->model, "choices", "usage", srv_usage_json(f->api, u)));
        srv_buf_puts(&f->out, "data: [DONE]\n\n");
        return;
    }
    json_t *o = text_chunk(f, f->content.data ? f->content.data : "", f->content.len, fr,
                           f->lp_all ? json_incref(f->lp_all) : NULL);
    if (o) json_object_set_new(o, "usage", srv_usage_json(f->api, u));
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    if (!s) { f->out.oom = true; return; }
    srv_buf_puts(&f->out, s);
    free(s);
}

const srv_fmt_ops srv_fmt_completions_ops = {cmpl_begin, cmpl_text, cmpl_text, cmpl_tool_begin,
                                             cmpl_tool_args, chat_tool_end, no_tool_abort,
                                             cmpl_finish, stream_error};
