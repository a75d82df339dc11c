/*
 * core/safemath.h — overflow-checked size arithmetic for every number read from a file
 * (STYLE.md §3). Each returns true when the result is exact and stored in *out.
 */
#ifndef DS4_CORE_SAFEMATH_H
#define DS4_CORE_SAFEMATH_H

#include <stdbool.h>
#include <stdint.h>

static inline bool ds4_mul_u64(uint64_t *out, uint64_t a, uint64_t b) {
    return !__builtin_mul_overflow(a, b, out);
}

static inline bool ds4_add_u64(uint64_t *out, uint64_t a, uint64_t b) {
    return !__builtin_add_overflow(a, b, out);
}

/* [off, off+len) lies inside a region of `size` bytes, without overflow. */
static inline bool ds4_range_ok(uint64_t off, uint64_t len, uint64_t size) {
    return off <= size && len <= size - off;
}

/* Rounds x up to a multiple of align (align > 0); false on overflow. */
static inline bool ds4_align_up_u64(uint64_t *out, uint64_t x, uint64_t align) {
    uint64_t r = x % align;
    if (r == 0) { *out = x; return true; }
    return ds4_add_u64(out, x, align - r);
}

#endif
