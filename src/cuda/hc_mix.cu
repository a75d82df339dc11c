/*
 * cuda/hc_mix.cu — the decode HC site in one launch (issue #7): the previous sub-layer's
 * hc_post (X2 = post·f + comb·X, MODEL_MATH §4.3), the next HC mix m = fn·X2 in the CPU's order
 * (format/quant_dot.c q_dot_f32/f16: 8 lane chains, then the lanes' combine) and hc_pre
 * (MODEL_MATH §4.1-4.2, hc_impl.cuh's decode form): cuda_hc_mix_fused. Two kernels: k_hc_mix2
 * (the default: the row's products all in shared memory, only the adds serial) and k_hc_mix
 * (session 4's chunked form, DS4_CUDA_HCM_V1=1, and the rows whose d is not a multiple of 8);
 * k_hc_mix2's stateless pieces (producers, chains, barriers) are hc_mix_impl.cuh. Here: the
 * device counter hc_pre waits on, the phase table of cuda_hc_mix_trace, kernels and launch.
 * Must not: know layer structure (the caller says which hc_post is pending).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hc_mix_impl.cuh"
#include "matvec_impl.cuh"

/* ---- hc_post, the next HC mix and hc_pre in one launch (issue #7: fewer decode launches) ----
 * A decode layer ran hc_post (X2 = post·f + comb·X), the mix m = fn·X2 (cuda_matvec, F32,
 * 24 x 16384 on Flash) and hc_pre (k_hc_pre_dec) as three launches of a few us each. k_hc_mix
 * does the three: every mix block forms the X2 values of the units it reads with k_hc_post's
 * operations (so the same bits; fn's rows read X2 anyway), and its products are the CPU's
 * (format/quant_dot.c q_dot_f32/f16: lane i%8 adds the rounded product w_i·x_i, then the
 * lanes' combine), as matvec_dense.cu computes them: one block per mix row, warps 1..31 compute
 * chunk k's products into shared memory (each loader one 4-value unit per chunk, its next
 * unit's loads issued first) while lanes 0..7 of warp 0 add chunk k-1's in column order, so mix
 * equals cuda_matvec's and the CPU's. With `pre` (Flash's hc 4 x 4096 only) two more blocks run
 * k_hc_pre_dec's roles: they load X2 and compute ρ while the mix blocks work, then wait on a
 * device counter for the mix rows (the grid is small, all its blocks are resident together:
 * PDL releases the next grid only once every block of this one has started), and block role 0
 * writes X2 to Xout. Role 1 overwrites post/comb, so it waits for role 0 too (the mix blocks
 * read the old post/comb before they count). One counter serves every launch: launches on the
 * stream never overlap (cu_pdl_wait), and the last of the two waiting blocks resets it. */

#define HCM_LOADERS (HCD_THREADS - 32)
#define HCM_C (4 * HCM_LOADERS) /* values per chunk: one 4-value unit per loader (a multiple of 8) */
#define HCM_T (HCM_C / 8 + 4)   /* a CPU lane's chain in a chunk buffer (an odd multiple of 4) */

__device__ unsigned int g_hcm_count;

/* The 4 values of X2 at stream k, columns c..c+3 (c a multiple of 4): k_hc_post's operations
 * per value (post·f first, then comb[j][k]·X[j] for j ascending). The caller tracks (k, c)
 * without dividing (issue #7: a 64-bit division per unit cost more than the mix). */
__device__ __forceinline__ float4 hcm_x4(const hcm_args &a, int64_t k, int64_t c) {
    const float4 fv = *(const float4 *)(a.f + c);
    const float pk = __ldg(a.post + k);
    float4 s = make_float4(__fmul_rn(pk, fv.x), __fmul_rn(pk, fv.y), __fmul_rn(pk, fv.z), __fmul_rn(pk, fv.w));
    for (int j = 0; j < a.hc; j++) {
        const float cj = __ldg(a.comb + j * a.hc + k);
        const float4 xv = *(const float4 *)(a.X + (int64_t)j * a.d + c);
        s.x = __fadd_rn(s.x, __fmul_rn(cj, xv.x));
        s.y = __fadd_rn(s.y, __fmul_rn(cj, xv.y));
        s.z = __fadd_rn(s.z, __fmul_rn(cj, xv.z));
        s.w = __fadd_rn(s.w, __fmul_rn(cj, xv.w));
    }
    return s;
}

