/*
 * cuda/ops.cuh — device helpers shared by the op-family kernels (norm, rope, qat, hc,
 * attention, compressor, indexer, moe): the scalar steps of cpu/ops.c written so that a kernel
 * performs the same IEEE operations as the CPU reference.
 *
 * Why the explicit __fmul_rn / __fadd_rn: nvcc contracts a*b+c into one FMA by default, the CPU
 * build does not (-ffp-contract=off); the _rn intrinsics are never contracted, so the rounding
 * steps stay those of the reference. Transcendentals (exp, cos, sin, log1p) are cpu/refmath.h's,
 * the very functions the CPU reference calls (IEEE double steps rounded once to f32), so the two
 * backends compute the same bits by construction (issue #7; before session 4 the GPU used
 * CUDA's exp(double) and the CPU glibc's expf, which round apart on ~0.008% of inputs).
 *
 * Must not: hold state, allocate, or know tensor names. Block-wide helpers assume blockDim.x is
 * a multiple of 32 and at most 1024.
 */
#ifndef DS4_CUDA_OPS_CUH
#define DS4_CUDA_OPS_CUH

#include "common.cuh"
#include "cpu/refmath.h"

#define CU_PI_D 3.14159265358979323846

__device__ __forceinline__ float cu_exp_ref(float x) { return ref_expf(x); }
__device__ __forceinline__ float cu_sigmoid_ref(float z) {
    return __fdiv_rn(1.0f, __fadd_rn(1.0f, cu_exp_ref(-z)));
}
__device__ __forceinline__ float cu_silu_ref(float z) {
    return __fdiv_rn(z, __fadd_rn(1.0f, cu_exp_ref(-z)));
}
/* PyTorch softplus threshold (cpu_softplus): z > 20 -> z, else log1p(exp(z)). */
__device__ __forceinline__ float cu_softplus_ref(float z) {
    return z > 20.0f ? z : (float)ref_log1p((double)cu_exp_ref(z));
}

/* MODEL_MATH §3.6 / §16 #7: 2^ceil(log2(r)) from the IEEE bits (cpu_pow2_ceil). */
__device__ __forceinline__ float cu_pow2_ceil(float r) {
    uint32_t u = __float_as_uint(r);
    int e = (int)((u >> 23) & 0xFF) - 127;
    if (u & 0x7FFFFFu) e += 1;
    return ldexpf(1.0f, e);
}

/* FP8 E4M3 rounding of an in-range value, ties to even code (cpu_e4m3_round, MODEL_MATH §12). */
__device__ __forceinline__ float cu_e4m3_round(float y) {
    float a = fabsf(y);
    if (a == 0.0f) return y;
    float step;
    if (a < 0.015625f) {
        step = 0.001953125f;
    } else {
        int e;
        frexpf(a, &e);
        step = ldexpf(1.0f, e - 1 - 3);
    }
    float q = __fmul_rn(rintf(__fdiv_rn(a, step)), step);
    if (q > 448.0f) q = 448.0f;
    return y < 0 ? -q : q;
}

/* FP4 E2M1 rounding of an in-range value (cpu_e2m1_round). */
__device__ __forceinline__ float cu_e2m1_round(float y) {
    float a = fabsf(y);
    float step = a < 2.0f ? 0.5f : (a < 4.0f ? 1.0f : 2.0f);
    float q = __fmul_rn(rintf(__fdiv_rn(a, step)), step);
    if (q > 6.0f) q = 6.0f;
    return y < 0 ? -q : q;
}

/* MODEL_MATH §3.3: rotate pair (a, b) by angle f32(pos)·f (f32 product), cos/sin rounded to f32
 * (ref_sincosf); the same expression as cpu_rope_tail. */
__device__ __forceinline__ void cu_rope_pair(float *x, float freq, float t, int inverse) {
    float ang = __fmul_rn(t, freq);
    float c, s;
    ref_sincosf(ang, &c, &s);
    if (inverse) s = -s;
    float a = x[0], b = x[1];
    x[0] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
    x[1] = __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
}

/* Block-wide sum of a double (result valid in every thread). `sh` holds >= 32 doubles. */
__device__ __forceinline__ double cu_block_sum_d(double v, double *sh) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (l == 0) sh[w] = v;
    __syncthreads();
    v = l < nw ? sh[l] : 0.0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Block-wide max / sum of a float (result valid in every thread). `sh` holds >= 32 floats. */
__device__ __forceinline__ float cu_block_max(float v, float *sh) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (l == 0) sh[w] = v;
    __syncthreads();
    v = l < nw ? sh[l] : -INFINITY;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ float cu_block_sum(float v, float *sh) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (l == 0) sh[w] = v;
    __syncthreads();
    v = l < nw ? sh[l] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Block-wide ref_dsum (cpu/refmath.h) of every thread's v (result valid in every thread):
 * butterflies merging (s, c) pairs (ref_dsum_merge is symmetric, so both lanes of a pair get
 * the same bits), then the warps' sums through `sh` (>= 32 doubles) in two rounds, s then c. */
