/*
 * cuda/attention.cu — sparse attention with sinks for query tokens of one layer (MODEL_MATH
 * §5.4-5.6): each (token, head) attends over its sliding window (by position) then its
 * compressed rows (all rows complete by p, or the indexer's selection on ratio-4 layers), with
 * the per-head sink as a zero-value key, then de-rotates the value tail at the query position.
 *
 * Layout (V4 has one shared KV head, MQA): a block takes ATT_HB heads of one token and a
 * split of ATT_KS consecutive keys of its attended set, so each key row is read from L2 once
 * per head group rather than once per head. It writes a partial (max, Σexp, Σexp·k) per
 * (head, split); a second kernel merges the splits with the sink and applies the inverse RoPE.
 *
 * Numerics vs model/attention.c attn_items: the scores tau·(q·k) are bit-identical (the dot
 * follows cpu_dot_f32's order); the softmax uses per-split maxima and the splits' sums are
 * merged, so the outputs agree to a few f32 ULP, not bit for bit. Two or more query tokens (a
 * prefill chunk) take k_attn_chunk2 (default; k_attn_chunk with DS4_CUDA_ATTN_CHUNK=0)
 * instead: the CPU's order step for step, bit-identical. One
 * token (decode) takes attention_dec.cu (the same steps as the chunk kernel, over the whole
 * device) up to its row limit; the split/merge pair keeps longer lists and DS4_CUDA_ATTN_V1=1.
 *
 * Must not: project, normalise or round q/kv (other ops do), or write the window ring (the
 * caller appends the chunk's rows after attention, MODEL_MATH §7.1).
 */
#include "attention_dec.cuh"
#include "chunk_ops.h"
#include "cuda_api.h"
#include "ops.cuh"
#include "qnorm.cuh"

#include <stdlib.h>

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
        float x = acc[h];
        x = __fadd_rn(x, __shfl_xor_sync(0xffffffffu, x, 4));
        x = __fadd_rn(x, __shfl_xor_sync(0xffffffffu, x, 1));
        x = __fadd_rn(x, __shfl_xor_sync(0xffffffffu, x, 2));
        for (int64_t i = n8; i < Dh; i++) x = __fadd_rn(x, __fmul_rn(sq[h * Dh + i], kr[i]));
        v[h] = x;
    }
}

/* grid (head groups, splits, tokens), 256 threads; shared q [ATT_HB][Dh]. */
__global__ void __launch_bounds__(256) k_attn_split(attn_args a) {
    cu_pdl_wait();
    extern __shared__ float sq[];
    __shared__ const float *kp[ATT_KS];
    __shared__ float sc[ATT_HB][ATT_KS];
    if (a.dpos) a.pos0 = *a.dpos;
    int64_t t = blockIdx.z, h0 = (int64_t)blockIdx.x * ATT_HB, Dh = a.Dh;
    int64_t split = blockIdx.y, k0 = split * ATT_KS;
    int nh = (int)(a.H - h0 < ATT_HB ? a.H - h0 : ATT_HB);
    int64_t s0, n_win, n_keys;
    const int32_t *sel;
    attn_span(a, t, &s0, &n_win, &n_keys, &sel);
    int nk = (int)(n_keys - k0 < ATT_KS ? (n_keys - k0 > 0 ? n_keys - k0 : 0) : ATT_KS);
    float *part = a.part + ((t * a.H + h0) * a.n_splits + split) * (Dh + 2);
    int64_t pstride = a.n_splits * (Dh + 2); /* next head, same split */
    if (nk == 0) {
        for (int h = 0; h < nh; h++)
            for (int64_t d = threadIdx.x; d < Dh + 2; d += blockDim.x)
                part[h * pstride + d] = d == Dh ? -INFINITY : 0.0f;
        return;
    }
    for (int64_t i = threadIdx.x; i < (int64_t)nh * Dh; i += blockDim.x)
        sq[i] = a.q[(t * a.H + h0) * Dh + i];
    if (threadIdx.x < ATT_KS)
        kp[threadIdx.x] = attn_key(a, s0, n_win, sel, k0 + (threadIdx.x < nk ? threadIdx.x : 0));
    __syncthreads();
    /* Scores: lane group g (8 lanes) takes key g and all heads at once (independent chains),
     * each chain in cu_dot8_ref's order so q·k is the CPU's cpu_dot_f32 bit for bit. */
    const float tau = (float)(1.0 / sqrt((double)Dh)); /* MODEL_MATH §5.5 */
    {
        int g = threadIdx.x >> 3, k = threadIdx.x & 7;
        float v[ATT_HB];
        attn_dot_heads(sq, kp[g], Dh, k, v);
#pragma unroll
        for (int h = 0; h < ATT_HB; h++)
            if (k == 0 && h < nh) sc[h][g] = g < nk ? __fmul_rn(tau, v[h]) : -INFINITY;
    }
    __syncthreads();
    /* Warp h takes head h, lane i key i: split max, exp(s - max) (rounded from double), sum. */
    {
        int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
        if (w < nh) {
            float v = sc[w][lane], m = v;
            for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
            float e = lane < nk ? cu_exp_ref(__fsub_rn(v, m)) : 0.0f;
            sc[w][lane] = e;
            float l = cu_warp_sum(e);
            if (lane == 0) {
                part[w * pstride + Dh] = m;
                part[w * pstride + Dh + 1] = l;
            }
        }
    }
    __syncthreads();
    /* Σ_i e_i·k_i[d] in key order; each key element is loaded once for all heads. */
    for (int64_t d = threadIdx.x; d < Dh; d += blockDim.x) {
        float acc[ATT_HB];
#pragma unroll
        for (int h = 0; h < ATT_HB; h++) acc[h] = 0.0f;
#pragma unroll 4
        for (int i = 0; i < nk; i++) {
            float kv = kp[i][d];
#pragma unroll
            for (int h = 0; h < ATT_HB; h++) acc[h] = __fadd_rn(acc[h], __fmul_rn(sc[h][i], kv));
        }
#pragma unroll
        for (int h = 0; h < ATT_HB; h++)
            if (h < nh) part[h * pstride + d] = acc[h];
    }
}

