/*
 * cuda/rows.cu — row movement for a prefill chunk (issue #7): gather/scatter between token and
 * expert order (dst[dst_idx[i]] = src[src_idx[i]] for i < n rows of D floats, an index NULL =
 * identity) and the token embeddings of a whole chunk broadcast to the hyper-connection copies
 * (MODEL_MATH §2) in one launch. Pure data movement, bit-exact. Also clears the runtime's
 * last error after a failed allocation the chunk path recovers from.
 * Must not: know what the rows mean.
 */
#include "chunk_ops.h"
#include "cuda_api.h"
#include "ops.cuh"

__global__ void k_rows_copy(float *dst, const int32_t *dst_idx, const float *src,
                            const int32_t *src_idx, int64_t D) {
    cu_pdl_wait();
    int64_t i = blockIdx.x;
    int64_t di = dst_idx ? dst_idx[i] : i, si = src_idx ? src_idx[i] : i;
    float *d = dst + di * D;
    const float *s = src + si * D;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) d[j] = s[j];
}

/* The same with 16-byte moves (rows of a multiple of 4 floats at 16-byte aligned bases). */
__global__ void k_rows_copy4(float4 *dst, const int32_t *dst_idx, const float4 *src,
                             const int32_t *src_idx, int64_t D4) {
    cu_pdl_wait();
    int64_t i = blockIdx.x;
    int64_t di = dst_idx ? dst_idx[i] : i, si = src_idx ? src_idx[i] : i;
    float4 *d = dst + di * D4;
    const float4 *s = src + si * D4;
    for (int64_t j = threadIdx.x; j < D4; j += blockDim.x) d[j] = s[j];
}

extern "C" ds4_status cuda_rows_copy(float *d_dst, const int32_t *d_dst_idx, const float *d_src,
                                     const int32_t *d_src_idx, int64_t n, int64_t D,
                                     ds4_error *err) {
    if (n <= 0) return DS4_OK;
    if (D <= 0 || n > INT32_MAX)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_rows_copy: %lld rows of %lld",
                          (long long)n, (long long)D);
    if (D % 4 == 0 && (uintptr_t)d_dst % 16 == 0 && (uintptr_t)d_src % 16 == 0) {
        int64_t D4 = D / 4;
        unsigned th = D4 >= 256 ? 256 : (unsigned)((D4 + 31) / 32 * 32);
        cu_launch(k_rows_copy4, (unsigned)n, th, 0, (float4 *)d_dst, d_dst_idx,
                                                        (const float4 *)d_src, d_src_idx, D4);
    } else {
        cu_launch(k_rows_copy, (unsigned)n, 256, 0, d_dst, d_dst_idx, d_src, d_src_idx, D);
    }
    CU_LAUNCH_CHECK(err, "rows_copy launch");
    return DS4_OK;
}

/* grid (ceil(D/256), n_tok): X[t][k][i] = f32(table[tok[t]][i]) for k < copies; the
 * conversions are exact (f16/bf16 widen). cuda_embed_rows (devpos.cu) is its one-token case. */
__global__ void k_embed_tokens(const uint8_t *table, int type, int64_t n_vocab, int64_t D,
                               const int32_t *tok, int copies, float *X) {
    cu_pdl_wait();
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, t = blockIdx.y;
    if (i >= D) return;
    int64_t id = tok[t];
    float v = 0.0f;
    if (id >= 0 && id < n_vocab) { /* eval validated it; never read outside the table */
        if (type == CU_T_F32) {
            v = ((const float *)table)[id * D + i];
        } else if (type == CU_T_F16) {
            v = __half2float(((const __half *)table)[id * D + i]);
        } else {
            uint32_t b = (uint32_t)((const uint16_t *)table)[id * D + i] << 16;
            v = __uint_as_float(b);
        }
    }
    float *x = X + t * copies * D;
    for (int k = 0; k < copies; k++) x[(int64_t)k * D + i] = v;
}

extern "C" ds4_status cuda_embed_tokens(const void *d_table, int type, int64_t n_vocab,
                                        int64_t D, const int32_t *d_tok, int64_t n_tok,
                                        int n_copies, float *d_X, ds4_error *err) {
    if (n_tok <= 0) return DS4_OK;
    if (type != CU_T_F32 && type != CU_T_F16 && type != CU_T_BF16)
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED, "cuda_embed_tokens: table type %d", type);
    if (D < 1 || n_vocab < 1 || n_copies < 1 || n_tok > 65535)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                          "cuda_embed_tokens: %lld tokens, D %lld, %d copies", (long long)n_tok,
                          (long long)D, n_copies);
    dim3 g(cu_blocks(D, 256), (unsigned)n_tok);
    cu_launch(k_embed_tokens, g, 256, 0, (const uint8_t *)d_table, type, n_vocab, D, d_tok,
                                             n_copies, d_X);
    CU_LAUNCH_CHECK(err, "embed_tokens launch");
    return DS4_OK;
}

extern "C" void cuda_clear_last_error(void) { (void)cudaGetLastError(); }
