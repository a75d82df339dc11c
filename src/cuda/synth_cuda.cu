/*
 * cuda/synth_cuda.cu — the device side of cuda/synth_cuda.h: fills quantized weight blocks with
 * the same bytes as synth_fill_host, at memory speed (80 GB in well under a second on an
 * H200). Must not: pick scales or know tensor names.
 */
#include "common.cuh"
#include "synth_cuda.h"

/* One thread per 8-byte word of the generator: the word's bytes, then the scale fields of
 * any block that overlaps it are rewritten from the block's view (a second kernel), so the
 * result does not depend on the launch shape. */
__global__ void k_synth_bytes(uint8_t *dst, uint64_t n_bytes, uint64_t seed) {
    cu_pdl_wait();
    uint64_t w = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    uint64_t i = w * 8;
    if (i >= n_bytes) return;
    uint64_t v = synth_mix64(seed + (w + 1) * 0x9e3779b97f4a7c15ull);
    if (i + 8 <= n_bytes && ((uintptr_t)(dst + i) & 7) == 0) {
        *(uint64_t *)(dst + i) = v;
        return;
    }
    for (uint64_t k = 0; k < 8 && i + k < n_bytes; k++) dst[i + k] = (uint8_t)(v >> (8 * k));
}

__global__ void k_synth_scales(uint8_t *dst, uint64_t n_blocks, uint32_t bb, int d_off,
                               int m_off, uint16_t d, uint16_t dmin) {
    cu_pdl_wait();
    uint64_t b = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= n_blocks) return;
    uint8_t *p = dst + b * bb; /* blocks are 2-byte aligned (34, 66, 84, 144 bytes) */
    *(uint16_t *)(p + d_off) = d;
    if (m_off >= 0) *(uint16_t *)(p + m_off) = dmin;
}

extern "C" ds4_status cuda_synth_fill(void *d_dst, uint64_t n_bytes, uint32_t type, uint16_t d_f16,
                                      uint16_t dmin_f16, uint64_t seed, ds4_error *err) {
    uint32_t bb;
    int d_off, m_off;
    if (!synth_block_layout(type, &bb, &d_off, &m_off) || n_bytes % bb || ((uintptr_t)d_dst & 1))
        return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                          "cuda synth: type %u, %llu bytes is not whole blocks at an even address",
                          type, (unsigned long long)n_bytes);
    if (!n_bytes) return DS4_OK;
    uint64_t n_words = (n_bytes + 7) / 8, n_blocks = n_bytes / bb;
    cu_launch(k_synth_bytes, (unsigned)((n_words + 255) / 256), 256, 0, (uint8_t *)d_dst,
                                                                              n_bytes, seed);
    CU_CHECK(cudaGetLastError(), err, "synth bytes launch");
    cu_launch(k_synth_scales, (unsigned)((n_blocks + 255) / 256), 256, 0, 
        (uint8_t *)d_dst, n_blocks, bb, d_off, m_off, d_f16, dmin_f16);
    CU_CHECK(cudaGetLastError(), err, "synth scales launch");
    return DS4_OK;
}
