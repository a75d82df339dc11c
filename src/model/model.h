/*
 * model/model.h — the internal model API of libds4: a DeepSeek V4 model opened from a GGUF
 * (hyper-parameters + every weight validated and bound in place), the per-session attention
 * state (KV windows, compressed rows, compressor streaming state, indexer rows), and the CPU
 * forward pass that evaluates a chunk of tokens at the state's current position
 * (MODEL_MATH.md is the contract; every formula cites it).
 *
 * The public session API (include/ds4.h: sync, sampling, snapshots) is built on this header.
 *
 * Threading: a model is immutable after model_open and owns one worker pool. Calls that
 * evaluate (model_eval, model_eval_mtp) on the same model must not run concurrently; different
 * states may be evaluated one after another. A state belongs to one model.
 *
 * Determinism: every output element is computed by the same code in the same order however
 * the tokens are chunked, so chunked prefill, token-by-token decode and save/restore give
 * bit-identical results (MODEL_MATH §7.4). Thread count does not change results either.
 */
#ifndef DS4_MODEL_MODEL_H
#define DS4_MODEL_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ds4.h"
#include "format/gguf.h"
#include "model/hparams.h"

typedef struct model model;
typedef struct model_state model_state;

/* ---- Open / close ------------------------------------------------------------------------ */

typedef struct model_options {
    int n_threads;              /* worker threads incl. the caller; <= 0: one per core */
    int64_t idx_topk_override;  /* > 0 replaces deepseek4.attention.indexer.top_k */
    /* Companion MTP GGUF (GGUF_LAYOUT §3.8, e.g. DeepSeek-V4-Flash-MTP-*.gguf) holding the
     * mtp.0.* block; NULL: use mtp.0.* from the main file when present. Must outlive the
     * model. */
    const gguf_ctx *mtp_gguf;
    /* Checking mode (issue #3): quantized weights are decoded row by row and dotted with the
     * f32 activations instead of ds4's Q8_0/Q8_K activation records, so a quantized model gives
     * exactly the logits of the same model with its weights dequantized to F32. Slower. */
    bool exact_activations;
} model_options;

/* Reads hyper-parameters (GGUF_LAYOUT §2.1) and binds every tensor of §3 by name, type and
 * dims (pointers into the mapping; nothing large is copied). `g` must outlive the model.
 * opt may be NULL (defaults). Errors name the key or tensor. */
ds4_status model_open(model **out, const gguf_ctx *g, const model_options *opt, ds4_error *err);
void model_close(model *m);

const model_hparams *model_get_hparams(const model *m);
/* True when the GGUF carries the mtp.0.* block (MODEL_MATH §11). */
bool model_has_mtp(const model *m);
int model_n_threads(const model *m);

/* ---- Memory estimate (MODEL_MATH §13) ---------------------------------------------------- */

typedef struct model_mem_estimate {
    uint64_t fixed_bytes;         /* windows, compressor state, scratch, logits: independent of ctx */
    uint64_t kv_bytes_per_token;  /* compressed + indexer rows per token of context (slope) */
    uint64_t total_bytes;         /* what model_state_create(n_ctx) allocates, rounded up */
} model_mem_estimate;

void model_memory_estimate(const model *m, int64_t n_ctx, model_mem_estimate *out);

/* ---- State ------------------------------------------------------------------------------- */

/* A fresh state (position 0, compressor state reset per MODEL_MATH §6.4) for up to n_ctx
 * tokens. DS4_ERR_NOMEM when the estimate cannot be allocated. */
ds4_status model_state_create(model_state **out, const model *m, int64_t n_ctx, ds4_error *err);
void model_state_free(model_state *st);
/* Back to position 0 with a fresh compressor state (also resets the MTP position). */
void model_state_reset(model_state *st);
int64_t model_state_pos(const model_state *st);  /* tokens evaluated so far */
int64_t model_state_ctx(const model_state *st);  /* capacity in tokens */

/* Raw state payload (the session layer wraps it in a versioned, checksummed container).
 * Holds everything of MODEL_MATH §13 except tokens and logits (the session keeps those) and
 * the MTP window. The size depends only on the model, n_ctx and the current position. */
