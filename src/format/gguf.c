/*
 * format/gguf.c — GGUF v3 reader: header, metadata records, tensor directory -> offsets
 * (GGUF_LAYOUT §1). Never reads tensor data, knows nothing about DeepSeek.
 *
 * Design notes:
 *  1. gguf_open walks the whole header once and validates everything the gguf.h contract
 *     promises; afterwards the getters only decode bytes already proven to be in bounds.
 *  2. Nothing is sized from a count read in the file. Records, names and array indexes go into
 *     vectors that grow as records actually parse, so memory stays proportional to the bytes
 *     consumed: a claimed n_kv of 2^60 fails on "bytes left", never inside malloc.
 *  3. Names are NUL-terminated copies in one arena; while it may still move we keep offsets,
 *     and turn them into pointers once parsing is over.
 *  4. Keys and tensor names are found through open-addressing hash tables (the Flash file has
 *     1328 tensors, looked up by name at load time).
 */
#include "format/gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/mapfile.h"
#include "core/safemath.h"

/* Smallest possible encodings, used to reject absurd counts before walking them. */
#define KV_MIN_BYTES 14      /* key length 8 + 1 key byte + type 4 + 1 value byte */
#define TENSOR_MIN_BYTES 33  /* name length 8 + 1 + n_dims 4 + ne 8 + type 4 + offset 8 */
#define HEADER_BYTES 24      /* magic 4 + version 4 + n_tensors 8 + n_kv 8 (GGUF_LAYOUT §1.1) */
#define MAX_RECORDS 0xFFFFFFF0u  /* indexes are u32 in the hash tables and gguf_tensor.index */

/* ---- Small helpers ------------------------------------------------------------------------ */

static uint32_t rd_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd_le64(const uint8_t *p) { return rd_le32(p) | (uint64_t)rd_le32(p + 4) << 32; }

typedef struct vec {
    void *p;
    size_t n, cap, elem_bytes;
} vec;

static void *vec_push(vec *v) {
    if (v->n == v->cap) {
        size_t ncap = v->cap ? v->cap * 2 : 16;
        if (ncap > SIZE_MAX / v->elem_bytes) return NULL;
        void *np = realloc(v->p, ncap * v->elem_bytes);
        if (!np) return NULL;
        v->p = np;
        v->cap = ncap;
    }
    return (char *)v->p + v->n++ * v->elem_bytes;
}

/* Appends len bytes + NUL to a char arena; returns the offset or SIZE_MAX on OOM. */
static size_t arena_add(vec *a, const uint8_t *s, uint64_t len) {
    size_t need = (size_t)len + 1;
    if (a->n + need > a->cap) {
        size_t ncap = a->cap ? a->cap : 256;
        while (ncap < a->n + need) ncap *= 2;
        char *np = realloc(a->p, ncap);
        if (!np) return SIZE_MAX;
        a->p = np;
        a->cap = ncap;
    }
    size_t off = a->n;
    memcpy((char *)a->p + off, s, (size_t)len);
    ((char *)a->p)[off + len] = '\0';
    a->n += need;
    return off;
}

/* Printable excerpt of untrusted bytes for an error message. */
static const char *esc(char *dst, size_t cap, const uint8_t *s, uint64_t len) {
    size_t o = 0;
    for (uint64_t i = 0; i < len; i++) {
        if (o + 8 >= cap) {
            memcpy(dst + o, "...", 4);
            return dst;
        }
        uint8_t c = s[i];
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') dst[o++] = (char)c;
        else o += (size_t)snprintf(dst + o, cap - o, "\\x%02x", c);
    }
    dst[o] = '\0';
    return dst;
}

bool gguf_utf8_valid(const char *str, uint64_t len) {
    const uint8_t *s = (const uint8_t *)str;
    uint64_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        if (c < 0x80) { i++; continue; }
        uint32_t n, cp, min;
        if ((c & 0xE0) == 0xC0) { n = 1; cp = c & 0x1F; min = 0x80; }
        else if ((c & 0xF0) == 0xE0) { n = 2; cp = c & 0x0F; min = 0x800; }
        else if ((c & 0xF8) == 0xF0) { n = 3; cp = c & 0x07; min = 0x10000; }
        else return false;
        if (len - i <= n) return false;
        for (uint32_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += n + 1;
    }
    return true;
}

