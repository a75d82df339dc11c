/*
 * tools/ds4-bench/bench.h — pieces of ds4-bench shared between its files: options, one result
 * row, and the CSV / SVG writers (report.c). The measuring loop lives in main.c.
 */
#ifndef DS4_BENCH_H
#define DS4_BENCH_H

#include <stdint.h>
#include <stdio.h>

#include "ds4.h"

typedef struct bench_opts {
    const char *model_path;
    const char *prompt_file;    /* raw text, tokenized with the model's tokenizer */
    const char *prompt_tokens;  /* token ids file (whitespace / comma separated) */
    const char *chat_prompt_file; /* text rendered as one non-thinking user chat turn */
    const char *system;         /* system message for chat_prompt_file */
    const char *csv_path;       /* NULL = stdout */
    const char *svg_path;       /* NULL = none */
    const char *title;
    uint32_t ctx_start, ctx_max, ctx_alloc, step_incr, gen_tokens, prefill_chunk;
    double step_mul;
    int n_threads;
    uint64_t seed;              /* synthetic token sequence */
    int membw;                  /* measure read bandwidth for the decode bound (default on) */
    int exact_act;              /* --exact-activations: engine checking mode (slower) */
    const char *backend;        /* --backend cpu|cuda (default cpu) */
    /* --synthetic flash|tiny|CONFIG (synth.c): random weights of that shape built in memory
     * (on the GPU with --backend cuda) instead of --model; --layers/--experts shrink it (0 =
     * as the shape says), --preset picks the weight types (q2 default). */
    const char *synthetic;
    const char *preset;
    uint32_t syn_layers, syn_experts;
    /* --gpu-layers-experts N (backend cuda, issue #7): layers whose routed experts stay in
     * device memory, the first layers' in pinned host memory; -1 (default) = as many as fit. */
    int gpu_layers_experts;
    uint32_t profile_steps;     /* --profile N: per-op breakdown of N decode steps (CUDA) */
    int profile_prefill;        /* --profile-prefill: per-op breakdown of one prefill chunk (CUDA) */
    int sample;                 /* --sample (synth.c): decode also with the sampler's defaults */
} bench_opts;

typedef struct bench_row {
    uint32_t ctx_tokens, prefill_tokens, gen_tokens;
    double prefill_tps, gen_tps;
    uint64_t kvcache_bytes;
} bench_row;

/* Parses argv into o (defaults first). Returns 0, or prints the problem and returns 2
 * (usage error); returns -1 after printing --help. */
int bench_parse_args(bench_opts *o, int argc, char **argv);

/* The frontiers ctx_start, next(...), ..., ending exactly at ctx_max (SERVER_CLI §11):
 * linear step when step_mul == 1, else next = max(ceil(cur * step_mul), cur + 1).
 * Returns the count; *out is malloc'd. */
uint32_t bench_frontiers(const bench_opts *o, uint32_t **out);

/* CSV: ds4's header and 2-decimal rates, one row per call, flushed. */
void bench_csv_header(FILE *f);
void bench_csv_row(FILE *f, const bench_row *r);

/* Writes an SVG with two panels (prefill and generation tokens/s against context). 0 on
 * success. */
int bench_write_svg(const char *path, const char *title, const bench_row *rows, uint32_t n_rows);

/* A fixed pseudo-random token sequence (splitmix64 of seed), n ids below n_vocab; malloc'd,
 * NULL when out of memory. */
int32_t *bench_random_tokens(uint64_t seed, uint32_t n, uint32_t n_vocab);

/* The whole run for --synthetic (synth.c): builds the model, measures like main.c, writes the
 * same CSV. Returns the exit status. */
int bench_synthetic(const bench_opts *o);

/* --profile (profile.c, CUDA builds): from the state at the current position, times
 * o->profile_steps graph decode steps, then the same count op by op with CUDA events after
 * every op (each layer queued behind a gate so the GPU runs it back to back), and prints the
 * per-call-site breakdown to stderr. Advances the state by 4·profile_steps tokens from toks.
 * The model and state are cuda_model / cuda_state (void: this header does not include the CUDA
 * ones). Returns 0 or 1. */
int bench_profile_cuda(void *cuda_model, void *cuda_state, const int32_t *toks, uint32_t n_steps,
                       uint32_t n_vocab, double weight_bytes_per_token);

/* --profile-prefill (profile.c, CUDA builds): evaluates the n tokens (one chunk) from the
 * state as it is, op by op with CUDA events (each layer gated as above), and prints the
 * per-call-site breakdown of the chunk to stderr. Returns 0 or 1. */
int bench_profile_prefill_cuda(void *cuda_model, void *cuda_state, const int32_t *toks, uint32_t n);

/* Memory-bandwidth bound for decode (membw.c). */
/* Weight bytes one decoded token reads: every tensor once, routed experts n_used / n_expert of
 * their bytes, one embedding row; the MTP block excluded. */
uint64_t bench_weight_bytes_per_token(const ds4_engine *e);
/* Best of 5 streaming reads of an n_bytes buffer split over n_threads threads, bytes/s of wall
 * time; *cpu_bw (nullable) gets the sum over threads of bytes per thread-CPU-second, what the
 * threads would reach each on an idle core (the honest figure on a shared machine). */
double bench_read_bandwidth(int n_threads, size_t n_bytes, double *cpu_bw);

#endif
