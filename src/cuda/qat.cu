/*
 * cuda/qat.cu — the quantization-aware simulations of MODEL_MATH §3.5-3.7 / §12: Walsh-Hadamard
 * rotation and the FP8 E4M3 / FP4 E2M1 block round trips, bit-identical to cpu/ops.c.
 * Must not: decide where the round trips apply (the model layer does, §12).
 */
#include "cuda_api.h"
#include "ops.cuh"

/* One block per row, the row in shared memory; the butterflies of cpu_hadamard in the same
 * order (each element sees the same additions), then the 1/sqrt(n) scale. */
__global__ void k_hadamard(float *x, int64_t row_stride, int n) {
    cu_pdl_wait();
    extern __shared__ float sh[];
    float *row = x + (int64_t)blockIdx.x * row_stride;
    for (int i = threadIdx.x; i < n; i += blockDim.x) sh[i] = row[i];
    __syncthreads();
    cu_hadamard_butterflies(sh, n);
    float s = (float)(1.0 / sqrt((double)n));
    for (int i = threadIdx.x; i < n; i += blockDim.x) row[i] = __fmul_rn(sh[i], s);
}

extern "C" ds4_status cuda_hadamard(float *d_x, int64_t n_rows, int64_t row_stride, int n,
                                    ds4_error *err) {
    if (n_rows <= 0) return DS4_OK;
    if (n < 1 || (n & (n - 1)) || n > 8192 || row_stride < n || n_rows > INT32_MAX)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                          "cuda_hadamard: n = %d (need a power of two <= 8192, stride %lld)", n,
                          (long long)row_stride);
    cu_launch(k_hadamard, (unsigned)n_rows, 256, (size_t)n * sizeof(float), d_x, row_stride, n);
    CU_LAUNCH_CHECK(err, "hadamard launch");
    return DS4_OK;
}

/* One warp per block of `block` values (cu_qat_block_warp). */
__global__ void k_qat(float *x, int64_t n_rows, int64_t row_stride, int64_t n, int block,
                      int fp4) {
    cu_pdl_wait();
    int64_t nb = n / block;
    int64_t wi = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (wi >= n_rows * nb) return; /* whole warps leave together */
    int64_t r = wi / nb, b = wi % nb;
    cu_qat_block_warp(x + r * row_stride + b * block, block, fp4);
}

static ds4_status qat_launch(float *d_x, int64_t n_rows, int64_t row_stride, int64_t n,
                             int block, int fp4, ds4_error *err) {
    if (n_rows <= 0 || n == 0) return DS4_OK;
    if (block <= 0 || n < 0 || n % block || row_stride < n)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                          "cuda_%s_roundtrip: %lld values per row is not a multiple of block %d "
                          "(stride %lld)",
                          fp4 ? "fp4" : "fp8", (long long)n, block, (long long)row_stride);
    int64_t total = n_rows * (n / block);
    cu_launch(k_qat, cu_blocks(total * 32, 128), 128, 0, d_x, n_rows, row_stride, n, block, fp4);
    CU_LAUNCH_CHECK(err, "qat launch");
    return DS4_OK;
}

extern "C" ds4_status cuda_fp8_roundtrip(float *d_x, int64_t n_rows, int64_t row_stride,
                                         int64_t n, int block, ds4_error *err) {
    return qat_launch(d_x, n_rows, row_stride, n, block, 0, err);
}

extern "C" ds4_status cuda_fp4_roundtrip(float *d_x, int64_t n_rows, int64_t row_stride,
                                         int64_t n, int block, ds4_error *err) {
    return qat_launch(d_x, n_rows, row_stride, n, block, 1, err);
}