size_t model_state_serialized_bytes(const model_state *st);
ds4_status model_state_serialize(const model_state *st, void *buf, size_t n_bytes,
                                 ds4_error *err);
/* Restores into a state of the same model with n_ctx >= the saved position. Every count is
 * validated against the payload size; a mismatching payload is DS4_ERR_FORMAT. The MTP
 * window is cleared (MTP position 0). */
ds4_status model_state_deserialize(model_state *st, const void *buf, size_t n_bytes,
                                   ds4_error *err);

/* ---- Capture hooks (golden comparisons, --dump-layers) ----------------------------------- */

typedef struct model_capture {
    void *user;
    /* Per layer and eval call, rows for tokens pos0..pos0+n_tokens-1 (MODEL_MATH §2):
     * what = "attn_out" (row_len D), "h_attn" (hc*D: streams after the attention hc_post),
     * "ffn_out" (D), "h_out" (hc*D). */
    void (*layer)(void *user, int64_t layer, const char *what, int64_t pos0, int64_t n_tokens,
                  const float *rows, int64_t row_len);
    /* Routed experts chosen for one token (ascending ids; MODEL_MATH §9.2). */
    void (*experts)(void *user, int64_t layer, int64_t pos, const int32_t *ids, int n_ids);
    /* Compressed rows chosen by the indexer of a ratio-4 layer for one token (ascending;
     * MODEL_MATH §8). */
    void (*indexer)(void *user, int64_t layer, int64_t pos, const int32_t *rows, int n_rows);
    /* Window KV row of one token (its n non-RoPE dims) just before the FP8 round trip
     * (MODEL_MATH §12 #1). Writable: a checking tool may move a value, e.g. to force the other
     * rounding of a near-tie (test_model_golden.c, docs/ENGINE.md). */
    void (*kv_pre_fp8)(void *user, int64_t layer, int64_t pos, float *row, int64_t n);
} model_capture;

/* ---- Evaluation -------------------------------------------------------------------------- */

typedef enum model_logits_mode {
    MODEL_LOGITS_NONE = 0,   /* no output head work at all */
    MODEL_LOGITS_LAST,       /* logits[vocab] for the last token of the chunk */
    MODEL_LOGITS_ALL         /* logits[n_tokens][vocab] */
} model_logits_mode;

typedef struct model_eval_opts {
    model_logits_mode logits_mode;
    float *logits;               /* required unless logits_mode is NONE */
    float *hc_out;               /* optional [n_tokens][hc*D]: final HC state before hc_head
                                    (the MTP block's input, MODEL_MATH §11) */
    const model_capture *capture;/* optional */
    int32_t *token_out;          /* optional (issue #7): the greedy next token, ds4_argmax of
                                    the last token's logits; with logits_mode NONE the CUDA
                                    backend runs head + argmax on the device and downloads only
                                    this id; the CPU backend computes the head and argmax) */
} model_eval_opts;

/* Evaluates tokens[0..n_tokens) at positions pos..pos+n_tokens-1 and advances the state.
 * Any chunking gives the same results (MODEL_MATH §7.4). DS4_ERR_RANGE when the context would
 * overflow, DS4_ERR_INVALID_ARG for a token id outside the vocabulary, DS4_ERR_NOMEM when the
 * workspace cannot be allocated: all checked before the state changes (state unchanged). */
ds4_status model_eval(model *m, model_state *st, const int32_t *tokens, int64_t n_tokens,
                      const model_eval_opts *opts, ds4_error *err);

/* MTP block (MODEL_MATH §11), its own window state inside `st`, at MTP positions
 * mtp_pos..mtp_pos+n-1 (independent of the main position). Row i combines hc_in[i]
 * ([hc*D], a main-model hc_out row) with tokens[i]. logits [n][vocab] and hc_out [n][hc*D]
 * are optional. DS4_ERR_STATE when the model has no MTP block. */
ds4_status model_eval_mtp(model *m, model_state *st, const float *hc_in, const int32_t *tokens,
                          int64_t n, float *logits, float *hc_out, ds4_error *err);
int64_t model_state_mtp_pos(const model_state *st);
void model_state_mtp_reset(model_state *st);

#endif
