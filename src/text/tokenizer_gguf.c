/*
 * text/tokenizer_gguf.c — GGUF tokenizer.ggml.* metadata -> tok_arrays (GGUF_LAYOUT §7,
 * TOKENIZER.md §6): the same layout tokenizer_json.c produces, so both load paths build the
 * tokenizer through tok_from_arrays. Reads metadata only, through format/gguf.h; never tensors.
 */
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer.h"
#include "core/error.h"
#include "format/gguf.h"

static ds4_status read_str_array(const gguf_ctx *g, const char *key, char ***out, uint32_t *n_out, ds4_error *err) {
    const gguf_value *arr;
    ds4_status st = gguf_get_arr(g, key, &arr, err);
    if (st != DS4_OK) return st;
    if (arr->elem_type != GGUF_TYPE_STRING)
        return ds4_seterr(err, DS4_ERR_FORMAT, "gguf: key '%s': expected ARRAY of STRING, got ARRAY of %s", key,
                          gguf_vtype_name(arr->elem_type));
    if (arr->n_elems > TOK_MAX_TOKENS)
        return ds4_seterr(err, DS4_ERR_FORMAT, "gguf: key '%s': %llu entries, limit %u", key,
                          (unsigned long long)arr->n_elems, TOK_MAX_TOKENS);
    char **v = calloc(arr->n_elems ? arr->n_elems : 1, sizeof *v);
    if (!v) return ds4_seterr(err, DS4_ERR_NOMEM, "gguf: key '%s': out of memory", key);
    *out = v;
    *n_out = (uint32_t)arr->n_elems;
    for (uint64_t i = 0; i < arr->n_elems; i++) {
        gguf_str s;
        if ((st = gguf_arr_str(arr, i, &s, err)) != DS4_OK) return st;
        if (s.len == 0 || s.len > 2 * TOK_MAX_TOKEN_BYTES + 1)
            return ds4_seterr(err, DS4_ERR_FORMAT, "gguf: key '%s': element %llu has length %llu (1..%u)", key,
                              (unsigned long long)i, (unsigned long long)s.len, 2 * TOK_MAX_TOKEN_BYTES + 1);
        if ((st = gguf_str_dup(s, &v[i], err)) != DS4_OK) return ds4_err_prefix(err, "gguf: key '%s' element %llu", key,
                                                                                   (unsigned long long)i);
    }
    return DS4_OK;
}

/* Optional ARRAY of INT32 ids, each < n_tokens, ascending. */
static ds4_status read_id_list(const gguf_ctx *g, const char *key, uint32_t n_tokens, int32_t **out, uint32_t *n_out,
                               bool *present, ds4_error *err) {
    const gguf_value *arr = gguf_find_value(g, key);
    *present = arr != NULL;
    if (!arr) return DS4_OK;
    if (arr->type != GGUF_TYPE_ARRAY || arr->n_elems > n_tokens)
        return ds4_seterr(err, DS4_ERR_FORMAT, "gguf: key '%s': expected ARRAY of at most %u ids", key, n_tokens);
    *out = calloc(arr->n_elems ? arr->n_elems : 1, sizeof **out);
    if (!*out) return ds4_seterr(err, DS4_ERR_NOMEM, "gguf: key '%s': out of memory", key);
    for (uint64_t i = 0; i < arr->n_elems; i++) {
        int32_t id;
        ds4_status st = gguf_arr_i32(arr, i, &id, err);
        if (st != DS4_OK) return st;
        if (id < 0 || (uint32_t)id >= n_tokens || (i > 0 && id <= (*out)[i - 1]))
            return ds4_seterr(err, DS4_ERR_FORMAT, "gguf: key '%s': element %llu = %d is not an ascending id < %u", key,
                              (unsigned long long)i, id, n_tokens);
        (*out)[i] = id;
    }
    *n_out = (uint32_t)arr->n_elems;
    return DS4_OK;
}

static ds4_status check_str_key(const gguf_ctx *g, const char *key, const char *const *allowed, ds4_error *err) {
    const gguf_value *v = gguf_find_value(g, key);
    if (!v) return DS4_OK;  /* informative keys: absent is fine (GGUF_LAYOUT §7.1) */
    gguf_str s;
    ds4_status st = gguf_value_str(v, &s, err);
    if (st != DS4_OK) return st;
    for (; *allowed; allowed++)
        if (gguf_str_eq(s, *allowed)) return DS4_OK;
    return ds4_seterr(err, DS4_ERR_UNSUPPORTED, "gguf: key '%s' is '%.*s'; this tokenizer implements DeepSeek V3/V4's",
                      key, (int)(s.len > 64 ? 64 : s.len), s.ptr);
}

