/*
 * tests/test_tokenizer.c — the tokenizer against the Hugging Face reference vectors
 * (TOKENIZER.md §7): 325 encode vectors, 295 pre-tokenizer vectors, 48 decode vectors, the
 * streaming decoder, special-as-text mode, invalid UTF-8, lookups and concurrent use.
 * Every failure names the vector file and line.
 */
#include <pthread.h>

#include "test_tokenizer_vec.h"
#include "text/tokenizer.h"
#include "text/tokenizer_impl.h"

#define ENC_FILE TV_DIR "tokenizer_vectors.jsonl"
#define PRE_FILE TV_DIR "tokenizer_pretok_vectors.jsonl"
#define DEC_FILE TV_DIR "tokenizer_decode_vectors.jsonl"

typedef struct enc_check {
    const ds4_tokenizer *tok;
    const char *label;
    int fails;
} enc_check;

static void check_encode_line(int line, json_t *o, void *vctx) {
    enc_check *c = vctx;
    json_t *jt = json_object_get(o, "text");
    size_t n_exp, n_got;
    int32_t *exp = tv_ids(json_object_get(o, "ids"), &n_exp), *got;
    ds4_error err = {0};
    ds4_status st = ds4_tokenize(c->tok, json_string_value(jt), json_string_length(jt), 0, &got, &n_got, &err);
    cr_assert_eq(st, DS4_OK, "%s line %d: %s", ENC_FILE, line, err.msg);
    size_t d = tv_first_diff(exp, n_exp, got, n_got);
    if (d != n_exp || n_exp != n_got) {
        c->fails++;
        cr_expect(0, "[%s] %s line %d (%s): %zu ids expected, got %zu; first difference at %zu: expected %d got %d",
                  c->label, ENC_FILE, line, json_string_value(json_object_get(o, "name")), n_exp, n_got, d,
                  d < n_exp ? exp[d] : -1, d < n_got ? got[d] : -1);
    }
    /* ds4_tokenize_count agrees with ds4_tokenize. */
    size_t n_count;
    cr_assert_eq(ds4_tokenize_count(c->tok, json_string_value(jt), json_string_length(jt), 0, &n_count, &err), DS4_OK);
    cr_expect_eq(n_count, n_got, "%s line %d: count %zu != %zu", ENC_FILE, line, n_count, n_got);
    /* TOKENIZER.md §3.6: decoding the ids gives back the text. */
    char *text;
    size_t tb;
    cr_assert_eq(ds4_detokenize(c->tok, got, n_got, 0, &text, &tb, &err), DS4_OK, "%s", err.msg);
    if (tb != json_string_length(jt) || memcmp(text, json_string_value(jt), tb) != 0) {
        c->fails++;
        cr_expect(0, "[%s] %s line %d: decode(encode(text)) differs from text", c->label, ENC_FILE, line);
    }
    free(text);
    free(exp);
    free(got);
}

static void check_decode_line(int line, json_t *o, void *vctx) {
    enc_check *c = vctx;
    size_t n;
    int32_t *ids = tv_ids(json_object_get(o, "ids"), &n);
    uint32_t flags = json_is_true(json_object_get(o, "skip_special_tokens")) ? DS4_DETOKENIZE_SKIP_SPECIAL : 0;
    json_t *jt = json_object_get(o, "text");
    char *text;
    size_t tb;
    ds4_error err = {0};
    cr_assert_eq(ds4_detokenize(c->tok, ids, n, flags, &text, &tb, &err), DS4_OK, "%s line %d: %s", DEC_FILE, line,
                 err.msg);
    if (tb != json_string_length(jt) || memcmp(text, json_string_value(jt), tb) != 0) {
        c->fails++;
        cr_expect(0, "[%s] %s line %d (%s): expected \"%s\", got \"%s\"", c->label, DEC_FILE, line,
                  json_string_value(json_object_get(o, "name")), json_string_value(jt), text);
    }
    free(text);
    free(ids);
}

