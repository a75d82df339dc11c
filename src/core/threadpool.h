/*
 * core/threadpool.h — a persistent pool of worker threads running data-parallel loops.
 * The caller's thread takes part, so a pool of 1 runs everything inline. One job at a time
 * per pool: ds4_pool_run is not reentrant and must be called from one thread.
 */
#ifndef DS4_CORE_THREADPOOL_H
#define DS4_CORE_THREADPOOL_H

#include <stdint.h>
#include "ds4.h"

typedef struct ds4_pool ds4_pool;

/* Runs items [begin, end) of the loop on worker `thread_idx` (0 = caller). */
typedef void (*ds4_pool_fn)(void *ctx, int64_t begin, int64_t end, int thread_idx);

/* n_threads <= 0 means one per online core. */
ds4_status ds4_pool_create(ds4_pool **out, int n_threads, ds4_error *err);
void ds4_pool_free(ds4_pool *pool);
int ds4_pool_size(const ds4_pool *pool);

/* Splits [0, n_items) into contiguous chunks of at least min_chunk items, runs fn on every
 * chunk across the pool and returns when all are done. pool may be NULL (runs inline). */
void ds4_pool_run(ds4_pool *pool, int64_t n_items, int64_t min_chunk, ds4_pool_fn fn, void *ctx);

/* Number of online cores (>= 1). */
int ds4_cpu_count(void);

#endif
