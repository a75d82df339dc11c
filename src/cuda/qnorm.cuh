/*
 * cuda/qnorm.cuh — one warp's RMSNorm without weight (MODEL_MATH §3.2) then RoPE on the tail
 * (§3.3) of one row, bit-identical to k_rmsnorm (norm.cu) then k_rope_tail (rope.cu), and to
 * the CPU's cpu_rmsnorm + cpu_rope_tail. Shared by qnorm_chunk.cu and the chunk attention
 * kernels, which run it on q rows staged in shared memory. Must not: be called by fewer than all 32 lanes of a warp.
 */
#ifndef DS4_CUDA_QNORM_CUH
#define DS4_CUDA_QNORM_CUH

#include "ops.cuh"

/* Lane l sums the squares of values l, l+32, ... as a ref_dsum, the warp merges them by
 * butterflies; the sum's value does not depend on the order (cpu/refmath.h), so r is
 * k_rmsnorm's and cpu_rmsnorm's. Then x·r and the rotation of the tail pairs at position t. */
__device__ __forceinline__ void cu_qnorm_rope_warp(float *row, int64_t n, float eps,
                                                   int64_t tail_off, int n_rope,
                                                   const float *freqs, float t) {
    int l = threadIdx.x & 31;
    ref_dsum v = {0.0, 0.0}, v2 = {0.0, 0.0};
    int64_t i = l;
    for (; i + 32 < n; i += 64) {
        float a = row[i], b = row[i + 32];
        ref_dsum_add(&v, (double)a * a);
        ref_dsum_add(&v2, (double)b * b);
    }
    if (i < n) ref_dsum_add(&v, (double)row[i] * row[i]);
    ref_dsum_merge(&v, v2);
    for (int o = 16; o > 0; o >>= 1) {
        ref_dsum w = {__shfl_xor_sync(0xffffffffu, v.s, o), __shfl_xor_sync(0xffffffffu, v.c, o)};
        ref_dsum_merge(&v, w);
    }
    float rinv = ref_rms_inv(ref_dsum_value(v), n, eps);
    for (int64_t j = l; j < n; j += 32) row[j] = __fmul_rn(row[j], rinv);
    __syncwarp();
    for (int p = l; p < n_rope / 2; p += 32) cu_rope_pair(row + tail_off + 2 * p, freqs[p], t, 0);
    __syncwarp();
}

#endif