static ds4_status fill(tok_arrays *a, const gguf_ctx *g, ds4_error *err) {
    static const char *const models[] = {TOK_GGUF_MODEL_VALUE, NULL};
    /* llama.cpp registers the identical V3 pre-tokenizer as deepseek-v3 (TOKENIZER.md §5.3). */
    static const char *const pres[] = {TOK_GGUF_PRE_VALUE, "deepseek-v3", NULL};
    ds4_status st;
    if ((st = check_str_key(g, TOK_GGUF_KEY_MODEL, models, err)) != DS4_OK) return st;
    if ((st = check_str_key(g, TOK_GGUF_KEY_PRE, pres, err)) != DS4_OK) return st;
    if ((st = read_str_array(g, TOK_GGUF_KEY_TOKENS, &a->tokens, &a->n_tokens, err)) != DS4_OK) return st;
    if (a->n_tokens == 0) return ds4_seterr(err, DS4_ERR_FORMAT, "gguf: key '%s' is empty", TOK_GGUF_KEY_TOKENS);
    for (uint32_t i = 0; i < a->n_tokens; i++)
        if (strlen(a->tokens[i]) > TOK_MAX_TOKEN_BYTES)
            return ds4_seterr(err, DS4_ERR_FORMAT, "gguf: token %u is longer than %u bytes", i, TOK_MAX_TOKEN_BYTES);
    if ((st = read_str_array(g, TOK_GGUF_KEY_MERGES, &a->merges, &a->n_merges, err)) != DS4_OK) return st;

    const gguf_value *tt = gguf_find_value(g, TOK_GGUF_KEY_TOKEN_TYPE);
    if (tt) {
        if (tt->type != GGUF_TYPE_ARRAY || tt->n_elems != a->n_tokens)
            return ds4_seterr(err, DS4_ERR_FORMAT, "gguf: key '%s': expected ARRAY of %u types, got %llu elements",
                              TOK_GGUF_KEY_TOKEN_TYPE, a->n_tokens, (unsigned long long)tt->n_elems);
        a->token_types = calloc(a->n_tokens, sizeof *a->token_types);
        if (!a->token_types) return ds4_seterr(err, DS4_ERR_NOMEM, "gguf: out of memory");
        for (uint32_t i = 0; i < a->n_tokens; i++)
            if ((st = gguf_arr_i32(tt, i, &a->token_types[i], err)) != DS4_OK) return st;
    }
    bool has_sp = false, has_norm = false;
    if ((st = read_id_list(g, TOK_GGUF_KEY_SPECIAL_IDS, a->n_tokens, &a->special_ids, &a->n_special, &has_sp, err)) !=
        DS4_OK)
        return st;
    if ((st = read_id_list(g, TOK_GGUF_KEY_NORMALIZED_IDS, a->n_tokens, &a->normalized_ids, &a->n_normalized,
                           &has_norm, err)) != DS4_OK)
        return st;
    a->has_special_ids = has_sp;
    /* BOS/EOS: the stored ids when present and in range, else by content (GGUF_LAYOUT §7.3). */
    a->bos_id = a->eos_id = -1;
    uint32_t v;
    if (gguf_find_value(g, TOK_GGUF_KEY_BOS_ID) && gguf_get_u32(g, TOK_GGUF_KEY_BOS_ID, &v, NULL) == DS4_OK &&
        v < a->n_tokens)
        a->bos_id = (int32_t)v;
    if (gguf_find_value(g, TOK_GGUF_KEY_EOS_ID) && gguf_get_u32(g, TOK_GGUF_KEY_EOS_ID, &v, NULL) == DS4_OK &&
        v < a->n_tokens)
        a->eos_id = (int32_t)v;
    return DS4_OK;
}

ds4_status tok_arrays_from_gguf(tok_arrays *out, const gguf_ctx *g, ds4_error *err) {
    memset(out, 0, sizeof *out);
    ds4_status st = fill(out, g, err);
    if (st != DS4_OK) tok_arrays_free(out);
    return st;
}

ds4_status tok_arrays_from_gguf_file(tok_arrays *out, const char *path, ds4_error *err) {
    memset(out, 0, sizeof *out);
    gguf_ctx *g;
    ds4_status st = gguf_open(&g, path, err);
    if (st != DS4_OK) return st;
    st = tok_arrays_from_gguf(out, g, err);
    gguf_close(g);
    if (st != DS4_OK) ds4_err_prefix(err, "%s", path);
    return st;
}
