/*
 * cuda/attn_dec_cl.cu — the one-token (decode) attention with sinks (MODEL_MATH §5.4-5.6) as
 * ONE launch of thread-block clusters (sm_90+, issue #7), in model/attention.c attn_items'
 * order step for step, so bit-identical to attention_dec.cu's two kernels and to the CPU.
 *
 * Why: attention_dec.cu takes two launches and a global round trip of the scores, every value
 * block recomputes the exps of its heads (16 times over for 512 dims) and reads its key slices
 * for 4 heads only (21 MB of L2 reads at 640 rows). Here a cluster of ATC_CL blocks owns
 * ATC_HG heads (V4 has one KV head, MQA: every head reads the same keys):
 *   1. block r scores its slice r of the attended rows for the cluster's heads, z = tau·(q·k)
 *      (each dot in cpu_dot_f32's 8-chain order: lane k of an 8-lane group runs chain k, then
 *      the CPU's pairwise combine), and the slice's maximum per head;
 *   2. cluster barrier; each block takes the maximum of the ATC_CL slice maxima (exact in any
 *      order) and turns its own scores into e = exp(z - max) (cu_exp_ref: the CPU's bits);
 *   3. cluster barrier; each block copies every e of the cluster's heads from the other
 *      blocks' shared memory (distributed shared memory), then sums its slice of ATC_DB dims
 *      key by key from key 0: acc[d] += e_i·k_i[d], and beside it (warps of the first dim
 *      half) den = exp(sink - max) + e_0 + e_1 + ... — the CPU's two chains in its order;
 *      key tiles stream through shared memory by cp.async, the first ones issued at entry;
 *   4. out = acc·(1/den), the inverse RoPE of the value tail (§5.6; pair partner by shuffle);
 *      a last cluster barrier keeps every block's shared memory alive until all have read it.
 * Every exp is computed once per cluster, keys cross L2 once per cluster per phase.
 * Shapes: head_dim ATC_DH (Flash's 512; MODEL_MATH §0), up to ATC_MAXK rows; others, and
 * cards before sm_90, keep attention_dec.cu (attd_launch asks attd_cl_launch first).
 * With qn_eps > 0 the staged q rows get their per-head RMSNorm and RoPE first (qnorm.cuh, the
 * bits of cuda_norm_rope_qat), so the query chain loses a launch (cuda_attn_dec_qnorm).
 * DS4_CUDA_ATTD_CL=0|1|2 (read once; cuda_attn_dec_cluster() for tests): 0 attention_dec.cu's
 * kernels, 1 this kernel, 2 this kernel with the q norm inside where the forward asks for it.
 * Must not: write the window ring or any global scratch (it needs none).
 */
#include <cooperative_groups.h>
#include <stdlib.h>

#include "attention_dec.cuh"
#include "ops.cuh"
#include "qnorm.cuh"

namespace cg = cooperative_groups;

#define ATC_CL 8                    /* blocks per cluster (the portable maximum) */
#define ATC_HG 4                    /* heads per cluster */
#define ATC_T 256                   /* threads per block */
#define ATC_DH 512                  /* the head dim compiled */
#define ATC_DB (ATC_DH / ATC_CL)    /* value dims per block: 64 (two warps of 32) */
#define ATC_MAXK 1024               /* attended rows (attention_dec.cu's limit too) */
#define ATC_SMAX (ATC_MAXK / ATC_CL) /* rows of a block's score slice */
#define ATC_TK 32                   /* keys per value tile */
#define ATC_ST 4                    /* value tile stages (DS4_CUDA_ATTD_ST=8: 8, a longer lead) */

/* The compute_80 PTX of the build cannot carry cluster dimensions: the kernel is empty there
 * and never launched (attd_cl_launch checks the card). */
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900
#define ATC_CLUSTER __cluster_dims__(ATC_CL, 1, 1)
#else
#define ATC_CLUSTER
#endif

template <int ST> struct atc_smem {
    float q[ATC_HG][ATC_DH];             /* the cluster's query rows */
    float tile[ST][ATC_TK][ATC_DB];      /* value key tiles */
    float e[ATC_HG][ATC_MAXK];           /* every exp of the cluster's heads */
    const float *kp[ATC_MAXK];           /* key row of each attended row */
    float z[ATC_HG][ATC_SMAX];           /* this block's scores, then their exps (read by the cluster) */
    float lmax[ATC_HG], gmax[ATC_HG], den[ATC_HG];
};