/* Shared with the GGUF test: every encode and decode vector on one tokenizer. */
void tv_check_all_vectors(const ds4_tokenizer *tok, const char *label);
void tv_check_all_vectors(const ds4_tokenizer *tok, const char *label) {
    enc_check c = {tok, label, 0};
    int n = tv_each_line(ENC_FILE, check_encode_line, &c);
    cr_assert_eq(n, 325, "%s: expected 325 encode vectors, read %d", ENC_FILE, n);
    n = tv_each_line(DEC_FILE, check_decode_line, &c);
    cr_assert_eq(n, 48, "%s: expected 48 decode vectors, read %d", DEC_FILE, n);
    cr_assert_eq(c.fails, 0, "[%s] %d vector failures (listed above)", label, c.fails);
}

Test(tokenizer_json, all_encode_and_decode_vectors) {
    ds4_tokenizer *tok = tv_open_json();
    cr_assert_eq(ds4_tokenizer_n_vocab(tok), 129280);
    tv_check_all_vectors(tok, "tokenizer.json");
    ds4_tokenizer_free(tok);
}

/* ---- pre-tokenizer ----------------------------------------------------------------------- */
typedef struct pieces {
    char *buf;
    size_t n, cap;
    json_t *arr;
} pieces;

static ds4_status collect_piece(void *vctx, const char *p, size_t len, ds4_error *err) {
    (void)err;
    pieces *c = vctx;
    json_array_append_new(c->arr, json_stringn_nocheck(p, len));
    return DS4_OK;
}

typedef struct pre_check {
    const ds4_tokenizer *tok;
    int fails;
} pre_check;

static void check_pretok_line(int line, json_t *o, void *vctx) {
    pre_check *c = vctx;
    json_t *jt = json_object_get(o, "text");
    pieces got = {.arr = json_array()};
    void *md = tok_pretok_match_data(&c->tok->pretok);
    ds4_error err = {0};
    cr_assert_eq(tok_pretok_split(&c->tok->pretok, md, json_string_value(jt), json_string_length(jt), collect_piece,
                                  &got, &err),
                 DS4_OK, "%s", err.msg);
    tok_pretok_match_data_free(md);
    json_t *exp = json_object_get(o, "pieces");
    if (!json_equal(exp, got.arr)) {
        c->fails++;
        char *e = json_dumps(exp, JSON_ENSURE_ASCII | JSON_COMPACT), *g = json_dumps(got.arr, JSON_ENSURE_ASCII | JSON_COMPACT);
        cr_expect(0, "%s line %d (%s): expected %s got %s", PRE_FILE, line, json_string_value(json_object_get(o, "name")),
                  e, g);
        free(e);
        free(g);
    }
    json_decref(got.arr);
}

Test(tokenizer_pretok, all_pretokenizer_vectors) {
    ds4_tokenizer *tok = tv_open_json();
    pre_check c = {tok, 0};
    int n = tv_each_line(PRE_FILE, check_pretok_line, &c);
    cr_assert_eq(n, 295, "expected 295 pre-tokenizer vectors, read %d", n);
    cr_assert_eq(c.fails, 0, "%d pre-tokenizer vectors failed", c.fails);
    ds4_tokenizer_free(tok);
}

/* ---- streaming decode ---------------------------------------------------------------------- */
/* Well-formed UTF-8 (Unicode Table 3-7), so a chunk can be checked on its own. */
static bool utf8_ok(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i];
        size_t k;
        uint8_t lo = 0x80, hi = 0xBF;
        if (b < 0x80) { i++; continue; }
        if (b >= 0xC2 && b <= 0xDF) k = 2;
        else if (b >= 0xE0 && b <= 0xEF) { k = 3; if (b == 0xE0) lo = 0xA0; if (b == 0xED) hi = 0x9F; }
        else if (b >= 0xF0 && b <= 0xF4) { k = 4; if (b == 0xF0) lo = 0x90; if (b == 0xF4) hi = 0x8F; }
        else return false;
        if (i + k > n || s[i + 1] < lo || s[i + 1] > hi) return false;
        for (size_t j = 2; j < k; j++)
            if ((s[i + j] & 0xC0) != 0x80) return false;
        i += k;
    }
    return true;
}

