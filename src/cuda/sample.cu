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

__global__ void k_argmax(const float *x, int64_t n, int32_t *out) {
    __shared__ float s_v[32];
    __shared__ int s_i[32];
    const float *row = x + (int64_t)blockIdx.x * n;
    float bv = -INFINITY;
    int bi = -1;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        float v = row[i];
        if (isfinite(v)) am_merge(bv, bi, v, (int)i);
    }
    for (int o = 16; o > 0; o >>= 1)
        am_merge(bv, bi, __shfl_xor_sync(0xffffffffu, bv, o), __shfl_xor_sync(0xffffffffu, bi, o));
    if ((threadIdx.x & 31) == 0) { s_v[threadIdx.x >> 5] = bv; s_i[threadIdx.x >> 5] = bi; }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int j = 1; j < (int)(blockDim.x >> 5); j++) am_merge(bv, bi, s_v[j], s_i[j]);
        out[blockIdx.x] = bi;
    }
}

extern "C" ds4_status cuda_argmax(const float *d_x, int64_t n_rows, int64_t n, int32_t *d_out,
                                  ds4_error *err) {
    if (n_rows <= 0) return DS4_OK;
    if (n <= 0 || n > INT32_MAX || n_rows > INT32_MAX)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_argmax: %lld rows of %lld logits",
                          (long long)n_rows, (long long)n);
    k_argmax<<<(unsigned)n_rows, 1024>>>(d_x, n, d_out);
    CU_LAUNCH_CHECK(err, "argmax launch");
    return DS4_OK;
}
