/*
 * text/tokenizer_json.c — Hugging Face tokenizer.json -> tok_arrays (the GGUF layout of
 * tokenizer.h; TOKENIZER.md §2, §6). Validates that the file describes the tokenizer this
 * engine implements (BPE, empty normalizer, the three-regex pre-tokenizer, ByteLevel) and
 * refuses anything else. Builds no lookup structures (tokenizer_build.c does).
 */
#include "text/tokenizer.h"
#include "text/tokenizer_impl.h"
#include "core/error.h"
#include "core/mapfile.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* TOKENIZER.md §2: the pre-tokenizer regexes, as the JSON holds them (UTF-8). */
static const char *const k_split_regex[3] = {
    "\\p{N}{1,3}",
    "[\xe4\xb8\x80-\xe9\xbe\xa5\xe3\x81\x80-\xe3\x82\x9f\xe3\x82\xa0-\xe3\x83\xbf]+",
    ("[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
     " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"),
};

void tok_arrays_free(tok_arrays *a) {
    if (!a) return;
    if (a->tokens)
        for (uint32_t i = 0; i < a->n_tokens; i++) free(a->tokens[i]);
    if (a->merges)
        for (uint32_t i = 0; i < a->n_merges; i++) free(a->merges[i]);
    free(a->tokens);
    free(a->merges);
    free(a->token_types);
    free(a->special_ids);
    free(a->normalized_ids);
    memset(a, 0, sizeof *a);
}

static const char *jstr(json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static bool jtrue(json_t *obj, const char *key) { return json_is_true(json_object_get(obj, key)); }

/* A missing key and JSON null both mean "not set". */
static bool jnull(json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    return !v || json_is_null(v);
}

/* TOKENIZER.md §2: model BPE without dropout, unk, prefixes/suffixes or byte fallback. */
static ds4_status check_model(json_t *model, ds4_error *err) {
    if (!json_is_object(model)) return ds4_seterr(err, DS4_ERR_FORMAT, "tokenizer.json: 'model' is not an object");
    const char *type = jstr(model, "type");
    if (type && strcmp(type, "BPE") != 0)
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED, "tokenizer.json: model.type is '%s', only BPE is supported", type);
    static const char *const must_be_unset[] = {"dropout", "unk_token", "continuing_subword_prefix",
                                                "end_of_word_suffix"};
    for (size_t i = 0; i < sizeof must_be_unset / sizeof *must_be_unset; i++)
        if (!jnull(model, must_be_unset[i]))
            return ds4_seterr(err, DS4_ERR_UNSUPPORTED, "tokenizer.json: model.%s is set; the V4 tokenizer has none",
                              must_be_unset[i]);
    if (jtrue(model, "byte_fallback") || jtrue(model, "fuse_unk"))
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED, "tokenizer.json: model.byte_fallback/fuse_unk set; not supported");
    return DS4_OK;
}

/* TOKENIZER.md §2: empty normalizer, Split x3 (Isolated) + ByteLevel(use_regex false). */
static ds4_status check_pipeline(json_t *root, ds4_error *err) {
    json_t *norm = json_object_get(root, "normalizer");
    if (norm && !json_is_null(norm)) {
        const char *t = jstr(norm, "type");
        json_t *list = json_object_get(norm, "normalizers");
        if (!t || strcmp(t, "Sequence") != 0 || !json_is_array(list) || json_array_size(list) != 0)
            return ds4_seterr(err, DS4_ERR_UNSUPPORTED, "tokenizer.json: normalizer is not the empty Sequence of DeepSeek V4");
    }
    json_t *pre = json_object_get(root, "pre_tokenizer");
    json_t *steps = json_object_get(pre, "pretokenizers");
    const char *pt = jstr(pre, "type");
    if (!pt || strcmp(pt, "Sequence") != 0 || !json_is_array(steps) || json_array_size(steps) != 4)
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED,
                          "tokenizer.json: pre_tokenizer is not the DeepSeek V3/V4 Sequence of 4 steps");
    for (size_t i = 0; i < 3; i++) {
        json_t *s = json_array_get(steps, i);
        const char *st = jstr(s, "type"), *beh = jstr(s, "behavior");
        const char *re = jstr(json_object_get(s, "pattern"), "Regex");
        if (!st || strcmp(st, "Split") != 0 || !beh || strcmp(beh, "Isolated") != 0 || jtrue(s, "invert") ||
            !re || strcmp(re, k_split_regex[i]) != 0)
            return ds4_seterr(err, DS4_ERR_UNSUPPORTED,
                              "tokenizer.json: pre_tokenizer step %zu is not DeepSeek V4's Split (Isolated, regex %s)",
                              i + 1, i == 0 ? "\\p{N}{1,3}" : i == 1 ? "CJK/kana" : "six alternatives");
    }
    json_t *bl = json_array_get(steps, 3);
    const char *bt = jstr(bl, "type");
    if (!bt || strcmp(bt, "ByteLevel") != 0 || jtrue(bl, "use_regex") || jtrue(bl, "add_prefix_space"))
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED,
                          "tokenizer.json: pre_tokenizer step 4 is not ByteLevel(add_prefix_space=false, use_regex=false)");
    json_t *dec = json_object_get(root, "decoder");
    const char *dt = jstr(dec, "type");
    if (dec && !json_is_null(dec) && (!dt || strcmp(dt, "ByteLevel") != 0))
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED, "tokenizer.json: decoder is not ByteLevel");
    return DS4_OK;
}

