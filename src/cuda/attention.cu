/*
 * cuda/attention.cu — sparse attention with sinks for query tokens of one layer (MODEL_MATH
 * §5.4-5.6): each (token, head) attends over its sliding window (by position) then its
 * compressed rows (all rows complete by p, or the indexer's selection on ratio-4 layers), with
 * the per-head sink as a zero-value key, then de-rotates the value tail at the query position.
 * Same visiting order and scores as model/attention.c attn_items (scores bit-identical: the dot
 * uses cpu_dot_f32's order); the softmax denominator is a tree sum, so outputs agree to ~1 ULP.
 *
 * Must not: project, normalise or round q/kv (the callers do, with the other ops), or write the
 * window ring (the caller appends the chunk's rows after attention, MODEL_MATH §7.1).
 */
#include "cuda_api.h"
#include "ops.cuh"

typedef struct attn_args {
    const float *q, *kv_chunk, *ring, *comp, *sinks, *freqs;
    const int32_t *isel, *n_isel;
    int64_t W, topk, pos0, H, Dh;
    int ratio, n_rope;
    float *out;
} attn_args;

/* Key row i of the attended set of the query at position p (see attn_items / window_row). */
__device__ __forceinline__ const float *attn_key(const attn_args &a, int64_t p, int64_t s0,
                                                 int64_t n_win, const int32_t *sel, int64_t i) {
    if (i < n_win) {
        int64_t s = s0 + i;
        if (s >= a.pos0) return a.kv_chunk + (s - a.pos0) * a.Dh;
        return a.ring + (s % a.W) * a.Dh;
    }
    int64_t r = sel ? sel[i - n_win] : i - n_win;
    return a.comp + r * a.Dh;
}

/* grid (H, n_tok), 256 threads; shared: q/o [Dh] then scores [max_keys]. */
__global__ void k_attn(attn_args a) {
    extern __shared__ float sh[];
    __shared__ float red[32];
    float *sq = sh, *z = sh + a.Dh;
    int64_t h = blockIdx.x, t = blockIdx.y, p = a.pos0 + t, Dh = a.Dh;
    const float *q = a.q + (t * a.H + h) * Dh;
    for (int64_t d = threadIdx.x; d < Dh; d += blockDim.x) sq[d] = q[d];
    int64_t s0 = p - a.W + 1 < 0 ? 0 : p - a.W + 1, n_win = p - s0 + 1, n_comp = 0;
    const int32_t *sel = NULL;
    if (a.isel) {
        n_comp = a.n_isel[t];
        sel = a.isel + t * a.topk;
    } else if (a.ratio) {
        n_comp = (p + 1) / a.ratio;
    }
    int64_t n_keys = n_win + n_comp;
    __syncthreads();
    const float tau = (float)(1.0 / sqrt((double)Dh)); /* MODEL_MATH §5.5 */
    int g = threadIdx.x >> 3, n_groups = blockDim.x >> 3;
    float mx = -INFINITY;
    for (int64_t base = 0; base < n_keys; base += n_groups) {
        int64_t i = base + g;
        const float *k = attn_key(a, p, s0, n_win, sel, i < n_keys ? i : 0);
        float d = __fmul_rn(tau, cu_dot8_ref(sq, k, Dh));
        if (i < n_keys) {
            mx = fmaxf(mx, d);
            if ((threadIdx.x & 7) == 0) z[i] = d;
        }
    }
    mx = cu_block_max(mx, red);
    float part = 0.0f;
    for (int64_t i = threadIdx.x; i < n_keys; i += blockDim.x) {
        float e = cu_exp_ref(__fsub_rn(z[i], mx));
        z[i] = e;
        part += e;
    }
    float den = cu_block_sum(part, red);
    den = __fadd_rn(cu_exp_ref(__fsub_rn(a.sinks[h], mx)), den); /* sink: zero value */
    float inv = __fdiv_rn(1.0f, den);
    __syncthreads();
    for (int64_t d = threadIdx.x; d < Dh; d += blockDim.x) {
        float acc = 0.0f;
        for (int64_t i = 0; i < n_keys; i++)
            acc = __fadd_rn(acc, __fmul_rn(z[i], attn_key(a, p, s0, n_win, sel, i)[d]));
        sq[d] = __fmul_rn(acc, inv);
    }
    __syncthreads();
    /* MODEL_MATH §5.6: inverse RoPE of the value tail at the query position. */
    int64_t tail = Dh - a.n_rope;
    for (int64_t j = threadIdx.x; j < a.n_rope / 2; j += blockDim.x)
        cu_rope_pair(sq + tail + 2 * j, a.freqs[j], (float)p, 1);
    __syncthreads();
    float *o = a.out + (t * a.H + h) * Dh;
    for (int64_t d = threadIdx.x; d < Dh; d += blockDim.x) o[d] = sq[d];
}

extern "C" size_t cuda_attn_max_keys(int64_t W, int ratio, int64_t topk, int indexed,
                                     int64_t pos_end) {
    int64_t n = W + (indexed ? topk : (ratio ? pos_end / ratio : 0));
    return (size_t)n;
}

extern "C" ds4_status cuda_attn(const float *d_q, const float *d_kv_chunk, const float *d_ring,
                                int64_t W, const float *d_comp, int ratio, const int32_t *d_isel,
                                const int32_t *d_n_isel, int64_t topk, const float *d_sinks,
                                int64_t n_tok, int64_t pos0, int64_t H, int64_t Dh, int n_rope,
                                const float *d_freqs, float *d_out, ds4_error *err) {
    if (n_tok <= 0) return DS4_OK;
    if (W < 1 || H < 1 || H > INT32_MAX || n_tok > 65535 || Dh < 1 || n_rope < 0 ||
        (n_rope & 1) || n_rope > Dh || ratio < 0 || (d_isel && (!d_n_isel || topk < 1)))
        return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                          "cuda_attn: W %lld, H %lld, Dh %lld, n_rope %d, ratio %d, %lld tokens",
                          (long long)W, (long long)H, (long long)Dh, n_rope, ratio,
                          (long long)n_tok);
    size_t keys = cuda_attn_max_keys(W, ratio, topk, d_isel != NULL, pos0 + n_tok);
    size_t smem = ((size_t)Dh + keys) * sizeof(float);
    int dev = 0, max_smem = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    if (smem > (size_t)max_smem - 1024)
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED,
                          "cuda_attn: %zu attended rows need %zu bytes of shared memory, the "
                          "device allows %d",
                          keys, smem, max_smem);
    if (smem > 48 * 1024)
        CU_CHECK(cudaFuncSetAttribute(k_attn, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      (int)smem),
                 err, "attn shared memory");
    attn_args a = {d_q, d_kv_chunk, d_ring, d_comp, d_sinks, d_freqs, d_isel, d_n_isel,
                   W, topk, pos0, H, Dh, ratio, n_rope, d_out};
    k_attn<<<dim3((unsigned)H, (unsigned)n_tok), 256, smem>>>(a);
    CU_LAUNCH_CHECK(err, "attn launch");
    return DS4_OK;
}
