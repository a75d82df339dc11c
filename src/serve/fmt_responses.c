/*
 * serve/fmt_responses.c — OpenAI Responses wire shapes: the full streaming lifecycle
 * (response.created, response.in_progress, output items for reasoning / message /
 * function_call with their part and delta events, terminal completed / incomplete / failed) and
 * the non-streaming response object (SERVER_CLI §3.6). Events carry `event:` lines and a
 * sequence_number, as OpenAI's own server does. Owns only shapes and order.
 */
#include "serve/fmt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve/toolids.h"

enum { ITEM_NONE = 0, ITEM_REASONING = 1, ITEM_MESSAGE = 2, ITEM_CALL = 3 };

/* Item ids are random (§3.2.8); with a fixed response id (tests) they derive from it. */
static void item_id(srv_fmt *f, char *out, size_t n, const char *prefix) {
    if (f->fixed_ids) snprintf(out, n, "%s%d", prefix, f->n_item_ids++);
    else srv_random_id(out, n, prefix);
}

/* Emits `event: name` with {"type":name,"sequence_number":n, ...fields} (fields stolen). */
static void ev(srv_fmt *f, const char *name, json_t *fields) {
    json_t *o = json_pack("{s:s,s:i}", "type", name, "sequence_number", f->seq++);
    if (o && fields) json_object_update(o, fields);
    json_decref(fields);
    srv_sse_event(&f->out, name, o);
}

static json_t *response_obj(srv_fmt *f, const char *status, const srv_usage *u) {
    json_t *output = f->items ? json_copy(f->items) : json_array();
    json_t *o = json_pack("{s:s,s:s,s:I,s:s,s:s,s:o}", "id", f->id, "object", "response", "created_at",
                          (json_int_t)f->created, "status", status, "model", f->model, "output", output);
    if (o && u) json_object_set_new(o, "usage", srv_usage_json(SRV_API_RESPONSES, u));
    return o;
}

/* The text of the open item: from item_from on (a streamed response may have several message
 * items, split by tool calls; each holds only its own text). */
static const char *item_text(const srv_buf *b, size_t from, size_t *n) {
    if (!b->data || from > b->len) { *n = 0; return ""; }
    *n = b->len - from;
    return b->data + from;
}

static json_t *reasoning_item(srv_fmt *f, const char *status) {
    size_t n;
    const char *t = item_text(&f->reasoning, f->item_from, &n);
    return json_pack("{s:s,s:s,s:s,s:[{s:s,s:s%}]}", "id", f->item_id, "type", "reasoning", "status", status,
                     "summary", "type", "summary_text", "text", t, n);
}

static json_t *message_item(srv_fmt *f, const char *status) {
    size_t n;
    const char *t = item_text(&f->content, f->item_from, &n);
    return json_pack("{s:s,s:s,s:s,s:s,s:[{s:s,s:s%,s:[]}]}", "id", f->item_id, "type", "message", "status",
                     status, "role", "assistant", "content", "type", "output_text", "text", t, n, "annotations");
}

static json_t *call_item(srv_fmt_call *c, const char *fc_id, const char *status) {
    return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "id", fc_id, "type", "function_call", "status", status,
                     "name", c->name, "call_id", c->id, "arguments", c->args.data ? c->args.data : "{}");
}

static void push_item(srv_fmt *f, json_t *item) {
    if (!f->items) f->items = json_array();
    json_array_append_new(f->items, item);
}

