/*
 * cuda/attention_impl.cuh — what the attention files share (attention.cu: the op's entry
 * points, the decode split/merge kernels; attention_chunk.cu: the prefill chunk kernels): the
 * kernels' argument block, the attended key set of a query (window by position, then
 * compressed rows) and the score dot of a head group in cpu_dot_f32's order.
 */
#ifndef DS4_CUDA_ATTENTION_IMPL_CUH
#define DS4_CUDA_ATTENTION_IMPL_CUH

#include "cuda_api.h"
#include "ops.cuh"

#define ATT_HB 8   /* heads per block */
#define ATT_KS 32  /* keys per split: one per lane group of a 256-thread block, one per lane */

typedef struct attn_args {
    const float *q, *kv_chunk, *ring, *comp, *sinks, *freqs;
    const int32_t *isel, *n_isel;
    int64_t W, topk, pos0, H, Dh, n_splits;
    int ratio, n_rope;
    float *part; /* [n_tok][H][n_splits][Dh + 2] */
    float *out;
    const int64_t *dpos; /* cuda_attn_dpos: pos0 from the device (n_splits sized for a bound) */
} attn_args;

__device__ __forceinline__ void attn_span(const attn_args &a, int64_t t, int64_t *s0,
                                          int64_t *n_win, int64_t *n_keys,
                                          const int32_t **sel) {
    int64_t p = a.pos0 + t;
    *s0 = p - a.W + 1 < 0 ? 0 : p - a.W + 1;
    *n_win = p - *s0 + 1;
    int64_t n_comp = 0;
    *sel = NULL;
    if (a.isel) {
        n_comp = a.n_isel[t];
        *sel = a.isel + t * a.topk;
    } else if (a.ratio) {
        n_comp = (p + 1) / a.ratio;
    }
    *n_keys = *n_win + n_comp;
}

/* Key row i of the attended set (window by position, then compressed rows). */
__device__ __forceinline__ const float *attn_key(const attn_args &a, int64_t s0, int64_t n_win,
                                                 const int32_t *sel, int64_t i) {
    if (i < n_win) {
        int64_t s = s0 + i;
        if (s >= a.pos0) return a.kv_chunk + (s - a.pos0) * a.Dh;
        return a.ring + (s % a.W) * a.Dh;
    }
    int64_t r = sel ? sel[i - n_win] : i - n_win;
    return a.comp + r * a.Dh;
}

/* Token t's attended rows into kp[0 .. n rounded up to g) (rows past n: row 0, read by the
 * lane groups of a last partial step but not used), by the block's threads; returns n. */
__device__ __forceinline__ int64_t attn_key_rows(const attn_args &a, int64_t t, const float **kp,
                                                 int64_t g) {
    int64_t s0, n_win, n_keys;
    const int32_t *sel;
    attn_span(a, t, &s0, &n_win, &n_keys, &sel);
    int64_t n = (n_keys + g - 1) / g * g;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        kp[i] = attn_key(a, s0, n_win, sel, i < n_keys ? i : 0);
    return n_keys;
}

/* q·k for the ATT_HB heads of shared q sq [ATT_HB][Dh] against key row kr, in cu_dot8_ref's
 * order (8-lane chains, then the CPU's pairwise lane sum), so each score is cpu_dot_f32 bit for
 * bit; lane k of an 8-lane group holds chain k. Every lane of the group returns the sums. */
__device__ __forceinline__ void attn_dot_heads(const float *sq, const float *kr, int64_t Dh, int k,
                                               float v[ATT_HB]) {
    int64_t n8 = Dh & ~(int64_t)7;
    float acc[ATT_HB];
#pragma unroll
    for (int h = 0; h < ATT_HB; h++) acc[h] = 0.0f;
#pragma unroll 4
    for (int64_t i = 0; i < n8; i += 8) {
        float kv = kr[i + k];
#pragma unroll
        for (int h = 0; h < ATT_HB; h++) acc[h] = __fadd_rn(acc[h], __fmul_rn(sq[h * Dh + i + k], kv));
    }
#pragma unroll
    for (int h = 0; h < ATT_HB; h++) {
        float x = cu_lanes8_dot_f32(acc[h]);
        for (int64_t i = n8; i < Dh; i++) x = __fadd_rn(x, __fmul_rn(sq[h * Dh + i], kr[i]));
        v[h] = x;
    }
}

/* 1/den of one head in the CPU's order (model/attention.c, MODEL_MATH §5.5): the sink's term
 * e^(sink - max) first, then the keys' e_i one by one (e[i·stride], i < n), then 1/den. The
 * chunk kernels' thread per head calls it; U > 0 unrolls the key loop U times (k_attn_chunk3). */
template <int U = 0>
__device__ __forceinline__ float attn_inv_den(float sink, float mx, const float *e, int64_t stride,
                                              int64_t n) {
    float den = cu_exp_ref(__fsub_rn(sink, mx));
    if constexpr (U > 0) {
#pragma unroll U
        for (int64_t i = 0; i < n; i++) den = __fadd_rn(den, e[i * stride]);
    } else {
        for (int64_t i = 0; i < n; i++) den = __fadd_rn(den, e[i * stride]);
    }
    return __fdiv_rn(1.0f, den);
}

/* attention_chunk.cu: whether the chunk kernels take n_tok >= 2 queries over `keys` rows (not
 * the graph's dpos calls), the chunk attention itself (qn_eps > 0: q's norm + RoPE inside the
 * kernel, only where cu_attc_qnorm_ok), and whether the chosen chunk kernel can do that. */
int cu_attc_use(int64_t n_tok, int64_t Dh, int64_t keys, int dpos);
ds4_status cu_attc(const attn_args &a, int64_t n_tok, int64_t keys, ds4_error *err,
                   float qn_eps = 0.0f);
bool cu_attc_qnorm_ok(int64_t Dh, int64_t keys);
/* attention_chunk3.cu (k_attn_chunk3, 64 heads per block): whether it takes head dim Dh and
 * this many rows, and the launch (1 = launched, status in *st; 0 = not taken). */
bool cu_attc3_ok(int64_t Dh, int64_t keys);
int cu_attc3(const attn_args &a, int64_t n_tok, int64_t keys, ds4_status *st, ds4_error *err);

#endif