/* grid (H, tokens): merge the splits with the sink (a zero-value key), inverse RoPE. */
__global__ void __launch_bounds__(256) k_attn_merge(attn_args a) {
    cu_pdl_wait();
    if (a.dpos) a.pos0 = *a.dpos;
    extern __shared__ float so[];
    __shared__ float sw[1024];
    __shared__ float s_den;
    int64_t h = blockIdx.x, t = blockIdx.y, Dh = a.Dh, p = a.pos0 + t, S = a.n_splits;
    const float *part = a.part + (t * a.H + h) * S * (Dh + 2);
    __shared__ float red[32];
    float m = -INFINITY;
    for (int64_t s = threadIdx.x; s < S; s += blockDim.x) m = fmaxf(m, part[s * (Dh + 2) + Dh]);
    float M = fmaxf(cu_block_max(m, red), a.sinks[h]);
    float dl = 0.0f;
    for (int64_t s = threadIdx.x; s < S; s += blockDim.x) {
        float w = cu_exp_ref(__fsub_rn(part[s * (Dh + 2) + Dh], M));
        sw[s] = w;
        dl = __fadd_rn(dl, __fmul_rn(w, part[s * (Dh + 2) + Dh + 1]));
    }
    dl = cu_block_sum(dl, red);
    if (threadIdx.x == 0) s_den = __fadd_rn(cu_exp_ref(__fsub_rn(a.sinks[h], M)), dl);
    __syncthreads();
    float inv = __fdiv_rn(1.0f, s_den);
    for (int64_t d = threadIdx.x; d < Dh; d += blockDim.x) {
        float acc = 0.0f;
#pragma unroll 4
        for (int64_t s = 0; s < S; s++) acc = __fadd_rn(acc, __fmul_rn(sw[s], part[s * (Dh + 2) + d]));
        so[d] = __fmul_rn(acc, inv);
    }
    __syncthreads();
    /* MODEL_MATH §5.6: inverse RoPE of the value tail at the query position. */
    int64_t tail = Dh - a.n_rope;
    for (int64_t j = threadIdx.x; j < a.n_rope / 2; j += blockDim.x)
        cu_rope_pair(so + tail + 2 * j, a.freqs[j], (float)p, 1);
    __syncthreads();
    float *o = a.out + (t * a.H + h) * Dh;
    for (int64_t d = threadIdx.x; d < Dh; d += blockDim.x) o[d] = so[d];
}

/* ---- Prefill chunks: one block per (token, ATT_HB heads), the CPU's order ------------------
 * For two or more query tokens (a prefill chunk; not the graph's dpos calls) one block takes a
 * token and ATT_HB heads with q in shared memory and follows model/attention.c attn_items
 * step for step, so the output is bit-identical to the CPU (tests/cuda/test_cuda_chunk.c):
 * scores tau·(q·k) in cpu_dot_f32's order (the split kernel's lane groups and shuffles), the
 * maximum over the keys (sink excluded), den = exp(sink - max) then + e_i key by key, acc[d]
 * = Σ e_i·k_i[d] key by key from 0, out = acc·(1/den), inverse RoPE. No partials buffer: the
 * split/merge pair above (per-split maxima, so a few ULP off the CPU) keeps the single-token
 * decode step, whose one token needs the splits' parallelism. */
#define ATTC_SMEM_MAX (200 * 1024)

static size_t attc_smem(int64_t Dh, int64_t keys) {
    int64_t nk = (keys + ATT_KS - 1) / ATT_KS * ATT_KS;
    return (size_t)(ATT_HB * Dh + ATT_HB * nk) * sizeof(float) + (size_t)nk * sizeof(const float *);
}

static int attc_use(int64_t n_tok, int64_t Dh, int64_t keys, int dpos) {
    return !dpos && n_tok >= 2 && Dh <= 256 * 16 && attc_smem(Dh, keys) <= ATTC_SMEM_MAX;
}

