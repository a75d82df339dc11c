/*
 * cuda/normfuse.cu — the per-row chains of the attention input in one launch (issue #7: ~60
 * small kernels per layer were a large part of a decode step): RMSNorm (MODEL_MATH §3.1/§3.2),
 * then RoPE on the row's tail (§3.3), then the FP8 round trip of the leading values (§12 #1) or
 * the Q8_0 activation records of the row (quants README §4.4). Each step is the device helper
 * the single ops use (ops.cuh, quant.cuh) in the same order on the same values, so the result is
 * bit-identical to cuda_rmsnorm → cuda_rope_tail → cuda_fp8_roundtrip / cuda_quantize_q8_0_act.
 * cuda_norm_rope_qat_ring also stores the finished row in the window ring's slot of its
 * position (§7.1; the ring store's launch of its own gone, issue #7).
 * Must not: decide which rows get which steps (forward_cuda.c does, after model/attention.c).
 */
#include "cuda_api.h"
#include "ops.cuh"
#include "quant.cuh"

#define NF_THREADS 256 /* cuda_rmsnorm's block for these rows: the same double-sum order */
#define NF_MAX 8192    /* row values held in shared memory */

/* One block per row: the normalised row in shared memory, rotated and rounded there. */
__global__ void __launch_bounds__(NF_THREADS)
    k_norm_rope_qat(float *x, const float *w, int64_t n, float eps, int n_rope, const float *freqs,
                    int64_t pos, const int64_t *dpos, int64_t fp8_n, int fp8_block, uint8_t *q80,
                    float *ring, int64_t W) {
    cu_pdl_wait();
    __shared__ double sh[32];
    __shared__ float row[NF_MAX];
    float *xr = x + (int64_t)blockIdx.x * n;
    const float r = cu_block_rms_inv(xr, n, eps, sh);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = __fmul_rn(xr[i], r);
        row[i] = w ? __fmul_rn(w[i], v) : v;
    }
    __syncthreads();
    if (n_rope > 0) {
        const float t = (float)(dpos ? *dpos : pos);
        for (int p = threadIdx.x; p < n_rope / 2; p += blockDim.x)
            cu_rope_pair(row + n - n_rope + 2 * p, freqs[p], t, 0);
        __syncthreads();
    }
    const int warp = threadIdx.x >> 5, nw = blockDim.x >> 5, lane = threadIdx.x & 31;
    if (fp8_n > 0) {
        for (int64_t b = warp; b < fp8_n / fp8_block; b += nw) cu_qat_block_warp(row + b * fp8_block, fp8_block, 0);
        __syncthreads();
    }
    if (q80)
        for (int64_t b = warp; b < n / 32; b += nw)
            q8act_warp(row[b * 32 + lane], q80 + ((int64_t)blockIdx.x * (n / 32) + b) * CU_Q8_0ACT_BYTES);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) xr[i] = row[i];
    if (ring) { /* the window ring's slot of this position (§7.1), one row */
        float *slot = ring + ((dpos ? *dpos : pos) % W) * n;
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) slot[i] = row[i];
    }
}

extern "C" ds4_status cuda_norm_rope_qat_ring(float *d_x, const float *d_w, int64_t n_rows,
                                              int64_t n, float eps, int n_rope,
                                              const float *d_freqs, int64_t pos,
                                              const int64_t *d_pos, int64_t fp8_n, int fp8_block,
                                              void *d_q80, float *d_ring, int64_t W,
                                              ds4_error *err) {
    if (n_rows <= 0) return DS4_OK;
    if (n <= 0 || n > NF_MAX || n_rows > INT32_MAX || n_rope < 0 || (n_rope & 1) || n_rope > n ||
        (n_rope && !d_freqs) || fp8_n < 0 || fp8_n > n ||
        (fp8_n && (fp8_block <= 0 || fp8_block > 1024 || fp8_n % fp8_block)) || (d_q80 && n % 32) ||
        (d_ring && (n_rows != 1 || W < 1 || (!d_pos && pos < 0))))
        return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                          "cuda_norm_rope_qat: %lld rows of %lld, rope %d, fp8 %lld in blocks of %d",
                          (long long)n_rows, (long long)n, n_rope, (long long)fp8_n, fp8_block);
    cu_launch(k_norm_rope_qat, (unsigned)n_rows, NF_THREADS, 0, 
        d_x, d_w, n, eps, n_rope, d_freqs, pos, d_pos, fp8_n, fp8_block, (uint8_t *)d_q80, d_ring, W);
    CU_LAUNCH_CHECK(err, "norm_rope_qat launch");
    return DS4_OK;
}

extern "C" ds4_status cuda_norm_rope_qat(float *d_x, const float *d_w, int64_t n_rows, int64_t n,
                                         float eps, int n_rope, const float *d_freqs, int64_t pos,
                                         const int64_t *d_pos, int64_t fp8_n, int fp8_block,
                                         void *d_q80, ds4_error *err) {
    return cuda_norm_rope_qat_ring(d_x, d_w, n_rows, n, eps, n_rope, d_freqs, pos, d_pos, fp8_n,
                                   fp8_block, d_q80, NULL, 1, err);
}
