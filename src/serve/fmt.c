/*
 * serve/fmt.c — the API-independent half of response formatting (see fmt.h): lifetime,
 * accumulation of reasoning/content/tool calls, dispatch to the per-API ops, SSE framing,
 * usage objects and error bodies.
 */
#include "serve/fmt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve/toolids.h"

static const srv_fmt_ops *ops_of(srv_api api) {
    switch (api) {
    case SRV_API_CHAT: return &srv_fmt_chat_ops;
    case SRV_API_COMPLETIONS: return &srv_fmt_completions_ops;
    case SRV_API_ANTHROPIC: return &srv_fmt_anthropic_ops;
    case SRV_API_RESPONSES: return &srv_fmt_responses_ops;
    }
    return &srv_fmt_chat_ops;
}

bool srv_fmt_init(srv_fmt *f, const srv_request *req, const char *id_hint, long long created) {
    memset(f, 0, sizeof *f);
    f->api = req->api;
    f->stream = req->stream;
    f->include_usage = req->include_usage;
    f->reasoning_visible = req->api != SRV_API_RESPONSES || req->reasoning_visible;
    f->want_logprobs = req->logprobs && (req->api == SRV_API_CHAT || req->api == SRV_API_COMPLETIONS);
    f->created = created;
    f->model = strdup(req->model ? req->model : "deepseek-v4-flash");
    if (!f->model) return false;
    if (id_hint) {
        snprintf(f->id, sizeof f->id, "%s", id_hint);
        f->fixed_ids = true;
    } else {
        static const char *prefixes[] = {"chatcmpl-", "cmpl-", "msg_", "resp_"};
        if (!srv_random_id(f->id, sizeof f->id, prefixes[req->api])) return false;
    }
    return true;
}

void srv_fmt_free(srv_fmt *f) {
    free(f->model);
    srv_buf_free(&f->out);
    srv_buf_free(&f->reasoning);
    srv_buf_free(&f->content);
    for (size_t i = 0; i < f->n_calls; i++) {
        free(f->calls[i].name);
        srv_buf_free(&f->calls[i].args);
    }
    free(f->calls);
    json_decref(f->items);
    json_decref(f->lp_all);
    json_decref(f->lp_pending);
    memset(f, 0, sizeof *f);
}

void srv_fmt_begin(srv_fmt *f, const srv_usage *u) {
    if (f->began) return;
    f->began = true;
    ops_of(f->api)->begin(f, u);
}

/* Length of the valid UTF-8 sequence at s[0..n), 0 when invalid (RFC 3629: no overlongs,
 * no surrogates, nothing above U+10FFFF). */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t len = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (!len || len > n) return 0;
    for (size_t i = 1; i < len; i++) if ((s[i] & 0xC0) != 0x80) return 0;
    if (c == 0xE0 && s[1] < 0xA0) return 0;
    if (c == 0xED && s[1] > 0x9F) return 0;
    if (c == 0xF0 && s[1] < 0x90) return 0;
    if (c == 0xF4 && s[1] > 0x8F) return 0;
    return len;
}

/* JSON strings must be UTF-8, but a random or confused model can sample byte tokens that are
 * not: each invalid byte becomes U+FFFD (what clients would show anyway). Returns s itself
 * when it is already valid. */
static const char *utf8_clean(const char *s, size_t *n, srv_buf *tmp) {
    size_t i = 0;
    while (i < *n) {
        size_t k = utf8_seq((const unsigned char *)s + i, *n - i);
        if (!k) break;
        i += k;
    }
    if (i == *n) return s;
    srv_buf_append(tmp, s, i);
    while (i < *n) {
        size_t k = utf8_seq((const unsigned char *)s + i, *n - i);
        if (k) { srv_buf_append(tmp, s + i, k); i += k; }
        else { srv_buf_puts(tmp, "\xEF\xBF\xBD"); i++; }
    }
    *n = tmp->len;
    return tmp->data ? tmp->data : "";
}

void srv_fmt_reasoning(srv_fmt *f, const char *s, size_t n) {
    if (!n || f->finished) return;
    srv_buf tmp;
    srv_buf_init(&tmp);
    s = utf8_clean(s, &n, &tmp);
    srv_buf_append(&f->reasoning, s, n);
    ops_of(f->api)->reasoning(f, s, n);
    srv_buf_free(&tmp);
}