template <int ND>
__global__ void __launch_bounds__(256) k_attn_chunk(attn_args a, int64_t nk_cap) {
    cu_pdl_wait();
    extern __shared__ float sm_[];
    __shared__ float red[32];
    __shared__ float s_mx[ATT_HB], s_inv[ATT_HB];
    const int64_t Dh = a.Dh;
    float *sq = sm_;                           /* [ATT_HB][Dh]; the output after the sums */
    float *sc = sq + ATT_HB * Dh;              /* [ATT_HB][nk_cap]: scores, then exp */
    const float **kp = (const float **)(sc + ATT_HB * nk_cap); /* [nk_cap] key rows */
    int64_t t = blockIdx.y, h0 = (int64_t)blockIdx.x * ATT_HB, p = a.pos0 + t;
    int nh = (int)(a.H - h0 < ATT_HB ? a.H - h0 : ATT_HB);
    int64_t s0, n_win, n_keys;
    const int32_t *sel;
    attn_span(a, t, &s0, &n_win, &n_keys, &sel);
    int64_t nk32 = (n_keys + ATT_KS - 1) / ATT_KS * ATT_KS;
    for (int64_t i = threadIdx.x; i < (int64_t)nh * Dh; i += blockDim.x)
        sq[i] = a.q[(t * a.H + h0) * Dh + i];
    for (int64_t i = threadIdx.x; i < nk32; i += blockDim.x)
        kp[i] = attn_key(a, s0, n_win, sel, i < n_keys ? i : 0);
    __syncthreads();
    /* Scores: lane group g (8 lanes) takes keys g, g+32, ...; cpu_dot_f32's 8-lane chains. */
    const float tau = (float)(1.0 / sqrt((double)Dh)); /* MODEL_MATH §5.5 */
    {
        int g = threadIdx.x >> 3, k = threadIdx.x & 7;
        for (int64_t k0 = 0; k0 < nk32; k0 += ATT_KS) {
            float v[ATT_HB];
            attn_dot_heads(sq, kp[k0 + g], Dh, k, v);
#pragma unroll
            for (int h = 0; h < ATT_HB; h++)
                if (k == 0 && h < nh && k0 + g < n_keys) sc[h * nk_cap + k0 + g] = __fmul_rn(tau, v[h]);
        }
    }
    __syncthreads();
    /* The maximum over the keys (exact in any order), then e_i = exp(z_i - max). */
    for (int h = 0; h < nh; h++) {
        float m = -INFINITY;
        for (int64_t i = threadIdx.x; i < n_keys; i += blockDim.x) m = fmaxf(m, sc[h * nk_cap + i]);
        m = cu_block_max(m, red);
        if (threadIdx.x == 0) s_mx[h] = m;
    }
    __syncthreads();
    for (int64_t x = threadIdx.x; x < (int64_t)nh * n_keys; x += blockDim.x) {
        int64_t h = x / n_keys, i = x % n_keys;
        sc[h * nk_cap + i] = cu_exp_ref(__fsub_rn(sc[h * nk_cap + i], s_mx[h]));
    }
    __syncthreads();
    /* den in the CPU's order: the sink's term, then the keys one by one (a thread per head). */
    if (threadIdx.x < nh) {
        int h = threadIdx.x;
        float den = cu_exp_ref(__fsub_rn(a.sinks[h0 + h], s_mx[h]));
        for (int64_t i = 0; i < n_keys; i++) den = __fadd_rn(den, sc[h * nk_cap + i]);
        s_inv[h] = __fdiv_rn(1.0f, den);
    }
    /* acc[d] = Σ_i e_i·k_i[d], keys in order; thread owns dims d = threadIdx.x + 256 j. */
    float acc[ND][ATT_HB];
#pragma unroll
    for (int j = 0; j < ND; j++)
#pragma unroll
        for (int h = 0; h < ATT_HB; h++) acc[j][h] = 0.0f;
    for (int64_t i = 0; i < n_keys; i++) {
        const float *kr = kp[i];
        float e[ATT_HB];
#pragma unroll
        for (int h = 0; h < ATT_HB; h++) e[h] = h < nh ? sc[h * nk_cap + i] : 0.0f;
#pragma unroll
        for (int j = 0; j < ND; j++) {
            int64_t d = threadIdx.x + 256 * j;
            float kv = d < Dh ? kr[d] : 0.0f;
#pragma unroll
            for (int h = 0; h < ATT_HB; h++) acc[j][h] = __fadd_rn(acc[j][h], __fmul_rn(e[h], kv));
        }
    }
    __syncthreads(); /* every thread is done with q (and s_inv is written): sq becomes the output */
#pragma unroll
    for (int j = 0; j < ND; j++) {
        int64_t d = threadIdx.x + 256 * j;
        if (d < Dh)
            for (int h = 0; h < nh; h++) sq[h * Dh + d] = __fmul_rn(acc[j][h], s_inv[h]);
    }
    __syncthreads();
    /* MODEL_MATH §5.6: inverse RoPE of the value tail at the query position. */
    int64_t tail = Dh - a.n_rope, npair = a.n_rope / 2;
    for (int64_t x = threadIdx.x; x < (int64_t)nh * npair; x += blockDim.x)
        cu_rope_pair(sq + (x / npair) * Dh + tail + 2 * (x % npair), a.freqs[x % npair], (float)p, 1);
    __syncthreads();
    for (int64_t i = threadIdx.x; i < (int64_t)nh * Dh; i += blockDim.x)
        a.out[(t * a.H + h0) * Dh + i] = sq[i];
}

