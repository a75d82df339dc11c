/*
 * tools/ds4-bench/profile.c — `ds4-bench --profile N` (issue #7): where a CUDA decode step
 * spends its time. Times N steps as the CUDA graph (the real decode path), then N steps op by
 * op with a CUDA event after every op (cuda_state_set_profile; forward_cuda.c holds each
 * layer's ops behind a device-side gate until they are all queued, so an event interval is the
 * GPU running that op back to back with its neighbours, not the host's launch gap), and prints
 * per call site: ms per step, share of the op-by-op step, calls per step. Owns only the
 * measuring and printing; the model and the ops are the engine's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"

#ifdef DS4_CUDA
#include "cuda/cuda_api.h"
#include "cuda/model_cuda.h"
#include "model/model.h"

#define PROF_TAGS 512

typedef struct prof_sum {
    double ms[PROF_TAGS];
    long n[PROF_TAGS];
} prof_sum;

static void prof_add(void *u, int tag, float ms) {
    prof_sum *a = u;
    if (tag < 0 || tag >= PROF_TAGS) return;
    a->ms[tag] += ms;
    a->n[tag]++;
}

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A readable name from a call site's text: the function and its first string literal
 * ("mv_a(s, il, \"wq_a\", ...)" -> "mv_a wq_a"), else its first argument other than the
 * state ("cuda_rmsnorm(w->qr, ...)" -> "cuda_rmsnorm w->qr"); a product's name as it is. */
static void short_name(const char *src, char *out, size_t cap) {
    const char *par = strchr(src, '(');
    if (!par) {
        snprintf(out, cap, "%s", src);
        return;
    }
    int fn = (int)(par - src);
    const char *q = strchr(par, '"');
    if (q) {
        const char *e = strchr(q + 1, '"');
        snprintf(out, cap, "%.*s %.*s", fn, src, e ? (int)(e - q - 1) : 0, q + 1);
        return;
    }
    const char *a = par + 1;
    for (;;) {
        const char *c = a + strcspn(a, ",)");
        while (*a == ' ') a++;
        if (!(c - a == 1 && *a == 's') || !*c || *c == ')') {
            snprintf(out, cap, "%.*s %.*s", fn, src, (int)(c - a), a);
            return;
        }
        a = c + 1;
    }
}

/* Seconds per step of evals of one token each, synced at the end; with tok the greedy token
 * only (head + argmax on the device). The first of the n steps is a warm-up, not timed (it may
 * capture or instantiate a graph: a new position bound, the head graph). */
static int time_steps(cuda_model *cm, cuda_state *cs, const int32_t *toks, uint32_t n, float *logits,
                      int32_t *tok, double *out, ds4_error *err) {
    model_eval_opts eo = {.logits_mode = logits ? MODEL_LOGITS_LAST : MODEL_LOGITS_NONE, .logits = logits,
                          .token_out = tok};
    if (cuda_model_eval(cm, cs, &toks[0], 1, &eo, err) || cuda_sync(err)) return 1;
    double t0 = mono_s();
    for (uint32_t i = 1; i < n; i++)
        if (cuda_model_eval(cm, cs, &toks[i], 1, &eo, err)) return 1;
    if (cuda_sync(err)) return 1;
    *out = (mono_s() - t0) / (n - 1);
    return 0;
}

/* The table rows of a profile, the costliest call site first: ms per run (of n_runs), its
 * share of total (ms per run), calls per run and us per call. Empties a. */
static void print_sites(cuda_state *cs, prof_sum *a, uint32_t n_runs, double total) {
    for (;;) {
        int best = -1;
        for (int i = 0; i < PROF_TAGS; i++)
            if (a->n[i] && (best < 0 || a->ms[i] > a->ms[best])) best = i;
        if (best < 0) break;
        int line = 0;
        const char *src = cuda_state_profile_site(cs, best, &line);
        char nm[96];
        short_name(src ? src : "?", nm, sizeof nm);
        double ms = a->ms[best] / n_runs, calls = (double)a->n[best] / n_runs;
        fprintf(stderr, "| %s | %d | %.4f | %.1f%% | %.0f | %.2f |\n", nm, line, ms,
                total > 0 ? 100.0 * ms / total : 0.0, calls, calls > 0 ? 1e3 * ms / calls : 0.0);
        a->n[best] = 0;
    }
}

