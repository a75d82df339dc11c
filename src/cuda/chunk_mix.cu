/*
 * cuda/chunk_mix.cu — F32 weight products with few output rows over a whole prefill chunk
 * (issue #7): the hyper-connection mixes (MODEL_MATH §4: (2+hc)·hc rows, and hc rows for the
 * head, each over hc·D columns). cuda_matmul's tiles of 64 rows x 32 tokens leave most of
 * such a product idle and walk the 16384 columns in few blocks; here a block takes up to 32
 * rows for 16 tokens, and 8 threads per row keep the CPU dot's 8 lanes.
 *
 * Bit-identical to cpu_matmul on F32 weights (format/quant_dot.c q_dot_f32_ref): lane l adds
 * w[i]·x[i] for i ≡ l (mod 8) in column order (product rounded, then sum: no FMA), and the
 * lanes combine as ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)) — shuffles xor 4, 2, 1.
 * Must not: know tensor names or the model.
 */
#include "chunk_ops.h"
#include "ops.cuh"

#define MIX_TT 16 /* tokens per block */
#define MIX_RB 32 /* rows per block (8 threads each) */

__global__ void __launch_bounds__(256) k_mix_f32(const float *w, int64_t rows, int64_t cols,
                                                 int64_t ldw, const float *x, int64_t ldx,
                                                 int64_t n_tok, float *y, int64_t ldy) {
    int l = threadIdx.x & 7;
    int64_t r = (int64_t)blockIdx.x * MIX_RB + (threadIdx.x >> 3), t0 = (int64_t)blockIdx.y * MIX_TT;
    int nt = (int)(n_tok - t0 < MIX_TT ? n_tok - t0 : MIX_TT);
    const float *wr = w + (r < rows ? r : rows - 1) * ldw;
    float acc[MIX_TT];
#pragma unroll
    for (int t = 0; t < MIX_TT; t++) acc[t] = 0.0f;
    for (int64_t i = l; i < cols; i += 8) {
        float wv = wr[i];
#pragma unroll
        for (int t = 0; t < MIX_TT; t++)
            if (t < nt) acc[t] = __fadd_rn(acc[t], __fmul_rn(wv, x[(t0 + t) * ldx + i]));
    }
#pragma unroll
    for (int t = 0; t < MIX_TT; t++) {
        float v = acc[t];
        v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, 4));
        v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, 2));
        v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, 1));
        if (l == 0 && r < rows && t < nt) y[(t0 + t) * ldy + r] = v;
    }
}

extern "C" ds4_status cuda_mix_f32(const float *d_w, int64_t rows, int64_t cols, int64_t ldw,
                                   const float *d_x, int64_t ldx, int64_t n_tok, float *d_y,
                                   int64_t ldy, ds4_error *err) {
    if (n_tok <= 0 || rows <= 0) return DS4_OK;
    if (cols <= 0 || ldw < cols || ldx < cols || ldy < rows || n_tok > 65535ll * MIX_TT ||
        rows > 65535ll * MIX_RB)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                          "cuda_mix_f32: %lld x %lld (ld %lld), %lld tokens (ldx %lld, ldy %lld)",
                          (long long)rows, (long long)cols, (long long)ldw, (long long)n_tok,
                          (long long)ldx, (long long)ldy);
    int64_t rb = rows < MIX_RB ? rows : MIX_RB;
    dim3 g((unsigned)((rows + MIX_RB - 1) / MIX_RB), (unsigned)((n_tok + MIX_TT - 1) / MIX_TT));
    k_mix_f32<<<g, (unsigned)(8 * rb), 0, cu_stream>>>(d_w, rows, cols, ldw, d_x, ldx, n_tok, d_y,
                                                       ldy);
    CU_LAUNCH_CHECK(err, "mix_f32 launch");
    return DS4_OK;
}
