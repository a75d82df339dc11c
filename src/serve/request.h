/*
 * serve/request.h — the one internal request struct every API parser fills, and the shared
 * parsing rules (SERVER_CLI §3.2): JSON depth limit, thinking-mode resolution, sampling fields,
 * stop lists, output limits. Owns parsing and validation only; never renders, tokenizes or
 * touches the engine. API-specific parsers live in api_openai.c, api_anthropic.c,
 * api_responses.c.
 *
 * Invariants:
 *  1. A parser either returns DS4_OK with a fully owned srv_request, or fills srv_reqerr with
 *     an HTTP status and message in the API's terms and leaves *out freed.
 *  2. Every number from the client is range-checked here (CVE-2026-21869 class, ANCHORS §4.2):
 *     negative max_tokens/top_k, NaN/huge temperatures and null values are 400s, never clamps
 *     that hide the mistake.
 */
#ifndef DS4_SERVE_REQUEST_H
#define DS4_SERVE_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "ds4.h"
#include "serve/buf.h"

typedef enum srv_api {
    SRV_API_CHAT = 0,      /* POST /v1/chat/completions */
    SRV_API_COMPLETIONS,   /* POST /v1/completions */
    SRV_API_ANTHROPIC,     /* POST /v1/messages (and count_tokens) */
    SRV_API_RESPONSES      /* POST /v1/responses */
} srv_api;

typedef enum srv_think { SRV_THINK_NONE = 0, SRV_THINK_HIGH, SRV_THINK_MAX } srv_think;

typedef enum srv_role { SRV_ROLE_SYSTEM = 0, SRV_ROLE_USER, SRV_ROLE_ASSISTANT, SRV_ROLE_TOOL } srv_role;

typedef struct srv_tool_call {
    char *id;          /* client's id (may be "" when the client sent none) */
    char *name;
    char *arguments;   /* JSON text of the arguments object as the client sent it */
} srv_tool_call;

typedef struct srv_message {
    srv_role role;
    char *content;          /* never NULL ("" when absent) */
    char *reasoning;        /* NULL when absent */
    char *tool_call_id;     /* tool results: the call answered (NULL otherwise) */
    srv_tool_call *calls;   /* assistant tool calls */
    size_t n_calls;
    char *dsml;             /* assistant: the tool block the model sampled for these calls, set
                               by srv_replay_fill from the tool memory (NULL: render canonical) */
} srv_message;

typedef struct srv_limits {
    size_t max_depth;        /* JSON nesting limit (default 64) */
    int n_ctx;               /* allocated context: Think-Max gate, output cap */
    int default_max_tokens;  /* used when the client gives no limit */
} srv_limits;

/* Think Max needs a context of at least this many tokens (SERVER_CLI §3.2.2). */
#define SRV_THINK_MAX_MIN_CTX 393216

typedef struct srv_request {
    srv_api api;
    char *model;              /* echoed back; never NULL */
    srv_message *msgs;
    size_t n_msgs;
    char *prompt;             /* completions only */
    char **tools;             /* one compact JSON schema per tool */
    size_t n_tools;
    bool tools_active;        /* tools present and tool_choice != none */
    int max_tokens;           /* effective client limit (default applied) */
    double temperature, top_p, min_p;
    int top_k;
    bool has_seed;
    uint64_t seed;
    char **stop;              /* non-empty stop strings */
    size_t n_stop;
    bool stream;
    bool include_usage;       /* stream_options.include_usage */
    srv_think think;
    bool logprobs;
    int top_logprobs;
    bool reasoning_visible;   /* Responses: reasoning.summary opt-in (§3.6) */
    char *response_format;    /* structured-output spec, compact JSON (CHAT_ENCODING §5.2), or NULL */
} srv_request;

typedef struct srv_reqerr {
    int http_status;          /* 400, 413, ... */
    char message[384];
    char param[32];           /* OpenAI error.param ("" = null) */
    char code[48];            /* OpenAI error.code ("" = null) */
} srv_reqerr;

void srv_request_free(srv_request *r);

/* Parses a request body for `api`. count_tokens uses SRV_API_ANTHROPIC. */
ds4_status srv_request_parse(srv_api api, const char *body, size_t len, const srv_limits *lim,
                             srv_request *out, srv_reqerr *rerr);

