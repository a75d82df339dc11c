/*
 * cuda/synth_cuda.h — random but valid quantized weight blocks of any GGUF block type, made
 * directly where they are used (issue #7: a full-size synthetic Flash does not fit the device
 * machine's disk, and the IQ2_XXS encoder is far too slow for 80 GB of random f32 values).
 *
 * The bytes are a pure function of (seed, byte index) so the host reference below and the
 * device kernel write the same tensor: byte i is byte (i mod 8) of mix64(seed + (i/8 + 1) *
 * golden); then every block's f16 scale fields (GGUF_LAYOUT §4.2-§4.6: Q8_0 and IQ2_XXS d at
 * 0, Q4_K d/dmin at 0/2, Q2_K d/dmin at 80/82) are overwritten with the caller's values. Any
 * code byte is a valid code in these formats (grid indices, sign indices, 4-bit scales), so
 * the block decodes to finite values bounded by the scales.
 *
 * Owns: the generator and its layouts. Must not: choose scales (the caller measures them) or
 * know about the model.
 */
#ifndef DS4_CUDA_SYNTH_CUDA_H
#define DS4_CUDA_SYNTH_CUDA_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ds4.h"
#include "format/types.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __CUDACC__
#define SYNTH_HD __host__ __device__
#else
#define SYNTH_HD
#endif

/* Block bytes and where its f16 scales live (-1: none); false for a type that is not a
 * quantized block type (F32/F16/BF16/I32 are made on the host from real values). */
static inline SYNTH_HD int synth_block_layout(uint32_t type, uint32_t *block_bytes, int *d_off,
                                     int *dmin_off) {
    switch (type) {
    case DS4_TYPE_Q8_0: *block_bytes = 34; *d_off = 0; *dmin_off = -1; return 1;
    case DS4_TYPE_IQ2_XXS: *block_bytes = 66; *d_off = 0; *dmin_off = -1; return 1;
    case DS4_TYPE_Q4_K: *block_bytes = 144; *d_off = 0; *dmin_off = 2; return 1;
    case DS4_TYPE_Q2_K: *block_bytes = 84; *d_off = 80; *dmin_off = 82; return 1;
    default: return 0;
    }
}

static inline SYNTH_HD uint64_t synth_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Host reference: bytes [at, at + n_bytes) of a tensor of `type` (at and n_bytes whole
 * blocks) into dst. Returns 0 for a non-block type or a partial block. */
static inline int synth_fill_host(uint8_t *dst, uint64_t at, uint64_t n_bytes, uint32_t type,
                                  uint16_t d_f16, uint16_t dmin_f16, uint64_t seed) {
    uint32_t bb;
    int d_off, m_off;
    if (!synth_block_layout(type, &bb, &d_off, &m_off) || at % bb || n_bytes % bb) return 0;
    uint64_t w = 0, wi = UINT64_MAX;
    for (uint64_t j = at; j < at + n_bytes; j++) {
        if (j / 8 != wi) {
            wi = j / 8;
            w = synth_mix64(seed + (wi + 1) * 0x9e3779b97f4a7c15ull);
        }
        dst[j - at] = (uint8_t)(w >> (8 * (j % 8)));
    }
    for (uint64_t b = 0; b < n_bytes; b += bb) {
        memcpy(dst + b + d_off, &d_f16, 2);
        if (m_off >= 0) memcpy(dst + b + m_off, &dmin_f16, 2);
    }
    return 1;
}

/* Device version of synth_fill_host on the device bytes d_dst (any alignment). Built by
 * `make cuda` only. DS4_ERR_INVALID_ARG for a non-block type or a partial block. */
ds4_status cuda_synth_fill(void *d_dst, uint64_t n_bytes, uint32_t type, uint16_t d_f16,
                           uint16_t dmin_f16, uint64_t seed, ds4_error *err);

#ifdef __cplusplus
}
#endif

#endif
