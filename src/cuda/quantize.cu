/*
 * cuda/quantize.cu — activation quantizers on the device, bit-identical to the CPU reference:
 * Q8_K (GGUF_LAYOUT §4.6, quants README §5.1) and ds4's Q8_0 activation records (quants
 * README §4.4). Round-half-even via __float2int_rn matches lrintf; the division is IEEE.
 */
#include "cuda_api.h"
#include "ops.cuh"
#include "quant.cuh"

/* One warp per 256-value block; lane l owns values 8l..8l+7. */
__global__ void k_quantize_q8_K(const float *__restrict__ x, uint8_t *__restrict__ out) {
    cu_pdl_wait();
    const int b = blockIdx.x, lane = threadIdx.x;
    const float *xb = x + (int64_t)b * 256 + lane * 8;
    float v[8];
    for (int i = 0; i < 8; i++) v[i] = xb[i];
    q8k_warp(v, out + (int64_t)b * CU_Q8_K_BYTES);
}

/* One warp per 32-value record; lane l owns value l. */
__global__ void k_quantize_q8_0_act(const float *__restrict__ x, uint8_t *__restrict__ out) {
    cu_pdl_wait();
    const int b = blockIdx.x;
    q8act_warp(x[(int64_t)b * 32 + threadIdx.x], out + (int64_t)b * CU_Q8_0ACT_BYTES);
}

/* moe.cu k_swiglu's value (clamped SwiGLU times the row's routing weight, MODEL_MATH §9.4) of
 * element i of the [n_rows][F] block. */
__device__ __forceinline__ float swiglu_at(const float *g, const float *u, const float *rw,
                                           int64_t F, float clamp, int64_t i) {
    float gv = g[i] > clamp ? clamp : g[i];
    float uv = u[i] > clamp ? clamp : (u[i] < -clamp ? -clamp : u[i]);
    float w = rw ? rw[i / F] : 1.0f;
    return __fmul_rn(__fmul_rn(cu_silu_ref(gv), uv), w);
}

/* SwiGLU and the quantizer of its output in one pass (issue #7: one launch instead of two):
 * warp b makes activation record b of h (KIND Q8_K: 256 values, Q8_0: 32). */
template <int KIND>
__global__ void k_swiglu_quant(const float *g, const float *u, const float *rw, int64_t F,
                               float clamp, float *h, uint8_t *out) {
    cu_pdl_wait();
    const int64_t b = blockIdx.x;
    const int lane = threadIdx.x;
    if (KIND == CUDA_ACT_Q8_K) {
        float v[8];
        for (int i = 0; i < 8; i++) {
            const int64_t k = b * 256 + lane * 8 + i;
            v[i] = swiglu_at(g, u, rw, F, clamp, k);
            h[k] = v[i];
        }
        q8k_warp(v, out + b * CU_Q8_K_BYTES);
    } else {
        const int64_t k = b * 32 + lane;
        const float v = swiglu_at(g, u, rw, F, clamp, k);
        h[k] = v;
        q8act_warp(v, out + b * CU_Q8_0ACT_BYTES);
    }
}

extern "C" ds4_status cuda_swiglu_quant(int kind, const float *d_g, const float *d_u,
                                        const float *d_rw, int64_t n_rows, int64_t F, float clamp,
                                        float *d_h, void *d_q, ds4_error *err) {
    const int64_t blk = kind == CUDA_ACT_Q8_K ? 256 : kind == CUDA_ACT_Q8_0 ? 32 : 0;
    if (!blk || n_rows <= 0 || F <= 0 || F % blk)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_swiglu_quant: kind %d, %lld rows of %lld",
                          kind, (long long)n_rows, (long long)F);
    const unsigned nb = (unsigned)(n_rows * F / blk);
    if (kind == CUDA_ACT_Q8_K)
        cu_launch(k_swiglu_quant<CUDA_ACT_Q8_K>, nb, 32, 0, d_g, d_u, d_rw, F, clamp, d_h, (uint8_t *)d_q);
    else
        cu_launch(k_swiglu_quant<CUDA_ACT_Q8_0>, nb, 32, 0, d_g, d_u, d_rw, F, clamp, d_h, (uint8_t *)d_q);
    CU_CHECK(cudaGetLastError(), err, "swiglu_quant launch");
    return DS4_OK;
}

extern "C" ds4_status cuda_quantize_q8_K(const float *d_x, void *d_q, int64_t n, ds4_error *err) {
    if (n <= 0 || n % 256 != 0)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda q8_K: n=%lld is not a positive multiple of 256",
                          (long long)n);
    cu_launch(k_quantize_q8_K, (unsigned)(n / 256), 32, 0, d_x, (uint8_t *)d_q);
    CU_CHECK(cudaGetLastError(), err, "quantize q8_K launch");
    return DS4_OK;
}

extern "C" ds4_status cuda_quantize_q8_0_act(const float *d_x, void *d_q, int64_t n, ds4_error *err) {
    if (n <= 0 || n % 32 != 0)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda q8_0 act: n=%lld is not a positive multiple of 32",
                          (long long)n);
    cu_launch(k_quantize_q8_0_act, (unsigned)(n / 32), 32, 0, d_x, (uint8_t *)d_q);
    CU_CHECK(cudaGetLastError(), err, "quantize q8_0 act launch");
    return DS4_OK;
}