static const char *const vtype_names[GGUF_TYPE_COUNT] = {
    "UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32",
    "BOOL", "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64",
};
static const uint8_t vtype_sizes[GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *gguf_vtype_name(uint32_t vtype) {
    return vtype < GGUF_TYPE_COUNT ? vtype_names[vtype] : "unknown";
}

uint32_t gguf_vtype_size(uint32_t vtype) { return vtype < GGUF_TYPE_COUNT ? vtype_sizes[vtype] : 0; }

/* ---- Walking encoded values ---------------------------------------------------------------- */

typedef struct cur {
    const uint8_t *b;
    uint64_t size, pos;
} cur;

static uint64_t left(const cur *c) { return c->size - c->pos; }

static ds4_status need(const cur *c, uint64_t n, const char *what, ds4_error *e) {
    if (left(c) >= n) return DS4_OK;
    return ds4_seterr(e, DS4_ERR_FORMAT, "%s needs %llu bytes, only %llu left", what,
                      (unsigned long long)n, (unsigned long long)left(c));
}

/* Reads a GGUF string header and checks its bytes are present; leaves c after the bytes. */
static ds4_status walk_string(cur *c, const char *what, uint64_t *len_out, ds4_error *e) {
    /* Hot path (129280 tokens): format the message only on failure. */
    if (left(c) < 8)
        return ds4_seterr(e, DS4_ERR_FORMAT, "%s length needs 8 bytes, only %llu left", what,
                          (unsigned long long)left(c));
    uint64_t len = rd_le64(c->b + c->pos);
    c->pos += 8;
    if (len > left(c))
        return ds4_seterr(e, DS4_ERR_FORMAT, "%s length %llu exceeds the %llu bytes left", what,
                          (unsigned long long)len, (unsigned long long)left(c));
    if (len_out) *len_out = len;
    c->pos += len;
    return DS4_OK;
}

/* Validates one value of `type` at c->pos and moves past it. `depth` = arrays enclosing it.
 * When offs is non-NULL and the value is an array of strings/arrays, the offset of each element
 * from the first is appended to offs (design note 2: it grows only as elements parse). */
static ds4_status walk_value(cur *c, uint32_t type, uint32_t depth, vec *offs, ds4_error *e) {
    if (type >= GGUF_TYPE_COUNT)
        return ds4_seterr(e, DS4_ERR_FORMAT, "unknown value type %u", type);
    uint32_t size = vtype_sizes[type];
    if (size) {
        if (left(c) < size)
            return ds4_seterr(e, DS4_ERR_FORMAT, "%s value needs %u bytes, only %llu left",
                              vtype_names[type], size, (unsigned long long)left(c));
        c->pos += size;
        return DS4_OK;
    }
    if (type == GGUF_TYPE_STRING) return walk_string(c, "string", NULL, e);

    /* GGUF_LAYOUT §1.2: nesting deeper than 8 is fatal (a top-level array is level 1). */
    if (depth >= GGUF_MAX_ARRAY_DEPTH)
        return ds4_seterr(e, DS4_ERR_FORMAT, "arrays nested more than %d deep",
                          GGUF_MAX_ARRAY_DEPTH);
    ds4_status st = need(c, 12, "array header", e);
    if (st) return st;
    uint32_t et = rd_le32(c->b + c->pos);
    uint64_t n = rd_le64(c->b + c->pos + 4);
    c->pos += 12;
    if (et >= GGUF_TYPE_COUNT)
        return ds4_seterr(e, DS4_ERR_FORMAT, "array of unknown element type %u", et);
    uint32_t esz = vtype_sizes[et];
    uint64_t min_bytes = esz ? esz : (et == GGUF_TYPE_STRING ? 8 : 12);
    if (n > left(c) / min_bytes)
        return ds4_seterr(e, DS4_ERR_FORMAT,
                          "array count %llu of %s exceeds the %llu bytes left",
                          (unsigned long long)n, vtype_names[et], (unsigned long long)left(c));
    if (esz) {
        c->pos += n * esz;
        return DS4_OK;
    }
    uint64_t first = c->pos;
    for (uint64_t i = 0; i < n; i++) {
        if (offs) {
            uint64_t *slot = vec_push(offs);
            if (!slot) return ds4_seterr(e, DS4_ERR_NOMEM, "out of memory indexing array");
            *slot = c->pos - first;
        }
        st = walk_value(c, et, depth + 1, NULL, e);
        if (st) return ds4_err_prefix(e, "element %llu", (unsigned long long)i);
    }
    return DS4_OK;
}

ds4_status gguf_value_check(uint32_t type, const void *encoded, uint64_t n_bytes, ds4_error *err) {
    ds4_error local;
    ds4_error *e = err ? err : &local;
    if (!encoded && n_bytes)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "gguf: NULL value encoding");
    cur c = {encoded, n_bytes, 0};
    ds4_status st = walk_value(&c, type, 0, NULL, e);
    if (st) return ds4_err_prefix(e, "gguf: %s value", gguf_vtype_name(type));
    if (c.pos != n_bytes)
        return ds4_seterr(err, DS4_ERR_FORMAT, "gguf: %s value is %llu bytes, %llu given",
                          gguf_vtype_name(type), (unsigned long long)c.pos,
                          (unsigned long long)n_bytes);
    return DS4_OK;
}

/* Fills v from a value whose encoding [raw, raw+raw_bytes) was already validated. */
static void value_fill(gguf_value *v, const char *key, uint32_t type, const uint8_t *raw,
                       uint64_t raw_bytes) {
    memset(v, 0, sizeof *v);
    v->key = key;
    v->type = type;
    v->raw = raw;
    v->raw_bytes = raw_bytes;
    if (type == GGUF_TYPE_ARRAY) {
        v->elem_type = rd_le32(raw);
        v->n_elems = rd_le64(raw + 4);
        v->elems = raw + 12;
    }
}

/* ---- The context --------------------------------------------------------------------------- */

typedef struct kv_rec {
    size_t key_off;      /* into names arena */
    size_t offs_start;   /* into elem_offs, or SIZE_MAX */
    gguf_value v;
} kv_rec;

