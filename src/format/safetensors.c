/*
 * format/safetensors.c — safetensors header parsing and shard/index validation.
 *
 * Design notes (invariants established before st_open returns DS4_OK):
 *  1. header length <= ST_MAX_HEADER_BYTES and 8 + length <= file size;
 *  2. every tensor: known dtype, <= ST_MAX_DIMS dims, shape product x dtype size == its
 *     data_offsets span (no overflow), span inside the data region;
 *  3. spans within one shard do not overlap; names are unique across all shards;
 *  4. sharded: the index's weight_map and the shards' headers list exactly the same tensors,
 *     each in the shard the index names.
 * Reads no tensor data; never prints.
 */
#include "format/safetensors.h"
#include "core/error.h"
#include "core/mapfile.h"
#include "core/safemath.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct st_file {
    int n_shards;
    ds4_mapfile *maps; /* n_shards entries; all zero for st_open_memory */
    char **shard_paths;
    st_tensor *tensors;
    size_t n_tensors, cap_tensors;
    uint32_t *slots; /* hash slots holding tensor index + 1, 0 = empty */
    size_t n_slots;
};

static const struct {
    const char *name;
    size_t size;
} dtype_info[ST_DTYPE_COUNT] = {
    [ST_F32] = {"F32", 4},     [ST_F16] = {"F16", 2},     [ST_BF16] = {"BF16", 2},
    [ST_F8_E4M3] = {"F8_E4M3", 1}, [ST_F8_E8M0] = {"F8_E8M0", 1}, [ST_I8] = {"I8", 1},
    [ST_I32] = {"I32", 4},     [ST_I64] = {"I64", 8},     [ST_U8] = {"U8", 1},
};

const char *st_dtype_name(st_dtype t) {
    return (unsigned)t < ST_DTYPE_COUNT ? dtype_info[t].name : "?";
}

size_t st_dtype_size(st_dtype t) {
    return (unsigned)t < ST_DTYPE_COUNT ? dtype_info[t].size : 0;
}

static int dtype_from_name(const char *s) {
    for (int i = 0; i < ST_DTYPE_COUNT; i++)
        if (strcmp(s, dtype_info[i].name) == 0) return i;
    return -1;
}

