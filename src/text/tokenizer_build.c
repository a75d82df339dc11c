/*
 * text/tokenizer_build.c — tok_arrays -> struct ds4_tokenizer: decode table, byte symbols,
 * merge-pair table, added-token trie, word cache; plus open/free and the small lookups of
 * ds4.h. Knows the GGUF layout only through tok_arrays; never encodes or decodes text.
 */
#include "text/tokenizer.h"
#include "text/tokenizer_impl.h"
#include "core/error.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* TOKENIZER.md §3.4: 188 printable bytes map to themselves, the other 68 in increasing order
 * to U+0100.. */
static bool byte_is_identity(unsigned b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

/* The 68 remapped bytes in increasing order are 0x00-0x20 (33), 0x7F-0xA0 (34) and 0xAD. */
uint32_t tok_byte_to_cp(uint8_t b) {
    if (byte_is_identity(b)) return b;
    if (b <= 0x20) return 0x100 + b;
    if (b <= 0xA0) return 0x100 + 33 + (b - 0x7Fu);
    return 0x100 + 67;  /* 0xAD */
}

int tok_cp_to_byte(uint32_t cp) {
    if (cp < 0x100) return byte_is_identity(cp) ? (int)cp : -1;
    uint32_t k = cp - 0x100;
    if (k < 33) return (int)k;
    if (k < 67) return (int)(0x7F + k - 33);
    return k == 67 ? 0xAD : -1;
}

static size_t put_utf8(uint8_t *out, uint32_t cp) {
    if (cp < 0x80) { out[0] = (uint8_t)cp; return 1; }
    if (cp < 0x800) { out[0] = (uint8_t)(0xC0 | cp >> 6); out[1] = (uint8_t)(0x80 | (cp & 63)); return 2; }
    out[0] = (uint8_t)(0xE0 | cp >> 12);
    out[1] = (uint8_t)(0x80 | ((cp >> 6) & 63));
    out[2] = (uint8_t)(0x80 | (cp & 63));
    return 3;
}

/* Decodes one token string through the inverse byte map; false if some character is not a
 * byte symbol (then the token decodes to its own UTF-8, TOKENIZER.md §3.6 step 3). */
static bool bytes_of_symbols(const char *s, uint8_t *out, size_t *out_len) {
    const uint8_t *p = (const uint8_t *)s;
    size_t n = 0;
    while (*p) {
        uint32_t cp;
        if (p[0] < 0x80) { cp = p[0]; p += 1; }
        else if ((p[0] & 0xE0) == 0xC0 && (p[1] & 0xC0) == 0x80) { cp = (uint32_t)(p[0] & 31) << 6 | (p[1] & 63); p += 2; }
        else return false;  /* byte symbols are all < U+0800 */
        int b = tok_cp_to_byte(cp);
        if (b < 0) return false;
        out[n++] = (uint8_t)b;
    }
    *out_len = n;
    return true;
}

/* ---- string -> id map over ordinary vocabulary tokens (build time only) ------------------- */
typedef struct strmap {
    uint32_t *slot;   /* id + 1, 0 empty */
    uint64_t mask;
    char *const *str;
} strmap;

static ds4_status strmap_init(strmap *m, char *const *str, uint32_t n, ds4_error *err) {
    uint64_t size = 1;
    while (size < (uint64_t)n * 2) size <<= 1;
    m->slot = calloc(size, sizeof *m->slot);
    m->mask = size - 1;
    m->str = str;
    if (!m->slot) return ds4_seterr(err, DS4_ERR_NOMEM, "tokenizer: out of memory");
    return DS4_OK;
}

static void strmap_put(strmap *m, uint32_t id) {
    const char *s = m->str[id];
    uint64_t i = tok_hash_bytes(s, strlen(s)) & m->mask;
    while (m->slot[i]) {
        if (strcmp(m->str[m->slot[i] - 1], s) == 0) return;  /* first id wins */
        i = (i + 1) & m->mask;
    }
    m->slot[i] = id + 1;
}

static int32_t strmap_get(const strmap *m, const char *s, size_t len) {
    uint64_t i = tok_hash_bytes(s, len) & m->mask;
    while (m->slot[i]) {
        const char *t = m->str[m->slot[i] - 1];
        if (strncmp(t, s, len) == 0 && t[len] == 0) return (int32_t)(m->slot[i] - 1);
        i = (i + 1) & m->mask;
    }
    return -1;
}

/* ---- merge pairs ---------------------------------------------------------------------------- */
void tok_pair_find(const ds4_tokenizer *tok, int32_t left, int32_t right, uint32_t *rank, int32_t *id) {
    uint64_t key = ((uint64_t)(uint32_t)left << 32 | (uint32_t)right) + 1;
    uint64_t i = (key * 0x9E3779B97F4A7C15ull >> 20) & tok->pair_mask;
    for (;;) {
        const tok_pair *p = &tok->pairs[i];
        if (p->key == key) { *rank = p->rank; *id = p->id; return; }
        if (p->key == 0) { *rank = UINT32_MAX; *id = -1; return; }
        i = (i + 1) & tok->pair_mask;
    }
}

static void pair_put(ds4_tokenizer *tok, int32_t left, int32_t right, uint32_t rank, int32_t id) {
    uint64_t key = ((uint64_t)(uint32_t)left << 32 | (uint32_t)right) + 1;
    uint64_t i = (key * 0x9E3779B97F4A7C15ull >> 20) & tok->pair_mask;
    while (tok->pairs[i].key) {
        if (tok->pairs[i].key == key) return;  /* TOKENIZER.md §3.5: first occurrence wins */
        i = (i + 1) & tok->pair_mask;
    }
    tok->pairs[i] = (tok_pair){key, rank, id};
}

/* ---- added-token trie ------------------------------------------------------------------------ */
static ds4_status trie_add(ds4_tokenizer *tok, uint32_t *cap, const char *s, int32_t id, uint8_t pass,
                           ds4_error *err) {
    const uint8_t *p = (const uint8_t *)s;
    int32_t *link = &tok->root[*p];
    int32_t node = -1;
    for (; *p; p++) {
        if (node >= 0) {
            link = &tok->nodes[node].child;
            while (*link >= 0 && tok->nodes[*link].byte != *p) link = &tok->nodes[*link].sibling;
        }
        if (*link < 0) {
            if (tok->n_nodes == *cap) {
                uint32_t nc = *cap ? *cap * 2 : 4096;
                /* `link` may point into the node array, which moves: keep its offset. */
                ptrdiff_t off = (link >= &tok->root[0] && link < &tok->root[256]) ? -1
                                : (ptrdiff_t)((char *)link - (char *)tok->nodes);
                tok_trie_node *nn = realloc(tok->nodes, (size_t)nc * sizeof *nn);
                if (!nn) return ds4_seterr(err, DS4_ERR_NOMEM, "tokenizer: out of memory");
                tok->nodes = nn;
                if (off >= 0) link = (int32_t *)((char *)nn + off);
                *cap = nc;
            }
            int32_t nid = (int32_t)tok->n_nodes++;
            tok->nodes[nid] = (tok_trie_node){-1, -1, -1, *p, 0};
            *link = nid;
        }
        node = *link;
    }
    if (tok->nodes[node].token_id < 0) {  /* a repeated content keeps its first id */
        tok->nodes[node].token_id = id;
        tok->nodes[node].pass = pass;
    }
    return DS4_OK;
}

static bool id_listed(const int32_t *ids, uint32_t n, int32_t id) {
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (ids[mid] == id) return true;
        if (ids[mid] < id) lo = mid + 1; else hi = mid;
    }
    return false;
}

