/*
 * model/convert_shape.c — the V4 model shape: named presets, Hugging Face config.json parsing
 * (MODEL_MATH §0), consistency checks, and the GGUF metadata written from it
 * (GGUF_LAYOUT §2.1-§2.3). Knows no tensor data and no file layout beyond metadata keys.
 */
#include "model/convert.h"
#include "core/error.h"
#include "core/mapfile.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* The Flash rule (GGUF_LAYOUT §2.1): 0 for L < 2, 4 for even L >= 2, 128 for odd L >= 3;
 * the MTP block (entry n_layers) is 0. */
static void flash_ratios(cv_shape *s) {
    for (uint32_t l = 0; l < s->n_layers; l++) s->ratios[l] = l < 2 ? 0 : (l % 2 ? 128 : 4);
    s->ratios[s->n_layers] = 0;
    s->n_ratios = s->n_layers + s->n_mtp;
}

static void common_v4(cv_shape *s) {
    s->n_kv_heads = 1;
    s->rope_dim = 64;
    s->n_shared = 1;
    s->n_used = 6;
    s->n_hash = 3;
    s->window = 128;
    s->idx_head_dim = 128;
    s->hc_mult = 4;
    s->sinkhorn_iters = 20;
    s->n_mtp = 1;
    s->context_length = 1048576;
    s->orig_ctx = 65536;
    s->rope_theta = 10000.0;
    s->compress_rope_theta = 160000.0;
    s->rope_factor = 16.0;
    s->beta_fast = 32.0;
    s->beta_slow = 1.0;
    s->route_scale = 1.5;
    s->norm_eps = 1e-6;
    s->hc_eps = 1e-6;
    s->swiglu_limit = 10.0;
    s->norm_topk = true;
}

ds4_status cv_shape_preset(cv_shape *s, const char *name, ds4_error *err) {
    memset(s, 0, sizeof *s);
    common_v4(s);
    if (strcmp(name, "flash") == 0) {
        /* MODEL_MATH §0 */
        snprintf(s->name, sizeof s->name, "DeepSeek V4 Flash");
        s->n_layers = 43, s->dim = 4096, s->vocab = 129280, s->n_heads = 64, s->head_dim = 512;
        s->q_lora = 1024, s->o_groups = 8, s->o_lora = 1024, s->n_experts = 256;
        s->moe_inter = 2048, s->idx_heads = 64, s->idx_topk = 512;
    } else if (strcmp(name, "pro") == 0) {
        /* Reference ModelArgs defaults of the Pro model (MODEL_MATH §0 note). */
        snprintf(s->name, sizeof s->name, "DeepSeek V4 Pro");
        s->n_layers = 61, s->dim = 7168, s->vocab = 129280, s->n_heads = 128, s->head_dim = 512;
        s->q_lora = 1536, s->o_groups = 16, s->o_lora = 1024, s->n_experts = 384;
        s->moe_inter = 3072, s->idx_heads = 64, s->idx_topk = 1024, s->route_scale = 2.5;
    } else if (strcmp(name, "tiny") == 0) {
        /* testdata/tiny-v4/README.md */
        snprintf(s->name, sizeof s->name, "DeepSeek V4 tiny");
        s->n_layers = 5, s->dim = 256, s->vocab = 1024, s->n_heads = 8, s->head_dim = 128;
        s->q_lora = 128, s->o_groups = 2, s->o_lora = 128, s->n_experts = 16;
        s->moe_inter = 128, s->idx_heads = 8, s->idx_topk = 16;
    } else {
        return ds4_seterr(err, DS4_ERR_NOT_FOUND,
                          "convert: unknown shape '%s' (tiny, flash, pro or a config.json)", name);
    }
    flash_ratios(s);
    return cv_shape_check(s, err);
}

