/*
 * tests/test_tokenizer_load.c — loading the tokenizer: from a GGUF written by the converter's
 * own tokenizer writer (cv_tokenizer_write -> tok_arrays_from_json) it gives the same ids as
 * from tokenizer.json on every vector; a published-style GGUF (no ds4 keys, or no token_type)
 * still encodes identically; malformed tokenizer.json files fail with clear errors; the
 * pre-tokenizer's character classes equal Unicode 16 on every code point.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "test_tokenizer_vec.h"
#include "format/gguf.h"
#include "format/gguf_write.h"
#include "model/convert_tokenizer.h"
#include "text/tokenizer.h"
#include "text/tokenizer_impl.h"
#include "test_tokenizer_ucd16.h"

void tv_check_all_vectors(const ds4_tokenizer *tok, const char *label);

/* Writes a GGUF (no tensors) holding what `add` puts in it; returns its path. */
static char *write_gguf(const char *name, ds4_status (*add)(gguf_writer *, void *, ds4_error *), void *ctx) {
    char *dir = tu_tmpdir(), *path = tu_join(dir, name);
    gguf_writer *w;
    ds4_error err = {0};
    cr_assert_eq(gguf_writer_create(&w, path, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(add(w, ctx, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(gguf_writer_write_header(w, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(gguf_writer_finish(w, &err), DS4_OK, "%s", err.msg);
    gguf_writer_free(w);
    free(dir);
    return path;
}

static ds4_status add_converter(gguf_writer *w, void *ctx, ds4_error *err) {
    (void)ctx;
    char *json = tu_shared_path(TV_JSON);
    uint32_t n;
    ds4_status st = cv_tokenizer_write(w, json, &n, err);
    free(json);
    cr_assert(st != DS4_OK || n == 129280, "converter wrote %u tokens", n);
    return st;
}

Test(tokenizer_gguf, converter_gguf_matches_json_on_all_vectors) {
    char *path = write_gguf("tok.gguf", add_converter, NULL);
    ds4_tokenizer *tok;
    ds4_error err = {0};
    cr_assert_eq(ds4_tokenizer_open(&tok, path, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(ds4_tokenizer_n_vocab(tok), 129280);
    tv_check_all_vectors(tok, "GGUF");
    ds4_tokenizer_free(tok);
    free(path);
}

/* What the published ds4 files carry (GGUF_LAYOUT §7.1): tokens, merges, token_type in
 * llama.cpp's convention, no ds4 keys; and a bare one with only tokens + merges. */
typedef struct pub_opts {
    bool with_types;
    const char *pre;
} pub_opts;

static ds4_status add_published(gguf_writer *w, void *ctx, ds4_error *err) {
    const pub_opts *o = ctx;
    bool with_types = o->with_types;
    char *json = tu_shared_path(TV_JSON);
    tok_arrays a;
    ds4_status st = tok_arrays_from_json_file(&a, json, err);
    free(json);
    if (st != DS4_OK) return st;
    if (!st) st = gguf_writer_add_str(w, TOK_GGUF_KEY_MODEL, "gpt2", err);
    if (!st) st = gguf_writer_add_str(w, TOK_GGUF_KEY_PRE, o->pre, err);
    if (!st) st = gguf_writer_add_arr_str(w, TOK_GGUF_KEY_TOKENS, (const char *const *)a.tokens, a.n_tokens, err);
    if (!st && with_types)
        st = gguf_writer_add_arr(w, TOK_GGUF_KEY_TOKEN_TYPE, GGUF_TYPE_INT32, a.token_types, a.n_tokens, err);
    if (!st) st = gguf_writer_add_arr_str(w, TOK_GGUF_KEY_MERGES, (const char *const *)a.merges, a.n_merges, err);
    tok_arrays_free(&a);
    return st;
}

static void check_published(bool with_types) {
    pub_opts o = {with_types, "joyai-llm"};
    char *path = write_gguf("pub.gguf", add_published, &o);
    ds4_tokenizer *json = tv_open_json(), *tok;
    ds4_error err = {0};
    cr_assert_eq(ds4_tokenizer_open(&tok, path, &err), DS4_OK, "%s", err.msg);
    /* Encoding is identical on everything (the added set is recovered structurally). */
    size_t len;
    char *text = tu_read_shared(TV_DIR "tokenizer_vectors.jsonl", &len);
    int32_t *a, *b;
    size_t na, nb;
    cr_assert_eq(ds4_tokenize(json, text, len, 0, &a, &na, &err), DS4_OK);
    cr_assert_eq(ds4_tokenize(tok, text, len, 0, &b, &nb, &err), DS4_OK);
    size_t d = tv_first_diff(a, na, b, nb);
    cr_assert(na == nb && d == na, "published-style GGUF (types %d): ids differ at %zu", with_types, d);
    for (uint32_t id = 0; id < 129280; id++)
        cr_assert_eq(ds4_tokenizer_is_added(json, (int32_t)id), ds4_tokenizer_is_added(tok, (int32_t)id), "id %u", id);
    int32_t user;
    cr_assert_eq(ds4_tokenizer_special_id(tok, "<\xef\xbd\x9cUser\xef\xbd\x9c>", &user, &err), DS4_OK);
    cr_assert_eq(user, 128803);
    /* Without ds4's keys, `special` falls back to CONTROL (tokenizer.h): BOS is special. */
    cr_assert_eq(ds4_tokenizer_is_special(tok, 0), with_types);
    free(a);
    free(b);
    free(text);
    ds4_tokenizer_free(tok);
    ds4_tokenizer_free(json);
    free(path);
}

Test(tokenizer_gguf, published_layout_with_token_types) { check_published(true); }
Test(tokenizer_gguf, bare_tokens_and_merges) { check_published(false); }

Test(tokenizer_gguf, missing_or_foreign_tokenizer_is_a_clear_error) {
    /* A GGUF with no tokenizer keys. */
    char *dir = tu_tmpdir(), *path = tu_join(dir, "empty.gguf");
    gguf_writer *w;
    ds4_error err = {0};
    cr_assert_eq(gguf_writer_create(&w, path, &err), DS4_OK);
    cr_assert_eq(gguf_writer_add_str(w, "general.architecture", "deepseek4", &err), DS4_OK);
    cr_assert_eq(gguf_writer_write_header(w, &err), DS4_OK);
    cr_assert_eq(gguf_writer_finish(w, &err), DS4_OK);
    gguf_writer_free(w);
    ds4_tokenizer *tok;
    cr_assert_eq(ds4_tokenizer_open(&tok, path, &err), DS4_ERR_NOT_FOUND, "%s", err.msg);
    cr_assert(strstr(err.msg, "tokenizer.ggml.tokens") && strstr(err.msg, path), "message: %s", err.msg);
    free(path);
    free(dir);
    /* A GGUF whose pre-tokenizer is another model's: refused, not silently mis-split. */
    pub_opts o = {true, "llama-bpe"};
    path = write_gguf("llama.gguf", add_published, &o);
    cr_assert_eq(ds4_tokenizer_open(&tok, path, &err), DS4_ERR_UNSUPPORTED, "%s", err.msg);
    cr_assert(strstr(err.msg, "tokenizer.ggml.pre") && strstr(err.msg, "llama-bpe"), "message: %s", err.msg);
    free(path);
}

/* ---- malformed tokenizer.json ----------------------------------------------------------------- */
typedef void (*mutate_fn)(json_t *root);
static void m_model_type(json_t *r) { json_object_set_new(json_object_get(r, "model"), "type", json_string("WordPiece")); }
static void m_byte_fallback(json_t *r) { json_object_set_new(json_object_get(r, "model"), "byte_fallback", json_true()); }
static void m_regex(json_t *r) {
    json_t *s = json_array_get(json_object_get(json_object_get(r, "pre_tokenizer"), "pretokenizers"), 2);
    json_object_set_new(json_object_get(s, "pattern"), "Regex", json_string("\\s+"));
}
static void m_normalizer(json_t *r) {
    json_object_set_new(r, "normalizer", json_pack("{s:s}", "type", "NFC"));
}
static void m_vocab_id(json_t *r) {
    json_object_set_new(json_object_get(json_object_get(r, "model"), "vocab"), "zzz", json_integer(-4));
}
static void m_vocab_huge(json_t *r) {
    json_object_set_new(json_object_get(json_object_get(r, "model"), "vocab"), "zzz", json_integer(1ll << 40));
}
static void m_merge_unknown(json_t *r) {
    json_array_set_new(json_object_get(json_object_get(r, "model"), "merges"), 5, json_string("\xc4\xa0 qqqqqqqqqqqqx"));
}
static void m_merge_shape(json_t *r) {
    json_array_set_new(json_object_get(json_object_get(r, "model"), "merges"), 7, json_string("nospace"));
}
static void m_added_strip(json_t *r) {
    json_object_set_new(json_array_get(json_object_get(r, "added_tokens"), 3), "lstrip", json_true());
}
static void m_added_noid(json_t *r) { json_object_del(json_array_get(json_object_get(r, "added_tokens"), 4), "id"); }
static void m_byte_missing(json_t *r) {
    /* "!" (byte 0x21, id 3) moves to an unused id: the byte symbol is still present; remove it. */
    json_object_del(json_object_get(json_object_get(r, "model"), "vocab"), "!");
}
static void m_dup_vocab_id(json_t *r) {
    json_object_set_new(json_object_get(json_object_get(r, "model"), "vocab"), "zzzz", json_integer(300));
}

Test(tokenizer_json, malformed_files_fail_with_clear_errors) {
    size_t len;
    char *text = tu_read_shared(TV_JSON, &len);
    static const struct {
        mutate_fn fn;
        ds4_status want;
        const char *msg;
    } cases[] = {
        {m_model_type, DS4_ERR_UNSUPPORTED, "model.type is 'WordPiece'"},
        {m_byte_fallback, DS4_ERR_UNSUPPORTED, "byte_fallback"},
        {m_regex, DS4_ERR_UNSUPPORTED, "pre_tokenizer step 3"},
        {m_normalizer, DS4_ERR_UNSUPPORTED, "normalizer"},
        {m_vocab_id, DS4_ERR_FORMAT, "vocab entry 'zzz' has id outside"},
        {m_vocab_huge, DS4_ERR_FORMAT, "vocab entry 'zzz' has id outside"},
        {m_merge_unknown, DS4_ERR_FORMAT, "merge 5"},
        {m_merge_shape, DS4_ERR_FORMAT, "merge 7 is not"},
        {m_added_strip, DS4_ERR_UNSUPPORTED, "lstrip"},
        {m_added_noid, DS4_ERR_FORMAT, "added_tokens[4].id"},
        {m_byte_missing, DS4_ERR_FORMAT, "byte symbol of 0x21"},
        {m_dup_vocab_id, DS4_ERR_FORMAT, "id 300 used by two vocab entries"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        json_error_t je;
        json_t *root = json_loadb(text, len, 0, &je);
        cr_assert(root, "%s", je.text);
        cases[k].fn(root);
        char *mut = json_dumps(root, JSON_COMPACT);
        json_decref(root);
        tok_arrays a;
        ds4_error err = {0};
        ds4_status st = tok_arrays_from_json(&a, mut, strlen(mut), &err);
        ds4_tokenizer *tok = NULL;
        if (st == DS4_OK) {
            st = tok_from_arrays(&tok, &a, &err);
            tok_arrays_free(&a);
        }
        cr_expect_eq(st, cases[k].want, "case %zu: status %s, expected %s (%s)", k, ds4_status_str(st),
                     ds4_status_str(cases[k].want), err.msg);
        cr_expect(strstr(err.msg, cases[k].msg), "case %zu: message \"%s\" lacks \"%s\"", k, err.msg, cases[k].msg);
        ds4_tokenizer_free(tok);
        free(mut);
    }
    /* Not JSON at all, truncated, wrong top level, a missing file. */
    tok_arrays a;
    ds4_error err = {0};
    cr_assert_eq(tok_arrays_from_json(&a, text, len / 2, &err), DS4_ERR_FORMAT);
    cr_assert(strstr(err.msg, "line"), "truncated: %s", err.msg);
    cr_assert_eq(tok_arrays_from_json(&a, "[1,2]", 5, &err), DS4_ERR_FORMAT);
    ds4_tokenizer *tok;
    cr_assert_eq(ds4_tokenizer_open(&tok, "/nonexistent/tokenizer.json", &err), DS4_ERR_IO);
    cr_assert(strstr(err.msg, "/nonexistent/tokenizer.json"), "%s", err.msg);
    free(text);
}

/* ---- Unicode 16 classes ------------------------------------------------------------------------ */
static bool in_table(const uint32_t (*t)[2], size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < t[mid][0]) hi = mid;
        else if (cp > t[mid][1]) lo = mid + 1;
        else return true;
    }
    return false;
}

Test(tokenizer_pretok, classes_equal_unicode16_on_every_code_point) {
    static const struct {
        char which;
        const uint32_t (*t)[2];
        size_t n;
    } cls[] = {
        {'L', ucd16_L, sizeof ucd16_L / sizeof *ucd16_L}, {'M', ucd16_M, sizeof ucd16_M / sizeof *ucd16_M},
        {'N', ucd16_N, sizeof ucd16_N / sizeof *ucd16_N}, {'P', ucd16_P, sizeof ucd16_P / sizeof *ucd16_P},
        {'S', ucd16_S, sizeof ucd16_S / sizeof *ucd16_S},
    };
    pcre2_match_data *md = pcre2_match_data_create(2, NULL);
    for (size_t c = 0; c < sizeof cls / sizeof *cls; c++) {
        char *body = tok_pretok_class_text(cls[c].which), pat[65536];
        snprintf(pat, sizeof pat, "[%s]", body);
        free(body);
        int ec;
        PCRE2_SIZE eo;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP | PCRE2_ANCHORED, &ec,
                                       &eo, NULL);
        cr_assert(re, "class %c does not compile", cls[c].which);
        int bad = 0;
        for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
            if (cp >= 0xD800 && cp <= 0xDFFF) continue;
            uint8_t b[4];
            size_t n;
            if (cp < 0x80) { b[0] = (uint8_t)cp; n = 1; }
            else if (cp < 0x800) { b[0] = (uint8_t)(0xC0 | cp >> 6); b[1] = (uint8_t)(0x80 | (cp & 63)); n = 2; }
            else if (cp < 0x10000) {
                b[0] = (uint8_t)(0xE0 | cp >> 12); b[1] = (uint8_t)(0x80 | ((cp >> 6) & 63));
                b[2] = (uint8_t)(0x80 | (cp & 63)); n = 3;
            } else {
                b[0] = (uint8_t)(0xF0 | cp >> 18); b[1] = (uint8_t)(0x80 | ((cp >> 12) & 63));
                b[2] = (uint8_t)(0x80 | ((cp >> 6) & 63)); b[3] = (uint8_t)(0x80 | (cp & 63)); n = 4;
            }
            bool got = pcre2_match(re, b, n, 0, 0, md, NULL) > 0, want = in_table(cls[c].t, cls[c].n, cp);
            if (got != want && bad++ < 5)
                cr_expect(0, "\\p{%c} U+%04X: pre-tokenizer says %d, Unicode 16 says %d (regenerate tokenizer_ucd.c)",
                          cls[c].which, cp, got, want);
        }
        cr_assert_eq(bad, 0, "class %c: %d code points differ from Unicode 16", cls[c].which, bad);
        pcre2_code_free(re);
    }
    pcre2_match_data_free(md);
}
