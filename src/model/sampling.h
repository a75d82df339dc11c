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

#endif
