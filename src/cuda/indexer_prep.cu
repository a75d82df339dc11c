/*
 * cuda/indexer_prep.cu — the indexer's query preparation in one launch (MODEL_MATH §8, §12 #3;
 * model/attention.c): per head row of the queries, RoPE on its tail at the token's position,
 * the Walsh-Hadamard rotation with its 1/sqrt(id) scale, the FP4 round trip in blocks, and the
 * head weight's 1/sqrt(id·ih) scale: the same steps as k_rope_tail, k_hadamard, k_qat and
 * k_scale in turn (bit-identical), one kernel instead of four (issue #7: the decode step's
 * query chain is launch-bound).
 * Must not: score or select rows (indexer.cu, indexer_tile.cu).
 */
#include <math.h>

#include "cuda_api.h"
#include "indexer_impl.cuh"
#include "ops.cuh"

/* One block per head row (n_tok·ih rows of id), id/32 warps at least 1; shared: the row. Row r
 * is token r / ih, at position pos0 + r / ih; w [n_tok·ih] is scaled by wscale. */
__global__ void k_idx_qprep(float *q, float *w, int64_t ih, int id, int n_rope, const float *freqs,
                            int64_t pos0, int blk, float wscale, const int64_t *dpos) {
    cu_pdl_wait();
    if (dpos) pos0 = *dpos;
    extern __shared__ float sh_row[];
    const int64_t r = blockIdx.x;
    float *row = q + r * id;
    for (int i = threadIdx.x; i < id; i += blockDim.x) sh_row[i] = row[i];
    __syncthreads();
    /* §3.3: RoPE on the last n_rope values, angle f32(pos)·freq (k_rope_tail). */
    const float t = (float)(pos0 + r / ih);
    for (int p = threadIdx.x; p < n_rope / 2; p += blockDim.x)
        cu_rope_pair(sh_row + id - n_rope + 2 * p, freqs[p], t, 0);
    __syncthreads();
    cu_hadamard_butterflies(sh_row, id); /* ends synchronised */
    const float hs = (float)(1.0 / sqrt((double)id));
    for (int i = threadIdx.x; i < id; i += blockDim.x) sh_row[i] = __fmul_rn(sh_row[i], hs);
    __syncthreads();
    /* §12 #3: FP4 E2M1 round trip per block of blk values, one warp per block. */
    const int warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    for (int b = warp; b < id / blk; b += n_warps) cu_qat_block_warp(sh_row + b * blk, blk, 1);
    __syncthreads();
    for (int i = threadIdx.x; i < id; i += blockDim.x) row[i] = sh_row[i];
    if (threadIdx.x == 0) w[r] = __fmul_rn(w[r], wscale);
}

/* The four ops of before (DS4_CUDA_IDX_V1=1), for before/after timings. */
static ds4_status qprep_v1(float *d_q, float *d_w, int64_t n_tok, int64_t ih, int64_t id,
                           int n_rope, const float *d_freqs, int64_t pos0, const int64_t *d_pos0,
                           int blk, float wscale, ds4_error *err) {
    ds4_status st;
    if (d_pos0)
        st = cuda_rope_tail_dpos(d_q, n_tok * ih, id, id - n_rope, ih, n_rope, d_freqs, d_pos0, 0, err);
    else
        st = cuda_rope_tail(d_q, n_tok * ih, id, id - n_rope, ih, n_rope, d_freqs, pos0, 0, err);
    if (st) return st;
    if ((st = cuda_hadamard(d_q, n_tok * ih, id, (int)id, err))) return st;
    if ((st = cuda_fp4_roundtrip(d_q, n_tok * ih, id, id, blk, err))) return st;
    return cuda_scale(d_w, n_tok * ih, wscale, err);
}

extern "C" ds4_status cuda_indexer_qprep(float *d_q, float *d_w, int64_t n_tok, int64_t ih,
                                         int64_t id, int n_rope, const float *d_freqs,
                                         int64_t pos0, const int64_t *d_pos0, int fp4_block,
                                         ds4_error *err) {
    if (n_tok <= 0) return DS4_OK;
    if (ih < 1 || id < 32 || (id & (id - 1)) || id > 8192 || n_rope < 0 || (n_rope & 1) ||
        n_rope > id || fp4_block < 1 || id % fp4_block || n_tok * ih > INT32_MAX)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                          "cuda_indexer_qprep: %lld heads of %lld, rope %d, FP4 blocks of %d",
                          (long long)ih, (long long)id, n_rope, fp4_block);
    const float wscale = (float)(1.0 / sqrt((double)(id * ih))); /* model/attention.c §8 */
    if (cuda_indexer_v1())
        return qprep_v1(d_q, d_w, n_tok, ih, id, n_rope, d_freqs, pos0, d_pos0, fp4_block, wscale, err);
    int threads = (int)(id / 32 < 32 ? id : 1024);
    if (threads < 32) threads = 32;
    cu_launch(k_idx_qprep, (unsigned)(n_tok * ih), (unsigned)threads, (size_t)id * sizeof(float), d_q,
              d_w, ih, (int)id, n_rope, d_freqs, pos0, fp4_block, wscale, d_pos0);
    CU_LAUNCH_CHECK(err, "indexer query launch");
    return DS4_OK;
}
