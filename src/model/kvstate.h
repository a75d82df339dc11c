/*
 * model/kvstate.h — per-session attention state of a V4 model (MODEL_MATH §6.4, §7, §13):
 * the raw sliding-window ring of every layer, the compressed attention rows and indexer rows
 * of compressed layers, and the compressor streaming buffers; plus the MTP block's window.
 *
 * All rows are f32 (lossless: the FP8/FP4 simulated values and the RoPE dims are exact in f32,
 * so save/restore continues bit-identically, §13 resumption rule).
 *
 * Owns: allocation, reset to the §6.4 initial state, sizes, the raw payload format.
 * Must not: compute attention or compression (model/attention.c, model/compressor.c).
 */
#ifndef DS4_MODEL_KVSTATE_H
#define DS4_MODEL_KVSTATE_H

#include <stddef.h>
#include <stdint.h>

#include "ds4.h"
#include "model/hparams.h"

typedef struct kv_comp {
    int64_t ratio, coff, dim;  /* see compressor_weights */
    int64_t cap;               /* rows: floor(n_ctx / ratio) */
    float *rows;               /* [cap][dim] finished entries */
    float *st_kv, *st_sc;      /* [coff*ratio][coff*dim] streaming state (§6.4) */
} kv_comp;

typedef struct kv_layer {
    float *raw;                /* [n_window][head_dim]: position s at slot s mod n_window */
    int64_t ratio;
    kv_comp comp;              /* ratio != 0 */
    kv_comp idx;               /* ratio 4 (indexer rows, dim = idx_head_dim) */
} kv_layer;

typedef struct kv_state {
    int64_t n_ctx, pos, mtp_pos;
    int64_t n_layer, n_window, head_dim, idx_dim;
    kv_layer *layers;          /* n_layer */
    kv_layer mtp;              /* window only; raw NULL when the model has no MTP */
} kv_state;

/* Per-context sizes (MODEL_MATH §13): bytes independent of n_ctx and bytes per token. */
void kv_sizes(const model_hparams *hp, bool with_mtp, uint64_t *fixed_bytes,
              uint64_t *per_token_bytes);

ds4_status kv_create(kv_state *kv, const model_hparams *hp, bool with_mtp, int64_t n_ctx,
                     ds4_error *err);
void kv_free(kv_state *kv);
/* Position 0, compressor state kv = 0 and score = -inf (MODEL_MATH §6.4), MTP position 0. */
void kv_reset(kv_state *kv);
void kv_reset_mtp(kv_state *kv);

size_t kv_payload_bytes(const kv_state *kv);
ds4_status kv_save(const kv_state *kv, void *buf, size_t n_bytes, ds4_error *err);
ds4_status kv_load(kv_state *kv, const void *buf, size_t n_bytes, ds4_error *err);

#endif
