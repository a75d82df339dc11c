/*
 * serve/http.c — libmicrohttpd glue (see http.h). One thread per connection (MHD), so the
 * connection thread may block: non-streaming requests wait for their job, streaming requests
 * block in the content reader until the worker adds bytes. Both poll the socket while waiting
 * so a client that goes away cancels its generation (ANCHORS §3.10).
 */
#include "serve/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "core/error.h"
#include "serve/replay.h"

struct srv_http {
    srv_http_opts o;
    char *api_key;
    char *model_name;
    struct MHD_Daemon *d;
    srv_metrics *metrics;
    atomic_bool ready;
    const srv_engine *eng;
    srv_sched *sched;
    srv_limits lim;
    srv_toolmem *toolmem;
    int port;
};

typedef struct conn_state {
    srv_buf body;
    bool too_big;
} conn_state;

typedef struct stream_ctx {
    srv_http *h;
    srv_job *job;
    int fd;
    int64_t last_write_ms;
} stream_ctx;

bool srv_http_key_ok(const char *expected, const char *authorization, const char *x_api_key) {
    if (!expected || !*expected) return true;
    const char *given = NULL;
    if (authorization && strncasecmp(authorization, "Bearer ", 7) == 0) given = authorization + 7;
    else if (x_api_key) given = x_api_key;
    if (!given) return false;
    /* Compare digests so neither the length nor a prefix leaks through timing (ANCHORS §3.11). */
    unsigned char a[32], b[32];
    unsigned int la = 0, lb = 0;
    EVP_Digest(expected, strlen(expected), a, &la, EVP_sha256(), NULL);
    EVP_Digest(given, strlen(given), b, &lb, EVP_sha256(), NULL);
    return CRYPTO_memcmp(a, b, 32) == 0;
}

static void add_common_headers(srv_http *h, struct MHD_Response *r) {
    if (h->o.cors) {
        MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
        MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        MHD_add_response_header(r, "Access-Control-Allow-Headers", "*");
    }
}

static enum MHD_Result send_body(srv_http *h, struct MHD_Connection *c, unsigned status, const char *type,
                                 char *body, size_t len) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) { free(body); return MHD_NO; }
    if (type) MHD_add_response_header(r, "Content-Type", type);
    if (status == 503) MHD_add_response_header(r, "Retry-After", "1");
    add_common_headers(h, r);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    if (status >= 400 && h->metrics) atomic_fetch_add(&h->metrics->errors, 1);
    return ret;
}

static enum MHD_Result send_json(srv_http *h, struct MHD_Connection *c, unsigned status, json_t *o) {
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    if (!s) return MHD_NO;
    return send_body(h, c, status, "application/json", s, strlen(s));
}

static enum MHD_Result send_error(srv_http *h, struct MHD_Connection *c, srv_api api, const srv_reqerr *e) {
    char *s = srv_fmt_error_body(api, e);
    if (!s) return MHD_NO;
    return send_body(h, c, (unsigned)(e->http_status ? e->http_status : 500), "application/json", s, strlen(s));
}

static enum MHD_Result send_err(srv_http *h, struct MHD_Connection *c, srv_api api, int status, const char *msg) {
    srv_reqerr e;
    srv_reqerr_set(&e, status, NULL, "%s", msg);
    return send_error(h, c, api, &e);
}

static int conn_fd(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

/* True when the peer closed its side (or the socket failed). Called on the connection's own
 * thread, so the fd cannot be closed under us. */
static bool peer_gone(int fd) {
    if (fd < 0) return false;
    struct pollfd p = {fd, POLLIN | POLLRDHUP, 0};
    if (poll(&p, 1, 0) <= 0) return false;
    if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) return true;
    if (p.revents & POLLIN) {
        char b;
        ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
    }
    return false;
}

static void timed_wait(srv_job *j, int ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
    pthread_cond_timedwait(&j->cv, &j->mu, &ts);
}

