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
__device__ __forceinline__ void swiglu_quant_rec(const float *g, const float *u, const float *rw,
                                                 int64_t F, float clamp, float *h, uint8_t *out,
                                                 int64_t b) {
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

template <int KIND>
__global__ void k_swiglu_quant(const float *g, const float *u, const float *rw, int64_t F,
                               float clamp, float *h, uint8_t *out) {
    cu_pdl_wait();
    swiglu_quant_rec<KIND>(g, u, rw, F, clamp, h, out, blockIdx.x);
}

/* Two SwiGLU+quantize problems in one launch (issue #7, the decode MoE: the routed experts' rows
 * and the shared expert's): blocks [0, n_rec of the first) make its records, the rest the
 * second's, each by the device function of the single launch (same operations, same bits). */
struct swq_prob {
    const float *g, *u, *rw;
    int64_t F, n_rec;
    float clamp;
    float *h;
    uint8_t *out;
    int kind;
};

__global__ void k_swiglu_quant2(swq_prob p0, swq_prob p1) {
    cu_pdl_wait();
    int64_t b = blockIdx.x;
    const bool second = b >= p0.n_rec;
    const swq_prob p = second ? p1 : p0;
    if (second) b -= p0.n_rec;
    if (p.kind == CUDA_ACT_Q8_K) swiglu_quant_rec<CUDA_ACT_Q8_K>(p.g, p.u, p.rw, p.F, p.clamp, p.h, p.out, b);
    else swiglu_quant_rec<CUDA_ACT_Q8_0>(p.g, p.u, p.rw, p.F, p.clamp, p.h, p.out, b);
}

static int swq_block(int kind) { return kind == CUDA_ACT_Q8_K ? 256 : kind == CUDA_ACT_Q8_0 ? 32 : 0; }

extern "C" ds4_status cuda_swiglu_quant_pair(int kind1, const float *d_g1, const float *d_u1,
                                             const float *d_rw1, int64_t n_rows1, int64_t F1,
                                             float clamp1, float *d_h1, void *d_q1, int kind2,
                                             const float *d_g2, const float *d_u2, const float *d_rw2,
                                             int64_t n_rows2, int64_t F2, float clamp2, float *d_h2,
                                             void *d_q2, ds4_error *err) {
    const int64_t b1 = swq_block(kind1), b2 = swq_block(kind2);
    if (!b1 || !b2 || n_rows1 <= 0 || F1 <= 0 || F1 % b1 || n_rows2 <= 0 || F2 <= 0 || F2 % b2 ||
        n_rows1 * F1 / b1 + n_rows2 * F2 / b2 > INT32_MAX)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                          "cuda_swiglu_quant_pair: kinds %d/%d, %lld rows of %lld, %lld rows of %lld", kind1,
                          kind2, (long long)n_rows1, (long long)F1, (long long)n_rows2, (long long)F2);
    const swq_prob p0 = {d_g1, d_u1, d_rw1, F1, n_rows1 * F1 / b1, clamp1, d_h1, (uint8_t *)d_q1, kind1};
    const swq_prob p1 = {d_g2, d_u2, d_rw2, F2, n_rows2 * F2 / b2, clamp2, d_h2, (uint8_t *)d_q2, kind2};
    cu_launch(k_swiglu_quant2, (unsigned)(p0.n_rec + p1.n_rec), 32, 0, p0, p1);
    CU_CHECK(cudaGetLastError(), err, "swiglu_quant_pair launch");
    return DS4_OK;
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
