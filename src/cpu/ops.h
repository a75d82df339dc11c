/*
 * cpu/ops.h — the CPU op table of the V4 forward pass (STYLE.md §5): small numeric kernels on
 * f32 rows that the model layer composes. Each op is a scalar reference; the model calls them
 * through these names so a CUDA backend can implement the same signatures.
 *
 * Owns: RMSNorm, RoPE frequency tables and tail rotation, Walsh-Hadamard, the FP8/FP4
 * quantization-aware round trips, softmax helpers. Must not: know tensor names, allocate
 * per call, print or fail (inputs are validated by the model layer).
 */
#ifndef DS4_CPU_OPS_H
#define DS4_CPU_OPS_H

#include <stdbool.h>
#include <stdint.h>

/* MODEL_MATH §3.1: out_i = w_i * x_i / sqrt(mean(x^2) + eps); w NULL means no weight (§3.2).
 * out may alias x. The sum of squares is a ref_dsum (cpu/refmath.h): double with its rounding
 * error carried, so any summation order (the GPU's block trees) gives the same r. */
void cpu_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps);

/* YaRN / plain RoPE frequency table (MODEL_MATH §3.4): n_rope/2 values f'_i.
 * yarn_factor <= 1 or orig_ctx == 0 gives the plain table base^(-2i/n_rope). */
typedef struct cpu_rope_cfg {
    int n_rope;          /* rotated dims (even) */
    double base;
    double yarn_factor;  /* 16 on compressed layers; 1 = no YaRN */
    double beta_fast, beta_slow;
    double orig_ctx;
} cpu_rope_cfg;
void cpu_rope_freqs(const cpu_rope_cfg *cfg, float *freqs_out);

/* MODEL_MATH §3.3: rotates the n_rope dims at x (adjacent pairs, interleaved / GPT-J
 * convention) by angle (f32)pos * freqs[i]; inverse rotates by the negated angle. */
void cpu_rope_tail(float *x, int n_rope, const float *freqs, int64_t pos, bool inverse);

/* MODEL_MATH §3.5: in-place Sylvester Walsh-Hadamard of n (power of two) values, scaled by
 * 1/sqrt(n). */
void cpu_hadamard(float *x, int n);

/* MODEL_MATH §3.6: in-place FP8 E4M3 round trip in blocks of `block` values, power-of-two
 * (ue8m0) scale per block with the bit-exact ceil(log2(amax/448)), amax floored at 1e-4.
 * n must be a multiple of block. */
void cpu_fp8_roundtrip(float *x, int64_t n, int block);

/* MODEL_MATH §3.7: in-place FP4 E2M1 round trip in blocks (amax floor 6*2^-126). */
void cpu_fp4_roundtrip(float *x, int64_t n, int block);

/* Single-value roundings used by the round trips (exposed for the exhaustive tests). The
 * input must already be scaled into range (|y| <= 448, resp. <= 6). */
float cpu_e4m3_round(float y);
float cpu_e2m1_round(float y);

/* Power-of-two scale 2^ceil(log2(r)) computed from the IEEE bits (MODEL_MATH §3.6, §16 #7). */
float cpu_pow2_ceil(float r);

/* Numerically stable in-place softmax of n values. */
void cpu_softmax(float *x, int64_t n);

/* MODEL_MATH preamble: silu(z) = z * sigmoid(z); sigmoid; softplus like PyTorch (z > 20 -> z). */
float cpu_sigmoid(float z);
float cpu_silu(float z);
float cpu_softplus(float z);

/* Dot product of two f32 rows, accumulated in f32 with a fixed order (used by attention). */
float cpu_dot_f32(const float *a, const float *b, int64_t n);

#endif
