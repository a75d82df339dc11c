/*
 * cuda/devpos.cu — the small steps of a decode token that read the token id or the position
 * from device memory, so that one captured CUDA graph serves every step (issue #7): the token
 * embedding broadcast to the hyper-connection copies (MODEL_MATH §2) and the window-ring store
 * (§7.1). The position-taking variants of rope, compressor, indexer and attention live with
 * their ops (cuda_api.h "Position on the device").
 * Must not: hold state; the caller owns the device position and token buffers.
 */
#include "chunk_ops.h"
#include "cuda_api.h"
#include "ops.cuh"

__global__ void k_ring_store(float *ring, const float *row, int64_t W, int64_t Dh,
                             const int64_t *pos) {
    cu_pdl_wait();
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < Dh) ring[(*pos % W) * Dh + i] = row[i];
}

extern "C" ds4_status cuda_ring_store_dpos(float *d_ring, const float *d_row, int64_t W,
                                           int64_t Dh, const int64_t *d_pos, ds4_error *err) {
    if (W < 1 || Dh < 1 || !d_pos)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_ring_store_dpos: W %lld, Dh %lld",
                          (long long)W, (long long)Dh);
    cu_launch(k_ring_store, cu_blocks(Dh, 256), 256, 0, d_ring, d_row, W, Dh, d_pos);
    CU_LAUNCH_CHECK(err, "ring store launch");
    return DS4_OK;
}

extern "C" ds4_status cuda_embed_rows(const void *d_table, int type, int64_t n_vocab, int64_t D,
                                      const int32_t *d_tok, int n_copies, float *d_X,
                                      ds4_error *err) {
    if (type != CU_T_F32 && type != CU_T_F16 && type != CU_T_BF16)
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED, "cuda_embed_rows: table type %d", type);
    if (D < 1 || n_vocab < 1 || n_copies < 1)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_embed_rows: %lld x %lld, %d copies",
                          (long long)n_vocab, (long long)D, n_copies);
    /* the chunk path's kernel for one token: X[k][i] = f32(table[tok][i]), exact widening */
    return cuda_embed_tokens(d_table, type, n_vocab, D, d_tok, 1, n_copies, d_X, err);
}
