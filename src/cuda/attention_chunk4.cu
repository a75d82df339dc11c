/*
 * cuda/attention_chunk4.cu — the attention of a prefill chunk, k_attn_chunk4 (h4, session 5):
 * the same float steps per (head, key) and per (head, dimension) as k_attn_chunk3
 * (attention_chunk3.cu) and k_attn_chunk2, in the same order, so the same bits
 * (model/attention.c's order; tests/cuda/test_cuda_chunk.c compares them with the CPU loop).
 * What changes is how the work meets the SM, so that less of it waits:
 *  - 32 heads per block (HT; 64 is kept as a variant for timing), 256 threads, so the scores
 *    of a block at 640 rows fit in ~110 KB and two blocks share an SM: one block's serial steps
 *    (row pointers, maximum, exp, the barrier of each slice) run under the other's products.
 *  - Key and q rows are staged by cp.async straight into shared memory, transposed so that a
 *    lane's four steps of cpu_dot_f32's chain c (dims c, c+8, c+16, c+24 of a 32-dim slice)
 *    are one 16-byte load: 16 shared loads per 512 float operations instead of 64.
 *  - The score tiles of the last (partial) key tile shrink to 16 / 32 / 48 keys.
 *  - The maximum is kept while the scores are written; den's chain (sink first, then key by
 *    key) runs in the value loop by one thread per head; the inverse RoPE's cos / sin are
 *    computed once per token (pair j's angle is the same for every head).
 * attention_chunk.cu chooses it (cu_attc4) and falls back where it does not fit.
 *
 * Must not: project, normalise or round q / kv, or write the window ring.
 */
#include "attention_impl.cuh"

#include <stdint.h>

#define AC4_KT 64       /* keys per score tile */
#define AC4_DS 32       /* dimensions per staged slice */
#define AC4_NPAIR 64    /* RoPE pairs whose cos / sin a block keeps (n_rope <= 128) */
#define AC4_SMEM_MAX (224 * 1024)
#ifndef AC4_QH
#define AC4_QH 8        /* heads whose q a thread holds at once in the score slices */
#endif

__device__ __forceinline__ unsigned ac4_sa(const void *p) {
    return (unsigned)__cvta_generic_to_shared(p);
}

/* 4 bytes from global (0 bytes, i.e. a zero, where !ok) to shared, asynchronously. */
__device__ __forceinline__ void ac4_cp4(unsigned dst, const float *src, bool ok) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(dst), "l"(src),
                 "r"(ok ? 4 : 0)
                 : "memory");
}

__device__ __forceinline__ void ac4_cp16(unsigned dst, const float *src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src) : "memory");
}

__device__ __forceinline__ void ac4_commit(void) {
    asm volatile("cp.async.commit_group;" ::: "memory");
}

template <int N>
__device__ __forceinline__ void ac4_wait(void) {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

/* The block's shape: HT heads, NT threads, W warps; HG head groups of 8, KH key halves (score
 * tile) = dimension groups (value sums); RK keys a thread of a whole tile; RQ / RKR the rounds
 * of q / key rows a warp stages per slice (4 rows a round); NDT float4 columns of the value
 * sums a thread; VK value rows per staged step (three steps in flight). */
template <int ND, int HT, int NT>
struct ac4_shape {
    static constexpr int W = NT / 32, HG = HT / 8, KH = W / HG, RK = AC4_KT / 4 / KH;
    static constexpr int RQ = HT / (4 * W), RKR = AC4_KT / (4 * W);
    static constexpr int NDT = 4 * ND * HT / NT, VK = 16 / ND;
    static constexpr int SROW = HT + AC4_KT;          /* rows of a score stage */
    static constexpr int SSTG = SROW * AC4_DS;        /* floats of a score stage */
    static constexpr int STG = 2 * SSTG > 3 * VK * 128 * ND ? 2 * SSTG : 3 * VK * 128 * ND;
};

/* Slice d0 of the staged rows into score stage dst: q rows of heads 0..HT-1 (zeros past nh)
 * then the tile's 64 key rows, each row's 32 floats in chain order (dim 8s + c at 4c + s).
 * Lane (rho, c) of warp w takes row 4·(W·g + w) + rho and, in copy i, step s = (i + rho) & 3:
 * each copy reads 4 rows' 32-byte pieces and writes 32 different banks. */
template <int ND, int HT, int NT>
__device__ __forceinline__ void ac4_issue(unsigned dst, const float *const qp[],
                                          const float *const kr[], int nh, int d0) {
    typedef ac4_shape<ND, HT, NT> S;
    const int w = threadIdx.x >> 5, rho = (threadIdx.x >> 3) & 3, c = threadIdx.x & 7;
#pragma unroll
    for (int g = 0; g < S::RQ; g++) {
        int row = 4 * (S::W * g + w) + rho;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int s = (i + rho) & 3;
            ac4_cp4(dst + 4u * (unsigned)(row * AC4_DS + 4 * c + s), qp[g] + d0 + 8 * s, row < nh);
        }
    }
#pragma unroll
    for (int g = 0; g < S::RKR; g++) {
        int row = HT + 4 * (S::W * g + w) + rho;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int s = (i + rho) & 3;
            ac4_cp4(dst + 4u * (unsigned)(row * AC4_DS + 4 * c + s), kr[g] + d0 + 8 * s, true);
        }
    }
}

