/*
 * text/tokenizer_decode.c — ids -> text (TOKENIZER.md §3.6): whole-sequence decode and the
 * streaming decoder. Both use one lossy UTF-8 converter with the replacement rule of Rust's
 * String::from_utf8_lossy (each maximal invalid subpart becomes one U+FFFD), which is what the
 * reference does, so a stream emits exactly what a whole decode returns. Never encodes.
 */
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer_impl.h"
#include "core/error.h"

/* Length of the well-formed UTF-8 prefix of a character starting at s[0] (n bytes available):
 * *need = the full length the lead byte announces (0 for a byte that cannot start one). The
 * second-byte ranges exclude overlongs, surrogates and code points above U+10FFFF (Unicode
 * Table 3-7), as Rust does. */
static size_t utf8_valid_prefix(const uint8_t *s, size_t n, size_t *need) {
    uint8_t b = s[0];
    uint8_t lo = 0x80, hi = 0xBF;
    if (b < 0x80) { *need = 1; return 1; }
    if (b >= 0xC2 && b <= 0xDF) *need = 2;
    else if (b >= 0xE0 && b <= 0xEF) {
        *need = 3;
        if (b == 0xE0) lo = 0xA0;
        if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        *need = 4;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F;
    } else { *need = 0; return 0; }
    size_t k = 1;
    if (k < n && s[k] >= lo && s[k] <= hi) {
        for (k = 2; k < *need && k < n && (s[k] & 0xC0) == 0x80; k++) {}
    }
    return k;
}

/* Converts in[0..n) appending to out (capacity >= 3n). With final false, an incomplete but so
 * far valid character at the very end is not converted; *consumed says how far it got. */
static size_t utf8_lossy(const uint8_t *in, size_t n, bool final, uint8_t *out, size_t *consumed) {
    size_t i = 0, o = 0;
    while (i < n) {
        if (in[i] < 0x80) { out[o++] = in[i++]; continue; }
        size_t need, k = utf8_valid_prefix(in + i, n - i, &need);
        if (need && k == need) {
            memcpy(out + o, in + i, k);
            o += k;
            i += k;
            continue;
        }
        if (need && i + k == n && !final) break;  /* may still complete */
        out[o++] = 0xEF; out[o++] = 0xBF; out[o++] = 0xBD;  /* U+FFFD */
        i += k ? k : 1;
    }
    *consumed = i;
    return o;
}

static bool skipped(const ds4_tokenizer *tok, int32_t id, uint32_t flags) {
    return (flags & DS4_DETOKENIZE_SKIP_SPECIAL) && (tok->flags[id] & TOK_F_SPECIAL);
}

ds4_status ds4_detokenize(const ds4_tokenizer *tok, const int32_t *ids, size_t n_tokens, uint32_t flags,
                          char **out_text, size_t *out_bytes, ds4_error *err) {
    if (!tok || !out_text || !out_bytes || (!ids && n_tokens))
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "ds4_detokenize: NULL argument");
    *out_text = NULL;
    *out_bytes = 0;
    if (flags & ~(DS4_DETOKENIZE_SKIP_SPECIAL | DS4_DETOKENIZE_RAW_BYTES))
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "ds4_detokenize: unknown flags 0x%x", flags);
    size_t total = 0;
    for (size_t i = 0; i < n_tokens; i++) {
        if (ids[i] < 0 || (uint32_t)ids[i] >= tok->n_tokens)
            return ds4_seterr(err, DS4_ERR_RANGE, "detokenize: id %d at position %zu is outside 0..%u", ids[i], i,
                              tok->n_tokens - 1);
        if (!skipped(tok, ids[i], flags)) total += tok->dec_off[ids[i] + 1] - tok->dec_off[ids[i]];
    }
    uint8_t *raw = malloc(total + 1);
    if (!raw) return ds4_seterr(err, DS4_ERR_NOMEM, "detokenize: out of memory for %zu bytes", total);
    size_t o = 0;
    for (size_t i = 0; i < n_tokens; i++) {
        if (skipped(tok, ids[i], flags)) continue;
        size_t len = tok->dec_off[ids[i] + 1] - tok->dec_off[ids[i]];
        memcpy(raw + o, tok->dec_blob + tok->dec_off[ids[i]], len);
        o += len;
    }
    if (flags & DS4_DETOKENIZE_RAW_BYTES) {
        raw[o] = 0;
        *out_text = (char *)raw;
        *out_bytes = o;
        return DS4_OK;
    }
    if (total > (SIZE_MAX - 1) / 3) {
        free(raw);
        return ds4_seterr(err, DS4_ERR_NOMEM, "detokenize: %zu bytes is too long", total);
    }
    uint8_t *text = malloc(3 * total + 1);
    if (!text) {
        free(raw);
        return ds4_seterr(err, DS4_ERR_NOMEM, "detokenize: out of memory for %zu bytes", 3 * total);
    }
    size_t used, n = utf8_lossy(raw, o, true, text, &used);
    free(raw);
    text[n] = 0;
    *out_text = (char *)text;
    *out_bytes = n;
    return DS4_OK;
}

