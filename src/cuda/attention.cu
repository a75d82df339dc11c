/*
 * cuda/attention.cu — sparse attention with sinks for query tokens of one layer (MODEL_MATH
 * §5.4-5.6): each (token, head) attends over its sliding window (by position) then its
 * compressed rows (all rows complete by p, or the indexer's selection on ratio-4 layers), with
 * the per-head sink as a zero-value key, then de-rotates the value tail at the query position.
 *
 * Layout (V4 has one shared KV head, MQA): a block takes ATT_HB heads of one token and a
 * split of ATT_KS consecutive keys of its attended set, so each key row is read from L2 once
 * per head group rather than once per head. It writes a partial (max, Σexp, Σexp·k) per
 * (head, split); a second kernel merges the splits with the sink and applies the inverse RoPE.
 *
 * Numerics vs model/attention.c attn_items: the scores tau·(q·k) are bit-identical (the dot
 * follows cpu_dot_f32's order); the softmax uses per-split maxima and the splits' sums are
 * merged, so the outputs agree to a few f32 ULP, not bit for bit. Two or more query tokens (a
 * prefill chunk) take attention_chunk.cu's kernels instead: the CPU's order step for step,
 * bit-identical. One
 * token (decode) takes attention_dec.cu (the same steps as the chunk kernel, over the whole
 * device) up to its row limit; the split/merge pair keeps longer lists and DS4_CUDA_ATTN_V1=1.
 *
 * Must not: project, normalise or round q/kv (other ops do), or write the window ring (the
 * caller appends the chunk's rows after attention, MODEL_MATH §7.1).
 */
#include "attention_dec.cuh"
#include "attention_impl.cuh"
#include "chunk_ops.h"

#include <stdlib.h>

/* grid (head groups, splits, tokens), 256 threads; shared q [ATT_HB][Dh]. */
__global__ void __launch_bounds__(256) k_attn_split(attn_args a) {
    cu_pdl_wait();
    extern __shared__ float sq[];
    __shared__ const float *kp[ATT_KS];
    __shared__ float sc[ATT_HB][ATT_KS];
    if (a.dpos) a.pos0 = *a.dpos;
    int64_t t = blockIdx.z, h0 = (int64_t)blockIdx.x * ATT_HB, Dh = a.Dh;
    int64_t split = blockIdx.y, k0 = split * ATT_KS;
    int nh = (int)(a.H - h0 < ATT_HB ? a.H - h0 : ATT_HB);
    int64_t s0, n_win, n_keys;
    const int32_t *sel;
    attn_span(a, t, &s0, &n_win, &n_keys, &sel);
    int nk = (int)(n_keys - k0 < ATT_KS ? (n_keys - k0 > 0 ? n_keys - k0 : 0) : ATT_KS);
    float *part = a.part + ((t * a.H + h0) * a.n_splits + split) * (Dh + 2);
    int64_t pstride = a.n_splits * (Dh + 2); /* next head, same split */
    if (nk == 0) {
        for (int h = 0; h < nh; h++)
            for (int64_t d = threadIdx.x; d < Dh + 2; d += blockDim.x)
                part[h * pstride + d] = d == Dh ? -INFINITY : 0.0f;
        return;
    }
    for (int64_t i = threadIdx.x; i < (int64_t)nh * Dh; i += blockDim.x)
        sq[i] = a.q[(t * a.H + h0) * Dh + i];
    if (threadIdx.x < ATT_KS)
        kp[threadIdx.x] = attn_key(a, s0, n_win, sel, k0 + (threadIdx.x < nk ? threadIdx.x : 0));
    __syncthreads();
    /* Scores: lane group g (8 lanes) takes key g and all heads at once (independent chains),
     * each chain in cu_dot8_ref's order so q·k is the CPU's cpu_dot_f32 bit for bit. */
    const float tau = (float)(1.0 / sqrt((double)Dh)); /* MODEL_MATH §5.5 */
    {
        int g = threadIdx.x >> 3, k = threadIdx.x & 7;
        float v[ATT_HB];
        attn_dot_heads(sq, kp[g], Dh, k, v);
#pragma unroll
        for (int h = 0; h < ATT_HB; h++)
            if (k == 0 && h < nh) sc[h][g] = g < nk ? __fmul_rn(tau, v[h]) : -INFINITY;
    }
    __syncthreads();
    /* Warp h takes head h, lane i key i: split max, exp(s - max) (rounded from double), sum. */
    {
        int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
        if (w < nh) {
            float v = sc[w][lane], m = v;
            for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
            float e = lane < nk ? cu_exp_ref(__fsub_rn(v, m)) : 0.0f;
            sc[w][lane] = e;
            float l = cu_warp_sum(e);
            if (lane == 0) {
                part[w * pstride + Dh] = m;
                part[w * pstride + Dh + 1] = l;
            }
        }
    }
    __syncthreads();
    /* Σ_i e_i·k_i[d] in key order; each key element is loaded once for all heads. */
    for (int64_t d = threadIdx.x; d < Dh; d += blockDim.x) {
        float acc[ATT_HB];
#pragma unroll
        for (int h = 0; h < ATT_HB; h++) acc[h] = 0.0f;
#pragma unroll 4
        for (int i = 0; i < nk; i++) {
            float kv = kp[i][d];
#pragma unroll
            for (int h = 0; h < ATT_HB; h++) acc[h] = __fadd_rn(acc[h], __fmul_rn(sc[h][i], kv));
        }
#pragma unroll
        for (int h = 0; h < ATT_HB; h++)
            if (h < nh) part[h * pstride + d] = acc[h];
    }
}