/* Closes the open streamed item and records it; non-streaming builds items at finish. */
static void close_item(srv_fmt *f, const char *status) {
    int oi = f->block_index;
    switch (f->open_block) {
    case ITEM_REASONING: {
        size_t n;
        const char *t = item_text(&f->reasoning, f->item_from, &n);
        json_t *part = json_pack("{s:s,s:s%}", "type", "summary_text", "text", t, n);
        ev(f, "response.reasoning_summary_text.done",
           json_pack("{s:s,s:i,s:i,s:s%}", "item_id", f->item_id, "output_index", oi, "summary_index", 0,
                     "text", t, n));
        ev(f, "response.reasoning_summary_part.done",
           json_pack("{s:s,s:i,s:i,s:o}", "item_id", f->item_id, "output_index", oi, "summary_index", 0, "part", part));
        json_t *item = reasoning_item(f, status);
        ev(f, "response.output_item.done", json_pack("{s:i,s:O}", "output_index", oi, "item", item));
        push_item(f, item);
        break;
    }
    case ITEM_MESSAGE: {
        size_t n;
        const char *t = item_text(&f->content, f->item_from, &n);
        ev(f, "response.output_text.done",
           json_pack("{s:s,s:i,s:i,s:s%}", "item_id", f->item_id, "output_index", oi, "content_index", 0, "text", t, n));
        ev(f, "response.content_part.done",
           json_pack("{s:s,s:i,s:i,s:{s:s,s:s%,s:[]}}", "item_id", f->item_id, "output_index", oi, "content_index", 0,
                     "part", "type", "output_text", "text", t, n, "annotations"));
        json_t *item = message_item(f, status);
        ev(f, "response.output_item.done", json_pack("{s:i,s:O}", "output_index", oi, "item", item));
        push_item(f, item);
        break;
    }
    case ITEM_CALL: {
        srv_fmt_call *c = &f->calls[f->n_calls - 1];
        ev(f, "response.function_call_arguments.done",
           json_pack("{s:s,s:i,s:s}", "item_id", f->item_id, "output_index", oi, "arguments", c->args.data ? c->args.data : "{}"));
        json_t *item = call_item(c, f->item_id, status);
        ev(f, "response.output_item.done", json_pack("{s:i,s:O}", "output_index", oi, "item", item));
        push_item(f, item);
        break;
    }
    default: return;
    }
    f->open_block = ITEM_NONE;
    f->block_index++;
}

static void r_begin(srv_fmt *f, const srv_usage *u) {
    (void)u;
    if (!f->stream) return;
    ev(f, "response.created", json_pack("{s:o}", "response", response_obj(f, "in_progress", NULL)));
    ev(f, "response.in_progress", json_pack("{s:o}", "response", response_obj(f, "in_progress", NULL)));
}

static void r_reasoning(srv_fmt *f, const char *s, size_t n) {
    if (!f->stream || !f->reasoning_visible) return;
    if (f->open_block != ITEM_REASONING) {
        close_item(f, "completed");
        f->open_block = ITEM_REASONING;
        f->item_from = f->reasoning.len - n; /* fmt.c appended s already */
        item_id(f, f->item_id, sizeof f->item_id, "rs_");
        ev(f, "response.output_item.added",
           json_pack("{s:i,s:{s:s,s:s,s:s,s:[]}}", "output_index", f->block_index, "item", "id", f->item_id, "type",
                     "reasoning", "status", "in_progress", "summary"));
        ev(f, "response.reasoning_summary_part.added",
           json_pack("{s:s,s:i,s:i,s:{s:s,s:s}}", "item_id", f->item_id, "output_index", f->block_index,
                     "summary_index", 0, "part", "type", "summary_text", "text", ""));
    }
    ev(f, "response.reasoning_summary_text.delta",
       json_pack("{s:s,s:i,s:i,s:s%}", "item_id", f->item_id, "output_index", f->block_index, "summary_index", 0, "delta", s, n));
}

static void r_content(srv_fmt *f, const char *s, size_t n) {
    if (!f->stream) return;
    if (f->open_block != ITEM_MESSAGE) {
        close_item(f, "completed");
        f->open_block = ITEM_MESSAGE;
        f->item_from = f->content.len - n;
        item_id(f, f->item_id, sizeof f->item_id, "msg_");
        ev(f, "response.output_item.added",
           json_pack("{s:i,s:{s:s,s:s,s:s,s:s,s:[]}}", "output_index", f->block_index, "item", "id", f->item_id,
                     "type", "message", "status", "in_progress", "role", "assistant", "content"));
        ev(f, "response.content_part.added",
           json_pack("{s:s,s:i,s:i,s:{s:s,s:s,s:[]}}", "item_id", f->item_id, "output_index", f->block_index,
                     "content_index", 0, "part", "type", "output_text", "text", "", "annotations"));
    }
    ev(f, "response.output_text.delta",
       json_pack("{s:s,s:i,s:i,s:s%}", "item_id", f->item_id, "output_index", f->block_index, "content_index", 0, "delta", s, n));
}