static ds4_status dup_str(char **out, const char *s, size_t n, ds4_error *err) {
    *out = malloc(n + 1);
    if (!*out) return ds4_seterr(err, DS4_ERR_NOMEM, "tokenizer.json: out of memory");
    memcpy(*out, s, n);
    (*out)[n] = 0;
    return DS4_OK;
}

/* llama.cpp convert_hf_to_gguf does_token_look_special (TOKENIZER.md §6). */
static bool looks_special(const char *s) {
    size_t n = strlen(s);
    if (n >= 4 && strncmp(s, "<|", 2) == 0 && strcmp(s + n - 2, "|>") == 0) return true;
    /* "<｜" = 3C EF BD 9C, "｜>" = EF BD 9C 3E */
    if (n >= 8 && memcmp(s, "<\xef\xbd\x9c", 4) == 0 && memcmp(s + n - 4, "\xef\xbd\x9c>", 4) == 0) return true;
    return false;
}

static ds4_status read_merges(tok_arrays *a, json_t *merges, ds4_error *err) {
    if (!json_is_array(merges)) return ds4_seterr(err, DS4_ERR_FORMAT, "tokenizer.json: model.merges is not an array");
    size_t n = json_array_size(merges);
    if (n > TOK_MAX_TOKENS)
        return ds4_seterr(err, DS4_ERR_FORMAT, "tokenizer.json: model.merges has %zu entries, limit %u", n, TOK_MAX_TOKENS);
    a->merges = calloc(n ? n : 1, sizeof *a->merges);
    if (!a->merges) return ds4_seterr(err, DS4_ERR_NOMEM, "tokenizer.json: out of memory");
    a->n_merges = (uint32_t)n;
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(merges, i);
        ds4_status st;
        if (json_is_string(m)) {
            /* "LEFT RIGHT" with exactly one space (TOKENIZER.md §2) */
            const char *s = json_string_value(m);
            size_t len = json_string_length(m);
            const char *sp = memchr(s, ' ', len);
            if (!sp || sp == s || sp == s + len - 1 || memchr(sp + 1, ' ', len - (size_t)(sp + 1 - s)) ||
                memchr(s, 0, len))
                return ds4_seterr(err, DS4_ERR_FORMAT, "tokenizer.json: merge %zu is not \"LEFT RIGHT\"", i);
            st = dup_str(&a->merges[i], s, len, err);
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            /* newer files store [LEFT, RIGHT]; neither may contain a space or be empty */
            json_t *l = json_array_get(m, 0), *r = json_array_get(m, 1);
            size_t ll = json_string_length(l), rl = json_string_length(r);
            if (!ll || !rl || memchr(json_string_value(l), ' ', ll) || memchr(json_string_value(r), ' ', rl) ||
                memchr(json_string_value(l), 0, ll) || memchr(json_string_value(r), 0, rl))
                return ds4_seterr(err, DS4_ERR_FORMAT, "tokenizer.json: merge %zu has an empty side or a space", i);
            char *buf = malloc(ll + rl + 2);
            if (!buf) return ds4_seterr(err, DS4_ERR_NOMEM, "tokenizer.json: out of memory");
            memcpy(buf, json_string_value(l), ll);
            buf[ll] = ' ';
            memcpy(buf + ll + 1, json_string_value(r), rl);
            buf[ll + rl + 1] = 0;
            a->merges[i] = buf;
            st = DS4_OK;
        } else {
            return ds4_seterr(err, DS4_ERR_FORMAT, "tokenizer.json: merge %zu is neither a string nor a pair", i);
        }
        if (st != DS4_OK) return st;
    }
    return DS4_OK;
}

