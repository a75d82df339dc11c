/*
 * format/gguf_write.c — streaming GGUF v3 writer (GGUF_LAYOUT §1, §5.4). Keeps the encoded
 * metadata records and the tensor directory in memory, never tensor data; knows nothing about
 * DeepSeek or quantization.
 *
 * Design notes:
 *  1. State machine: ADDING (records, then tensors) -> write_header -> STREAMING (tensor bytes
 *     in directory order) -> finish -> DONE. Any I/O error moves to FAILED; from there only
 *     gguf_writer_free is useful.
 *  2. Tensor offsets are fixed when each tensor is added (previous end rounded up to the
 *     alignment), so the directory can be written before any data exists. "general.alignment"
 *     therefore has to be added before the first tensor.
 *  3. The file is written to "<path>.tmp.<pid>" and renamed only after fsync, so a crash never
 *     leaves a half-written file under the final name.
 *  4. Every record goes through add_record, which validates what the reader validates, so a
 *     file this writer finishes always opens with format/gguf.h.
 */
#include "format/gguf_write.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/safemath.h"

enum { W_ADDING, W_STREAMING, W_DONE, W_FAILED };

typedef struct wtensor {
    char *name;
    uint32_t type, n_dims;
    uint64_t ne[DS4_MAX_DIMS];
    uint64_t n_bytes, offset;
} wtensor;

typedef struct bytebuf {
    uint8_t *p;
    size_t n, cap;
} bytebuf;

struct gguf_writer {
    char *path, *tmp_path;        /* NULL for the memory writer */
    FILE *f;
    bytebuf mem;                  /* memory writer output */
    int state;
    uint32_t alignment;
    bytebuf kv;                   /* encoded metadata records, in order */
    char **keys;                  /* for uniqueness checks */
    uint64_t n_kv, keys_cap;
    wtensor *tensors;
    uint64_t n_tensors, tensors_cap;
    uint64_t data_end;            /* end of the last tensor, relative to the data region */
    uint64_t cur, cur_written;    /* tensor being streamed, bytes it has so far */
    uint64_t data_pos;            /* bytes written into the data region */
};

static const char *wname(const gguf_writer *w) { return w->path ? w->path : "<memory>"; }

static bool buf_put(bytebuf *b, const void *data, size_t n) {
    if (n > SIZE_MAX - b->n) return false;
    if (b->n + n > b->cap) {
        size_t ncap = b->cap ? b->cap : 4096;
        while (ncap < b->n + n) {
            if (ncap > SIZE_MAX / 2) return false;
            ncap *= 2;
        }
        uint8_t *np = realloc(b->p, ncap);
        if (!np) return false;
        b->p = np;
        b->cap = ncap;
    }
    if (n) memcpy(b->p + b->n, data, n);
    b->n += n;
    return true;
}

static void le_store(uint8_t *dst, uint64_t v, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) dst[i] = (uint8_t)(v >> (8 * i));
}

static bool buf_le(bytebuf *b, uint64_t v, uint32_t n) {
    uint8_t tmp[8];
    le_store(tmp, v, n);
    return buf_put(b, tmp, n);
}

/* ---- Lifetime ------------------------------------------------------------------------------- */

static ds4_status writer_alloc(gguf_writer **out, ds4_error *err) {
    *out = calloc(1, sizeof **out);
    if (!*out) return ds4_seterr(err, DS4_ERR_NOMEM, "gguf_write: out of memory");
    (*out)->alignment = GGUF_DEFAULT_ALIGNMENT;
    (*out)->state = W_ADDING;
    return DS4_OK;
}

ds4_status gguf_writer_create_mem(gguf_writer **out, ds4_error *err) {
    return writer_alloc(out, err);
}

