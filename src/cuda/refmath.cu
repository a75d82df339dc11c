/*
 * cuda/refmath.cu — the reference transcendentals of cpu/refmath.h evaluated on the device over
 * a sweep of f32 inputs, so a test can compare them with the host's bit for bit on every input
 * of a range (issue #7: the two backends must compute the same exp / log1p / cos / sin; nvcc
 * must not contract or reorder their steps). The model's kernels call the same functions
 * through cuda/ops.cuh; this file only exposes them for the check (and CUDA's own double exp /
 * log1p / cos / sin, to measure how often those and glibc's round apart).
 * Must not: be used by the forward pass (it is a test entry point).
 */
#include "cuda_api.h"
#include "ops.cuh"

/* out[i] = f(x) with x the f32 of bits bits0 + i·stride (wrapping in 32 bits). */
__global__ void k_refmath_sweep(int fn, uint32_t bits0, uint32_t stride, int64_t n, float *out) {
    cu_pdl_wait();
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = __uint_as_float(bits0 + (uint32_t)i * stride);
    float y, c, s;
    switch (fn) {
    case CUDA_REFMATH_EXP: y = ref_expf(x); break;
    case CUDA_REFMATH_LOG1P: y = (float)ref_log1p((double)x); break;
    case CUDA_REFMATH_SOFTPLUS: y = cu_softplus_ref(x); break;
    case CUDA_REFMATH_COS:
    case CUDA_REFMATH_SIN:
        ref_sincosf(x, &c, &s);
        y = fn == CUDA_REFMATH_COS ? c : s;
        break;
    /* CUDA's own double functions rounded to f32 (what the kernels used before, for the
     * comparison with glibc's in the test's report). */
    case CUDA_REFMATH_LIB_EXP: y = (float)exp((double)x); break;
    case CUDA_REFMATH_LIB_LOG1P: y = (float)log1p((double)x); break;
    case CUDA_REFMATH_LIB_COS: y = (float)cos((double)x); break;
    default: y = (float)sin((double)x); break;
    }
    out[i] = y;
}

extern "C" ds4_status cuda_refmath_sweep(int fn, uint32_t bits0, uint32_t stride, int64_t n,
                                         float *d_out, ds4_error *err) {
    if (n <= 0) return DS4_OK;
    if (fn < CUDA_REFMATH_EXP || fn > CUDA_REFMATH_LIB_SIN || n > (int64_t)UINT32_MAX)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_refmath_sweep: fn %d, n %lld", fn,
                          (long long)n);
    cu_launch(k_refmath_sweep, cu_blocks(n, 256), 256, 0, fn, bits0, stride, n, d_out);
    CU_LAUNCH_CHECK(err, "refmath sweep launch");
    return DS4_OK;
}
