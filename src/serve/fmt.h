/*
 * serve/fmt.h — response formatting: turns the generation events of one request (reasoning
 * text, visible text, tool-call header/argument fragments, finish + usage) into the wire bytes
 * of its API, streaming (SSE) or not (SERVER_CLI §3.3-§3.6, §4.6). Owns event order and JSON
 * shapes; must not sample, parse DSML or touch sockets: bytes accumulate in `out` and the HTTP
 * layer drains them.
 *
 * Event order contract for callers (the generator):
 *   begin → { reasoning | content | tool_begin → tool_args* → tool_end }* → finish
 *   error may replace finish at any point after begin (mid-stream failure, §4.6).
 *   tool_abort may come after any tool event: the tool block turned out malformed; every call
 *   reported so far is withdrawn and the block's text follows as content.
 * Reasoning after content, or content after a tool call, is accepted and still well formed.
 */
#ifndef DS4_SERVE_FMT_H
#define DS4_SERVE_FMT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "serve/buf.h"
#include "serve/request.h"

typedef enum srv_finish {
    SRV_FINISH_STOP = 0,    /* EOS or stop sequence */
    SRV_FINISH_LENGTH,      /* token limit or context full */
    SRV_FINISH_TOOL_CALLS,  /* at least one tool call parsed */
    SRV_FINISH_ERROR        /* decode failure, cancelled, shutdown */
} srv_finish;

typedef struct srv_usage {
    int prompt_tokens;
    int cached_tokens;      /* reused prefix (live slot or disk cache) */
    int completion_tokens;
    int reasoning_tokens;
} srv_usage;

typedef struct srv_fmt_call {
    char id[48];
    char *name;
    srv_buf args;           /* compact JSON object text, accumulated from fragments */
} srv_fmt_call;

typedef struct srv_fmt {
    srv_api api;
    bool stream, include_usage, reasoning_visible;
    bool want_logprobs;     /* request asked for logprobs (OpenAI chat/completions) */
    json_t *lp_all;         /* every token's entry (non-streaming body) */
    json_t *lp_pending;     /* entries not yet attached to a streamed chunk */
    char *model;
    char id[48];            /* chatcmpl-/cmpl-/msg_/resp_ + random hex */
    long long created;
    srv_buf out;            /* bytes ready for the client */
    srv_buf reasoning, content;
    srv_fmt_call *calls;
    size_t n_calls;
    bool began, finished;
    /* streaming state */
    int open_block;         /* 0 none, 1 reasoning, 2 text, 3 tool */
    int block_index;        /* Anthropic content block index / Responses output index */
    int seq;                /* Responses sequence_number */
    bool sent_text, sent_reasoning;
    json_t *items;          /* Responses: finished output items */
    char item_id[48];       /* Responses: id of the open item */
    size_t item_from;       /* Responses: offset in reasoning/content where the open item began */
    bool fixed_ids;         /* id_hint given: derive item ids (tests) */
    int n_item_ids;
} srv_fmt;

/* id_hint: optional fixed id (tests); NULL draws a random one. created: Unix seconds. */
bool srv_fmt_init(srv_fmt *f, const srv_request *req, const char *id_hint, long long created);
void srv_fmt_free(srv_fmt *f);

void srv_fmt_begin(srv_fmt *f, const srv_usage *u);
void srv_fmt_reasoning(srv_fmt *f, const char *s, size_t n);
void srv_fmt_content(srv_fmt *f, const char *s, size_t n);
/* id: the tool-call id to report (call_/toolu_ + 32 hex, see toolids.h). */
void srv_fmt_tool_begin(srv_fmt *f, const char *id, const char *name);
void srv_fmt_tool_args(srv_fmt *f, const char *frag, size_t n);
void srv_fmt_tool_end(srv_fmt *f);
/* Withdraws every call reported so far (DS4_DSML_CALLS_ABORT): non-streaming bodies and the
 * finish carry none of them. Streams close what is open so the event sequence stays valid:
 * Anthropic closes the tool_use block (the text follows in a new text block, stop_reason
 * end_turn), Responses ends the function_call items with status "incomplete" (also in the
 * final response object); OpenAI chat cannot retract tool_calls deltas already sent, so the
 * stream ends with finish_reason "stop" and the text as content. */
void srv_fmt_tool_abort(srv_fmt *f);
/* One generated token's log-probability and its most likely alternatives (OpenAI logprobs;
 * ignored unless the request asked for them). Bytes need not be UTF-8. */
typedef struct srv_logprob_alt {
    const char *bytes;
    size_t n;
    float logprob;
} srv_logprob_alt;
void srv_fmt_logprob(srv_fmt *f, const char *bytes, size_t n, float logprob, const srv_logprob_alt *alts,
                     size_t n_alts);
/* Takes the pending entries for a streamed chunk (NULL when none or not requested). */
json_t *srv_fmt_take_logprobs(srv_fmt *f);

/* matched_stop: the stop sequence that ended generation, or NULL. */
void srv_fmt_finish(srv_fmt *f, srv_finish fin, const srv_usage *u, const char *matched_stop);
/* Failure after begin: streams end with an error event; non-streaming callers send an HTTP
 * error instead (srv_fmt_error_body). */
void srv_fmt_error(srv_fmt *f, const char *msg);
/* SSE keep-alive (comment line, Anthropic ping). No-op for non-streaming. */
void srv_fmt_keepalive(srv_fmt *f);

/* Error body in the API's own shape (SERVER_CLI §2.5); caller frees. */
char *srv_fmt_error_body(srv_api api, const srv_reqerr *e);

/* ---- internals shared by fmt_*.c ---- */
void srv_sse_data(srv_buf *out, json_t *obj);                    /* steals obj */
void srv_sse_event(srv_buf *out, const char *name, json_t *obj); /* steals obj */
json_t *srv_usage_json(srv_api api, const srv_usage *u);
const char *srv_finish_openai(srv_finish fin);

typedef struct srv_fmt_ops {
    void (*begin)(srv_fmt *, const srv_usage *);
    void (*reasoning)(srv_fmt *, const char *, size_t);
    void (*content)(srv_fmt *, const char *, size_t);
    void (*tool_begin)(srv_fmt *, srv_fmt_call *);
    void (*tool_args)(srv_fmt *, srv_fmt_call *, const char *, size_t);
    void (*tool_end)(srv_fmt *, srv_fmt_call *);
    void (*tool_abort)(srv_fmt *);   /* streaming cleanup before the calls are dropped */
    void (*finish)(srv_fmt *, srv_finish, const srv_usage *, const char *);
    void (*error)(srv_fmt *, const char *);
} srv_fmt_ops;

extern const srv_fmt_ops srv_fmt_chat_ops, srv_fmt_completions_ops, srv_fmt_anthropic_ops,
    srv_fmt_responses_ops;

#endif
