/* tests/test_serve_sched.c — the scheduler (slot routing, queue bound, cancellation, disk
 * resume) and the HTTP front end (auth, limits, CORS, health, error shapes, streaming), driven
 * through a byte-level scripted engine: token = byte, and the model always predicts
 * "previous byte + 1", so every answer is known in advance. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "serve/http.h"
#include "serve/scheduler.h"
#include "serve_testjob.h"
#include "testutil.h"

#define FV 258 /* 256 bytes + EOS + spare */
#define FEOS 256
#define FCTX 4096

static atomic_int eval_delay_us;

typedef struct fsess {
    int32_t t[FCTX], ck[FCTX];
    size_t n, n_ck;
    bool has_ck;
    float logits[FV];
} fsess;

static void f_logits(fsess *s) {
    for (int i = 0; i < FV; i++) s->logits[i] = 0;
    int next = s->n ? (s->t[s->n - 1] + 1) % 256 : 'a';
    s->logits[next] = 10;
}

static ds4_status f_tokenize(void *c, const char *s, size_t n, uint32_t flags, int32_t **t, size_t *nt, ds4_error *e) {
    (void)c; (void)e; (void)flags;
    *t = malloc((n ? n : 1) * sizeof **t);
    for (size_t i = 0; i < n; i++) (*t)[i] = (unsigned char)s[i];
    *nt = n;
    return DS4_OK;
}
static ds4_status f_prompt(void *c, const srv_request *r, int32_t **t, size_t *nt, ds4_error *e) {
    srv_buf text;
    srv_buf_init(&text);
    if (r->prompt) srv_buf_puts(&text, r->prompt);
    for (size_t i = 0; i < r->n_msgs; i++) srv_buf_puts(&text, r->msgs[i].content);
    ds4_status st = f_tokenize(c, text.data ? text.data : "", text.len, 0, t, nt, e);
    srv_buf_free(&text);
    return st;
}
static char bytes_tab[256];
static ds4_status f_token_bytes(void *c, int32_t tok, const char **p, size_t *n, ds4_error *e) {
    (void)c;
    if (tok < 0 || tok > 255) return ds4_seterr(e, DS4_ERR_RANGE, "token %d", tok);
    bytes_tab[tok] = (char)tok;
    *p = &bytes_tab[tok];
    *n = 1;
    return DS4_OK;
}
static ds4_status f_create(void *c, void **s, ds4_error *e) { (void)c; (void)e; *s = calloc(1, sizeof(fsess)); return DS4_OK; }
static void f_free(void *s) { free(s); }
static ds4_status f_sync(void *vs, const int32_t *t, size_t n, size_t *reused, ds4_error *e) {
    (void)e;
    fsess *s = vs;
    size_t k = 0;
    while (k < s->n && k < n && s->t[k] == t[k]) k++;
    if (k < s->n) { /* live is not a prefix: checkpoint, else start over (engine rule) */
        size_t c = 0;
        while (s->has_ck && c < s->n_ck && c < n && s->ck[c] == t[c]) c++;
        if (s->has_ck && c == s->n_ck) { memcpy(s->t, s->ck, c * sizeof *t); s->n = c; }
        else s->n = 0;
    }
    *reused = s->n;
    for (size_t i = s->n; i < n; i++) s->t[i] = t[i];
    s->n = n;
    f_logits(s);
    return DS4_OK;
}
static ds4_status f_checkpoint(void *vs, ds4_error *e) {
    (void)e;
    fsess *s = vs;
    memcpy(s->ck, s->t, s->n * sizeof *s->t);
    s->n_ck = s->n;
    s->has_ck = true;
    return DS4_OK;
}
static const int32_t *f_tokens(void *vs, size_t *n) { fsess *s = vs; *n = s->n; return s->t; }
static ds4_status f_eval(void *vs, int32_t tok, ds4_error *e) {
    fsess *s = vs;
    if (s->n >= FCTX) return ds4_seterr(e, DS4_ERR_RANGE, "full");
    int d = atomic_load(&eval_delay_us);
    if (d) usleep((useconds_t)d);
    s->t[s->n++] = tok;
    f_logits(s);
    return DS4_OK;
}
static ds4_status f_get_logits(void *vs, const float **l, ds4_error *e) { (void)e; *l = ((fsess *)vs)->logits; return DS4_OK; }
static void f_reset(void *vs) { ((fsess *)vs)->n = 0; }
static ds4_status f_snapshot(void *vs, uint8_t **out, uint64_t *n, ds4_error *e) {
    (void)e;
    fsess *s = vs;
    *n = sizeof(size_t) + s->n * sizeof(int32_t);
    *out = malloc(*n);
    memcpy(*out, &s->n, sizeof(size_t));
    memcpy(*out + sizeof(size_t), s->t, s->n * sizeof(int32_t));
    return DS4_OK;
}
static ds4_status f_restore(void *vs, const uint8_t *b, uint64_t n, ds4_error *e) {
    fsess *s = vs;
    size_t k;
    if (n < sizeof k) return ds4_seterr(e, DS4_ERR_FORMAT, "short");
    memcpy(&k, b, sizeof k);
    if (n != sizeof k + k * sizeof(int32_t) || k > FCTX) return ds4_seterr(e, DS4_ERR_FORMAT, "size");
    memcpy(s->t, b + sizeof k, k * sizeof(int32_t));
    s->n = k;
    f_logits(s);
    return DS4_OK;
}

