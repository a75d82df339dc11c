/*
 * cuda/indexer.cu — the lightning indexer of ratio-4 layers (MODEL_MATH §8): per query token,
 * score every indexer row complete by its position, s_r = Σ_h w_h·relu(q_h·e_r) (heads in
 * order, dots in cpu_dot_f32's order, so scores are bit-identical to model/indexer.c), and keep
 * the top-k by (score desc, row asc), returned in ascending row order.
 *
 * Top-k is an exact radix select over the order-preserving bits of the scores (4 passes of
 * 8 bits); rows tied with the k-th score are taken lowest first by the ordered compaction that
 * writes the selection ascending.
 * Must not: prepare the queries (RoPE, Hadamard, FP4, weight scale are separate ops, §8).
 */
#include "cuda_api.h"
#include "ops.cuh"

/* grid (row blocks, n_tok), 256 threads; shared: q [ih][id], w [ih]. One warp per row, the 4
 * lane groups of 8 take 4 heads at a time; lane 0 adds the heads in ascending order. */
__global__ void k_idx_score(const float *q, const float *wts, const float *rows, int64_t pos0,
                            int64_t ih, int64_t id, int64_t topk, int64_t ld_scores,
                            float *scores, const int64_t *dpos) {
    if (dpos) pos0 = *dpos; /* cuda_indexer_topk_dpos */
    extern __shared__ float sh[];
    float *sq = sh, *sw = sh + ih * id;
    int64_t t = blockIdx.y, n_c = (pos0 + t + 1) / 4;
    if (n_c <= topk) return; /* every row is kept; no scores needed */
    for (int64_t i = threadIdx.x; i < ih * id; i += blockDim.x) sq[i] = q[t * ih * id + i];
    for (int64_t i = threadIdx.x; i < ih; i += blockDim.x) sw[i] = wts[t * ih + i];
    __syncthreads();
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 3;
    int64_t n_warps = (int64_t)gridDim.x * (blockDim.x >> 5);
    for (int64_t r = (int64_t)blockIdx.x * (blockDim.x >> 5) + warp; r < n_c; r += n_warps) {
        const float *e = rows + r * id;
        float s = 0.0f;
        for (int64_t h0 = 0; h0 < ih; h0 += 4) {
            int64_t h = h0 + g < ih ? h0 + g : 0;
            float d = cu_dot8_ref(sq + h * id, e, id);
            float dd[4];
            for (int k = 0; k < 4; k++) dd[k] = __shfl_sync(0xffffffffu, d, 8 * k);
            for (int k = 0; k < 4 && h0 + k < ih; k++)
                s = __fadd_rn(s, __fmul_rn(sw[h0 + k], dd[k] > 0.0f ? dd[k] : 0.0f));
        }
        if (lane == 0) scores[t * ld_scores + r] = s;
    }
}

/* The same scores with the row held in registers (ID = id known at compile time, multiple of
 * 8): each lane keeps e[8j + lane%8] for j < ID/8, so a row is read once for all heads and the
 * dot's chain runs on shared q and registers. Same summation order (cu_dot8_ref). */
