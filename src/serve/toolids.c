/*
 * serve/toolids.c — random ids and the exact-DSML tool memory (see toolids.h). The map is a
 * chained hash table on the id plus an LRU list; limits are enforced on every put.
 */
#include "serve/toolids.h"

#include <openssl/rand.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

bool srv_random_id(char *out, size_t out_len, const char *prefix) {
    unsigned char raw[16];
    size_t pl = strlen(prefix);
    if (out_len < pl + 33) return false;
    if (RAND_bytes(raw, sizeof raw) != 1) return false;
    memcpy(out, prefix, pl);
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[pl + 2 * i] = hex[raw[i] >> 4];
        out[pl + 2 * i + 1] = hex[raw[i] & 15];
    }
    out[pl + 32] = '\0';
    return true;
}

bool srv_random_u64(uint64_t *out) {
    return RAND_bytes((unsigned char *)out, sizeof *out) == 1;
}

typedef struct tm_entry {
    char *id;
    char *dsml;
    size_t dsml_len;
    struct tm_entry *hnext;          /* hash chain */
    struct tm_entry *prev, *next;    /* LRU: head = most recent */
} tm_entry;

struct srv_toolmem {
    pthread_mutex_t mu;
    tm_entry **buckets;
    size_t n_buckets, count, bytes, max_ids, max_bytes;
    tm_entry *head, *tail;
};

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a; ids are random, so no flooding risk */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static size_t entry_bytes(const tm_entry *e) { return strlen(e->id) + e->dsml_len + 64; }

ds4_status srv_toolmem_create(srv_toolmem **out, size_t max_ids, size_t max_bytes, ds4_error *err) {
    *out = NULL;
    if (max_ids == 0 || max_bytes == 0)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "toolmem: limits must be > 0");
    srv_toolmem *m = calloc(1, sizeof *m);
    if (!m) return ds4_seterr(err, DS4_ERR_NOMEM, "toolmem: out of memory");
    m->n_buckets = 1024;
    while (m->n_buckets < max_ids && m->n_buckets < (1u << 20)) m->n_buckets *= 2;
    m->buckets = calloc(m->n_buckets, sizeof *m->buckets);
    if (!m->buckets) { free(m); return ds4_seterr(err, DS4_ERR_NOMEM, "toolmem: out of memory"); }
    m->max_ids = max_ids;
    m->max_bytes = max_bytes;
    pthread_mutex_init(&m->mu, NULL);
    *out = m;
    return DS4_OK;
}

static void lru_unlink(srv_toolmem *m, tm_entry *e) {
    if (e->prev) e->prev->next = e->next; else m->head = e->next;
    if (e->next) e->next->prev = e->prev; else m->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_front(srv_toolmem *m, tm_entry *e) {
    e->next = m->head;
    e->prev = NULL;
    if (m->head) m->head->prev = e;
    m->head = e;
    if (!m->tail) m->tail = e;
}

static tm_entry **find_slot(srv_toolmem *m, const char *id) {
    tm_entry **p = &m->buckets[hash_str(id) & (m->n_buckets - 1)];
    while (*p && strcmp((*p)->id, id) != 0) p = &(*p)->hnext;
    return p;
}

static void remove_entry(srv_toolmem *m, tm_entry *e) {
    tm_entry **p = find_slot(m, e->id);
    if (*p == e) *p = e->hnext;
    lru_unlink(m, e);
    m->count--;
    m->bytes -= entry_bytes(e);
    free(e->id);
    free(e->dsml);
    free(e);
}

void srv_toolmem_free(srv_toolmem *m) {
    if (!m) return;
    while (m->head) remove_entry(m, m->head);
    free(m->buckets);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

bool srv_toolmem_put(srv_toolmem *m, const char *id, const char *dsml, size_t dsml_len) {
    if (!*id || dsml_len == 0) return false;
    pthread_mutex_lock(&m->mu);
    tm_entry **slot = find_slot(m, id);
    if (*slot) remove_entry(m, *slot);
    tm_entry *e = calloc(1, sizeof *e);
    bool ok = false;
    if (e && (e->id = strdup(id)) && (e->dsml = malloc(dsml_len + 1))) {
        memcpy(e->dsml, dsml, dsml_len);
        e->dsml[dsml_len] = '\0';
        e->dsml_len = dsml_len;
        slot = find_slot(m, id);
        *slot = e;
        lru_front(m, e);
        m->count++;
        m->bytes += entry_bytes(e);
        ok = true;
        while (m->tail && m->tail != e && (m->count > m->max_ids || m->bytes > m->max_bytes))
            remove_entry(m, m->tail);
        if (m->bytes > m->max_bytes) { remove_entry(m, e); ok = false; }
    } else if (e) {
        free(e->id);
        free(e);
    }
    pthread_mutex_unlock(&m->mu);
    return ok;
}

bool srv_toolmem_get(srv_toolmem *m, const char *id, srv_buf *out) {
    pthread_mutex_lock(&m->mu);
    tm_entry *e = *find_slot(m, id);
    if (e) {
        lru_unlink(m, e);
        lru_front(m, e);
        srv_buf_append(out, e->dsml, e->dsml_len);
    }
    pthread_mutex_unlock(&m->mu);
    return e != NULL;
}

size_t srv_toolmem_count(srv_toolmem *m) {
    pthread_mutex_lock(&m->mu);
    size_t n = m->count;
    pthread_mutex_unlock(&m->mu);
    return n;
}

size_t srv_toolmem_bytes(srv_toolmem *m) {
    pthread_mutex_lock(&m->mu);
    size_t n = m->bytes;
    pthread_mutex_unlock(&m->mu);
    return n;
}

void srv_toolmem_export(srv_toolmem *m, const char *text, size_t text_len, srv_buf *out) {
    pthread_mutex_lock(&m->mu);
    size_t at = out->len;
    srv_buf_u32(out, 0);
    uint32_t n = 0;
    for (tm_entry *e = m->head; e; e = e->next) {
        if (!memmem(text, text_len, e->dsml, e->dsml_len)) continue;
        srv_buf_u32(out, (uint32_t)strlen(e->id));
        srv_buf_u32(out, (uint32_t)e->dsml_len);
        srv_buf_puts(out, e->id);
        srv_buf_append(out, e->dsml, e->dsml_len);
        n++;
    }
    if (srv_buf_ok(out)) {
        unsigned char *p = (unsigned char *)out->data + at;
        p[0] = (unsigned char)n; p[1] = (unsigned char)(n >> 8);
        p[2] = (unsigned char)(n >> 16); p[3] = (unsigned char)(n >> 24);
    }
    pthread_mutex_unlock(&m->mu);
}

static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

size_t srv_toolmem_import(srv_toolmem *m, const unsigned char *data, size_t len) {
    if (len < 4) return 0;
    uint32_t n = rd32(data);
    size_t off = 4, loaded = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (len - off < 8) break;
        uint32_t il = rd32(data + off), dl = rd32(data + off + 4);
        off += 8;
        /* Bounds from §6.6: id 1..256 bytes, block within what is left of the trailer. */
        if (il == 0 || il > 256 || dl == 0 || dl > len - off || il > len - off - dl) break;
        char id[257];
        memcpy(id, data + off, il);
        id[il] = '\0';
        if (memchr(id, '\0', il)) break;
        if (srv_toolmem_put(m, id, (const char *)data + off + il, dl)) loaded++;
        off += (size_t)il + dl;
    }
    return loaded;
}
