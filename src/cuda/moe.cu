/*
 * cuda/moe.cu — the MoE arithmetic around the expert matvecs (MODEL_MATH §9): router scores
 * (sqrt-softplus), expert selection (biased top-k, ties to the lower id, or the hash table
 * tid2eid), routing weights, the clamped SwiGLU and the combination of expert outputs.
 * Same steps as model/moe.c. The expert matvecs themselves are cuda_matvec_experts (matvec.cu).
 * Must not: read expert weights or decide which layers are hash layers.
 */
#include "cuda_api.h"
#include "ops.cuh"

#define MOE_MAX_USED 32

/* One block per token: its threads compute p_e into dynamic shared memory [E] (one expert per
 * thread: the sqrt-softplus in double is a long dependent chain, issue #7), then warp 0 selects
 * (lane l owns experts l, l+32, ...; E <= 1024) by warp reductions, no block barriers. */
__global__ void k_moe_route(const float *logits, const float *bias, const int32_t *tid2eid,
                            const int32_t *tokens, int E, int K, float route_scale, int norm,
                            int32_t *sel_out, float *w_out) {
    cu_pdl_wait();
    extern __shared__ float p[];
    __shared__ int32_t sel[MOE_MAX_USED];
    int64_t t = blockIdx.x;
    int lane = threadIdx.x;
    for (int e = threadIdx.x; e < E; e += blockDim.x) p[e] = __fsqrt_rn(cu_softplus_ref(logits[t * E + e]));
    __syncthreads();
    if (threadIdx.x >= 32) return;
    if (tid2eid) {
        if (lane < K) sel[lane] = tid2eid[(int64_t)tokens[t] * K + lane];
    } else {
        /* MODEL_MATH §9.2: K rounds of "largest p+bias among the unused, lowest id on ties". */
        uint32_t used = 0;
        for (int k = 0; k < K; k++) {
            float bv = -INFINITY;
            int bi = -1;
            for (int q = 0, e = lane; e < E; q++, e += 32) {
                if ((used >> q) & 1) continue;
                float v = __fadd_rn(p[e], bias[e]);
                if (bi < 0 || v > bv) { bv = v; bi = e; }
            }
            for (int o = 16; o > 0; o >>= 1) {
                float ov = __shfl_xor_sync(0xffffffffu, bv, o);
                int oi = __shfl_xor_sync(0xffffffffu, bi, o);
                if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) { bv = ov; bi = oi; }
            }
            if (bi >= 0 && bi % 32 == lane) used |= 1u << (bi / 32);
            if (lane == 0) sel[k] = bi;
        }
    }
    __syncwarp();
    if (lane == 0) {
        /* Ascending ids (the combination order), then §9.3 weights from the unbiased p. */
        for (int a = 1; a < K; a++)
            for (int b = a; b > 0 && sel[b - 1] > sel[b]; b--) {
                int32_t x = sel[b]; sel[b] = sel[b - 1]; sel[b - 1] = x;
            }
        float sum = 0.0f;
        for (int k = 0; k < K; k++) sum = __fadd_rn(sum, p[sel[k]]);
        for (int k = 0; k < K; k++) {
            sel_out[t * K + k] = sel[k];
            w_out[t * K + k] = norm ? __fmul_rn(__fdiv_rn(p[sel[k]], sum), route_scale)
                                    : __fmul_rn(p[sel[k]], route_scale);
        }
    }
}

extern "C" ds4_status cuda_moe_route(const float *d_logits, const float *d_bias,
                                     const int32_t *d_tid2eid, const int32_t *d_tokens,
                                     int64_t n_tok, int n_expert, int n_used, float route_scale,
                                     int norm_weights, int32_t *d_sel, float *d_w,
                                     ds4_error *err) {
    if (n_tok <= 0) return DS4_OK;
    if (n_expert < 1 || n_expert > 1024 || n_used < 1 || n_used > MOE_MAX_USED ||
        n_used > n_expert || n_tok > INT32_MAX)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_moe_route: %d of %d experts", n_used,
                          n_expert);
    if (!d_tid2eid && !d_bias)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                          "cuda_moe_route: neither a selection bias nor a tid2eid table");
    if (d_tid2eid && !d_tokens)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_moe_route: hash routing without tokens");
    cu_launch(k_moe_route, (unsigned)n_tok, 32 * ((n_expert + 31) / 32), (size_t)n_expert * sizeof(float), 
        d_logits, d_bias, d_tid2eid, d_tokens, n_expert, n_used, route_scale, norm_weights,
        d_sel, d_w);
    CU_LAUNCH_CHECK(err, "moe_route launch");
    return DS4_OK;
}

/* MODEL_MATH §9.4: h = silu(min(g, c))·clamp(u, -c, c)·w, the expression of model/moe.c. */
__global__ void k_swiglu(const float *g, const float *u, const float *rw, int64_t n_rows,
                         int64_t F, float clamp, float *h) {
    cu_pdl_wait();
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_rows * F) return;
    float gv = g[i] > clamp ? clamp : g[i];
    float uv = u[i] > clamp ? clamp : (u[i] < -clamp ? -clamp : u[i]);
    float w = rw ? rw[i / F] : 1.0f;
    h[i] = __fmul_rn(__fmul_rn(cu_silu_ref(gv), uv), w);
}

extern "C" ds4_status cuda_swiglu(const float *d_g, const float *d_u, const float *d_rw,
                                  int64_t n_rows, int64_t F, float clamp, float *d_h,
                                  ds4_error *err) {
    if (n_rows <= 0 || F <= 0) return DS4_OK;
    int64_t n = n_rows * F;
    cu_launch(k_swiglu, cu_blocks(n, 256), 256, 0, d_g, d_u, d_rw, n_rows, F, clamp, d_h);
    CU_LAUNCH_CHECK(err, "swiglu launch");
    return DS4_OK;
}

/* MODEL_MATH §9.5: out = ((0 + y_0) + y_1) ... + y_{K-1} (+ shared), experts in ascending id
 * order as model/moe.c sums them. */
__global__ void k_moe_combine(const float *y, const float *shared, int64_t n_tok, int K,
                              int64_t D, float *out) {
    cu_pdl_wait();
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_tok * D) return;
    int64_t t = i / D, c = i % D;
    float s = 0.0f;
    for (int k = 0; k < K; k++) s = __fadd_rn(s, y[(t * K + k) * D + c]);
    if (shared) s = __fadd_rn(s, shared[i]);
    out[i] = s;
}

extern "C" ds4_status cuda_moe_combine(const float *d_y, const float *d_shared, int64_t n_tok,
                                       int n_used, int64_t D, float *d_out, ds4_error *err) {
    if (n_tok <= 0 || D <= 0) return DS4_OK;
    if (n_used < 0)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_moe_combine: n_used = %d", n_used);
    int64_t n = n_tok * D;
    cu_launch(k_moe_combine, cu_blocks(n, 256), 256, 0, d_y, d_shared, n_tok, n_used, D, d_out);
    CU_LAUNCH_CHECK(err, "moe_combine launch");
    return DS4_OK;
}