ds4_status gguf_writer_create(gguf_writer **out, const char *path, ds4_error *err) {
    ds4_status st = writer_alloc(out, err);
    if (st) return st;
    gguf_writer *w = *out;
    size_t n = strlen(path) + 32;
    w->path = strdup(path);
    w->tmp_path = malloc(n);
    if (!w->path || !w->tmp_path) {
        st = ds4_seterr(err, DS4_ERR_NOMEM, "gguf_write: %s: out of memory", path);
        goto out_free_writer;
    }
    snprintf(w->tmp_path, n, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(w->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        st = ds4_seterr(err, DS4_ERR_IO, "gguf_write: %s: cannot create: %s", w->tmp_path,
                        strerror(errno));
        goto out_free_writer;
    }
    w->f = fdopen(fd, "wb");
    if (!w->f) {
        st = ds4_seterr(err, DS4_ERR_IO, "gguf_write: %s: %s", w->tmp_path, strerror(errno));
        close(fd);
        unlink(w->tmp_path);
        goto out_free_writer;
    }
    /* Large sequential writes: tensors arrive in multi-megabyte chunks. */
    setvbuf(w->f, NULL, _IOFBF, 1 << 22);
    return DS4_OK;
out_free_writer:
    free(w->path);
    free(w->tmp_path);
    free(w);
    *out = NULL;
    return st;
}

void gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    if (w->f) fclose(w->f);
    if (w->tmp_path && w->state != W_DONE) unlink(w->tmp_path);
    for (uint64_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
    free(w->keys);
    for (uint64_t i = 0; i < w->n_tensors; i++) free(w->tensors[i].name);
    free(w->tensors);
    free(w->kv.p);
    free(w->mem.p);
    free(w->path);
    free(w->tmp_path);
    free(w);
}

/* ---- Metadata ------------------------------------------------------------------------------- */

static ds4_status check_adding(const gguf_writer *w, const char *what, ds4_error *err) {
    if (w->state == W_ADDING) return DS4_OK;
    return ds4_seterr(err, DS4_ERR_STATE, "gguf_write: %s: %s after the header was written",
                      wname(w), what);
}

static ds4_status check_name(const gguf_writer *w, const char *what, const char *name,
                             ds4_error *err) {
    if (!name || !*name)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "gguf_write: %s: empty %s", wname(w), what);
    if (!gguf_utf8_valid(name, strlen(name)))
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "gguf_write: %s: %s is not valid UTF-8",
                          wname(w), what);
    return DS4_OK;
}

/* Design note 4: the one door for records. `enc` is the value encoding after the type id. */
static ds4_status add_record(gguf_writer *w, const char *key, uint32_t type, const void *enc,
                             uint64_t n_bytes, ds4_error *err) {
    ds4_status st = check_adding(w, "metadata added", err);
    if (st) return st;
    if ((st = check_name(w, "key", key, err))) return st;
    for (uint64_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->keys[i], key) == 0)
            return ds4_seterr(err, DS4_ERR_INVALID_ARG, "gguf_write: %s: duplicate key '%s'",
                              wname(w), key);
    if ((st = gguf_value_check(type, enc, n_bytes, err)))
        return ds4_err_prefix(err, "gguf_write: %s: key '%s'", wname(w), key);
    if (strcmp(key, "general.alignment") == 0) {
        /* GGUF_LAYOUT §1.4 and gguf.h contract #5: UINT32, non-zero power of two. */
        const uint8_t *b = enc;
        uint32_t a = type == GGUF_TYPE_UINT32
                         ? (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                               (uint32_t)b[3] << 24
                         : 0;
        if (type != GGUF_TYPE_UINT32 || a == 0 || (a & (a - 1)))
            return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                              "gguf_write: %s: key 'general.alignment' must be a UINT32 non-zero "
                              "power of two", wname(w));
        if (w->n_tensors)
            return ds4_seterr(err, DS4_ERR_STATE,
                              "gguf_write: %s: key 'general.alignment' added after tensors",
                              wname(w));
        w->alignment = a;
    }
    if (w->n_kv == w->keys_cap) {
        uint64_t ncap = w->keys_cap ? w->keys_cap * 2 : 32;
        char **nk = realloc(w->keys, ncap * sizeof *nk);
        if (!nk) goto out_nomem;
        w->keys = nk;
        w->keys_cap = ncap;
    }
    size_t klen = strlen(key);
    char *kcopy = strdup(key);
    if (!kcopy) goto out_nomem;
    size_t mark = w->kv.n;
    if (!buf_le(&w->kv, klen, 8) || !buf_put(&w->kv, key, klen) || !buf_le(&w->kv, type, 4) ||
        n_bytes > SIZE_MAX || !buf_put(&w->kv, enc, (size_t)n_bytes)) {
        w->kv.n = mark;
        free(kcopy);
        goto out_nomem;
    }
    w->keys[w->n_kv++] = kcopy;
    return DS4_OK;
