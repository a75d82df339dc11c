/*
 * format/gguf.h — GGUF v3 reader: header, metadata records, tensor directory -> offsets
 * (GGUF_LAYOUT §1). Never reads tensor data, knows nothing about DeepSeek.
 *
 * Contract (what gguf_open guarantees once it returns DS4_OK):
 *  1. Version is 3 (1/2 and others: DS4_ERR_UNSUPPORTED naming the version).
 *  2. Every metadata record parsed inside the file: key a non-empty valid UTF-8 string without
 *     NUL bytes, known value type, arrays nested at most GGUF_MAX_ARRAY_DEPTH deep, every length
 *     and count checked against the bytes left *before* anything is allocated.
 *  3. Keys are unique. A duplicate key is DS4_ERR_FORMAT naming both record numbers: ds4 lets
 *     the first record win silently (GGUF_LAYOUT §1.2), which hides a broken converter (§2.4),
 *     and llama.cpp's reader refuses such files too, so no published file has one.
 *  4. Tensor names are non-empty, valid UTF-8 without NUL, unique; n_dims 1..DS4_MAX_DIMS (8,
 *     ds4's limit, more than ggml's 4); each ne >= 1; type in the types.h table; ne0 a multiple
 *     of the block size; byte size overflow-checked; [abs_offset, abs_offset + n_bytes) inside
 *     the file and not overlapping any other tensor's range. Offsets need not be aligned (ds4
 *     does not check it either, GGUF_LAYOUT §1.4).
 *  5. Alignment is 32 when general.alignment is absent, else its value, which must be stored as
 *     UINT32, non-zero and a power of two. Anything else (0, 3, an INT32 or UINT64 record) is
 *     DS4_ERR_FORMAT naming the key: ds4 silently falls back to 32 (§1.4), but the writer meant
 *     some other alignment, so every tensor offset would be misread; llama.cpp refuses such
 *     files as well, and the published files store a UINT32 32.
 *  6. When there is at least one tensor, the padded data region start lies inside the file.
 *
 * Lifetimes: every pointer returned (names, gguf_str views, gguf_value, gguf_tensor, data) lives
 * until gguf_close. Views point into the mapped file / caller buffer and are NOT NUL-terminated;
 * key and tensor names are NUL-terminated copies owned by the context. Multi-byte numbers inside
 * the file may be unaligned: read them with the getters below or memcpy.
 *
 * Thread safety: a context is immutable after open; concurrent reads are fine.
 */
#ifndef DS4_FORMAT_GGUF_H
#define DS4_FORMAT_GGUF_H

#include <stdbool.h>
#include <stdint.h>
#include "ds4.h"
#include "format/types.h"

#define GGUF_MAGIC "GGUF"
#define GGUF_VERSION 3
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_ARRAY_DEPTH 8   /* nesting deeper than this is fatal (GGUF_LAYOUT §1.2) */

/* Metadata value types (GGUF_LAYOUT §1.2). */
typedef enum gguf_vtype {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT = 13
} gguf_vtype;

/* Static name of a value type ("UINT32", "ARRAY"); "unknown" for ids >= GGUF_TYPE_COUNT. */
const char *gguf_vtype_name(uint32_t vtype);

/* Encoded size of one scalar of a fixed-size type (1, 2, 4 or 8); 0 for STRING, ARRAY, unknown. */
uint32_t gguf_vtype_size(uint32_t vtype);

/* True when s[0..len) is valid UTF-8 (no overlongs, surrogates or code points > U+10FFFF). */
bool gguf_utf8_valid(const char *s, uint64_t len);

/* Checks that `encoded` holds exactly one well-formed value of `type` in n_bytes (the encoding
 * that follows the type id in a record; GGUF_LAYOUT §1.2), with the reader's limits. The writer
 * uses it for raw values. DS4_ERR_FORMAT with a message naming the problem. */
ds4_status gguf_value_check(uint32_t type, const void *encoded, uint64_t n_bytes, ds4_error *err);

/* A string view into the file: `len` bytes at `ptr`, not NUL-terminated. */
typedef struct gguf_str {
    const char *ptr;
    uint64_t len;
} gguf_str;

/* One metadata value (a record's value, or an element of an array). Read-only; produced by the
 * reader, never built by hand. */