ds4_status cv_shape_check(const cv_shape *s, ds4_error *err) {
#define NEED(cond, ...) \
    do { if (!(cond)) return ds4_seterr(err, DS4_ERR_UNSUPPORTED, "config: " __VA_ARGS__); } while (0)
    NEED(s->n_layers >= 1 && s->n_layers <= CV_MAX_LAYERS, "num_hidden_layers %u not in 1..%d",
         s->n_layers, CV_MAX_LAYERS);
    NEED(s->n_mtp <= 1, "num_nextn_predict_layers %u (at most 1 MTP block)", s->n_mtp);
    NEED(s->head_dim > s->rope_dim && s->rope_dim % 2 == 0,
         "head_dim %u must exceed an even qk_rope_head_dim %u", s->head_dim, s->rope_dim);
    NEED(s->n_heads % s->o_groups == 0, "num_attention_heads %u not divisible by o_groups %u",
         s->n_heads, s->o_groups);
    NEED(s->n_used >= 1 && s->n_used <= s->n_experts,
         "num_experts_per_tok %u not in 1..n_routed_experts (%u)", s->n_used, s->n_experts);
    NEED(s->n_hash <= s->n_layers, "num_hash_layers %u > num_hidden_layers %u", s->n_hash,
         s->n_layers);
    NEED(s->n_shared <= 1, "n_shared_experts %u (ds4 supports 0 or 1)", s->n_shared);
    NEED(s->n_kv_heads == 1, "num_key_value_heads %u (V4 has one shared KV head)", s->n_kv_heads);
    NEED(s->idx_head_dim > s->rope_dim || s->idx_heads == 0,
         "index_head_dim %u must exceed qk_rope_head_dim %u", s->idx_head_dim, s->rope_dim);
    NEED(s->n_ratios >= s->n_layers, "compress_ratios has %u entries, need %u", s->n_ratios,
         s->n_layers);
    for (uint32_t l = 0; l <= s->n_layers; l++) {
        uint32_t r = s->ratios[l];
        NEED(r == 0 || r == 4 || r == 128, "compress_ratios[%u] = %u (ds4 knows 0, 4, 128)", l, r);
    }
#undef NEED
    return DS4_OK;
}

ds4_status cv_shape_shrink(cv_shape *s, uint32_t n_layers, uint32_t n_experts, ds4_error *err) {
    if (n_layers) {
        if (n_layers > CV_MAX_LAYERS)
            return ds4_seterr(err, DS4_ERR_INVALID_ARG, "convert: --layers %u exceeds %d", n_layers,
                              CV_MAX_LAYERS);
        uint32_t mtp_ratio = s->ratios[s->n_layers];
        /* Keep the per-layer pattern; beyond the original count continue the Flash rule. */
        for (uint32_t l = s->n_layers; l < n_layers; l++) s->ratios[l] = l < 2 ? 0 : (l % 2 ? 128 : 4);
        s->n_layers = n_layers;
        s->ratios[n_layers] = mtp_ratio;
        s->n_ratios = n_layers + s->n_mtp;
        if (s->n_hash > n_layers) s->n_hash = n_layers;
    }
    if (n_experts) {
        s->n_experts = n_experts;
        if (s->n_used > n_experts) s->n_used = n_experts;
    }
    return cv_shape_check(s, err);
}

/* ---- config.json ------------------------------------------------------------------------------ */

static ds4_status get_u32(const json_t *o, const char *key, bool required, uint32_t def,
                          uint32_t max, uint32_t *out, ds4_error *err) {
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required) return ds4_seterr(err, DS4_ERR_FORMAT, "config: key '%s' is missing", key);
        *out = def;
        return DS4_OK;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > (json_int_t)max)
        return ds4_seterr(err, DS4_ERR_FORMAT, "config: key '%s' must be an integer in 0..%u", key,
                          max);
    *out = (uint32_t)json_integer_value(v);
    return DS4_OK;
}

static ds4_status get_num(const json_t *o, const char *key, bool required, double def,
                          double *out, ds4_error *err) {
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required) return ds4_seterr(err, DS4_ERR_FORMAT, "config: key '%s' is missing", key);
        *out = def;
        return DS4_OK;
    }
    if (!json_is_number(v) || !isfinite(json_number_value(v)) || json_number_value(v) < 0)
        return ds4_seterr(err, DS4_ERR_FORMAT, "config: key '%s' must be a finite number >= 0", key);
    *out = json_number_value(v);
    return DS4_OK;
}

