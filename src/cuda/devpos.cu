/*
 * cuda/devpos.cu — the small steps of a decode token that read the token id or the position
 * from device memory, so that one captured CUDA graph serves every step (issue #7): the token
 * embedding broadcast to the hyper-connection copies (MODEL_MATH §2) and the window-ring store
 * (§7.1). The position-taking variants of rope, compressor, indexer and attention live with
 * their ops (cuda_api.h "Position on the device").
 * Must not: hold state; the caller owns the device position and token buffers.
 */
#include "cuda_api.h"
#include "ops.cuh"

__global__ void k_ring_store(float *ring, const float *row, int64_t W, int64_t Dh,
                             const int64_t *pos) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < Dh) ring[(*pos % W) * Dh + i] = row[i];
}

extern "C" ds4_status cuda_ring_store_dpos(float *d_ring, const float *d_row, int64_t W,
                                           int64_t Dh, const int64_t *d_pos, ds4_error *err) {
    if (W < 1 || Dh < 1 || !d_pos)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_ring_store_dpos: W %lld, Dh %lld",
                          (long long)W, (long long)Dh);
    k_ring_store<<<cu_blocks(Dh, 256), 256, 0, cu_stream>>>(d_ring, d_row, W, Dh, d_pos);
    CU_LAUNCH_CHECK(err, "ring store launch");
    return DS4_OK;
}

/* X[k][i] = f32(table[tok][i]) for k < copies; the conversions are exact (f16/bf16 widen). */
__global__ void k_embed_rows(const uint8_t *table, int type, int64_t n_vocab, int64_t D,
                             const int32_t *tok, int copies, float *X) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= D) return;
    int64_t t = *tok;
    float v = 0.0f;
    if (t >= 0 && t < n_vocab) { /* eval validated it; never read outside the table */
        if (type == CU_T_F32) {
            v = ((const float *)table)[t * D + i];
        } else if (type == CU_T_F16) {
            v = __half2float(((const __half *)table)[t * D + i]);
        } else {
            uint32_t b = (uint32_t)((const uint16_t *)table)[t * D + i] << 16;
            v = __uint_as_float(b);
        }
    }
    for (int k = 0; k < copies; k++) X[(int64_t)k * D + i] = v;
}

extern "C" ds4_status cuda_embed_rows(const void *d_table, int type, int64_t n_vocab, int64_t D,
                                      const int32_t *d_tok, int n_copies, float *d_X,
                                      ds4_error *err) {
    if (type != CU_T_F32 && type != CU_T_F16 && type != CU_T_BF16)
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED, "cuda_embed_rows: table type %d", type);
    if (D < 1 || n_vocab < 1 || n_copies < 1)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_embed_rows: %lld x %lld, %d copies",
                          (long long)n_vocab, (long long)D, n_copies);
    k_embed_rows<<<cu_blocks(D, 256), 256, 0, cu_stream>>>((const uint8_t *)d_table, type,
                                                           n_vocab, D, d_tok, n_copies, d_X);
    CU_LAUNCH_CHECK(err, "embed launch");
    return DS4_OK;
}