out_nomem:
    return ds4_seterr(err, DS4_ERR_NOMEM, "gguf_write: %s: out of memory adding key '%s'",
                      wname(w), key);
}

static ds4_status add_scalar(gguf_writer *w, const char *key, uint32_t type, uint64_t bits,
                             ds4_error *err) {
    uint8_t enc[8];
    uint32_t n = gguf_vtype_size(type);
    le_store(enc, bits, n);
    return add_record(w, key, type, enc, n, err);
}

ds4_status gguf_writer_add_u8(gguf_writer *w, const char *key, uint8_t v, ds4_error *err) {
    return add_scalar(w, key, GGUF_TYPE_UINT8, v, err);
}
ds4_status gguf_writer_add_i8(gguf_writer *w, const char *key, int8_t v, ds4_error *err) {
    return add_scalar(w, key, GGUF_TYPE_INT8, (uint8_t)v, err);
}
ds4_status gguf_writer_add_u16(gguf_writer *w, const char *key, uint16_t v, ds4_error *err) {
    return add_scalar(w, key, GGUF_TYPE_UINT16, v, err);
}
ds4_status gguf_writer_add_i16(gguf_writer *w, const char *key, int16_t v, ds4_error *err) {
    return add_scalar(w, key, GGUF_TYPE_INT16, (uint16_t)v, err);
}
ds4_status gguf_writer_add_u32(gguf_writer *w, const char *key, uint32_t v, ds4_error *err) {
    return add_scalar(w, key, GGUF_TYPE_UINT32, v, err);
}
ds4_status gguf_writer_add_i32(gguf_writer *w, const char *key, int32_t v, ds4_error *err) {
    return add_scalar(w, key, GGUF_TYPE_INT32, (uint32_t)v, err);
}
ds4_status gguf_writer_add_f32(gguf_writer *w, const char *key, float v, ds4_error *err) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    return add_scalar(w, key, GGUF_TYPE_FLOAT32, bits, err);
}
ds4_status gguf_writer_add_bool(gguf_writer *w, const char *key, bool v, ds4_error *err) {
    return add_scalar(w, key, GGUF_TYPE_BOOL, v ? 1 : 0, err);
}
ds4_status gguf_writer_add_u64(gguf_writer *w, const char *key, uint64_t v, ds4_error *err) {
    return add_scalar(w, key, GGUF_TYPE_UINT64, v, err);
}
ds4_status gguf_writer_add_i64(gguf_writer *w, const char *key, int64_t v, ds4_error *err) {
    return add_scalar(w, key, GGUF_TYPE_INT64, (uint64_t)v, err);
}
ds4_status gguf_writer_add_f64(gguf_writer *w, const char *key, double v, ds4_error *err) {
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    return add_scalar(w, key, GGUF_TYPE_FLOAT64, bits, err);
}

ds4_status gguf_writer_add_strn(gguf_writer *w, const char *key, const char *s, uint64_t len,
                                ds4_error *err) {
    if (!s && len) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "gguf_write: %s: key '%s': NULL string",
                                     wname(w), key ? key : "");
    bytebuf b = {0};
    ds4_status st;
    if (len > SIZE_MAX - 8 || !buf_le(&b, len, 8) || !buf_put(&b, s, (size_t)len))
        st = ds4_seterr(err, DS4_ERR_NOMEM, "gguf_write: %s: out of memory", wname(w));
    else
        st = add_record(w, key, GGUF_TYPE_STRING, b.p, b.n, err);
    free(b.p);
    return st;
}