/* This thread's key rows of the tile at k0 (+ its chain lane c). */
template <int ND, int HT, int NT>
__device__ __forceinline__ void ac4_krows(const float *kr[], const float *const *kp, int k0) {
    typedef ac4_shape<ND, HT, NT> S;
    const int w = threadIdx.x >> 5, rho = (threadIdx.x >> 3) & 3, c = threadIdx.x & 7;
#pragma unroll
    for (int g = 0; g < S::RKR; g++) kr[g] = kp[k0 + 4 * (S::W * g + w) + rho] + c;
}

/* Scores of the tile at k0: keys k0 + 4·RKE·kh + 4r + kg (r < RKE; RKE < RK for a last tile of
 * <= 48 keys). Slice 0 of this tile is in flight on entry (stage 0); each slice's barrier is
 * followed by the copy of the next slice (or of the next tile's slice 0) into the other stage.
 * Lane c holds cpu_dot_f32's chain c of 8 heads x RKE keys; then the chains' pairwise sum as a
 * butterfly (attn_bstep), tau·sum into sc [key][HT], and the running maximum of its head. */
template <int ND, int HT, int NT, int RKE>
__device__ __forceinline__ void ac4_tile(float *stg, float *sc, const float *const *kp,
                                         const float *const qp[], const float *kr[], int nh,
                                         int nsl, int k0, int n_keys, float tau, float *mx) {
    typedef ac4_shape<ND, HT, NT> S;
    const int c = threadIdx.x & 7, kg = (threadIdx.x >> 3) & 3, w = threadIdx.x >> 5;
    const int hg = w % S::HG, kh = w / S::HG;
    constexpr int QH = AC4_QH;
    const unsigned sbase = ac4_sa(stg);
    float acc[8][RKE];
#pragma unroll
    for (int h = 0; h < 8; h++)
#pragma unroll
        for (int r = 0; r < RKE; r++) acc[h][r] = 0.0f;
    for (int sl = 0; sl < nsl; sl++) {
        ac4_wait<0>();
        __syncthreads();
        unsigned nxt = sbase + 4u * (unsigned)(((sl + 1) & 1) * S::SSTG);
        if (sl + 1 < nsl) {
            ac4_issue<ND, HT, NT>(nxt, qp, kr, nh, (sl + 1) * AC4_DS);
        } else if (k0 + AC4_KT < n_keys) {
            ac4_krows<ND, HT, NT>(kr, kp, k0 + AC4_KT);
            ac4_issue<ND, HT, NT>(nxt, qp, kr, nh, 0);
        }
        ac4_commit();
        const float *b = stg + (sl & 1) * S::SSTG;
        const float4 *bq = (const float4 *)(b + hg * 8 * AC4_DS) + c;
        const float4 *bk = (const float4 *)(b + (HT + 4 * RKE * kh + kg) * AC4_DS) + c;
#pragma unroll
        for (int hp = 0; hp < 8; hp += QH) { /* QH heads' q at a time (registers) */
            float4 qv[QH];
#pragma unroll
            for (int h = 0; h < QH; h++) qv[h] = bq[(hp + h) * (AC4_DS / 4)];
#pragma unroll
            for (int r = 0; r < RKE; r++) {
                float4 kv = bk[r * AC4_DS];
#pragma unroll
                for (int h = 0; h < QH; h++) {
                    float &y = acc[hp + h][r];
                    y = __fadd_rn(y, __fmul_rn(qv[h].x, kv.x));
                    y = __fadd_rn(y, __fmul_rn(qv[h].y, kv.y));
                    y = __fadd_rn(y, __fmul_rn(qv[h].z, kv.z));
                    y = __fadd_rn(y, __fmul_rn(qv[h].w, kv.w));
                }
            }
        }
    }
    float v[RKE];
    int hh = attn_lanes8_heads(acc, v);
    hh += hg * 8;
#pragma unroll
    for (int r = 0; r < RKE; r++) {
        int j = k0 + 4 * RKE * kh + 4 * r + kg;
        if (hh < nh && j < n_keys) {
            float z = __fmul_rn(tau, v[r]);
            sc[j * HT + hh] = z;
            *mx = fmaxf(*mx, z);
        }
    }
}