__device__ __forceinline__ void atc_cp16(void *dst, const void *src) {
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d), "l"(src) : "memory");
}
__device__ __forceinline__ void atc_commit(void) { asm volatile("cp.async.commit_group;" ::: "memory"); }

/* Value tile kt (ATC_TK rows x ATC_DB dims from d0) into its stage; rows past n left out. */
template <int ST> __device__ __forceinline__ void atc_issue(atc_smem<ST> &s, int kt, int n, int d0) {
    const int i0 = kt * ATC_TK;
    if (i0 >= n) return;
    float(*t)[ATC_DB] = s.tile[kt % ST];
    for (int c = threadIdx.x; c < ATC_TK * (ATC_DB / 4); c += ATC_T) {
        const int ki = c / (ATC_DB / 4), part = c % (ATC_DB / 4);
        if (i0 + ki < n) atc_cp16(&t[ki][part * 4], s.kp[i0 + ki] + d0 + part * 4);
    }
}

/* grid (ceil(H / ATC_HG) clusters of ATC_CL), ATC_T threads, dynamic shared atc_smem<ST>. */
template <int ST>
__global__ void __launch_bounds__(ATC_T, 2) ATC_CLUSTER k_attd_cl(attd_in a) {
    cu_pdl_wait();
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    extern __shared__ __align__(16) unsigned char atc_raw[];
    atc_smem<ST> &s = *reinterpret_cast<atc_smem<ST> *>(atc_raw);
    cg::cluster_group cl = cg::this_cluster();
    const int rank = (int)cl.block_rank(), tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int64_t h0 = (int64_t)(blockIdx.x / ATC_CL) * ATC_HG;
    const int nh = (int)(a.H - h0 < ATC_HG ? a.H - h0 : ATC_HG);
    /* attn_items' attended set at p: window s0 .. p by position, then the compressed rows */
    const int64_t p = a.dpos ? *a.dpos : a.pos0;
    const int64_t s0 = p - a.W + 1 < 0 ? 0 : p - a.W + 1;
    const int n_win = (int)(p - s0 + 1);
    int n = n_win + (a.isel ? a.n_isel[0] : a.ratio ? (int)((p + 1) / a.ratio) : 0);
    if (n > ATC_MAXK) n = ATC_MAXK; /* bounded by the caller's max_keys; memory safety only */
    const int slot0 = (int)(s0 % a.W);
    for (int i = tid; i < n; i += ATC_T) {
        const float *kr;
        if (i < n_win) {
            if (s0 + i >= p) kr = a.kv_chunk + (s0 + i - p) * ATC_DH;
            else {
                int slot = slot0 + i; /* (s0 + i) mod W: i < n_win <= W */
                if (slot >= a.W) slot -= (int)a.W;
                kr = a.ring + (int64_t)slot * ATC_DH;
            }
        } else {
            kr = a.comp + (int64_t)(a.isel ? a.isel[i - n_win] : i - n_win) * ATC_DH;
        }
        s.kp[i] = kr;
    }
    for (int c = tid; c < nh * (ATC_DH / 4); c += ATC_T) atc_cp16(&s.q[0][0] + c * 4, a.q + h0 * ATC_DH + c * 4);
    atc_commit();
    __syncthreads(); /* kp */
    const int S = (n + ATC_CL - 1) / ATC_CL, k0 = rank * S, k1 = min(k0 + S, n), d0 = rank * ATC_DB;
    /* This block's score rows towards L2 while the first value tiles are requested. */
    for (int c = tid; c < (k1 - k0) * (ATC_DH * 4 / 128); c += ATC_T) {
        const float *l = s.kp[k0 + c / (ATC_DH * 4 / 128)] + (c % (ATC_DH * 4 / 128)) * 32;
        asm volatile("prefetch.global.L2 [%0];" ::"l"(l));
    }
#pragma unroll
    for (int st = 0; st < ST - 1; st++) {
        atc_issue(s, st, n, d0);
        atc_commit();
    }
    asm volatile("cp.async.wait_group %0;" ::"n"(ST - 1) : "memory"); /* q (the oldest group) */
    __syncthreads();
    if (a.qn_eps > 0.0f) { /* MODEL_MATH §3.2-3.3: q's per-head norm and RoPE at p (qnorm.cuh) */
        if (warp < nh) cu_qnorm_rope_warp(s.q[warp], ATC_DH, a.qn_eps, ATC_DH - a.n_rope, a.n_rope, a.freqs, (float)p);
        __syncthreads();
    }

    /* 1. scores of rows k0 + g + 32m (group g of 8 lanes; lane k runs chain k of every head) */
    {
        const int g = tid >> 3, k = tid & 7;
        const float tau = (float)(1.0 / sqrt((double)ATC_DH)); /* MODEL_MATH §5.5 */
        const int iters = (S + 31) / 32; /* the same for the whole block: shuffles below */
        for (int m = 0; m < iters && k1 > k0; m++) {
            const int i = k0 + g + 32 * m;
            const float *kr = s.kp[i < k1 ? i : k1 - 1] + k;
            float kv[ATC_DH / 8];
#pragma unroll
            for (int j = 0; j < ATC_DH / 8; j++) kv[j] = kr[8 * j];
            float acc[ATC_HG];
#pragma unroll
            for (int h = 0; h < ATC_HG; h++) acc[h] = 0.0f;
#pragma unroll
            for (int j = 0; j < ATC_DH / 8; j++)
#pragma unroll
                for (int h = 0; h < ATC_HG; h++) acc[h] = __fadd_rn(acc[h], __fmul_rn(s.q[h][8 * j + k], kv[j]));
#pragma unroll
            for (int h = 0; h < ATC_HG; h++) {
                const float x = cu_lanes8_dot_f32(acc[h]);
                if (k == 0 && i < k1 && h < nh) s.z[h][i - k0] = __fmul_rn(tau, x);
            }
        }
    }
    __syncthreads();
    if (warp < ATC_HG) { /* the slice maximum of head `warp` (-inf for an empty slice) */
        float m = -INFINITY;
        for (int j = lane; j < k1 - k0; j += 32) m = fmaxf(m, s.z[warp][j]);
        for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
        if (lane == 0) s.lmax[warp] = m;
    }
    cl.sync(); /* #1: every slice maximum */

    /* 2. the maximum over the attended rows, then this slice's exps in place */
    if (tid < ATC_HG) {
        float m = -INFINITY;
        for (int r = 0; r < ATC_CL; r++) m = fmaxf(m, *cl.map_shared_rank(&s.lmax[tid], r));
        s.gmax[tid] = m;
    }
    __syncthreads();
    for (int h = 0; h < nh; h++)
        for (int j = tid; j < k1 - k0; j += ATC_T) s.z[h][j] = cu_exp_ref(__fsub_rn(s.z[h][j], s.gmax[h]));
    cl.sync(); /* #2: every exp */

    /* 3. every exp of the cluster's heads into this block, then the value sums */
    for (int h = 0; h < nh; h++)
        for (int i = tid; i < n; i += ATC_T) {
            const int r = i / S;
            s.e[h][i] = *cl.map_shared_rank(&s.z[h][i - r * S], r);
        }
    const int hw = warp & (ATC_HG - 1), half = warp / ATC_HG; /* head, dim half (warp-uniform) */
    const int dl = half * 32 + lane;
    const bool live = hw < nh;
    float acc = 0.0f, den = live ? cu_exp_ref(__fsub_rn(a.sinks[h0 + hw], s.gmax[hw])) : 0.0f;
    const int n_tiles = (n + ATC_TK - 1) / ATC_TK;
    const float *ee = s.e[hw];
    for (int kt = 0; kt < n_tiles; kt++) {
        asm volatile("cp.async.wait_group %0;" ::"n"(ST - 2) : "memory");
        __syncthreads(); /* tile kt landed (at kt = 0 every e too); tile kt-1's stage is free */
        atc_issue(s, kt + ST - 1, n, d0);
        atc_commit();
        const int nk = n - kt * ATC_TK < ATC_TK ? n - kt * ATC_TK : ATC_TK;
        const float *kk = &s.tile[kt % ST][0][dl], *e = ee + kt * ATC_TK;
        if (half == 0) {
#pragma unroll 8
            for (int i = 0; i < nk; i++) {
                const float ei = e[i];
                acc = __fadd_rn(acc, __fmul_rn(ei, kk[i * ATC_DB]));
                den = __fadd_rn(den, ei);
            }
        } else {
#pragma unroll 8
            for (int i = 0; i < nk; i++) acc = __fadd_rn(acc, __fmul_rn(e[i], kk[i * ATC_DB]));
        }
    }
    asm volatile("cp.async.wait_group 0;" ::: "memory");
    if (half == 0 && lane == 0 && live) s.den[hw] = den;
    __syncthreads();

    /* 4. out = acc·(1/den); MODEL_MATH §5.6: inverse RoPE of the value tail at p; pairs (tail+2j,
     * tail+2j+1) sit in adjacent lanes (tail and the slice starts are even). */
    float o = __fmul_rn(acc, __fdiv_rn(1.0f, live ? s.den[hw] : 1.0f));
    const int64_t d = d0 + dl, tail = ATC_DH - a.n_rope;
    const float partner = __shfl_xor_sync(0xffffffffu, o, 1);
    if (d >= tail) {
        float x2[2] = {(lane & 1) ? partner : o, (lane & 1) ? o : partner};
        cu_rope_pair(x2, a.freqs[(d - tail) / 2], (float)p, 1);
        o = x2[lane & 1];
    }
    if (live) a.out[(h0 + hw) * ATC_DH + d] = o;
    cl.sync(); /* #3: no block leaves while the cluster may still read its exps */
#endif
}