/* ---- Prefill chunks, register-tiled (h5): the same steps per head as k_attn_chunk --------
 * What made k_attn_chunk slow is the work per instruction, not the key traffic (16 heads per
 * block, which halves the passes over the keys, was no faster): in the scores each lane group
 * took one key, so every multiply-add paid its own q load from shared memory and a key load
 * with nothing independent in flight; the value sums paid one shared-memory load per head per
 * key. Here a lane group takes up to ATC2_RK keys at once (one q load serves RK keys, RK key
 * loads in flight), the scores are stored key-major ([key][HB]) so the value sums read a key's
 * HB weights as float4s, and the value sums load 4 keys ahead. Per (head, key) and per (head,
 * dimension) the float steps and their order are exactly k_attn_chunk's (cpu_dot_f32's lane
 * chains and pairwise lane sum; max; exp; den from the sink then key by key; acc key by key),
 * so the output is the same bits (tests/cuda/test_cuda_chunk.c compares the two). */
#define ATC2_RK 4

/* Scores of the keys k0 + r·32 + g (r < RK) against the block's HB heads; lane k of the
 * 8-lane group g holds chain k. Keys past n_keys read row 0 and are not written. */
template <int HB, int RK, int NG, bool PF>
__device__ __forceinline__ void attc2_scores(const float *sq, const float *const *kp, float *sc,
                                             int64_t Dh, int64_t k0, int64_t n_keys, int nh,
                                             float tau) {
    int g = threadIdx.x >> 3, k = threadIdx.x & 7;
    const float *kr[RK];
    float acc[RK][HB];
#pragma unroll
    for (int r = 0; r < RK; r++) {
        kr[r] = kp[k0 + r * NG + g];
#pragma unroll
        for (int h = 0; h < HB; h++) acc[r][h] = 0.0f;
    }
    int64_t n8 = Dh & ~(int64_t)7;
    float kv[RK];
    if (PF && n8 > 0) /* PF: each step's key values are loaded one step ahead */
#pragma unroll
        for (int r = 0; r < RK; r++) kv[r] = kr[r][k];
#pragma unroll 2
    for (int64_t i = 0; i < n8; i += 8) {
        float kn[RK];
        int64_t inext = i + 8 < n8 ? i + 8 : i;
#pragma unroll
        for (int r = 0; r < RK; r++) {
            if (PF) kn[r] = kr[r][inext + k];
            else kv[r] = kr[r][i + k];
        }
#pragma unroll
        for (int h = 0; h < HB; h++) {
            float qv = sq[h * Dh + i + k];
#pragma unroll
            for (int r = 0; r < RK; r++) acc[r][h] = __fadd_rn(acc[r][h], __fmul_rn(qv, kv[r]));
        }
        if (PF)
#pragma unroll
            for (int r = 0; r < RK; r++) kv[r] = kn[r];
    }
#pragma unroll
    for (int r = 0; r < RK; r++) {
        int64_t j = k0 + r * NG + g;
#pragma unroll
        for (int h = 0; h < HB; h++) {
            float x = acc[r][h];
            x = __fadd_rn(x, __shfl_xor_sync(0xffffffffu, x, 4));
            x = __fadd_rn(x, __shfl_xor_sync(0xffffffffu, x, 1));
            x = __fadd_rn(x, __shfl_xor_sync(0xffffffffu, x, 2));
            for (int64_t i = n8; i < Dh; i++) x = __fadd_rn(x, __fmul_rn(sq[h * Dh + i], kr[r][i]));
            if (k == 0 && h < nh && j < n_keys) sc[j * HB + h] = __fmul_rn(tau, x);
        }
    }
}

/* Key slots: keys rounded up to the lane groups of a block (NT / 8). */
static int64_t attc2_nk(int64_t keys, int nt) { return (keys + nt / 8 - 1) / (nt / 8) * (nt / 8); }

static size_t attc2_smem(int64_t Dh, int64_t keys, int hb, int nt) {
    int64_t nk = attc2_nk(keys, nt);
    return (size_t)(hb * Dh + hb * nk) * sizeof(float) + (size_t)nk * sizeof(const float *);
}

/* grid (head groups of HB, tokens), NT threads (NT / 8 lane groups; a lane group takes up to
 * RKM keys at once); the thread owns dims threadIdx.x + NT j. */