int bench_profile_cuda(void *model_v, void *state_v, const int32_t *toks, uint32_t n_steps,
                       uint32_t n_vocab, double wpt) {
    cuda_model *cm = model_v;
    cuda_state *cs = state_v;
    ds4_error err = {0};
    int rc = 1;
    float *logits = malloc((size_t)n_vocab * sizeof *logits);
    prof_sum *a = calloc(1, sizeof *a);
    double t_graph = 0, t_head = 0, t_tok = 0;
    int32_t tok = -1;
    if (!logits || !a) goto out;
    /* The graph step first: layers only, + head + logits download (then a host argmax, not
     * timed), + head + argmax on the device with only the token id downloaded. */
    if (time_steps(cm, cs, toks, n_steps, NULL, NULL, &t_graph, &err) ||
        time_steps(cm, cs, toks + n_steps, n_steps, logits, NULL, &t_head, &err) ||
        time_steps(cm, cs, toks + 2 * n_steps, n_steps, NULL, &tok, &t_tok, &err))
        goto out_err;
    model_eval_opts eo = {.logits_mode = MODEL_LOGITS_LAST, .logits = logits};
    if (cuda_state_set_profile(cs, true, &err)) goto out_err;
    for (uint32_t i = 0; i < n_steps; i++)
        if (cuda_model_eval(cm, cs, &toks[3 * n_steps + i], 1, &eo, &err)) goto out_err;
    if (cuda_state_profile_collect(cs, prof_add, a, &err) || cuda_state_set_profile(cs, false, &err))
        goto out_err;
    double total = 0;
    for (int i = 0; i < PROF_TAGS; i++) total += a->ms[i];
    total /= n_steps;
    fprintf(stderr,
            "ds4-bench: profile of %u decode steps (one token each):\n"
            "  graph step, layers only:            %8.3f ms  (%.1f tok/s)\n"
            "  graph step + head + logits download: %8.3f ms  (%.1f tok/s)\n"
            "  graph step + head + argmax on device: %7.3f ms  (%.1f tok/s; %.1f GB/s of weights; token id only)\n"
            "  op by op, sum of the ops' GPU time:  %8.3f ms  (events after every op; each layer's\n"
            "    ops queued behind a device-side gate, then run back to back: GPU time, no launch gaps)\n"
            "| op (call site) | line in forward_cuda.c, forward_attn.c or forward_moe.c | ms per step | share | calls per step | us per call |\n"
            "|---|---:|---:|---:|---:|---:|\n",
            n_steps, t_graph * 1e3, 1.0 / t_graph, t_head * 1e3, 1.0 / t_head, t_tok * 1e3, 1.0 / t_tok,
            wpt / t_tok / 1e9, total);
    print_sites(cs, a, n_steps, total);
    rc = 0;
    goto out;
out_err:
    fprintf(stderr, "ds4-bench: profile: %s\n", err.msg);
out:
    free(logits);
    free(a);
    return rc;
}

int bench_profile_prefill_cuda(void *model_v, void *state_v, const int32_t *toks, uint32_t n) {
    cuda_model *cm = model_v;
    cuda_state *cs = state_v;
    ds4_error err = {0};
    prof_sum *a = calloc(1, sizeof *a);
    if (!a) return 1;
    model_eval_opts eo = {.logits_mode = MODEL_LOGITS_NONE};
    double t0 = mono_s();
    if (cuda_state_set_profile(cs, true, &err) || cuda_model_eval(cm, cs, toks, n, &eo, &err) ||
        cuda_state_profile_collect(cs, prof_add, a, &err) || cuda_state_set_profile(cs, false, &err)) {
        fprintf(stderr, "ds4-bench: prefill profile: %s\n", err.msg);
        free(a);
        return 1;
    }
    double wall = mono_s() - t0, total = 0;
    for (int i = 0; i < PROF_TAGS; i++) total += a->ms[i];
    fprintf(stderr,
            "ds4-bench: profile of one prefill chunk of %u tokens from position 0 (op by op, events\n"
            "  after every op, each layer's ops queued behind a device-side gate): sum of the ops' GPU\n"
            "  time %.3f ms (%.1f tok/s); wall %.3f ms with the events\n"
            "| op (call site) | forward_chunk.c line | ms per chunk | share | calls | us per call |\n"
            "|---|---:|---:|---:|---:|---:|\n",
            n, total, total > 0 ? 1e3 * n / total : 0.0, wall * 1e3);
    print_sites(cs, a, 1, total);
    free(a);
    return 0;
}
#else
int bench_profile_cuda(void *cm, void *cs, const int32_t *toks, uint32_t n_steps, uint32_t n_vocab,
                       double wpt) {
    (void)cm, (void)cs, (void)toks, (void)n_steps, (void)n_vocab, (void)wpt;
    fprintf(stderr, "ds4-bench: --profile needs a CUDA build (make cuda)\n");
    return 1;
}

int bench_profile_prefill_cuda(void *cm, void *cs, const int32_t *toks, uint32_t n) {
    (void)cm, (void)cs, (void)toks, (void)n;
    fprintf(stderr, "ds4-bench: --profile-prefill needs a CUDA build (make cuda)\n");
    return 1;
}
#endif
