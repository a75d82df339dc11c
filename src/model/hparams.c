/*
 * model/hparams.c — deepseek4.* metadata -> validated model_hparams (GGUF_LAYOUT §2.1).
 */
#include "model/hparams.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

#define KEY(s) "deepseek4." s

static ds4_status get_u32_dim(const gguf_ctx *g, const char *key, int64_t lo, int64_t hi,
                              int64_t *out, ds4_error *err) {
    uint32_t v;
    ds4_status st = gguf_get_u32(g, key, &v, err);
    if (st) return ds4_err_prefix(err, "model: hyper-parameters");
    if ((int64_t)v < lo || (int64_t)v > hi)
        return ds4_seterr(err, DS4_ERR_FORMAT,
                          "model: key '%s' is %u, expected a value in [%lld, %lld]", key, v,
                          (long long)lo, (long long)hi);
    *out = v;
    return DS4_OK;
}

static ds4_status get_f64_pos(const gguf_ctx *g, const char *key, double *out, ds4_error *err) {
    ds4_status st = gguf_get_f64(g, key, out, err);
    if (st) return ds4_err_prefix(err, "model: hyper-parameters");
    if (!isfinite(*out) || *out <= 0.0)
        return ds4_seterr(err, DS4_ERR_FORMAT, "model: key '%s' is %g, expected a finite value > 0",
                          key, *out);
    return DS4_OK;
}

void hparams_free(model_hparams *hp) {
    if (!hp) return;
    free(hp->compress_ratio);
    free(hp->swiglu_clamp);
    free(hp->swiglu_clamp_shared);
    hp->compress_ratio = NULL;
    hp->swiglu_clamp = NULL;
    hp->swiglu_clamp_shared = NULL;
}

static ds4_status read_clamps(const gguf_ctx *g, const char *key, int64_t n_layer, float *dst,
                              bool optional, bool *found, ds4_error *err) {
    const gguf_value *arr = gguf_find_value(g, key);
    *found = arr != NULL;
    if (!arr) {
        if (optional) return DS4_OK;
        return ds4_seterr(err, DS4_ERR_NOT_FOUND, "model: key '%s' not found", key);
    }
    if (arr->type != GGUF_TYPE_ARRAY || (uint64_t)n_layer > arr->n_elems)
        return ds4_seterr(err, DS4_ERR_FORMAT,
                          "model: key '%s' must be an array of at least %lld floats", key,
                          (long long)n_layer);
    for (int64_t il = 0; il < n_layer; il++) {
        double v;
        ds4_status st = gguf_arr_f64(arr, (uint64_t)il, &v, err);
        if (st) return ds4_err_prefix(err, "model");
        if (!isfinite(v) || v <= 0.0)
            return ds4_seterr(err, DS4_ERR_FORMAT, "model: key '%s'[%lld] is %g, expected > 0",
                              key, (long long)il, v);
        dst[il] = (float)v;
    }
    return DS4_OK;
}