ds4_status gguf_writer_add_str(gguf_writer *w, const char *key, const char *s, ds4_error *err) {
    if (!s) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "gguf_write: %s: key '%s': NULL string",
                              wname(w), key ? key : "");
    return gguf_writer_add_strn(w, key, s, strlen(s), err);
}

ds4_status gguf_writer_add_arr(gguf_writer *w, const char *key, uint32_t elem_type,
                               const void *data, uint64_t n, ds4_error *err) {
    uint32_t esz = gguf_vtype_size(elem_type);
    if (esz == 0)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                          "gguf_write: %s: key '%s': add_arr takes numbers, not %s", wname(w),
                          key ? key : "", gguf_vtype_name(elem_type));
    if (!data && n)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "gguf_write: %s: key '%s': NULL array",
                          wname(w), key ? key : "");
    bytebuf b = {0};
    ds4_status st = DS4_OK;
    uint64_t total;
    if (!ds4_mul_u64(&total, n, esz) || total > SIZE_MAX - 12 || !buf_le(&b, elem_type, 4) ||
        !buf_le(&b, n, 8)) {
        st = ds4_seterr(err, DS4_ERR_NOMEM, "gguf_write: %s: key '%s': array too large",
                        wname(w), key ? key : "");
        goto out_free_buf;
    }
    /* Host-order elements -> little-endian encoding. */
    const uint8_t *src = data;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t v = 0;
        switch (esz) {
        case 1: v = src[i]; break;
        case 2: { uint16_t x; memcpy(&x, src + 2 * i, 2); v = x; break; }
        case 4: { uint32_t x; memcpy(&x, src + 4 * i, 4); v = x; break; }
        default: memcpy(&v, src + 8 * i, 8); break;
        }
        if (!buf_le(&b, v, esz)) {
            st = ds4_seterr(err, DS4_ERR_NOMEM, "gguf_write: %s: out of memory", wname(w));
            goto out_free_buf;
        }
    }
    st = add_record(w, key, GGUF_TYPE_ARRAY, b.p, b.n, err);
out_free_buf:
    free(b.p);
    return st;
}

ds4_status gguf_writer_add_arr_strv(gguf_writer *w, const char *key, const gguf_str *strs,
                                    uint64_t n, ds4_error *err) {
    if (!strs && n)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "gguf_write: %s: key '%s': NULL array",
                          wname(w), key ? key : "");
    bytebuf b = {0};
    ds4_status st = DS4_OK;
    bool ok = buf_le(&b, GGUF_TYPE_STRING, 4) && buf_le(&b, n, 8);
    for (uint64_t i = 0; ok && i < n; i++) {
        if (!strs[i].ptr && strs[i].len) {
            st = ds4_seterr(err, DS4_ERR_INVALID_ARG,
                            "gguf_write: %s: key '%s': element %llu is NULL", wname(w),
                            key ? key : "", (unsigned long long)i);
            goto out_free_buf;
        }
        ok = strs[i].len <= SIZE_MAX && buf_le(&b, strs[i].len, 8) &&
             buf_put(&b, strs[i].ptr, (size_t)strs[i].len);
    }
    if (!ok) {
        st = ds4_seterr(err, DS4_ERR_NOMEM, "gguf_write: %s: key '%s': out of memory", wname(w),
                        key ? key : "");
        goto out_free_buf;
    }
    st = add_record(w, key, GGUF_TYPE_ARRAY, b.p, b.n, err);
out_free_buf:
    free(b.p);
    return st;
}

