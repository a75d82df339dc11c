/*
 * text/tokenizer_bpe.c — byte-level BPE of one pre-tokenizer piece (TOKENIZER.md §3.4-3.5)
 * and the shared word cache. Merges run on a doubly linked symbol list with a min-heap of
 * (rank, position): O(n log n) per piece instead of rescanning all pairs per merge. Never
 * splits text; never sees added tokens.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer_impl.h"
#include "core/error.h"

void tok_scratch_free(tok_scratch *s) {
    free(s->sym);
    free(s->prev);
    free(s->next);
    free(s->heap);
    memset(s, 0, sizeof *s);
}

ds4_status tok_ids_push(tok_ids *ids, const int32_t *src, size_t n, ds4_error *err) {
    if (ids->count_only) { ids->n += n; return DS4_OK; }
    if (ids->n + n > ids->cap) {
        size_t cap = ids->cap ? ids->cap : 256;
        while (cap < ids->n + n) {
            if (cap > SIZE_MAX / 2 / sizeof *ids->v) return ds4_seterr(err, DS4_ERR_NOMEM, "tokenizer: too many tokens");
            cap *= 2;
        }
        int32_t *v = realloc(ids->v, cap * sizeof *v);
        if (!v) return ds4_seterr(err, DS4_ERR_NOMEM, "tokenizer: out of memory for %zu token ids", cap);
        ids->v = v;
        ids->cap = cap;
    }
    memcpy(ids->v + ids->n, src, n * sizeof *src);
    ids->n += n;
    return DS4_OK;
}

static ds4_status scratch_reserve(tok_scratch *s, size_t n, ds4_error *err) {
    if (n <= s->cap) return DS4_OK;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < n) cap *= 2;
    int32_t *sym = realloc(s->sym, cap * sizeof *sym);
    if (sym) s->sym = sym;
    int32_t *prev = realloc(s->prev, cap * sizeof *prev);
    if (prev) s->prev = prev;
    int32_t *next = realloc(s->next, cap * sizeof *next);
    if (next) s->next = next;
    uint64_t *heap = realloc(s->heap, 3 * cap * sizeof *heap);
    if (heap) s->heap = heap;
    if (!sym || !prev || !next || !heap)
        return ds4_seterr(err, DS4_ERR_NOMEM, "tokenizer: out of memory for a %zu-byte piece", n);
    s->cap = cap;
    return DS4_OK;
}

static void heap_push(uint64_t *h, size_t *n, uint64_t v) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h[parent] <= v) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = v;
}

static uint64_t heap_pop(uint64_t *h, size_t *n) {
    uint64_t top = h[0], v = h[--*n];
    size_t i = 0, m = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m) break;
        if (c + 1 < m && h[c + 1] < h[c]) c++;
        if (v <= h[c]) break;
        h[i] = h[c];
        i = c;
    }
    if (m) h[i] = v;
    return top;
}

static void push_pair(const ds4_tokenizer *tok, tok_scratch *s, size_t *hn, int32_t pos) {
    uint32_t rank;
    int32_t id;
    tok_pair_find(tok, s->sym[pos], s->sym[s->next[pos]], &rank, &id);
    if (rank != UINT32_MAX) heap_push(s->heap, hn, (uint64_t)rank << 32 | (uint32_t)pos);
}

/* TOKENIZER.md §3.5: lowest rank first, leftmost on ties (the heap key orders by rank, then
 * by the left symbol's position). A popped entry is stale when its left symbol died or the
 * pair there changed; ranks identify pairs uniquely, so comparing ranks detects both.
 * Leaves the resulting ids in s->sym[0 .. *n_out). */
static ds4_status bpe_merge(const ds4_tokenizer *tok, tok_scratch *s, const uint8_t *b, size_t len, size_t *n_out,
                            ds4_error *err) {
    /* Positions live in int32 links and the low half of the heap key. */
    if (len > (size_t)INT32_MAX)
        return ds4_seterr(err, DS4_ERR_RANGE, "tokenizer: a single %zu-byte piece exceeds 2 GiB", len);
    ds4_status st = scratch_reserve(s, len, err);
    if (st != DS4_OK) return st;
    for (size_t i = 0; i < len; i++) {
        s->sym[i] = tok->byte_id[b[i]];
        s->prev[i] = (int32_t)i - 1;
        s->next[i] = i + 1 < len ? (int32_t)i + 1 : -1;
    }
    size_t hn = 0;
    for (size_t i = 0; i + 1 < len; i++) push_pair(tok, s, &hn, (int32_t)i);
    while (hn) {
        uint64_t top = heap_pop(s->heap, &hn);
        int32_t pos = (int32_t)(uint32_t)top, nx;
        uint32_t want = (uint32_t)(top >> 32), rank;
        int32_t id;
        if (s->sym[pos] < 0 || (nx = s->next[pos]) < 0) continue;
        tok_pair_find(tok, s->sym[pos], s->sym[nx], &rank, &id);
        if (rank != want) continue;
        s->sym[pos] = id;
        s->sym[nx] = -1;
        s->next[pos] = s->next[nx];
        if (s->next[nx] >= 0) s->prev[s->next[nx]] = pos;
        if (s->prev[pos] >= 0) push_pair(tok, s, &hn, s->prev[pos]);
        if (s->next[pos] >= 0) push_pair(tok, s, &hn, pos);
    }
    size_t n = 0;
    for (int32_t i = 0; i >= 0; i = s->next[i]) s->sym[n++] = s->sym[i];
    *n_out = n;
    return DS4_OK;
}

/* Pieces depend only on their bytes (§3.5), so results are cached per piece: direct-mapped
 * slots in 64 locked shards; a lookup copies out under the lock, a fill never waits. */
ds4_status tok_bpe_piece(const ds4_tokenizer *tok, tok_scratch *s, const char *piece, size_t len, tok_ids *out,
                         ds4_error *err) {
    const uint8_t *b = (const uint8_t *)piece;
    size_t n;
    ds4_status st;
    if (len == 0) return DS4_OK;
    if (len == 1) return tok_ids_push(out, &tok->byte_id[b[0]], 1, err);
    if (len > TOK_CACHE_PIECE_BYTES) {
        if ((st = bpe_merge(tok, s, b, len, &n, err)) != DS4_OK) return st;
        return tok_ids_push(out, s->sym, n, err);
    }
    uint64_t h = tok_hash_bytes(b, len);
    tok_cache_shard *sh = &tok->cache[h >> 58 & (TOK_CACHE_SHARDS - 1)];
    tok_cache_entry *e = &sh->slot[h & (TOK_CACHE_SLOTS - 1)];
    int32_t ids[TOK_CACHE_IDS];
    int n_hit = -1;
    pthread_mutex_lock(&sh->mu);
    if (e->hash == h && e->len == len && memcmp(e->bytes, b, len) == 0) {
        n_hit = e->n_ids;
        memcpy(ids, e->ids, (size_t)n_hit * sizeof *ids);
    }
    pthread_mutex_unlock(&sh->mu);
    if (n_hit >= 0) return tok_ids_push(out, ids, (size_t)n_hit, err);

    if ((st = bpe_merge(tok, s, b, len, &n, err)) != DS4_OK) return st;
    if (n <= TOK_CACHE_IDS && pthread_mutex_trylock(&sh->mu) == 0) {
        e->hash = h;
        e->len = (uint8_t)len;
        e->n_ids = (uint8_t)n;
        memcpy(e->bytes, b, len);
        memcpy(e->ids, s->sym, n * sizeof *s->sym);
        pthread_mutex_unlock(&sh->mu);
    }
    return tok_ids_push(out, s->sym, n, err);
}
