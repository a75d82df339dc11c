/*
 * text/tokenizer_impl.h — the shape of struct ds4_tokenizer, shared only by the
 * src/text/tokenizer_*.c files (build, pre-tokenizer, BPE, encode, decode) and the tokenizer's
 * own tests. Other modules use tokenizer.h / ds4.h.
 *
 * Invariants once tok_from_arrays returns:
 *  1. Every id < n_tokens has decode bytes (dec_off/dec_blob) and flags.
 *  2. byte_id[b] is the id of the byte symbol of b (TOKENIZER.md §3.4), for all 256 bytes.
 *  3. pairs maps (left id, right id) -> (rank, merged id) for every merge; ranks are unique
 *     per pair (the first occurrence of a repeated pair wins, TOKENIZER.md §3.5).
 *  4. The trie holds every added token that is not UNUSED, tagged with its pass (1: not
 *     normalized, 2: normalized; TOKENIZER.md §3.2).
 *  5. Everything except the cache is read-only; the cache locks per shard.
 */
#ifndef DS4_TEXT_TOKENIZER_IMPL_H
#define DS4_TEXT_TOKENIZER_IMPL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ds4.h"

#define TOK_BOS_TEXT "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
#define TOK_EOS_TEXT "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"

enum { TOK_F_ADDED = 1, TOK_F_SPECIAL = 2, TOK_F_NORMALIZED = 4, TOK_F_UNUSED = 8 };

typedef struct tok_pair {
    uint64_t key;   /* ((uint64_t)left << 32 | right) + 1; 0 = empty slot */
    uint32_t rank;
    int32_t id;     /* id of the merged symbol */
} tok_pair;

typedef struct tok_trie_node {
    int32_t child;     /* first child node, -1 none */
    int32_t sibling;   /* next sibling node, -1 none */
    int32_t token_id;  /* added token ending here, -1 none */
    uint8_t byte;
    uint8_t pass;      /* 1 or 2 when token_id >= 0 */
} tok_trie_node;

/* Word cache: direct-mapped, sharded, one mutex per shard (tokenizer.h thread safety). */
#define TOK_CACHE_SHARDS      64
#define TOK_CACHE_SLOTS       512          /* per shard: 32768 words, ~3 MB in all */
#define TOK_CACHE_PIECE_BYTES 40           /* longer pieces are not cached */
#define TOK_CACHE_IDS         10           /* pieces giving more ids are not cached */

typedef struct tok_cache_entry {
    uint64_t hash;     /* 0 = empty */
    uint8_t len;
    uint8_t n_ids;
    char bytes[TOK_CACHE_PIECE_BYTES];
    int32_t ids[TOK_CACHE_IDS];
} tok_cache_entry;

typedef struct tok_cache_shard {
    pthread_mutex_t mu;
    tok_cache_entry slot[TOK_CACHE_SLOTS];
} tok_cache_shard;

/* Compiled pre-tokenizer (tokenizer_pretok.c). The codes are shared read-only; PCRE2 allows
 * concurrent matching with per-call match data. */
typedef struct tok_pretok {
    void *re[3];       /* pcre2_code_8 * for steps 1..3 of TOKENIZER.md §3.3 */
    bool jit;
} tok_pretok;

struct ds4_tokenizer {
    uint32_t n_tokens;
    uint8_t *flags;            /* [n_tokens] TOK_F_* */
    uint32_t *dec_off;         /* [n_tokens + 1] into dec_blob */
    uint8_t *dec_blob;         /* decoded bytes of every token (TOKENIZER.md §3.6 step 3) */
    int32_t byte_id[256];
    tok_pair *pairs;
    uint64_t pair_mask;        /* table size - 1 (power of two) */
    int32_t root[256];         /* trie children of the root by first byte, -1 none */
    tok_trie_node *nodes;
    uint32_t n_nodes;
    bool has_added;
    tok_pretok pretok;
    tok_cache_shard *cache;    /* [TOK_CACHE_SHARDS] */
    int32_t bos_id, eos_id;
};

/* Growable id vector used while encoding. */
typedef struct tok_ids {
    int32_t *v;
    size_t n, cap;
    bool count_only;           /* ds4_tokenize_count: only n advances */
} tok_ids;

ds4_status tok_ids_push(tok_ids *ids, const int32_t *src, size_t n, ds4_error *err);

/* Per-call scratch for BPE (symbols, heap); grows, freed by tok_scratch_free. */
typedef struct tok_scratch {
    int32_t *sym;              /* symbol ids */
    int32_t *prev, *next;
    uint64_t *heap;            /* (rank << 32 | position) */
    size_t cap;
} tok_scratch;

void tok_scratch_free(tok_scratch *s);

/* tokenizer_pretok.c */
ds4_status tok_pretok_init(tok_pretok *p, ds4_error *err);
void tok_pretok_free(tok_pretok *p);
typedef ds4_status (*tok_piece_fn)(void *ctx, const char *piece, size_t len, ds4_error *err);
/* Splits one segment (text between added tokens) into pieces, calling fn for each in order. */
ds4_status tok_pretok_split(const tok_pretok *p, void *match_data, const char *text, size_t len,
                            tok_piece_fn fn, void *ctx, ds4_error *err);
void *tok_pretok_match_data(const tok_pretok *p);
void tok_pretok_match_data_free(void *md);
/* The class text (PCRE2 syntax, without brackets) each step uses for L, M, N, P, S and
 * whitespace; exposed for the Unicode-table test. which: 'L','M','N','P','S','W'. Caller frees. */
char *tok_pretok_class_text(char which);

/* tokenizer_bpe.c */
ds4_status tok_bpe_piece(const ds4_tokenizer *tok, tok_scratch *s, const char *piece, size_t len,
                         tok_ids *out, ds4_error *err);
void tok_pair_find(const ds4_tokenizer *tok, int32_t left, int32_t right, uint32_t *rank, int32_t *id);

/* tokenizer_ucd.c (generated) */
extern const char tok_ucd_unicode_version[];
extern const char tok_ucd_pcre2_version[];
extern const char tok_ucd_extra_L[], tok_ucd_extra_M[], tok_ucd_extra_N[], tok_ucd_extra_P[],
    tok_ucd_extra_S[];

/* Byte-level alphabet (TOKENIZER.md §3.4): code point of byte b, and the inverse (-1 if the
 * code point is not a byte symbol). */
uint32_t tok_byte_to_cp(uint8_t b);
int tok_cp_to_byte(uint32_t cp);

/* 64-bit hash of a byte string (never 0, so 0 can mark empty slots). */
static inline uint64_t tok_hash_bytes(const void *p, size_t n) {
    const uint8_t *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xFF51AFD7ED558CCDull);
    while (n >= 8) {
        uint64_t w;
        __builtin_memcpy(&w, s, 8);
        h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    for (size_t i = 0; i < n; i++) w |= (uint64_t)s[i] << (8 * i);
    h = (h ^ w) * 0x94D049BB133111EBull;
    h ^= h >> 31;
    return h ? h : 1;
}

#endif