ds4_status gguf_writer_add_arr_str(gguf_writer *w, const char *key, const char *const *strs,
                                   uint64_t n, ds4_error *err) {
    if (!strs && n)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "gguf_write: %s: key '%s': NULL array",
                          wname(w), key ? key : "");
    if (n > SIZE_MAX / sizeof(gguf_str))
        return ds4_seterr(err, DS4_ERR_NOMEM, "gguf_write: %s: out of memory", wname(w));
    gguf_str *v = malloc((n ? (size_t)n : 1) * sizeof *v);
    if (!v) return ds4_seterr(err, DS4_ERR_NOMEM, "gguf_write: %s: out of memory", wname(w));
    ds4_status st = DS4_OK;
    for (uint64_t i = 0; i < n; i++) {
        if (!strs[i]) {
            st = ds4_seterr(err, DS4_ERR_INVALID_ARG,
                            "gguf_write: %s: key '%s': element %llu is NULL", wname(w),
                            key ? key : "", (unsigned long long)i);
            goto out_free_views;
        }
        v[i] = (gguf_str){strs[i], strlen(strs[i])};
    }
    st = gguf_writer_add_arr_strv(w, key, v, n, err);
out_free_views:
    free(v);
    return st;
}

ds4_status gguf_writer_add_raw(gguf_writer *w, const char *key, uint32_t type,
                               const void *encoded, uint64_t n_bytes, ds4_error *err) {
    return add_record(w, key, type, encoded, n_bytes, err);
}

ds4_status gguf_writer_add_value(gguf_writer *w, const char *key, const gguf_value *v,
                                 ds4_error *err) {
    if (!v) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "gguf_write: %s: NULL value", wname(w));
    return add_record(w, key, v->type, v->raw, v->raw_bytes, err);
}

/* ---- Tensor directory ----------------------------------------------------------------------- */

ds4_status gguf_writer_add_tensor(gguf_writer *w, const char *name, uint32_t type,
                                  uint32_t n_dims, const uint64_t *ne, ds4_error *err) {
    ds4_status st = check_adding(w, "tensor added", err);
    if (st) return st;
    if ((st = check_name(w, "tensor name", name, err))) return st;
    for (uint64_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return ds4_seterr(err, DS4_ERR_INVALID_ARG, "gguf_write: %s: duplicate tensor '%s'",
                              wname(w), name);
    if (w->n_tensors >= 0xFFFFFFF0u)
        return ds4_seterr(err, DS4_ERR_RANGE, "gguf_write: %s: too many tensors", wname(w));
    if (!ne || n_dims < 1 || n_dims > DS4_MAX_DIMS)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                          "gguf_write: %s: tensor '%s': n_dims %u outside 1..%d", wname(w), name,
                          n_dims, DS4_MAX_DIMS);
    wtensor t = {0};
    t.type = type;
    t.n_dims = n_dims;
    for (uint32_t d = 0; d < DS4_MAX_DIMS; d++) t.ne[d] = d < n_dims ? ne[d] : 1;
    if ((st = ds4_tensor_bytes(type, t.ne, n_dims, &t.n_bytes, err))) {
        /* A bad shape here is the caller's mistake, not a malformed file. */
        if (st == DS4_ERR_FORMAT) st = DS4_ERR_INVALID_ARG;
        if (err) {
            err->code = st;
            ds4_err_prefix(err, "gguf_write: %s: tensor '%s'", wname(w), name);
        }
        return st;
    }
    /* Design note 2: offset = previous end rounded up (GGUF_LAYOUT §1.4). */
    uint64_t end;
    if (!ds4_align_up_u64(&t.offset, w->data_end, w->alignment) ||
        !ds4_add_u64(&end, t.offset, t.n_bytes))
        return ds4_seterr(err, DS4_ERR_RANGE, "gguf_write: %s: tensor '%s': data offset overflows",
                          wname(w), name);
    if (w->n_tensors == w->tensors_cap) {
        uint64_t ncap = w->tensors_cap ? w->tensors_cap * 2 : 64;
        wtensor *nt = realloc(w->tensors, ncap * sizeof *nt);
        if (!nt) goto out_nomem;
        w->tensors = nt;
        w->tensors_cap = ncap;
    }
    if (!(t.name = strdup(name))) goto out_nomem;
    w->tensors[w->n_tensors++] = t;
    w->data_end = end;
    return DS4_OK;
out_nomem:
    return ds4_seterr(err, DS4_ERR_NOMEM, "gguf_write: %s: out of memory adding tensor '%s'",
                      wname(w), name);
}