static srv_engine fake_engine(void) {
    srv_engine e = {.n_ctx = FCTX, .n_vocab = FV, .eos = FEOS, .user_tok = -1, .model_id = "fake-bytes",
                    .prompt = f_prompt, .tokenize = f_tokenize, .token_bytes = f_token_bytes,
                    .session_create = f_create, .session_free = f_free, .session_sync = f_sync,
                    .session_checkpoint = f_checkpoint, .session_tokens = f_tokens, .session_eval = f_eval,
                    .session_logits = f_get_logits, .session_reset = f_reset, .session_snapshot = f_snapshot,
                    .session_restore = f_restore};
    return e;
}

/* A one-message chat job (serve_testjob.h), submitted: *status is srv_sched_submit's. */
static srv_job *submit(srv_sched *s, const char *text, int max_tokens, int *status) {
    srv_job *j = test_chat_job(text, max_tokens, false, f_tokenize);
    *status = srv_sched_submit(s, j);
    return j;
}

static srv_job *run(srv_sched *s, const char *text, int max_tokens) {
    int st;
    srv_job *j = submit(s, text, max_tokens, &st);
    cr_assert_eq(st, 0);
    test_job_wait(j);
    return j;
}

Test(serve_sched, answers_and_routes_by_longest_prefix) {
    srv_engine e = fake_engine();
    srv_sched_opts o = {.n_slots = 2, .queue_max = 8, .prefill_chunk = 3};
    srv_sched *s;
    cr_assert_eq(srv_sched_create(&s, &e, &o, NULL), DS4_OK);
    srv_job *a = run(s, "hello", 3);
    cr_assert_str_eq(a->fmt.content.data, "pqr", "fake model continues o -> p q r");
    cr_assert_eq(a->finish, SRV_FINISH_LENGTH);
    cr_assert_eq(a->usage.cached_tokens, 0);
    srv_job *b = run(s, "world", 2);
    cr_assert_str_eq(b->fmt.content.data, "ef");
    srv_job *a2 = run(s, "hello again", 2);
    cr_assert_eq(a2->usage.cached_tokens, 5, "hello's slot reused up to its prompt end, got %d", a2->usage.cached_tokens);
    srv_job *b2 = run(s, "worldwide", 1);
    cr_assert_eq(b2->usage.cached_tokens, 5, "world's slot kept its own conversation, got %d", b2->usage.cached_tokens);
    srv_job *b3 = run(s, "worldwidefxy", 1); /* "worldwide" + its answer "f" */
    cr_assert_eq(b3->usage.cached_tokens, 10, "live prompt + generated token reused, got %d", b3->usage.cached_tokens);
    srv_job_unref(a); srv_job_unref(b); srv_job_unref(a2); srv_job_unref(b2); srv_job_unref(b3);
    srv_sched_destroy(s);
}