/* Waits until the counter reaches `target` (thread 0, by acquire loads: the mix rows written
 * before each count are then visible to the block after its barrier; a bound turns a hang into
 * an error). */
__device__ __forceinline__ void hcm_wait(unsigned target) {
    if (threadIdx.x == 0) {
        unsigned n = 0, v;
        for (;;) {
            asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(&g_hcm_count) : "memory");
            if (v >= target) break;
            __nanosleep(32);
            if (++n == (1u << 28)) __trap();
        }
    }
    __syncthreads();
}

/* ---- phase stamps for timing (cuda_hc_mix_trace; off unless a test asks) ----
 * %globaltimer (ns, one clock for all SMs) at the phases of one launch, and clock64 cycles of
 * the serial parts within one SM. */
enum {
    HCM_TR_START_MIN, HCM_TR_START_MAX, /* block starts (min over all, max over mix blocks) */
    HCM_TR_C0,                          /* mix block 0: its chain has chunk 0 */
    HCM_TR_END_MIN, HCM_TR_END_MAX,     /* mix blocks: row written */
    HCM_TR_R0, HCM_TR_R1 = HCM_TR_R0 + 4, /* hc_pre roles: start, ρ done, mix awaited, end */
    HCM_TR_CYC_CHAIN = HCM_TR_R1 + 4,   /* mix block 0: cycles from chunk 0 to the row's end */
    HCM_TR_CYC_C0,                      /* mix block 0: cycles from its start to chunk 0 */
    HCM_TR_CYC_R0, HCM_TR_CYC_R1,       /* roles: cycles from the mix awaited to the end */
    HCM_TR_R0P,                         /* role 0 (TR kernels): hcd_tail's 5 stamps */
    HCM_TR_N = HCM_TR_R0P + 5
};
__device__ unsigned long long g_hcm_trace[HCM_TR_N];
static int g_hcm_trace_on;