ds4_status cv_shape_from_json_text(cv_shape *s, const char *text, uint64_t len, ds4_error *err) {
    memset(s, 0, sizeof *s);
    json_error_t jerr;
    json_t *root = json_loadb(text, (size_t)len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return ds4_seterr(err, DS4_ERR_FORMAT, "config: JSON: %s (line %d, column %d)", jerr.text,
                          jerr.line, jerr.column);
    ds4_status st = DS4_OK;
    if (!json_is_object(root)) {
        st = ds4_seterr(err, DS4_ERR_FORMAT, "config: not a JSON object");
        goto out_free_json;
    }
    const uint32_t BIG = 1u << 24; /* widths; far above any V4 size, keeps products in u64 */
    struct {
        const char *key;
        uint32_t *dst;
        bool required;
        uint32_t def, max;
    } ints[] = {
        {"vocab_size", &s->vocab, true, 0, BIG},
        {"hidden_size", &s->dim, true, 0, BIG},
        {"num_hidden_layers", &s->n_layers, true, 0, CV_MAX_LAYERS},
        {"num_hash_layers", &s->n_hash, false, 0, CV_MAX_LAYERS},
        {"num_nextn_predict_layers", &s->n_mtp, false, 0, 16},
        {"num_attention_heads", &s->n_heads, true, 0, 65536},
        {"num_key_value_heads", &s->n_kv_heads, false, 1, 65536},
        {"head_dim", &s->head_dim, true, 0, 65536},
        {"qk_rope_head_dim", &s->rope_dim, true, 0, 65536},
        {"q_lora_rank", &s->q_lora, true, 0, BIG},
        {"o_groups", &s->o_groups, true, 0, 65536},
        {"o_lora_rank", &s->o_lora, true, 0, BIG},
        {"n_routed_experts", &s->n_experts, true, 0, 65536},
        {"n_shared_experts", &s->n_shared, false, 1, 16},
        {"num_experts_per_tok", &s->n_used, true, 0, 65536},
        {"moe_intermediate_size", &s->moe_inter, true, 0, BIG},
        {"sliding_window", &s->window, true, 0, BIG},
        {"index_n_heads", &s->idx_heads, true, 0, 65536},
        {"index_head_dim", &s->idx_head_dim, true, 0, 65536},
        {"index_topk", &s->idx_topk, true, 0, BIG},
        {"hc_mult", &s->hc_mult, true, 0, 64},
        {"hc_sinkhorn_iters", &s->sinkhorn_iters, true, 0, 1000},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        st = get_u32(root, ints[i].key, ints[i].required, ints[i].def, ints[i].max, ints[i].dst, err);
        if (st) goto out_free_json;
        if (ints[i].required && *ints[i].dst == 0) {
            st = ds4_seterr(err, DS4_ERR_FORMAT, "config: key '%s' must be positive", ints[i].key);
            goto out_free_json;
        }
    }
    struct {
        const char *key;
        double *dst;
        bool required;
        double def;
    } nums[] = {
        {"routed_scaling_factor", &s->route_scale, true, 0},
        {"swiglu_limit", &s->swiglu_limit, true, 0},
        {"rms_norm_eps", &s->norm_eps, true, 0},
        {"rope_theta", &s->rope_theta, true, 0},
        {"compress_rope_theta", &s->compress_rope_theta, true, 0},
        {"hc_eps", &s->hc_eps, true, 0},
    };
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        st = get_num(root, nums[i].key, nums[i].required, nums[i].def, nums[i].dst, err);
        if (st) goto out_free_json;
    }
    double ctx = 0;
    st = get_num(root, "max_position_embeddings", false, 1048576, &ctx, err);
    if (st) goto out_free_json;
    s->context_length = (uint64_t)ctx;
    const json_t *rs = json_object_get(root, "rope_scaling");
    if (!json_is_object(rs)) {
        st = ds4_seterr(err, DS4_ERR_FORMAT, "config: key 'rope_scaling' must be an object (YaRN)");
        goto out_free_json;
    }
    double orig = 0;
    if ((st = get_num(rs, "factor", true, 0, &s->rope_factor, err)) ||
        (st = get_num(rs, "original_max_position_embeddings", true, 0, &orig, err)) ||
        (st = get_num(rs, "beta_fast", true, 0, &s->beta_fast, err)) ||
        (st = get_num(rs, "beta_slow", true, 0, &s->beta_slow, err))) {
        ds4_err_prefix(err, "rope_scaling");
        goto out_free_json;
    }
    s->orig_ctx = (uint64_t)orig;
    const json_t *sf = json_object_get(root, "scoring_func");
    if (sf && !(json_is_string(sf) && strcmp(json_string_value(sf), "sqrtsoftplus") == 0)) {
        st = ds4_seterr(err, DS4_ERR_UNSUPPORTED, "config: scoring_func must be \"sqrtsoftplus\"");
        goto out_free_json;
    }
    const json_t *nt = json_object_get(root, "norm_topk_prob");
    s->norm_topk = nt ? json_is_true(nt) : true;
    const json_t *cr = json_object_get(root, "compress_ratios");
    if (!json_is_array(cr) || json_array_size(cr) < s->n_layers ||
        json_array_size(cr) > CV_MAX_LAYERS + 1) {
        st = ds4_seterr(err, DS4_ERR_FORMAT,
                        "config: 'compress_ratios' must be an array of at least num_hidden_layers "
                        "(%u) entries",
                        s->n_layers);
        goto out_free_json;
    }
    s->n_ratios = (uint32_t)json_array_size(cr);
    for (uint32_t i = 0; i < s->n_ratios; i++) {
        const json_t *v = json_array_get(cr, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 65536) {
            st = ds4_seterr(err, DS4_ERR_FORMAT, "config: compress_ratios[%u] is not a ratio", i);
            goto out_free_json;
        }
        s->ratios[i] = (uint32_t)json_integer_value(v);
    }
    if (s->n_ratios <= s->n_layers) s->ratios[s->n_layers] = 0;
    if (s->n_mtp > 1) {
        st = ds4_seterr(err, DS4_ERR_UNSUPPORTED, "config: num_nextn_predict_layers %u (max 1)",
                        s->n_mtp);
        goto out_free_json;
    }
    if (s->n_ratios > s->n_layers + s->n_mtp) s->n_ratios = s->n_layers + s->n_mtp;
    bool flash = s->n_layers == 43 && s->dim == 4096 && s->n_experts == 256 && s->vocab == 129280;
    snprintf(s->name, sizeof s->name, "%s", flash ? "DeepSeek V4 Flash" : "DeepSeek V4");
    st = cv_shape_check(s, err);
out_free_json:
    json_decref(root);
    return st;
}

