/*
 * cuda/qnorm_chunk.cu — the query heads' RMSNorm (MODEL_MATH §3.2, no weight) then RoPE on
 * their tail (§3.3) for a prefill chunk in one launch (issue #7; h5), bit-identical to
 * cuda_rmsnorm then cuda_rope_tail. k_rmsnorm takes a 256-thread block per row, which for
 * 2048 tokens x 64 heads of 512 values is 131072 blocks of two values per thread and two
 * barriers each (~350 us per layer). Here one warp takes a row and reproduces k_rmsnorm's
 * sum exactly: lane l plays the 8 block threads 32w + l (w < 8) with cu_block_rms_inv's
 * per-thread loop, each of the 8 warps' butterflies (cu_block_sum_d), then the first warp's
 * butterfly over the 8 warp sums written out; then x·r and the rotation of the tail pairs
 * (cu_rope_pair) at the row's position.
 * Must not: know which tensor the rows are (forward_chunk.c passes the query rows).
 */
#include "chunk_ops.h"
#include "cuda_api.h"
#include "ops.cuh"

#define QN_BD 256 /* the block size of k_rmsnorm this reproduces */

/* 8 warps of rows per block; row r = t·rows_per_pos + head, position pos0 + r / rows_per_pos. */
__global__ void __launch_bounds__(256) k_qnorm_rope(float *x, int64_t n_rows, int64_t n,
                                                     float eps, int64_t tail_off,
                                                     int64_t rows_per_pos, int n_rope,
                                                     const float *freqs, int64_t pos0) {
    cu_pdl_wait();
    int64_t r = (int64_t)blockIdx.x * 8 + (threadIdx.x >> 5);
    int l = threadIdx.x & 31;
    if (r >= n_rows) return;
    float *row = x + r * n;
    double ws[QN_BD / 32];
#pragma unroll
    for (int w = 0; w < QN_BD / 32; w++) {
        /* cu_block_rms_inv's loop for block thread 32w + l */
        double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
        int64_t bd = QN_BD, i = 32 * w + l;
        for (; i + 3 * bd < n; i += 4 * bd) {
            float a = row[i], b = row[i + bd], c = row[i + 2 * bd], d = row[i + 3 * bd];
            s0 += (double)a * a;
            s1 += (double)b * b;
            s2 += (double)c * c;
            s3 += (double)d * d;
        }
        for (; i < n; i += bd) s0 += (double)row[i] * row[i];
        double v = (s0 + s1) + (s2 + s3);
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        ws[w] = v;
    }
    /* cu_block_sum_d's second stage: lanes 0..7 hold the warp sums, the rest 0 (adding 0 to a
     * sum of squares changes nothing), butterfly xor 16, 8 (no-ops), 4, 2, 1. */
    double ss = ((ws[0] + ws[4]) + (ws[2] + ws[6])) + ((ws[1] + ws[5]) + (ws[3] + ws[7]));
    float rinv = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
    for (int64_t i = l; i < n; i += 32) row[i] = __fmul_rn(row[i], rinv);
    __syncwarp();
    float t = (float)(pos0 + r / rows_per_pos);
    for (int p = l; p < n_rope / 2; p += 32)
        cu_rope_pair(row + tail_off + 2 * p, freqs[p], t, 0);
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
