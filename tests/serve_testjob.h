/*
 * tests/serve_testjob.h — the scheduler tests' chat job (test_serve_sched.c, test_serve_sample.c):
 * a greedy, non-thinking chat request with one user message, tokenized by the test's fake engine
 * and given its formatter, ready for srv_sched_submit; and the wait for a job to finish.
 */
#ifndef DS4_TESTS_SERVE_TESTJOB_H
#define DS4_TESTS_SERVE_TESTJOB_H

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "serve/scheduler.h"

typedef ds4_status (*test_tokenize_fn)(void *ctx, const char *text, size_t len, uint32_t flags, int32_t **toks,
                                       size_t *n, ds4_error *err);

static inline srv_job *test_chat_job(const char *text, int max_tokens, bool logprobs, test_tokenize_fn tokenize) {
    srv_request r;
    memset(&r, 0, sizeof r);
    r.api = SRV_API_CHAT;
    r.model = strdup("m");
    r.think = SRV_THINK_NONE;
    r.temperature = 0;
    r.top_p = 1;
    r.max_tokens = max_tokens;
    r.logprobs = logprobs;
    srv_message *m = srv_request_add_msg(&r, SRV_ROLE_USER);
    free(m->content);
    m->content = strdup(text);
    int32_t *t;
    size_t n;
    tokenize(NULL, text, strlen(text), 0, &t, &n, NULL);
    srv_job *j = srv_job_new(&r, t, n);
    cr_assert(srv_fmt_init(&j->fmt, &j->req, "ID", 1));
    return j;
}

static inline void test_job_wait(srv_job *j) {
    pthread_mutex_lock(&j->mu);
    while (!j->done) pthread_cond_wait(&j->cv, &j->mu);
    pthread_mutex_unlock(&j->mu);
}

#endif