typedef struct htab {
    uint32_t *slots;     /* index + 1; 0 = empty */
    uint64_t mask;
} htab;

struct gguf_ctx {
    ds4_mapfile map;
    bool owns_map;
    const uint8_t *base;
    uint64_t size;
    uint32_t version, alignment;
    uint64_t data_offset;
    vec kvs;             /* kv_rec */
    vec tensors;         /* gguf_tensor */
    vec names;           /* char arena */
    vec elem_offs;       /* uint64_t */
    htab key_index, tensor_index;
};

static uint64_t hash_name(const char *s) {
    uint64_t h = 1469598103934665603ull;   /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

typedef const char *(*name_of_fn)(const gguf_ctx *, uint32_t);

static const char *kv_name(const gguf_ctx *ctx, uint32_t i) {
    return ((const kv_rec *)ctx->kvs.p)[i].v.key;
}

static const char *tensor_name(const gguf_ctx *ctx, uint32_t i) {
    return ((const gguf_tensor *)ctx->tensors.p)[i].name;
}

static int64_t htab_find(const gguf_ctx *ctx, const htab *h, name_of_fn name_of,
                         const char *name) {
    if (!h->slots || !name) return -1;
    for (uint64_t s = hash_name(name) & h->mask;; s = (s + 1) & h->mask) {
        uint32_t v = h->slots[s];
        if (v == 0) return -1;
        if (strcmp(name_of(ctx, v - 1), name) == 0) return (int64_t)(v - 1);
    }
}

/* Builds a table over n names; on a duplicate stores the two indexes and returns FORMAT. */
static ds4_status htab_build(gguf_ctx *ctx, htab *h, name_of_fn name_of, uint32_t n,
                             uint32_t *dup_first, uint32_t *dup_second) {
    uint64_t cap = 16;
    while (cap < (uint64_t)n * 2) cap *= 2;
    h->slots = calloc(cap, sizeof *h->slots);
    if (!h->slots) return DS4_ERR_NOMEM;
    h->mask = cap - 1;
    for (uint32_t i = 0; i < n; i++) {
        const char *name = name_of(ctx, i);
        uint64_t s = hash_name(name) & h->mask;
        while (h->slots[s]) {
            if (strcmp(name_of(ctx, h->slots[s] - 1), name) == 0) {
                *dup_first = h->slots[s] - 1;
                *dup_second = i;
                return DS4_ERR_FORMAT;
            }
            s = (s + 1) & h->mask;
        }
        h->slots[s] = i + 1;
    }
    return DS4_OK;
}

void gguf_close(gguf_ctx *ctx) {
    if (!ctx) return;
    free(ctx->kvs.p);
    free(ctx->tensors.p);
    free(ctx->names.p);
    free(ctx->elem_offs.p);
    free(ctx->key_index.slots);
    free(ctx->tensor_index.slots);
    if (ctx->owns_map) ds4_mapfile_close(&ctx->map);
    free(ctx);
}

/* Reads a key or tensor name: non-empty, in bounds, no NUL, valid UTF-8 (gguf.h contract). */
static ds4_status parse_name(gguf_ctx *ctx, cur *c, const char *what, size_t *off_out,
                             ds4_error *e) {
    uint64_t len;
    ds4_status st = walk_string(c, what, &len, e);
    if (st) return st;
    const uint8_t *s = c->b + c->pos - len;
    char buf[160];
    if (len == 0) return ds4_seterr(e, DS4_ERR_FORMAT, "empty %s", what);
    if (memchr(s, 0, (size_t)len))
        return ds4_seterr(e, DS4_ERR_FORMAT, "%s '%s' contains a NUL byte", what,
                          esc(buf, sizeof buf, s, len));
    if (!gguf_utf8_valid((const char *)s, len))
        return ds4_seterr(e, DS4_ERR_FORMAT, "%s '%s' is not valid UTF-8", what,
                          esc(buf, sizeof buf, s, len));
    *off_out = arena_add(&ctx->names, s, len);
    if (*off_out == SIZE_MAX) return ds4_seterr(e, DS4_ERR_NOMEM, "out of memory");
    return DS4_OK;
}

static ds4_status parse_kvs(gguf_ctx *ctx, cur *c, uint64_t n_kv, ds4_error *e) {
    for (uint64_t i = 0; i < n_kv; i++) {
        kv_rec *r = vec_push(&ctx->kvs);
        if (!r) return ds4_seterr(e, DS4_ERR_NOMEM, "gguf: out of memory at key #%llu",
                                  (unsigned long long)i);
        memset(r, 0, sizeof *r);
        r->offs_start = SIZE_MAX;
        ds4_status st = parse_name(ctx, c, "key", &r->key_off, e);
        if (st) return ds4_err_prefix(e, "gguf: key #%llu", (unsigned long long)i);
        const char *key = (const char *)ctx->names.p + r->key_off;
        st = need(c, 4, "value type", e);
        if (st) return ds4_err_prefix(e, "gguf: key #%llu '%s'", (unsigned long long)i, key);
        uint32_t type = rd_le32(c->b + c->pos);
        c->pos += 4;
        uint64_t start = c->pos;
        size_t offs_before = ctx->elem_offs.n;
        st = walk_value(c, type, 0, &ctx->elem_offs, e);
        if (st) return ds4_err_prefix(e, "gguf: key #%llu '%s'", (unsigned long long)i, key);
        value_fill(&r->v, NULL, type, c->b + start, c->pos - start);
        if (type == GGUF_TYPE_ARRAY && vtype_sizes[r->v.elem_type] == 0) r->offs_start = offs_before;
    }
    return DS4_OK;
}

static ds4_status parse_tensor_infos(gguf_ctx *ctx, cur *c, uint64_t n_tensors, ds4_error *e) {
    for (uint64_t i = 0; i < n_tensors; i++) {
        gguf_tensor *t = vec_push(&ctx->tensors);
        if (!t) return ds4_seterr(e, DS4_ERR_NOMEM, "gguf: out of memory at tensor #%llu",
                                  (unsigned long long)i);
        memset(t, 0, sizeof *t);
        t->index = (uint32_t)i;
        size_t name_off;
        ds4_status st = parse_name(ctx, c, "tensor name", &name_off, e);
        if (st) return ds4_err_prefix(e, "gguf: tensor #%llu", (unsigned long long)i);
        /* Stash the offset in the pointer field until the arena stops moving (design note 3). */
        t->name = (const char *)(uintptr_t)name_off;
        const char *name = (const char *)ctx->names.p + name_off;
        if ((st = need(c, 4, "n_dims", e)))
            return ds4_err_prefix(e, "gguf: tensor #%llu '%s'", (unsigned long long)i, name);
        t->n_dims = rd_le32(c->b + c->pos);
        c->pos += 4;
        if (t->n_dims < 1 || t->n_dims > DS4_MAX_DIMS)
            return ds4_seterr(e, DS4_ERR_FORMAT, "gguf: tensor #%llu '%s': n_dims %u outside 1..%d",
                              (unsigned long long)i, name, t->n_dims, DS4_MAX_DIMS);
        if ((st = need(c, 8ull * t->n_dims + 12, "dims, type and offset", e)))
            return ds4_err_prefix(e, "gguf: tensor #%llu '%s'", (unsigned long long)i, name);
        for (uint32_t d = 0; d < DS4_MAX_DIMS; d++)
            t->ne[d] = d < t->n_dims ? rd_le64(c->b + c->pos + 8ull * d) : 1;
        c->pos += 8ull * t->n_dims;
        t->type = rd_le32(c->b + c->pos);
        t->offset = rd_le64(c->b + c->pos + 4);
        c->pos += 12;
        if (!ds4_type_known(t->type))
            return ds4_seterr(e, DS4_ERR_UNSUPPORTED, "gguf: tensor '%s': unknown type id %u",
                              name, t->type);
        if ((st = ds4_tensor_bytes(t->type, t->ne, t->n_dims, &t->n_bytes, e)))
            return ds4_err_prefix(e, "gguf: tensor '%s'", name);
        t->n_elements = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) t->n_elements *= t->ne[d]; /* checked above */
    }
    return DS4_OK;
}