static ds4_status build(ds4_tokenizer *tok, const tok_arrays *a, ds4_error *err) {
    ds4_status st = DS4_OK;
    uint32_t n = a->n_tokens;
    if (n == 0 || n > TOK_MAX_TOKENS || !a->tokens)
        return ds4_seterr(err, DS4_ERR_FORMAT, "tokenizer: %u tokens (expected 1..%u)", n, TOK_MAX_TOKENS);
    tok->n_tokens = n;
    tok->bos_id = a->bos_id;
    tok->eos_id = a->eos_id;
    tok->flags = calloc(n, 1);
    tok->dec_off = calloc((size_t)n + 1, sizeof *tok->dec_off);
    uint8_t *is_base = calloc(n, 1);
    if (!tok->flags || !tok->dec_off || !is_base) {
        free(is_base);
        return ds4_seterr(err, DS4_ERR_NOMEM, "tokenizer: out of memory for %u tokens", n);
    }
    uint64_t total = 0;
    for (uint32_t id = 0; id < n; id++) {
        if (!a->tokens[id]) { free(is_base); return ds4_seterr(err, DS4_ERR_FORMAT, "tokenizer: token %u missing", id); }
        size_t len = strlen(a->tokens[id]);
        if (len == 0 || len > TOK_MAX_TOKEN_BYTES) {
            free(is_base);
            return ds4_seterr(err, DS4_ERR_FORMAT, "tokenizer: token %u has length %zu (expected 1..%u)", id, len,
                              TOK_MAX_TOKEN_BYTES);
        }
        int32_t type = a->token_types ? a->token_types[id] : TOK_TYPE_NORMAL;
        if (type == TOK_TYPE_CONTROL || type == TOK_TYPE_USER_DEFINED) tok->flags[id] |= TOK_F_ADDED;
        if (type == TOK_TYPE_UNUSED) tok->flags[id] |= TOK_F_UNUSED;
        total += len;
    }
    tok->dec_blob = malloc(total ? total : 1);
    strmap map = {0};
    if (!tok->dec_blob || (st = strmap_init(&map, a->tokens, n, err)) != DS4_OK) {
        free(is_base);
        free(map.slot);
        return tok->dec_blob ? st : ds4_seterr(err, DS4_ERR_NOMEM, "tokenizer: out of memory");
    }
    for (uint32_t id = 0; id < n; id++)
        if (!(tok->flags[id] & (TOK_F_ADDED | TOK_F_UNUSED))) strmap_put(&map, id);

    /* Byte symbols (invariant 2). */
    for (unsigned b = 0; b < 256; b++) {
        uint8_t u[4];
        size_t ul = put_utf8(u, tok_byte_to_cp((uint8_t)b));
        tok->byte_id[b] = strmap_get(&map, (const char *)u, ul);
        if (tok->byte_id[b] < 0) {
            st = ds4_seterr(err, DS4_ERR_FORMAT, "tokenizer: vocabulary lacks the byte symbol of 0x%02X (U+%04X)", b,
                            tok_byte_to_cp((uint8_t)b));
            goto out_free_map;
        }
        is_base[tok->byte_id[b]] = 1;
    }

    /* Merge pairs (invariant 3). */
    uint64_t psize = 1;
    while (psize < (uint64_t)a->n_merges * 2 + 2) psize <<= 1;
    tok->pairs = calloc(psize, sizeof *tok->pairs);
    tok->pair_mask = psize - 1;
    if (!tok->pairs) { st = ds4_seterr(err, DS4_ERR_NOMEM, "tokenizer: out of memory for merges"); goto out_free_map; }
    char *buf = malloc(2 * TOK_MAX_TOKEN_BYTES + 2);
    if (!buf) { st = ds4_seterr(err, DS4_ERR_NOMEM, "tokenizer: out of memory"); goto out_free_map; }
    for (uint32_t r = 0; r < a->n_merges; r++) {
        const char *m = a->merges[r];
        const char *sp = m ? strchr(m, ' ') : NULL;
        size_t ml = m ? strlen(m) : 0;
        if (!sp || sp == m || !sp[1] || strchr(sp + 1, ' ') || ml > 2 * TOK_MAX_TOKEN_BYTES) {
            free(buf);
            st = ds4_seterr(err, DS4_ERR_FORMAT, "tokenizer: merge %u is not \"LEFT RIGHT\"", r);
            goto out_free_map;
        }
        size_t ll = (size_t)(sp - m), rl = ml - ll - 1;
        int32_t l = strmap_get(&map, m, ll), rr = strmap_get(&map, sp + 1, rl);
        memcpy(buf, m, ll);
        memcpy(buf + ll, sp + 1, rl);
        int32_t res = strmap_get(&map, buf, ll + rl);
        if (l < 0 || rr < 0 || res < 0) {
            free(buf);
            st = ds4_seterr(err, DS4_ERR_FORMAT, "tokenizer: merge %u ('%.100s'): %s not in the vocabulary", r, m,
                            l < 0 ? "left side" : rr < 0 ? "right side" : "merged result");
            goto out_free_map;
        }
        pair_put(tok, l, rr, r, res);
        is_base[res] = 1;
    }
    free(buf);

    /* Decode bytes, added flags (structural rule of tokenizer.h), special/normalized flags. */
    uint32_t cap = 0;
    for (int i = 0; i < 256; i++) tok->root[i] = -1;
    uint64_t off = 0;
    for (uint32_t id = 0; id < n; id++) {
        const char *s = a->tokens[id];
        size_t len;
        if (!is_base[id] && !(tok->flags[id] & TOK_F_UNUSED)) tok->flags[id] |= TOK_F_ADDED;
        tok->dec_off[id] = (uint32_t)off;
        if (tok->flags[id] & TOK_F_UNUSED) continue;  /* HF: an id without a token decodes to nothing */
        if (!bytes_of_symbols(s, tok->dec_blob + off, &len)) {
            len = strlen(s);
            memcpy(tok->dec_blob + off, s, len);
        }
        off += len;
        if (tok->flags[id] & TOK_F_ADDED) {
            bool special = a->has_special_ids ? id_listed(a->special_ids, a->n_special, (int32_t)id)
                                              : (a->token_types && a->token_types[id] == TOK_TYPE_CONTROL);
            bool normalized = a->has_special_ids && id_listed(a->normalized_ids, a->n_normalized, (int32_t)id);
            if (special) tok->flags[id] |= TOK_F_SPECIAL;
            if (normalized) tok->flags[id] |= TOK_F_NORMALIZED;
            if ((st = trie_add(tok, &cap, s, (int32_t)id, normalized ? 2 : 1, err)) != DS4_OK) goto out_free_map;
            tok->has_added = true;
        }
    }
    tok->dec_off[n] = (uint32_t)off;
    st = DS4_OK;
out_free_map:
    free(map.slot);
    free(is_base);
    return st;
}

