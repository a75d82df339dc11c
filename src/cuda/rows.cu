/*
 * cuda/rows.cu — row gather/scatter for the batched MoE of a prefill chunk (issue #7):
 * dst[dst_idx[i]] = src[src_idx[i]] for i < n rows of D floats (an index NULL = identity).
 * Pure data movement, bit-exact. Must not: know what the rows mean.
 */
#include "cuda_api.h"
#include "ops.cuh"

__global__ void k_rows_copy(float *dst, const int32_t *dst_idx, const float *src,
                            const int32_t *src_idx, int64_t D) {
    int64_t i = blockIdx.x;
    int64_t di = dst_idx ? dst_idx[i] : i, si = src_idx ? src_idx[i] : i;
    float *d = dst + di * D;
    const float *s = src + si * D;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) d[j] = s[j];
}

extern "C" ds4_status cuda_rows_copy(float *d_dst, const int32_t *d_dst_idx, const float *d_src,
                                     const int32_t *d_src_idx, int64_t n, int64_t D,
                                     ds4_error *err) {
    if (n <= 0) return DS4_OK;
    if (D <= 0 || n > INT32_MAX)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_rows_copy: %lld rows of %lld",
                          (long long)n, (long long)D);
    k_rows_copy<<<(unsigned)n, 256, 0, cu_stream>>>(d_dst, d_dst_idx, d_src, d_src_idx, D);
    CU_LAUNCH_CHECK(err, "rows_copy launch");
    return DS4_OK;
}