template <int ND, int HB, int NT, int RKM, bool PF>
__global__ void __launch_bounds__(NT) k_attn_chunk2(attn_args a, int64_t nk_cap, float qn_eps) {
    cu_pdl_wait();
    extern __shared__ __align__(16) float sm2_[];
    __shared__ float s_red[NT / 32][HB];
    const int NG = NT / 8;
    __shared__ float s_mx[HB], s_inv[HB];
    const int64_t Dh = a.Dh;
    float *sq = sm2_;                          /* [HB][Dh]; the output after the sums */
    float *sc = sq + HB * Dh;                  /* [nk_cap][HB]: scores, then exp (0 past nh) */
    const float **kp = (const float **)(sc + HB * nk_cap); /* [nk_cap] key rows */
    int64_t t = blockIdx.y, h0 = (int64_t)blockIdx.x * HB, p = a.pos0 + t;
    int nh = (int)(a.H - h0 < HB ? a.H - h0 : HB);
    int64_t s0, n_win, n_keys;
    const int32_t *sel;
    attn_span(a, t, &s0, &n_win, &n_keys, &sel);
    int64_t nkg = (n_keys + NG - 1) / NG * NG;
    for (int64_t i = threadIdx.x; i < (int64_t)nh * Dh; i += blockDim.x)
        sq[i] = a.q[(t * a.H + h0) * Dh + i];
    for (int64_t i = threadIdx.x; i < nkg; i += blockDim.x)
        kp[i] = attn_key(a, s0, n_win, sel, i < n_keys ? i : 0);
    __syncthreads();
    if (qn_eps > 0.0f) { /* cuda_attn_qnorm: §3.2-3.3 on the staged q rows, a warp per head */
        for (int h = (int)(threadIdx.x >> 5); h < nh; h += NT / 32)
            cu_qnorm_rope_warp(sq + h * Dh, Dh, qn_eps, Dh - a.n_rope, a.n_rope, a.freqs, (float)p);
        __syncthreads();
    }
    const float tau = (float)(1.0 / sqrt((double)Dh)); /* MODEL_MATH §5.5 */
    for (int64_t k0 = 0; k0 < n_keys;) { /* as many keys per lane group as are left, up to RKM */
        int64_t rem = n_keys - k0;
        if (RKM >= 4 && rem > 3 * NG) {
            attc2_scores<HB, RKM >= 4 ? 4 : 1, NG, PF>(sq, kp, sc, Dh, k0, n_keys, nh, tau);
            k0 += 4 * NG;
        } else if (RKM >= 3 && rem > 2 * NG) {
            attc2_scores<HB, RKM >= 3 ? 3 : 1, NG, PF>(sq, kp, sc, Dh, k0, n_keys, nh, tau);
            k0 += 3 * NG;
        } else if (RKM >= 2 && rem > NG) {
            attc2_scores<HB, 2, NG, PF>(sq, kp, sc, Dh, k0, n_keys, nh, tau);
            k0 += 2 * NG;
        } else {
            attc2_scores<HB, 1, NG, PF>(sq, kp, sc, Dh, k0, n_keys, nh, tau);
            k0 += NG;
        }
    }
    __syncthreads();
    /* The maximum over the keys per head (exact in any order): thread x takes head x mod HB. */
    {
        int h = threadIdx.x % HB;
        float m = -INFINITY;
        for (int64_t x = threadIdx.x; x < n_keys * HB; x += blockDim.x) m = fmaxf(m, sc[x]);
        for (int o = HB; o < 32; o <<= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
        if ((threadIdx.x & 31) < HB) s_red[threadIdx.x >> 5][h] = m;
        __syncthreads();
        if (threadIdx.x < HB) {
            float v = s_red[0][threadIdx.x];
            for (int w = 1; w < NT / 32; w++) v = fmaxf(v, s_red[w][threadIdx.x]);
            s_mx[threadIdx.x] = v;
        }
        __syncthreads();
    }
    for (int64_t x = threadIdx.x; x < n_keys * HB; x += blockDim.x) {
        int h = (int)(x % HB);
        sc[x] = h < nh ? cu_exp_ref(__fsub_rn(sc[x], s_mx[h])) : 0.0f;
    }
    __syncthreads();
    /* den in the CPU's order: the sink's term, then the keys one by one (a thread per head). */
    if (threadIdx.x < nh) {
        int h = threadIdx.x;
        float den = cu_exp_ref(__fsub_rn(a.sinks[h0 + h], s_mx[h]));
        for (int64_t i = 0; i < n_keys; i++) den = __fadd_rn(den, sc[i * HB + h]);
        s_inv[h] = __fdiv_rn(1.0f, den);
    }
    /* acc[d] = Σ_i e_i·k_i[d], keys in order, UK keys' rows loaded ahead. */
    float acc[ND][HB];
#pragma unroll
    for (int j = 0; j < ND; j++)
#pragma unroll
        for (int h = 0; h < HB; h++) acc[j][h] = 0.0f;
    const int UK = ND * HB > 16 ? 2 : 4;
    int64_t i = 0;
    float kv[UK][ND], kn[UK][ND]; /* PF: the next UK keys' values load during these UK */
    if (PF && UK <= n_keys)
#pragma unroll
        for (int u = 0; u < UK; u++)
#pragma unroll
            for (int j = 0; j < ND; j++) {
                int64_t d = threadIdx.x + NT * j;
                kv[u][j] = d < Dh ? kp[u][d] : 0.0f;
            }
    for (; i + UK <= n_keys; i += UK) {
        int64_t inext = i + 2 * UK <= n_keys ? i + UK : i;
#pragma unroll
        for (int u = 0; u < UK; u++) {
            const float *kr = kp[(PF ? inext : i) + u];
#pragma unroll
            for (int j = 0; j < ND; j++) {
                int64_t d = threadIdx.x + NT * j;
                float v = d < Dh ? kr[d] : 0.0f;
                if (PF) kn[u][j] = v;
                else kv[u][j] = v;
            }
        }
#pragma unroll
        for (int u = 0; u < UK; u++) {
            float e[HB];
            const float4 *e4 = (const float4 *)(sc + (i + u) * HB);
#pragma unroll
            for (int c = 0; c < HB / 4; c++) {
                float4 v = e4[c];
                e[4 * c] = v.x, e[4 * c + 1] = v.y, e[4 * c + 2] = v.z, e[4 * c + 3] = v.w;
            }
#pragma unroll
            for (int j = 0; j < ND; j++)
#pragma unroll
                for (int h = 0; h < HB; h++) acc[j][h] = __fadd_rn(acc[j][h], __fmul_rn(e[h], kv[u][j]));
        }
        if (PF)
#pragma unroll
            for (int u = 0; u < UK; u++)
#pragma unroll
                for (int j = 0; j < ND; j++) kv[u][j] = kn[u][j];
    }
    for (; i < n_keys; i++) {
        const float *kr = kp[i];
#pragma unroll
        for (int j = 0; j < ND; j++) {
            int64_t d = threadIdx.x + NT * j;
            float kv = d < Dh ? kr[d] : 0.0f;
#pragma unroll
            for (int h = 0; h < HB; h++) acc[j][h] = __fadd_rn(acc[j][h], __fmul_rn(sc[i * HB + h], kv));
        }
    }
    __syncthreads(); /* every thread is done with q (and s_inv is written): sq becomes the output */
#pragma unroll
    for (int j = 0; j < ND; j++) {
        int64_t d = threadIdx.x + NT * j;
        if (d < Dh) /* h unrolled: a runtime bound would put acc in local memory */
#pragma unroll
            for (int h = 0; h < HB; h++)
                if (h < nh) sq[h * Dh + d] = __fmul_rn(acc[j][h], s_inv[h]);
    }
    __syncthreads();
    /* MODEL_MATH §5.6: inverse RoPE of the value tail at the query position. */
    int64_t tail = Dh - a.n_rope, npair = a.n_rope / 2;
    for (int64_t x = threadIdx.x; x < (int64_t)nh * npair; x += blockDim.x)
        cu_rope_pair(sq + (x / npair) * Dh + tail + 2 * (x % npair), a.freqs[x % npair], (float)p, 1);
    __syncthreads();
    for (int64_t x = threadIdx.x; x < (int64_t)nh * Dh; x += blockDim.x)
        a.out[(t * a.H + h0) * Dh + x] = sq[x];
}

template <int ND, int HB, int NT, int RKM, bool PF = false>
static ds4_status attc2_launch(const attn_args &a, int64_t n_tok, int64_t keys, float qn_eps,
                               ds4_error *err) {
    int64_t nk_cap = attc2_nk(keys, NT);
    size_t smem = attc2_smem(a.Dh, keys, HB, NT);
    CU_CHECK(cudaFuncSetAttribute(k_attn_chunk2<ND, HB, NT, RKM, PF>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
             err, "attn chunk shared memory");
    dim3 g((unsigned)((a.H + HB - 1) / HB), (unsigned)n_tok);
    cu_launch(k_attn_chunk2<ND, HB, NT, RKM, PF>, g, NT, smem, a, nk_cap, qn_eps);
    CU_LAUNCH_CHECK(err, "attn chunk launch");
    return DS4_OK;
}

/* The chunk kernel to take (cuda_attn_chunk_set_variant): 0 = k_attn_chunk, 8 / 16 / 32 =
 * k_attn_chunk2 with that many heads per block (32: 512 threads, 2 keys per lane group), 9 =
 * 8 heads with the key values loaded one step ahead. Default 8: on the H200 (04:15 UTC) the
 * chunk's attention took 183.8 ms with 8, 200.6 with 16, 255.0 with 32, 261.9 with 0. */
static int g_attc_variant = -1;

extern "C" void cuda_attn_chunk_set_variant(int v) { g_attc_variant = v; }

static int attc_variant(void) {
    if (g_attc_variant < 0) {
        const char *e = getenv("DS4_CUDA_ATTN_CHUNK");
        int v = e ? atoi(e) : 8;
        g_attc_variant = v == 0 || v == 9 || v == 16 || v == 32 ? v : 8;
    }
    return g_attc_variant;
}

template <int ND>
static ds4_status attc_launch(const attn_args &a, int64_t n_tok, int64_t keys, ds4_error *err) {
    int64_t nk_cap = (keys + ATT_KS - 1) / ATT_KS * ATT_KS;
    size_t smem = attc_smem(a.Dh, keys);
    CU_CHECK(cudaFuncSetAttribute(k_attn_chunk<ND>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  (int)smem),
             err, "attn chunk shared memory");
    dim3 g((unsigned)((a.H + ATT_HB - 1) / ATT_HB), (unsigned)n_tok);
    cu_launch(k_attn_chunk<ND>, g, 256, smem, a, nk_cap);
    CU_LAUNCH_CHECK(err, "attn chunk launch");
    return DS4_OK;
}

/* Whether attc takes k_attn_chunk2 for head dim Dh and this many keys (variant v). */
static bool attc2_takes(int v, int64_t Dh, int64_t keys) {
    int64_t nd = (Dh + 255) / 256;
    if (v == 32) return Dh <= 512 && attc2_smem(Dh, keys, 32, 512) <= ATTC_SMEM_MAX;
    if (v == 8 || v == 9 || v == 16)
        return nd <= 2 && attc2_smem(Dh, keys, v == 16 ? 16 : 8, 256) <= ATTC_SMEM_MAX;
    return false;
}

/* qn_eps > 0 (cuda_attn_qnorm; only where attc2_takes): q's norm + RoPE in the kernel. */
static ds4_status attc(const attn_args &a, int64_t n_tok, int64_t keys, ds4_error *err,
                       float qn_eps = 0.0f) {
    int64_t nd = (a.Dh + 255) / 256;
    int v = attc_variant();
    /* k_attn_chunk2 for head dims up to 512 while its shared memory fits (else the first). */
    if (v == 32 && a.Dh <= 512 && attc2_smem(a.Dh, keys, 32, 512) <= ATTC_SMEM_MAX)
        return attc2_launch<1, 32, 512, 2>(a, n_tok, keys, qn_eps, err);
    if (v == 9 && nd <= 2 && attc2_smem(a.Dh, keys, 8, 256) <= ATTC_SMEM_MAX)
        return nd <= 1 ? attc2_launch<1, 8, 256, 4, true>(a, n_tok, keys, qn_eps, err)
                       : attc2_launch<2, 8, 256, 4, true>(a, n_tok, keys, qn_eps, err);
    if ((v == 8 || v == 16) && nd <= 2 && attc2_smem(a.Dh, keys, v, 256) <= ATTC_SMEM_MAX) {
        if (v == 16) return nd <= 1 ? attc2_launch<1, 16, 256, 4>(a, n_tok, keys, qn_eps, err)
                                    : attc2_launch<2, 16, 256, 4>(a, n_tok, keys, qn_eps, err);
        return nd <= 1 ? attc2_launch<1, 8, 256, 4>(a, n_tok, keys, qn_eps, err)
                       : attc2_launch<2, 8, 256, 4>(a, n_tok, keys, qn_eps, err);
    }
    if (nd <= 1) return attc_launch<1>(a, n_tok, keys, err);
    if (nd <= 2) return attc_launch<2>(a, n_tok, keys, err);
    if (nd <= 4) return attc_launch<4>(a, n_tok, keys, err);
    if (nd <= 8) return attc_launch<8>(a, n_tok, keys, err);
    return attc_launch<16>(a, n_tok, keys, err);
}

extern "C" size_t cuda_attn_max_keys(int64_t W, int ratio, int64_t topk, int indexed,
                                     int64_t pos_end) {
    int64_t n = W + (indexed ? topk : (ratio ? pos_end / ratio : 0));
    return (size_t)n;
}

static int64_t attn_splits(int64_t W, int ratio, int64_t topk, int indexed, int64_t pos_end) {
    int64_t keys = (int64_t)cuda_attn_max_keys(W, ratio, topk, indexed, pos_end);
    return (keys + ATT_KS - 1) / ATT_KS;
}

extern "C" size_t cuda_attn_scratch_bytes(int64_t n_tok, int64_t H, int64_t Dh, int64_t W,
                                          int ratio, int64_t topk, int indexed, int64_t pos0) {
    int64_t S = attn_splits(W, ratio, topk, indexed, pos0 + n_tok);
    if (attc_use(n_tok, Dh, (int64_t)cuda_attn_max_keys(W, ratio, topk, indexed, pos0 + n_tok), 0))
        return sizeof(float); /* the chunk kernel needs no partials */
    size_t b = (size_t)n_tok * (size_t)H * (size_t)S * (size_t)(Dh + 2) * sizeof(float);
    size_t d = n_tok == 1 ? attd_scratch_bytes(H, Dh, (int64_t)cuda_attn_max_keys(W, ratio, topk, indexed, pos0 + 1)) : 0;
    return b > d ? b : d; /* either decode path (DS4_CUDA_ATTN_V1) */
}

/* DS4_CUDA_ATTN_V1=1: one-token attention by the split/merge kernels above (read per call). */
static int attd_v1(void) {
    const char *v = getenv("DS4_CUDA_ATTN_V1");
    return v && atoi(v) == 1;
}

/* pos0: the position, or with d_pos0 a bound of it that sizes the splits (the kernels read
 * the position; splits past its keys write neutral partials the merge adds as exact zeros). */
static ds4_status attn(const float *d_q, const float *d_kv_chunk, const float *d_ring,
                       int64_t W, const float *d_comp, int ratio, const int32_t *d_isel,
                       const int32_t *d_n_isel, int64_t topk, const float *d_sinks,
                       int64_t n_tok, int64_t pos0, const int64_t *d_pos0, int64_t H, int64_t Dh,
                       int n_rope, const float *d_freqs, float *d_scratch, float *d_out,
                       ds4_error *err) {
    if (n_tok <= 0) return DS4_OK;
    if (W < 1 || H < 1 || H > 65535 || n_tok > 65535 || Dh < 1 || Dh > 4096 || n_rope < 0 ||
        (n_rope & 1) || n_rope > Dh || ratio < 0 || pos0 < 0 ||
        (d_isel && (!d_n_isel || topk < 1)))
        return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                          "cuda_attn: W %lld, H %lld, Dh %lld, n_rope %d, ratio %d, %lld tokens",
                          (long long)W, (long long)H, (long long)Dh, n_rope, ratio,
                          (long long)n_tok);
    int64_t S = attn_splits(W, ratio, topk, d_isel != NULL, pos0 + n_tok);
    if (S > 1024 || S > 65535)
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED,
                          "cuda_attn: %lld attended rows exceed the %d the merge supports",
                          (long long)S * ATT_KS, 1024 * ATT_KS);
    attn_args a = {d_q, d_kv_chunk, d_ring, d_comp, d_sinks, d_freqs, d_isel, d_n_isel,
                   W, topk, pos0, H, Dh, S, ratio, n_rope, d_scratch, d_out, d_pos0};
    int64_t keys = (int64_t)cuda_attn_max_keys(W, ratio, topk, d_isel != NULL, pos0 + n_tok);
    if (n_tok == 1 && !attd_v1()) { /* attention_dec.cu: the CPU's order, two launches (h2) */
        const attd_in in = {d_q, d_kv_chunk, d_ring, d_comp, d_sinks, d_freqs, d_isel, d_n_isel,
                            W, topk, pos0, H, Dh, ratio, n_rope, d_pos0, keys, d_scratch, d_out};
        ds4_status st = DS4_OK;
        if (attd_launch(in, &st, err)) return st;
    }
    if (attc_use(n_tok, Dh, keys, d_pos0 != NULL)) return attc(a, n_tok, keys, err);
    size_t smem = (size_t)ATT_HB * (size_t)Dh * sizeof(float);
    if (smem > 48 * 1024)
        CU_CHECK(cudaFuncSetAttribute(k_attn_split, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      (int)smem),
                 err, "attn shared memory");
    dim3 g1((unsigned)((H + ATT_HB - 1) / ATT_HB), (unsigned)S, (unsigned)n_tok);
    cu_launch(k_attn_split, g1, 256, smem, a);
    CU_LAUNCH_CHECK(err, "attn split launch");
    cu_launch(k_attn_merge, dim3((unsigned)H, (unsigned)n_tok), 256, (size_t)Dh * sizeof(float), a);
    CU_LAUNCH_CHECK(err, "attn merge launch");
    return DS4_OK;
}