uint64_t gguf_writer_n_tensors(const gguf_writer *w) { return w->n_tensors; }

ds4_status gguf_writer_tensor_layout(const gguf_writer *w, uint64_t i, uint64_t *n_bytes,
                                     uint64_t *offset, ds4_error *err) {
    if (i >= w->n_tensors)
        return ds4_seterr(err, DS4_ERR_RANGE, "gguf_write: %s: tensor index %llu out of range (%llu)",
                          wname(w), (unsigned long long)i, (unsigned long long)w->n_tensors);
    if (n_bytes) *n_bytes = w->tensors[i].n_bytes;
    if (offset) *offset = w->tensors[i].offset;
    return DS4_OK;
}

/* Header + records + directory, before padding. */
static bool header_bytes(const gguf_writer *w, uint64_t *out) {
    uint64_t n = 24 + w->kv.n;
    for (uint64_t i = 0; i < w->n_tensors; i++) {
        const wtensor *t = &w->tensors[i];
        if (!ds4_add_u64(&n, n, 8 + strlen(t->name) + 4 + 8ull * t->n_dims + 4 + 8)) return false;
    }
    *out = n;
    return true;
}

ds4_status gguf_writer_total_bytes(const gguf_writer *w, uint64_t *out, ds4_error *err) {
    uint64_t h, data_start, data_bytes;
    if (!header_bytes(w, &h) || !ds4_align_up_u64(&data_start, h, w->alignment) ||
        !ds4_align_up_u64(&data_bytes, w->data_end, w->alignment) ||
        !ds4_add_u64(out, data_start, data_bytes))
        return ds4_seterr(err, DS4_ERR_RANGE, "gguf_write: %s: file size overflows", wname(w));
    return DS4_OK;
}

/* ---- Output --------------------------------------------------------------------------------- */

static ds4_status sink(gguf_writer *w, const void *data, uint64_t n, ds4_error *err) {
    if (w->f) {
        if (n && fwrite(data, 1, (size_t)n, w->f) != n) {
            w->state = W_FAILED;
            return ds4_seterr(err, DS4_ERR_IO, "gguf_write: %s: write failed: %s", w->tmp_path,
                              strerror(errno));
        }
        return DS4_OK;
    }
    if (n > SIZE_MAX || !buf_put(&w->mem, data, (size_t)n)) {
        w->state = W_FAILED;
        return ds4_seterr(err, DS4_ERR_NOMEM, "gguf_write: <memory>: out of memory");
    }
    return DS4_OK;
}

static ds4_status sink_zeros(gguf_writer *w, uint64_t n, ds4_error *err) {
    static const uint8_t zeros[4096];
    while (n) {
        uint64_t k = n < sizeof zeros ? n : sizeof zeros;
        ds4_status st = sink(w, zeros, k, err);
        if (st) return st;
        n -= k;
    }
    return DS4_OK;
}

static ds4_status sink_le(gguf_writer *w, uint64_t v, uint32_t n, ds4_error *err) {
    uint8_t tmp[8];
    le_store(tmp, v, n);
    return sink(w, tmp, n, err);
}