/* GGUF_LAYOUT §1.4; strictness explained in gguf.h contract #5. */
static ds4_status read_alignment(gguf_ctx *ctx, ds4_error *e) {
    ctx->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_value *v = gguf_find_value(ctx, "general.alignment");
    if (!v) return DS4_OK;
    uint32_t a;
    ds4_status st = gguf_value_u32(v, &a, e);
    if (st) return st;
    if (a == 0 || (a & (a - 1)) != 0)
        return ds4_seterr(e, DS4_ERR_FORMAT,
                          "gguf: key 'general.alignment': %u is not a non-zero power of two", a);
    ctx->alignment = a;
    return DS4_OK;
}

typedef struct span {
    uint64_t start, end;
    uint32_t index;
} span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->start != y->start) return x->start < y->start ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

static ds4_status place_tensors(gguf_ctx *ctx, ds4_error *e) {
    size_t n = ctx->tensors.n;
    gguf_tensor *ts = ctx->tensors.p;
    if (n == 0) return DS4_OK;
    if (ctx->data_offset > ctx->size)
        return ds4_seterr(e, DS4_ERR_FORMAT,
                          "gguf: data region starts at byte %llu, past the end of the %llu-byte file",
                          (unsigned long long)ctx->data_offset, (unsigned long long)ctx->size);
    span *sp = malloc(n * sizeof *sp);
    if (!sp) return ds4_seterr(e, DS4_ERR_NOMEM, "gguf: out of memory placing %zu tensors", n);
    ds4_status st = DS4_OK;
    for (size_t i = 0; i < n; i++) {
        gguf_tensor *t = &ts[i];
        if (!ds4_add_u64(&t->abs_offset, ctx->data_offset, t->offset) ||
            !ds4_range_ok(t->abs_offset, t->n_bytes, ctx->size)) {
            st = ds4_seterr(e, DS4_ERR_FORMAT,
                            "gguf: tensor '%s': data at offset %llu + %llu bytes ends past the "
                            "end of the %llu-byte file (data region starts at %llu)",
                            t->name, (unsigned long long)t->offset,
                            (unsigned long long)t->n_bytes, (unsigned long long)ctx->size,
                            (unsigned long long)ctx->data_offset);
            goto out_free_spans;
        }
        t->data = ctx->base + t->abs_offset;
        sp[i] = (span){t->abs_offset, t->abs_offset + t->n_bytes, (uint32_t)i};
    }
    qsort(sp, n, sizeof *sp, span_cmp);
    for (size_t i = 1; i < n; i++) {
        if (sp[i].start < sp[i - 1].end) {
            const gguf_tensor *a = &ts[sp[i - 1].index], *b = &ts[sp[i].index];
            st = ds4_seterr(e, DS4_ERR_FORMAT,
                            "gguf: tensor '%s' [%llu, %llu) overlaps tensor '%s' [%llu, %llu)",
                            b->name, (unsigned long long)b->offset,
                            (unsigned long long)(b->offset + b->n_bytes), a->name,
                            (unsigned long long)a->offset,
                            (unsigned long long)(a->offset + a->n_bytes));
            goto out_free_spans;
        }
    }
out_free_spans:
    free(sp);
    return st;
}