static uint64_t hash_name(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a 64 */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static ds4_status file_alloc(st_file **out, int n_shards, ds4_error *err) {
    st_file *f = calloc(1, sizeof *f);
    if (!f) return ds4_seterr(err, DS4_ERR_NOMEM, "safetensors: out of memory");
    f->n_shards = n_shards;
    f->maps = calloc((size_t)n_shards, sizeof *f->maps);
    f->shard_paths = calloc((size_t)n_shards, sizeof *f->shard_paths);
    if (!f->maps || !f->shard_paths) {
        st_close(f);
        return ds4_seterr(err, DS4_ERR_NOMEM, "safetensors: out of memory");
    }
    *out = f;
    return DS4_OK;
}

void st_close(st_file *f) {
    if (!f) return;
    for (size_t i = 0; i < f->n_tensors; i++) free((char *)f->tensors[i].name);
    free(f->tensors);
    free(f->slots);
    for (int s = 0; s < f->n_shards; s++) {
        if (f->maps) ds4_mapfile_close(&f->maps[s]);
        if (f->shard_paths) free(f->shard_paths[s]);
    }
    free(f->maps);
    free(f->shard_paths);
    free(f);
}

size_t st_count(const st_file *f) { return f->n_tensors; }

const st_tensor *st_get(const st_file *f, size_t i) {
    return i < f->n_tensors ? &f->tensors[i] : NULL;
}

int st_shard_count(const st_file *f) { return f->n_shards; }

const char *st_shard_path(const st_file *f, int shard) {
    return shard >= 0 && shard < f->n_shards ? f->shard_paths[shard] : NULL;
}

const st_tensor *st_find(const st_file *f, const char *name) {
    if (!f->n_slots) return NULL;
    size_t mask = f->n_slots - 1;
    for (size_t i = (size_t)hash_name(name) & mask;; i = (i + 1) & mask) {
        uint32_t v = f->slots[i];
        if (!v) return NULL;
        if (strcmp(f->tensors[v - 1].name, name) == 0) return &f->tensors[v - 1];
    }
}

/* Builds the name table; a duplicate name (across shards) is an error naming it. */
static ds4_status build_index(st_file *f, ds4_error *err) {
    size_t n = 16;
    while (n < 2 * f->n_tensors) n *= 2;
    f->slots = calloc(n, sizeof *f->slots);
    if (!f->slots) return ds4_seterr(err, DS4_ERR_NOMEM, "safetensors: out of memory");
    f->n_slots = n;
    for (size_t t = 0; t < f->n_tensors; t++) {
        const char *name = f->tensors[t].name;
        size_t i = (size_t)hash_name(name) & (n - 1);
        for (; f->slots[i]; i = (i + 1) & (n - 1)) {
            const st_tensor *o = &f->tensors[f->slots[i] - 1];
            if (strcmp(o->name, name) == 0)
                return ds4_seterr(err, DS4_ERR_FORMAT,
                                  "safetensors: tensor '%s' appears twice (%s and %s)", name,
                                  f->shard_paths[o->shard], f->shard_paths[f->tensors[t].shard]);
        }
        f->slots[i] = (uint32_t)(t + 1);
    }
    return DS4_OK;
}

static ds4_status push_tensor(st_file *f, st_tensor *t, ds4_error *err) {
    if (f->n_tensors == f->cap_tensors) {
        size_t cap = f->cap_tensors ? f->cap_tensors * 2 : 64;
        if (cap > UINT32_MAX - 1) return ds4_seterr(err, DS4_ERR_NOMEM, "safetensors: too many tensors");
        st_tensor *nt = realloc(f->tensors, cap * sizeof *nt);
        if (!nt) return ds4_seterr(err, DS4_ERR_NOMEM, "safetensors: out of memory");
        f->tensors = nt;
        f->cap_tensors = cap;
    }
    f->tensors[f->n_tensors++] = *t;
    return DS4_OK;
}

/* Reads a JSON integer that must be >= 0. */
static int json_u64(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v)) return 0;
    json_int_t x = json_integer_value(v);
    if (x < 0) return 0;
    *out = (uint64_t)x;
    return 1;
}