/* ---- streaming ---- */

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    stream_ctx *sc = cls;
    srv_job *j = sc->job;
    pthread_mutex_lock(&j->mu);
    while (j->fmt.out.len == 0 && !j->done) {
        timed_wait(j, 250);
        if (peer_gone(sc->fd)) {
            atomic_store(&j->cancel, true);
            pthread_mutex_unlock(&j->mu);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (j->fmt.out.len == 0 && srv_now_ms() - sc->last_write_ms >= (int64_t)sc->h->o.keepalive_s * 1000) {
            srv_fmt_keepalive(&j->fmt);
            if (j->fmt.out.len == 0) srv_buf_puts(&j->fmt.out, ": keep-alive\n\n");
        }
    }
    if (j->fmt.out.len == 0 && j->done && j->error_before_output) {
        /* Failed before the formatter began: still end the stream with an error event. */
        srv_fmt_error(&j->fmt, j->err.message);
        if (j->fmt.out.len == 0) {
            char *s = srv_fmt_error_body(j->req.api, &j->err);
            if (s) { srv_buf_printf(&j->fmt.out, "event: error\ndata: %s\n\n", s); free(s); }
        }
        j->error_before_output = false;
    }
    if (j->fmt.out.len > 0) {
        size_t n = j->fmt.out.len < max ? j->fmt.out.len : max;
        memcpy(buf, j->fmt.out.data, n);
        srv_buf_consume(&j->fmt.out, n);
        sc->last_write_ms = srv_now_ms();
        pthread_mutex_unlock(&j->mu);
        return (ssize_t)n;
    }
    pthread_mutex_unlock(&j->mu);
    return MHD_CONTENT_READER_END_OF_STREAM;
}

static void stream_free(void *cls) {
    stream_ctx *sc = cls;
    /* Response gone (finished or client dropped): stop generating if still running. */
    atomic_store(&sc->job->cancel, true);
    srv_job_unref(sc->job);
    free(sc);
}

/* ---- generation endpoints ---- */

static char *forced_text(srv_http *h, const char *body, size_t len, srv_reqerr *e) {
    if (!memmem(body, len, "ds4_test_forced_completion", 26)) return NULL;
    json_t *root = json_loadb(body, len, 0, NULL);
    json_t *v = root ? json_object_get(root, "ds4_test_forced_completion") : NULL;
    char *out = NULL;
    if (v && !h->o.allow_test_forced)
        srv_reqerr_set(e, 400, "ds4_test_forced_completion", "ds4_test_forced_completion is a test-only field; start the server with --enable-test-forced-completion");
    else if (v && !json_is_string(v))
        srv_reqerr_set(e, 400, "ds4_test_forced_completion", "'ds4_test_forced_completion' must be a string");
    else if (v)
        out = strdup(json_string_value(v));
    json_decref(root);
    return out;
}