__device__ __forceinline__ unsigned long long hcm_now(void) {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

/* Role r of k_hc_pre_dec on X2 (see above). The weights of the tail are loaded before the
 * wait (hcd_load); the count that resets the counter is issued after the wait, its result
 * only needed at the end (an atomic's round trip off the tail's path). */
template <int HC, int EPT, bool TR = false>
__device__ void hcm_pre_block(const hcm_args &a, int role) {
    __shared__ double shd[32];
    __shared__ float s_sc[3], s_ba[(2 + HC) * HC];
    const int tid = threadIdx.x;
    if (a.trace && tid == 0) {
        const unsigned long long t = hcm_now();
        atomicMin(&g_hcm_trace[HCM_TR_START_MIN], t);
        g_hcm_trace[HCM_TR_R0 + 4 * role] = t;
    }
    float x[HC * EPT]; /* flat index f·blockDim + tid: stream f / EPT, column (f % EPT)·blockDim + tid */
    if (a.f) {
        float pk[HC], cm[HC * HC];
#pragma unroll
        for (int k = 0; k < HC; k++) pk[k] = __ldg(a.post + k);
#pragma unroll
        for (int k = 0; k < HC * HC; k++) cm[k] = __ldg(a.comb + k);
#pragma unroll
        for (int f = 0; f < HC * EPT; f++) {
            const int k = f / EPT;
            const int64_t c = (int64_t)(f % EPT) * HCD_THREADS + tid;
            float v = __fmul_rn(pk[k], a.f[c]);
#pragma unroll
            for (int j = 0; j < HC; j++) v = __fadd_rn(v, __fmul_rn(cm[j * HC + k], a.X[(int64_t)j * a.d + c]));
            x[f] = v;
            if (role == 0) a.Xout[(int64_t)f * HCD_THREADS + tid] = v;
        }
    } else {
#pragma unroll
        for (int f = 0; f < HC * EPT; f++) x[f] = a.X[(int64_t)f * HCD_THREADS + tid];
    }
    const unsigned P = (unsigned)a.n_mix_blocks + 1; /* mix blocks + role 0 */
    if (role == 0) { /* role 0 has read post/comb: count it with the mix blocks */
        __syncthreads();
        if (tid == 0) atomicAdd(&g_hcm_count, 1u);
    }
    hcd_in<EPT> in;
    hcd_load<HC, EPT>(role, a.scale, a.base, a.norm, &in, s_sc, s_ba);
    const float rho = hcd_rho<HC, EPT>(x, a.d, a.norm_eps, shd); /* its barriers publish s_sc, s_ba */
    if (a.trace && tid == 0) g_hcm_trace[HCM_TR_R0 + 4 * role + 1] = hcm_now();
    hcm_wait(P);
    long long c1 = 0;
    if (a.trace && tid == 0) {
        c1 = clock64();
        g_hcm_trace[HCM_TR_R0 + 4 * role + 2] = hcm_now();
    }
    unsigned old = 0;
    if (tid == 0) old = atomicAdd(&g_hcm_count, 1u);
    hcd_tail<HC, EPT, TR>(role, x, rho, a.mix, in, s_sc, s_ba, a.norm != NULL, a.d, a.iters, a.hc_eps,
                          a.norm_eps, a.pre, a.post_out, a.comb_out, a.a, a.q80, a.q8k, shd,
                          TR ? g_hcm_trace + HCM_TR_R0P : nullptr);
    if (tid == 0 && old == P + 1) atomicExch(&g_hcm_count, 0u); /* the second of the two roles */
    if (a.trace) {
        __syncthreads();
        if (tid == 0) {
            g_hcm_trace[HCM_TR_R0 + 4 * role + 3] = hcm_now();
            g_hcm_trace[HCM_TR_CYC_R0 + role] = (unsigned long long)(clock64() - c1);
        }
    }
}

/* Stamps of a mix block (thread 0 of warp 0 for start, lane 0 of the chain for the rest). */
__device__ __forceinline__ void hcm_stamp_start(void) {
    const unsigned long long t = hcm_now();
    atomicMin(&g_hcm_trace[HCM_TR_START_MIN], t);
    atomicMax(&g_hcm_trace[HCM_TR_START_MAX], t);
}
__device__ __forceinline__ void hcm_stamp_end(long long c_start, long long c_c0) {
    const unsigned long long t = hcm_now();
    atomicMin(&g_hcm_trace[HCM_TR_END_MIN], t);
    atomicMax(&g_hcm_trace[HCM_TR_END_MAX], t);
    if (blockIdx.x == 0) {
        g_hcm_trace[HCM_TR_CYC_CHAIN] = (unsigned long long)(clock64() - c_c0);
        g_hcm_trace[HCM_TR_CYC_C0] = (unsigned long long)(c_c0 - c_start);
    }
}

/* Loader: unit u (4 values at column col = 4u of fn's row and of X2) of stream k, column c of
 * X2 (pending hc_post); w: its fn words (F16: the first two). */
template <int T>
__device__ __forceinline__ void hcm_fetch(const hcm_args &a, const uint8_t *wr, int64_t col,
                                          int64_t k, int64_t c, uint4 *w, float4 *x) {
    if (T == CU_T_F32) {
        *w = __ldg((const uint4 *)(wr + col * 4));
    } else {
        const uint2 h = __ldg((const uint2 *)(wr + col * 2));
        *w = make_uint4(h.x, h.y, 0u, 0u);
    }
    *x = a.f ? hcm_x4(a, k, c) : *(const float4 *)(a.X + col);
}

/* T: fn's type (F32, F16); PRE: the last two blocks run hc_pre. One block of HCD_THREADS per
 * mix row; the chunk buffers (2 x 8 lanes x HCM_T floats: value v of a chunk at (v % 8)·HCM_T
 * + v / 8, each CPU lane's chain contiguous) are dynamic shared memory. */
template <int T, bool PRE>
__global__ void __launch_bounds__(HCD_THREADS) k_hc_mix(hcm_args a) {
    cu_pdl_wait();
    if (PRE && (int)blockIdx.x >= a.n_mix_blocks) {
        hcm_pre_block<4, 4>(a, (int)blockIdx.x - a.n_mix_blocks);
        return;
    }
    extern __shared__ __align__(16) float hcm_buf[]; /* [2][8][HCM_T] */
    const int64_t row = blockIdx.x;
    const long long c_start = a.trace ? clock64() : 0;
    if (a.trace && threadIdx.x == 0) hcm_stamp_start();
    const int lt = (int)threadIdx.x - 32, lane = threadIdx.x & 31;
    /* without PRE the first row's block writes X2 (its loaders visit every unit once) */
    const bool writer = !PRE && a.f && blockIdx.x == 0;
    const uint8_t *wr = a.fn + row * a.cols * (T == CU_T_F32 ? 4 : 2);
    const int n_chunks = (int)((a.cols + HCM_C - 1) / HCM_C);
    /* this loader's column in chunk 0, its X2 stream and column (advanced by HCM_C a chunk) */
    int64_t col = 4 * (int64_t)lt, k = 0, c = col;
    if (a.f && lt >= 0) {
        k = c / a.d;
        c -= k * a.d;
    }
    uint4 wn = make_uint4(0u, 0u, 0u, 0u);
    float4 xn = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (lt >= 0 && col < a.cols) hcm_fetch<T>(a, wr, col, k, c, &wn, &xn);
    float acc = 0.0f;
    for (int q = 0; q <= n_chunks; q++) {
        if (lt >= 0) {
            if (q < n_chunks && col < a.cols) {
                const uint4 w = wn;
                const float4 x = xn;
                const int64_t cur = col;
                col += HCM_C;
                for (c += HCM_C; a.f && c >= a.d; c -= a.d) k++;
                if (col < a.cols) hcm_fetch<T>(a, wr, col, k, c, &wn, &xn); /* the next chunk's unit */
                if (writer) *(float4 *)(a.Xout + cur) = x;
                float wf[4];
                if (T == CU_T_F32) {
                    wf[0] = __uint_as_float(w.x); wf[1] = __uint_as_float(w.y);
                    wf[2] = __uint_as_float(w.z); wf[3] = __uint_as_float(w.w);
                } else {
                    wf[0] = __half2float(__ushort_as_half((unsigned short)(w.x & 0xFFFFu)));
                    wf[1] = __half2float(__ushort_as_half((unsigned short)(w.x >> 16)));
                    wf[2] = __half2float(__ushort_as_half((unsigned short)(w.y & 0xFFFFu)));
                    wf[3] = __half2float(__ushort_as_half((unsigned short)(w.y >> 16)));
                }
                float *dst = hcm_buf + (q & 1) * 8 * HCM_T + (lt >> 1);
                const int l0 = (4 * lt) & 7;
                dst[l0 * HCM_T] = __fmul_rn(wf[0], x.x);
                dst[(l0 + 1) * HCM_T] = __fmul_rn(wf[1], x.y);
                dst[(l0 + 2) * HCM_T] = __fmul_rn(wf[2], x.z);
                dst[(l0 + 3) * HCM_T] = __fmul_rn(wf[3], x.w);
            }
        } else if (q > 0 && lane < 8) { /* chain lanes: column ≡ lane (mod 8), in order */
            const int64_t c0 = (int64_t)(q - 1) * HCM_C;
            const int cb = (int)(a.cols - c0 < HCM_C ? a.cols - c0 : HCM_C);
            acc = mvd_chain(acc, hcm_buf + ((q - 1) & 1) * 8 * HCM_T + lane * HCM_T,
                            cb / 8 + (lane < cb % 8));
        }
        __syncthreads();
    }
    if (lt < 0) {
        acc = cu_lanes8_qdot(acc);
        if (lane == 0) a.mix[row] = acc;
        if (a.trace && lane == 0) hcm_stamp_end(c_start, c_start);
    }
    if (PRE) { /* this block's row is written: count it */
        __threadfence();
        __syncthreads();
        if (threadIdx.x == 0) atomicAdd(&g_hcm_count, 1u);
    }
}

template <int T, bool PRE>
static ds4_status hcm_launch(const hcm_args &a0, ds4_error *err) {
    hcm_args a = a0;
    a.n_mix_blocks = (int)a.rows;
    const size_t smem = 2 * 8 * HCM_T * sizeof(float);
    static bool set = false; /* static shared (hc_pre's roles) + this may pass 48 KiB */
    if (!set) {
        CU_CHECK(cudaFuncSetAttribute(k_hc_mix<T, PRE>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      (int)smem), err, "hc_mix shared memory");
        set = true;
    }
    cu_launch(k_hc_mix<T, PRE>, a.n_mix_blocks + (PRE ? 2 : 0), HCD_THREADS, smem, a);
    return DS4_OK;
}

/* ---- the mix with the adds alone serial (issue #7, session 5; DS4_CUDA_HCM_V1=1: k_hc_mix) ----
 * k_hc_mix holds one chunk of products per block and meets all 1024 threads at a barrier per
 * chunk, so each chunk costs a load round trip plus the chain's adds one after the other. Here
 * the whole row's products have room in shared memory (Flash: 16384 floats, 64 KB), so the
 * producers never wait for the chain: warps 1..npw compute the products of chunk q (units of 8
 * consecutive values: value j of unit u is column 8u+j, CPU lane j's u-th term) and store value
 * j at tile[j·js + u] (each CPU lane's chain contiguous, js ≡ 4 mod 32 so the chain lanes'
 * 128-bit reads and the producers' stores are free of bank conflicts), then *arrive* at named
 * barrier 1+q and go on with chunk q+1; lanes 0..7 of warp 0 *wait* at barrier 1+q and add
 * chunk q's terms in column order (PTX bar.arrive / bar.sync: the arrivals' shared stores are
 * visible to the waiting warp). The products are those of k_hc_mix (X2 by k_hc_post's
 * operations, w·x2 rounded), the adds those of the CPU lanes, then the CPU's combine: the same
 * bits. The chain is then the kernel's floor: cols/8 dependent adds per CPU lane. */

/* T: fn's type (F32, F16); PRE: the last two blocks run hc_pre (hcm_pre_block, as k_hc_mix);
 * HCT: hcm_unit's. One block of HCD_THREADS per mix row; the tile [8][js] is dynamic shared
 * memory. Producer warp pw (< npw) is warp pw + 1, or with solo the (pw+1)-th warp whose index
 * is not a multiple of 4: warp w runs on the SM's scheduler w mod 4, so the chain warp's
 * scheduler issues the adds alone instead of between the producers' instructions. */
template <int T, bool PRE, int HCT, bool TR = false>
__global__ void __launch_bounds__(HCD_THREADS) k_hc_mix2(hcm_args a) {
    cu_pdl_wait();
    if (PRE && (int)blockIdx.x >= a.n_mix_blocks) {
        hcm_pre_block<4, 4, TR>(a, (int)blockIdx.x - a.n_mix_blocks);
        return;
    }
    extern __shared__ __align__(16) float hcm_tile[]; /* [8][js] */
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, np = 32 * a.npw;
    const int nbar = np + 32;
    if (warp > 0) { /* producers: per chunk upc units, unit q·upc + i·np + p for thread p */
        const int pw = !a.solo ? warp - 1 : (warp & 3) ? warp - (warp >> 2) - 1 : -1;
        if (pw < 0 || pw >= a.npw) return;
        const int p = 32 * pw + lane;
        const uint8_t *wr = a.fn + (int64_t)blockIdx.x * a.cols * (T == CU_T_F32 ? 4 : 2);
        const bool writer = !PRE && a.f && blockIdx.x == 0; /* without PRE row 0 writes X2 */
        if (HCT && a.sc) {
            hcm_group<T, HCT>(a, wr, p, writer, hcm_tile, nbar);
            return;
        }
        for (int q = 0; q < a.n_chunks; q++) {
            for (int u = q * a.upc + p; u < (q + 1) * a.upc && u < a.n_units; u += np)
                hcm_unit<T, HCT>(a, wr, u, writer, hcm_tile);
            __syncwarp(); /* bar.arrive counts whole warps: converge first */
            hcm_bar_arrive(1 + q, nbar);
        }
        return;
    }
    long long c_start = 0, c_c0 = 0;
    if (a.trace && lane == 0) {
        c_start = clock64();
        hcm_stamp_start();
    }
    float acc = 0.0f;
    for (int q = 0; q < a.n_chunks; q++) {
        hcm_bar_sync(1 + q, nbar);
        if (a.trace && q == 0 && lane == 0) {
            c_c0 = clock64();
            if (blockIdx.x == 0) g_hcm_trace[HCM_TR_C0] = hcm_now();
        }
        if (lane < 8) {
            const int u0 = q * a.upc;
            const float *c = hcm_tile + lane * a.js + u0;
            const int n = min(a.upc, a.n_units - u0);
            acc = hcm_chain(acc, c, n);
        }
        __syncwarp();
    }
    acc = cu_lanes8_qdot(acc);
    if (lane == 0) {
        a.mix[blockIdx.x] = acc;
        if (PRE) /* this block's row is written, and its producers are past every read of
                  * post/comb (they all arrived at the last barrier): count it, release */
            asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(&g_hcm_count), "r"(1u) : "memory");
        if (a.trace) hcm_stamp_end(c_start, c_c0);
    }
}

