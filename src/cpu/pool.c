/*
 * cpu/pool.c — persistent workers for cpu_pool_run (see cpu/pool.h).
 *
 * Invariants:
 *  1. Every worker's argument is complete before its thread starts.
 *  2. A job is published by bumping `generation` under `mu`; workers wake on `cv_start`.
 *  3. Chunks are handed out through an atomic counter; the caller waits on `cv_done` until
 *     every worker has left the job, so fn/ctx never outlive the call.
 */
#include "cpu/pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/error.h"

typedef struct worker {
    struct cpu_pool *pool;
    int idx;
    pthread_t th;
} worker;

struct cpu_pool {
    int n_threads;
    worker *w;          /* n_threads - 1 workers (index 1..) */
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv_start, cv_done;
    uint64_t generation;
    int pending, stop;
    cpu_pool_fn fn;
    void *ctx;
    int64_t n_items, chunk, n_chunks;
    atomic_llong next;
};

static void run_chunks(cpu_pool *p, int idx) {
    for (;;) {
        long long c = atomic_fetch_add(&p->next, 1);
        if (c >= p->n_chunks) return;
        int64_t b = (int64_t)c * p->chunk, e = b + p->chunk;
        if (e > p->n_items) e = p->n_items;
        p->fn(p->ctx, b, e, idx);
    }
}

static void *worker_main(void *arg) {
    worker *w = arg;
    cpu_pool *p = w->pool;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->generation == seen) pthread_cond_wait(&p->cv_start, &p->mu);
        if (p->stop) break;
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        run_chunks(p, w->idx);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0) pthread_cond_signal(&p->cv_done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

ds4_status cpu_pool_create(cpu_pool **out, int n_threads, ds4_error *err) {
    *out = NULL;
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n < 1 ? 1 : (int)n;
    }
    if (n_threads > 1024)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "threads: %d is more than 1024", n_threads);
    cpu_pool *p = calloc(1, sizeof *p);
    if (!p) return ds4_seterr(err, DS4_ERR_NOMEM, "threads: out of memory");
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_start, NULL);
    pthread_cond_init(&p->cv_done, NULL);
    if (n_threads > 1) {
        p->w = calloc((size_t)n_threads - 1, sizeof *p->w);
        if (!p->w) {
            cpu_pool_free(p);
            return ds4_seterr(err, DS4_ERR_NOMEM, "threads: out of memory");
        }
        for (int i = 1; i < n_threads; i++) {
            worker *w = &p->w[i - 1];
            w->pool = p; /* invariant 1: set before the thread exists */
            w->idx = i;
            if (pthread_create(&w->th, NULL, worker_main, w) != 0) {
                cpu_pool_free(p);
                return ds4_seterr(err, DS4_ERR_NOMEM, "threads: could not start thread %d", i);
            }
            p->started = i;
        }
    }
    *out = p;
    return DS4_OK;
}

void cpu_pool_free(cpu_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv_start);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i <= p->started; i++) pthread_join(p->w[i - 1].th, NULL);
    free(p->w);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv_start);
    pthread_cond_destroy(&p->cv_done);
    free(p);
}

int cpu_pool_size(const cpu_pool *p) { return p ? p->n_threads : 1; }

void cpu_pool_run(cpu_pool *p, int64_t n_items, int64_t min_chunk, cpu_pool_fn fn, void *ctx) {
    if (n_items <= 0) return;
    if (min_chunk < 1) min_chunk = 1;
    int nt = p ? p->n_threads : 1;
    if (nt == 1 || n_items <= min_chunk) {
        fn(ctx, 0, n_items, 0);
        return;
    }
    /* ~4 chunks per thread balances uneven rows without much counter traffic. */
    int64_t chunk = (n_items + (int64_t)nt * 4 - 1) / ((int64_t)nt * 4);
    if (chunk < min_chunk) chunk = min_chunk;
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n_items = n_items;
    p->chunk = chunk;
    p->n_chunks = (n_items + chunk - 1) / chunk;
    atomic_store(&p->next, 0);
    p->pending = nt - 1;
    p->generation++;
    pthread_cond_broadcast(&p->cv_start);
    pthread_mutex_unlock(&p->mu);
    run_chunks(p, 0);
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0) pthread_cond_wait(&p->cv_done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
