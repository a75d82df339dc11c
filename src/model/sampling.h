/*
 * model/sampling.h — internals of the token sampler shared with its tests: the PRNG and the
 * top-k selection. The public interface is the "Sampling" section of include/ds4.h. Knows
 * nothing about the model or sessions.
 */
#ifndef DS4_MODEL_SAMPLING_H
#define DS4_MODEL_SAMPLING_H

#include <stdint.h>

#include "ds4.h"

/* xoshiro256** state (Blackman & Vigna), seeded through splitmix64 so any seed, 0 included,
 * gives a well-mixed non-zero state. */
typedef struct smp_rng {
    uint64_t s[4];
} smp_rng;

void smp_rng_seed(smp_rng *r, uint64_t seed);
uint64_t smp_rng_next(smp_rng *r);
/* Uniform in [0, 1) with 53 random bits. */
double smp_rng_uniform(smp_rng *r);

/* A candidate token: id and its logit. */
typedef struct smp_cand {
    int32_t id;
    float logit;
} smp_cand;

/* Writes the k best finite logits (logit desc, id asc) of logits[n] into out, best first;
 * returns how many were written (min(k, number of finite logits)). */
uint32_t smp_top_k(const float *logits, uint32_t n, uint32_t k, smp_cand *out);

/* Block of the sampler's cumulative sums (sampling.c invariant 4): candidates by sorted
 * position, or token ids in id order. */
#define SMP_SUM_BLOCK 256u

/* One draw of ds4_sampler_sample described as data, for a sampler that runs where the logits
 * are (cuda/sample_dev.cu, issue #7): the parameters, the penalty history as (token, count)
 * pairs and the uniform, drawn here so the PRNG sequence stays the host's. A device sampler
 * that follows ds4_sampler_sample step by step on the same logits gets the same token. */
typedef struct smp_plan {
    int greedy;              /* temperature <= 0 or top_k == 1: argmax, no uniform drawn */
    uint32_t n_vocab;
    uint32_t top_k;          /* 0: every finite logit (top_k <= 0 or >= n_vocab) */
    double inv_t;            /* 1.0 / (double)temperature */
    double min_p, top_p;     /* the float parameters, exactly; top_p_on: top_p < 1 */
    int top_p_on;
    float repeat_penalty, presence_penalty, frequency_penalty;
    uint32_t n_pen;          /* distinct tokens of the history with their counts (order free) */
    const int32_t *pen_tok;  /* point into the sampler: valid until its next call */
    const uint32_t *pen_count;
    double u;                /* the uniform of this draw, in [0, 1) (unless greedy) */
    smp_rng saved;           /* the PRNG before the draw, for smp_plan_undo */
} smp_plan;

/* The vocabulary size the sampler was created for. */
uint32_t smp_sampler_n_vocab(const ds4_sampler *s);

/* The next draw of s: fills *out and, unless greedy, advances the PRNG exactly as
 * ds4_sampler_sample does. */
void smp_plan_next(ds4_sampler *s, smp_plan *out);
/* The draw did not happen (no finite logit, or the caller samples on the host after all):
 * puts the PRNG back to where smp_plan_next found it. */
void smp_plan_undo(ds4_sampler *s, const smp_plan *p);

#endif
