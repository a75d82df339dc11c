/*
 * cuda/hc_chunk.cu — hc_post (MODEL_MATH §4.3) over a prefill chunk (issue #7; h5):
 * Xout[t][k][c] = post[t][k]·f[t][c] + Σ_j comb[t][j][k]·X[t][j][c], the same operations in the
 * same order as k_hc_post (hc.cu) and model/hc.c hc_post, so the same bits. k_hc_post takes one
 * thread per output value: every X value is read hc times and each thread divides 64-bit
 * indices, ~330 us per call at 2048 tokens (86 calls per chunk on Flash). Here a thread owns
 * four columns of one token for all hc outputs: X, f read once as 16-byte units, post and comb
 * of the token staged in shared memory by the block (one token per block row).
 * Must not: know the layer structure (forward_chunk.c calls it).
 */
#include "chunk_ops.h"
#include "cuda_api.h"
#include "ops.cuh"

#define HCC_MAX 8 /* hc copies this kernel takes (V4: 4); more go to cuda_hc_post */

/* grid (column blocks, tokens), 256 threads; thread owns columns 4u .. 4u+3. */
template <int HC>
__global__ void __launch_bounds__(256) k_hc_post_chunk(const float *f, const float *X,
                                                       const float *post, const float *comb,
                                                       int64_t d, float *Xout) {
    cu_pdl_wait();
    __shared__ float s_post[HC], s_comb[HC * HC];
    int64_t t = blockIdx.y;
    if (threadIdx.x < HC) s_post[threadIdx.x] = post[t * HC + threadIdx.x];
    if (threadIdx.x < HC * HC) s_comb[threadIdx.x] = comb[t * HC * HC + threadIdx.x];
    __syncthreads();
    int64_t u = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, d4 = d / 4;
    if (u >= d4) return;
    const float4 *x4 = (const float4 *)(X + t * HC * d);
    float4 fv = ((const float4 *)(f + t * d))[u];
    float4 xv[HC];
#pragma unroll
    for (int j = 0; j < HC; j++) xv[j] = x4[j * d4 + u];
    float4 *o4 = (float4 *)(Xout + t * HC * d);
#pragma unroll
    for (int k = 0; k < HC; k++) {
        float p = s_post[k];
        float4 s = make_float4(__fmul_rn(p, fv.x), __fmul_rn(p, fv.y), __fmul_rn(p, fv.z),
                               __fmul_rn(p, fv.w));
#pragma unroll
        for (int j = 0; j < HC; j++) {
            float c = s_comb[j * HC + k];
            s.x = __fadd_rn(s.x, __fmul_rn(c, xv[j].x));
            s.y = __fadd_rn(s.y, __fmul_rn(c, xv[j].y));
            s.z = __fadd_rn(s.z, __fmul_rn(c, xv[j].z));
            s.w = __fadd_rn(s.w, __fmul_rn(c, xv[j].w));
        }
        o4[k * d4 + u] = s;
    }
}

template <int HC>
static void hcc_launch(const float *f, const float *X, const float *post, const float *comb,
                       int64_t n_tok, int64_t d, float *Xout) {
    dim3 g((unsigned)((d / 4 + 255) / 256), (unsigned)n_tok);
    cu_launch(k_hc_post_chunk<HC>, g, 256, 0, f, X, post, comb, d, Xout);
}

extern "C" ds4_status cuda_hc_post_chunk(const float *d_f, const float *d_X, const float *d_post,
                                         const float *d_comb, int64_t n_tok, int hc, int64_t d,
                                         float *d_Xout, ds4_error *err) {
    if (n_tok <= 0) return DS4_OK;
    bool vec = d % 4 == 0 && ((uintptr_t)d_f | (uintptr_t)d_X | (uintptr_t)d_Xout) % 16 == 0;
    if (!vec || n_tok > 65535 || (hc != 1 && hc != 2 && hc != 4 && hc != 8))
        return cuda_hc_post(d_f, d_X, d_post, d_comb, n_tok, hc, d, d_Xout, err);
    if (d_Xout == d_X)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_hc_post_chunk: Xout must not be X");
    switch (hc) {
    case 1: hcc_launch<1>(d_f, d_X, d_post, d_comb, n_tok, d, d_Xout); break;
    case 2: hcc_launch<2>(d_f, d_X, d_post, d_comb, n_tok, d, d_Xout); break;
    case 4: hcc_launch<4>(d_f, d_X, d_post, d_comb, n_tok, d, d_Xout); break;
    default: hcc_launch<HCC_MAX>(d_f, d_X, d_post, d_comb, n_tok, d, d_Xout); break;
    }
    CU_LAUNCH_CHECK(err, "hc_post chunk launch");
    return DS4_OK;
}
