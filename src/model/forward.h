/*
 * model/forward.h — internals shared by the forward-pass modules (forward.c, attention.c,
 * indexer.c, moe.c, mtp.c, forward_open.c): the model and state structs and the per-state
 * workspace. Not for use outside src/model (the public surface is model/model.h).
 */
#ifndef DS4_MODEL_FORWARD_H
#define DS4_MODEL_FORWARD_H

#include "core/threadpool.h"
#include "cpu/matmul.h"
#include "model/hparams.h"
#include "model/kvstate.h"
#include "model/model.h"
#include "model/weights.h"

struct model {
    model_hparams hp;
    model_weights w;
    ds4_pool *pool;
    float *freqs_plain;   /* ratio-0 layers and MTP: rope_base, no YaRN (MODEL_MATH §3.4) */
    float *freqs_comp;    /* compressed layers: compress base + YaRN */
    int64_t ubatch;       /* tokens per internal chunk (bounds the workspace) */
    bool exact_act;       /* model_options.exact_activations (cpu/matmul.h exact mode) */
};

/* Per-token activations of one internal chunk, carved from one allocation. */
typedef struct fwd_ws {
    int64_t n_cap;
    cpu_buf mem, act, moe, attn, idx;
    float *X, *X2;          /* [n][hc*D] HC state in / out of a sub-layer */
    float *a;               /* [n][D] normalised sub-layer input */
    float *mix;             /* [n][(2+hc)*hc] */
    float *pre, *post;      /* [n][hc] */
    float *comb;            /* [n][hc*hc] */
    float *qr;              /* [n][q_lora] */
    float *q;               /* [n][H*Dh] queries, then attention outputs */
    float *o;               /* [n][H*Dh] */
    float *kv;              /* [n][Dh] */
    float *cA, *cB;         /* [n][2*Dh] compressor projections */
    float *iA, *iB;         /* [n][2*idx_dim] */
    float *iq;              /* [n][idx_heads*idx_dim] */
    float *iw;              /* [n][idx_heads] */
    float *oa;              /* [n][G*o_lora] */
    float *f;               /* [n][D] sub-layer output */
    float *rl;              /* [n][n_expert] router */
    float *selw;            /* [n][n_used] */
    int32_t *sel;           /* [n][n_used] */
    int32_t *isel;          /* [n][idx_topk] */
    int32_t *n_isel;        /* [n] */
    float *tmp;             /* [n][D] */
} fwd_ws;

struct model_state {
    const model *m;
    kv_state kv;
    fwd_ws ws;
};

ds4_status fwd_ws_reserve(fwd_ws *ws, const model *m, int64_t n_tok, int64_t n_ctx,
                          ds4_error *err);
void fwd_ws_free(fwd_ws *ws);

/* One token-chunk of one layer's sub-layers. `il` may be n_layer (MTP; kvl = its window). */
ds4_status attn_forward(model *m, const layer_weights *L, int64_t il, kv_layer *kvl,
                        int64_t pos0, int64_t n, fwd_ws *ws, const model_capture *cap,
                        ds4_error *err);
ds4_status moe_forward(model *m, const layer_weights *L, int64_t il, const int32_t *tokens,
                       int64_t pos0, int64_t n, fwd_ws *ws, const model_capture *cap,
                       ds4_error *err);

/* Indexer top-k for query rows (MODEL_MATH §8); fills ws->isel / ws->n_isel per token. */
void indexer_select(model *m, const layer_weights *L, const kv_comp *idx, int64_t pos0,
                    int64_t n, fwd_ws *ws);

/* The HC sub-layer wrapper: hc_pre into ws->a (normalised with `norm`), keeping pre/post/comb. */
ds4_status fwd_hc_pre(model *m, const cpu_mat *fn, const float *scale, const float *base,
                      const float *norm, int64_t n, fwd_ws *ws, ds4_error *err);
/* X2 = hc_post(f, X) then swap X and X2. */
void fwd_hc_post(model *m, int64_t n, fwd_ws *ws);

/* One transformer block over the chunk (attention then MoE sub-layer), MODEL_MATH §2. */
ds4_status fwd_block(model *m, const layer_weights *L, int64_t il, kv_layer *kvl,
                     const int32_t *tokens, int64_t pos0, int64_t n, fwd_ws *ws,
                     const model_capture *cap, ds4_error *err);

/* hc_head + final norm + output head (MODEL_MATH §10) for rows [0, n) of ws->X; writes
 * logits for the rows selected by `last_only`. */
ds4_status fwd_output(model *m, const cpu_mat *hc_fn, const float *hc_scale,
                      const float *hc_base, const float *norm, int64_t n, bool last_only,
                      float *logits, fwd_ws *ws, ds4_error *err);

#endif
