/*
 * cuda/matvec_impl.cuh — what the decode matvec files share: matvec.cu's per-unit load and dot
 * steps (its lane-order kernels, DS4_CUDA_MV_V1=1), the CPU-order chain and lane combine of
 * matvec_dense.cu (also hc.cu's mix), and matvec_dense.cu's launch entry. Must not: know the
 * model.
 */
#ifndef DS4_CUDA_MATVEC_IMPL_CUH
#define DS4_CUDA_MATVEC_IMPL_CUH

#include "common.cuh"

/* The 34 bytes of Q8_0 block bp (2-byte aligned) from 9 aligned 32-bit loads (issue #7: half the
 * load instructions of 17 16-bit ones): the f16 scale and the 8 words of quants. Needs the row
 * 4-byte aligned (checked at launch); the last word may reach 2 bytes past the block, never
 * past the 4-byte word that holds its last byte. Works on global and shared memory. */
__device__ __forceinline__ float q8_0_load(const uint8_t *bp, uint32_t q[8]) {
    const bool odd = ((uintptr_t)bp & 2) != 0;
    const uint32_t *wp = (const uint32_t *)(bp - (odd ? 2 : 0));
    uint32_t w[9];
#pragma unroll
    for (int j = 0; j < 9; j++) w[j] = wp[j];
#pragma unroll
    for (int j = 0; j < 8; j++) q[j] = odd ? w[j + 1] : __funnelshift_r(w[j], w[j + 1], 16);
    const uint32_t h = odd ? w[0] >> 16 : w[0] & 0xFFFFu;
    return __half2float(__ushort_as_half((unsigned short)h));
}

/* 16 bytes of a float row at unit u (4 f32 or 8 f16/bf16 values) dotted with x, in order. */
template <int T>
__device__ __forceinline__ float cu_dot16(const uint8_t *wr, const float *x, int64_t u, float acc) {
    const uint4 w = ((const uint4 *)wr)[u];
    const uint32_t wv[4] = {w.x, w.y, w.z, w.w};
    if (T == CU_T_F32) {
        const float4 xv = ((const float4 *)x)[u];
        acc = fmaf(__uint_as_float(wv[0]), xv.x, acc);
        acc = fmaf(__uint_as_float(wv[1]), xv.y, acc);
        acc = fmaf(__uint_as_float(wv[2]), xv.z, acc);
        return fmaf(__uint_as_float(wv[3]), xv.w, acc);
    }
    const float4 x0 = ((const float4 *)x)[2 * u], x1 = ((const float4 *)x)[2 * u + 1];
    const float xs[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
#pragma unroll
    for (int i = 0; i < 8; i++) {
        const uint32_t h = (wv[i / 2] >> (16 * (i & 1))) & 0xFFFFu;
        const float f = T == CU_T_F16 ? __half2float(__ushort_as_half((unsigned short)h))
                                      : __uint_as_float(h << 16);
        acc = fmaf(f, xs[i], acc);
    }
    return acc;
}

/* acc + c[0] + c[1] + .. + c[n-1], left to right (one CPU accumulator's chain), c 16-byte
 * aligned shared memory: 8 values per two 128-bit loads, the loads of the unrolled body issued
 * ahead of its dependent adds, so the adds' latency is the chain's cost. */
__device__ __forceinline__ float mvd_chain(float acc, const float *c, int n) {
    int i = 0;
#pragma unroll 4
    for (; i + 8 <= n; i += 8) {
        const float4 u = *(const float4 *)(c + i), v = *(const float4 *)(c + i + 4);
        acc = __fadd_rn(acc, u.x);
        acc = __fadd_rn(acc, u.y);
        acc = __fadd_rn(acc, u.z);
        acc = __fadd_rn(acc, u.w);
        acc = __fadd_rn(acc, v.x);
        acc = __fadd_rn(acc, v.y);
        acc = __fadd_rn(acc, v.z);
        acc = __fadd_rn(acc, v.w);
    }
    for (; i < n; i++) acc = __fadd_rn(acc, c[i]);
    return acc;
}

/* The CPU's lane combine of a float row's 8 lane sums is common.cuh's cu_lanes8_qdot (format/
 * quant_dot.c combine_lanes; float addition commutes, so the butterfly's lane pairs give the
 * same bits): every lane of the warp calls it, lane 8k holds row k's result. */

/* One grouped decode launch (matvec.cu's mv_args): group j < n_sel reads w (expert ids[j]),
 * j >= n_sel the pair's w2. */
struct mvd_shape {
    const uint8_t *w, *w2;  /* w2: second matrix of a pair (groups n_sel..2·n_sel-1), or NULL */
    int64_t w_stride;       /* bytes between experts */
    const int32_t *ids;     /* expert of selection j, or NULL (0) */
    int64_t n_experts;
    const uint8_t *act;     /* Q8_0 records or f32 x */
    int64_t act_stride;     /* bytes between selections' activations (0: shared) */
    float *y, *y2;
    int64_t rows, cols;
    int n_sel;
};

/* matvec_dense.cu: Q8_0 / F32 / F16 / BF16 rows bit-identical to the CPU's single-row dot
 * (act: Q8_0 records or f32 x). */
ds4_status cu_mvd_launch(int type, const mvd_shape &s, ds4_error *err);

#endif
