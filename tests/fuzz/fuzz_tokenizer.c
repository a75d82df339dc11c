/*
 * tests/fuzz/fuzz_tokenizer.c — fuzz target for the tokenizer: arbitrary bytes are encoded in
 * both modes (added tokens recognised / special-as-text) and must decode back to exactly the
 * same bytes (RAW_BYTES; ds4.h's invalid-UTF-8 policy), the count must agree, and the lossy
 * decode must be valid UTF-8 and equal the streaming decode; the same bytes read as ids are
 * decoded, in and out of range. The reference tokenizer.json is loaded once per process from
 * $DS4_SHARED (default ../shared).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds4.h"

static ds4_tokenizer *g_tok;

static void die(const char *what, const char *msg) {
    fprintf(stderr, "fuzz_tokenizer: %s: %s\n", what, msg);
    abort();
}

static void load(void) {
    const char *shared = getenv("DS4_SHARED");
    char path[4096];
    snprintf(path, sizeof path, "%s/testdata/tokenizer/deepseek_v4_tokenizer_reconstructed.json",
             shared ? shared : "../shared");
    ds4_error err = {0};
    if (ds4_tokenizer_open(&g_tok, path, &err) != DS4_OK) die("open", err.msg);
}

static int utf8_ok(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i], lo = 0x80, hi = 0xBF;
        size_t k;
        if (b < 0x80) { i++; continue; }
        if (b >= 0xC2 && b <= 0xDF) k = 2;
        else if (b >= 0xE0 && b <= 0xEF) { k = 3; if (b == 0xE0) lo = 0xA0; if (b == 0xED) hi = 0x9F; }
        else if (b >= 0xF0 && b <= 0xF4) { k = 4; if (b == 0xF0) lo = 0x90; if (b == 0xF4) hi = 0x8F; }
        else return 0;
        if (i + k > n || s[i + 1] < lo || s[i + 1] > hi) return 0;
        for (size_t j = 2; j < k; j++)
            if ((s[i + j] & 0xC0) != 0x80) return 0;
        i += k;
    }
    return 1;
}

/* Lossy decode must be valid UTF-8 and equal what the stream emits. */
static void check_decode(const int32_t *ids, size_t n, uint32_t flags) {
    ds4_error err = {0};
    char *whole;
    size_t wb;
    ds4_status st = ds4_detokenize(g_tok, ids, n, flags, &whole, &wb, &err);
    int any_bad = 0;
    for (size_t i = 0; i < n; i++) any_bad |= ids[i] < 0 || (uint32_t)ids[i] >= ds4_tokenizer_n_vocab(g_tok);
    if (any_bad) {
        if (st != DS4_ERR_RANGE) die("detokenize", "bad id not rejected with DS4_ERR_RANGE");
        return;
    }
    if (st != DS4_OK) die("detokenize", err.msg);
    if (!utf8_ok((const uint8_t *)whole, wb)) die("detokenize", "lossy output is not valid UTF-8");
    ds4_detok_stream *s;
    if (ds4_detok_stream_create(&s, g_tok, flags, &err) != DS4_OK) die("stream", err.msg);
    size_t at = 0;
    for (size_t i = 0; i <= n; i++) {
        const char *c;
        size_t cb;
        st = i < n ? ds4_detok_stream_push(s, ids[i], &c, &cb, &err) : ds4_detok_stream_flush(s, &c, &cb, &err);
        if (st != DS4_OK) die("stream", err.msg);
        if (!utf8_ok((const uint8_t *)c, cb)) die("stream", "chunk is not valid UTF-8");
        if (at + cb > wb || memcmp(whole + at, c, cb) != 0) die("stream", "differs from whole decode");
        at += cb;
    }
    if (at != wb) die("stream", "shorter than whole decode");
    ds4_detok_stream_free(s);
    free(whole);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_tok) load();
    ds4_error err = {0};
    for (int mode = 0; mode < 2; mode++) {
        uint32_t flags = mode ? DS4_TOKENIZE_SPECIAL_AS_TEXT : 0;
        int32_t *ids;
        size_t n, n_count;
        if (ds4_tokenize(g_tok, (const char *)data, size, flags, &ids, &n, &err) != DS4_OK) die("tokenize", err.msg);
        if (ds4_tokenize_count(g_tok, (const char *)data, size, flags, &n_count, &err) != DS4_OK || n_count != n)
            die("tokenize_count", "differs from tokenize");
        char *raw;
        size_t rb;
        if (ds4_detokenize(g_tok, ids, n, DS4_DETOKENIZE_RAW_BYTES, &raw, &rb, &err) != DS4_OK) die("raw", err.msg);
        if (rb != size || (size && memcmp(raw, data, size) != 0)) die("round trip", "raw decode differs from input");
        free(raw);
        check_decode(ids, n, 0);
        check_decode(ids, n, DS4_DETOKENIZE_SKIP_SPECIAL);
        free(ids);
    }
    /* The bytes as little-endian int32 ids: mostly out of range, so also fold them into range. */
    size_t n = size / 4;
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) return 0;
    memcpy(ids, data, n * 4);
    check_decode(ids, n, 0);
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)((uint32_t)ids[i] % ds4_tokenizer_n_vocab(g_tok));
    check_decode(ids, n, 0);
    check_decode(ids, n, DS4_DETOKENIZE_SKIP_SPECIAL);
    free(ids);
    return 0;
}
