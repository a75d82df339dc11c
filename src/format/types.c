/*
 * format/types.c — the ggml tensor type table and checked byte-size arithmetic
 * (GGUF_LAYOUT §1.5). Never touches tensor data; block codecs live in format/quant.c.
 */
#include "format/types.h"

#include <strings.h>

#include "core/error.h"
#include "core/safemath.h"

/* Sizes from GGUF_LAYOUT §1.5 and §4 (block layouts). Ids not listed are unknown on purpose:
 * ds4's own table carries wrong sizes for several unused ids (§8 #13). */
static const ds4_type_info type_table[DS4_TYPE_ID_LIMIT] = {
    [DS4_TYPE_F32] = {"F32", 1, 4},
    [DS4_TYPE_F16] = {"F16", 1, 2},
    [DS4_TYPE_Q8_0] = {"Q8_0", 32, 34},
    [DS4_TYPE_Q2_K] = {"Q2_K", 256, 84},
    [DS4_TYPE_Q4_K] = {"Q4_K", 256, 144},
    [DS4_TYPE_Q8_K] = {"Q8_K", 256, 292},
    [DS4_TYPE_IQ2_XXS] = {"IQ2_XXS", 256, 66},
    [DS4_TYPE_I8] = {"I8", 1, 1},
    [DS4_TYPE_I16] = {"I16", 1, 2},
    [DS4_TYPE_I32] = {"I32", 1, 4},
    [DS4_TYPE_I64] = {"I64", 1, 8},
    [DS4_TYPE_F64] = {"F64", 1, 8},
    [DS4_TYPE_BF16] = {"BF16", 1, 2},
};

const ds4_type_info *ds4_type_get(uint32_t type) {
    if (type >= DS4_TYPE_ID_LIMIT || type_table[type].name == NULL) return NULL;
    return &type_table[type];
}

bool ds4_type_known(uint32_t type) { return ds4_type_get(type) != NULL; }

const char *ds4_type_name(uint32_t type) {
    const ds4_type_info *t = ds4_type_get(type);
    return t ? t->name : "unknown";
}

uint32_t ds4_type_block_elems(uint32_t type) {
    const ds4_type_info *t = ds4_type_get(type);
    return t ? t->block_elems : 0;
}

uint32_t ds4_type_block_bytes(uint32_t type) {
    const ds4_type_info *t = ds4_type_get(type);
    return t ? t->block_bytes : 0;
}

bool ds4_type_from_name(const char *name, ds4_type *out) {
    if (!name) return false;
    for (uint32_t id = 0; id < DS4_TYPE_ID_LIMIT; id++) {
        if (type_table[id].name && strcasecmp(type_table[id].name, name) == 0) {
            if (out) *out = (ds4_type)id;
            return true;
        }
    }
    return false;
}

ds4_status ds4_type_row_bytes(uint32_t type, uint64_t ne0, uint64_t *out, ds4_error *err) {
    const ds4_type_info *t = ds4_type_get(type);
    if (!t) return ds4_seterr(err, DS4_ERR_UNSUPPORTED, "unknown tensor type id %u", type);
    if (ne0 == 0) return ds4_seterr(err, DS4_ERR_FORMAT, "%s row of 0 values", t->name);
    /* GGUF_LAYOUT §1.4: a row must be whole blocks; a partial block has no defined layout. */
    if (ne0 % t->block_elems != 0)
        return ds4_seterr(err, DS4_ERR_FORMAT,
                          "%s row of %llu values is not a multiple of the block size %u",
                          t->name, (unsigned long long)ne0, t->block_elems);
    uint64_t bytes;
    if (!ds4_mul_u64(&bytes, ne0 / t->block_elems, t->block_bytes))
        return ds4_seterr(err, DS4_ERR_FORMAT, "%s row of %llu values: byte size overflows",
                          t->name, (unsigned long long)ne0);
    *out = bytes;
    return DS4_OK;
}

ds4_status ds4_tensor_bytes(uint32_t type, const uint64_t *ne, uint32_t n_dims, uint64_t *out,
                            ds4_error *err) {
    if (n_dims < 1 || n_dims > DS4_MAX_DIMS)
        return ds4_seterr(err, DS4_ERR_FORMAT, "n_dims %u outside 1..%d", n_dims, DS4_MAX_DIMS);
    for (uint32_t i = 0; i < n_dims; i++)
        if (ne[i] == 0) return ds4_seterr(err, DS4_ERR_FORMAT, "ne[%u] is 0", i);
    uint64_t bytes;
    ds4_status st = ds4_type_row_bytes(type, ne[0], &bytes, err);
    if (st != DS4_OK) return st;
    /* The element count is checked too: readers use it for loops and allocations. */
    uint64_t n_elements = ne[0];
    for (uint32_t i = 1; i < n_dims; i++) {
        if (!ds4_mul_u64(&bytes, bytes, ne[i]) || !ds4_mul_u64(&n_elements, n_elements, ne[i]))
            return ds4_seterr(err, DS4_ERR_FORMAT,
                              "%s tensor: size overflows at ne[%u] = %llu", ds4_type_name(type),
                              i, (unsigned long long)ne[i]);
    }
    *out = bytes;
    return DS4_OK;
}