/* grid (H, tokens): merge the splits with the sink (a zero-value key), inverse RoPE. */
__global__ void __launch_bounds__(256) k_attn_merge(attn_args a) {
    cu_pdl_wait();
    if (a.dpos) a.pos0 = *a.dpos;
    extern __shared__ float so[];
    __shared__ float sw[1024];
    __shared__ float s_den;
    int64_t h = blockIdx.x, t = blockIdx.y, Dh = a.Dh, p = a.pos0 + t, S = a.n_splits;
    const float *part = a.part + (t * a.H + h) * S * (Dh + 2);
    __shared__ float red[32];
    float m = -INFINITY;
    for (int64_t s = threadIdx.x; s < S; s += blockDim.x) m = fmaxf(m, part[s * (Dh + 2) + Dh]);
    float M = fmaxf(cu_block_max(m, red), a.sinks[h]);
    float dl = 0.0f;
    for (int64_t s = threadIdx.x; s < S; s += blockDim.x) {
        float w = cu_exp_ref(__fsub_rn(part[s * (Dh + 2) + Dh], M));
        sw[s] = w;
        dl = __fadd_rn(dl, __fmul_rn(w, part[s * (Dh + 2) + Dh + 1]));
    }
    dl = cu_block_sum(dl, red);
    if (threadIdx.x == 0) s_den = __fadd_rn(cu_exp_ref(__fsub_rn(a.sinks[h], M)), dl);
    __syncthreads();
    float inv = __fdiv_rn(1.0f, s_den);
    for (int64_t d = threadIdx.x; d < Dh; d += blockDim.x) {
        float acc = 0.0f;
#pragma unroll 4
        for (int64_t s = 0; s < S; s++) acc = __fadd_rn(acc, __fmul_rn(sw[s], part[s * (Dh + 2) + d]));
        so[d] = __fmul_rn(acc, inv);
    }
    __syncthreads();
    /* MODEL_MATH §5.6: inverse RoPE of the value tail at the query position. */
    int64_t tail = Dh - a.n_rope;
    for (int64_t j = threadIdx.x; j < a.n_rope / 2; j += blockDim.x)
        cu_rope_pair(so + tail + 2 * j, a.freqs[j], (float)p, 1);
    __syncthreads();
    float *o = a.out + (t * a.H + h) * Dh;
    for (int64_t d = threadIdx.x; d < Dh; d += blockDim.x) o[d] = so[d];
}

extern "C" size_t cuda_attn_max_keys(int64_t W, int ratio, int64_t topk, int indexed,
                                     int64_t pos_end) {
    int64_t n = W + (indexed ? topk : (ratio ? pos_end / ratio : 0));
    return (size_t)n;
}

static int64_t attn_splits(int64_t W, int ratio, int64_t topk, int indexed, int64_t pos_end) {
    int64_t keys = (int64_t)cuda_attn_max_keys(W, ratio, topk, indexed, pos_end);
    return (keys + ATT_KS - 1) / ATT_KS;
}

