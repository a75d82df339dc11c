/* tests/test_serve_sample.c — the scheduler's use of srv_engine.session_sample (issue #7:
 * ds4_session_sample, on the GPU only the token id is downloaded): a plain request draws every
 * token through session_sample and never reads the logits; a logprobs request reads the logits
 * and samples them itself; both give the same answer. Scripted byte engine as in
 * test_serve_sched.c: token = byte, the model predicts "previous byte + 1". */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "serve/scheduler.h"
#include "serve_testjob.h"

#define SV 258 /* 256 bytes + EOS + spare */
#define SEOS 256
#define SCTX 1024

static atomic_int n_sample_calls, n_logits_calls;

typedef struct ssess {
    int32_t t[SCTX];
    size_t n;
    float logits[SV];
} ssess;

static void s_predict(ssess *s) {
    for (int i = 0; i < SV; i++) s->logits[i] = 0;
    s->logits[s->n ? (s->t[s->n - 1] + 1) % 256 : 'a'] = 10;
}
static ds4_status s_tokenize(void *c, const char *s, size_t n, uint32_t flags, int32_t **t, size_t *nt,
                             ds4_error *e) {
    (void)c; (void)e; (void)flags;
    *t = malloc((n ? n : 1) * sizeof **t);
    for (size_t i = 0; i < n; i++) (*t)[i] = (unsigned char)s[i];
    *nt = n;
    return DS4_OK;
}
static ds4_status s_prompt(void *c, const srv_request *r, int32_t **t, size_t *nt, ds4_error *e) {
    const char *text = r->n_msgs ? r->msgs[0].content : "";
    return s_tokenize(c, text, strlen(text), 0, t, nt, e);
}
static char s_bytes[256];
static ds4_status s_token_bytes(void *c, int32_t tok, const char **p, size_t *n, ds4_error *e) {
    (void)c;
    if (tok < 0 || tok > 255) return ds4_seterr(e, DS4_ERR_RANGE, "token %d", tok);
    s_bytes[tok] = (char)tok;
    *p = &s_bytes[tok];
    *n = 1;
    return DS4_OK;
}
static ds4_status s_create(void *c, void **s, ds4_error *e) { (void)c; (void)e; *s = calloc(1, sizeof(ssess)); return DS4_OK; }
static void s_free(void *s) { free(s); }
static ds4_status s_sync(void *vs, const int32_t *t, size_t n, size_t *reused, ds4_error *e) {
    (void)e;
    ssess *s = vs;
    memcpy(s->t, t, n * sizeof *t);
    s->n = n;
    *reused = 0;
    s_predict(s);
    return DS4_OK;
}
static ds4_status s_checkpoint(void *vs, ds4_error *e) { (void)vs; (void)e; return DS4_OK; }
static const int32_t *s_tokens(void *vs, size_t *n) { ssess *s = vs; *n = s->n; return s->t; }
static ds4_status s_eval(void *vs, int32_t tok, ds4_error *e) {
    ssess *s = vs;
    if (s->n >= SCTX) return ds4_seterr(e, DS4_ERR_RANGE, "full");
    s->t[s->n++] = tok;
    s_predict(s);
    return DS4_OK;
}
static ds4_status s_logits(void *vs, const float **l, ds4_error *e) {
    (void)e;
    atomic_fetch_add(&n_logits_calls, 1);
    *l = ((ssess *)vs)->logits;
    return DS4_OK;
}
/* What ds4_session_sample promises: the token ds4_sampler_sample draws from the logits. */
static ds4_status s_sample(void *vs, ds4_sampler *smp, int32_t *tok, ds4_error *e) {
    atomic_fetch_add(&n_sample_calls, 1);
    return ds4_sampler_sample(smp, ((ssess *)vs)->logits, tok, e);
}
static void s_reset(void *vs) { ((ssess *)vs)->n = 0; }

static srv_job *ask(srv_sched *s, const char *text, int max_tokens, bool logprobs) {
    srv_job *j = test_chat_job(text, max_tokens, logprobs, s_tokenize);
    cr_assert_eq(srv_sched_submit(s, j), 0);
    test_job_wait(j);
    return j;
}

Test(serve_sample, plain_requests_sample_on_the_engine_logprobs_on_the_logits) {
    srv_engine e = {.n_ctx = SCTX, .n_vocab = SV, .eos = SEOS, .user_tok = -1, .model_id = "fake-bytes",
                    .prompt = s_prompt, .tokenize = s_tokenize, .token_bytes = s_token_bytes,
                    .session_create = s_create, .session_free = s_free, .session_sync = s_sync,
                    .session_checkpoint = s_checkpoint, .session_tokens = s_tokens, .session_eval = s_eval,
                    .session_logits = s_logits, .session_sample = s_sample, .session_reset = s_reset};
    srv_sched_opts o = {.n_slots = 1, .queue_max = 4, .prefill_chunk = 64};
    srv_sched *s;
    cr_assert_eq(srv_sched_create(&s, &e, &o, NULL), DS4_OK);
    srv_job *a = ask(s, "hello", 3, false);
    cr_assert_str_eq(a->fmt.content.data, "pqr", "fake model continues o -> p q r, got '%s'", a->fmt.content.data);
    cr_assert_eq(atomic_load(&n_sample_calls), 3, "plain request: %d session_sample calls, want 3",
                 atomic_load(&n_sample_calls));
    cr_assert_eq(atomic_load(&n_logits_calls), 0, "plain request read the logits %d times",
                 atomic_load(&n_logits_calls));
    srv_job *b = ask(s, "hello", 3, true);
    cr_assert_str_eq(b->fmt.content.data, "pqr", "logprobs request: got '%s'", b->fmt.content.data);
    cr_assert_eq(atomic_load(&n_sample_calls), 3, "logprobs request called session_sample");
    cr_assert_geq(atomic_load(&n_logits_calls), 3, "logprobs request read the logits %d times",
                  atomic_load(&n_logits_calls));
    srv_job_unref(a);
    srv_job_unref(b);
    srv_sched_destroy(s);
}