template <int ID>
__global__ void __launch_bounds__(256) k_idx_score_reg(const float *q, const float *wts,
                                                       const float *rows, int64_t pos0,
                                                       int64_t ih, int64_t topk,
                                                       int64_t ld_scores, float *scores,
                                                       const int64_t *dpos) {
    if (dpos) pos0 = *dpos;
    extern __shared__ float sh[];
    float *sq = sh, *sw = sh + ih * ID;
    int64_t t = blockIdx.y, n_c = (pos0 + t + 1) / 4;
    if (n_c <= topk) return;
    for (int64_t i = threadIdx.x; i < ih * ID; i += blockDim.x) sq[i] = q[t * ih * ID + i];
    for (int64_t i = threadIdx.x; i < ih; i += blockDim.x) sw[i] = wts[t * ih + i];
    __syncthreads();
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 3, k = lane & 7;
    int64_t n_warps = (int64_t)gridDim.x * (blockDim.x >> 5);
    for (int64_t r = (int64_t)blockIdx.x * (blockDim.x >> 5) + warp; r < n_c; r += n_warps) {
        const float *e = rows + r * ID;
        float er[ID / 8];
#pragma unroll
        for (int j = 0; j < ID / 8; j++) er[j] = e[8 * j + k];
        float s = 0.0f;
        for (int64_t h0 = 0; h0 < ih; h0 += 4) {
            int64_t h = h0 + g < ih ? h0 + g : 0;
            const float *qh = sq + h * ID;
            float acc = 0.0f;
#pragma unroll
            for (int j = 0; j < ID / 8; j++) acc = __fadd_rn(acc, __fmul_rn(qh[8 * j + k], er[j]));
            acc = __fadd_rn(acc, __shfl_xor_sync(0xffffffffu, acc, 4));
            acc = __fadd_rn(acc, __shfl_xor_sync(0xffffffffu, acc, 1));
            acc = __fadd_rn(acc, __shfl_xor_sync(0xffffffffu, acc, 2));
            float dd[4];
#pragma unroll
            for (int m = 0; m < 4; m++) dd[m] = __shfl_sync(0xffffffffu, acc, 8 * m);
            for (int m = 0; m < 4 && h0 + m < ih; m++)
                s = __fadd_rn(s, __fmul_rn(sw[h0 + m], dd[m] > 0.0f ? dd[m] : 0.0f));
        }
        if (lane == 0) scores[t * ld_scores + r] = s;
    }
}

/* Order-preserving 32-bit key of a score (larger score, larger key); -0 == +0. */
__device__ __forceinline__ uint32_t idx_key(float s) {
    uint32_t u = s == 0.0f ? 0u : __float_as_uint(s);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* Exclusive block-wide prefix of a 64-bit count (1024 threads); s_warp holds 32 values. */
__device__ __forceinline__ unsigned long long idx_block_excl(unsigned long long v,
                                                             unsigned long long *s_warp) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    unsigned long long incl = v;
    for (int o = 1; o < 32; o <<= 1) {
        unsigned long long u = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += u;
    }
    if (lane == 31) s_warp[warp] = incl;
    __syncthreads();
    if (warp == 0) {
        unsigned long long w = lane < (int)(blockDim.x >> 5) ? s_warp[lane] : 0, x = w;
        for (int o = 1; o < 32; o <<= 1) {
            unsigned long long u = __shfl_up_sync(0xffffffffu, x, o);
            if (lane >= o) x += u;
        }
        s_warp[lane] = x - w;
    }
    __syncthreads();
    return s_warp[warp] + incl - v;
}

/* One block (1024 threads) per token. Four 8-bit radix passes find the score key T of the
 * k-th best row and how many rows scoring exactly T to keep (`rem`); the ordered compaction
 * then keeps every row above T and the first `rem` rows at T (lower rows win ties, MODEL_MATH
 * §17 #2), ascending. With `cached`, the token's scores are first copied to shared memory. */