/* Most chunks (named barriers 1..15; 0 is __syncthreads). */
#define HCM2_MAX_CHUNKS 15

/* Launches k_hc_mix2 when the row's tile fits in shared memory; 0 (nothing launched) when not. */
template <int T, bool PRE, int HCT, bool TR = false>
static int hcm2_launch(hcm_args a, int npw, ds4_error *err, ds4_status *st) {
    a.n_mix_blocks = (int)a.rows;
    a.n_units = (int)(a.cols / 8);
    a.du = (int)(a.d / 8);
    a.js = (a.n_units + 31) / 32 * 32 + 4;
    a.npw = npw;
    const int np = 32 * npw, per = (a.n_units + np - 1) / np; /* units per producer thread */
    /* stream chunks (hcm_group) when hc is known, a producer per column group, and the chunk
     * starts 16-byte aligned in the tile; DS4_CUDA_HCM_SC=0: equal chunks, for timing */
    a.sc = HCT && HCT <= HCM2_MAX_CHUNKS && a.du <= np && a.du % 4 == 0 && a.sc;
    if (a.sc) {
        a.upc = a.du;
        a.n_chunks = HCT;
    } else {
        a.upc = np * ((per + HCM2_MAX_CHUNKS - 1) / HCM2_MAX_CHUNKS);
        a.n_chunks = (a.n_units + a.upc - 1) / a.upc;
    }
    const size_t smem = (size_t)8 * a.js * sizeof(float);
    /* the largest opt-in asked for so far; the room for dynamic shared memory (the card's
     * opt-in maximum less the kernel's static shared memory), found on the first call */
    static size_t set = 0, room = 0;
    if (!room) {
        cudaFuncAttributes fa;
        int dev = 0, optin = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess ||
            cudaFuncGetAttributes(&fa, k_hc_mix2<T, PRE, HCT, TR>) != cudaSuccess)
            return 0;
        room = (size_t)optin > fa.sharedSizeBytes ? (size_t)optin - fa.sharedSizeBytes : 1;
    }
    if (smem > room) return 0;
    if (smem > set) {
        if (cudaFuncSetAttribute(k_hc_mix2<T, PRE, HCT, TR>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)smem) != cudaSuccess) {
            *st = ds4_seterr(err, DS4_ERR_INTERNAL, "cuda: hc_mix shared memory (%zu bytes)", smem);
            return 1;
        }
        set = smem;
    }
    cu_launch(k_hc_mix2<T, PRE, HCT, TR>, a.n_mix_blocks + (PRE ? 2 : 0), HCD_THREADS, smem, a);
    return 1;
}

