/*
 * cuda/attention_chunk3.cu — the attention of a prefill chunk with each token's keys read once
 * for all its heads (k_attn_chunk3, h4): the same steps per (head, key) and per (head,
 * dimension) as k_attn_chunk2 (attention_chunk.cu), in the same order, so the same bits; a block
 * takes one token and 64 heads instead of 8, so the keys cross L2 once per token, not 8 times.
 * attention_chunk.cu chooses it (cu_attc3) and falls back to k_attn_chunk2 where it does not
 * fit (head dims other than 128 / 256 / 512, more rows than AC3_SMEM_MAX holds).
 *
 * Must not: project, normalise or round q / kv, or write the window ring.
 */
#include "attention_impl.cuh"

#include <stdint.h>

/* The block: NT threads (256 or 512), 64 heads; warp w takes heads 8 (w mod 8) .. + 7.
 * Scores (MODEL_MATH §5.5): a tile of 64 keys x 64 heads, staged through shared memory 32
 * dimensions at a time (q rows and key rows, double-buffered through registers). Lane c = tid & 7
 * holds cpu_dot_f32's chain c (dims c, c + 8, ...), so each score is the CPU's 8 chains in
 * dimension order and then its pairwise lane sum, exactly as k_attn_chunk2; the 4 lane groups of
 * a warp take keys kg, kg + 4, ... (kg = lane >> 3) of the tile's half kh (= tid >> 8; one
 * half with 256 threads): 8 heads x 16·256/NT keys' chains per thread, one shared load per head
 * and per key for all their multiply-adds. The scores stay in shared memory [key][64].
 * Then the maximum, exp, the denominator (sink first, then key by key) as k_attn_chunk2, and
 * the value sums (§5.6): 8 heads x 4·ND·256/NT dimensions per thread (dims 4·lane + 128 m),
 * keys in order from 0, AC3_VK key rows staged at a time. 512 threads (128 registers each)
 * keep 4 warps per scheduler to hide the shared-memory and barrier latencies that 256 (with
 * twice the registers per thread) leave exposed. */
#define AC3_HT 64         /* heads per block */
#define AC3_KT 64         /* keys per score tile */
#define AC3_DS 32         /* dimensions per staged slice */
#define AC3_QS 40         /* slice row stride (floats): key rows 1 apart sit 8 banks apart */
#define AC3_STG (2 * (AC3_HT + AC3_KT) * AC3_QS) /* the two staging buffers, floats */
#define AC3_VK 8          /* value rows per staged step: 8 x 512 x 4 x 2 bytes <= AC3_STG */
#define AC3_SMEM_MAX (224 * 1024) /* + 2.5 KB static <= the 227 KB a block may opt into */

/* Slice d0 of the block's q rows (0..63; zeros past nh) and of key tile k0's rows (64..127)
 * into registers: thread x loads float4 column x & 7 of rows x >> 3 + NT / 8 u. */
template <int NT>
__device__ __forceinline__ void ac3_load(float4 pre[1024 / NT], const attn_args &a, int64_t t,
                                         int64_t h0, int nh, const float *const *kp, int64_t k0,
                                         int64_t d0) {
#pragma unroll
    for (int u = 0; u < 1024 / NT; u++) {
        int idx = (int)threadIdx.x + NT * u, row = idx >> 3, c4 = idx & 7;
        if ((u + 1) * (NT / 8) <= AC3_HT)
            pre[u] = row < nh ? *(const float4 *)(a.q + (t * a.H + h0 + row) * a.Dh + d0 + 4 * c4)
                              : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        else
            pre[u] = *(const float4 *)(kp[k0 + row - AC3_HT] + d0 + 4 * c4);
    }
}

template <int NT>
__device__ __forceinline__ void ac3_store(const float4 pre[1024 / NT], float *buf) {
#pragma unroll
    for (int u = 0; u < 1024 / NT; u++) {
        int idx = (int)threadIdx.x + NT * u;
        *(float4 *)(buf + (idx >> 3) * AC3_QS + 4 * (idx & 7)) = pre[u];
    }
}

/* One step of the butterfly lane sum below: the lane keeps lo (hi where up) plus the partner
 * lane's (lane ^ x) copy of the same half, which it gets in exchange for its other half. */
__device__ __forceinline__ float ac3_bstep(float lo, float hi, bool up, int x) {
    return __fadd_rn(up ? hi : lo, __shfl_xor_sync(0xffffffffu, up ? lo : hi, x));
}

/* Scores of keys k0 + 4 RK kh + 4 r + kg (r < RK: 64 / (4 NT / 256) for a whole tile, half
 * that for a last one of <= 32 keys). On entry pre holds slice 0 of this tile; on exit slice 0
 * of tile k_next (if any). */