__device__ __forceinline__ ref_dsum cu_block_dsum(ref_dsum v, double *sh) {
    for (int o = 16; o > 0; o >>= 1) {
        ref_dsum w = {__shfl_xor_sync(0xffffffffu, v.s, o), __shfl_xor_sync(0xffffffffu, v.c, o)};
        ref_dsum_merge(&v, w);
    }
    int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (l == 0) sh[w] = v.s;
    __syncthreads();
    ref_dsum r = {l < nw ? sh[l] : 0.0, 0.0};
    __syncthreads();
    if (l == 0) sh[w] = v.c;
    __syncthreads();
    r.c = l < nw ? sh[l] : 0.0;
    for (int o = 16; o > 0; o >>= 1) {
        ref_dsum x = {__shfl_xor_sync(0xffffffffu, r.s, o), __shfl_xor_sync(0xffffffffu, r.c, o)};
        ref_dsum_merge(&r, x);
    }
    return r;
}

/* 1/sqrt(mean(x²)+eps) over n values (cpu_rmsnorm, hc_rho): the squares summed as a ref_dsum,
 * whose value does not depend on the order (cpu/refmath.h), so this tree gives the CPU's
 * sequential bits. Four loads in flight per thread: at decode one block reads the whole row,
 * so latency, not bandwidth, bounds it. */
__device__ __forceinline__ float cu_block_rms_inv(const float *x, int64_t n, float eps,
                                                  double *sh) {
    ref_dsum s0 = {0.0, 0.0}, s1 = {0.0, 0.0}, s2 = {0.0, 0.0}, s3 = {0.0, 0.0};
    int64_t bd = blockDim.x, i = threadIdx.x;
    for (; i + 3 * bd < n; i += 4 * bd) {
        float a = x[i], b = x[i + bd], c = x[i + 2 * bd], d = x[i + 3 * bd];
        ref_dsum_add(&s0, (double)a * a);
        ref_dsum_add(&s1, (double)b * b);
        ref_dsum_add(&s2, (double)c * c);
        ref_dsum_add(&s3, (double)d * d);
    }
    for (; i < n; i += bd) ref_dsum_add(&s0, (double)x[i] * x[i]);
    ref_dsum_merge(&s0, s1);
    ref_dsum_merge(&s2, s3);
    ref_dsum_merge(&s0, s2);
    return ref_rms_inv(ref_dsum_value(cu_block_dsum(s0, sh)), n, eps);
}

/* The QAT round trip of one block done by a whole warp (all 32 lanes call it): amax by warp
 * max (exact in any order), then each lane rounds its values with cu_qat_block's steps. */
__device__ __forceinline__ void cu_qat_block_warp(float *x, int block, int fp4) {
    int lane = threadIdx.x & 31;
    float qmax = fp4 ? 6.0f : 448.0f, floor_ = fp4 ? 6.0f * 0x1p-126f : 1e-4f;
    float amax = 0.0f;
    for (int k = lane; k < block; k += 32) amax = fmaxf(amax, fabsf(x[k]));
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    if (amax < floor_) amax = floor_;
    float s = cu_pow2_ceil(__fdiv_rn(amax, qmax));
    float inv = __fdiv_rn(1.0f, s);
    for (int k = lane; k < block; k += 32) {
        float v = __fmul_rn(x[k], inv);
        if (v > qmax) v = qmax;
        if (v < -qmax) v = -qmax;
        x[k] = __fmul_rn(fp4 ? cu_e2m1_round(v) : cu_e4m3_round(v), s);
    }
}

/* cpu_hadamard's butterflies on x[0..n) (n a power of two) by the whole block, every stage in
 * the CPU's order (each element sees the same additions); ends synchronised. The 1/sqrt(n)
 * scale is the caller's. */
__device__ __forceinline__ void cu_hadamard_butterflies(float *x, int64_t n) {
    for (int64_t h = 1; h < n; h <<= 1) {
        for (int64_t q = threadIdx.x; q < n / 2; q += blockDim.x) {
            int64_t j = (q / h) * 2 * h + (q % h);
            float a = x[j], b = x[j + h];
            x[j] = __fadd_rn(a, b);
            x[j + h] = __fsub_rn(a, b);
        }
        __syncthreads();
    }
}

/* cpu_dot_f32 with its exact summation order, computed by the 8 lanes of an aligned lane group:
 * lane k accumulates a[i+k]·b[i+k] over i, then ((s0+s4)+(s1+s5))+((s2+s6)+(s3+s7)) and the
 * tail in order. All 32 lanes must call it (each group with its own a, b); every lane of the
 * group gets the result. */
__device__ __forceinline__ float cu_dot8_ref(const float *a, const float *b, int64_t n) {
    int k = threadIdx.x & 7;
    int64_t n8 = n & ~(int64_t)7;
    float acc = 0.0f;
#pragma unroll 8
    for (int64_t i = 0; i < n8; i += 8) acc = __fadd_rn(acc, __fmul_rn(a[i + k], b[i + k]));
    acc = cu_lanes8_dot_f32(acc);
    for (int64_t i = n8; i < n; i++) acc = __fadd_rn(acc, __fmul_rn(a[i], b[i]));
    return acc;
}

/* Launch-size helper: blocks of `threads` covering n items (at least 1). */
static inline unsigned cu_blocks(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    return (unsigned)(b < 1 ? 1 : b);
}

#define CU_LAUNCH_CHECK(err, what) CU_CHECK(cudaGetLastError(), err, what)

#endif