static int cmp_i32(const void *x, const void *y) {
    int32_t a = *(const int32_t *)x, b = *(const int32_t *)y;
    return (a > b) - (a < b);
}

static ds4_status fill_arrays(tok_arrays *a, json_t *root, ds4_error *err) {
    json_t *model = json_object_get(root, "model");
    ds4_status st = check_model(model, err);
    if (st != DS4_OK) return st;
    if ((st = check_pipeline(root, err)) != DS4_OK) return st;
    json_t *vocab = json_object_get(model, "vocab");
    json_t *added = json_object_get(root, "added_tokens");
    if (!json_is_object(vocab)) return ds4_seterr(err, DS4_ERR_FORMAT, "tokenizer.json: model.vocab is not an object");
    if (added && !json_is_array(added) && !json_is_null(added))
        return ds4_seterr(err, DS4_ERR_FORMAT, "tokenizer.json: added_tokens is not an array");

    /* Size = largest id + 1, every id checked before anything is allocated. */
    int64_t max_id = -1;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= TOK_MAX_TOKENS)
            return ds4_seterr(err, DS4_ERR_FORMAT, "tokenizer.json: vocab entry '%.64s' has id outside 0..%u", key,
                              TOK_MAX_TOKENS - 1);
        if (json_integer_value(val) > max_id) max_id = json_integer_value(val);
    }
    size_t n_added = added ? json_array_size(added) : 0;
    for (size_t i = 0; i < n_added; i++) {
        json_t *t = json_array_get(added, i);
        json_t *id = json_object_get(t, "id");
        const char *content = jstr(t, "content");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= TOK_MAX_TOKENS)
            return ds4_seterr(err, DS4_ERR_FORMAT, "tokenizer.json: added_tokens[%zu].id missing or outside 0..%u", i,
                              TOK_MAX_TOKENS - 1);
        if (!content || !*content)
            return ds4_seterr(err, DS4_ERR_FORMAT, "tokenizer.json: added_tokens[%zu].content missing or empty", i);
        if (jtrue(t, "lstrip") || jtrue(t, "rstrip") || jtrue(t, "single_word"))
            return ds4_seterr(err, DS4_ERR_UNSUPPORTED,
                              "tokenizer.json: added_tokens[%zu] ('%.64s') uses lstrip/rstrip/single_word", i, content);
        if (json_integer_value(id) > max_id) max_id = json_integer_value(id);
    }
    if (max_id < 0) return ds4_seterr(err, DS4_ERR_FORMAT, "tokenizer.json: empty vocabulary");
    a->n_tokens = (uint32_t)max_id + 1;
    a->tokens = calloc(a->n_tokens, sizeof *a->tokens);
    a->token_types = calloc(a->n_tokens, sizeof *a->token_types);
    a->special_ids = calloc(n_added ? n_added : 1, sizeof *a->special_ids);
    a->normalized_ids = calloc(n_added ? n_added : 1, sizeof *a->normalized_ids);
    if (!a->tokens || !a->token_types || !a->special_ids || !a->normalized_ids)
        return ds4_seterr(err, DS4_ERR_NOMEM, "tokenizer.json: out of memory for %u tokens", a->n_tokens);
    a->has_special_ids = 1;

    json_object_foreach(vocab, key, val) {
        uint32_t id = (uint32_t)json_integer_value(val);
        size_t len = strlen(key);
        if (a->tokens[id])
            return ds4_seterr(err, DS4_ERR_FORMAT, "tokenizer.json: id %u used by two vocab entries ('%.64s')", id, key);
        if (len == 0 || len > TOK_MAX_TOKEN_BYTES)
            return ds4_seterr(err, DS4_ERR_FORMAT, "tokenizer.json: vocab entry %u has length %zu (1..%u)", id, len,
                              TOK_MAX_TOKEN_BYTES);
        if ((st = dup_str(&a->tokens[id], key, len, err)) != DS4_OK) return st;
        a->token_types[id] = TOK_TYPE_NORMAL;
    }
    /* Added tokens override the vocabulary string at their id (HF decodes an added id to its
     * content; V4's ids 0-2 are in both with the same content). */
    for (size_t i = 0; i < n_added; i++) {
        json_t *t = json_array_get(added, i);
        uint32_t id = (uint32_t)json_integer_value(json_object_get(t, "id"));
        json_t *cj = json_object_get(t, "content");
        size_t len = json_string_length(cj);
        const char *content = json_string_value(cj);
        if (len > TOK_MAX_TOKEN_BYTES || memchr(content, 0, len))
            return ds4_seterr(err, DS4_ERR_FORMAT, "tokenizer.json: added token %u is too long or holds a NUL", id);
        if (a->token_types[id] == TOK_TYPE_CONTROL || a->token_types[id] == TOK_TYPE_USER_DEFINED)
            return ds4_seterr(err, DS4_ERR_FORMAT, "tokenizer.json: id %u appears twice in added_tokens", id);
        free(a->tokens[id]);
        a->tokens[id] = NULL;
        if ((st = dup_str(&a->tokens[id], content, len, err)) != DS4_OK) return st;
        bool special = jtrue(t, "special");
        a->token_types[id] = (special || looks_special(content)) ? TOK_TYPE_CONTROL : TOK_TYPE_USER_DEFINED;
        if (special) a->special_ids[a->n_special++] = (int32_t)id;
        if (jtrue(t, "normalized")) a->normalized_ids[a->n_normalized++] = (int32_t)id;
    }
    qsort(a->special_ids, a->n_special, sizeof *a->special_ids, cmp_i32);
    qsort(a->normalized_ids, a->n_normalized, sizeof *a->normalized_ids, cmp_i32);
    for (uint32_t id = 0; id < a->n_tokens; id++) {
        if (a->tokens[id]) continue;
        char pad[32];
        int n = snprintf(pad, sizeof pad, "[PAD%u]", id);
        if ((st = dup_str(&a->tokens[id], pad, (size_t)n, err)) != DS4_OK) return st;
        a->token_types[id] = TOK_TYPE_UNUSED;
    }
    if ((st = read_merges(a, json_object_get(model, "merges"), err)) != DS4_OK) return st;
    /* TOKENIZER.md §5.6: BOS/EOS are these contents (tokenizer_config.json, not this file). */
    a->bos_id = a->eos_id = -1;
    for (uint32_t id = 0; id < a->n_tokens; id++) {
        if (strcmp(a->tokens[id], TOK_BOS_TEXT) == 0) a->bos_id = (int32_t)id;
        if (strcmp(a->tokens[id], TOK_EOS_TEXT) == 0) a->eos_id = (int32_t)id;
    }
    return DS4_OK;
}

ds4_status tok_arrays_from_json(tok_arrays *out, const char *json, size_t json_bytes, ds4_error *err) {
    memset(out, 0, sizeof *out);
    out->bos_id = out->eos_id = -1;
    json_error_t jerr;
    json_t *root = json_loadb(json, json_bytes, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!root)
        return ds4_seterr(err, DS4_ERR_FORMAT, "tokenizer.json: line %d column %d: %s", jerr.line, jerr.column,
                          jerr.text);
    ds4_status st = json_is_object(root) ? fill_arrays(out, root, err)
                                         : ds4_seterr(err, DS4_ERR_FORMAT, "tokenizer.json: top level is not an object");
    json_decref(root);
    if (st != DS4_OK) tok_arrays_free(out);
    return st;
}

ds4_status tok_arrays_from_json_file(tok_arrays *out, const char *path, ds4_error *err) {
    char *text;
    uint64_t len;
    memset(out, 0, sizeof *out);
    ds4_status st = ds4_read_file(path, (uint64_t)1 << 30, &text, &len, err);
    if (st != DS4_OK) return st;
    st = tok_arrays_from_json(out, text, (size_t)len, err);
    free(text);
    if (st != DS4_OK) ds4_err_prefix(err, "%s", path);
    return st;
}
