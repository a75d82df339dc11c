/*
 * serve/metrics.h — server counters and their Prometheus text exposition (GET /metrics).
 * Owns counting only (atomics, no locks); must not know about HTTP or the engine.
 */
#ifndef DS4_SERVE_METRICS_H
#define DS4_SERVE_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "serve/buf.h"

typedef struct srv_metrics {
    atomic_uint_fast64_t requests, errors, rejected_queue_full, cancelled;
    atomic_uint_fast64_t prompt_tokens, cached_tokens, generated_tokens;
    atomic_uint_fast64_t prefill_us, decode_us;   /* time spent, for tokens/s */
    atomic_uint_fast64_t disk_hits, disk_misses, disk_writes, disk_evictions;
    atomic_int_fast64_t queue_length, busy;
    atomic_int_fast64_t disk_bytes;
} srv_metrics;

void srv_metrics_render(srv_metrics *m, srv_buf *out);

#endif