static enum MHD_Result handle_generate(srv_http *h, struct MHD_Connection *c, srv_api api, bool count_only,
                                       const char *body, size_t len) {
    srv_request req;
    srv_reqerr e;
    memset(&e, 0, sizeof e);
    char *forced = forced_text(h, body, len, &e);
    if (e.http_status) return send_error(h, c, api, &e);
    if (srv_request_parse(api, body, len, &h->lim, &req, &e) != DS4_OK) { free(forced); return send_error(h, c, api, &e); }
    ds4_error err;
    int32_t *toks = NULL;
    size_t n = 0;
    srv_replay_fill(&req, h->toolmem);
    if (h->eng->prompt(h->eng->ctx, &req, &toks, &n, &err) != DS4_OK) {
        srv_request_free(&req);
        free(forced);
        return send_err(h, c, api, 400, err.msg);
    }
    if (count_only) {
        srv_request_free(&req);
        free(toks);
        free(forced);
        return send_json(h, c, 200, json_pack("{s:I}", "input_tokens", (json_int_t)n));
    }
    if (n >= (size_t)h->eng->n_ctx) {
        /* Context overflow in each API's own shape (SERVER_CLI §2.5). */
        json_t *o;
        char msg[160];
        snprintf(msg, sizeof msg, "Prompt has %zu tokens, but the configured context size is %d tokens", n, h->eng->n_ctx);
        if (api == SRV_API_ANTHROPIC)
            o = json_pack("{s:s,s:{s:s,s:s,s:I,s:i}}", "type", "error", "error", "type", "invalid_request_error",
                          "message", msg, "n_prompt_tokens", (json_int_t)n, "n_ctx", h->eng->n_ctx);
        else
            o = json_pack("{s:{s:s,s:s,s:s,s:s,s:I,s:i}}", "error", "message", msg, "type", "invalid_request_error",
                          "param", api == SRV_API_COMPLETIONS ? "prompt" : api == SRV_API_RESPONSES ? "input" : "messages",
                          "code", "context_length_exceeded", "n_prompt_tokens", (json_int_t)n, "n_ctx", h->eng->n_ctx);
        srv_request_free(&req);
        free(toks);
        free(forced);
        return send_json(h, c, 400, o);
    }
    srv_job *j = srv_job_new(&req, toks, n);
    if (!j) { free(forced); return send_err(h, c, api, 500, "out of memory"); }
    j->forced = forced;
    if (!srv_fmt_init(&j->fmt, &j->req, NULL, (long long)time(NULL))) {
        srv_job_unref(j);
        return send_err(h, c, api, 500, "cannot create response ids");
    }
    if (h->metrics) atomic_fetch_add(&h->metrics->requests, 1);
    if (srv_sched_submit(h->sched, j) != 0) {
        if (h->metrics) atomic_fetch_add(&h->metrics->rejected_queue_full, 1);
        srv_job_unref(j);
        return send_err(h, c, api, 503, "server busy: request queue is full, retry later");
    }
    int fd = conn_fd(c);
    if (j->req.stream) {
        stream_ctx *sc = calloc(1, sizeof *sc);
        if (!sc) { atomic_store(&j->cancel, true); srv_job_unref(j); return MHD_NO; }
        sc->h = h;
        sc->job = j;
        sc->fd = fd;
        sc->last_write_ms = srv_now_ms();
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_reader, sc, stream_free);
        if (!r) { stream_free(sc); return MHD_NO; }
        MHD_add_response_header(r, "Content-Type", "text/event-stream");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        MHD_add_response_header(r, "X-Accel-Buffering", "no");
        add_common_headers(h, r);
        enum MHD_Result ret = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        return ret;
    }
    pthread_mutex_lock(&j->mu);
    while (!j->done) {
        timed_wait(j, 250);
        if (!atomic_load(&j->cancel) && peer_gone(fd)) atomic_store(&j->cancel, true);
    }
    enum MHD_Result ret;
    if (j->error_before_output) {
        srv_reqerr er = j->err;
        pthread_mutex_unlock(&j->mu);
        ret = send_error(h, c, api, &er);
    } else {
        size_t blen = 0;
        char *b = srv_buf_take(&j->fmt.out, &blen);
        pthread_mutex_unlock(&j->mu);
        ret = b ? send_body(h, c, 200, "application/json", b, blen) : send_err(h, c, api, 500, "out of memory");
    }
    srv_job_unref(j);
    return ret;
}

/* ---- simple endpoints ---- */

static json_t *model_obj(srv_http *h) {
    int ctx = h->eng ? h->eng->n_ctx : 0;
    return json_pack("{s:s,s:s,s:I,s:s,s:i,s:[s,s,s,s,s,s,s,s,s,s,s]}", "id", h->model_name, "object", "model",
                     "created", (json_int_t)1767225600, "owned_by", "ds4", "context_length", ctx,
                     "supported_parameters", "tools", "tool_choice", "max_tokens", "temperature", "top_p",
                     "top_k", "min_p", "stop", "seed", "stream", "reasoning_effort");
}