Test(serve_sched, full_queue_is_refused_and_cancel_keeps_work) {
    srv_engine e = fake_engine();
    srv_sched_opts o = {.n_slots = 2, .queue_max = 1, .prefill_chunk = 64};
    srv_sched *s;
    cr_assert_eq(srv_sched_create(&s, &e, &o, NULL), DS4_OK);
    atomic_store(&eval_delay_us, 2000);
    int st1, st2, st3;
    srv_job *j1 = submit(s, "slow one", 3000, &st1);
    while (1) { /* wait until the worker took j1 */
        pthread_mutex_lock(&j1->mu);
        bool going = j1->fmt.content.len > 0;
        pthread_mutex_unlock(&j1->mu);
        if (going) break;
        usleep(1000);
    }
    srv_job *j2 = submit(s, "queued", 2, &st2);
    srv_job *j3 = submit(s, "refused", 2, &st3);
    cr_assert_eq(st1, 0);
    cr_assert_eq(st2, 0);
    cr_assert_eq(st3, 503, "queue of 1 is full");
    atomic_store(&j1->cancel, true);
    test_job_wait(j1);
    cr_assert_eq(j1->finish, SRV_FINISH_ERROR);
    cr_assert_lt(j1->usage.completion_tokens, 3000, "stopped early");
    atomic_store(&eval_delay_us, 0);
    test_job_wait(j2);
    cr_assert_str_eq(j2->fmt.content.data, "ef");
    srv_job *j4 = run(s, "slow one", 1);
    cr_assert_eq(j4->usage.cached_tokens, 8, "the cancelled job's prompt stays in its slot, got %d", j4->usage.cached_tokens);
    cr_assert_str_eq(j4->fmt.content.data, "f", "and answers as if nothing happened");
    srv_job_unref(j1); srv_job_unref(j2); srv_job_unref(j3); srv_job_unref(j4);
    srv_sched_destroy(s);
}

Test(serve_sched, disk_cache_survives_restart_and_eviction) {
    char *dir = tu_tmpdir();
    srv_engine e = fake_engine();
    srv_kvstore *kv;
    cr_assert_eq(srv_kv_open(&kv, dir, 1 << 20, e.model_id, NULL, NULL), DS4_OK);
    srv_sched_opts o = {.n_slots = 1, .queue_max = 4, .kv = kv, .kv_min_tokens = 4, .prefill_chunk = 8};
    srv_sched *s;
    cr_assert_eq(srv_sched_create(&s, &e, &o, NULL), DS4_OK);
    srv_job *a = run(s, "conversation one", 2);
    srv_job *b = run(s, "another topic", 2); /* evicts "conversation one" from the only slot */
    srv_job *a2 = run(s, "conversation one, continued", 2);
    cr_assert_eq(a2->usage.cached_tokens, 16, "restored from disk after slot eviction, got %d", a2->usage.cached_tokens);
    cr_assert_str_eq(a2->fmt.content.data, "ef");
    srv_sched_destroy(s);
    srv_kv_close(kv);
    cr_assert_eq(srv_kv_open(&kv, dir, 1 << 20, e.model_id, NULL, NULL), DS4_OK);
    o.kv = kv;
    cr_assert_eq(srv_sched_create(&s, &e, &o, NULL), DS4_OK);
    srv_job *b2 = run(s, "another topic!", 1);
    cr_assert_eq(b2->usage.cached_tokens, 13, "after a restart the prompt comes from disk, got %d", b2->usage.cached_tokens);
    srv_job_unref(a); srv_job_unref(b); srv_job_unref(a2); srv_job_unref(b2);
    srv_sched_destroy(s);
    srv_kv_close(kv);
    free(dir);
}

Test(serve_sched, first_save_is_at_the_cold_anchor) {
    char *dir = tu_tmpdir();
    srv_engine e = fake_engine();
    e.user_tok = '#'; /* the fake's user-turn marker */
    srv_kvstore *kv;
    cr_assert_eq(srv_kv_open(&kv, dir, 1 << 20, e.model_id, NULL, NULL), DS4_OK);
    srv_sched_opts o = {.n_slots = 1, .queue_max = 4, .kv = kv, .kv_min_tokens = 4, .prefill_chunk = 4,
                        .kv_interval_tokens = 1000};
    srv_sched *s;
    cr_assert_eq(srv_sched_create(&s, &e, &o, NULL), DS4_OK);
    srv_job *a = run(s, "shared system prompt#first question", 1);
    cr_assert_eq(srv_kv_count(kv), 1, "one save, at the anchor");
    srv_job *b = run(s, "other conversation#x", 1); /* takes the slot (and saves its own anchor) */
    srv_job *c = run(s, "shared system prompt#another question", 1);
    cr_assert_eq(c->usage.cached_tokens, 20, "the shared prefix came from disk, got %d", c->usage.cached_tokens);
    srv_job_unref(a); srv_job_unref(b); srv_job_unref(c);
    srv_sched_destroy(s);
    srv_kv_close(kv);
    free(dir);
}

