/*
 * text/tokenizer_encode.c — text -> ids (TOKENIZER.md §3.1): cuts out added tokens in the
 * two passes of §3.2, hands each remaining segment to the pre-tokenizer and each piece to
 * BPE. Owns the per-call state only; never modifies the tokenizer (except its word cache,
 * through tok_bpe_piece).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer_impl.h"
#include "core/error.h"

typedef struct enc_ctx {
    const ds4_tokenizer *tok;
    tok_scratch scratch;
    tok_ids ids;
    void *md;
    const char *base;          /* start of the whole text (literal spans are offsets into it) */
    const size_t *lit;         /* tok_encode_literal: [begin, end) pairs, sorted; else NULL */
    size_t n_lit;
} enc_ctx;

/* Literal spans (tok_encode_literal): at absolute offset `at`, returns true when it lies inside
 * a span and sets *skip_to to the span's end; otherwise sets *limit to the next span's start
 * (or SIZE_MAX), so an added-token match may not reach into client text. */
static bool in_literal(const enc_ctx *c, size_t at, size_t *skip_to, size_t *limit) {
    size_t lo = 0, hi = c->n_lit; /* first span with end > at */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->lit[2 * mid + 1] > at) hi = mid; else lo = mid + 1;
    }
    if (lo < c->n_lit && c->lit[2 * lo] <= at) { *skip_to = c->lit[2 * lo + 1]; return true; }
    *limit = lo < c->n_lit ? c->lit[2 * lo] : SIZE_MAX;
    return false;
}

static ds4_status on_piece(void *vctx, const char *piece, size_t len, ds4_error *err) {
    enc_ctx *c = vctx;
    return tok_bpe_piece(c->tok, &c->scratch, piece, len, &c->ids, err);
}

static ds4_status encode_plain(enc_ctx *c, const char *text, size_t len, ds4_error *err) {
    if (len == 0) return DS4_OK;
    return tok_pretok_split(&c->tok->pretok, c->md, text, len, on_piece, c, err);
}

/* Longest added token of pass `pass` starting at text[i]; returns its id and sets *end, or -1. */
static int32_t match_added(const ds4_tokenizer *tok, const uint8_t *t, size_t len, size_t i, int pass, size_t *end) {
    int32_t node = tok->root[t[i]], best = -1;
    size_t j = i;
    while (node >= 0) {
        const tok_trie_node *nd = &tok->nodes[node];
        if (nd->token_id >= 0 && nd->pass == pass) {
            best = nd->token_id;
            *end = j + 1;
        }
        if (++j >= len) break;
        node = nd->child;
        while (node >= 0 && tok->nodes[node].byte != t[j]) node = tok->nodes[node].sibling;
    }
    return best;
}

/* TOKENIZER.md §3.2: leftmost match, longest among those starting there; pass 1 (tokens not
 * `normalized`) runs over the raw text, pass 2 (normalized ones) over what pass 1 left. */
static ds4_status encode_pass(enc_ctx *c, const char *text, size_t len, int pass, ds4_error *err) {
    const uint8_t *t = (const uint8_t *)text;
    size_t seg = 0, i = 0;
    ds4_status st;
    while (i < len) {
        size_t end, lim = len;
        if (c->tok->root[t[i]] < 0) { i++; continue; }
        if (c->n_lit) {
            size_t off = (size_t)(text - c->base), skip_to, limit;
            if (in_literal(c, off + i, &skip_to, &limit)) {
                i = skip_to - off < len ? skip_to - off : len;
                continue;
            }
            if (limit - off < lim) lim = limit - off;
        }
        int32_t id = match_added(c->tok, t, lim, i, pass, &end);
        if (id < 0) { i++; continue; }
        st = pass == 1 ? encode_pass(c, text + seg, i - seg, 2, err) : encode_plain(c, text + seg, i - seg, err);
        if (st != DS4_OK) return st;
        if ((st = tok_ids_push(&c->ids, &id, 1, err)) != DS4_OK) return st;
        i = seg = end;
    }
    return pass == 1 ? encode_pass(c, text + seg, len - seg, 2, err) : encode_plain(c, text + seg, len - seg, err);
}

static ds4_status encode(const ds4_tokenizer *tok, const char *text, size_t len, uint32_t flags, tok_ids *ids,
                         const size_t *lit, size_t n_lit, ds4_error *err) {
    if (!tok || (!text && len)) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "ds4_tokenize: NULL argument");
    if (flags & ~DS4_TOKENIZE_SPECIAL_AS_TEXT)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "ds4_tokenize: unknown flags 0x%x", flags);
    enc_ctx c = {.tok = tok, .ids = *ids, .base = text, .lit = lit, .n_lit = n_lit};
    c.md = tok_pretok_match_data(&tok->pretok);
    if (!c.md) return ds4_seterr(err, DS4_ERR_NOMEM, "tokenizer: out of memory for match data");
    ds4_status st = (tok->has_added && !(flags & DS4_TOKENIZE_SPECIAL_AS_TEXT)) ? encode_pass(&c, text, len, 1, err)
                                                                                 : encode_plain(&c, text, len, err);
    tok_pretok_match_data_free(c.md);
    tok_scratch_free(&c.scratch);
    *ids = c.ids;
    return st;
}

ds4_status ds4_tokenize(const ds4_tokenizer *tok, const char *text, size_t text_bytes, uint32_t flags,
                        int32_t **out_ids, size_t *out_n_tokens, ds4_error *err) {
    if (!out_ids || !out_n_tokens) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "ds4_tokenize: NULL output");
    *out_ids = NULL;
    *out_n_tokens = 0;
    tok_ids ids = {0};
    ds4_status st = encode(tok, text, text_bytes, flags, &ids, NULL, 0, err);
    if (st != DS4_OK) {
        free(ids.v);
        return st;
    }
    *out_ids = ids.v;
    *out_n_tokens = ids.n;
    return DS4_OK;
}

ds4_status ds4_tokenize_count(const ds4_tokenizer *tok, const char *text, size_t text_bytes, uint32_t flags,
                              size_t *out_n_tokens, ds4_error *err) {
    if (!out_n_tokens) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "ds4_tokenize_count: NULL output");
    *out_n_tokens = 0;
    tok_ids ids = {.count_only = true};
    ds4_status st = encode(tok, text, text_bytes, flags, &ids, NULL, 0, err);
    if (st == DS4_OK) *out_n_tokens = ids.n;
    return st;
}

ds4_status tok_encode_literal(const ds4_tokenizer *tok, const char *text, size_t text_bytes,
                              const size_t *lit, size_t n_lit, int32_t **out_ids,
                              size_t *out_n_tokens, ds4_error *err) {
    if (!out_ids || !out_n_tokens || (n_lit && !lit))
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "tok_encode_literal: NULL argument");
    *out_ids = NULL;
    *out_n_tokens = 0;
    for (size_t k = 0; k < n_lit; k++)
        if (lit[2 * k] >= lit[2 * k + 1] || lit[2 * k + 1] > text_bytes ||
            (k && lit[2 * k] < lit[2 * k - 1]))
            return ds4_seterr(err, DS4_ERR_INVALID_ARG, "tok_encode_literal: span %zu [%zu, %zu) "
                              "is empty, unsorted or past the text (%zu bytes)", k, lit[2 * k],
                              lit[2 * k + 1], text_bytes);
    tok_ids ids = {0};
    ds4_status st = encode(tok, text, text_bytes, 0, &ids, lit, n_lit, err);
    if (st != DS4_OK) {
        free(ids.v);
        return st;
    }
    *out_ids = ids.v;
    *out_n_tokens = ids.n;
    return DS4_OK;
}
