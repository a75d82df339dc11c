/*
 * cuda/indexer_impl.cuh — what the indexer's kernel files share (indexer.cu, indexer_tile.cu):
 * the order-preserving key of a score, a block-wide exclusive scan, and the launchers of the
 * long-context kernels that indexer.cu's dispatcher picks. Internal to src/cuda.
 */
#ifndef DS4_CUDA_INDEXER_IMPL_CUH
#define DS4_CUDA_INDEXER_IMPL_CUH

#include "common.cuh"

/* Order-preserving 32-bit key of a score (larger score, larger key); -0 == +0. */
__device__ __forceinline__ uint32_t idx_key(float s) {
    uint32_t u = s == 0.0f ? 0u : __float_as_uint(s);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* N keys in flight per thread: k[j] = idx_key(sc[r0 + j·step]), 0 from row n on. */
template <int N>
__device__ __forceinline__ void idx_keys(const float *sc, int r0, int step, int n, uint32_t (&k)[N]) {
#pragma unroll
    for (int j = 0; j < N; j++) {
        const int r = r0 + j * step;
        k[j] = r < n ? idx_key(sc[r]) : 0u;
    }
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

/* indexer_tile.cu. Scores of n_tok tokens at pos0 (or, with d_pos0, pos0 a bound of it) into
 * scores[t·ld + r], bit-identical to k_idx_score; only where idx_tile_fits (id 128, 16-byte
 * aligned q and rows). */
int idx_tile_fits(const float *d_q, const float *d_rows, int64_t ih, int64_t id);
cudaError_t idx_score_tile_launch(const float *d_q, const float *d_w, const float *d_rows,
                                  int64_t n_tok, int64_t pos0, const int64_t *d_pos0, int64_t ih,
                                  int64_t topk, int64_t ld, float *d_scores);
/* The top-k of every token from its scores, one block per token, for up to 32768 rows. */
int idx_select1_fits(int64_t max_c);
cudaError_t idx_select1_launch(const float *d_scores, int64_t n_tok, int64_t pos0,
                               const int64_t *d_pos0, int64_t max_c, int64_t topk, int64_t ld,
                               int32_t *d_isel, int32_t *d_n_isel);

/* indexer.cu: DS4_CUDA_IDX_V1=1 asks for the first kernels (before/after timings). */
int cuda_indexer_v1(void);

#endif