/* ---- shared helpers for the per-API parsers (request.c) ---- */

/* Depth of the deepest array/object nesting in raw JSON text (strings skipped). */
size_t srv_json_depth(const char *text, size_t len);

/* Sets rerr to a 400 with the formatted message; returns DS4_ERR_INVALID_ARG. */
ds4_status srv_reqerr_set(srv_reqerr *rerr, int status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Thinking controls collected while parsing (§3.2.2), resolved by srv_think_resolve. */
typedef struct srv_think_ctl {
    bool enabled, explicit_;
    int effort;   /* 0 none, 1 high, 2 max */
} srv_think_ctl;
void srv_think_init(srv_think_ctl *t);
/* Maps a reasoning-effort value (string or null); 400 on anything else. */
ds4_status srv_think_effort(srv_think_ctl *t, json_t *v, const char *field, srv_reqerr *rerr);
/* `thinking: bool | {"type": ...}` and `think: bool`. */
ds4_status srv_think_thinking(srv_think_ctl *t, json_t *v, srv_reqerr *rerr);
srv_think srv_think_resolve(const srv_think_ctl *t, const char *model, int n_ctx);

/* Typed field readers: absent → leave default; wrong type/range → 400 naming the field. */
ds4_status srv_get_number(json_t *obj, const char *key, double lo, double hi, double *out,
                          srv_reqerr *rerr);
ds4_status srv_get_int(json_t *obj, const char *key, long long lo, long long hi, long long *out,
                       bool *present, srv_reqerr *rerr);
ds4_status srv_get_bool(json_t *obj, const char *key, bool *out, srv_reqerr *rerr);
/* Common sampling + limit fields (temperature, top_p, top_k, min_p, seed per `api`). */
ds4_status srv_get_sampling(json_t *root, srv_api api, srv_request *r, srv_reqerr *rerr);
/* stop: string or array of strings (chat/completions), stop_sequences (Anthropic). */
ds4_status srv_get_stop(json_t *v, const char *field, srv_request *r, srv_reqerr *rerr);
/* stream + stream_options.include_usage */
ds4_status srv_get_stream(json_t *root, srv_request *r, srv_reqerr *rerr);
/* Content as text: string | null | array of strings / {"text": ...} parts (images dropped). */
char *srv_content_text(json_t *v, bool *bad);
/* response_format {"type":"json_object"|"json_schema",...}; "text" or null = none. */
ds4_status srv_get_response_format(json_t *v, const char *field, srv_request *r, srv_reqerr *rerr);
/* Compact JSON text of a value (caller frees). */
char *srv_json_compact(json_t *v);
/* strdup that never returns NULL for NULL input ("" instead); NULL only on OOM. */
char *srv_strdup0(const char *s);

/* Appends a message; returns NULL on OOM. The returned message is zeroed except role. */
srv_message *srv_request_add_msg(srv_request *r, srv_role role);
/* Appends a tool call to m; strings are copied. */
bool srv_message_add_call(srv_message *m, const char *id, const char *name, const char *args);
/* Appends one tool schema line (JSON text, copied). */
bool srv_request_add_tool(srv_request *r, const char *schema);
/* root.tools: *out is the array, or NULL when absent or null; 400 when it is not an array. */
ds4_status srv_get_tools(json_t *root, json_t **out, srv_reqerr *rerr);
/* Appends a tool schema given as JSON (compacted, not consumed); false on OOM. */
bool srv_request_add_tool_json(srv_request *r, json_t *schema);

/* Per-API entry points (api_openai.c, api_anthropic.c, api_responses.c). `root` is an object. */
ds4_status srv_parse_chat(json_t *root, srv_request *r, srv_think_ctl *t, srv_reqerr *rerr);
ds4_status srv_parse_completions(json_t *root, srv_request *r, srv_think_ctl *t, srv_reqerr *rerr);
ds4_status srv_parse_anthropic(json_t *root, srv_request *r, srv_think_ctl *t, srv_reqerr *rerr);
ds4_status srv_parse_responses(json_t *root, srv_request *r, srv_think_ctl *t, srv_reqerr *rerr);

#endif