template <int NT, int RK>
__device__ __forceinline__ void ac3_tile(float *stg, float *sc, const float *const *kp,
                                         const attn_args &a, int64_t t, int64_t h0, int nh,
                                         int64_t k0, int64_t k_next, int64_t n_keys,
                                         float4 pre[1024 / NT], float tau) {
    const int c = threadIdx.x & 7, kg = (threadIdx.x >> 3) & 3, hg = (threadIdx.x >> 5) & 7;
    const int kh = threadIdx.x >> 8;
    const int nsl = (int)(a.Dh / AC3_DS);
    float acc[8][RK];
#pragma unroll
    for (int h = 0; h < 8; h++)
#pragma unroll
        for (int r = 0; r < RK; r++) acc[h][r] = 0.0f;
    ac3_store<NT>(pre, stg);
    __syncthreads();
    for (int sl = 0; sl < nsl; sl++) {
        if (sl + 1 < nsl) ac3_load<NT>(pre, a, t, h0, nh, kp, k0, (int64_t)(sl + 1) * AC3_DS);
        else if (k_next < n_keys) ac3_load<NT>(pre, a, t, h0, nh, kp, k_next, 0);
        const float *b = stg + (sl & 1) * (AC3_HT + AC3_KT) * AC3_QS;
        const float *bq = b + hg * 8 * AC3_QS + c;
        const float *bk = b + (AC3_HT + 4 * RK * kh + kg) * AC3_QS + c;
#pragma unroll
        for (int s = 0; s < AC3_DS / 8; s++) {
            float qv[8], kv[RK];
#pragma unroll
            for (int h = 0; h < 8; h++) qv[h] = bq[h * AC3_QS + 8 * s];
#pragma unroll
            for (int r = 0; r < RK; r++) kv[r] = bk[4 * r * AC3_QS + 8 * s];
#pragma unroll
            for (int h = 0; h < 8; h++)
#pragma unroll
                for (int r = 0; r < RK; r++) acc[h][r] = __fadd_rn(acc[h][r], __fmul_rn(qv[h], kv[r]));
        }
        if (sl + 1 < nsl) ac3_store<NT>(pre, stg + ((sl + 1) & 1) * (AC3_HT + AC3_KT) * AC3_QS);
        __syncthreads();
    }
    /* cpu_dot_f32's pairwise lane sum ((x0 + x4) + (x1 + x5)) + ((x2 + x6) + (x3 + x7)), as
     * attc2_scores, as a butterfly that halves what each lane holds at every step (xor 4, 1,
     * 2): lane c ends with head 4·c2 + 2·c0 + c1 (bits of c) of all RK keys, 7·RK shuffles
     * for 8·RK sums instead of 24·RK. */
    const bool b2 = c & 4, b0 = c & 1, b1 = c & 2;
    float v1[4][RK], v2[2][RK], v3[RK];
#pragma unroll
    for (int r = 0; r < RK; r++) {
#pragma unroll
        for (int h = 0; h < 4; h++) v1[h][r] = ac3_bstep(acc[h][r], acc[h + 4][r], b2, 4);
#pragma unroll
        for (int h = 0; h < 2; h++) v2[h][r] = ac3_bstep(v1[h][r], v1[h + 2][r], b0, 1);
        v3[r] = ac3_bstep(v2[0][r], v2[1][r], b1, 2);
    }
    int hh = hg * 8 + (b2 ? 4 : 0) + (b0 ? 2 : 0) + (b1 ? 1 : 0);
#pragma unroll
    for (int r = 0; r < RK; r++) {
        int64_t j = k0 + 4 * RK * kh + 4 * r + kg;
        if (hh < nh && j < n_keys) sc[j * AC3_HT + hh] = __fmul_rn(tau, v3[r]);
    }
}

/* Value rows i0 .. i0 + AC3_VK - 1 (Dh = 128 ND floats each) into registers, 256 ND / NT
 * float4s a thread, and from there into a staging buffer [AC3_VK][Dh]. */
template <int ND, int NT>
__device__ __forceinline__ void ac3_vload(float4 vp[ND * 256 / NT], const float *const *kp,
                                          int64_t i0) {
#pragma unroll
    for (int u = 0; u < ND * 256 / NT; u++) {
        int idx = (int)threadIdx.x + NT * u;
        vp[u] = *(const float4 *)(kp[i0 + idx / (32 * ND)] + 4 * (idx % (32 * ND)));
    }
}

template <int ND, int NT>
__device__ __forceinline__ void ac3_vstore(const float4 vp[ND * 256 / NT], float *buf) {
#pragma unroll
    for (int u = 0; u < ND * 256 / NT; u++) ((float4 *)buf)[threadIdx.x + NT * u] = vp[u];
}