ds4_status tok_from_arrays(ds4_tokenizer **out, const tok_arrays *a, ds4_error *err) {
    *out = NULL;
    ds4_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) return ds4_seterr(err, DS4_ERR_NOMEM, "tokenizer: out of memory");
    ds4_status st = build(tok, a, err);
    if (st == DS4_OK) st = tok_pretok_init(&tok->pretok, err);
    if (st == DS4_OK) {
        tok->cache = calloc(TOK_CACHE_SHARDS, sizeof *tok->cache);
        if (!tok->cache) st = ds4_seterr(err, DS4_ERR_NOMEM, "tokenizer: out of memory for the word cache");
        else
            for (int i = 0; i < TOK_CACHE_SHARDS; i++) pthread_mutex_init(&tok->cache[i].mu, NULL);
    }
    if (st != DS4_OK) {
        ds4_tokenizer_free(tok);
        return st;
    }
    *out = tok;
    return DS4_OK;
}

void ds4_tokenizer_free(ds4_tokenizer *tok) {
    if (!tok) return;
    if (tok->cache) {
        for (int i = 0; i < TOK_CACHE_SHARDS; i++) pthread_mutex_destroy(&tok->cache[i].mu);
        free(tok->cache);
    }
    tok_pretok_free(&tok->pretok);
    free(tok->flags);
    free(tok->dec_off);
    free(tok->dec_blob);
    free(tok->pairs);
    free(tok->nodes);
    free(tok);
}