/* DS4_CUDA_ATTD_CL: 0 attention_dec.cu's kernels, 1 this kernel where it fits, 2 also the q
 * norm inside (read once; cuda_attn_dec_cluster overrides it, for tests and benches). */
static int atc_mode = -1;

extern "C" int cuda_attn_dec_cluster(int on) {
    const int was = atc_mode;
    atc_mode = on < 0 ? -1 : on > 2 ? 2 : on;
    return was;
}

static int atc_enabled(void) {
    if (atc_mode < 0) {
        const char *v = getenv("DS4_CUDA_ATTD_CL");
        atc_mode = v && v[0] >= '0' && v[0] <= '2' ? v[0] - '0' : 0;
    }
    return atc_mode;
}

/* Whether the current card runs clusters (sm_90+), asked once. */
static int atc_card_ok(void) {
    static int ok = -1;
    if (ok < 0) {
        int dev = 0, major = 0;
        ok = cudaGetDevice(&dev) == cudaSuccess &&
             cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess && major >= 9;
        (void)cudaGetLastError();
    }
    return ok;
}

int attd_cl_takes(int64_t H, int64_t Dh, int64_t max_keys, int n_rope, int qnorm) {
    return atc_enabled() >= (qnorm ? 2 : 1) && Dh == ATC_DH && max_keys >= 1 && max_keys <= ATC_MAXK &&
           H >= 1 && H <= 65535 && n_rope >= 0 && n_rope <= ATC_DH && !((ATC_DH - n_rope) & 1) && atc_card_ok();
}