/* Value rows i0 .. i0 + VK - 1 into value stage dst ([VK][Dh], 16-byte copies). */
template <int ND, int HT, int NT>
__device__ __forceinline__ void ac4_vissue(unsigned dst, const float *const *kp, int64_t i0) {
    constexpr int C4 = 32 * ND; /* float4s a row */
#pragma unroll
    for (int u = 0; u < ac4_shape<ND, HT, NT>::VK * C4 / NT; u++) {
        int e = (int)threadIdx.x + NT * u, row = e / C4, col = e % C4;
        ac4_cp16(dst + 16u * (unsigned)e, kp[i0 + row] + 4 * col);
    }
}

/* grid (head groups of HT, tokens); Dh = 128 ND; NT threads; two blocks an SM at NT = 256. */
template <int ND, int HT, int NT>
__global__ void __launch_bounds__(NT, NT == 256 && HT == 32 ? 2 : 1) k_attn_chunk4(attn_args a, int64_t nk_cap) {
    cu_pdl_wait();
    typedef ac4_shape<ND, HT, NT> S;
    extern __shared__ __align__(16) float sm4_[];
    __shared__ float s_red[S::KH][HT];
    __shared__ float s_inv[HT], s_cos[AC4_NPAIR], s_sin[AC4_NPAIR];
    const int64_t Dh = a.Dh;
    float *stg = sm4_;                                   /* [S::STG] staging */
    float *sc = stg + S::STG;                            /* [nk_cap][HT]: scores, then exp */
    const float **kp = (const float **)(sc + nk_cap * HT); /* [nk_cap] key rows */
    const int64_t t = blockIdx.y, h0 = (int64_t)blockIdx.x * HT, p = a.pos0 + t;
    const int nh = (int)(a.H - h0 < HT ? a.H - h0 : HT);
    const int w = threadIdx.x >> 5, rho = (threadIdx.x >> 3) & 3, c = threadIdx.x & 7;
    const int64_t n_keys = attn_key_rows(a, t, kp, AC4_KT); /* rows to 64·⌈n/64⌉, pads row 0 */
    const int npair = a.n_rope / 2;
    if ((int)threadIdx.x < npair) { /* MODEL_MATH §5.6: the de-rotation's angle of pair j */
        float cs, sn;
        ref_sincosf(__fmul_rn((float)p, a.freqs[threadIdx.x]), &cs, &sn);
        s_cos[threadIdx.x] = cs;
        s_sin[threadIdx.x] = -sn; /* inverse */
    }
    __syncthreads();
    const float tau = (float)(1.0 / sqrt((double)Dh)); /* MODEL_MATH §5.5 */
    const float *qp[S::RQ];
    const float *kr[S::RKR];
#pragma unroll
    for (int g = 0; g < S::RQ; g++) {
        int row = 4 * (S::W * g + w) + rho;
        qp[g] = a.q + (t * a.H + h0 + (row < nh ? row : 0)) * Dh + c;
    }
    ac4_krows<ND, HT, NT>(kr, kp, 0);
    ac4_issue<ND, HT, NT>(ac4_sa(stg), qp, kr, nh, 0);
    ac4_commit();
    float mx = -INFINITY;
    const int nk = (int)n_keys, nsl = (int)(Dh / AC4_DS);
    for (int k0 = 0; k0 < nk; k0 += AC4_KT) {
        int m = nk - k0;
        if (m > 48)
            ac4_tile<ND, HT, NT, S::RK>(stg, sc, kp, qp, kr, nh, nsl, k0, nk, tau, &mx);
        else if (m > 32)
            ac4_tile<ND, HT, NT, S::RK * 3 / 4>(stg, sc, kp, qp, kr, nh, nsl, k0, nk, tau, &mx);
        else if (m > 16)
            ac4_tile<ND, HT, NT, S::RK / 2>(stg, sc, kp, qp, kr, nh, nsl, k0, nk, tau, &mx);
        else
            ac4_tile<ND, HT, NT, S::RK / 4>(stg, sc, kp, qp, kr, nh, nsl, k0, nk, tau, &mx);
    }
    /* The maximum per head (exact in any order): lanes with the same c hold the same head. */
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 8));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 16));
    if ((threadIdx.x & 31) < 8)
        s_red[w / S::HG][(w % S::HG) * 8 + attn_lanes8_head(c)] = mx;
    ac4_wait<0>();
    __syncthreads(); /* scores and maxima written; the staging is free */
    /* The value sums' first two steps load while exp runs. */
    const unsigned sbase = ac4_sa(stg);
    constexpr int VSTG = S::VK * 128 * ND; /* floats of a value stage */
    ac4_vissue<ND, HT, NT>(sbase, kp, 0);
    ac4_commit();
    if (S::VK < n_keys) ac4_vissue<ND, HT, NT>(sbase + 4u * VSTG, kp, S::VK);
    ac4_commit();
    const int he = (int)threadIdx.x % HT; /* the head of this thread's exp column */
    float m_he = s_red[0][he];