/* grid (head groups of 64, tokens); Dh = 128 ND; NT threads (ND * 256 / NT >= 1). */
template <int ND, int NT>
__global__ void __launch_bounds__(NT, 1) k_attn_chunk3(attn_args a, int64_t nk_cap) {
    cu_pdl_wait();
    constexpr int NDT = ND * 256 / NT; /* float4 columns of the value sums per thread */
    constexpr int RK = AC3_KT / 4 / (NT / 256); /* keys per thread in a whole score tile */
    extern __shared__ __align__(16) float sm3_[];
    __shared__ float s_red[NT / AC3_HT][AC3_HT];
    __shared__ float s_mx[AC3_HT], s_inv[AC3_HT];
    const int64_t Dh = a.Dh;
    float *stg = sm3_;                               /* [2][128][AC3_QS] staging */
    float *sc = stg + AC3_STG;                       /* [nk_cap][64]: scores, then exp */
    const float **kp = (const float **)(sc + nk_cap * AC3_HT); /* [nk_cap] key rows */
    int64_t t = blockIdx.y, h0 = (int64_t)blockIdx.x * AC3_HT, p = a.pos0 + t;
    int nh = (int)(a.H - h0 < AC3_HT ? a.H - h0 : AC3_HT);
    int64_t n_keys = attn_key_rows(a, t, kp, AC3_KT); /* tiles and value steps read < 64·⌈n/64⌉ */
    __syncthreads();
    const float tau = (float)(1.0 / sqrt((double)Dh)); /* MODEL_MATH §5.5 */
    float4 pre[1024 / NT];
    ac3_load<NT>(pre, a, t, h0, nh, kp, 0, 0);
    for (int64_t k0 = 0; k0 < n_keys; k0 += AC3_KT) {
        if (n_keys - k0 > AC3_KT / 2)
            ac3_tile<NT, RK>(stg, sc, kp, a, t, h0, nh, k0, k0 + AC3_KT, n_keys, pre, tau);
        else
            ac3_tile<NT, RK / 2>(stg, sc, kp, a, t, h0, nh, k0, k0 + AC3_KT, n_keys, pre, tau);
    }
    __syncthreads();
    /* The value sums' first AC3_VK key rows load while the softmax runs. */
    float4 vp[NDT];
    ac3_vload<ND, NT>(vp, kp, 0);
    /* The maximum over the keys per head (exact in any order). */
    {
        int h = threadIdx.x & (AC3_HT - 1), part = threadIdx.x / AC3_HT;
        float m = -INFINITY;
        for (int64_t j = part; j < n_keys; j += NT / AC3_HT) m = fmaxf(m, sc[j * AC3_HT + h]);
        s_red[part][h] = m;
    }
    __syncthreads();
    if (threadIdx.x < AC3_HT) {
        float m = s_red[0][threadIdx.x];
        for (int w = 1; w < NT / AC3_HT; w++) m = fmaxf(m, s_red[w][threadIdx.x]);
        s_mx[threadIdx.x] = m;
    }
    __syncthreads();
    for (int64_t x = threadIdx.x; x < n_keys * AC3_HT; x += NT) {
        int h = (int)(x & (AC3_HT - 1));
        sc[x] = h < nh ? cu_exp_ref(__fsub_rn(sc[x], s_mx[h])) : 0.0f;
    }
    ac3_vstore<ND, NT>(vp, stg);
    __syncthreads();
    /* den in the CPU's order: the sink's term, then the keys one by one (a thread per head). */
    if ((int)threadIdx.x < nh) {
        int h = threadIdx.x;
        s_inv[h] = attn_inv_den<8>(a.sinks[h0 + h], s_mx[h], sc + h, AC3_HT, n_keys);
    }
    /* acc[d] = Σ_i e_i·k_i[d], keys in order from 0, AC3_VK rows at a time from shared memory
     * (the next AC3_VK load into registers meanwhile). */
    const int hg = (threadIdx.x >> 5) & 7, dg = threadIdx.x & 31, dh = threadIdx.x >> 8;
    float acc[8][4 * NDT];
#pragma unroll
    for (int h = 0; h < 8; h++)
#pragma unroll
        for (int d = 0; d < 4 * NDT; d++) acc[h][d] = 0.0f;
    const float4 *e4 = (const float4 *)sc + hg * 2;
    for (int64_t i0 = 0; i0 < n_keys; i0 += AC3_VK) {
        if (i0 + AC3_VK < n_keys) ac3_vload<ND, NT>(vp, kp, i0 + AC3_VK);
        const float *kb = stg + ((i0 / AC3_VK) & 1) * AC3_VK * 128 * ND + 4 * dg + 128 * NDT * dh;
        int64_t nn = n_keys - i0;
#pragma unroll
        for (int u = 0; u < AC3_VK; u++) {
            if (u < nn) {
                float4 ea = e4[(i0 + u) * (AC3_HT / 4)], eb = e4[(i0 + u) * (AC3_HT / 4) + 1];
                float e[8] = {ea.x, ea.y, ea.z, ea.w, eb.x, eb.y, eb.z, eb.w};
                float4 kc[NDT];
#pragma unroll
                for (int m = 0; m < NDT; m++) kc[m] = *(const float4 *)(kb + u * 128 * ND + 128 * m);
#pragma unroll
                for (int h = 0; h < 8; h++)
#pragma unroll
                    for (int m = 0; m < NDT; m++) {
                        acc[h][4 * m] = __fadd_rn(acc[h][4 * m], __fmul_rn(e[h], kc[m].x));
                        acc[h][4 * m + 1] = __fadd_rn(acc[h][4 * m + 1], __fmul_rn(e[h], kc[m].y));
                        acc[h][4 * m + 2] = __fadd_rn(acc[h][4 * m + 2], __fmul_rn(e[h], kc[m].z));
                        acc[h][4 * m + 3] = __fadd_rn(acc[h][4 * m + 3], __fmul_rn(e[h], kc[m].w));
                    }
            }
        }
        if (i0 + AC3_VK < n_keys)
            ac3_vstore<ND, NT>(vp, stg + (((i0 / AC3_VK) + 1) & 1) * AC3_VK * 128 * ND);
        __syncthreads();
    }
    /* out = acc·(1/den), then MODEL_MATH §5.6's inverse RoPE of the tail at the query position. */
    int64_t tail = Dh - a.n_rope;
#pragma unroll
    for (int h = 0; h < 8; h++) {
        int hh = hg * 8 + h;
        if (hh >= nh) continue;
        float inv = s_inv[hh];
#pragma unroll
        for (int m = 0; m < NDT; m++) {
            int64_t d = 4 * dg + 128 * (NDT * dh + m);
            float v[4];
#pragma unroll
            for (int u = 0; u < 4; u++) v[u] = __fmul_rn(acc[h][4 * m + u], inv);
#pragma unroll
            for (int u = 0; u < 4; u += 2)
                if (d + u >= tail) cu_rope_pair(v + u, a.freqs[(d + u - tail) / 2], (float)p, 1);
            *(float4 *)(a.out + (t * a.H + h0 + hh) * Dh + d) = make_float4(v[0], v[1], v[2], v[3]);
        }
    }
}

