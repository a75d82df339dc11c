/*
 * cuda/qnorm_chunk.cu — the query heads' RMSNorm (MODEL_MATH §3.2, no weight) then RoPE on
 * their tail (§3.3) for a prefill chunk in one launch (issue #7; h5), bit-identical to
 * cuda_rmsnorm then cuda_rope_tail. k_rmsnorm takes a 256-thread block per row, which for
 * 2048 tokens x 64 heads of 512 values is 131072 blocks of two values per thread and two
 * barriers each (~350 us per layer). Here one warp takes a row and reproduces k_rmsnorm's
 * sum exactly (cu_qnorm_rope_warp, qnorm.cuh; the chunk attention runs the same function on
 * the q rows it stages, cuda_attn_qnorm), then x·r and the rotation of the tail pairs.
 * Must not: know which tensor the rows are (forward_chunk.c passes the query rows).
 */
#include "chunk_ops.h"
#include "cuda_api.h"
#include "ops.cuh"
#include "qnorm.cuh"

/* 8 warps of rows per block; row r = t·rows_per_pos + head, position pos0 + r / rows_per_pos. */
__global__ void __launch_bounds__(256) k_qnorm_rope(float *x, int64_t n_rows, int64_t n,
                                                     float eps, int64_t tail_off,
                                                     int64_t rows_per_pos, int n_rope,
                                                     const float *freqs, int64_t pos0) {
    cu_pdl_wait();
    int64_t r = (int64_t)blockIdx.x * 8 + (threadIdx.x >> 5);
    if (r >= n_rows) return;
    cu_qnorm_rope_warp(x + r * n, n, eps, tail_off, n_rope, freqs, (float)(pos0 + r / rows_per_pos));
}

extern "C" ds4_status cuda_qnorm_rope_chunk(float *d_x, int64_t n_rows, int64_t n, float eps,
                                            int64_t tail_off, int64_t rows_per_pos, int n_rope,
                                            const float *d_freqs, int64_t pos0, ds4_error *err) {
    if (n_rows <= 0) return DS4_OK;
    /* k_rmsnorm takes 1024 threads for few long rows: then its sum has another tree. */
    if (n_rows < 32 && n >= 2048) {
        ds4_status st = cuda_rmsnorm(d_x, d_x, NULL, n_rows, n, eps, err);
        return st ? st : cuda_rope_tail(d_x, n_rows, n, tail_off, rows_per_pos, n_rope, d_freqs,
                                        pos0, 0, err);
    }
    if (n <= 0 || n_rope < 0 || (n_rope & 1) || rows_per_pos <= 0 || tail_off < 0 ||
        tail_off + n_rope > n || (n_rows + 7) / 8 > INT32_MAX)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                          "cuda_qnorm_rope_chunk: %lld rows of %lld, n_rope %d at %lld",
                          (long long)n_rows, (long long)n, n_rope, (long long)tail_off);
    cu_launch(k_qnorm_rope, (unsigned)((n_rows + 7) / 8), 256, 0, d_x, n_rows, n, eps, tail_off,
              rows_per_pos, n_rope, d_freqs, pos0);
    CU_LAUNCH_CHECK(err, "qnorm_rope launch");
    return DS4_OK;
}
