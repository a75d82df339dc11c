/*
 * cuda/qnorm.cuh — one warp's RMSNorm without weight (MODEL_MATH §3.2) then RoPE on the tail
 * (§3.3) of one row, bit-identical to k_rmsnorm (norm.cu, 256 threads) then k_rope_tail
 * (rope.cu). Shared by qnorm_chunk.cu and the chunk attention (attention.cu), which runs it on
 * q rows staged in shared memory. Must not: be called by fewer than all 32 lanes of a warp.
 */
#ifndef DS4_CUDA_QNORM_CUH
#define DS4_CUDA_QNORM_CUH

#include "ops.cuh"

#define QN_BD 256 /* the block size of k_rmsnorm this reproduces */

/* Lane l plays the 8 block threads 32w + l (w < 8) of k_rmsnorm: cu_block_rms_inv's
 * per-thread loop, each of the 8 warps' butterflies (cu_block_sum_d's first stage), then its
 * second stage written out (lanes 0..7 hold the warp sums, the rest 0: xor 16 and 8 add zeros,
 * then xor 4, 2, 1); then x·r and the rotation of the tail pairs at position t. */
__device__ __forceinline__ void cu_qnorm_rope_warp(float *row, int64_t n, float eps,
                                                   int64_t tail_off, int n_rope,
                                                   const float *freqs, float t) {
    int l = threadIdx.x & 31;
    double ws[QN_BD / 32];
#pragma unroll
    for (int w = 0; w < QN_BD / 32; w++) {
        double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
        int64_t bd = QN_BD, i = 32 * w + l;
        for (; i + 3 * bd < n; i += 4 * bd) {
            float a = row[i], b = row[i + bd], c = row[i + 2 * bd], d = row[i + 3 * bd];
            s0 += (double)a * a;
            s1 += (double)b * b;
            s2 += (double)c * c;
            s3 += (double)d * d;
        }
        for (; i < n; i += bd) s0 += (double)row[i] * row[i];
        double v = (s0 + s1) + (s2 + s3);
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        ws[w] = v;
    }
    double ss = ((ws[0] + ws[4]) + (ws[2] + ws[6])) + ((ws[1] + ws[5]) + (ws[3] + ws[7]));
    float rinv = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
    for (int64_t i = l; i < n; i += 32) row[i] = __fmul_rn(row[i], rinv);
    __syncwarp();
    for (int p = l; p < n_rope / 2; p += 32) cu_rope_pair(row + tail_off + 2 * p, freqs[p], t, 0);
    __syncwarp();
}

#endif