static enum MHD_Result handle_tokenize(srv_http *h, struct MHD_Connection *c, const char *body, size_t len, bool detok) {
    json_t *root = json_loadb(body, len, 0, NULL);
    if (!root || !json_is_object(root)) { json_decref(root); return send_err(h, c, SRV_API_CHAT, 400, "body must be a JSON object"); }
    ds4_error err;
    if (!detok) {
        json_t *t = json_object_get(root, "content");
        if (!t || !json_is_string(t)) { json_decref(root); return send_err(h, c, SRV_API_CHAT, 400, "'content' must be a string"); }
        /* "special": false tokenizes as the server does client text in prompts: chat markers
         * stay plain text (default true: markers become their special tokens). */
        json_t *sp = json_object_get(root, "special");
        if (sp && !json_is_boolean(sp)) { json_decref(root); return send_err(h, c, SRV_API_CHAT, 400, "'special' must be a boolean"); }
        uint32_t flags = sp && json_is_false(sp) ? DS4_TOKENIZE_SPECIAL_AS_TEXT : 0;
        int32_t *toks = NULL;
        size_t n = 0;
        ds4_status st = h->eng->tokenize(h->eng->ctx, json_string_value(t), json_string_length(t), flags, &toks, &n, &err);
        json_decref(root);
        if (st) return send_err(h, c, SRV_API_CHAT, 400, err.msg);
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++) json_array_append_new(arr, json_integer(toks[i]));
        free(toks);
        return send_json(h, c, 200, json_pack("{s:o}", "tokens", arr));
    }
    json_t *arr = json_object_get(root, "tokens");
    if (!arr || !json_is_array(arr)) { json_decref(root); return send_err(h, c, SRV_API_CHAT, 400, "'tokens' must be an array of token ids"); }
    srv_buf out;
    srv_buf_init(&out);
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        const char *p;
        size_t n;
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= (json_int_t)h->eng->n_vocab ||
            h->eng->token_bytes(h->eng->ctx, (int32_t)json_integer_value(v), &p, &n, &err)) {
            srv_buf_free(&out);
            json_decref(root);
            return send_err(h, c, SRV_API_CHAT, 400, "'tokens' holds an id outside the vocabulary");
        }
        srv_buf_append(&out, p, n);
    }
    json_decref(root);
    json_t *o = json_pack("{s:s%}", "content", out.data ? out.data : "", out.len);
    srv_buf_free(&out);
    if (!o) return send_err(h, c, SRV_API_CHAT, 400, "tokens do not decode to valid UTF-8");
    return send_json(h, c, 200, o);
}

static srv_api api_of_path(const char *url) {
    return strncmp(url, "/v1/messages", 12) == 0 ? SRV_API_ANTHROPIC : SRV_API_CHAT;
}