static ds4_status parse(gguf_ctx *ctx, ds4_error *e) {
    char buf[64];
    if (ctx->size < HEADER_BYTES)
        return ds4_seterr(e, DS4_ERR_FORMAT, "gguf: file is %llu bytes, shorter than the %d-byte header",
                          (unsigned long long)ctx->size, HEADER_BYTES);
    if (memcmp(ctx->base, GGUF_MAGIC, 4) != 0)
        return ds4_seterr(e, DS4_ERR_FORMAT, "gguf: bad magic '%s' (expected 'GGUF')",
                          esc(buf, sizeof buf, ctx->base, 4));
    ctx->version = rd_le32(ctx->base + 4);
    if (ctx->version != GGUF_VERSION)
        return ds4_seterr(e, DS4_ERR_UNSUPPORTED,
                          "gguf: version %u is not supported (only GGUF v3)", ctx->version);
    uint64_t n_tensors = rd_le64(ctx->base + 8), n_kv = rd_le64(ctx->base + 16);
    cur c = {ctx->base, ctx->size, HEADER_BYTES};
    /* Design note 2: absurd counts fail here, on the bytes left, before any walking. */
    if (n_kv > left(&c) / KV_MIN_BYTES || n_kv > MAX_RECORDS)
        return ds4_seterr(e, DS4_ERR_FORMAT,
                          "gguf: n_kv %llu needs at least %d bytes each, only %llu bytes left",
                          (unsigned long long)n_kv, KV_MIN_BYTES, (unsigned long long)left(&c));
    if (n_tensors > left(&c) / TENSOR_MIN_BYTES || n_tensors > MAX_RECORDS)
        return ds4_seterr(e, DS4_ERR_FORMAT,
                          "gguf: n_tensors %llu needs at least %d bytes each, only %llu bytes left",
                          (unsigned long long)n_tensors, TENSOR_MIN_BYTES,
                          (unsigned long long)left(&c));
    ctx->kvs.elem_bytes = sizeof(kv_rec);
    ctx->tensors.elem_bytes = sizeof(gguf_tensor);
    ctx->names.elem_bytes = 1;
    ctx->elem_offs.elem_bytes = sizeof(uint64_t);

    ds4_status st = parse_kvs(ctx, &c, n_kv, e);
    if (st) return st;
    st = parse_tensor_infos(ctx, &c, n_tensors, e);
    if (st) return st;

    /* The arena no longer moves: turn name offsets into pointers (design note 3). */
    const char *names = ctx->names.p;
    kv_rec *kvs = ctx->kvs.p;
    for (size_t i = 0; i < ctx->kvs.n; i++) {
        kvs[i].v.key = names + kvs[i].key_off;
        if (kvs[i].offs_start != SIZE_MAX && kvs[i].v.n_elems > 0)
            kvs[i].v.elem_off = (const uint64_t *)ctx->elem_offs.p + kvs[i].offs_start;
    }
    gguf_tensor *ts = ctx->tensors.p;
    for (size_t i = 0; i < ctx->tensors.n; i++) ts[i].name = names + (uintptr_t)ts[i].name;

    uint32_t d1, d2;
    st = htab_build(ctx, &ctx->key_index, kv_name, (uint32_t)ctx->kvs.n, &d1, &d2);
    if (st == DS4_ERR_FORMAT)
        return ds4_seterr(e, st, "gguf: key #%u '%s' duplicates key #%u", d2, kv_name(ctx, d2), d1);
    if (st) return ds4_seterr(e, st, "gguf: out of memory indexing keys");
    st = htab_build(ctx, &ctx->tensor_index, tensor_name, (uint32_t)ctx->tensors.n, &d1, &d2);
    if (st == DS4_ERR_FORMAT)
        return ds4_seterr(e, st, "gguf: tensor #%u '%s' duplicates tensor #%u", d2,
                          tensor_name(ctx, d2), d1);
    if (st) return ds4_seterr(e, st, "gguf: out of memory indexing tensors");

    if ((st = read_alignment(ctx, e))) return st;
    if (!ds4_align_up_u64(&ctx->data_offset, c.pos, ctx->alignment))
        return ds4_seterr(e, DS4_ERR_FORMAT, "gguf: data offset overflows");
    return place_tensors(ctx, e);
}