ds4_status cv_shape_from_config(cv_shape *s, const char *path, ds4_error *err) {
    char *text = NULL;
    uint64_t len = 0;
    ds4_status st = ds4_read_file(path, 16u << 20, &text, &len, err);
    if (st) return st;
    st = cv_shape_from_json_text(s, text, len, err);
    free(text);
    if (st) ds4_err_prefix(err, "%s", path);
    return st;
}

/* ---- metadata (GGUF_LAYOUT §2) ------------------------------------------------------------------ */

ds4_status cv_write_metadata(gguf_writer *w, const cv_shape *s, uint32_t file_type,
                             ds4_error *err) {
    ds4_status st;
#define TRY(call) do { if ((st = (call)) != DS4_OK) return st; } while (0)
#define U32(k, v) TRY(gguf_writer_add_u32(w, k, (uint32_t)(v), err))
#define F32(k, v) TRY(gguf_writer_add_f32(w, k, (float)(v), err))
    TRY(gguf_writer_add_str(w, "general.architecture", "deepseek4", err));
    TRY(gguf_writer_add_str(w, "general.name", s->name, err));
    U32("general.alignment", 32);
    U32("general.file_type", file_type);
    U32("general.quantization_version", 2);
    U32("deepseek4.context_length", s->context_length > UINT32_MAX ? UINT32_MAX : s->context_length);
    U32("deepseek4.block_count", s->n_layers);
    U32("deepseek4.embedding_length", s->dim);
    U32("deepseek4.vocab_size", s->vocab);
    U32("deepseek4.attention.head_count", s->n_heads);
    U32("deepseek4.attention.head_count_kv", s->n_kv_heads);
    U32("deepseek4.attention.key_length", s->head_dim);
    U32("deepseek4.attention.value_length", s->head_dim);
    U32("deepseek4.rope.dimension_count", s->rope_dim);
    U32("deepseek4.attention.q_lora_rank", s->q_lora);
    U32("deepseek4.attention.output_lora_rank", s->o_lora);
    U32("deepseek4.attention.output_group_count", s->o_groups);
    U32("deepseek4.expert_count", s->n_experts);
    U32("deepseek4.expert_used_count", s->n_used);
    U32("deepseek4.expert_feed_forward_length", s->moe_inter);
    U32("deepseek4.expert_shared_count", s->n_shared);
    U32("deepseek4.hash_layer_count", s->n_hash);
    U32("deepseek4.attention.sliding_window", s->window);
    U32("deepseek4.attention.indexer.head_count", s->idx_heads);
    U32("deepseek4.attention.indexer.key_length", s->idx_head_dim);
    U32("deepseek4.attention.indexer.top_k", s->idx_topk);
    U32("deepseek4.hyper_connection.count", s->hc_mult);
    U32("deepseek4.hyper_connection.sinkhorn_iterations", s->sinkhorn_iters);
    /* INT32 elements, one per layer plus the MTP entry, as the published files (§2.1). */
    int32_t ratios[CV_MAX_LAYERS + 1];
    uint32_t n_r = s->n_layers + s->n_mtp;
    for (uint32_t i = 0; i < n_r; i++) ratios[i] = (int32_t)s->ratios[i];
    TRY(gguf_writer_add_arr(w, "deepseek4.attention.compress_ratios", GGUF_TYPE_INT32, ratios, n_r,
                            err));
    float clamp[CV_MAX_LAYERS];
    for (uint32_t i = 0; i < s->n_layers; i++) clamp[i] = (float)s->swiglu_limit;
    TRY(gguf_writer_add_arr(w, "deepseek4.swiglu_clamp_exp", GGUF_TYPE_FLOAT32, clamp, s->n_layers,
                            err));
    TRY(gguf_writer_add_arr(w, "deepseek4.swiglu_clamp_shexp", GGUF_TYPE_FLOAT32, clamp,
                            s->n_layers, err));
    U32("deepseek4.rope.scaling.original_context_length", s->orig_ctx);
    F32("deepseek4.rope.freq_base", s->rope_theta);
    TRY(gguf_writer_add_str(w, "deepseek4.rope.scaling.type", "yarn", err));
    F32("deepseek4.rope.scaling.factor", s->rope_factor);
    F32("deepseek4.rope.scaling.yarn_beta_fast", s->beta_fast);
    F32("deepseek4.rope.scaling.yarn_beta_slow", s->beta_slow);
    F32("deepseek4.attention.compress_rope_freq_base", s->compress_rope_theta);
    F32("deepseek4.expert_weights_scale", s->route_scale);
    F32("deepseek4.attention.layer_norm_rms_epsilon", s->norm_eps);
    F32("deepseek4.hyper_connection.epsilon", s->hc_eps);
    TRY(gguf_writer_add_bool(w, "deepseek4.expert_weights_norm", s->norm_topk, err));
    U32("deepseek4.expert_gating_func", 4); /* sqrt(softplus), §2.3 */
    U32("deepseek4.nextn_predict_layers", s->n_mtp);
#undef F32
#undef U32
#undef TRY
    return DS4_OK;
}