void srv_fmt_content(srv_fmt *f, const char *s, size_t n) {
    if (!n || f->finished) return;
    srv_buf tmp;
    srv_buf_init(&tmp);
    s = utf8_clean(s, &n, &tmp);
    srv_buf_append(&f->content, s, n);
    ops_of(f->api)->content(f, s, n);
    srv_buf_free(&tmp);
}

static json_t *lp_entry(const char *bytes, size_t n, float logprob) {
    srv_buf tmp;
    srv_buf_init(&tmp);
    size_t cn = n;
    const char *clean = utf8_clean(bytes, &cn, &tmp);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(arr, json_integer((unsigned char)bytes[i]));
    json_t *o = json_pack("{s:s%,s:f,s:o}", "token", clean ? clean : "", cn, "logprob", (double)logprob, "bytes", arr);
    srv_buf_free(&tmp);
    return o;
}

void srv_fmt_logprob(srv_fmt *f, const char *bytes, size_t n, float logprob, const srv_logprob_alt *alts,
                     size_t n_alts) {
    if (!f->want_logprobs || f->finished) return;
    json_t *e = lp_entry(bytes, n, logprob);
    json_t *tops = json_array();
    for (size_t i = 0; i < n_alts; i++) json_array_append_new(tops, lp_entry(alts[i].bytes, alts[i].n, alts[i].logprob));
    if (!e || !tops) { json_decref(e); json_decref(tops); f->out.oom = true; return; }
    json_object_set_new(e, "top_logprobs", tops);
    if (!f->lp_all) f->lp_all = json_array();
    json_array_append(f->lp_all, e);
    if (f->stream) {
        if (!f->lp_pending) f->lp_pending = json_array();
        json_array_append(f->lp_pending, e);
    }
    json_decref(e);
}

json_t *srv_fmt_take_logprobs(srv_fmt *f) {
    json_t *p = f->lp_pending;
    f->lp_pending = NULL;
    return p;
}

void srv_fmt_tool_begin(srv_fmt *f, const char *id, const char *name) {
    if (f->finished) return;
    srv_fmt_call *p = realloc(f->calls, (f->n_calls + 1) * sizeof *p);
    if (!p) { f->out.oom = true; return; }
    f->calls = p;
    srv_fmt_call *c = &p[f->n_calls++];
    memset(c, 0, sizeof *c);
    snprintf(c->id, sizeof c->id, "%s", id);
    srv_buf tmp;
    srv_buf_init(&tmp);
    size_t nl = strlen(name);
    const char *clean = utf8_clean(name, &nl, &tmp);
    c->name = strndup(clean, nl);
    srv_buf_free(&tmp);
    if (!c->name) { f->out.oom = true; f->n_calls--; return; }
    ops_of(f->api)->tool_begin(f, c);
}

void srv_fmt_tool_args(srv_fmt *f, const char *frag, size_t n) {
    if (!f->n_calls || !n || f->finished) return;
    srv_fmt_call *c = &f->calls[f->n_calls - 1];
    srv_buf tmp;
    srv_buf_init(&tmp);
    frag = utf8_clean(frag, &n, &tmp);
    srv_buf_append(&c->args, frag, n);
    ops_of(f->api)->tool_args(f, c, frag, n);
    srv_buf_free(&tmp);
}

void srv_fmt_tool_end(srv_fmt *f) {
    if (!f->n_calls || f->finished) return;
    srv_fmt_call *c = &f->calls[f->n_calls - 1];
    if (c->args.len == 0) srv_buf_puts(&c->args, "{}");
    ops_of(f->api)->tool_end(f, c);
}

void srv_fmt_tool_abort(srv_fmt *f) {
    if (!f->n_calls || f->finished) return;
    ops_of(f->api)->tool_abort(f);
    for (size_t i = 0; i < f->n_calls; i++) {
        free(f->calls[i].name);
        srv_buf_free(&f->calls[i].args);
    }
    f->n_calls = 0;
}

