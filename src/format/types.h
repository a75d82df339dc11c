/*
 * format/types.h — the ggml tensor type table: id, name, block elements, block bytes, and the
 * checked row/tensor byte-size arithmetic built on it (GGUF_LAYOUT §1.5, §3.5).
 *
 * Owns only the table. The block codecs (decode/encode/dot) live in format/quant.c; this module
 * never touches tensor data and knows nothing about GGUF records or DeepSeek.
 *
 * Type ids are ggml's, so they can be compared directly with the u32 read from a tensor-info
 * record. Functions take `uint32_t type` so a raw id from a file can be passed unchecked: an id
 * not in the table is "unknown" (ds4_type_known() is false) and every size query rejects it.
 * Only ids whose sizes are certain are in the table; ds4's own table carries wrong sizes for some
 * unused types (GGUF_LAYOUT §1.5, §8 #13), so those are deliberately left out.
 */
#ifndef DS4_FORMAT_TYPES_H
#define DS4_FORMAT_TYPES_H

#include <stdbool.h>
#include <stdint.h>
#include "ds4.h"

typedef enum ds4_type {
    DS4_TYPE_F32 = 0,
    DS4_TYPE_F16 = 1,
    DS4_TYPE_Q8_0 = 8,
    DS4_TYPE_Q2_K = 10,
    DS4_TYPE_Q4_K = 12,
    DS4_TYPE_Q8_K = 15,    /* activation-only, never stored by ds4 (GGUF_LAYOUT §4.6) */
    DS4_TYPE_IQ2_XXS = 16,
    DS4_TYPE_I8 = 24,
    DS4_TYPE_I16 = 25,
    DS4_TYPE_I32 = 26,
    DS4_TYPE_I64 = 27,
    DS4_TYPE_F64 = 28,
    DS4_TYPE_BF16 = 30
} ds4_type;

/* One past the largest id in the table (for loops over ids; most ids below it are unknown). */
#define DS4_TYPE_ID_LIMIT 31

/* ds4 accepts 1..8 dims per tensor (GGUF_LAYOUT §1.3); ggml's GGML_MAX_DIMS is 4. */
#define DS4_MAX_DIMS 8

typedef struct ds4_type_info {
    const char *name;      /* "F32", "Q8_0", "IQ2_XXS", ... (ggml spelling, upper case) */
    uint32_t block_elems;  /* values per block (1 for plain scalars) */
    uint32_t block_bytes;  /* bytes per block */
} ds4_type_info;

/* Table row for `type`, or NULL when the id is unknown. Static storage. */
const ds4_type_info *ds4_type_get(uint32_t type);

/* True when `type` is in the table. */
bool ds4_type_known(uint32_t type);

/* Static name of `type` ("Q8_0"); "unknown" for an id not in the table. Never NULL. */
const char *ds4_type_name(uint32_t type);

/* Block size in values / in bytes; 0 for an unknown id. */
uint32_t ds4_type_block_elems(uint32_t type);
uint32_t ds4_type_block_bytes(uint32_t type);

/* Looks a type up by name, case-insensitively ("q8_0", "IQ2_XXS", "bf16"). False if unknown. */
bool ds4_type_from_name(const char *name, ds4_type *out);

/* Bytes of one row of `ne0` values: (ne0 / block_elems) * block_bytes.
 * DS4_ERR_UNSUPPORTED for an unknown type; DS4_ERR_FORMAT when ne0 is 0, not a multiple of the
 * block size, or the product overflows u64. Messages name the type and ne0; callers prefix
 * the tensor name with ds4_err_prefix. */
ds4_status ds4_type_row_bytes(uint32_t type, uint64_t ne0, uint64_t *out, ds4_error *err);

/* Bytes of a whole tensor of shape ne[0..n_dims-1] (ne0 first): row_bytes(ne0) * ne1 * ne2 ...
 * Also rejects n_dims outside 1..DS4_MAX_DIMS and any ne[i] == 0 (DS4_ERR_FORMAT), and overflow
 * of the element count or the byte count. */
ds4_status ds4_tensor_bytes(uint32_t type, const uint64_t *ne, uint32_t n_dims, uint64_t *out,
                            ds4_error *err);

#endif