__global__ void __launch_bounds__(1024) k_idx_topk(const float *scores, int64_t pos0,
                                                   int64_t topk, int64_t ld_scores, int cached,
                                                   int32_t *isel, int32_t *n_isel,
                                                   const int64_t *dpos) {
    if (dpos) pos0 = *dpos;
    extern __shared__ float s_sc[];
    __shared__ unsigned hist[256];
    __shared__ uint32_t s_prefix;
    __shared__ int64_t s_remaining;
    __shared__ unsigned long long s_warp[32];
    int64_t t = blockIdx.x, n_c = (pos0 + t + 1) / 4;
    int32_t *sel = isel + t * topk;
    if (n_c <= topk) {
        for (int64_t r = threadIdx.x; r < n_c; r += blockDim.x) sel[r] = (int32_t)r;
        if (threadIdx.x == 0) n_isel[t] = (int32_t)n_c;
        return;
    }
    const float *sc = scores + t * ld_scores;
    if (cached) {
        for (int64_t r = threadIdx.x; r < n_c; r += blockDim.x) s_sc[r] = sc[r];
        __syncthreads();
        sc = s_sc;
    }
    uint32_t prefix = 0, mask = 0;
    if (threadIdx.x == 0) s_remaining = topk;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
        __syncthreads();
        /* Scores share their top bits, so bins are hot: aggregate equal bins per warp. */
        for (int64_t base = 0; base < n_c; base += blockDim.x) {
            int64_t r = base + threadIdx.x;
            int bin = -1;
            if (r < n_c) {
                uint32_t k = idx_key(sc[r]);
                if ((k & mask) == prefix) bin = (int)((k >> shift) & 255);
            }
            unsigned peers = __match_any_sync(0xffffffffu, bin);
            if (bin >= 0 && (threadIdx.x & 31) == __ffs(peers) - 1)
                atomicAdd(&hist[bin], (unsigned)__popc(peers));
        }
        __syncthreads();
        if (threadIdx.x < 32) {
            /* Warp 0 finds the bin holding the cut: lane l owns bins 255-8l .. 248-8l. */
            int lane = threadIdx.x;
            int64_t need = s_remaining;
            __syncwarp(); /* every lane has read it before one lane rewrites it */
            unsigned c[8], tot = 0;
#pragma unroll
            for (int j = 0; j < 8; j++) { c[j] = hist[255 - 8 * lane - j]; tot += c[j]; }
            unsigned incl = tot;
            for (int o = 1; o < 32; o <<= 1) {
                unsigned v = __shfl_up_sync(0xffffffffu, incl, o);
                if (lane >= o) incl += v;
            }
            int64_t above = (int64_t)(incl - tot);
            if (above < need && need <= (int64_t)incl) {
                int b = 255 - 8 * lane;
                for (int j = 0; j < 8; j++, b--) {
                    if (above + c[j] >= need) break;
                    above += c[j];
                }
                s_remaining = need - above;
                s_prefix = prefix | ((uint32_t)b << shift);
            }
        }
        __syncthreads();
        prefix = s_prefix;
        mask |= 255u << shift;
    }
    const uint32_t T = prefix;
    const int64_t rem = s_remaining; /* rows scoring exactly T that are kept */
    int64_t chunk = (n_c + blockDim.x - 1) / blockDim.x;
    int64_t r0 = threadIdx.x * chunk, r1 = r0 + chunk < n_c ? r0 + chunk : n_c;
    unsigned long long cg = 0, ce = 0;
    for (int64_t r = r0; r < r1; r++) {
        uint32_t k = idx_key(sc[r]);
        cg += k > T;
        ce += k == T;
    }
    /* Greater and equal counts scanned together: (greater << 32) | equal. */
    unsigned long long ex = idx_block_excl((cg << 32) | ce, s_warp);
    int64_t g_before = (int64_t)(ex >> 32), e_seen = (int64_t)(ex & 0xFFFFFFFFull);
    int64_t out = g_before + (e_seen < rem ? e_seen : rem);
    for (int64_t r = r0; r < r1; r++) {
        uint32_t k = idx_key(sc[r]);
        if (k > T) sel[out++] = (int32_t)r;
        else if (k == T && e_seen++ < rem) sel[out++] = (int32_t)r;
    }
    if (threadIdx.x == 0) n_isel[t] = (int32_t)topk;
}

extern "C" size_t cuda_indexer_scratch_bytes(int64_t n_tok, int64_t pos0) {
    return (size_t)(n_tok > 0 ? n_tok : 0) * (size_t)((pos0 + n_tok) / 4 + 1) * sizeof(float);
}

/* pos0: the position, or with d_pos0 an upper bound of it (grids and scratch are sized for it;
 * the kernels read the position from d_pos0). */
