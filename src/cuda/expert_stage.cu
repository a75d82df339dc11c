/*
 * cuda/expert_stage.cu — copies the selected routed experts of one token from pinned host
 * memory into a device staging buffer (issue #7, experts in host memory): the decode products
 * (matvec_exp.cu) then read device memory, so a host-resident layer runs the same kernels on
 * the same bytes as a device-resident one (bit-identical logits) and the PCIe reads are plain
 * wide loads, many in flight. matvec_exp.cu reading the mapped memory itself by cp.async was
 * 13% slower per token on an H100 with 4 of 43 layers on the host (docs/BENCHMARKS.md).
 *
 * Owns: the gather kernel. Must not: know the model (forward_cuda.c decides what to stage).
 */
#include "common.cuh"
#include "cuda_api.h"

#define XS_THREADS 256
#define XS_BLOCKS_PER_EXPERT 128 /* ~3 MB of 16-byte loads in flight for 6 experts */

/* dst[k] = src[ids[k]] for k < gridDim.y, each `bytes` long; an id outside [0, n_expert) leaves
 * its slot as it was (the routers never produce one: cuda_moe_route picks among n_expert). */
__global__ void k_expert_stage(uint8_t *dst, const uint8_t *src, int64_t bytes, const int32_t *ids,
                               int64_t n_expert, int wide) {
    cu_pdl_wait();
    const int k = blockIdx.y;
    const int32_t e = ids[k];
    if (e < 0 || e >= n_expert) return;
    const uint8_t *s = src + (int64_t)e * bytes;
    uint8_t *d = dst + (int64_t)k * bytes;
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    const int64_t t0 = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    int64_t done = 0;
    if (wide) {
        const int64_t n16 = bytes / 16;
        for (int64_t i = t0; i < n16; i += step) ((uint4 *)d)[i] = ((const uint4 *)s)[i];
        done = n16 * 16;
    }
    for (int64_t i = done + t0; i < bytes; i += step) d[i] = s[i];
}

extern "C" ds4_status cuda_expert_stage(void *d_dst, const void *d_src, int64_t expert_bytes,
                                        int64_t n_expert, const int32_t *d_ids, int n_sel,
                                        ds4_error *err) {
    if (!d_dst || !d_src || !d_ids || expert_bytes <= 0 || n_expert <= 0 || n_sel <= 0 ||
        n_sel > 65535)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_expert_stage: %d experts of %lld bytes",
                          n_sel, (long long)expert_bytes);
    const int wide = ((uintptr_t)d_dst & 15) == 0 && ((uintptr_t)d_src & 15) == 0 &&
                     (expert_bytes & 15) == 0;
    cu_launch(k_expert_stage, dim3(XS_BLOCKS_PER_EXPERT, (unsigned)n_sel), dim3(XS_THREADS), 0,
              (uint8_t *)d_dst, (const uint8_t *)d_src, expert_bytes, d_ids, n_expert, wide);
    CU_CHECK(cudaGetLastError(), err, "expert stage launch");
    return DS4_OK;
}
