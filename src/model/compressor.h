/*
 * model/compressor.h — the KV compressors of compressed layers (MODEL_MATH §6): streaming
 * gated pooling of `ratio` tokens (ratio 4: overlapping with the previous window), then norm,
 * RoPE at the entry's first position and the QAT round trip (FP8 for attention rows, Hadamard
 * + FP4 for indexer rows, MODEL_MATH §12 #2, #4).
 *
 * Owns: the §6.4 state machine. Must not: run projections (the caller passes A = wkv·x and
 * B = wgate·x) or attention.
 */
#ifndef DS4_MODEL_COMPRESSOR_H
#define DS4_MODEL_COMPRESSOR_H

#include <stdbool.h>
#include <stdint.h>

#include "model/kvstate.h"
#include "model/weights.h"

typedef enum comp_kind { COMP_ATTN, COMP_INDEXER } comp_kind;

/* Feeds the token at absolute position pos (A, B: coff*dim values; B without ape). When the
 * token completes a window, finishes entry (pos+1)/ratio - 1 into c->rows (MODEL_MATH §6.3)
 * and returns true. freqs: the layer's RoPE table (n_rope/2 values). */
bool comp_push(kv_comp *c, const compressor_weights *w, const float *A, const float *B,
               int64_t pos, comp_kind kind, const float *freqs, int n_rope, float eps);

#endif
