/*
 * serve/fmt_anthropic.c — Anthropic Messages wire shapes: streaming events message_start,
 * content_block_start/delta/stop for thinking, text and tool_use, message_delta, message_stop,
 * ping; and the non-streaming message body (SERVER_CLI §3.5). Owns only shapes and block order.
 */
#include "serve/fmt.h"

#include <stdlib.h>
#include <string.h>

enum { BLK_NONE = 0, BLK_THINK = 1, BLK_TEXT = 2, BLK_TOOL = 3 };

static const char *stop_reason(srv_finish fin) {
    switch (fin) {
    case SRV_FINISH_LENGTH: return "max_tokens";
    case SRV_FINISH_TOOL_CALLS: return "tool_use";
    default: return "end_turn";
    }
}

static void close_block(srv_fmt *f) {
    if (f->open_block == BLK_NONE) return;
    if (f->open_block == BLK_THINK)
        srv_sse_event(&f->out, "content_block_delta",
                      json_pack("{s:s,s:i,s:{s:s,s:s}}", "type", "content_block_delta", "index",
                                f->block_index, "delta", "type", "signature_delta", "signature", f->id));
    srv_sse_event(&f->out, "content_block_stop",
                  json_pack("{s:s,s:i}", "type", "content_block_stop", "index", f->block_index));
    f->open_block = BLK_NONE;
    f->block_index++;
}

static void open_block(srv_fmt *f, int kind, json_t *block) {
    close_block(f);
    f->open_block = kind;
    srv_sse_event(&f->out, "content_block_start",
                  json_pack("{s:s,s:i,s:o}", "type", "content_block_start", "index", f->block_index,
                            "content_block", block));
}

static void a_begin(srv_fmt *f, const srv_usage *u) {
    if (!f->stream) return;
    json_t *msg = json_pack("{s:s,s:s,s:s,s:s,s:[],s:n,s:n,s:o}", "id", f->id, "type", "message", "role",
                            "assistant", "model", f->model, "content", "stop_reason", "stop_sequence",
                            "usage", srv_usage_json(SRV_API_ANTHROPIC, u));
    srv_sse_event(&f->out, "message_start", json_pack("{s:s,s:o}", "type", "message_start", "message", msg));
    srv_sse_event(&f->out, "ping", json_pack("{s:s}", "type", "ping"));
}

static void a_delta(srv_fmt *f, int kind, const char *dtype, const char *key, const char *s, size_t n) {
    if (!f->stream) return;
    if (f->open_block != kind) {
        json_t *blk = kind == BLK_THINK
            ? json_pack("{s:s,s:s,s:s}", "type", "thinking", "thinking", "", "signature", "")
            : json_pack("{s:s,s:s}", "type", "text", "text", "");
        open_block(f, kind, blk);
    }
    srv_sse_event(&f->out, "content_block_delta",
                  json_pack("{s:s,s:i,s:{s:s,s:s%}}", "type", "content_block_delta", "index", f->block_index,
                            "delta", "type", dtype, key, s, n));
}

static void a_reasoning(srv_fmt *f, const char *s, size_t n) { a_delta(f, BLK_THINK, "thinking_delta", "thinking", s, n); f->sent_reasoning = true; }
static void a_content(srv_fmt *f, const char *s, size_t n) { a_delta(f, BLK_TEXT, "text_delta", "text", s, n); f->sent_text = true; }

static void a_tool_begin(srv_fmt *f, srv_fmt_call *c) {
    if (!f->stream) return;
    open_block(f, BLK_TOOL, json_pack("{s:s,s:s,s:s,s:{}}", "type", "tool_use", "id", c->id, "name", c->name, "input"));
}

static void a_tool_args(srv_fmt *f, srv_fmt_call *c, const char *s, size_t n) {
    (void)c;
    if (!f->stream) return;
    srv_sse_event(&f->out, "content_block_delta",
                  json_pack("{s:s,s:i,s:{s:s,s:s%}}", "type", "content_block_delta", "index", f->block_index,
                            "delta", "type", "input_json_delta", "partial_json", s, n));
}

static void a_tool_end(srv_fmt *f, srv_fmt_call *c) {
    (void)c;
    if (f->stream) close_block(f);
}

/* The open tool_use block (if any) is closed; the block's text then opens a text block. */
static void a_tool_abort(srv_fmt *f) {
    if (f->stream && f->open_block == BLK_TOOL) close_block(f);
}

/* Parsed arguments object; unparsable text degrades to {} (§3.5). */
static json_t *args_object(const srv_fmt_call *c) {
    json_t *o = c->args.data ? json_loads(c->args.data, 0, NULL) : NULL;
    if (!o || !json_is_object(o)) { json_decref(o); o = json_object(); }
    return o;
}

static void a_finish(srv_fmt *f, srv_finish fin, const srv_usage *u, const char *stop) {
    const char *sr = stop ? "stop_sequence" : stop_reason(fin);
    if (f->stream) {
        /* Thinking alone leaves clients without an answer block: add an empty text block. */
        if (!f->sent_text && f->n_calls == 0 && f->sent_reasoning) {
            open_block(f, BLK_TEXT, json_pack("{s:s,s:s}", "type", "text", "text", ""));
        }
        close_block(f);
        srv_sse_event(&f->out, "message_delta",
                      json_pack("{s:s,s:{s:s,s:o},s:o}", "type", "message_delta", "delta", "stop_reason", sr,
                                "stop_sequence", stop ? json_string(stop) : json_null(), "usage",
                                srv_usage_json(SRV_API_ANTHROPIC, u)));
        srv_sse_event(&f->out, "message_stop", json_pack("{s:s}", "type", "message_stop"));
        return;
    }
    json_t *content = json_array();
    if (f->reasoning.len)
        json_array_append_new(content, json_pack("{s:s,s:s%,s:s}", "type", "thinking", "thinking",
                                                 f->reasoning.data, f->reasoning.len, "signature", f->id));
    if (f->content.len || (f->n_calls == 0))
        json_array_append_new(content, json_pack("{s:s,s:s%}", "type", "text", "text",
                                                 f->content.data ? f->content.data : "", f->content.len));
    for (size_t i = 0; i < f->n_calls; i++)
        json_array_append_new(content, json_pack("{s:s,s:s,s:s,s:o}", "type", "tool_use", "id", f->calls[i].id,
                                                 "name", f->calls[i].name, "input", args_object(&f->calls[i])));
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:o,s:s,s:o,s:o}", "id", f->id, "type", "message", "role",
                          "assistant", "model", f->model, "content", content, "stop_reason", sr,
                          "stop_sequence", stop ? json_string(stop) : json_null(), "usage",
                          srv_usage_json(SRV_API_ANTHROPIC, u));
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    if (!s) { f->out.oom = true; return; }
    srv_buf_puts(&f->out, s);
    free(s);
}

static void a_error(srv_fmt *f, const char *msg) {
    if (!f->stream) return;
    srv_sse_event(&f->out, "error", json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type",
                                              "api_error", "message", msg));
}

const srv_fmt_ops srv_fmt_anthropic_ops = {a_begin, a_reasoning, a_content, a_tool_begin,
                                           a_tool_args, a_tool_end, a_tool_abort, a_finish,
                                           a_error};
