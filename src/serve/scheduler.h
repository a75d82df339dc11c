/*
 * serve/scheduler.h — jobs, live slots, the bounded queue and the one worker thread that
 * drives the engine (issue #6 "Concurrency"). Owns slot choice (longest common token prefix),
 * disk-cache use (restore the longest cached prefix; save a conversation's prompt when it first
 * reaches the minimum and every kv_interval_tokens after, on slot eviction and at shutdown),
 * cancellation and timeouts, and the generation loop. Must not parse
 * HTTP or JSON requests: connection threads hand it a parsed srv_request plus prompt tokens.
 *
 * Job lifetime: created by a connection thread (ref 1), the queue takes a second ref; the worker
 * drops it when done, the connection thread when its response is gone. Output bytes appear in
 * job->fmt.out under job->mu; job->cv is signalled whenever bytes are added or the job ends.
 *
 * State of a job: QUEUED → RUNNING → DONE. `cancel` may be set in any state by the connection
 * thread (client gone) or by the worker (timeout, shutdown); the worker then stops at the next
 * prefill chunk or token, keeping the KV work done so far in its slot.
 */
#ifndef DS4_SERVE_SCHEDULER_H
#define DS4_SERVE_SCHEDULER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "serve/engine.h"
#include "serve/fmt.h"
#include "serve/kvstore.h"
#include "serve/metrics.h"
#include "serve/request.h"
#include "serve/textstream.h"
#include "serve/toolids.h"

typedef struct srv_job {
    srv_request req;
    int32_t *prompt;
    size_t n_prompt;
    char *forced;               /* test-only forced completion text, or NULL */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    srv_fmt fmt;                /* guarded by mu */
    bool done;                  /* guarded by mu */
    bool error_before_output;   /* failed before any byte: send err as an HTTP error */
    srv_reqerr err;
    srv_usage usage;
    srv_finish finish;
    atomic_bool cancel;
    atomic_int refs;
    int64_t deadline_ms;        /* 0 = none */
} srv_job;

/* A new job owning req (moved) and prompt (taken). NULL on OOM (req and prompt freed). */
srv_job *srv_job_new(srv_request *req, int32_t *prompt, size_t n_prompt);
void srv_job_unref(srv_job *j);

typedef struct srv_sched_opts {
    int n_slots;                /* live sessions (>= 1) */
    int queue_max;              /* waiting jobs before 503 */
    int timeout_s;              /* per request, 0 = none */
    srv_kvstore *kv;            /* NULL = no disk cache */
    size_t kv_min_tokens;       /* shorter prefixes are never saved or loaded */
    size_t kv_interval_tokens;  /* new prompt tokens between two saves of one conversation
                                   (0: save every prompt that added tokens) */
    srv_toolmem *toolmem;
    srv_metrics *metrics;
    int prefill_chunk;          /* tokens per sync step (cancellation granularity) */
    /* Called by the worker after each job (library code never prints: the program logs). */
    void (*on_done)(void *ud, const srv_job *j, int64_t prefill_ms, int64_t decode_ms);
    void *on_done_ud;
} srv_sched_opts;

typedef struct srv_sched srv_sched;

ds4_status srv_sched_create(srv_sched **out, const srv_engine *eng, const srv_sched_opts *o, ds4_error *err);
/* Stops accepting (later submits get 503), cancels the running and queued jobs (each ends with
 * an error) and joins the worker. Idempotent. */
void srv_sched_stop(srv_sched *s);
/* srv_sched_stop, then saves live slots to the disk cache (shutdown checkpoint) and frees them. */
void srv_sched_destroy(srv_sched *s);
/* Queues j (takes a ref). Returns 0, or 503 when the queue is full / shutting down. */
int srv_sched_submit(srv_sched *s, srv_job *j);
int srv_sched_queue_length(srv_sched *s);

/* Monotonic milliseconds. */
int64_t srv_now_ms(void);

#endif