/* One tensor entry of a header: {"dtype": "...", "shape": [...], "data_offsets": [b, e]}. */
static ds4_status parse_entry(const char *label, const char *name, const json_t *v,
                              const uint8_t *data, uint64_t data_bytes, st_tensor *t,
                              ds4_error *err) {
    memset(t, 0, sizeof *t);
    if (!json_is_object(v))
        return ds4_seterr(err, DS4_ERR_FORMAT, "%s: tensor '%s': entry is not an object", label, name);
    const json_t *jd = json_object_get(v, "dtype");
    const json_t *js = json_object_get(v, "shape");
    const json_t *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd) || !json_is_array(js) || !json_is_array(jo))
        return ds4_seterr(err, DS4_ERR_FORMAT,
                          "%s: tensor '%s': needs string 'dtype', arrays 'shape' and 'data_offsets'",
                          label, name);
    int dt = dtype_from_name(json_string_value(jd));
    if (dt < 0)
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED,
                          "%s: tensor '%s': dtype '%.32s' is not supported (F32, F16, BF16, "
                          "F8_E4M3, F8_E8M0, I8, I32, I64, U8)",
                          label, name, json_string_value(jd));
    t->dtype = (st_dtype)dt;
    size_t nd = json_array_size(js);
    if (nd > ST_MAX_DIMS)
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED, "%s: tensor '%s': %zu dims (max %d)", label,
                          name, nd, ST_MAX_DIMS);
    t->n_dims = (int)nd;
    uint64_t n_el = 1;
    for (size_t i = 0; i < nd; i++) {
        if (!json_u64(json_array_get(js, i), &t->shape[i]))
            return ds4_seterr(err, DS4_ERR_FORMAT,
                              "%s: tensor '%s': shape[%zu] is not a non-negative integer", label,
                              name, i);
        if (!ds4_mul_u64(&n_el, n_el, t->shape[i]))
            return ds4_seterr(err, DS4_ERR_FORMAT, "%s: tensor '%s': element count overflows",
                              label, name);
    }
    t->n_elements = n_el;
    uint64_t begin, end, need;
    if (json_array_size(jo) != 2 || !json_u64(json_array_get(jo, 0), &begin) ||
        !json_u64(json_array_get(jo, 1), &end))
        return ds4_seterr(err, DS4_ERR_FORMAT,
                          "%s: tensor '%s': data_offsets must be two non-negative integers", label,
                          name);
    if (end < begin)
        return ds4_seterr(err, DS4_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] reversed",
                          label, name, (unsigned long long)begin, (unsigned long long)end);
    if (!ds4_mul_u64(&need, n_el, st_dtype_size(t->dtype)) || need != end - begin)
        return ds4_seterr(err, DS4_ERR_FORMAT,
                          "%s: tensor '%s': shape x %s needs %llu bytes, data_offsets span %llu",
                          label, name, st_dtype_name(t->dtype), (unsigned long long)need,
                          (unsigned long long)(end - begin));
    if (!ds4_range_ok(begin, end - begin, data_bytes))
        return ds4_seterr(err, DS4_ERR_FORMAT,
                          "%s: tensor '%s': data [%llu, %llu) lies outside the %llu-byte data region "
                          "(truncated file?)",
                          label, name, (unsigned long long)begin, (unsigned long long)end,
                          (unsigned long long)data_bytes);
    t->n_bytes = end - begin;
    t->data = data + begin;
    return DS4_OK;
}

static int cmp_by_data(const void *a, const void *b) {
    const st_tensor *x = a, *y = b;
    if (x->shard != y->shard) return x->shard < y->shard ? -1 : 1;
    if (x->data != y->data) return x->data < y->data ? -1 : 1;
    if (x->n_bytes != y->n_bytes) return x->n_bytes < y->n_bytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Parses the header of one shard image and appends its tensors (sorted by offset). */
static ds4_status parse_shard(st_file *f, int shard, const uint8_t *img, uint64_t size,
                              ds4_error *err) {
    const char *label = f->shard_paths[shard];
    if (size < 8)
        return ds4_seterr(err, DS4_ERR_FORMAT, "%s: %llu bytes, too short for a safetensors header",
                          label, (unsigned long long)size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | img[i];
    if (hlen > ST_MAX_HEADER_BYTES)
        return ds4_seterr(err, DS4_ERR_FORMAT, "%s: header length %llu exceeds the %u-byte limit",
                          label, (unsigned long long)hlen, ST_MAX_HEADER_BYTES);
    if (hlen < 2 || hlen > size - 8)
        return ds4_seterr(err, DS4_ERR_FORMAT,
                          "%s: header length %llu does not fit the %llu-byte file (truncated?)", label,
                          (unsigned long long)hlen, (unsigned long long)size);
    const uint8_t *data = img + 8 + hlen;
    uint64_t data_bytes = size - 8 - hlen;
    json_error_t jerr;
    json_t *root = json_loadb((const char *)img + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return ds4_seterr(err, DS4_ERR_FORMAT, "%s: header JSON: %s (line %d, column %d)", label,
                          jerr.text, jerr.line, jerr.column);
    ds4_status st = DS4_OK;
    if (!json_is_object(root)) {
        st = ds4_seterr(err, DS4_ERR_FORMAT, "%s: header JSON is not an object", label);
        goto out_free_json;
    }
    size_t first = f->n_tensors;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(v)) {
                st = ds4_seterr(err, DS4_ERR_FORMAT, "%s: __metadata__ is not an object", label);
                goto out_free_json;
            }
            continue;
        }
        if (!key[0]) {
            st = ds4_seterr(err, DS4_ERR_FORMAT, "%s: a tensor has an empty name", label);
            goto out_free_json;
        }
        st_tensor t;
        st = parse_entry(label, key, v, data, data_bytes, &t, err);
        if (st) goto out_free_json;
        t.shard = shard;
        t.name = strdup(key);
        if (!t.name) {
            st = ds4_seterr(err, DS4_ERR_NOMEM, "safetensors: out of memory");
            goto out_free_json;
        }
        st = push_tensor(f, &t, err);
        if (st) {
            free((char *)t.name);
            goto out_free_json;
        }
    }
    /* Invariant 3: sort this shard's spans and check neighbours. Empty tensors own no bytes. */
    if (f->n_tensors > first)
        qsort(f->tensors + first, f->n_tensors - first, sizeof *f->tensors, cmp_by_data);
    const st_tensor *prev = NULL;
    for (size_t i = first; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        if (!t->n_bytes) continue;
        if (prev && t->data < prev->data + prev->n_bytes) {
            st = ds4_seterr(err, DS4_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap", label,
                            prev->name, t->name);
            goto out_free_json;
        }
        prev = t;
    }
out_free_json:
    json_decref(root);
    return st;
}

