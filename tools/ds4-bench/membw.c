/*
 * tools/ds4-bench/membw.c — the memory-bandwidth bound for decode (ANCHORS §2.1/§2.3): bytes of
 * weights one generated token reads, and the machine's measured read bandwidth. Their ratio is
 * the decode speed no implementation can beat on this machine. Reads the GGUF tensor table
 * through the engine; runs no model code.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "model/engine.h"

uint64_t bench_weight_bytes_per_token(const ds4_engine *e) {
    const gguf_ctx *g = e->gguf;
    uint64_t total = 0;
    for (uint64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        if (strncmp(t->name, "mtp.", 4) == 0) continue; /* not used by plain decode */
        if (strcmp(t->name, "token_embd.weight") == 0 && t->n_dims == 2) {
            total += t->n_bytes / t->ne[1]; /* one row per token */
        } else if (strstr(t->name, "_exps.") && t->n_dims == 3 && t->ne[2] > 0) {
            /* routed experts: n_expert_used of ne[2] slices (MODEL_MATH §9.2) */
            total += t->n_bytes / t->ne[2] * e->info.n_expert_used;
        } else {
            total += t->n_bytes;
        }
    }
    return total;
}

typedef struct bw_job {
    const uint64_t *p;
    size_t n;
    uint64_t sum;
    double cpu_s;           /* this thread's CPU time for its share */
} bw_job;

static double thread_cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *bw_read(void *arg) {
    bw_job *j = arg;
    double c0 = thread_cpu_s();
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i + 4 <= j->n; i += 4) {
        s0 += j->p[i];
        s1 += j->p[i + 1];
        s2 += j->p[i + 2];
        s3 += j->p[i + 3];
    }
    j->sum = s0 ^ s1 ^ s2 ^ s3;
    j->cpu_s = thread_cpu_s() - c0;
    return NULL;
}

static double secs(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double bench_read_bandwidth(int n_threads, size_t n_bytes, double *cpu_bw) {
    if (cpu_bw) *cpu_bw = 0;
    if (n_threads < 1) n_threads = 1;
    if (n_threads > 256) n_threads = 256;
    size_t n = n_bytes / sizeof(uint64_t);
    uint64_t *buf = malloc(n * sizeof *buf);
    if (!buf) return 0;
    for (size_t i = 0; i < n; i++) buf[i] = i * 0x9e3779b97f4a7c15ull; /* touch every page */
    bw_job jobs[256];
    pthread_t th[256];
    int created[256];
    double best = 0;
    volatile uint64_t sink = 0;
    for (int rep = 0; rep < 5; rep++) {
        size_t per = n / (size_t)n_threads;
        double t0 = secs();
        for (int i = 0; i < n_threads; i++) {
            jobs[i] = (bw_job){buf + (size_t)i * per, per, 0, 0};
            created[i] = i > 0 && pthread_create(&th[i], NULL, bw_read, &jobs[i]) == 0;
        }
        for (int i = 0; i < n_threads; i++)
            if (!created[i]) bw_read(&jobs[i]); /* the caller's share, and any thread that failed */
        for (int i = 1; i < n_threads; i++)
            if (created[i]) pthread_join(th[i], NULL);
        double dt = secs() - t0;
        double cbw = 0;
        for (int i = 0; i < n_threads; i++) {
            sink ^= jobs[i].sum;
            if (jobs[i].cpu_s > 0) cbw += (double)(per * sizeof *buf) / jobs[i].cpu_s;
        }
        double gbs = (double)(per * (size_t)n_threads * sizeof *buf) / dt;
        if (gbs > best) best = gbs;
        if (cpu_bw && cbw > *cpu_bw) *cpu_bw = cbw;
    }
    (void)sink;
    free(buf);
    return best;
}