ds4_status hparams_load(model_hparams *hp, const gguf_ctx *g, int64_t idx_topk_override,
                        ds4_error *err) {
    memset(hp, 0, sizeof *hp);
    ds4_status st;
    const int64_t big = (int64_t)1 << 24;
#define DIM(k, lo, hi, f) do { st = get_u32_dim(g, KEY(k), lo, hi, &hp->f, err); if (st) goto fail; } while (0)
    DIM("block_count", 1, HP_MAX_LAYERS, n_layer);
    DIM("embedding_length", 1, big, n_embd);
    DIM("vocab_size", 1, (int64_t)1 << 28, n_vocab);
    DIM("attention.head_count", 1, 65536, n_head);
    int64_t n_head_kv, value_len;
    st = get_u32_dim(g, KEY("attention.head_count_kv"), 1, 1, &n_head_kv, err);
    if (st) goto fail;
    DIM("attention.key_length", 2, 65536, head_dim);
    st = get_u32_dim(g, KEY("attention.value_length"), 1, 65536, &value_len, err);
    if (st) goto fail;
    DIM("rope.dimension_count", 2, 65536, n_rope);
    DIM("attention.q_lora_rank", 1, big, q_lora);
    DIM("attention.output_lora_rank", 1, big, o_lora);
    DIM("attention.output_group_count", 1, 65536, o_groups);
    DIM("expert_count", 1, 65536, n_expert);
    DIM("expert_used_count", 1, 65536, n_expert_used);
    DIM("expert_feed_forward_length", 1, big, n_ff_exp);
    DIM("expert_shared_count", 0, 1, n_expert_shared);
    DIM("hash_layer_count", 0, HP_MAX_LAYERS, n_hash_layer);
    DIM("attention.sliding_window", 1, big, n_window);
    DIM("attention.indexer.head_count", 1, 65536, idx_n_head);
    DIM("attention.indexer.key_length", 2, 65536, idx_head_dim);
    DIM("attention.indexer.top_k", 1, big, idx_topk);
    DIM("hyper_connection.count", 1, HP_MAX_HC, n_hc);
    DIM("hyper_connection.sinkhorn_iterations", 1, 1000, sinkhorn_iters);
#undef DIM
    st = gguf_get_u64(g, KEY("rope.scaling.original_context_length"), &hp->yarn_orig_ctx, err);
    if (st) { ds4_err_prefix(err, "model: hyper-parameters"); goto fail; }
    double d;
    if ((st = get_f64_pos(g, KEY("rope.freq_base"), &hp->rope_base, err))) goto fail;
    if ((st = get_f64_pos(g, KEY("rope.scaling.factor"), &hp->yarn_factor, err))) goto fail;
    if ((st = get_f64_pos(g, KEY("rope.scaling.yarn_beta_fast"), &hp->yarn_beta_fast, err))) goto fail;
    if ((st = get_f64_pos(g, KEY("rope.scaling.yarn_beta_slow"), &hp->yarn_beta_slow, err))) goto fail;
    if ((st = get_f64_pos(g, KEY("attention.compress_rope_freq_base"), &hp->compress_rope_base, err))) goto fail;
    if ((st = get_f64_pos(g, KEY("expert_weights_scale"), &d, err))) goto fail;
    hp->route_scale = (float)d;
    if ((st = get_f64_pos(g, KEY("attention.layer_norm_rms_epsilon"), &d, err))) goto fail;
    hp->norm_eps = (float)d;
    if ((st = get_f64_pos(g, KEY("hyper_connection.epsilon"), &d, err))) goto fail;
    hp->hc_eps = (float)d;
    st = gguf_get_bool(g, KEY("expert_weights_norm"), &hp->expert_weights_norm, err);
    if (st) { ds4_err_prefix(err, "model: hyper-parameters"); goto fail; }

    /* Optional group routing must be off (GGUF_LAYOUT §2.1). */
    const char *grp[2] = {KEY("expert_group_count"), KEY("expert_group_used_count")};
    for (int i = 0; i < 2; i++) {
        const gguf_value *v = gguf_find_value(g, grp[i]);
        uint32_t u;
        if (v && v->type == GGUF_TYPE_UINT32 && gguf_value_u32(v, &u, NULL) == DS4_OK && u != 0) {
            st = ds4_seterr(err, DS4_ERR_UNSUPPORTED, "model: key '%s' is %u, expected 0", grp[i], u);
            goto fail;
        }
    }

    /* Shape consistency the forward pass relies on (MODEL_MATH §5). */
    if (value_len != hp->head_dim) {
        st = ds4_seterr(err, DS4_ERR_UNSUPPORTED,
                        "model: attention.value_length %lld != key_length %lld (V4 shares K and V)",
                        (long long)value_len, (long long)hp->head_dim);
        goto fail;
    }
    if (hp->n_rope % 2 || hp->n_rope > hp->head_dim || hp->n_rope > hp->idx_head_dim) {
        st = ds4_seterr(err, DS4_ERR_FORMAT,
                        "model: rope.dimension_count %lld must be even and <= key_length %lld "
                        "and indexer key_length %lld", (long long)hp->n_rope,
                        (long long)hp->head_dim, (long long)hp->idx_head_dim);
        goto fail;
    }
    if (hp->n_head % hp->o_groups) {
        st = ds4_seterr(err, DS4_ERR_FORMAT,
                        "model: head_count %lld is not a multiple of output_group_count %lld",
                        (long long)hp->n_head, (long long)hp->o_groups);
        goto fail;
    }
    if (hp->n_expert_used > hp->n_expert) {
        st = ds4_seterr(err, DS4_ERR_FORMAT, "model: expert_used_count %lld > expert_count %lld",
                        (long long)hp->n_expert_used, (long long)hp->n_expert);
        goto fail;
    }
    if (hp->n_hash_layer > hp->n_layer) {
        st = ds4_seterr(err, DS4_ERR_FORMAT, "model: hash_layer_count %lld > block_count %lld",
                        (long long)hp->n_hash_layer, (long long)hp->n_layer);
        goto fail;
    }
    /* Hadamard (MODEL_MATH §3.5) needs a power of two; the QAT blocks (§3.6/3.7) need 64 | nope
     * dims and 32 | indexer dim. */
    if (hp->idx_head_dim & (hp->idx_head_dim - 1) || hp->idx_head_dim % 32 ||
        (hp->head_dim - hp->n_rope) % 64) {
        st = ds4_seterr(err, DS4_ERR_UNSUPPORTED,
                        "model: indexer key_length %lld must be a power of two >= 32 and "
                        "key_length - rope dims (%lld) a multiple of 64",
                        (long long)hp->idx_head_dim, (long long)(hp->head_dim - hp->n_rope));
        goto fail;
    }
    if (idx_topk_override > 0) hp->idx_topk = idx_topk_override;

    int64_t n = hp->n_layer + 1;
    hp->compress_ratio = calloc((size_t)n, sizeof *hp->compress_ratio);
    hp->swiglu_clamp = calloc((size_t)n, sizeof *hp->swiglu_clamp);
    hp->swiglu_clamp_shared = calloc((size_t)n, sizeof *hp->swiglu_clamp_shared);
    if (!hp->compress_ratio || !hp->swiglu_clamp || !hp->swiglu_clamp_shared) {
        st = ds4_seterr(err, DS4_ERR_NOMEM, "model: out of memory for per-layer parameters");
        goto fail;
    }
    const gguf_value *arr = gguf_find_value(g, KEY("attention.compress_ratios"));
    if (!arr || arr->type != GGUF_TYPE_ARRAY || arr->n_elems < (uint64_t)hp->n_layer) {
        st = ds4_seterr(err, arr ? DS4_ERR_FORMAT : DS4_ERR_NOT_FOUND,
                        "model: key '" KEY("attention.compress_ratios")
                        "' must be an array of at least %lld integers", (long long)hp->n_layer);
        goto fail;
    }
    for (int64_t il = 0; il < hp->n_layer; il++) {
        uint32_t r;
        if ((st = gguf_arr_u32(arr, (uint64_t)il, &r, err))) { ds4_err_prefix(err, "model"); goto fail; }
        /* MODEL_MATH §0: 0 = window only; 4 = overlapping compressor + indexer; other ratios
         * compress without overlap. 1 would be a compressor that pools a single token. */
        if (r == 1 || r > 65536) {
            st = ds4_seterr(err, DS4_ERR_UNSUPPORTED,
                            "model: compress_ratios[%lld] is %u, expected 0 or 2..65536",
                            (long long)il, r);
            goto fail;
        }
        hp->compress_ratio[il] = r;
    }
    hp->compress_ratio[hp->n_layer] = 0; /* MTP block: window only (MODEL_MATH §11) */
    bool found;
    st = read_clamps(g, KEY("swiglu_clamp_exp"), hp->n_layer, hp->swiglu_clamp, false, &found, err);
    if (st) goto fail;
    st = read_clamps(g, KEY("swiglu_clamp_shexp"), hp->n_layer, hp->swiglu_clamp_shared, true,
                     &found, err);
    if (st) goto fail;
    if (!found) memcpy(hp->swiglu_clamp_shared, hp->swiglu_clamp, (size_t)hp->n_layer * sizeof(float));
    /* MTP uses the same limit as the last layer (MODEL_MATH §9.4: one swiglu_limit). */
    hp->swiglu_clamp[hp->n_layer] = hp->swiglu_clamp[hp->n_layer - 1];
    hp->swiglu_clamp_shared[hp->n_layer] = hp->swiglu_clamp_shared[hp->n_layer - 1];
    return DS4_OK;
fail:
    hparams_free(hp);
    return st;
}