/* ---- streaming -------------------------------------------------------------------------- */
struct ds4_detok_stream {
    const ds4_tokenizer *tok;
    uint32_t flags;
    uint8_t held[4];      /* an incomplete character (at most 3 bytes) */
    size_t n_held;
    uint8_t *in, *out;    /* scratch: held + one token; its conversion */
    size_t cap;           /* capacity of `in` in bytes; `out` has 3 * cap */
};

ds4_status ds4_detok_stream_create(ds4_detok_stream **out, const ds4_tokenizer *tok, uint32_t flags, ds4_error *err) {
    if (!out || !tok) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "ds4_detok_stream_create: NULL argument");
    *out = NULL;
    if (flags & ~DS4_DETOKENIZE_SKIP_SPECIAL)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "ds4_detok_stream_create: unsupported flags 0x%x", flags);
    ds4_detok_stream *s = calloc(1, sizeof *s);
    if (!s) return ds4_seterr(err, DS4_ERR_NOMEM, "detokenize stream: out of memory");
    s->tok = tok;
    s->flags = flags;
    *out = s;
    return DS4_OK;
}

void ds4_detok_stream_free(ds4_detok_stream *s) {
    if (!s) return;
    free(s->in);
    free(s->out);
    free(s);
}

static ds4_status stream_reserve(ds4_detok_stream *s, size_t n, ds4_error *err) {
    if (n <= s->cap) return DS4_OK;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < n) cap *= 2;
    uint8_t *in = realloc(s->in, cap);
    if (in) s->in = in;
    uint8_t *out = realloc(s->out, 3 * cap + 1);
    if (out) s->out = out;
    if (!in || !out) return ds4_seterr(err, DS4_ERR_NOMEM, "detokenize stream: out of memory");
    s->cap = cap;
    return DS4_OK;
}

ds4_status ds4_detok_stream_push(ds4_detok_stream *s, int32_t id, const char **out_text, size_t *out_bytes,
                                 ds4_error *err) {
    if (!s || !out_text || !out_bytes) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "ds4_detok_stream_push: NULL argument");
    *out_text = "";
    *out_bytes = 0;
    const ds4_tokenizer *tok = s->tok;
    if (id < 0 || (uint32_t)id >= tok->n_tokens)
        return ds4_seterr(err, DS4_ERR_RANGE, "detokenize stream: id %d is outside 0..%u", id, tok->n_tokens - 1);
    if (skipped(tok, id, s->flags)) return DS4_OK;
    size_t len = tok->dec_off[id + 1] - tok->dec_off[id];
    ds4_status st = stream_reserve(s, s->n_held + len, err);
    if (st != DS4_OK) return st;
    memcpy(s->in, s->held, s->n_held);
    memcpy(s->in + s->n_held, tok->dec_blob + tok->dec_off[id], len);
    size_t n = s->n_held + len, used;
    size_t o = utf8_lossy(s->in, n, false, s->out, &used);
    s->n_held = n - used;  /* < 4: only an incomplete character is held back */
    memcpy(s->held, s->in + used, s->n_held);
    s->out[o] = 0;
    *out_text = (const char *)s->out;
    *out_bytes = o;
    return DS4_OK;
}

ds4_status ds4_detok_stream_flush(ds4_detok_stream *s, const char **out_text, size_t *out_bytes, ds4_error *err) {
    if (!s || !out_text || !out_bytes) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "ds4_detok_stream_flush: NULL argument");
    ds4_status st = stream_reserve(s, 4, err);
    if (st != DS4_OK) return st;
    size_t used, o = utf8_lossy(s->held, s->n_held, true, s->out, &used);
    s->n_held = 0;
    s->out[o] = 0;
    *out_text = (const char *)s->out;
    *out_bytes = o;
    return DS4_OK;
}
