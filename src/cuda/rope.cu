/*
 * cuda/rope.cu — RoPE on the tail of rows (MODEL_MATH §3.3-3.4): the frequency table is built
 * on the host by cpu_rope_freqs and uploaded once; this file only rotates.
 * Must not: build frequency tables (the YaRN table is defined by the CPU reference).
 */
#include "cuda_api.h"
#include "ops.cuh"

/* Row r starts at x + r·row_stride; its n_rope tail values start at offset `tail_off`. Row r
 * uses position pos0 + r / rows_per_pos. One thread per pair. */
__global__ void k_rope_tail(float *x, int64_t n_rows, int64_t row_stride, int64_t tail_off,
                            int64_t rows_per_pos, int n_rope, const float *freqs, int64_t pos0,
                            int inverse, const int64_t *dpos) {
    cu_pdl_wait();
    if (dpos) pos0 = *dpos; /* cuda_rope_tail_dpos: the position lives on the device */
    int64_t half = n_rope / 2;
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_rows * half) return;
    int64_t r = i / half, p = i % half;
    float t = (float)(pos0 + r / rows_per_pos);
    cu_rope_pair(x + r * row_stride + tail_off + 2 * p, freqs[p], t, inverse);
}

static ds4_status rope_tail(float *d_x, int64_t n_rows, int64_t row_stride, int64_t tail_off,
                            int64_t rows_per_pos, int n_rope, const float *d_freqs, int64_t pos0,
                            const int64_t *d_pos0, int inverse, ds4_error *err) {
    if (n_rows <= 0 || n_rope == 0) return DS4_OK;
    if (n_rope < 0 || (n_rope & 1) || rows_per_pos <= 0 || tail_off < 0 ||
        tail_off + n_rope > row_stride)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                          "cuda_rope_tail: n_rope %d at offset %lld in rows of %lld (%lld per pos)",
                          n_rope, (long long)tail_off, (long long)row_stride,
                          (long long)rows_per_pos);
    int64_t n = n_rows * (n_rope / 2);
    cu_launch(k_rope_tail, cu_blocks(n, 256), 256, 0, d_x, n_rows, row_stride, tail_off, rows_per_pos,
                                            n_rope, d_freqs, pos0, inverse, d_pos0);
    CU_LAUNCH_CHECK(err, "rope launch");
    return DS4_OK;
}

extern "C" ds4_status cuda_rope_tail(float *d_x, int64_t n_rows, int64_t row_stride,
                                     int64_t tail_off, int64_t rows_per_pos, int n_rope,
                                     const float *d_freqs, int64_t pos0, int inverse,
                                     ds4_error *err) {
    return rope_tail(d_x, n_rows, row_stride, tail_off, rows_per_pos, n_rope, d_freqs, pos0, NULL,
                     inverse, err);
}

extern "C" ds4_status cuda_rope_tail_dpos(float *d_x, int64_t n_rows, int64_t row_stride,
                                          int64_t tail_off, int64_t rows_per_pos, int n_rope,
                                          const float *d_freqs, const int64_t *d_pos0,
                                          int inverse, ds4_error *err) {
    return rope_tail(d_x, n_rows, row_stride, tail_off, rows_per_pos, n_rope, d_freqs, 0, d_pos0,
                     inverse, err);
}