void srv_fmt_finish(srv_fmt *f, srv_finish fin, const srv_usage *u, const char *matched_stop) {
    if (f->finished) return;
    if (!f->began) srv_fmt_begin(f, u);
    ops_of(f->api)->finish(f, fin, u, matched_stop);
    f->finished = true;
}

void srv_fmt_error(srv_fmt *f, const char *msg) {
    if (f->finished) return;
    ops_of(f->api)->error(f, msg);
    f->finished = true;
}

void srv_fmt_keepalive(srv_fmt *f) {
    if (!f->stream || f->finished) return;
    if (f->api == SRV_API_ANTHROPIC && f->began) {
        json_t *o = json_pack("{s:s}", "type", "ping");
        srv_sse_event(&f->out, "ping", o);
    } else {
        srv_buf_puts(&f->out, ": keep-alive\n\n");
    }
}

static void sse_json(srv_buf *out, json_t *obj) {
    char *s = obj ? json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(obj);
    if (!s) { out->oom = true; return; }
    srv_buf_puts(out, "data: ");
    srv_buf_puts(out, s);
    srv_buf_puts(out, "\n\n");
    free(s);
}

void srv_sse_data(srv_buf *out, json_t *obj) { sse_json(out, obj); }

void srv_sse_event(srv_buf *out, const char *name, json_t *obj) {
    srv_buf_printf(out, "event: %s\n", name);
    sse_json(out, obj);
}

const char *srv_finish_openai(srv_finish fin) {
    switch (fin) {
    case SRV_FINISH_STOP: return "stop";
    case SRV_FINISH_LENGTH: return "length";
    case SRV_FINISH_TOOL_CALLS: return "tool_calls";
    case SRV_FINISH_ERROR: return "error";
    }
    return "stop";
}

json_t *srv_usage_json(srv_api api, const srv_usage *u) {
    srv_usage z = {0};
    if (!u) u = &z;
    int written = u->prompt_tokens - u->cached_tokens;
    if (written < 0) written = 0;
    switch (api) {
    case SRV_API_ANTHROPIC:
        /* input_tokens = prompt tokens not read from cache (§3.2.7 fix: ds4 reported 0). */
        return json_pack("{s:i,s:i,s:i,s:i}", "input_tokens", written, "output_tokens",
                         u->completion_tokens, "cache_read_input_tokens", u->cached_tokens,
                         "cache_creation_input_tokens", 0);
    case SRV_API_RESPONSES:
        return json_pack("{s:i,s:{s:i},s:i,s:{s:i},s:i}", "input_tokens", u->prompt_tokens,
                         "input_tokens_details", "cached_tokens", u->cached_tokens, "output_tokens",
                         u->completion_tokens, "output_tokens_details", "reasoning_tokens",
                         u->reasoning_tokens, "total_tokens", u->prompt_tokens + u->completion_tokens);
    default:
        return json_pack("{s:i,s:i,s:i,s:{s:i},s:{s:i}}", "prompt_tokens", u->prompt_tokens,
                         "completion_tokens", u->completion_tokens, "total_tokens",
                         u->prompt_tokens + u->completion_tokens, "prompt_tokens_details",
                         "cached_tokens", u->cached_tokens, "completion_tokens_details",
                         "reasoning_tokens", u->reasoning_tokens);
    }
}

char *srv_fmt_error_body(srv_api api, const srv_reqerr *e) {
    const char *type = e->http_status >= 500 ? (e->http_status == 503 ? "overloaded_error" : "api_error")
                                             : e->http_status == 401 ? "authentication_error"
                                             : e->http_status == 404 ? "not_found_error"
                                             : e->http_status == 413 ? "request_too_large"
                                             : "invalid_request_error";
    json_t *o;
    if (api == SRV_API_ANTHROPIC) {
        o = json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type", type, "message", e->message);
    } else {
        const char *otype = e->http_status >= 500 ? "server_error"
                          : e->http_status == 401 ? "authentication_error"
                          : "invalid_request_error";
        o = json_pack("{s:{s:s,s:s,s:o,s:o}}", "error", "message", e->message, "type", otype, "param",
                      e->param[0] ? json_string(e->param) : json_null(), "code",
                      e->code[0] ? json_string(e->code) : json_null());
    }
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    return s;
}