static void check_stream(const ds4_tokenizer *tok, const int32_t *ids, size_t n, uint32_t flags, const char *what) {
    ds4_error err = {0};
    char *whole;
    size_t wb;
    cr_assert_eq(ds4_detokenize(tok, ids, n, flags, &whole, &wb, &err), DS4_OK, "%s", err.msg);
    ds4_detok_stream *s;
    cr_assert_eq(ds4_detok_stream_create(&s, tok, flags, &err), DS4_OK, "%s", err.msg);
    char *acc = malloc(wb + 64);
    size_t an = 0;
    for (size_t i = 0; i <= n; i++) {
        const char *chunk;
        size_t cb;
        if (i < n) cr_assert_eq(ds4_detok_stream_push(s, ids[i], &chunk, &cb, &err), DS4_OK, "%s", err.msg);
        else cr_assert_eq(ds4_detok_stream_flush(s, &chunk, &cb, &err), DS4_OK, "%s", err.msg);
        cr_assert(utf8_ok((const uint8_t *)chunk, cb), "%s: chunk after id #%zu is not complete UTF-8", what, i);
        cr_assert_leq(an + cb, wb, "%s: stream emitted more than the whole decode", what);
        memcpy(acc + an, chunk, cb);
        an += cb;
    }
    cr_assert(an == wb && memcmp(acc, whole, wb) == 0, "%s: stream output differs from whole decode", what);
    ds4_detok_stream_free(s);
    free(acc);
    free(whole);
}

typedef struct stream_ctx {
    const ds4_tokenizer *tok;
    const char *file;
} stream_ctx;

static void stream_line(int line, json_t *o, void *vctx) {
    stream_ctx *c = vctx;
    size_t n;
    int32_t *ids = tv_ids(json_object_get(o, "ids"), &n);
    char what[128];
    snprintf(what, sizeof what, "%s line %d", c->file, line);
    check_stream(c->tok, ids, n, 0, what);
    check_stream(c->tok, ids, n, DS4_DETOKENIZE_SKIP_SPECIAL, what);
    free(ids);
}

Test(tokenizer_stream, equals_whole_decode_and_never_splits_utf8) {
    ds4_tokenizer *tok = tv_open_json();
    stream_ctx c = {tok, ENC_FILE};
    tv_each_line(ENC_FILE, stream_line, &c);
    c.file = DEC_FILE;
    tv_each_line(DEC_FILE, stream_line, &c);
    /* Byte-fragment tokens: 😀 split into F0 9F 98 + 80, a lone continuation, a truncated
     * character before ASCII, and a truncated one at the very end. */
    int32_t emoji[] = {28927, 225, 67, 28927, 225, 28927}; /* 225 = byte 0x80 (§3.4) */
    check_stream(tok, emoji, 6, 0, "emoji fragments");
    char *t;
    size_t tb;
    ds4_error err;
    cr_assert_eq(ds4_detokenize(tok, emoji, 6, 0, &t, &tb, &err), DS4_OK);
    /* 😀 a 😀 then a lone F0 9F 98 at the end: exactly one U+FFFD (TOKENIZER.md §3.6) */
    cr_assert_str_eq(t, "\xf0\x9f\x98\x80" "a" "\xf0\x9f\x98\x80" "\xef\xbf\xbd");
    free(t);
    ds4_tokenizer_free(tok);
}

/* ---- special-as-text ------------------------------------------------------------------------- */
typedef struct sat_ctx {
    const ds4_tokenizer *tok;
    int n_with_added;
} sat_ctx;

static void special_as_text_line(int line, json_t *o, void *vctx) {
    sat_ctx *c = vctx;
    json_t *jt = json_object_get(o, "text");
    const char *text = json_string_value(jt);
    size_t len = json_string_length(jt), n_def, n_sat;
    int32_t *def, *sat;
    ds4_error err;
    cr_assert_eq(ds4_tokenize(c->tok, text, len, 0, &def, &n_def, &err), DS4_OK);
    cr_assert_eq(ds4_tokenize(c->tok, text, len, DS4_TOKENIZE_SPECIAL_AS_TEXT, &sat, &n_sat, &err), DS4_OK);
    bool def_added = false;
    for (size_t i = 0; i < n_def; i++) def_added |= ds4_tokenizer_is_added(c->tok, def[i]);
    for (size_t i = 0; i < n_sat; i++)
        cr_assert_not(ds4_tokenizer_is_added(c->tok, sat[i]), "%s line %d: special-as-text produced added id %d",
                      ENC_FILE, line, sat[i]);
    if (def_added) {
        c->n_with_added++;
    } else {
        /* no added token in the text: both modes agree */
        cr_assert(n_def == n_sat && memcmp(def, sat, n_def * sizeof *def) == 0,
                  "%s line %d: modes differ on text without added tokens", ENC_FILE, line);
    }
    char *back;
    size_t bb;
    cr_assert_eq(ds4_detokenize(c->tok, sat, n_sat, 0, &back, &bb, &err), DS4_OK);
    cr_assert(bb == len && memcmp(back, text, len) == 0, "%s line %d: special-as-text does not round-trip", ENC_FILE,
              line);
    free(back);
    free(def);
    free(sat);
}