ds4_status st_open_memory(st_file **out, const uint8_t *data, size_t n_bytes, ds4_error *err) {
    *out = NULL;
    st_file *f;
    ds4_status st = file_alloc(&f, 1, err);
    if (st) return st;
    f->shard_paths[0] = strdup("<memory>");
    if (!f->shard_paths[0]) {
        st_close(f);
        return ds4_seterr(err, DS4_ERR_NOMEM, "safetensors: out of memory");
    }
    st = parse_shard(f, 0, data, n_bytes, err);
    if (!st) st = build_index(f, err);
    if (st) {
        st_close(f);
        return st;
    }
    *out = f;
    return DS4_OK;
}

static ds4_status open_single(st_file **out, const char *path, ds4_error *err) {
    st_file *f;
    ds4_status st = file_alloc(&f, 1, err);
    if (st) return st;
    f->shard_paths[0] = strdup(path);
    if (!f->shard_paths[0]) {
        st = ds4_seterr(err, DS4_ERR_NOMEM, "safetensors: out of memory");
        goto out_close;
    }
    st = ds4_mapfile_open(&f->maps[0], path, err);
    if (st) goto out_close;
    st = parse_shard(f, 0, f->maps[0].data, f->maps[0].size_bytes, err);
    if (!st) st = build_index(f, err);
    if (st) goto out_close;
    *out = f;
    return DS4_OK;
out_close:
    st_close(f);
    return st;
}

static char *path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

