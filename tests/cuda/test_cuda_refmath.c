/*
 * tests/cuda/test_cuda_refmath.c — cpu/refmath.h's exp, log1p, softplus, cos and sin on the
 * device (cuda_refmath_sweep) against the host, bit for bit, on a sweep of f32 inputs over the
 * whole 32-bit space (every `stride`-th pattern; DS4_REFMATH_STRIDE=1 checks all 2^32). Also
 * reports, as info, how often the libraries' functions round apart on the same inputs: glibc's
 * f32 expf / log1pf vs the reference (what the CPU reference used before), and CUDA's double
 * exp / log1p / cos / sin vs glibc's, each rounded to f32 (what the kernels used before).
 * Called from the runner in test_cuda_layer.c; test code only.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/ops.h"
#include "cpu/refmath.h"
#include "cuda/cuda_api.h"

#include "layer_check.h"

void test_refmath(void);

#define RM_CHUNK (1ll << 24)

static float rm_float(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Same bits, or both NaN. */
static int rm_same(float a, float b) {
    return memcmp(&a, &b, sizeof a) == 0 || (isnan(a) && isnan(b));
}

static float rm_host(int fn, float x) {
    float c, s;
    switch (fn) {
    case CUDA_REFMATH_EXP: return ref_expf(x);
    case CUDA_REFMATH_LOG1P: return (float)ref_log1p((double)x);
    case CUDA_REFMATH_SOFTPLUS: return cpu_softplus(x);
    case CUDA_REFMATH_COS: ref_sincosf(x, &c, &s); return c;
    case CUDA_REFMATH_SIN: ref_sincosf(x, &c, &s); return s;
    case CUDA_REFMATH_LIB_EXP: return (float)exp((double)x);
    case CUDA_REFMATH_LIB_LOG1P: return (float)log1p((double)x);
    case CUDA_REFMATH_LIB_COS: return (float)cos((double)x);
    default: return (float)sin((double)x);
    }
}

/* Inputs the model can give each function: exp of (x - max) and of -z, z of a sigmoid / SiLU
 * (|x| < 104 covers every finite f32 result), log1p of an exp (0 .. e^20), RoPE angles up to
 * 2^21 (1M positions times a frequency <= 1, with room). */
static int rm_in_range(int fn, float x) {
    switch (fn) {
    case CUDA_REFMATH_EXP: case CUDA_REFMATH_LIB_EXP: return fabsf(x) < 104.0f;
    case CUDA_REFMATH_LOG1P: case CUDA_REFMATH_LIB_LOG1P: return x >= 0.0f && x < 4.9e8f;
    case CUDA_REFMATH_SOFTPLUS: return fabsf(x) < 104.0f;
    default: return fabsf(x) < 2097152.0f;
    }
}

/* One function over every stride-th pattern: how many device values differ from the host
 * (all inputs, and those in the model's range); lib_vs: also count the host reference's
 * disagreements with lib_vs(x) in range (the library function it replaced), -1: none. */
static void rm_sweep(const char *name, int fn, uint32_t stride, float (*lib_vs)(float),
                     int assert_equal) {
    ds4_error err;
    float *d = dev_alloc((size_t)RM_CHUNK * sizeof(float));
    float *h = malloc((size_t)RM_CHUNK * sizeof(float));
    int64_t total = (int64_t)((0x100000000ull + stride - 1) / stride), n_in = 0;
    int64_t diff = 0, diff_in = 0, lib_diff = 0, first = -1;
    int ok = d && h;
    for (int64_t i0 = 0; ok && i0 < total; i0 += RM_CHUNK) {
        int64_t n = total - i0 < RM_CHUNK ? total - i0 : RM_CHUNK;
        uint32_t b0 = (uint32_t)((uint64_t)i0 * stride);
        if (!ok_call(cuda_refmath_sweep(fn, b0, stride, n, d, &err), name, &err)) {
            ok = 0;
            break;
        }
        dev_get(h, d, (size_t)n * sizeof(float));
        for (int64_t i = 0; i < n; i++) {
            float x = rm_float(b0 + (uint32_t)i * stride), ref = rm_host(fn, x);
            int in = rm_in_range(fn, x), same = rm_same(ref, h[i]);
            n_in += in;
            if (!same) {
                if (first < 0) first = (int64_t)(b0 + (uint32_t)i * stride);
                diff++;
                diff_in += in;
            }
            if (lib_vs && in && !rm_same(ref, lib_vs(x))) lib_diff++;
        }
    }
    free(h);
    char buf[320];
    int n_ = snprintf(buf, sizeof buf, "%lld inputs (every %u-th f32), %lld in the model's range: "
                      "%lld differ (%lld in range)", (long long)total, stride, (long long)n_in,
                      (long long)diff, (long long)diff_in);
    if (first >= 0)
        n_ += snprintf(buf + n_, sizeof buf - (size_t)n_, ", first x = %.9g",
                       (double)rm_float((uint32_t)first));
    if (lib_vs)
        snprintf(buf + n_, sizeof buf - (size_t)n_, "; host vs its library f32: %lld differ in range",
                 (long long)lib_diff);
    if (assert_equal) result(ok && diff == 0, name, buf);
    else printf("info %s: %s\n", name, buf);
    dev_free_all();
}

static float rm_glibc_expf(float x) { return expf(x); }
static float rm_glibc_log1pf(float x) { return log1pf(x); }

void test_refmath(void) {
    const char *e = getenv("DS4_REFMATH_STRIDE");
    uint32_t stride = e && atoi(e) > 0 ? (uint32_t)atoi(e) : 257u;
    rm_sweep("refmath exp: device == host", CUDA_REFMATH_EXP, stride, rm_glibc_expf, 1);
    rm_sweep("refmath log1p: device == host", CUDA_REFMATH_LOG1P, stride, rm_glibc_log1pf, 1);
    rm_sweep("refmath softplus: device == host", CUDA_REFMATH_SOFTPLUS, stride, NULL, 1);
    rm_sweep("refmath cos: device == host", CUDA_REFMATH_COS, stride, NULL, 1);
    rm_sweep("refmath sin: device == host", CUDA_REFMATH_SIN, stride, NULL, 1);
    /* What the two backends used before: CUDA's double functions vs glibc's, rounded to f32. */
    rm_sweep("(float)exp((double)x), CUDA vs glibc", CUDA_REFMATH_LIB_EXP, stride, NULL, 0);
    rm_sweep("(float)log1p((double)x), CUDA vs glibc", CUDA_REFMATH_LIB_LOG1P, stride, NULL, 0);
    rm_sweep("(float)cos((double)x), CUDA vs glibc", CUDA_REFMATH_LIB_COS, stride, NULL, 0);
    rm_sweep("(float)sin((double)x), CUDA vs glibc", CUDA_REFMATH_LIB_SIN, stride, NULL, 0);
}