/* A switch of the environment, read on each call (decode calls happen at graph capture). */
static int hcm_env(const char *name, int dflt) {
    const char *e = getenv(name);
    return e && *e ? atoi(e) : dflt;
}

extern "C" ds4_status cuda_hc_mix_fused(int fn_type, const void *d_fn, int64_t rows,
                                        const float *d_X, const float *d_f, const float *d_post,
                                        const float *d_comb, float *d_Xout, int hc, int64_t d,
                                        float *d_mix,
                                        const float *d_scale, const float *d_base,
                                        const float *d_norm, int iters, float hc_eps,
                                        float norm_eps, float *d_pre, float *d_post_out,
                                        float *d_comb_out, float *d_a, void *d_q80, void *d_q8k,
                                        int one_launch, ds4_error *err) {
    ds4_status st = hc_check("cuda_hc_mix_fused", 1, hc, d, err);
    if (st) return st;
    const int64_t cols = hc * d;
    if (rows <= 0 || cuda_act_kind(fn_type) != CUDA_ACT_F32 ||
        (d_f && (!d_post || !d_comb || !d_Xout || d_Xout == d_X)) ||
        (d_q80 && d % 32) || (d_q8k && d % 256))
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_hc_mix_fused: %lld rows, hc %d, d %lld",
                          (long long)rows, hc, (long long)d);
    const float *X2 = d_f ? d_Xout : d_X; /* the streams hc_pre and the mix read */
    /* 4-value units of F32 / F16 rows, 16-byte aligned; other types and the unaligned cases
     * (and a grid too large for one block per row): the separate ops. 8-value units (d a
     * multiple of 8) whose row fits in shared memory: k_hc_mix2, else k_hc_mix. */
    const bool vec = (fn_type == CU_T_F32 || fn_type == CU_T_F16) && d % 4 == 0 &&
                     ((uintptr_t)d_fn & 15) == 0 && ((uintptr_t)d_X & 15) == 0 &&
                     (!d_f || (((uintptr_t)d_f & 15) == 0 && ((uintptr_t)d_Xout & 15) == 0));
    if (!vec || rows > 65535) {
        if (d_f && (st = cuda_hc_post(d_f, d_X, d_post, d_comb, 1, hc, d, d_Xout, err))) return st;
        if ((st = cuda_matvec(fn_type, d_fn, rows, cols, X2, NULL, d_mix, err))) return st;
        if (!d_scale) return DS4_OK;
        return cuda_hc_pre_quant(X2, d_mix, d_scale, d_base, d_norm, 1, hc, d, iters, hc_eps,
                                 norm_eps, d_pre, d_post_out, d_comb_out, d_a, d_q80, d_q8k, err);
    }
    hcm_args a = {};
    a.fn = (const uint8_t *)d_fn;
    a.X = d_X;
    a.f = d_f;
    a.post = d_post;
    a.comb = d_comb;
    a.Xout = d_Xout;
    a.mix = d_mix;
    a.rows = rows;
    a.cols = cols;
    a.d = d;
    a.hc = hc;
    a.n_mix_blocks = 0;
    a.scale = d_scale;
    a.base = d_base;
    a.norm = d_norm;
    a.iters = iters;
    a.hc_eps = hc_eps;
    a.norm_eps = norm_eps;
    a.pre = d_pre;
    a.post_out = d_post_out;
    a.comb_out = d_comb_out;
    a.a = d_a;
    a.q80 = (uint8_t *)d_q80;
    a.q8k = (uint8_t *)d_q8k;
    a.trace = g_hcm_trace_on;
    /* hc_pre inside: k_hc_pre_dec's shape (MODEL_MATH §0: Flash's hc 4, n_embd 4096), and one
     * SM for each of the grid's blocks (1024 threads at up to 64 registers: one block per SM),
     * so the waiting blocks can never hold an SM a mix block needs */
    int dev = 0, n_sm = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
        n_sm = 0;
    const bool pre = one_launch && d_scale && hc == 4 && d == 4 * HCD_THREADS && n_sm >= rows + 2;
    int done = 0; /* k_hc_mix2 launched (status in st); else k_hc_mix below */
    if (d % 8 == 0 && cols / 8 <= INT32_MAX && !hcm_env("DS4_CUDA_HCM_V1", 0)) {
        /* for timing: DS4_CUDA_HCM_SOLO=0 lets producers share the chain warp's scheduler;
         * DS4_CUDA_HCM_PW: producer warps (1..31 shared, 1..24 solo; default all) */
        a.solo = hcm_env("DS4_CUDA_HCM_SOLO", 1) != 0;
        a.sc = hcm_env("DS4_CUDA_HCM_SC", 1) != 0;
        const int most = a.solo ? HCD_THREADS / 32 * 3 / 4 : HCD_THREADS / 32 - 1;
        int npw = hcm_env("DS4_CUDA_HCM_PW", most);
        if (npw < 1 || npw > most) npw = most;
        if (fn_type == CU_T_F32)
            done = pre ? (a.trace ? hcm2_launch<CU_T_F32, true, 4, true>(a, npw, err, &st)
                                  : hcm2_launch<CU_T_F32, true, 4>(a, npw, err, &st))
                       : hc == 4 ? hcm2_launch<CU_T_F32, false, 4>(a, npw, err, &st)
                                 : hcm2_launch<CU_T_F32, false, 0>(a, npw, err, &st);
        else
            done = pre ? (a.trace ? hcm2_launch<CU_T_F16, true, 4, true>(a, npw, err, &st)
                                  : hcm2_launch<CU_T_F16, true, 4>(a, npw, err, &st))
                       : hc == 4 ? hcm2_launch<CU_T_F16, false, 4>(a, npw, err, &st)
                                 : hcm2_launch<CU_T_F16, false, 0>(a, npw, err, &st);
    }
    if (!done)
        st = fn_type == CU_T_F32 ? (pre ? hcm_launch<CU_T_F32, true>(a, err) : hcm_launch<CU_T_F32, false>(a, err))
                                 : (pre ? hcm_launch<CU_T_F16, true>(a, err) : hcm_launch<CU_T_F16, false>(a, err));
    if (st) return st;
    CU_LAUNCH_CHECK(err, "hc_mix launch");
    if (!d_scale || pre) return DS4_OK;
    return cuda_hc_pre_quant(X2, d_mix, d_scale, d_base, d_norm, 1, hc, d, iters, hc_eps, norm_eps,
                             d_pre, d_post_out, d_comb_out, d_a, d_q80, d_q8k, err);
}