extern "C" size_t cuda_attn_scratch_bytes(int64_t n_tok, int64_t H, int64_t Dh, int64_t W,
                                          int ratio, int64_t topk, int indexed, int64_t pos0) {
    int64_t S = attn_splits(W, ratio, topk, indexed, pos0 + n_tok);
    if (cu_attc_use(n_tok, Dh, (int64_t)cuda_attn_max_keys(W, ratio, topk, indexed, pos0 + n_tok), 0))
        return sizeof(float); /* the chunk kernel needs no partials */
    size_t b = (size_t)n_tok * (size_t)H * (size_t)S * (size_t)(Dh + 2) * sizeof(float);
    size_t d = n_tok == 1 ? attd_scratch_bytes(H, Dh, (int64_t)cuda_attn_max_keys(W, ratio, topk, indexed, pos0 + 1)) : 0;
    return b > d ? b : d; /* either decode path (DS4_CUDA_ATTN_V1) */
}

/* DS4_CUDA_ATTN_V1=1: one-token attention by the split/merge kernels above (read per call). */
static int attd_v1(void) {
    const char *v = getenv("DS4_CUDA_ATTN_V1");
    return v && atoi(v) == 1;
}

/* pos0: the position, or with d_pos0 a bound of it that sizes the splits (the kernels read
 * the position; splits past its keys write neutral partials the merge adds as exact zeros). */
static ds4_status attn(const float *d_q, const float *d_kv_chunk, const float *d_ring,
                       int64_t W, const float *d_comp, int ratio, const int32_t *d_isel,
                       const int32_t *d_n_isel, int64_t topk, const float *d_sinks,
                       int64_t n_tok, int64_t pos0, const int64_t *d_pos0, int64_t H, int64_t Dh,
                       int n_rope, const float *d_freqs, float *d_scratch, float *d_out,
                       ds4_error *err) {
    if (n_tok <= 0) return DS4_OK;
    if (W < 1 || H < 1 || H > 65535 || n_tok > 65535 || Dh < 1 || Dh > 4096 || n_rope < 0 ||
        (n_rope & 1) || n_rope > Dh || ratio < 0 || pos0 < 0 ||
        (d_isel && (!d_n_isel || topk < 1)))
        return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                          "cuda_attn: W %lld, H %lld, Dh %lld, n_rope %d, ratio %d, %lld tokens",
                          (long long)W, (long long)H, (long long)Dh, n_rope, ratio,
                          (long long)n_tok);
    int64_t S = attn_splits(W, ratio, topk, d_isel != NULL, pos0 + n_tok);
    if (S > 1024 || S > 65535)
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED,
                          "cuda_attn: %lld attended rows exceed the %d the merge supports",
                          (long long)S * ATT_KS, 1024 * ATT_KS);
    attn_args a = {d_q, d_kv_chunk, d_ring, d_comp, d_sinks, d_freqs, d_isel, d_n_isel,
                   W, topk, pos0, H, Dh, S, ratio, n_rope, d_scratch, d_out, d_pos0};
    int64_t keys = (int64_t)cuda_attn_max_keys(W, ratio, topk, d_isel != NULL, pos0 + n_tok);
    if (n_tok == 1 && !attd_v1()) { /* attention_dec.cu: the CPU's order, two launches (h2) */
        const attd_in in = {d_q, d_kv_chunk, d_ring, d_comp, d_sinks, d_freqs, d_isel, d_n_isel,
                            W, topk, pos0, H, Dh, ratio, n_rope, d_pos0, keys, d_scratch, d_out};
        ds4_status st = DS4_OK;
        if (attd_launch(in, &st, err)) return st;
    }
    if (cu_attc_use(n_tok, Dh, keys, d_pos0 != NULL)) return cu_attc(a, n_tok, keys, err);
    size_t smem = (size_t)ATT_HB * (size_t)Dh * sizeof(float);
    if (smem > 48 * 1024)
        CU_CHECK(cudaFuncSetAttribute(k_attn_split, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      (int)smem),
                 err, "attn shared memory");
    dim3 g1((unsigned)((H + ATT_HB - 1) / ATT_HB), (unsigned)S, (unsigned)n_tok);
    cu_launch(k_attn_split, g1, 256, smem, a);
    CU_LAUNCH_CHECK(err, "attn split launch");
    cu_launch(k_attn_merge, dim3((unsigned)H, (unsigned)n_tok), 256, (size_t)Dh * sizeof(float), a);
    CU_LAUNCH_CHECK(err, "attn merge launch");
    return DS4_OK;
}

