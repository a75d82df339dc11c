/*
 * cpu/ops.c — scalar reference kernels of the op table (see cpu/ops.h). Pure functions of
 * their inputs; no allocation, no state.
 */
#include "cpu/ops.h"
#include "cpu/refmath.h"

#include <math.h>
#include <string.h>

void cpu_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps) {
    /* MODEL_MATH §3.1: mean of squares + eps, then reciprocal square root, in f32 output. The
     * sum carries its rounding error (ref_dsum), so the GPU's block trees give the same r. */
    ref_dsum ss = {0.0, 0.0};
    for (int64_t i = 0; i < n; i++) ref_dsum_add(&ss, (double)x[i] * (double)x[i]);
    float r = ref_rms_inv(ref_dsum_value(ss), n, eps);
    if (w) {
        for (int64_t i = 0; i < n; i++) out[i] = w[i] * (x[i] * r);
    } else {
        for (int64_t i = 0; i < n; i++) out[i] = x[i] * r;
    }
}

void cpu_rope_freqs(const cpu_rope_cfg *cfg, float *freqs_out) {
    int half = cfg->n_rope / 2;
    /* MODEL_MATH §3.4: official builds the base table in f32. */
    for (int i = 0; i < half; i++)
        freqs_out[i] = (float)(1.0 / pow(cfg->base, (double)(2 * i) / (double)cfg->n_rope));
    if (!(cfg->yarn_factor > 1.0) || !(cfg->orig_ctx > 0.0)) return;
    double dim = (double)cfg->n_rope;
    double two_pi = 2.0 * 3.14159265358979323846;
    double corr_fast = dim * log(cfg->orig_ctx / (two_pi * cfg->beta_fast)) / (2.0 * log(cfg->base));
    double corr_slow = dim * log(cfg->orig_ctx / (two_pi * cfg->beta_slow)) / (2.0 * log(cfg->base));
    double low = floor(corr_fast), high = ceil(corr_slow);
    if (low < 0) low = 0;
    if (high > dim - 1) high = dim - 1;
    if (high == low) high += 0.001;
    for (int i = 0; i < half; i++) {
        double ramp = ((double)i - low) / (high - low);
        if (ramp < 0) ramp = 0;
        if (ramp > 1) ramp = 1;
        float f = freqs_out[i];
        /* f' = f (1 - ramp) + (f / factor) ramp, in f32 like official. */
        float rampf = (float)ramp;
        freqs_out[i] = f / (float)cfg->yarn_factor * rampf + f * (1.0f - rampf);
    }
}

void cpu_rope_tail(float *x, int n_rope, const float *freqs, int64_t pos, bool inverse) {
    float t = (float)pos;
    for (int i = 0; i < n_rope / 2; i++) {
        /* MODEL_MATH §3.4 precision note: angle = f32(t) * f32(f'_i), rounded to f32. */
        float ang = t * freqs[i];
        float c, s;
        ref_sincosf(ang, &c, &s); /* cos/sin rounded to f32, the same bits as the GPU's */
        if (inverse) s = -s;
        float a = x[2 * i], b = x[2 * i + 1];
        x[2 * i] = a * c - b * s;
        x[2 * i + 1] = a * s + b * c;
    }
}

void cpu_hadamard(float *x, int n) {
    for (int h = 1; h < n; h <<= 1) {
        for (int i = 0; i < n; i += 2 * h) {
            for (int j = i; j < i + h; j++) {
                float a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
        }
    }
    float s = (float)(1.0 / sqrt((double)n));
    for (int i = 0; i < n; i++) x[i] *= s;
}

float cpu_pow2_ceil(float r) {
    uint32_t u;
    memcpy(&u, &r, sizeof u);
    int e = (int)((u >> 23) & 0xFF) - 127;
    if (u & 0x7FFFFFu) e += 1;
    return ldexpf(1.0f, e);
}

float cpu_e4m3_round(float y) {
    float a = fabsf(y);
    if (a == 0.0f) return y;
    float step;
    if (a < 0.015625f) {
        step = 0.001953125f; /* subnormals m * 2^-9 */
    } else {
        int e;
        frexpf(a, &e); /* a = m * 2^e, m in [0.5, 1) -> binade 2^(e-1) */
        step = ldexpf(1.0f, e - 1 - 3);
    }
    float q = rintf(a / step) * step; /* ties to even code (MODEL_MATH §12) */
    if (q > 448.0f) q = 448.0f;
    return y < 0 ? -q : q;
}

float cpu_e2m1_round(float y) {
    float a = fabsf(y);
    float step = a < 2.0f ? 0.5f : (a < 4.0f ? 1.0f : 2.0f);
    float q = rintf(a / step) * step;
    if (q > 6.0f) q = 6.0f;
    return y < 0 ? -q : q;
}

static void qat_roundtrip(float *x, int64_t n, int block, float qmax, float amax_floor,
                          float (*round_fn)(float)) {
    for (int64_t b = 0; b < n; b += block) {
        float amax = 0.0f;
        for (int k = 0; k < block; k++) {
            float a = fabsf(x[b + k]);
            if (a > amax) amax = a;
        }
        if (amax < amax_floor) amax = amax_floor;
        float s = cpu_pow2_ceil(amax / qmax);
        float inv = 1.0f / s; /* exact: s is a power of two */
        for (int k = 0; k < block; k++) {
            float v = x[b + k] * inv;
            if (v > qmax) v = qmax;
            if (v < -qmax) v = -qmax;
            x[b + k] = round_fn(v) * s;
        }
    }
}

void cpu_fp8_roundtrip(float *x, int64_t n, int block) {
    qat_roundtrip(x, n, block, 448.0f, 1e-4f, cpu_e4m3_round);
}

void cpu_fp4_roundtrip(float *x, int64_t n, int block) {
    qat_roundtrip(x, n, block, 6.0f, 6.0f * 0x1p-126f, cpu_e2m1_round);
}

void cpu_softmax(float *x, int64_t n) {
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++) if (x[i] > m) m = x[i];
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = ref_expf(x[i] - m);
        s += x[i];
    }
    float inv = (float)(1.0 / s);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

/* exp / log1p from cpu/refmath.h (the GPU's cuda/ops.cuh uses the same ones: equal bits). */
float cpu_sigmoid(float z) { return 1.0f / (1.0f + ref_expf(-z)); }
float cpu_silu(float z) { return z / (1.0f + ref_expf(-z)); }
float cpu_softplus(float z) { return z > 20.0f ? z : (float)ref_log1p((double)ref_expf(z)); }

float cpu_dot_f32(const float *a, const float *b, int64_t n) {
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += a[i + k] * b[i + k];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}