static int64_t ac3_nk(int64_t keys) { return (keys + AC3_KT - 1) / AC3_KT * AC3_KT; }

static size_t ac3_smem(int64_t keys) {
    int64_t nk = ac3_nk(keys);
    return (size_t)AC3_STG * sizeof(float) + (size_t)nk * (AC3_HT * sizeof(float) + sizeof(float *));
}

bool cu_attc3_ok(int64_t Dh, int64_t keys) {
    return (Dh == 128 || Dh == 256 || Dh == 512) && keys >= 1 && ac3_smem(keys) <= AC3_SMEM_MAX;
}

template <int ND, int NT>
static ds4_status ac3_launch(const attn_args &a, int64_t n_tok, int64_t keys, ds4_error *err) {
    size_t smem = ac3_smem(keys);
    CU_CHECK(cudaFuncSetAttribute(k_attn_chunk3<ND, NT>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
             err, "attn chunk3 shared memory");
    dim3 g((unsigned)((a.H + AC3_HT - 1) / AC3_HT), (unsigned)n_tok);
    cu_launch(k_attn_chunk3<ND, NT>, g, NT, smem, a, ac3_nk(keys));
    CU_LAUNCH_CHECK(err, "attn chunk3 launch");
    return DS4_OK;
}

/* 1 = launched (status in *st), 0 = not taken (shape, or rows not 16-byte aligned). */
int cu_attc3(const attn_args &a, int64_t n_tok, int64_t keys, ds4_status *st, ds4_error *err) {
    uintptr_t al = (uintptr_t)a.q | (uintptr_t)a.kv_chunk | (uintptr_t)a.ring |
                   (uintptr_t)a.comp | (uintptr_t)a.out;
    if (!cu_attc3_ok(a.Dh, keys) || (al & 15)) return 0;
    /* 512 threads where the value sums split (H200, 06:24 UTC: the full-size chunk's attention
     * 147.4 ms with 512 threads, 159.8 with 256); head dim 128 has one float4 column a lane. */
    if (a.Dh == 128) *st = ac3_launch<1, 256>(a, n_tok, keys, err);
    else if (a.Dh == 256) *st = ac3_launch<2, 512>(a, n_tok, keys, err);
    else *st = ac3_launch<4, 512>(a, n_tok, keys, err);
    return 1;
}