static ds4_status open_common(gguf_ctx *ctx, gguf_ctx **out, ds4_error *err) {
    ds4_error local;
    ds4_error *e = err ? err : &local;
    ds4_status st = parse(ctx, e);
    if (st) {
        gguf_close(ctx);
        return st;
    }
    *out = ctx;
    return DS4_OK;
}

ds4_status gguf_open_mem(gguf_ctx **out, const void *data, uint64_t n_bytes, ds4_error *err) {
    *out = NULL;
    if (!data && n_bytes) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "gguf: NULL buffer");
    gguf_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return ds4_seterr(err, DS4_ERR_NOMEM, "gguf: out of memory");
    ctx->base = data;
    ctx->size = n_bytes;
    return open_common(ctx, out, err);
}

ds4_status gguf_open(gguf_ctx **out, const char *path, ds4_error *err) {
    *out = NULL;
    gguf_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return ds4_seterr(err, DS4_ERR_NOMEM, "gguf: out of memory");
    ds4_status st = ds4_mapfile_open(&ctx->map, path, err);
    if (st) {
        free(ctx);
        return st;
    }
    ctx->owns_map = true;
    ctx->base = ctx->map.data;
    ctx->size = ctx->map.size_bytes;
    st = open_common(ctx, out, err);
    if (st && err) ds4_err_prefix(err, "%s", path);
    return st;
}

/* ---- File and index accessors -------------------------------------------------------------- */

uint32_t gguf_version(const gguf_ctx *ctx) { return ctx->version; }
uint64_t gguf_file_bytes(const gguf_ctx *ctx) { return ctx->size; }
const uint8_t *gguf_file_base(const gguf_ctx *ctx) { return ctx->base; }
uint32_t gguf_alignment(const gguf_ctx *ctx) { return ctx->alignment; }
uint64_t gguf_data_offset(const gguf_ctx *ctx) { return ctx->data_offset; }
uint64_t gguf_n_kv(const gguf_ctx *ctx) { return ctx->kvs.n; }
uint64_t gguf_n_tensors(const gguf_ctx *ctx) { return ctx->tensors.n; }

const char *gguf_kv_key(const gguf_ctx *ctx, uint64_t i) {
    return i < ctx->kvs.n ? ((const kv_rec *)ctx->kvs.p)[i].v.key : NULL;
}

const gguf_value *gguf_kv_value(const gguf_ctx *ctx, uint64_t i) {
    return i < ctx->kvs.n ? &((const kv_rec *)ctx->kvs.p)[i].v : NULL;
}

int64_t gguf_find_key(const gguf_ctx *ctx, const char *key) {
    return htab_find(ctx, &ctx->key_index, kv_name, key);
}

const gguf_value *gguf_find_value(const gguf_ctx *ctx, const char *key) {
    int64_t i = gguf_find_key(ctx, key);
    return i < 0 ? NULL : gguf_kv_value(ctx, (uint64_t)i);
}

const gguf_tensor *gguf_tensor_at(const gguf_ctx *ctx, uint64_t i) {
    return i < ctx->tensors.n ? &((const gguf_tensor *)ctx->tensors.p)[i] : NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_ctx *ctx, const char *name) {
    int64_t i = htab_find(ctx, &ctx->tensor_index, tensor_name, name);
    return i < 0 ? NULL : gguf_tensor_at(ctx, (uint64_t)i);
}

ds4_status gguf_get_tensor(const gguf_ctx *ctx, const char *name, const gguf_tensor **out,
                           ds4_error *err) {
    *out = gguf_find_tensor(ctx, name);
    if (!*out) return ds4_seterr(err, DS4_ERR_NOT_FOUND, "gguf: tensor '%s' not found", name);
    return DS4_OK;
}

/* ---- Typed values -------------------------------------------------------------------------- */

static ds4_status type_err(const gguf_value *v, const char *expected, ds4_error *err) {
    return ds4_seterr(err, DS4_ERR_FORMAT, "gguf: key '%s': expected %s, got %s",
                      v->key ? v->key : "?", expected, gguf_vtype_name(v->type));
}

