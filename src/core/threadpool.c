/*
 * core/threadpool.c — persistent workers for ds4_pool_run.
 *
 * Invariants:
 *  1. A job is published by bumping `generation` under `mu`; workers wake on `cv_start`.
 *  2. Work is handed out as chunk indices through an atomic counter, so uneven chunks balance.
 *  3. The caller waits on `cv_done` until `pending` (workers still inside the job) reaches 0,
 *     so `fn`/`ctx` never outlive the call.
 */
#include "core/threadpool.h"
#include "core/error.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

struct ds4_pool {
    int n_threads; /* including the caller */
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv_start, cv_done;
    uint64_t generation;
    int pending;
    int stop;
    /* current job */
    ds4_pool_fn fn;
    void *ctx;
    int64_t n_items, chunk, n_chunks;
    atomic_llong next_chunk;
};

typedef struct {
    ds4_pool *pool;
    int idx;
} worker_arg;

static void run_chunks(ds4_pool *p, int idx) {
    for (;;) {
        long long c = atomic_fetch_add(&p->next_chunk, 1);
        if (c >= p->n_chunks) break;
        int64_t b = (int64_t)c * p->chunk;
        int64_t e = b + p->chunk;
        if (e > p->n_items) e = p->n_items;
        p->fn(p->ctx, b, e, idx);
    }
}

static void *worker_main(void *arg) {
    worker_arg *wa = arg;
    ds4_pool *p = wa->pool;
    int idx = wa->idx;
    free(wa);
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->generation == seen) pthread_cond_wait(&p->cv_start, &p->mu);
        if (p->stop) break;
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        run_chunks(p, idx);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0) pthread_cond_signal(&p->cv_done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int ds4_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

ds4_status ds4_pool_create(ds4_pool **out, int n_threads, ds4_error *err) {
    *out = NULL;
    if (n_threads <= 0) n_threads = ds4_cpu_count();
    if (n_threads > 1024)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "threads: %d is more than 1024", n_threads);
    ds4_pool *p = calloc(1, sizeof *p);
    if (!p) return ds4_seterr(err, DS4_ERR_NOMEM, "threads: out of memory");
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_start, NULL);
    pthread_cond_init(&p->cv_done, NULL);
    if (n_threads > 1) {
        p->threads = calloc((size_t)n_threads - 1, sizeof *p->threads);
        if (!p->threads) {
            ds4_pool_free(p);
            return ds4_seterr(err, DS4_ERR_NOMEM, "threads: out of memory");
        }
        for (int i = 1; i < n_threads; i++) {
            worker_arg *wa = malloc(sizeof *wa);
            if (wa) {
                /* filled before the thread starts: the worker reads it at once */
                wa->pool = p;
                wa->idx = i;
            }
            if (!wa || pthread_create(&p->threads[i - 1], NULL, worker_main, wa) != 0) {
                free(wa);
                p->n_threads = i; /* only threads 1..i-1 exist */
                ds4_pool_free(p);
                return ds4_seterr(err, DS4_ERR_NOMEM, "threads: could not start thread %d", i);
            }
        }
    }
    *out = p;
    return DS4_OK;
}

void ds4_pool_free(ds4_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv_start);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n_threads; i++) pthread_join(p->threads[i - 1], NULL);
    free(p->threads);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv_start);
    pthread_cond_destroy(&p->cv_done);
    free(p);
}

int ds4_pool_size(const ds4_pool *p) { return p ? p->n_threads : 1; }

void ds4_pool_run(ds4_pool *p, int64_t n_items, int64_t min_chunk, ds4_pool_fn fn, void *ctx) {
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
    atomic_store(&p->next_chunk, 0);
    p->pending = nt - 1;
    p->generation++;
    pthread_cond_broadcast(&p->cv_start);
    pthread_mutex_unlock(&p->mu);
    run_chunks(p, 0);
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0) pthread_cond_wait(&p->cv_done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