/* A shard name from the index must be a plain file name inside the checkpoint directory. */
static int shard_name_ok(const char *s) {
    return s[0] && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static ds4_status open_index(st_file **out, const char *index_path, ds4_error *err) {
    char *text = NULL;
    uint64_t len = 0;
    ds4_status st = ds4_read_file(index_path, ST_MAX_HEADER_BYTES, &text, &len, err);
    if (st) return st;
    json_error_t jerr;
    json_t *root = json_loadb(text, (size_t)len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root)
        return ds4_seterr(err, DS4_ERR_FORMAT, "%s: JSON: %s (line %d, column %d)", index_path,
                          jerr.text, jerr.line, jerr.column);
    st_file *f = NULL;
    char *dir = NULL;
    const char **names = NULL; /* distinct shard file names, in first-seen order */
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(root) || !json_is_object(wm) || json_object_size(wm) == 0) {
        st = ds4_seterr(err, DS4_ERR_FORMAT, "%s: needs a non-empty 'weight_map' object", index_path);
        goto out_free;
    }
    size_t n_map = json_object_size(wm);
    names = calloc(n_map, sizeof *names);
    dir = dir_of(index_path);
    if (!names || !dir) {
        st = ds4_seterr(err, DS4_ERR_NOMEM, "safetensors: out of memory");
        goto out_free;
    }
    int n_shards = 0;
    const char *key;
    json_t *v;
    json_object_foreach(wm, key, v) {
        if (!json_is_string(v) || !shard_name_ok(json_string_value(v))) {
            st = ds4_seterr(err, DS4_ERR_FORMAT,
                            "%s: weight_map['%s'] must be a shard file name in the same directory",
                            index_path, key);
            goto out_free;
        }
        const char *s = json_string_value(v);
        int k = 0;
        while (k < n_shards && strcmp(names[k], s) != 0) k++;
        if (k == n_shards) names[n_shards++] = s;
    }
    st = file_alloc(&f, n_shards, err);
    if (st) goto out_free;
    for (int k = 0; k < n_shards; k++) {
        f->shard_paths[k] = path_join(dir, names[k]);
        if (!f->shard_paths[k]) {
            st = ds4_seterr(err, DS4_ERR_NOMEM, "safetensors: out of memory");
            goto out_free;
        }
        st = ds4_mapfile_open(&f->maps[k], f->shard_paths[k], err);
        if (st) goto out_free;
        st = parse_shard(f, k, f->maps[k].data, f->maps[k].size_bytes, err);
        if (st) goto out_free;
    }
    st = build_index(f, err);
    if (st) goto out_free;
    /* Invariant 4: same tensor set, each in the shard the index names. */
    for (size_t i = 0; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        json_t *m = json_object_get(wm, t->name);
        if (!m) {
            st = ds4_seterr(err, DS4_ERR_FORMAT, "%s: tensor '%s' is in %s but not in the index",
                            index_path, t->name, f->shard_paths[t->shard]);
            goto out_free;
        }
        if (strcmp(json_string_value(m), names[t->shard]) != 0) {
            st = ds4_seterr(err, DS4_ERR_FORMAT, "%s: tensor '%s' is in %s but the index says %s",
                            index_path, t->name, names[t->shard], json_string_value(m));
            goto out_free;
        }
    }
    json_object_foreach(wm, key, v) {
        if (!st_find(f, key)) {
            st = ds4_seterr(err, DS4_ERR_FORMAT,
                            "%s: tensor '%s' is listed in the index but missing from shard %s",
                            index_path, key, json_string_value(v));
            goto out_free;
        }
    }
    *out = f;
    f = NULL;
out_free:
    st_close(f);
    free(names);
    free(dir);
    json_decref(root);
    return st;
}

static int is_regular(const char *p) {
    struct stat s;
    return stat(p, &s) == 0 && S_ISREG(s.st_mode);
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

ds4_status st_open(st_file **out, const char *path, ds4_error *err) {
    *out = NULL;
    struct stat s;
    if (stat(path, &s) != 0)
        return ds4_seterr(err, DS4_ERR_IO, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(s.st_mode)) {
        if (ends_with(path, ".json")) return open_index(out, path, err);
        return open_single(out, path, err);
    }
    char *idx = path_join(path, "model.safetensors.index.json");
    char *one = path_join(path, "model.safetensors");
    ds4_status st;
    if (!idx || !one)
        st = ds4_seterr(err, DS4_ERR_NOMEM, "safetensors: out of memory");
    else if (is_regular(idx))
        st = open_index(out, idx, err);
    else if (is_regular(one))
        st = open_single(out, one, err);
    else
        st = ds4_seterr(err, DS4_ERR_NOT_FOUND,
                        "%s: no model.safetensors.index.json or model.safetensors", path);
    free(idx);
    free(one);
    return st;
}