static float f32_of_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static double f64_of_bits(uint64_t u) {
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

ds4_status gguf_value_u32(const gguf_value *v, uint32_t *out, ds4_error *err) {
    if (v->type != GGUF_TYPE_UINT32) return type_err(v, "UINT32", err);
    *out = rd_le32(v->raw);
    return DS4_OK;
}

ds4_status gguf_value_i32(const gguf_value *v, int32_t *out, ds4_error *err) {
    if (v->type != GGUF_TYPE_INT32) return type_err(v, "INT32", err);
    *out = (int32_t)rd_le32(v->raw);
    return DS4_OK;
}

ds4_status gguf_value_u64(const gguf_value *v, uint64_t *out, ds4_error *err) {
    if (v->type == GGUF_TYPE_UINT64) *out = rd_le64(v->raw);
    else if (v->type == GGUF_TYPE_UINT32) *out = rd_le32(v->raw);
    else return type_err(v, "UINT64 or UINT32", err);
    return DS4_OK;
}

ds4_status gguf_value_i64(const gguf_value *v, int64_t *out, ds4_error *err) {
    if (v->type == GGUF_TYPE_INT64) *out = (int64_t)rd_le64(v->raw);
    else if (v->type == GGUF_TYPE_INT32) *out = (int32_t)rd_le32(v->raw);
    else return type_err(v, "INT64 or INT32", err);
    return DS4_OK;
}

/* GGUF_LAYOUT §2.1: the float keys accept FLOAT32, FLOAT64, UINT32 or INT32. */
ds4_status gguf_value_f64(const gguf_value *v, double *out, ds4_error *err) {
    switch (v->type) {
    case GGUF_TYPE_FLOAT32: *out = f32_of_bits(rd_le32(v->raw)); return DS4_OK;
    case GGUF_TYPE_FLOAT64: *out = f64_of_bits(rd_le64(v->raw)); return DS4_OK;
    case GGUF_TYPE_UINT32: *out = rd_le32(v->raw); return DS4_OK;
    case GGUF_TYPE_INT32: *out = (int32_t)rd_le32(v->raw); return DS4_OK;
    default: return type_err(v, "FLOAT32, FLOAT64, UINT32 or INT32", err);
    }
}

ds4_status gguf_value_f32(const gguf_value *v, float *out, ds4_error *err) {
    if (v->type == GGUF_TYPE_FLOAT32) { /* exact, no round trip through double needed */
        *out = f32_of_bits(rd_le32(v->raw));
        return DS4_OK;
    }
    double d;
    ds4_status st = gguf_value_f64(v, &d, err);
    if (st) return st;
    *out = (float)d;
    return DS4_OK;
}

ds4_status gguf_value_bool(const gguf_value *v, bool *out, ds4_error *err) {
    if (v->type != GGUF_TYPE_BOOL) return type_err(v, "BOOL", err);
    *out = v->raw[0] != 0;  /* GGUF_LAYOUT §1.2: non-zero = true */
    return DS4_OK;
}

ds4_status gguf_value_str(const gguf_value *v, gguf_str *out, ds4_error *err) {
    if (v->type != GGUF_TYPE_STRING) return type_err(v, "STRING", err);
    out->len = rd_le64(v->raw);
    out->ptr = (const char *)v->raw + 8;
    return DS4_OK;
}

static ds4_status find_or_err(const gguf_ctx *ctx, const char *key, const gguf_value **v,
                              ds4_error *err) {
    *v = gguf_find_value(ctx, key);
    if (!*v) return ds4_seterr(err, DS4_ERR_NOT_FOUND, "gguf: key '%s' not found", key);
    return DS4_OK;
}

#define GETTER(name, ctype)                                                                 \
    ds4_status gguf_get_##name(const gguf_ctx *ctx, const char *key, ctype *out,           \
                               ds4_error *err) {                                            \
        const gguf_value *v;                                                                \
        ds4_status st = find_or_err(ctx, key, &v, err);                                     \
        return st ? st : gguf_value_##name(v, out, err);                                    \
    }
GETTER(u32, uint32_t)
GETTER(i32, int32_t)
GETTER(u64, uint64_t)
GETTER(i64, int64_t)
GETTER(f32, float)
GETTER(f64, double)
GETTER(bool, bool)
GETTER(str, gguf_str)
#undef GETTER

ds4_status gguf_get_arr(const gguf_ctx *ctx, const char *key, const gguf_value **out,
                        ds4_error *err) {
    ds4_status st = find_or_err(ctx, key, out, err);
    if (st) return st;
    if ((*out)->type != GGUF_TYPE_ARRAY) {
        st = type_err(*out, "ARRAY", err);
        *out = NULL;
    }
    return st;
}

ds4_status gguf_str_dup(gguf_str s, char **out, ds4_error *err) {
    *out = NULL;
    if (s.len && memchr(s.ptr, 0, (size_t)s.len))
        return ds4_seterr(err, DS4_ERR_FORMAT, "gguf: string of %llu bytes contains a NUL byte",
                          (unsigned long long)s.len);
    if (s.len >= SIZE_MAX) return ds4_seterr(err, DS4_ERR_NOMEM, "gguf: string too long");
    char *p = malloc((size_t)s.len + 1);
    if (!p) return ds4_seterr(err, DS4_ERR_NOMEM, "gguf: out of memory copying a %llu-byte string",
                              (unsigned long long)s.len);
    if (s.len) memcpy(p, s.ptr, (size_t)s.len);
    p[s.len] = '\0';
    *out = p;
    return DS4_OK;
}

bool gguf_str_eq(gguf_str v, const char *s) {
    size_t n = strlen(s);
    return v.len == n && (n == 0 || memcmp(v.ptr, s, n) == 0);
}

/* ---- Arrays -------------------------------------------------------------------------------- */

