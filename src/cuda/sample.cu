/*
 * cuda/sample.cu — greedy sampling on the device: argmax of each logit row with the semantics of
 * ds4_argmax (model/sampling.c): non-finite logits are skipped, ties go to the lower id, -1 when
 * no logit is finite. Must not: implement stochastic sampling (the host sampler owns the PRNG).
 */
#include "cuda_api.h"
#include "ops.cuh"

__device__ __forceinline__ void am_merge(float &bv, int &bi, float ov, int oi) {
    if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) { bv = ov; bi = oi; }
}

/* Pass 1: block b of row r reduces its slice into part[r][b]; pass 2 merges a row's slices in
 * slice order. The partials live in a fixed device buffer (rows are done AM_ROWS at a time). */
#define AM_SLICES 64
#define AM_ROWS 64
__device__ float g_am_v[AM_ROWS * AM_SLICES];
__device__ int g_am_i[AM_ROWS * AM_SLICES];

__device__ __forceinline__ void am_block(float &bv, int &bi, float *s_v, int *s_i) {
    for (int o = 16; o > 0; o >>= 1)
        am_merge(bv, bi, __shfl_xor_sync(0xffffffffu, bv, o), __shfl_xor_sync(0xffffffffu, bi, o));
    if ((threadIdx.x & 31) == 0) { s_v[threadIdx.x >> 5] = bv; s_i[threadIdx.x >> 5] = bi; }
    __syncthreads();
    if (threadIdx.x == 0)
        for (int j = 1; j < (int)(blockDim.x >> 5); j++) am_merge(bv, bi, s_v[j], s_i[j]);
}

__global__ void k_argmax_part(const float *x, int64_t n, int64_t slice) {
    cu_pdl_wait();
    __shared__ float s_v[32];
    __shared__ int s_i[32];
    const float *row = x + (int64_t)blockIdx.y * n;
    int64_t i0 = (int64_t)blockIdx.x * slice, i1 = i0 + slice < n ? i0 + slice : n;
    float bv = -INFINITY;
    int bi = -1;
    for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
        float v = row[i];
        if (isfinite(v)) am_merge(bv, bi, v, (int)i);
    }
    am_block(bv, bi, s_v, s_i);
    if (threadIdx.x == 0) {
        g_am_v[blockIdx.y * AM_SLICES + blockIdx.x] = bv;
        g_am_i[blockIdx.y * AM_SLICES + blockIdx.x] = bi;
    }
}

__global__ void k_argmax_final(int n_slices, int32_t *out) {
    cu_pdl_wait();
    __shared__ float s_v[32];
    __shared__ int s_i[32];
    float bv = -INFINITY;
    int bi = -1;
    if ((int)threadIdx.x < n_slices) {
        bv = g_am_v[blockIdx.x * AM_SLICES + threadIdx.x];
        bi = g_am_i[blockIdx.x * AM_SLICES + threadIdx.x];
    }
    am_block(bv, bi, s_v, s_i);
    if (threadIdx.x == 0) out[blockIdx.x] = bi;
}

extern "C" ds4_status cuda_argmax(const float *d_x, int64_t n_rows, int64_t n, int32_t *d_out,
                                  ds4_error *err) {
    if (n_rows <= 0) return DS4_OK;
    if (n <= 0 || n > INT32_MAX || n_rows > INT32_MAX)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_argmax: %lld rows of %lld logits",
                          (long long)n_rows, (long long)n);
    int64_t slices = (n + 4095) / 4096;
    if (slices > AM_SLICES) slices = AM_SLICES;
    int64_t slice = (n + slices - 1) / slices;
    for (int64_t r0 = 0; r0 < n_rows; r0 += AM_ROWS) {
        int64_t nr = n_rows - r0 < AM_ROWS ? n_rows - r0 : AM_ROWS;
        cu_launch(k_argmax_part, dim3((unsigned)slices, (unsigned)nr), 256, 0, d_x + r0 * n, n, slice);
        CU_LAUNCH_CHECK(err, "argmax launch");
        cu_launch(k_argmax_final, (unsigned)nr, AM_SLICES, 0, (int)slices, d_out + r0);
        CU_LAUNCH_CHECK(err, "argmax merge launch");
    }
    return DS4_OK;
}