Test(tokenizer_encode, special_as_text_never_yields_added_tokens) {
    ds4_tokenizer *tok = tv_open_json();
    sat_ctx c = {tok, 0};
    tv_each_line(ENC_FILE, special_as_text_line, &c);
    cr_assert_geq(c.n_with_added, 20, "only %d vectors contain added tokens", c.n_with_added);
    /* "<｜User｜>" as text is the BPE of its pieces "<", "｜", "User", "｜>" (pre-tokenizer
     * rules 3, 3, 2, 3); the default mode gives the single control token. */
    const char *u = "<\xef\xbd\x9cUser\xef\xbd\x9c>";
    int32_t *a, *b;
    size_t na, nb;
    ds4_error err;
    cr_assert_eq(ds4_tokenize(tok, u, strlen(u), 0, &a, &na, &err), DS4_OK);
    cr_assert(na == 1 && a[0] == 128803, "default mode: <｜User｜> should be [128803]");
    cr_assert_eq(ds4_tokenize(tok, u, strlen(u), DS4_TOKENIZE_SPECIAL_AS_TEXT, &b, &nb, &err), DS4_OK);
    cr_assert_gt(nb, 1);
    free(a);
    free(b);
    ds4_tokenizer_free(tok);
}

/* ---- lookups -------------------------------------------------------------------------------- */
Test(tokenizer_lookup, special_ids_by_text_and_flags) {
    ds4_tokenizer *tok = tv_open_json();
    /* TOKENIZER.md §0 ids, looked up by their content from the added-token table file. */
    size_t len;
    char *tbl = tu_read_shared(TV_DIR "deepseek_v4_added_tokens.json", &len);
    json_error_t je;
    json_t *arr = json_loadb(tbl, len, 0, &je);
    cr_assert(json_is_array(arr), "added tokens table: %s", je.text);
    cr_assert_eq(json_array_size(arr), 1283);
    size_t i;
    json_t *t;
    json_array_foreach(arr, i, t) {
        int32_t id = -1, want = (int32_t)json_integer_value(json_object_get(t, "id"));
        const char *content = json_string_value(json_object_get(t, "content"));
        ds4_error err;
        cr_assert_eq(ds4_tokenizer_special_id(tok, content, &id, &err), DS4_OK, "%s: %s", content, err.msg);
        cr_assert_eq(id, want, "%s: id %d, expected %d", content, id, want);
        cr_assert(ds4_tokenizer_is_added(tok, id));
        cr_assert_eq(ds4_tokenizer_is_special(tok, id), json_is_true(json_object_get(t, "special")), "%s special flag",
                     content);
    }
    json_decref(arr);
    free(tbl);
    int32_t id;
    ds4_error err;
    cr_assert_eq(ds4_tokenizer_special_id(tok, "<|User|>", &id, &err), DS4_ERR_NOT_FOUND);
    cr_assert_eq(ds4_tokenizer_special_id(tok, "Hello", &id, &err), DS4_ERR_NOT_FOUND, "vocab tokens are not added");
    cr_assert_not(ds4_tokenizer_is_added(tok, 19923));
    const char *bytes;
    size_t nb;
    cr_assert_eq(ds4_tokenizer_token_bytes(tok, 223, &bytes, &nb, &err), DS4_OK);
    cr_assert(nb == 1 && bytes[0] == ' ', "id 223 is the space byte (TOKENIZER.md §3.4)");
    cr_assert_eq(ds4_tokenizer_token_bytes(tok, 129280, &bytes, &nb, &err), DS4_ERR_RANGE);
    int32_t bad[] = {19923, 129280};
    char *text;
    size_t tb;
    cr_assert_eq(ds4_detokenize(tok, bad, 2, 0, &text, &tb, &err), DS4_ERR_RANGE);
    cr_assert(strstr(err.msg, "129280") && strstr(err.msg, "position 1"), "message: %s", err.msg);
    ds4_tokenizer_free(tok);
}

