/*
 * format/safetensors.h — read-only access to safetensors checkpoints (GGUF_LAYOUT §4.7, §3.6):
 * a single file, or a sharded checkpoint described by `model.safetensors.index.json`.
 * Each shard is memory-mapped; tensors are exposed in place (dtype, shape, data pointer, bytes).
 *
 * Owns: header parsing and validation (sizes, offsets, overlaps, names, index <-> shard
 * agreement). Must not: decode values (format/fp8.h does that), know DeepSeek tensor names,
 * print, or allocate anything proportional to tensor data.
 */
#ifndef DS4_FORMAT_SAFETENSORS_H
#define DS4_FORMAT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include "ds4.h"

#define ST_MAX_DIMS 8
/* The 8-byte header length is checked against the file size and this cap (real shards hold a
 * few hundred KB of JSON; the cap keeps a corrupt length from becoming a huge allocation). */
#define ST_MAX_HEADER_BYTES (100u * 1024u * 1024u)

typedef enum st_dtype {
    ST_F32 = 0,
    ST_F16,
    ST_BF16,
    ST_F8_E4M3,
    ST_F8_E8M0,
    ST_I8,
    ST_I32,
    ST_I64,
    ST_U8,
    ST_DTYPE_COUNT
} st_dtype;

typedef struct st_tensor {
    const char *name;            /* NUL-terminated, owned by the st_file */
    st_dtype dtype;
    int n_dims;                  /* 0 = scalar */
    uint64_t shape[ST_MAX_DIMS]; /* safetensors order: shape[0] is the slowest dimension */
    uint64_t n_elements;
    const uint8_t *data;         /* inside the shard's mapping (n_bytes may be 0) */
    uint64_t n_bytes;
    int shard;                   /* index into the shard list (0 for a single file) */
} st_tensor;

typedef struct st_file st_file;

/* Opens `path`: a .safetensors file, a model.safetensors.index.json, or a directory holding
 * either (the index wins). Every shard is mapped and validated before this returns. */
ds4_status st_open(st_file **out, const char *path, ds4_error *err);

/* Parses one safetensors image held by the caller (fuzzing, tests). `data` must outlive the
 * st_file; nothing is copied. */
ds4_status st_open_memory(st_file **out, const uint8_t *data, size_t n_bytes, ds4_error *err);

void st_close(st_file *f);

size_t st_count(const st_file *f);
/* i-th tensor in file order (shard, then data offset); NULL when out of range. */
const st_tensor *st_get(const st_file *f, size_t i);
/* Tensor by exact name, NULL when absent. */
const st_tensor *st_find(const st_file *f, const char *name);

int st_shard_count(const st_file *f);
/* Shard file path as opened ("<memory>" for st_open_memory). */
const char *st_shard_path(const st_file *f, int shard);

/* "F32", "BF16", ...; "?" for an out-of-range value. */
const char *st_dtype_name(st_dtype t);
/* Bytes per element (1, 2, 4 or 8). */
size_t st_dtype_size(st_dtype t);

#endif