static void r_tool_begin(srv_fmt *f, srv_fmt_call *c) {
    if (!f->stream) return;
    close_item(f, "completed");
    f->open_block = ITEM_CALL;
    item_id(f, f->item_id, sizeof f->item_id, "fc_");
    ev(f, "response.output_item.added",
       json_pack("{s:i,s:{s:s,s:s,s:s,s:s,s:s,s:s}}", "output_index", f->block_index, "item", "id", f->item_id,
                 "type", "function_call", "status", "in_progress", "name", c->name, "call_id", c->id, "arguments", ""));
}

static void r_tool_args(srv_fmt *f, srv_fmt_call *c, const char *s, size_t n) {
    (void)c;
    if (!f->stream) return;
    ev(f, "response.function_call_arguments.delta",
       json_pack("{s:s,s:i,s:s%}", "item_id", f->item_id, "output_index", f->block_index, "delta", s, n));
}

static void r_tool_end(srv_fmt *f, srv_fmt_call *c) {
    (void)c;
    if (f->stream) close_item(f, "completed");
}

/* The open function_call item ends "incomplete", and so do the calls of this block already
 * recorded as done (they go out again in the final response object). */
static void r_tool_abort(srv_fmt *f) {
    if (!f->stream) return;
    if (f->open_block == ITEM_CALL) close_item(f, "incomplete");
    size_t i;
    json_t *it;
    json_array_foreach(f->items, i, it) {
        const char *ty = json_string_value(json_object_get(it, "type"));
        const char *cid = json_string_value(json_object_get(it, "call_id"));
        if (!ty || strcmp(ty, "function_call") != 0 || !cid) continue;
        for (size_t k = 0; k < f->n_calls; k++)
            if (strcmp(f->calls[k].id, cid) == 0) json_object_set_new(it, "status", json_string("incomplete"));
    }
}

static void r_finish(srv_fmt *f, srv_finish fin, const srv_usage *u, const char *stop) {
    (void)stop;
    const char *status = fin == SRV_FINISH_LENGTH ? "incomplete" : fin == SRV_FINISH_ERROR ? "failed" : "completed";
    const char *item_status = fin == SRV_FINISH_STOP || fin == SRV_FINISH_TOOL_CALLS ? "completed" : "incomplete";
    if (f->stream) {
        close_item(f, item_status);
    } else {
        /* Non-streaming: build the items in emission order, each text whole. */
        f->item_from = 0;
        if (f->reasoning_visible && f->reasoning.len) {
            item_id(f, f->item_id, sizeof f->item_id, "rs_");
            push_item(f, reasoning_item(f, item_status));
        }
        if (f->content.len || f->n_calls == 0) {
            item_id(f, f->item_id, sizeof f->item_id, "msg_");
            push_item(f, message_item(f, item_status));
        }
        for (size_t i = 0; i < f->n_calls; i++) {
            char fc[48];
            item_id(f, fc, sizeof fc, "fc_");
            push_item(f, call_item(&f->calls[i], fc, "completed"));
        }
    }
    json_t *resp = response_obj(f, status, u);
    if (fin == SRV_FINISH_LENGTH)
        json_object_set_new(resp, "incomplete_details", json_pack("{s:s}", "reason", "max_output_tokens"));
    if (fin == SRV_FINISH_ERROR)
        json_object_set_new(resp, "error", json_pack("{s:s,s:s}", "code", "server_error", "message", "generation failed"));
    if (f->stream) {
        const char *name = fin == SRV_FINISH_LENGTH ? "response.incomplete"
                         : fin == SRV_FINISH_ERROR ? "response.failed" : "response.completed";
        ev(f, name, json_pack("{s:o}", "response", resp));
        return;
    }
    char *s = resp ? json_dumps(resp, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(resp);
    if (!s) { f->out.oom = true; return; }
    srv_buf_puts(&f->out, s);
    free(s);
}

static void r_error(srv_fmt *f, const char *msg) {
    if (!f->stream) return;
    ev(f, "error", json_pack("{s:s,s:s,s:n}", "code", "server_error", "message", msg, "param"));
}

const srv_fmt_ops srv_fmt_responses_ops = {r_begin, r_reasoning, r_content, r_tool_begin,
                                           r_tool_args, r_tool_end, r_tool_abort, r_finish,
                                           r_error};