typedef struct gguf_value {
    const char *key;         /* record key it belongs to, for error messages */
    uint32_t type;           /* gguf_vtype of this value */
    const uint8_t *raw;      /* encoding of the value (after the type id; for ARRAY the u32
                                element type comes first) */
    uint64_t raw_bytes;      /* size of that encoding */
    /* ARRAY only (zero otherwise): */
    uint32_t elem_type;      /* gguf_vtype of the elements */
    uint64_t n_elems;
    const uint8_t *elems;    /* first element (just after the u64 count) */
    const uint64_t *elem_off;/* for non-empty top-level arrays of STRING/ARRAY: byte offset of
                                element i from `elems`, so access is O(1); NULL otherwise */
} gguf_value;

/* One tensor-info record, validated (contract #4). */
typedef struct gguf_tensor {
    const char *name;        /* NUL-terminated copy, owned by the context */
    uint32_t index;          /* position in the directory */
    uint32_t type;           /* ds4_type id */
    uint32_t n_dims;         /* 1..DS4_MAX_DIMS */
    uint64_t ne[DS4_MAX_DIMS]; /* ne[0] contiguous; entries >= n_dims are 1 */
    uint64_t n_elements;
    uint64_t n_bytes;        /* ds4_tensor_bytes(type, ne, n_dims) */
    uint64_t offset;         /* as stored: relative to the data region */
    uint64_t abs_offset;     /* from the start of the file: data_offset + offset */
    const void *data;        /* file base + abs_offset (read-only mapping) */
} gguf_tensor;

typedef struct gguf_ctx gguf_ctx;

/* Maps `path` read-only and parses it. On success *out owns the mapping; free with gguf_close.
 * Errors are prefixed with the path. */
ds4_status gguf_open(gguf_ctx **out, const char *path, ds4_error *err);

/* Parses a caller-owned buffer of `n_bytes` (tests, fuzzing). The buffer must stay alive and
 * unchanged until gguf_close; the context does not free it. */
ds4_status gguf_open_mem(gguf_ctx **out, const void *data, uint64_t n_bytes, ds4_error *err);

/* Frees the context (and unmaps the file if gguf_open mapped it). NULL is a no-op. */
void gguf_close(gguf_ctx *ctx);

/* ---- File ------------------------------------------------------------------------------- */
uint32_t gguf_version(const gguf_ctx *ctx);
uint64_t gguf_file_bytes(const gguf_ctx *ctx);
const uint8_t *gguf_file_base(const gguf_ctx *ctx);    /* start of the file bytes */
uint32_t gguf_alignment(const gguf_ctx *ctx);
uint64_t gguf_data_offset(const gguf_ctx *ctx);        /* data_start (GGUF_LAYOUT §1.4) */

/* ---- Metadata: by index ----------------------------------------------------------------- */
uint64_t gguf_n_kv(const gguf_ctx *ctx);
/* Key of record i (NUL-terminated); NULL if i is out of range. */
const char *gguf_kv_key(const gguf_ctx *ctx, uint64_t i);
/* Value of record i; NULL if i is out of range. */
const gguf_value *gguf_kv_value(const gguf_ctx *ctx, uint64_t i);
/* Index of `key` (exact, case-sensitive), or -1 if absent. */
int64_t gguf_find_key(const gguf_ctx *ctx, const char *key);
/* Value of `key`, or NULL if absent. */
const gguf_value *gguf_find_value(const gguf_ctx *ctx, const char *key);

/* ---- Metadata: typed getters by key ----------------------------------------------------
 * Missing key: DS4_ERR_NOT_FOUND "gguf: key 'K' not found".
 * Wrong type:  DS4_ERR_FORMAT "gguf: key 'K': expected UINT32, got INT32".
 * Accepted stored types follow GGUF_LAYOUT §2.1: */
ds4_status gguf_get_u32(const gguf_ctx *ctx, const char *key, uint32_t *out, ds4_error *err); /* UINT32 */
ds4_status gguf_get_i32(const gguf_ctx *ctx, const char *key, int32_t *out, ds4_error *err);  /* INT32 */
ds4_status gguf_get_u64(const gguf_ctx *ctx, const char *key, uint64_t *out, ds4_error *err); /* UINT64 or UINT32 */
ds4_status gguf_get_i64(const gguf_ctx *ctx, const char *key, int64_t *out, ds4_error *err);  /* INT64 or INT32 */
/* FLOAT32, FLOAT64, UINT32 or INT32 (a FLOAT64 is rounded to f32). */
ds4_status gguf_get_f32(const gguf_ctx *ctx, const char *key, float *out, ds4_error *err);
ds4_status gguf_get_f64(const gguf_ctx *ctx, const char *key, double *out, ds4_error *err);
ds4_status gguf_get_bool(const gguf_ctx *ctx, const char *key, bool *out, ds4_error *err);   /* BOOL */
ds4_status gguf_get_str(const gguf_ctx *ctx, const char *key, gguf_str *out, ds4_error *err); /* STRING */
/* ARRAY; *out points into the context. */
ds4_status gguf_get_arr(const gguf_ctx *ctx, const char *key, const gguf_value **out,
                        ds4_error *err);