ds4_status gguf_arr_elem(const gguf_value *arr, uint64_t i, gguf_value *out, ds4_error *err) {
    if (arr->type != GGUF_TYPE_ARRAY) return type_err(arr, "ARRAY", err);
    if (i >= arr->n_elems)
        return ds4_seterr(err, DS4_ERR_RANGE, "gguf: key '%s': index %llu out of range (%llu elements)",
                          arr->key ? arr->key : "?", (unsigned long long)i,
                          (unsigned long long)arr->n_elems);
    uint32_t et = arr->elem_type, esz = vtype_sizes[et];
    if (esz) {
        value_fill(out, arr->key, et, arr->elems + i * esz, esz);
        return DS4_OK;
    }
    /* Variable-size elements: the bytes were validated at open, so these walks cannot fail;
     * they still run bounds-checked against the array's own extent. */
    ds4_error local;
    cur c = {arr->elems, (uint64_t)(arr->raw + arr->raw_bytes - arr->elems), 0};
    if (arr->elem_off) {
        c.pos = arr->elem_off[i];
    } else {
        for (uint64_t k = 0; k < i; k++)
            if (walk_value(&c, et, 0, NULL, &local))
                return ds4_seterr(err, DS4_ERR_INTERNAL, "gguf: key '%s': array walk failed",
                                  arr->key ? arr->key : "?");
    }
    uint64_t start = c.pos;
    if (walk_value(&c, et, 0, NULL, &local))
        return ds4_seterr(err, DS4_ERR_INTERNAL, "gguf: key '%s': array walk failed",
                          arr->key ? arr->key : "?");
    value_fill(out, arr->key, et, arr->elems + start, c.pos - start);
    return DS4_OK;
}

static ds4_status elem_type_err(const gguf_value *arr, const char *expected, ds4_error *err) {
    return ds4_seterr(err, DS4_ERR_FORMAT, "gguf: key '%s': expected array of %s, got %s of %s",
                      arr->key ? arr->key : "?", expected, gguf_vtype_name(arr->type),
                      arr->type == GGUF_TYPE_ARRAY ? gguf_vtype_name(arr->elem_type) : "-");
}

/* The typed getters' shared front: the array must hold elements of type a or b (pass the same
 * type twice for one), else the error names `expected`; then element i is fetched. */
static ds4_status typed_elem(const gguf_value *arr, uint64_t i, uint32_t a, uint32_t b,
                             const char *expected, gguf_value *v, ds4_error *err) {
    if (arr->type != GGUF_TYPE_ARRAY || (arr->elem_type != a && arr->elem_type != b))
        return elem_type_err(arr, expected, err);
    return gguf_arr_elem(arr, i, v, err);
}

ds4_status gguf_arr_u32(const gguf_value *arr, uint64_t i, uint32_t *out, ds4_error *err) {
    gguf_value v;
    ds4_status st = typed_elem(arr, i, GGUF_TYPE_UINT32, GGUF_TYPE_INT32, "UINT32 or INT32", &v, err);
    if (st) return st;
    uint32_t u = rd_le32(v.raw);
    /* GGUF_LAYOUT §2.1: INT32 compress_ratios must be non-negative. */
    if (v.type == GGUF_TYPE_INT32 && (int32_t)u < 0)
        return ds4_seterr(err, DS4_ERR_FORMAT, "gguf: key '%s': element %llu is negative (%d)",
                          arr->key ? arr->key : "?", (unsigned long long)i, (int32_t)u);
    *out = u;
    return DS4_OK;
}

ds4_status gguf_arr_i32(const gguf_value *arr, uint64_t i, int32_t *out, ds4_error *err) {
    gguf_value v;
    ds4_status st = typed_elem(arr, i, GGUF_TYPE_UINT32, GGUF_TYPE_INT32, "INT32 or UINT32", &v, err);
    if (st) return st;
    uint32_t u = rd_le32(v.raw);
    if (v.type == GGUF_TYPE_UINT32 && u > INT32_MAX)
        return ds4_seterr(err, DS4_ERR_FORMAT, "gguf: key '%s': element %llu (%u) exceeds INT32_MAX",
                          arr->key ? arr->key : "?", (unsigned long long)i, u);
    *out = (int32_t)u;
    return DS4_OK;
}

ds4_status gguf_arr_f64(const gguf_value *arr, uint64_t i, double *out, ds4_error *err) {
    gguf_value v;
    ds4_status st = typed_elem(arr, i, GGUF_TYPE_FLOAT32, GGUF_TYPE_FLOAT64, "FLOAT32 or FLOAT64", &v, err);
    if (st) return st;
    return gguf_value_f64(&v, out, err);
}

ds4_status gguf_arr_f32(const gguf_value *arr, uint64_t i, float *out, ds4_error *err) {
    gguf_value v;
    ds4_status st = typed_elem(arr, i, GGUF_TYPE_FLOAT32, GGUF_TYPE_FLOAT64, "FLOAT32 or FLOAT64", &v, err);
    if (st) return st;
    return gguf_value_f32(&v, out, err);
}

ds4_status gguf_arr_str(const gguf_value *arr, uint64_t i, gguf_str *out, ds4_error *err) {
    gguf_value v;
    ds4_status st = typed_elem(arr, i, GGUF_TYPE_STRING, GGUF_TYPE_STRING, "STRING", &v, err);
    if (st) return st;
    return gguf_value_str(&v, out, err);
}

ds4_status gguf_arr_raw(const gguf_value *arr, const void **out, uint64_t *out_bytes,
                        ds4_error *err) {
    if (arr->type != GGUF_TYPE_ARRAY || vtype_sizes[arr->elem_type] == 0)
        return elem_type_err(arr, "numbers", err);
    *out = arr->elems;
    *out_bytes = arr->n_elems * vtype_sizes[arr->elem_type];
    return DS4_OK;
}