int attd_cl_aligned(const attd_in &in) {
    const uintptr_t al = (uintptr_t)in.q | (uintptr_t)in.kv_chunk | (uintptr_t)in.ring |
                         (uintptr_t)(in.comp ? in.comp : in.ring);
    return !(al & 15) && in.W >= 1;
}

int attd_cl_launch(const attd_in &in, ds4_status *st, ds4_error *err) {
    if (!attd_cl_takes(in.H, in.Dh, in.max_keys, in.n_rope, in.qn_eps > 0.0f) || !attd_cl_aligned(in)) return 0;
    static int st8 = -1, set = 0;
    if (st8 < 0) {
        const char *v = getenv("DS4_CUDA_ATTD_ST");
        st8 = v && v[0] == '8';
    }
    void (*k)(attd_in) = st8 ? k_attd_cl<8> : k_attd_cl<ATC_ST>;
    const size_t smem = st8 ? sizeof(atc_smem<8>) : sizeof(atc_smem<ATC_ST>);
    cudaError_t e = cudaSuccess;
    if (!set) {
        e = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e == cudaSuccess) set = 1;
    }
    if (e == cudaSuccess) {
        cu_launch(k, dim3((unsigned)((in.H + ATC_HG - 1) / ATC_HG * ATC_CL)), dim3(ATC_T), smem, in);
        e = cudaGetLastError();
    }
    *st = e == cudaSuccess ? DS4_OK
                           : ds4_seterr(err, DS4_ERR_INTERNAL, "cuda: attn decode (clusters) launch: %s",
                                        cudaGetErrorString(e));
    return 1;
}