static enum MHD_Result route(srv_http *h, struct MHD_Connection *c, const char *url, const char *method,
                             const char *body, size_t len) {
    bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    srv_api api = api_of_path(url);
    if (strcmp(url, "/health") == 0 || strcmp(url, "/v1/health") == 0) {
        if (!atomic_load(&h->ready))
            return send_json(h, c, 503, json_pack("{s:{s:i,s:s,s:s}}", "error", "code", 503, "message", "Loading model", "type", "unavailable_error"));
        return send_json(h, c, 200, json_pack("{s:s}", "status", "ok"));
    }
    if (get && strcmp(url, "/metrics") == 0) {
        srv_buf b;
        srv_buf_init(&b);
        srv_metrics_render(h->metrics, &b);
        size_t n = 0;
        char *s = srv_buf_take(&b, &n);
        return s ? send_body(h, c, 200, "text/plain; version=0.0.4", s, n) : MHD_NO;
    }
    if (!atomic_load(&h->ready)) return send_err(h, c, api, 503, "model is loading");
    if (get && strcmp(url, "/v1/models") == 0)
        return send_json(h, c, 200, json_pack("{s:s,s:[o]}", "object", "list", "data", model_obj(h)));
    if (get && strncmp(url, "/v1/models/", 11) == 0) {
        if (strcmp(url + 11, h->model_name) != 0) return send_err(h, c, SRV_API_CHAT, 404, "model not found");
        return send_json(h, c, 200, model_obj(h));
    }
    if (post && strcmp(url, "/v1/chat/completions") == 0) return handle_generate(h, c, SRV_API_CHAT, false, body, len);
    if (post && strcmp(url, "/v1/completions") == 0) return handle_generate(h, c, SRV_API_COMPLETIONS, false, body, len);
    if (post && strcmp(url, "/v1/messages") == 0) return handle_generate(h, c, SRV_API_ANTHROPIC, false, body, len);
    if (post && strcmp(url, "/v1/messages/count_tokens") == 0) return handle_generate(h, c, SRV_API_ANTHROPIC, true, body, len);
    if (post && strcmp(url, "/v1/responses") == 0) return handle_generate(h, c, SRV_API_RESPONSES, false, body, len);
    if (post && strcmp(url, "/tokenize") == 0) return handle_tokenize(h, c, body, len, false);
    if (post && strcmp(url, "/detokenize") == 0) return handle_tokenize(h, c, body, len, true);
    return send_err(h, c, api, 404, "unknown endpoint");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)version;
    srv_http *h = cls;
    conn_state *cs = *con_cls;
    if (!cs) {
        if (!(cs = calloc(1, sizeof *cs))) return MHD_NO;
        *con_cls = cs;
        if (strcmp(method, "OPTIONS") == 0) return MHD_YES; /* answered at the end, no auth (preflight) */
        bool public_path = strcmp(url, "/health") == 0 || strcmp(url, "/v1/health") == 0;
        if (!public_path &&
            !srv_http_key_ok(h->api_key, MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization"),
                             MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-api-key")))
            return send_err(h, c, api_of_path(url), 401, "invalid or missing API key (send 'Authorization: Bearer KEY' or 'x-api-key: KEY')");
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > h->o.max_body_bytes) {
            char msg[96];
            snprintf(msg, sizeof msg, "request body over the %zu-byte limit", h->o.max_body_bytes);
            return send_err(h, c, api_of_path(url), 413, msg);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (cs->body.len + *upload_size > h->o.max_body_bytes) cs->too_big = true;
        else srv_buf_append(&cs->body, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    if (strcmp(method, "OPTIONS") == 0) {
        struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        add_common_headers(h, r);
        enum MHD_Result ret = MHD_queue_response(c, 204, r);
        MHD_destroy_response(r);
        return ret;
    }
    if (cs->too_big || !srv_buf_ok(&cs->body)) {
        char msg[96];
        snprintf(msg, sizeof msg, "request body over the %zu-byte limit", h->o.max_body_bytes);
        return send_err(h, c, api_of_path(url), 413, msg);
    }
    return route(h, c, url, method, cs->body.data ? cs->body.data : "", cs->body.len);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode tc) {
    (void)cls; (void)c; (void)tc;
    conn_state *cs = *con_cls;
    if (!cs) return;
    srv_buf_free(&cs->body);
    free(cs);
    *con_cls = NULL;
}

ds4_status srv_http_start(srv_http **out, const srv_http_opts *o, srv_metrics *metrics, ds4_error *err) {
    *out = NULL;
    srv_http *h = calloc(1, sizeof *h);
    if (!h) return ds4_seterr(err, DS4_ERR_NOMEM, "http: out of memory");
    h->o = *o;
    if (!h->o.max_body_bytes) h->o.max_body_bytes = 64u << 20;
    if (!h->o.max_json_depth) h->o.max_json_depth = 64;
    if (h->o.max_connections <= 0) h->o.max_connections = 256;
    if (h->o.keepalive_s <= 0) h->o.keepalive_s = 10;
    h->api_key = o->api_key && *o->api_key ? strdup(o->api_key) : NULL;
    h->model_name = strdup(o->model_name ? o->model_name : "deepseek-v4-flash");
    h->metrics = metrics;
    atomic_init(&h->ready, false);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)o->port);
    const char *host = !o->host || strcmp(o->host, "localhost") == 0 ? "127.0.0.1" : o->host;
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        free(h->api_key); free(h->model_name); free(h);
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "http: --host '%s' is not an IPv4 address", host);
    }
    h->d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC, 0, NULL, NULL,
                            on_request, h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)h->o.max_connections,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120, MHD_OPTION_NOTIFY_COMPLETED,
                            on_completed, h, MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1, MHD_OPTION_END);
    if (!h->d) {
        int e = errno;
        free(h->api_key); free(h->model_name); free(h);
        return ds4_seterr(err, DS4_ERR_IO, "http: cannot listen on %s:%d: %s", host, o->port, strerror(e));
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : o->port;
    *out = h;
    return DS4_OK;
}

int srv_http_port(const srv_http *h) { return h->port; }

void srv_http_set_ready(srv_http *h, const srv_engine *eng, srv_sched *sched, const srv_limits *lim) {
    h->eng = eng;
    h->sched = sched;
    h->lim = *lim;
    if (!h->lim.max_depth) h->lim.max_depth = h->o.max_json_depth;
    atomic_store(&h->ready, true);
}

void srv_http_set_toolmem(srv_http *h, srv_toolmem *tm) { h->toolmem = tm; }

void srv_http_quiesce(srv_http *h) {
    if (h && h->d) MHD_quiesce_daemon(h->d);
}

void srv_http_stop(srv_http *h) {
    if (!h) return;
    MHD_stop_daemon(h->d);
    free(h->api_key);
    free(h->model_name);
    free(h);
}