#pragma unroll
    for (int k = 1; k < S::KH; k++) m_he = fmaxf(m_he, s_red[k][he]);
#pragma unroll 4
    for (int64_t j = threadIdx.x / HT; j < n_keys; j += NT / HT)
        sc[j * HT + he] = he < nh ? cu_exp_ref(__fsub_rn(sc[j * HT + he], m_he)) : 0.0f;
    /* den in the CPU's order: the sink's term, then key by key in the value loop (thread h
     * < nh; its m_he is head h's maximum). */
    const bool dthr = (int)threadIdx.x < nh;
    float den = dthr ? cu_exp_ref(__fsub_rn(a.sinks[h0 + threadIdx.x], m_he)) : 0.0f;
    /* acc[d] = Σ_i e_i·k_i[d], keys in order from 0, VK rows a step, three steps in flight. */
    const int hg = w % S::HG, dh = w / S::HG, dg = threadIdx.x & 31;
    float acc[8][4 * S::NDT];
#pragma unroll
    for (int h = 0; h < 8; h++)
#pragma unroll
        for (int d = 0; d < 4 * S::NDT; d++) acc[h][d] = 0.0f;
    for (int64_t i0 = 0, st = 0; i0 < n_keys; i0 += S::VK, st++) {
        ac4_wait<1>();
        __syncthreads();
        if (i0 + 2 * S::VK < n_keys)
            ac4_vissue<ND, HT, NT>(sbase + 4u * (unsigned)(((st + 2) % 3) * VSTG), kp, i0 + 2 * S::VK);
        ac4_commit();
        const float *kb = stg + (st % 3) * VSTG + 4 * dg + 128 * S::NDT * dh;
        const int64_t nn = n_keys - i0;
#pragma unroll
        for (int u = 0; u < S::VK; u++) {
            if (u < nn) {
                const float4 *e4 = (const float4 *)(sc + (i0 + u) * HT + hg * 8);
                float4 ea = e4[0], eb = e4[1];
                float e[8] = {ea.x, ea.y, ea.z, ea.w, eb.x, eb.y, eb.z, eb.w};
                float4 kc[S::NDT];
#pragma unroll
                for (int m = 0; m < S::NDT; m++) kc[m] = *(const float4 *)(kb + u * 128 * ND + 128 * m);
#pragma unroll
                for (int h = 0; h < 8; h++)
#pragma unroll
                    for (int m = 0; m < S::NDT; m++) {
                        acc[h][4 * m] = __fadd_rn(acc[h][4 * m], __fmul_rn(e[h], kc[m].x));
                        acc[h][4 * m + 1] = __fadd_rn(acc[h][4 * m + 1], __fmul_rn(e[h], kc[m].y));
                        acc[h][4 * m + 2] = __fadd_rn(acc[h][4 * m + 2], __fmul_rn(e[h], kc[m].z));
                        acc[h][4 * m + 3] = __fadd_rn(acc[h][4 * m + 3], __fmul_rn(e[h], kc[m].w));
                    }
            }
        }
        if (dthr) {
#pragma unroll
            for (int u = 0; u < S::VK; u++)
                if (u < nn) den = __fadd_rn(den, sc[(i0 + u) * HT + threadIdx.x]);
        }
    }
    if (dthr) s_inv[threadIdx.x] = __fdiv_rn(1.0f, den);
    __syncthreads();
    /* out = acc·(1/den), the inverse RoPE with the block's cos / sin (cu_rope_pair's steps). */
    attn_out8<S::NDT>(a, t, h0, hg, nh, 4 * dg + 128 * S::NDT * dh, acc, s_inv,
                      [&](float *x, int64_t j) {
                          float x0 = x[0], x1 = x[1], cs = s_cos[j], sn = s_sin[j];
                          x[0] = __fsub_rn(__fmul_rn(x0, cs), __fmul_rn(x1, sn));
                          x[1] = __fadd_rn(__fmul_rn(x0, sn), __fmul_rn(x1, cs));
                      });
}