ds4_status gguf_writer_write_header(gguf_writer *w, ds4_error *err) {
    ds4_status st = check_adding(w, "header written twice", err);
    if (st) return st;
    uint64_t h, data_start;
    if (!header_bytes(w, &h) || !ds4_align_up_u64(&data_start, h, w->alignment))
        return ds4_seterr(err, DS4_ERR_RANGE, "gguf_write: %s: header size overflows", wname(w));
    w->state = W_STREAMING;
    /* GGUF_LAYOUT §1.1 */
    if ((st = sink(w, GGUF_MAGIC, 4, err)) || (st = sink_le(w, GGUF_VERSION, 4, err)) ||
        (st = sink_le(w, w->n_tensors, 8, err)) || (st = sink_le(w, w->n_kv, 8, err)) ||
        (st = sink(w, w->kv.p, w->kv.n, err)))
        return st;
    for (uint64_t i = 0; i < w->n_tensors; i++) {   /* §1.3 */
        const wtensor *t = &w->tensors[i];
        uint64_t len = strlen(t->name);
        if ((st = sink_le(w, len, 8, err)) || (st = sink(w, t->name, len, err)) ||
            (st = sink_le(w, t->n_dims, 4, err)))
            return st;
        for (uint32_t d = 0; d < t->n_dims; d++)
            if ((st = sink_le(w, t->ne[d], 8, err))) return st;
        if ((st = sink_le(w, t->type, 4, err)) || (st = sink_le(w, t->offset, 8, err))) return st;
    }
    return sink_zeros(w, data_start - h, err);
}

ds4_status gguf_writer_write(gguf_writer *w, const void *data, uint64_t n_bytes, ds4_error *err) {
    if (w->state != W_STREAMING)
        return ds4_seterr(err, DS4_ERR_STATE, "gguf_write: %s: tensor data written %s", wname(w),
                          w->state == W_ADDING ? "before the header" : "after finish or a failure");
    if (n_bytes == 0) return DS4_OK;
    if (!data) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "gguf_write: %s: NULL data", wname(w));
    if (w->cur >= w->n_tensors)
        return ds4_seterr(err, DS4_ERR_RANGE,
                          "gguf_write: %s: %llu bytes written after all %llu tensors were complete",
                          wname(w), (unsigned long long)n_bytes, (unsigned long long)w->n_tensors);
    const wtensor *t = &w->tensors[w->cur];
    uint64_t remaining = t->n_bytes - w->cur_written;
    if (n_bytes > remaining)
        return ds4_seterr(err, DS4_ERR_RANGE,
                          "gguf_write: %s: tensor '%s': chunk of %llu bytes overruns it (%llu of "
                          "%llu bytes left)", wname(w), t->name, (unsigned long long)n_bytes,
                          (unsigned long long)remaining, (unsigned long long)t->n_bytes);
    ds4_status st = sink(w, data, n_bytes, err);
    if (st) return ds4_err_prefix(err, "tensor '%s'", t->name);
    w->cur_written += n_bytes;
    w->data_pos += n_bytes;
    if (w->cur_written == t->n_bytes) {
        /* Pad to the alignment: the next tensor's offset (design note 2), or the file end. */
        uint64_t next;
        if (!ds4_align_up_u64(&next, w->data_pos, w->alignment))
            return ds4_seterr(err, DS4_ERR_INTERNAL, "gguf_write: %s: padding overflows", wname(w));
        if (w->cur + 1 < w->n_tensors && next != w->tensors[w->cur + 1].offset) {
            w->state = W_FAILED;
            return ds4_seterr(err, DS4_ERR_INTERNAL,
                              "gguf_write: %s: tensor '%s' would start at %llu, directory says %llu",
                              wname(w), w->tensors[w->cur + 1].name, (unsigned long long)next,
                              (unsigned long long)w->tensors[w->cur + 1].offset);
        }
        if ((st = sink_zeros(w, next - w->data_pos, err))) return st;
        w->data_pos = next;
        w->cur++;
        w->cur_written = 0;
    }
    return DS4_OK;
}