/* The same conversions on a value already in hand (e.g. from gguf_kv_value). */
ds4_status gguf_value_u32(const gguf_value *v, uint32_t *out, ds4_error *err);
ds4_status gguf_value_i32(const gguf_value *v, int32_t *out, ds4_error *err);
ds4_status gguf_value_u64(const gguf_value *v, uint64_t *out, ds4_error *err);
ds4_status gguf_value_i64(const gguf_value *v, int64_t *out, ds4_error *err);
ds4_status gguf_value_f32(const gguf_value *v, float *out, ds4_error *err);
ds4_status gguf_value_f64(const gguf_value *v, double *out, ds4_error *err);
ds4_status gguf_value_bool(const gguf_value *v, bool *out, ds4_error *err);
ds4_status gguf_value_str(const gguf_value *v, gguf_str *out, ds4_error *err);

/* Copies a string view out as a malloc'd NUL-terminated string (caller frees). DS4_ERR_FORMAT
 * if it contains a NUL byte, DS4_ERR_NOMEM if allocation fails. */
ds4_status gguf_str_dup(gguf_str s, char **out, ds4_error *err);
/* True when the view equals the NUL-terminated `s` byte for byte. */
bool gguf_str_eq(gguf_str v, const char *s);

/* ---- Arrays -------------------------------------------------------------------------------
 * `arr` must be an ARRAY value (else DS4_ERR_FORMAT); i >= n_elems is DS4_ERR_RANGE naming key,
 * index and count. Element conversions (GGUF_LAYOUT §2.1, compress_ratios / swiglu_clamp_exp):
 *   u32: UINT32, or INT32 >= 0 (a negative INT32 is DS4_ERR_FORMAT)
 *   i32: INT32, or UINT32 <= INT32_MAX
 *   f32, f64: FLOAT32 or FLOAT64 */
ds4_status gguf_arr_u32(const gguf_value *arr, uint64_t i, uint32_t *out, ds4_error *err);
ds4_status gguf_arr_i32(const gguf_value *arr, uint64_t i, int32_t *out, ds4_error *err);
ds4_status gguf_arr_f32(const gguf_value *arr, uint64_t i, float *out, ds4_error *err);
ds4_status gguf_arr_f64(const gguf_value *arr, uint64_t i, double *out, ds4_error *err);
ds4_status gguf_arr_str(const gguf_value *arr, uint64_t i, gguf_str *out, ds4_error *err);
/* Element i of any type as a value (nested arrays, generic walkers). O(1) for top-level arrays,
 * O(i) for arrays nested inside arrays. */
ds4_status gguf_arr_elem(const gguf_value *arr, uint64_t i, gguf_value *out, ds4_error *err);
/* Fast path for numeric arrays: the packed little-endian elements, n_elems * gguf_vtype_size
 * bytes, possibly unaligned (memcpy each element). DS4_ERR_FORMAT for STRING/ARRAY elements. */
ds4_status gguf_arr_raw(const gguf_value *arr, const void **out, uint64_t *out_bytes,
                        ds4_error *err);

/* ---- Tensors ------------------------------------------------------------------------------ */
uint64_t gguf_n_tensors(const gguf_ctx *ctx);
/* Tensor i in directory order; NULL if out of range. */
const gguf_tensor *gguf_tensor_at(const gguf_ctx *ctx, uint64_t i);
/* Tensor by exact name (hash lookup), or NULL if absent. */
const gguf_tensor *gguf_find_tensor(const gguf_ctx *ctx, const char *name);
/* As gguf_find_tensor, but a missing tensor is DS4_ERR_NOT_FOUND "gguf: tensor 'N' not found". */
ds4_status gguf_get_tensor(const gguf_ctx *ctx, const char *name, const gguf_tensor **out,
                           ds4_error *err);

#endif