extern "C" ds4_status cuda_attn(const float *d_q, const float *d_kv_chunk, const float *d_ring,
                                int64_t W, const float *d_comp, int ratio, const int32_t *d_isel,
                                const int32_t *d_n_isel, int64_t topk, const float *d_sinks,
                                int64_t n_tok, int64_t pos0, int64_t H, int64_t Dh, int n_rope,
                                const float *d_freqs, float *d_scratch, float *d_out,
                                ds4_error *err) {
    return attn(d_q, d_kv_chunk, d_ring, W, d_comp, ratio, d_isel, d_n_isel, topk, d_sinks, n_tok,
                pos0, NULL, H, Dh, n_rope, d_freqs, d_scratch, d_out, err);
}

/* cuda_attn with q's per-head RMSNorm (no weight, eps q_eps) and RoPE at the token positions
 * done first (MODEL_MATH §3.2-3.3, the ops cuda_rmsnorm + cuda_rope_tail would do on q): inside
 * k_attn_chunk2 on the rows it stages when it takes the call, else as cuda_qnorm_rope_chunk on
 * d_q then cuda_attn. d_q is left unnormalized in the first case. */
extern "C" ds4_status cuda_attn_qnorm(float *d_q, const float *d_kv_chunk, const float *d_ring,
                                      int64_t W, const float *d_comp, int ratio,
                                      const int32_t *d_isel, const int32_t *d_n_isel,
                                      int64_t topk, const float *d_sinks, int64_t n_tok,
                                      int64_t pos0, int64_t H, int64_t Dh, int n_rope,
                                      const float *d_freqs, float q_eps, float *d_scratch,
                                      float *d_out, ds4_error *err) {
    int64_t keys = (int64_t)cuda_attn_max_keys(W, ratio, topk, d_isel != NULL, pos0 + n_tok);
    bool fused = q_eps > 0.0f && n_tok >= 2 && n_tok <= 65535 && W >= 1 && H >= 1 &&
                 H <= 65535 && Dh < 2048 && n_rope >= 0 && !(n_rope & 1) && n_rope <= Dh && ratio >= 0 && pos0 >= 0 &&
                 (!d_isel || (d_n_isel && topk >= 1)) && cu_attc_use(n_tok, Dh, keys, 0) &&
                 cu_attc_qnorm_ok(Dh, keys);
    if (!fused) {
        ds4_status st = cuda_qnorm_rope_chunk(d_q, n_tok * H, Dh, q_eps, Dh - n_rope, H, n_rope,
                                              d_freqs, pos0, err);
        return st ? st : cuda_attn(d_q, d_kv_chunk, d_ring, W, d_comp, ratio, d_isel, d_n_isel,
                                   topk, d_sinks, n_tok, pos0, H, Dh, n_rope, d_freqs, d_scratch,
                                   d_out, err);
    }
    int64_t S = attn_splits(W, ratio, topk, d_isel != NULL, pos0 + n_tok);
    attn_args a = {d_q, d_kv_chunk, d_ring, d_comp, d_sinks, d_freqs, d_isel, d_n_isel,
                   W, topk, pos0, H, Dh, S, ratio, n_rope, d_scratch, d_out, NULL};
    return cu_attc(a, n_tok, keys, err, q_eps);
}

extern "C" ds4_status cuda_attn_dpos(const float *d_q, const float *d_kv_chunk,
                                     const float *d_ring, int64_t W, const float *d_comp,
                                     int ratio, const int32_t *d_isel, const int32_t *d_n_isel,
                                     int64_t topk, const float *d_sinks, int64_t n_tok,
                                     const int64_t *d_pos0, int64_t pos_bound, int64_t H,
                                     int64_t Dh, int n_rope, const float *d_freqs,
                                     float *d_scratch, float *d_out, ds4_error *err) {
    if (!d_pos0 || pos_bound < n_tok)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_attn_dpos: bound %lld",
                          (long long)pos_bound);
    return attn(d_q, d_kv_chunk, d_ring, W, d_comp, ratio, d_isel, d_n_isel, topk, d_sinks, n_tok,
                pos_bound - n_tok, d_pos0, H, Dh, n_rope, d_freqs, d_scratch, d_out, err);
}