ds4_status gguf_writer_write_tensor(gguf_writer *w, const char *name, const void *data,
                                    uint64_t n_bytes, ds4_error *err) {
    if (w->state == W_STREAMING && w->cur < w->n_tensors) {
        const wtensor *t = &w->tensors[w->cur];
        if (!name || strcmp(name, t->name) != 0 || w->cur_written != 0)
            return ds4_seterr(err, DS4_ERR_STATE,
                              "gguf_write: %s: tensor '%s' written, but the next tensor is '%s'%s",
                              wname(w), name ? name : "(null)", t->name,
                              w->cur_written ? " (partly written)" : "");
        if (n_bytes != t->n_bytes)
            return ds4_seterr(err, DS4_ERR_RANGE,
                              "gguf_write: %s: tensor '%s': %llu bytes given, it has %llu",
                              wname(w), name, (unsigned long long)n_bytes,
                              (unsigned long long)t->n_bytes);
    } else if (w->state == W_STREAMING) {
        return ds4_seterr(err, DS4_ERR_STATE,
                          "gguf_write: %s: tensor '%s' written after all %llu tensors",
                          wname(w), name ? name : "(null)", (unsigned long long)w->n_tensors);
    }
    return gguf_writer_write(w, data, n_bytes, err);
}

uint64_t gguf_writer_current_tensor(const gguf_writer *w) { return w->cur; }

uint64_t gguf_writer_current_remaining(const gguf_writer *w) {
    return w->cur < w->n_tensors ? w->tensors[w->cur].n_bytes - w->cur_written : 0;
}

/* fsync of the directory makes the rename itself durable. */
static ds4_status sync_dir(const gguf_writer *w, ds4_error *err) {
    char *copy = strdup(w->path);
    if (!copy) return ds4_seterr(err, DS4_ERR_NOMEM, "gguf_write: %s: out of memory", w->path);
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ds4_status st = DS4_OK;
    if (fd < 0 || fsync(fd) != 0)
        st = ds4_seterr(err, DS4_ERR_IO, "gguf_write: %s: syncing its directory: %s", w->path,
                        strerror(errno));
    if (fd >= 0) close(fd);
    free(copy);
    return st;
}

ds4_status gguf_writer_finish(gguf_writer *w, ds4_error *err) {
    if (w->state != W_STREAMING)
        return ds4_seterr(err, DS4_ERR_STATE, "gguf_write: %s: finish %s", wname(w),
                          w->state == W_ADDING ? "before the header was written"
                          : w->state == W_DONE ? "called twice" : "after a failure");
    if (w->cur < w->n_tensors) {
        const wtensor *t = &w->tensors[w->cur];
        ds4_status st = ds4_seterr(err, DS4_ERR_STATE,
                                   "gguf_write: %s: tensor '%s' (#%llu of %llu) got %llu of its "
                                   "%llu bytes", wname(w), t->name, (unsigned long long)w->cur,
                                   (unsigned long long)w->n_tensors,
                                   (unsigned long long)w->cur_written,
                                   (unsigned long long)t->n_bytes);
        w->state = W_FAILED;
        return st;
    }
    if (!w->f) {
        w->state = W_DONE;
        return DS4_OK;
    }
    w->state = W_FAILED;   /* until every step below succeeds */
    FILE *f = w->f;
    w->f = NULL;
    int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
    int e = errno;
    if (fclose(f) != 0 && !bad) {
        bad = 1;
        e = errno;
    }
    if (bad)
        return ds4_seterr(err, DS4_ERR_IO, "gguf_write: %s: flushing: %s", w->tmp_path, strerror(e));
    if (rename(w->tmp_path, w->path) != 0)
        return ds4_seterr(err, DS4_ERR_IO, "gguf_write: %s: renaming %s: %s", w->path,
                          w->tmp_path, strerror(errno));
    w->state = W_DONE;
    return sync_dir(w, err);
}

ds4_status gguf_writer_mem_data(const gguf_writer *w, const uint8_t **data, uint64_t *n_bytes,
                                ds4_error *err) {
    if (w->path || w->state != W_DONE)
        return ds4_seterr(err, DS4_ERR_STATE, "gguf_write: %s: no finished memory image",
                          wname(w));
    *data = w->mem.p;
    *n_bytes = w->mem.n;
    return DS4_OK;
}