/* ---- invalid UTF-8, NUL, long runs ------------------------------------------------------------ */
Test(tokenizer_encode, invalid_utf8_and_nul_round_trip_bytes) {
    ds4_tokenizer *tok = tv_open_json();
    static const char *const cases[] = {
        "a\xff" "b", "\xc3", "caf\xc3", "\xe2\x82", "x\x80\x80y z", "\xf0\x9f\x98", "\xed\xa0\x80",
        "<\xef\xbd\x9cUser\xef\xbd\x9c\xff>", "\xc0\xaf hello \xf5\xf6", "12\xff" "34",
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        const char *s = cases[k];
        int32_t *ids;
        size_t n;
        ds4_error err;
        for (int mode = 0; mode < 2; mode++) {
            cr_assert_eq(ds4_tokenize(tok, s, strlen(s), mode ? DS4_TOKENIZE_SPECIAL_AS_TEXT : 0, &ids, &n, &err), DS4_OK,
                         "case %zu: %s", k, err.msg);
            char *raw;
            size_t rb;
            cr_assert_eq(ds4_detokenize(tok, ids, n, DS4_DETOKENIZE_RAW_BYTES, &raw, &rb, &err), DS4_OK);
            cr_assert(rb == strlen(s) && memcmp(raw, s, rb) == 0, "case %zu mode %d: raw round trip differs", k, mode);
            free(raw);
            free(ids);
        }
    }
    /* TOKENIZER.md §3.7: U+0000 is text. */
    int32_t *ids;
    size_t n;
    ds4_error err;
    cr_assert_eq(ds4_tokenize(tok, "a\0b", 3, 0, &ids, &n, &err), DS4_OK);
    cr_assert(n == 3 && ids[0] == 67 && ids[1] == 191 && ids[2] == 68, "a\\0b -> [67, 191, 68]");
    free(ids);
    /* Long runs go through PCRE2 without hitting a match limit. */
    size_t big = 1 << 20;
    char *s = malloc(big);
    const char fill[] = {' ', 'a', '\n', '1', '!'};
    for (size_t f = 0; f < sizeof fill; f++) {
        memset(s, fill[f], big);
        cr_assert_eq(ds4_tokenize(tok, s, big, 0, &ids, &n, &err), DS4_OK, "1 MiB of 0x%02x: %s", fill[f], err.msg);
        char *back;
        size_t bb;
        cr_assert_eq(ds4_detokenize(tok, ids, n, 0, &back, &bb, &err), DS4_OK);
        cr_assert(bb == big && memcmp(back, s, big) == 0, "1 MiB of 0x%02x does not round-trip", fill[f]);
        free(back);
        free(ids);
    }
    free(s);
    ds4_tokenizer_free(tok);
}

/* ---- concurrency ----------------------------------------------------------------------------- */
typedef struct thr_ctx {
    const ds4_tokenizer *tok;
    const char *text;
    size_t len;
    const int32_t *want;
    size_t n_want;
    int bad;
} thr_ctx;

static void *thr_encode(void *v) {
    thr_ctx *c = v;
    for (int r = 0; r < 20; r++) {
        int32_t *ids;
        size_t n;
        if (ds4_tokenize(c->tok, c->text, c->len, 0, &ids, &n, NULL) != DS4_OK || n != c->n_want ||
            memcmp(ids, c->want, n * sizeof *ids) != 0)
            c->bad++;
        free(ids);
    }
    return NULL;
}

Test(tokenizer_encode, concurrent_threads_share_one_tokenizer) {
    ds4_tokenizer *tok = tv_open_json();
    size_t len;
    char *text = tu_read_shared(ENC_FILE, &len);  /* mixed prose, code, JSON and scripts */
    int32_t *want;
    size_t n_want;
    cr_assert_eq(ds4_tokenize(tok, text, len, 0, &want, &n_want, NULL), DS4_OK);
    pthread_t th[4];
    thr_ctx c[4];
    for (int i = 0; i < 4; i++) {
        c[i] = (thr_ctx){tok, text, len, want, n_want, 0};
        pthread_create(&th[i], NULL, thr_encode, &c[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(c[i].bad, 0, "thread %d got different ids %d times", i, c[i].bad);
    }
    free(want);
    free(text);
    ds4_tokenizer_free(tok);
}
