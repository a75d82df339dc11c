/*
 * cuda/norm.cu — RMSNorm over rows (MODEL_MATH §3.1 with weight, §3.2 per-head without) and the
 * row softmax. One block per row. Must not: know which tensor a row belongs to.
 */
#include "cuda_api.h"
#include "ops.cuh"

/* out_i = w_i·(x_i·r), r = 1/sqrt(mean(x²)+eps): the cpu_rmsnorm expression. out may alias x. */
__global__ void k_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps) {
    cu_pdl_wait();
    __shared__ double sh[32];
    const float *xr = x + (int64_t)blockIdx.x * n;
    float *orow = out + (int64_t)blockIdx.x * n;
    float r = cu_block_rms_inv(xr, n, eps, sh);
    __syncthreads(); /* every read of xr is done before an aliased write */
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        float v = __fmul_rn(xr[i], r);
        orow[i] = w ? __fmul_rn(w[i], v) : v;
    }
}

extern "C" ds4_status cuda_rmsnorm(float *d_out, const float *d_x, const float *d_w,
                                   int64_t n_rows, int64_t n, float eps, ds4_error *err) {
    if (n_rows <= 0) return DS4_OK;
    if (n <= 0 || n_rows > INT32_MAX)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_rmsnorm: %lld rows of %lld values",
                          (long long)n_rows, (long long)n);
    /* Few long rows (decode): one wide block per row keeps the load chains short. */
    int threads = n_rows < 32 && n >= 2048 ? 1024 : 256;
    cu_launch(k_rmsnorm, (unsigned)n_rows, threads, 0, d_out, d_x, d_w, n, eps);
    CU_LAUNCH_CHECK(err, "rmsnorm launch");
    return DS4_OK;
}

/* cpu_softmax: max, exp(x - max) in f32, sum in double, multiply by the f32 reciprocal. */
__global__ void k_softmax(float *x, int64_t n) {
    cu_pdl_wait();
    __shared__ float shf[32];
    __shared__ double shd[32];
    float *row = x + (int64_t)blockIdx.x * n;
    float m = -INFINITY;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, row[i]);
    m = cu_block_max(m, shf);
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        float e = cu_exp_ref(__fsub_rn(row[i], m));
        row[i] = e;
        s += e;
    }
    s = cu_block_sum_d(s, shd);
    float inv = (float)(1.0 / s);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) row[i] = __fmul_rn(row[i], inv);
}

extern "C" ds4_status cuda_softmax(float *d_x, int64_t n_rows, int64_t n, ds4_error *err) {
    if (n_rows <= 0) return DS4_OK;
    if (n <= 0 || n_rows > INT32_MAX)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_softmax: %lld rows of %lld values",
                          (long long)n_rows, (long long)n);
    cu_launch(k_softmax, (unsigned)n_rows, 256, 0, d_x, n);
    CU_LAUNCH_CHECK(err, "softmax launch");
    return DS4_OK;
}

/* x *= s elementwise (the indexer weight scale 1/sqrt(id·ih), model/attention.c §8). */
__global__ void k_scale(float *x, int64_t n, float s) {
    cu_pdl_wait();
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = __fmul_rn(x[i], s);
}

extern "C" ds4_status cuda_scale(float *d_x, int64_t n, float s, ds4_error *err) {
    if (n <= 0) return DS4_OK;
    cu_launch(k_scale, cu_blocks(n, 256), 256, 0, d_x, n, s);
    CU_LAUNCH_CHECK(err, "scale launch");
    return DS4_OK;
}