extern "C" ds4_status cuda_attn(const float *d_q, const float *d_kv_chunk, const float *d_ring,
                                int64_t W, const float *d_comp, int ratio, const int32_t *d_isel,
                                const int32_t *d_n_isel, int64_t topk, const float *d_sinks,
                                int64_t n_tok, int64_t pos0, int64_t H, int64_t Dh, int n_rope,
                                const float *d_freqs, float *d_scratch, float *d_out,
                                ds4_error *err) {
    return attn(d_q, d_kv_chunk, d_ring, W, d_comp, ratio, d_isel, d_n_isel, topk, d_sinks, n_tok,
                pos0, NULL, H, Dh, n_rope, d_freqs, d_scratch, d_out, err);
}

/* cuda_attn with q's per-head RMSNorm (no weight, eps q_eps) and RoPE at the token positions
 * done first (MODEL_MATH §3.2-3.3, the ops cuda_rmsnorm + cuda_rope_tail would do on q): inside
 * k_attn_chunk2 on the rows it stages when it takes the call, else as cuda_qnorm_rope_chunk on
 * d_q then cuda_attn. d_q is left unnormalized in the first case. */
extern "C" ds4_status cuda_attn_qnorm(float *d_q, const float *d_kv_chunk, const float *d_ring,
                                      int64_t W, const float *d_comp, int ratio,
                                      const int32_t *d_isel, const int32_t *d_n_isel,
                                      int64_t topk, const float *d_sinks, int64_t n_tok,
                                      int64_t pos0, int64_t H, int64_t Dh, int n_rope,
                                      const float *d_freqs, float q_eps, float *d_scratch,
                                      float *d_out, ds4_error *err) {
    int64_t keys = (int64_t)cuda_attn_max_keys(W, ratio, topk, d_isel != NULL, pos0 + n_tok);
    bool fused = q_eps > 0.0f && n_tok >= 2 && n_tok <= 65535 && W >= 1 && H >= 1 &&
                 H <= 65535 && Dh < 2048 && n_rope >= 0 && !(n_rope & 1) && n_rope <= Dh && ratio >= 0 && pos0 >= 0 &&
                 (!d_isel || (d_n_isel && topk >= 1)) && attc_use(n_tok, Dh, keys, 0) &&
                 attc2_takes(attc_variant(), Dh, keys);
    if (!fused) {
        ds4_status st = cuda_qnorm_rope_chunk(d_q, n_tok * H, Dh, q_eps, Dh - n_rope, H, n_rope,
                                              d_freqs, pos0, err);
        return st ? st : cuda_attn(d_q, d_kv_chunk, d_ring, W, d_comp, ratio, d_isel, d_n_isel,
                                   topk, d_sinks, n_tok, pos0, H, Dh, n_rope, d_freqs, d_scratch,
                                   d_out, err);
    }
    int64_t S = attn_splits(W, ratio, topk, d_isel != NULL, pos0 + n_tok);
    attn_args a = {d_q, d_kv_chunk, d_ring, d_comp, d_sinks, d_freqs, d_isel, d_n_isel,
                   W, topk, pos0, H, Dh, S, ratio, n_rope, d_scratch, d_out, NULL};
    return attc(a, n_tok, keys, err, q_eps);
}

extern "C" ds4_status cuda_attn_dpos(const float *d_q, const float *d_kv_chunk,
                                     const float *d_ring, int64_t W, const float *d_comp,
                                     int ratio, const int32_t *d_isel, const int32_t *d_n_isel,
                                     int64_t topk, const float *d_sinks, int64_t n_tok,
                                     const int64_t *d_pos0, int64_t pos_bound, int64_t H,
                                     int64_t Dh, int n_rope, const float *d_freqs,
                                     float *d_scratch, float *d_out, ds4_error *err) {
    if (!d_pos0 || pos_bound < n_tok)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_attn_dpos: bound %lld",
                          (long long)pos_bound);
    return attn(d_q, d_kv_chunk, d_ring, W, d_comp, ratio, d_isel, d_n_isel, topk, d_sinks, n_tok,
                pos_bound - n_tok, d_pos0, H, Dh, n_rope, d_freqs, d_scratch, d_out, err);
}