/* ---- HTTP ---- */

static int http(int port, const char *req, char *resp, size_t cap) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    size_t len = strlen(req);
    cr_assert_eq(write(fd, req, len), (ssize_t)len);
    size_t got = 0;
    ssize_t r;
    while (got + 1 < cap && (r = read(fd, resp + got, cap - 1 - got)) > 0) got += (size_t)r;
    resp[got] = '\0';
    close(fd);
    int status = 0;
    sscanf(resp, "HTTP/1.%*d %d", &status);
    return status;
}

static char *post(const char *path, const char *extra_headers, const char *body) {
    char *s = malloc(strlen(body) + 512);
    sprintf(s, "POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%sContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
            path, extra_headers, strlen(body), body);
    return s;
}

Test(serve_http, auth_limits_cors_and_shapes) {
    cr_assert(srv_http_key_ok("k1", "Bearer k1", NULL));
    cr_assert(srv_http_key_ok("k1", NULL, "k1"));
    cr_assert_not(srv_http_key_ok("k1", "Bearer k", NULL));
    cr_assert_not(srv_http_key_ok("k1", NULL, NULL));
    srv_metrics m;
    memset(&m, 0, sizeof m);
    srv_http_opts ho = {.host = "127.0.0.1", .port = 0, .api_key = "sekret", .cors = true, .max_body_bytes = 4096};
    srv_http *h;
    ds4_error err;
    cr_assert_eq(srv_http_start(&h, &ho, &m, &err), DS4_OK, "%s", err.msg);
    int port = srv_http_port(h);
    static char resp[65536];
    cr_assert_eq(http(port, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", resp, sizeof resp), 503, "loading");
    srv_engine e = fake_engine();
    srv_sched_opts so = {.n_slots = 1, .queue_max = 4, .prefill_chunk = 16, .metrics = &m};
    srv_sched *s;
    cr_assert_eq(srv_sched_create(&s, &e, &so, NULL), DS4_OK);
    srv_limits lim = {.max_depth = 32, .n_ctx = FCTX, .default_max_tokens = 100};
    srv_http_set_ready(h, &e, s, &lim);
    cr_assert_eq(http(port, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", resp, sizeof resp), 200);

    const char *chat = "{\"messages\":[{\"role\":\"user\",\"content\":\"abc\"}],\"max_tokens\":3,\"think\":false}";
    char *r = post("/v1/chat/completions", "", chat);
    cr_assert_eq(http(port, r, resp, sizeof resp), 401);
    cr_assert(strstr(resp, "{\"error\":{\"message\":\"invalid or missing API key"), "%s", resp);
    free(r);
    r = post("/v1/messages", "x-api-key: wrong\r\n", chat);
    cr_assert_eq(http(port, r, resp, sizeof resp), 401);
    cr_assert(strstr(resp, "{\"type\":\"error\",\"error\":{\"type\":\"authentication_error\""), "%s", resp);
    free(r);
    r = post("/v1/chat/completions", "Authorization: Bearer sekret\r\n", chat);
    cr_assert_eq(http(port, r, resp, sizeof resp), 200, "%s", resp);
    cr_assert(strstr(resp, "\"content\":\"def\""), "fake model answer: %s", resp);
    cr_assert(strstr(resp, "Access-Control-Allow-Origin: *"), "CORS header: %s", resp);
    free(r);
    char *stream = strdup(chat);
    stream[strlen(stream) - 1] = '\0';
    char sbody[512];
    snprintf(sbody, sizeof sbody, "%s,\"stream\":true}", stream);
    free(stream);
    r = post("/v1/chat/completions", "x-api-key: sekret\r\n", sbody);
    cr_assert_eq(http(port, r, resp, sizeof resp), 200);
    cr_assert(strstr(resp, "Content-Type: text/event-stream"), "%s", resp);
    cr_assert(strstr(resp, "\"delta\":{\"content\":\"d\"}"), "%s", resp);
    cr_assert(strstr(resp, "\"finish_reason\":\"length\"}]}\n\ndata: [DONE]\n\n"), "%s", resp);
    free(r);
    char big[5000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    r = post("/v1/chat/completions", "x-api-key: sekret\r\n", big);
    cr_assert_eq(http(port, r, resp, sizeof resp), 413);
    free(r);
    r = post("/v1/chat/completions", "x-api-key: sekret\r\n", "{\"messages\":[{\"content\":\"x\"}],\"top_p\":7}");
    cr_assert_eq(http(port, r, resp, sizeof resp), 400);
    cr_assert(strstr(resp, "\"param\":\"top_p\""), "%s", resp);
    free(r);
    cr_assert_eq(http(port, "OPTIONS /v1/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", resp, sizeof resp), 204, "preflight needs no key");
    cr_assert(strstr(resp, "Access-Control-Allow-Methods: GET, POST, OPTIONS"), "%s", resp);
    cr_assert_eq(http(port, "GET /nope HTTP/1.1\r\nHost: x\r\nx-api-key: sekret\r\nConnection: close\r\n\r\n", resp, sizeof resp), 404);
    cr_assert_eq(http(port, "GET /metrics HTTP/1.1\r\nHost: x\r\nx-api-key: sekret\r\nConnection: close\r\n\r\n", resp, sizeof resp), 200);
    cr_assert(strstr(resp, "ds4_requests_total 2\n"), "%s", resp);
    cr_assert(strstr(resp, "ds4_generated_tokens_total 6\n"), "%s", resp);
    srv_http_quiesce(h);
    srv_sched_stop(s);
    srv_http_stop(h);
    srv_sched_destroy(s);
}

Test(serve_sched, request_timeout_stops_generation) {
    srv_engine e = fake_engine();
    srv_sched_opts o = {.n_slots = 1, .queue_max = 2, .prefill_chunk = 8, .timeout_s = 1};
    srv_sched *s;
    cr_assert_eq(srv_sched_create(&s, &e, &o, NULL), DS4_OK);
    atomic_store(&eval_delay_us, 5000);
    int64_t t0 = srv_now_ms();
    srv_job *j = run(s, "long", 2000);
    int64_t ms = srv_now_ms() - t0;
    atomic_store(&eval_delay_us, 0);
    cr_assert_eq(j->finish, SRV_FINISH_ERROR);
    cr_assert_lt(j->usage.completion_tokens, 2000);
    cr_assert_lt(ms, 5000, "stopped near the 1 s limit, took %lld ms", (long long)ms);
    srv_job_unref(j);
    srv_sched_destroy(s);
}

Test(serve_http, keepalive_while_queued) {
    srv_metrics m;
    memset(&m, 0, sizeof m);
    srv_http_opts ho = {.host = "127.0.0.1", .port = 0, .keepalive_s = 1};
    srv_http *h;
    cr_assert_eq(srv_http_start(&h, &ho, &m, NULL), DS4_OK);
    srv_engine e = fake_engine();
    srv_sched_opts so = {.n_slots = 1, .queue_max = 4, .prefill_chunk = 16};
    srv_sched *s;
    cr_assert_eq(srv_sched_create(&s, &e, &so, NULL), DS4_OK);
    srv_limits lim = {.max_depth = 32, .n_ctx = FCTX, .default_max_tokens = 100};
    srv_http_set_ready(h, &e, s, &lim);
    atomic_store(&eval_delay_us, 3000);
    int st;
    srv_job *busy = submit(s, "busy", 600, &st); /* ~1.8 s of decoding ahead of the stream */
    cr_assert_eq(st, 0);
    static char resp[65536];
    char *r = post("/v1/messages", "", "{\"max_tokens\":2,\"stream\":true,\"thinking\":{\"type\":\"disabled\"},\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}");
    cr_assert_eq(http(srv_http_port(h), r, resp, sizeof resp), 200);
    free(r);
    atomic_store(&eval_delay_us, 0);
    char *ka = strstr(resp, ": keep-alive\n\n");
    char *start = strstr(resp, "event: message_start");
    cr_assert(ka && start && ka < start, "a keep-alive comment came before message_start: %s", resp);
    cr_assert(strstr(resp, "event: message_stop"), "%s", resp);
    test_job_wait(busy);
    srv_job_unref(busy);
    srv_http_quiesce(h);
    srv_sched_stop(s);
    srv_http_stop(h);
    srv_sched_destroy(s);
}
