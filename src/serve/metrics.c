/*
 * serve/metrics.c — Prometheus text format for srv_metrics (metric names ds4_*; rates are left
 * to the scraper except the two throughput gauges that users ask for directly).
 */
#include "serve/metrics.h"

static void counter(srv_buf *o, const char *name, const char *help, uint64_t v) {
    srv_buf_printf(o, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name, (unsigned long long)v);
}

static void gauge(srv_buf *o, const char *name, const char *help, double v) {
    srv_buf_printf(o, "# HELP %s %s\n# TYPE %s gauge\n%s %.6g\n", name, help, name, name, v);
}

void srv_metrics_render(srv_metrics *m, srv_buf *o) {
    counter(o, "ds4_requests_total", "Generation requests accepted.", atomic_load(&m->requests));
    counter(o, "ds4_request_errors_total", "Requests answered with an error status.", atomic_load(&m->errors));
    counter(o, "ds4_requests_rejected_total", "Requests refused because the queue was full.", atomic_load(&m->rejected_queue_full));
    counter(o, "ds4_requests_cancelled_total", "Generations stopped by client disconnect or timeout.", atomic_load(&m->cancelled));
    counter(o, "ds4_prompt_tokens_total", "Prompt tokens of finished requests.", atomic_load(&m->prompt_tokens));
    counter(o, "ds4_cached_prompt_tokens_total", "Prompt tokens reused from a live slot or the disk cache.", atomic_load(&m->cached_tokens));
    counter(o, "ds4_generated_tokens_total", "Generated tokens.", atomic_load(&m->generated_tokens));
    uint64_t pt = atomic_load(&m->prompt_tokens) - atomic_load(&m->cached_tokens);
    uint64_t pus = atomic_load(&m->prefill_us), dus = atomic_load(&m->decode_us);
    gauge(o, "ds4_prefill_tokens_per_second", "Prefilled tokens per second of prefill time, since start.", pus ? (double)pt * 1e6 / (double)pus : 0.0);
    gauge(o, "ds4_decode_tokens_per_second", "Generated tokens per second of decode time, since start.", dus ? (double)atomic_load(&m->generated_tokens) * 1e6 / (double)dus : 0.0);
    gauge(o, "ds4_queue_length", "Requests waiting for the engine.", (double)atomic_load(&m->queue_length));
    gauge(o, "ds4_requests_running", "Requests being generated.", (double)atomic_load(&m->busy));
    counter(o, "ds4_disk_cache_hits_total", "Disk KV cache lookups that restored a prefix.", atomic_load(&m->disk_hits));
    counter(o, "ds4_disk_cache_misses_total", "Disk KV cache lookups without a usable prefix.", atomic_load(&m->disk_misses));
    counter(o, "ds4_disk_cache_writes_total", "Disk KV cache files written.", atomic_load(&m->disk_writes));
    counter(o, "ds4_disk_cache_evictions_total", "Disk KV cache files removed to stay under the limit.", atomic_load(&m->disk_evictions));
    gauge(o, "ds4_disk_cache_bytes", "Bytes of disk KV cache files.", (double)atomic_load(&m->disk_bytes));
}