static int64_t ac4_nk(int64_t keys) { return (keys + AC4_KT - 1) / AC4_KT * AC4_KT; }

template <int ND, int HT, int NT>
static size_t ac4_smem(int64_t keys) {
    int64_t nk = ac4_nk(keys);
    return (size_t)ac4_shape<ND, HT, NT>::STG * sizeof(float) +
           (size_t)nk * (HT * sizeof(float) + sizeof(float *));
}

template <int ND, int HT, int NT>
static int ac4_go(const attn_args &a, int64_t n_tok, int64_t keys, ds4_status *st,
                  ds4_error *err) {
    size_t smem = ac4_smem<ND, HT, NT>(keys);
    static int optin = -1; /* the card's shared memory a block may opt into (smaller cards) */
    if (optin < 0) {
        int dev = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) !=
                cudaSuccess)
            optin = 0;
    }
    if (smem > AC4_SMEM_MAX || smem + 2048 > (size_t)optin) return 0; /* + the static arrays */
    *st = DS4_OK;
    cudaError_t e = cudaFuncSetAttribute(k_attn_chunk4<ND, HT, NT>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e == cudaSuccess) /* two blocks an SM need the largest shared-memory carveout */
        e = cudaFuncSetAttribute(k_attn_chunk4<ND, HT, NT>,
                                 cudaFuncAttributePreferredSharedMemoryCarveout,
                                 cudaSharedmemCarveoutMaxShared);
    if (e != cudaSuccess) {
        *st = ds4_seterr(err, DS4_ERR_INTERNAL, "cuda: attn chunk4 shared memory: %s",
                         cudaGetErrorString(e));
        return 1;
    }
    dim3 g((unsigned)((a.H + HT - 1) / HT), (unsigned)n_tok);
    cu_launch(k_attn_chunk4<ND, HT, NT>, g, NT, smem, a, ac4_nk(keys));
    e = cudaGetLastError();
    if (e != cudaSuccess)
        *st = ds4_seterr(err, DS4_ERR_INTERNAL, "cuda: attn chunk4 launch: %s", cudaGetErrorString(e));
    return 1;
}

/* 1 = launched (status in *st), 0 = not taken: head dims other than 128 / 256 / 512, an odd
 * or > 128 n_rope, rows past AC4_SMEM_MAX, rows not 16-byte aligned. ht: 32 heads a block
 * (two blocks an SM, the default) or 64 (one, 512 threads; for timing). */
int cu_attc4(const attn_args &a, int64_t n_tok, int64_t keys, int ht, ds4_status *st,
             ds4_error *err) {
    uintptr_t al = (uintptr_t)a.q | (uintptr_t)a.kv_chunk | (uintptr_t)a.ring |
                   (uintptr_t)a.comp | (uintptr_t)a.out;
    if ((al & 15) || keys < 1 || a.n_rope < 0 || (a.n_rope & 1) || a.n_rope > 2 * AC4_NPAIR ||
        a.n_rope > a.Dh)
        return 0;
    if (ht == 64) {
        if (a.Dh == 512) return ac4_go<4, 64, 512>(a, n_tok, keys, st, err);
        if (a.Dh == 256) return ac4_go<2, 64, 512>(a, n_tok, keys, st, err);
        if (a.Dh == 128) return ac4_go<1, 64, 256>(a, n_tok, keys, st, err);
        return 0;
    }
    if (a.Dh == 512) return ac4_go<4, 32, 256>(a, n_tok, keys, st, err);
    if (a.Dh == 256) return ac4_go<2, 32, 256>(a, n_tok, keys, st, err);
    if (a.Dh == 128) return ac4_go<1, 32, 128>(a, n_tok, keys, st, err);
    return 0;
}