static ds4_status indexer_topk(const float *d_q, const float *d_w, const float *d_rows,
                               int64_t n_tok, int64_t pos0, const int64_t *d_pos0, int64_t ih,
                               int64_t id, int64_t topk, float *d_scores, int32_t *d_isel,
                               int32_t *d_n_isel, ds4_error *err) {
    if (n_tok <= 0) return DS4_OK;
    size_t smem = (size_t)(ih * id + ih) * sizeof(float);
    if (ih < 1 || id < 1 || topk < 1 || pos0 < 0 || n_tok > 65535 || smem > 200 * 1024 ||
        (pos0 + n_tok) / 4 >= 0xFFFFFFFFll)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                          "cuda_indexer_topk: %lld heads of %lld, top-%lld, %lld tokens at %lld",
                          (long long)ih, (long long)id, (long long)topk, (long long)n_tok,
                          (long long)pos0);
    int64_t ld = (pos0 + n_tok) / 4 + 1, max_c = (pos0 + n_tok) / 4;
    if (max_c > topk) {
        unsigned gx = cu_blocks(max_c, 8);
        if (gx > 512) gx = 512; /* each block loads the token's 32 KiB of queries once */
        if (id == 128) { /* MODEL_MATH §0: index_head_dim */
            if (smem > 48 * 1024)
                CU_CHECK(cudaFuncSetAttribute(k_idx_score_reg<128>,
                                              cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
                         err, "indexer shared memory");
            k_idx_score_reg<128><<<dim3(gx, (unsigned)n_tok), 256, smem, cu_stream>>>(
                d_q, d_w, d_rows, pos0, ih, topk, ld, d_scores, d_pos0);
        } else {
            if (smem > 48 * 1024)
                CU_CHECK(cudaFuncSetAttribute(k_idx_score, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              (int)smem),
                         err, "indexer shared memory");
            k_idx_score<<<dim3(gx, (unsigned)n_tok), 256, smem, cu_stream>>>(d_q, d_w, d_rows, pos0, ih, id,
                                                                   topk, ld, d_scores, d_pos0);
        }
        CU_LAUNCH_CHECK(err, "indexer score launch");
    }
    /* Cache the scores in shared memory when the largest token's fit (n_c <= ~50k rows). */
    size_t tk_smem = (size_t)(max_c > topk ? max_c : 0) * sizeof(float);
    int cached = tk_smem > 0 && tk_smem <= 200 * 1024;
    if (cached && tk_smem > 48 * 1024)
        CU_CHECK(cudaFuncSetAttribute(k_idx_topk, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      (int)tk_smem),
                 err, "indexer top-k shared memory");
    k_idx_topk<<<(unsigned)n_tok, 1024, cached ? tk_smem : 0, cu_stream>>>(d_scores, pos0, topk, ld, cached,
                                                              d_isel, d_n_isel, d_pos0);
    CU_LAUNCH_CHECK(err, "indexer top-k launch");
    return DS4_OK;
}

extern "C" ds4_status cuda_indexer_topk(const float *d_q, const float *d_w, const float *d_rows,
                                        int64_t n_tok, int64_t pos0, int64_t ih, int64_t id,
                                        int64_t topk, float *d_scores, int32_t *d_isel,
                                        int32_t *d_n_isel, ds4_error *err) {
    return indexer_topk(d_q, d_w, d_rows, n_tok, pos0, NULL, ih, id, topk, d_scores, d_isel,
                        d_n_isel, err);
}

extern "C" ds4_status cuda_indexer_topk_dpos(const float *d_q, const float *d_w,
                                             const float *d_rows, int64_t n_tok,
                                             const int64_t *d_pos0, int64_t pos_bound, int64_t ih,
                                             int64_t id, int64_t topk, float *d_scores,
                                             int32_t *d_isel, int32_t *d_n_isel, ds4_error *err) {
    if (!d_pos0 || pos_bound < n_tok)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_indexer_topk_dpos: bound %lld",
                          (long long)pos_bound);
    return indexer_topk(d_q, d_w, d_rows, n_tok, pos_bound - n_tok, d_pos0, ih, id, topk,
                        d_scores, d_isel, d_n_isel, err);
}