extern "C" ds4_status cuda_hc_mix_trace(int on, char *buf, size_t n, ds4_error *err) {
    unsigned long long t[HCM_TR_N];
    if (on) {
        memset(t, 0, sizeof t);
        t[HCM_TR_START_MIN] = t[HCM_TR_END_MIN] = ~0ull;
        CU_CHECK(cudaMemcpyToSymbol(g_hcm_trace, t, sizeof t), err, "hc_mix trace reset");
        g_hcm_trace_on = 1;
        return DS4_OK;
    }
    g_hcm_trace_on = 0;
    CU_CHECK(cudaMemcpyFromSymbol(t, g_hcm_trace, sizeof t), err, "hc_mix trace read");
    const unsigned long long t0 = t[HCM_TR_START_MIN];
    /* ns after the first block's start; 0 (-t0) where a phase did not run */
#define HCM_REL(i) (t[i] ? (long long)(t[i] - t0) : -1ll)
    snprintf(buf, n,
             "mix blocks start <= %lld ns, chain has chunk 0 at %lld (%llu cyc after its start), "
             "rows end %lld..%lld (block 0 chain %llu cyc); role 0: start %lld, rho %lld, mix "
             "awaited %lld, end %lld (%llu cyc); role 1: start %lld, rho %lld, awaited %lld, end "
             "%lld (%llu cyc); role 0 after the mix: pre %lld, rms %lld, a %lld, Q8_0 %lld, "
             "Q8_K %lld",
             HCM_REL(HCM_TR_START_MAX), HCM_REL(HCM_TR_C0), t[HCM_TR_CYC_C0], HCM_REL(HCM_TR_END_MIN),
             HCM_REL(HCM_TR_END_MAX), t[HCM_TR_CYC_CHAIN], HCM_REL(HCM_TR_R0), HCM_REL(HCM_TR_R0 + 1),
             HCM_REL(HCM_TR_R0 + 2), HCM_REL(HCM_TR_R0 + 3), t[HCM_TR_CYC_R0], HCM_REL(HCM_TR_R1),
             HCM_REL(HCM_TR_R1 + 1), HCM_REL(HCM_TR_R1 + 2), HCM_REL(HCM_TR_R1 + 3), t[HCM_TR_CYC_R1],
             HCM_REL(HCM_TR_R0P), HCM_REL(HCM_TR_R0P + 1), HCM_REL(HCM_TR_R0P + 2),
             HCM_REL(HCM_TR_R0P + 3), HCM_REL(HCM_TR_R0P + 4));
#undef HCM_REL
    return DS4_OK;
}