ds4_status ds4_tokenizer_open(ds4_tokenizer **out, const char *path, ds4_error *err) {
    if (!out || !path) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "ds4_tokenizer_open: NULL argument");
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return ds4_seterr(err, DS4_ERR_IO, "%s: %s", path, strerror(errno));
    char magic[4] = {0};
    size_t got = fread(magic, 1, 4, f);
    fclose(f);
    tok_arrays a;
    ds4_status st = (got == 4 && memcmp(magic, "GGUF", 4) == 0) ? tok_arrays_from_gguf_file(&a, path, err)
                                                                  : tok_arrays_from_json_file(&a, path, err);
    if (st != DS4_OK) return st;
    st = tok_from_arrays(out, &a, err);
    tok_arrays_free(&a);
    if (st != DS4_OK) ds4_err_prefix(err, "%s", path);
    return st;
}

uint32_t ds4_tokenizer_n_vocab(const ds4_tokenizer *tok) { return tok ? tok->n_tokens : 0; }

ds4_status ds4_tokenizer_special_id(const ds4_tokenizer *tok, const char *text, int32_t *out_id, ds4_error *err) {
    if (!tok || !text || !out_id) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "ds4_tokenizer_special_id: NULL argument");
    const uint8_t *p = (const uint8_t *)text;
    int32_t node = *p ? tok->root[*p] : -1;
    while (node >= 0 && p[1]) {
        p++;
        node = tok->nodes[node].child;
        while (node >= 0 && tok->nodes[node].byte != *p) node = tok->nodes[node].sibling;
    }
    if (node < 0 || tok->nodes[node].token_id < 0)
        return ds4_seterr(err, DS4_ERR_NOT_FOUND, "tokenizer: no added token '%.200s'", text);
    *out_id = tok->nodes[node].token_id;
    return DS4_OK;
}

bool ds4_tokenizer_is_added(const ds4_tokenizer *tok, int32_t id) {
    return tok && id >= 0 && (uint32_t)id < tok->n_tokens && (tok->flags[id] & TOK_F_ADDED);
}

bool ds4_tokenizer_is_special(const ds4_tokenizer *tok, int32_t id) {
    return tok && id >= 0 && (uint32_t)id < tok->n_tokens && (tok->flags[id] & TOK_F_SPECIAL);
}

ds4_status ds4_tokenizer_token_bytes(const ds4_tokenizer *tok, int32_t id, const char **out, size_t *out_bytes,
                                     ds4_error *err) {
    if (!tok || !out || !out_bytes) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "ds4_tokenizer_token_bytes: NULL argument");
    if (id < 0 || (uint32_t)id >= tok->n_tokens)
        return ds4_seterr(err, DS4_ERR_RANGE, "tokenizer: id %d outside 0..%u", id, tok->n_tokens - 1);
    *out = (const char *)tok->dec_blob + tok->dec_off[id];
    *out_bytes = tok->dec_off[id + 1] - tok->dec_off[id];
    return DS4_OK;
}
