/*
 * model/synthetic.h — random DeepSeek V4 weights of any shape as a conversion source, so tests
 * and benchmarks get a GGUF of the real widths without the 160 GB checkpoint (issue #2 §3).
 * Values are a pure function of (seed, tensor name, expert, row, column): the output does not
 * depend on threads or slab sizes. Must not: write files or choose types (convert.c does).
 *
 * Scales (so activations stay finite over many layers and routing is not degenerate):
 * matrices N(0, 1/fan_in) (std 1/sqrt(ne0)); token embeddings N(0, 1); RMSNorm weights
 * 1 + N(0, 0.05²); HC fns N(0, (0.1/sqrt(ne0))²), HC bases N(0, 0.1²), HC scales 0.1;
 * attention sinks N(0, 0.5²); router bias N(0, 0.01²); compressor APE N(0, 0.1²);
 * tid2eid: n_used distinct uniformly drawn experts per token.
 */
#ifndef DS4_MODEL_SYNTHETIC_H
#define DS4_MODEL_SYNTHETIC_H

#include <stdint.h>
#include "ds4.h"
#include "model/convert.h"

typedef struct cv_synth cv_synth;

/* The plan must outlive the synth. */
ds4_status cv_synth_create(cv_synth **out, const cv_plan *plan, uint64_t seed, ds4_error *err);
void cv_synth_free(cv_synth *sy);
void cv_synth_source(cv_synth *sy, cv_source *src);

#endif
