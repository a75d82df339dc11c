/*
 * serve/http.h — the HTTP front end on libmicrohttpd: listening, routing, API-key check, body
 * and JSON-depth limits, CORS, per-API error shapes, SSE streaming with keep-alives and
 * client-disconnect detection (issue #6 "API", "Safety"). Owns connection threads; never
 * touches the engine except through the scheduler and the srv_engine text functions.
 */
#ifndef DS4_SERVE_HTTP_H
#define DS4_SERVE_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "ds4.h"
#include "serve/engine.h"
#include "serve/metrics.h"
#include "serve/request.h"
#include "serve/scheduler.h"
#include "serve/toolids.h"

typedef struct srv_http_opts {
    const char *host;         /* IPv4 literal or "localhost" (default 127.0.0.1) */
    int port;                 /* 0 = pick a free port (tests); see srv_http_port */
    const char *api_key;      /* NULL/"" = no authentication */
    bool cors;
    size_t max_body_bytes;    /* default 64 MiB */
    size_t max_json_depth;    /* default 64 */
    int max_connections;      /* default 256 */
    int keepalive_s;          /* SSE keep-alive interval, default 10 */
    bool allow_test_forced;   /* honour "ds4_test_forced_completion" (test-only) */
    const char *model_name;   /* id reported by /v1/models */
} srv_http_opts;

typedef struct srv_http srv_http;

/* Starts listening; /health answers 503 until srv_http_set_ready. */
ds4_status srv_http_start(srv_http **out, const srv_http_opts *o, srv_metrics *metrics, ds4_error *err);
int srv_http_port(const srv_http *h);
/* Attaches the engine text functions, the scheduler and the request limits (borrowed; they must
 * outlive srv_http_stop) and starts serving generation requests. */
void srv_http_set_ready(srv_http *h, const srv_engine *eng, srv_sched *sched, const srv_limits *lim);
/* Tool memory for exact-DSML replay when rendering history (borrowed; NULL = canonical only). */
void srv_http_set_toolmem(srv_http *h, srv_toolmem *tm);
/* Closes the listening socket; open connections go on. */
void srv_http_quiesce(srv_http *h);
/* Stops accepting connections and waits for the connection threads. */
void srv_http_stop(srv_http *h);

/* Constant-time key check on `Authorization: Bearer K` or `x-api-key: K` (exposed for tests). */
bool srv_http_key_ok(const char *expected, const char *authorization, const char *x_api_key);

#endif
