/*
 * model/hparams.h — DeepSeek V4 hyper-parameters read from `deepseek4.*` GGUF metadata
 * (GGUF_LAYOUT §2.1) and validated. Nothing is hard-coded to Flash: the tiny test model, Flash
 * and Pro shapes come through the same keys.
 *
 * Owns: reading and checking the keys, derived per-layer facts (compress ratio, hash layer,
 * RoPE kind). Must not: touch tensors (model/weights.c) or allocate state.
 */
#ifndef DS4_MODEL_HPARAMS_H
#define DS4_MODEL_HPARAMS_H

#include <stdbool.h>
#include <stdint.h>

#include "ds4.h"
#include "format/gguf.h"

/* Upper bounds that keep a corrupt file from becoming a huge allocation or an absurd loop.
 * Each is far above any published shape (Flash 43 layers, Pro 61). */
#define HP_MAX_LAYERS 1024
#define HP_MAX_HC 16

typedef struct model_hparams {
    int64_t n_layer;        /* main layers (the MTP block, when present, is extra) */
    int64_t n_embd;         /* D */
    int64_t n_vocab;
    int64_t n_head;         /* query heads */
    int64_t head_dim;       /* key_length = value_length (K = V) */
    int64_t n_rope;         /* RoPE dims, the last n_rope of each head */
    int64_t q_lora;         /* q_lora_rank */
    int64_t o_lora;         /* output_lora_rank */
    int64_t o_groups;       /* output groups; n_head / o_groups heads each */
    int64_t n_expert;
    int64_t n_expert_used;
    int64_t n_ff_exp;       /* expert (routed and shared) FFN width */
    int64_t n_expert_shared;
    int64_t n_hash_layer;   /* layers [0, n_hash_layer) route by token id */
    int64_t n_window;       /* sliding window rows */
    int64_t idx_n_head;     /* indexer heads */
    int64_t idx_head_dim;   /* indexer head dim */
    int64_t idx_topk;       /* indexer top-k (possibly overridden at open) */
    int64_t n_hc;           /* hyper-connection streams */
    int64_t sinkhorn_iters;
    uint64_t yarn_orig_ctx;
    double rope_base;       /* ratio-0 layers */
    double compress_rope_base;
    double yarn_factor, yarn_beta_fast, yarn_beta_slow;
    float route_scale;
    float norm_eps;
    float hc_eps;
    bool expert_weights_norm;
    /* Per layer (n_layer entries; entry n_layer describes the MTP block: ratio 0). */
    uint32_t *compress_ratio;
    float *swiglu_clamp;    /* routed experts */
    float *swiglu_clamp_shared; /* shared expert (defaults to swiglu_clamp when absent) */
} model_hparams;

/* Reads and validates every key of GGUF_LAYOUT §2.1 (plus the shape consistency the forward
 * pass relies on: head_dim > n_rope, n_rope even, n_head divisible by o_groups, ratios in
 * {0, 4, 128}-style powers of two, ...). idx_topk_override > 0 replaces the stored top-k.
 * On success *hp owns two arrays; free with hparams_free. */
ds4_status hparams_load(model_hparams *hp, const gguf_ctx *g, int64_t idx_topk_override,
                        ds4_error *err);
void hparams_free(model_hparams *hp);

/* Layer facts. il may be n_layer (the MTP block). */
static inline uint32_t hparams_ratio(const model_hparams *hp, int64_t il) {
    return hp->compress_ratio[il];
}
static inline bool hparams_is_hash(const model_hparams *hp, int64_t il) {
    return il < hp->n_hash_layer;
}

#endif
