/*
 * cuda/sample_dev.h — sampling on the device (issue #7): ds4_sampler_sample's draw run on logits
 * that are already in device memory, so a decode step downloads one token id instead of the
 * 129,280 logits. The host keeps the sampler (parameters, history, PRNG) and hands each draw
 * over as an smp_plan (model/sampling.h); the device follows model/sampling.c step by step and
 * returns the same token. Must not: own the PRNG or decide sampling policy.
 *
 * Also the two calls the session layer makes on a GPU state's current token (forward_cuda.c):
 * its logits to the host, or its sampled next token with only the id downloaded.
 */
#ifndef DS4_CUDA_SAMPLE_DEV_H
#define DS4_CUDA_SAMPLE_DEV_H

#include <stdbool.h>
#include <stdint.h>

#include "ds4.h"
#include "model/sampling.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Device scratch of the sampler for one vocabulary size (a few MB). */
typedef struct cuda_sampler cuda_sampler;

ds4_status cuda_sampler_create(cuda_sampler **out, int64_t n_vocab, ds4_error *err);
void cuda_sampler_free(cuda_sampler *ds);

/* Candidates the device path sorts at most (min-p / top-k survivors); beyond that a sorted
 * draw (top_k > 0 or top_p < 1) is answered CUDA_SAMPLE_HOST, an id-order one still runs on
 * the device. */
#define CUDA_SAMPLE_MAX_CAND 4096
#define CUDA_SAMPLE_HOST (-2)

/* The token ds4_sampler_sample would draw from d_logits[plan->n_vocab] for this plan (the plan's
 * uniform already drawn): *tok >= 0, -1 when no logit is finite (after penalties), or
 * CUDA_SAMPLE_HOST when more than CUDA_SAMPLE_MAX_CAND candidates survive the cuts of a sorted
 * draw and the caller must sample on the host (smp_plan_undo, then ds4_sampler_sample). d_logits is not
 * modified. Synchronous: returns after the id is downloaded. */
ds4_status cuda_sample_logits(cuda_sampler *ds, const float *d_logits, const smp_plan *plan,
                              int32_t *tok, ds4_error *err);

/* forward_cuda.c, on the current token of a state (the last one evaluated). need_head: the
 * output head has not run since that eval (an eval with logits mode NONE); the head then runs
 * on the device first. */
struct cuda_state;
/* Its logits [n_vocab] downloaded to the host. */
ds4_status cuda_state_logits(struct cuda_state *s, bool need_head, float *logits, ds4_error *err);
/* Its next token drawn by smp (the PRNG advances as ds4_sampler_sample would): on the device
 * with *ds (created on first use, caller frees with cuda_sampler_free); when the candidate set
 * is too large for the device path, the logits are downloaded into host_logits[n_vocab] and
 * ds4_sampler_sample draws (*logits_on_host = true). */
ds4_status cuda_state_sample(struct cuda_state *s, cuda_sampler **ds, ds4_sampler *smp,
                             bool need_head, float *host_logits, bool *logits_on_host,
                             int32_t *tok, ds4_error *err);

#ifdef __cplusplus
}
#endif

#endif
