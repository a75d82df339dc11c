/*
 * cpu/pool.h — the persistent worker pool the CPU backend runs its row-parallel loops on.
 *
 * Same contract as core/threadpool.h (caller takes part; one job at a time; contiguous chunks
 * of at least min_chunk items). It exists because core/threadpool.c hands each new worker its
 * argument only after pthread_create returns, so a worker that starts first reads an
 * uninitialised pointer (seen as SIGSEGV in worker_main under load and valgrind); reported to
 * the core owner. Once that is fixed the backend can switch back: the signatures match.
 *
 * Must not: know about matrices or the model.
 */
#ifndef DS4_CPU_POOL_H
#define DS4_CPU_POOL_H

#include <stdint.h>

#include "ds4.h"

typedef struct cpu_pool cpu_pool;

/* Runs items [begin, end) on worker `thread_idx` (0 = caller). */
typedef void (*cpu_pool_fn)(void *ctx, int64_t begin, int64_t end, int thread_idx);

/* n_threads <= 0: one per online core. */
ds4_status cpu_pool_create(cpu_pool **out, int n_threads, ds4_error *err);
void cpu_pool_free(cpu_pool *pool);
int cpu_pool_size(const cpu_pool *pool);
/* pool may be NULL (runs inline). Returns when every chunk is done. */
void cpu_pool_run(cpu_pool *pool, int64_t n_items, int64_t min_chunk, cpu_pool_fn fn, void *ctx);

#endif
