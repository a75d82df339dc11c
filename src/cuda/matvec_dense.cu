/*
 * cuda/matvec_dense.cu — the decode products of dense weights (Q8_0, F32, F16, BF16: wq_a,
 * wkv, wq_b, wo_a, wo_b, the shared expert, the output head, the compressor, the router, the
 * indexer's projections) for one token, bit-identical to the CPU's single-row kernels
 * (format/quant_dot.c and their AVX2 twins, issue #7).
 *
 * The CPU's order: Q8_0 adds the block terms (f16(d)·yd)·(float)isum one after another from
 * block 0 (q_dot_q8_0_ref = q_dot_q8_0_avx2); F32/F16/BF16 keep 8 lane sums, lane i%8 adds the
 * rounded product w_i·x_i (no FMA), then ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)).
 * The terms (block terms, products) are independent: the same bits wherever computed. So a
 * block of 288 threads takes R rows: warps 1..8 (the loaders) compute chunk k's terms with
 * coalesced loads into shared memory while warp 0 (the chain warp) adds chunk k-1's terms in
 * the CPU's order — one lane per row (Q8_0) or per (row, CPU lane) (floats) — two buffers, one
 * __syncthreads per chunk. Only the chain warp's dependent adds are serial, and they overlap
 * the next chunk's loads and the other resident blocks.
 * A loader keeps one column unit for the whole chunk (chunks of a power-of-two number of units
 * <= 256) and walks the tile's rows, so its activation (a Q8_0 record, or x) is loaded once per
 * chunk and reused for every row (fewer instructions per weight byte than a warp per row).
 *
 * Tuning (env, read once, for the op bench): DS4_CUDA_MVD="q8_terms,f_terms" = the most terms
 * per chunk (R x chunk) of Q8_0 and float products.
 * Must not: know the model.
 */
#include <stdio.h>
#include <stdlib.h>

#include "cuda_api.h"
#include "matvec_impl.cuh"

#define MVD_LOADERS 256
#define MVD_THREADS (32 + MVD_LOADERS)

struct mvd_args {
    mvd_shape s;
    int64_t row_bytes;
    int R;       /* rows per block (Q8_0 <= 32, floats <= 4) */
    int C;       /* terms per row per chunk: Q8_0 blocks, or float values (a multiple of 8) */
    int cu_log2; /* log2 of the column units per chunk (a unit: a Q8_0 block, or VPU values) */
    int S;       /* floats between rows of a chunk buffer */
    int n_terms; /* terms per row: Q8_0 blocks, or cols */
};

/* This block's rows: weights, activation, outputs; nr rows (<= R). false for a corrupt
 * expert id: the rows get NaN and nothing is read (the chain warp writes them). */
struct mvd_tile {
    const uint8_t *w, *act;
    float *y;
    int nr;
};

__device__ __forceinline__ bool mvd_locate(const mvd_args &a, mvd_tile *t) {
    const int64_t r0 = (int64_t)blockIdx.x * a.R;
    int j = blockIdx.y;
    const uint8_t *w = a.s.w;
    float *y = a.s.y;
    if (j >= a.s.n_sel) { /* second matrix of a pair */
        j -= a.s.n_sel;
        w = a.s.w2;
        y = a.s.y2;
    }
    const int64_t e = a.s.ids ? a.s.ids[j] : 0;
    t->nr = (int)(a.s.rows - r0 < a.R ? a.s.rows - r0 : a.R);
    t->y = y + (int64_t)j * a.s.rows + r0;
    t->act = a.s.act + j * a.s.act_stride;
    t->w = w + (e >= 0 && e < a.s.n_experts ? e : 0) * a.s.w_stride + r0 * a.row_bytes;
    return e >= 0 && e < a.s.n_experts;
}

/* Q8_0 term of one block: the CPU's (f16(d)·yd)·(float)isum (quants README §4.2). */
__device__ __forceinline__ float mvd_q8_term(float dw, float yd, const uint32_t q[8], const int aq[8]) {
    int s = 0;
#pragma unroll
    for (int j = 0; j < 8; j++) s = __dp4a((int)q[j], aq[j], s);
    return __fmul_rn(__fmul_rn(dw, yd), (float)s);
}

/* Q8_0 loaders: column unit col of rows slot, slot + slots, ... of the tile, its terms into
 * cs[row·S + block]. PAIR (rows 4-byte aligned, so an even number of blocks per row): a unit
 * is two blocks, 68 bytes from 17 aligned 32-bit loads (the second block's quants are aligned,
 * the first's take a funnel shift), else one block from 16-bit loads. */
template <bool PAIR>
__device__ __forceinline__ void mvd_q8_terms(const mvd_args &a, const mvd_tile &t, int64_t c0,
                                             int cb, float *cs) {
    constexpr int U = PAIR ? 2 : 1, NW = PAIR ? 17 : 8; /* blocks and 32-bit words per unit */
    const int lt = threadIdx.x - 32, cu = lt & ((1 << a.cu_log2) - 1);
    const int slots = MVD_LOADERS >> a.cu_log2, col = U * cu;
    if (col >= cb) return;
    const uint8_t *ab = t.act + (c0 + col) * CU_Q8_0ACT_BYTES;
    float yd[U];
    int aq[U][8];
#pragma unroll
    for (int u = 0; u < U; u++) {
        yd[u] = __ldg((const float *)(ab + u * CU_Q8_0ACT_BYTES));
#pragma unroll
        for (int j = 0; j < 8; j++) aq[u][j] = __ldg((const int *)(ab + u * CU_Q8_0ACT_BYTES + 4) + j);
    }
    const uint8_t *wb = t.w + (c0 + col) * CU_Q8_0_BYTES;
    constexpr int KU = PAIR ? 2 : 4; /* rows whose loads are issued before any is used */
    for (int r = lt >> a.cu_log2; r < t.nr; r += KU * slots) {
        uint32_t w[KU][NW];
        float d1[KU]; /* !PAIR: the block's scale */
#pragma unroll
        for (int i = 0; i < KU; i++) {
            const int rr = r + i * slots;
            if (rr >= t.nr) continue;
            const uint8_t *bp = wb + rr * a.row_bytes;
            if (!PAIR) d1[i] = cu_f16(bp);
#pragma unroll
            for (int j = 0; j < NW; j++) w[i][j] = PAIR ? __ldg((const uint32_t *)bp + j) : cu_ld_u32_a2(bp + 2 + 4 * j);
        }
#pragma unroll
        for (int i = 0; i < KU; i++) {
            const int rr = r + i * slots;
            if (rr >= t.nr) continue;
            float *dst = cs + rr * a.S + col;
            if (PAIR) {
                uint32_t q[8];
#pragma unroll
                for (int j = 0; j < 8; j++) q[j] = __funnelshift_r(w[i][j], w[i][j + 1], 16);
                dst[0] = mvd_q8_term(__half2float(__ushort_as_half((unsigned short)(w[i][0] & 0xFFFFu))),
                                     yd[0], q, aq[0]);
                dst[1] = mvd_q8_term(__half2float(__ushort_as_half((unsigned short)(w[i][8] >> 16))),
                                     yd[U - 1], &w[i][9], aq[U - 1]);
            } else {
                dst[0] = mvd_q8_term(d1[i], yd[0], w[i], aq[0]);
            }
        }
    }
}

/* Float loaders: VEC: a unit is 16 bytes of the row (4 f32 or 8 f16/bf16 values; rows and x
 * 16-byte aligned), else one value. Products w·x rounded (no FMA) into cs[row·S + value]. */
template <int T, bool VEC>
__device__ __forceinline__ void mvd_f_terms(const mvd_args &a, const mvd_tile &t, int64_t c0,
                                            int cb, float *cs) {
    constexpr int VPU = !VEC ? 1 : T == CU_T_F32 ? 4 : 8;
    const int lt = threadIdx.x - 32, cu = lt & ((1 << a.cu_log2) - 1);
    const int slots = MVD_LOADERS >> a.cu_log2, col = cu * VPU;
    if (col >= cb) return;
    const float *x = (const float *)t.act + c0 + col;
    float xv[VPU];
#pragma unroll
    for (int i = 0; i < VPU; i += 4) {
        if (VEC) {
            const float4 v = __ldg((const float4 *)(x + i));
            xv[i] = v.x; xv[i + 1] = v.y; xv[i + 2] = v.z; xv[i + 3] = v.w;
        } else {
            xv[0] = __ldg(x);
        }
    }
    constexpr int ES = T == CU_T_F32 ? 4 : 2;
    const uint8_t *wb = t.w + (c0 + col) * ES;
    constexpr int KU = 4;
    for (int r = lt >> a.cu_log2; r < t.nr; r += KU * slots) {
        uint32_t wv[KU][VEC ? 4 : 1];
#pragma unroll
        for (int i = 0; i < KU; i++) {
            const int rr = r + i * slots;
            if (rr >= t.nr) continue;
            const uint8_t *p = wb + rr * a.row_bytes;
            if (VEC) {
                const uint4 v = __ldg((const uint4 *)p);
                wv[i][0] = v.x; wv[i][VEC ? 1 : 0] = v.y; wv[i][VEC ? 2 : 0] = v.z; wv[i][VEC ? 3 : 0] = v.w;
            } else {
                wv[i][0] = ES == 4 ? *(const uint32_t *)p : *(const uint16_t *)p;
            }
        }
#pragma unroll
        for (int i = 0; i < KU; i++) {
            const int rr = r + i * slots;
            if (rr >= t.nr) continue;
            float pr[VPU];
#pragma unroll
            for (int k = 0; k < VPU; k++) {
                float f;
                if (T == CU_T_F32) f = __uint_as_float(wv[i][k]);
                else {
                    const uint32_t h = VEC ? (wv[i][k / 2] >> (16 * (k & 1))) & 0xFFFFu : wv[i][0];
                    f = T == CU_T_F16 ? __half2float(__ushort_as_half((unsigned short)h)) : __uint_as_float(h << 16);
                }
                pr[k] = __fmul_rn(f, xv[k]);
            }
            float *dst = cs + rr * a.S + col;
#pragma unroll
            for (int k = 0; k < VPU; k += 4) {
                if (VEC) *(float4 *)(dst + k) = make_float4(pr[k], pr[k + 1], pr[k + 2], pr[k + 3]);
                else dst[0] = pr[0];
            }
        }
    }
}

/* The kernel: loaders fill buffer k&1 with chunk k while the chain warp adds chunk k-1. F:
 * float products (8 chains per row), else Q8_0 (one chain per row). */
template <int T, bool VEC>
__global__ void __launch_bounds__(MVD_THREADS) k_mv_dense(mvd_args a) {
    cu_pdl_wait();
    extern __shared__ __align__(16) float mvd_smem[];
    constexpr bool F = T != CU_T_Q8_0;
    mvd_tile t;
    const bool ok = mvd_locate(a, &t);
    const int lane = threadIdx.x & 31;
    if (!ok) {
        if (threadIdx.x < t.nr) t.y[threadIdx.x] = __int_as_float(0x7fc00000);
        return; /* uniform over the block */
    }
    const int n_chunks = (a.n_terms + a.C - 1) / a.C, buf = a.R * a.S;
    /* chain lane: row cr, CPU lane cl (floats), or row = lane (Q8_0) */
    const int cr = F ? lane >> 3 : lane, cl = F ? lane & 7 : 0;
    float acc = 0.0f;
    for (int k = 0; k <= n_chunks; k++) {
        if (threadIdx.x >= 32) {
            if (k < n_chunks) {
                const int64_t c0 = (int64_t)k * a.C;
                const int cb = (int)(a.n_terms - c0 < a.C ? a.n_terms - c0 : a.C);
                float *cs = mvd_smem + (k & 1) * buf;
                if (F) mvd_f_terms<T, VEC>(a, t, c0, cb, cs);
                else mvd_q8_terms<VEC>(a, t, c0, cb, cs);
            }
        } else if (k > 0 && cr < t.nr) {
            const int64_t c0 = (int64_t)(k - 1) * a.C;
            const int cb = (int)(a.n_terms - c0 < a.C ? a.n_terms - c0 : a.C);
            const float *c = mvd_smem + ((k - 1) & 1) * buf + cr * a.S;
            if (F) {
#pragma unroll 8
                for (int i = cl; i < cb; i += 8) acc = __fadd_rn(acc, c[i]);
            } else {
#pragma unroll 8
                for (int i = 0; i < cb; i++) acc = __fadd_rn(acc, c[i]);
            }
        }
        __syncthreads();
    }
    if (threadIdx.x >= 32) return;
    if (F) {
        acc = mvd_combine8(acc);
        if (cl == 0 && cr < t.nr) t.y[cr] = acc;
    } else if (lane < t.nr) {
        t.y[lane] = acc;
    }
}

/* Tuning, read once: the most terms per chunk buffer (rows x chunk) of Q8_0 and of floats. */
static void mvd_config(int *q8_terms, int *f_terms) {
    static int q = 0, f = 0;
    if (!q) {
        q = 2048;
        f = 4096;
        const char *e = getenv("DS4_CUDA_MVD");
        int a = 0, b = 0;
        if (e && sscanf(e, "%d,%d", &a, &b) == 2 && a >= 32 && a <= 8192 && b >= 64 && b <= 8192) {
            q = a;
            f = b;
        }
    }
    *q8_terms = q;
    *f_terms = f;
}

static int mvd_n_sm(void) {
    static int n = 0;
    if (!n) {
        int dev = 0, v = 0;
        cudaGetDevice(&dev);
        cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev);
        n = v > 0 ? v : 1;
    }
    return n;
}

template <int T, bool VEC>
static ds4_status mvd_go(const mvd_args &a, int64_t groups, ds4_error *err) {
    const size_t smem = (size_t)2 * a.R * a.S * sizeof(float);
    static size_t set_to = 48 * 1024;
    if (smem > set_to) {
        CU_CHECK(cudaFuncSetAttribute(k_mv_dense<T, VEC>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      (int)smem), err, "matvec dense shared memory");
        set_to = smem;
    }
    const dim3 grid((unsigned)((a.s.rows + a.R - 1) / a.R), (unsigned)groups);
    cu_launch(k_mv_dense<T, VEC>, grid, dim3(MVD_THREADS), smem, a);
    CU_CHECK(cudaGetLastError(), err, "matvec dense launch");
    return DS4_OK;
}

static int ilog2(int v) {
    int l = 0;
    while ((2 << l) <= v) l++;
    return l;
}

ds4_status cu_mvd_launch(int type, const mvd_shape &s, ds4_error *err) {
    int q8_terms, f_terms;
    mvd_config(&q8_terms, &f_terms);
    const bool q8 = type == CU_T_Q8_0;
    const int es = type == CU_T_F32 ? 4 : 2;
    mvd_args a;
    a.s = s;
    a.row_bytes = q8 ? s.cols / 32 * CU_Q8_0_BYTES : s.cols * es;
    a.n_terms = (int)(q8 ? s.cols / 32 : s.cols);
    const uintptr_t wa = (uintptr_t)s.w | (uintptr_t)(s.w2 ? s.w2 : s.w);
    /* Q8_0: 4-byte aligned rows (an even number of blocks) take 2-block units of 32-bit loads;
     * floats: 16-byte units when rows and x are 16-byte aligned */
    const bool vec = q8 ? (a.row_bytes & 3) == 0 && (wa & 3) == 0 && (s.w_stride & 3) == 0
                        : (a.row_bytes & 15) == 0 && (wa & 15) == 0 && (s.w_stride & 15) == 0 &&
                              ((uintptr_t)s.act & 15) == 0 && (s.act_stride & 15) == 0;
    const int vpu = q8 ? (vec ? 2 : 1) : !vec ? 1 : type == CU_T_F32 ? 4 : 8; /* terms per unit */
    /* Column units per chunk: a power of two <= 256 (one per loader and row slot); floats: a
     * multiple of 8 values (a chunk keeps the CPU lanes at column % 8). */
    const int64_t units = a.n_terms / vpu + (a.n_terms % vpu != 0);
    int cu = 1;
    while (cu < 256 && cu < units) cu *= 2;
    if (!q8) while (cu * vpu < 8) cu *= 2;
    const int terms_cap = q8 ? q8_terms : f_terms;
    while (cu > 1 && cu * vpu > terms_cap && (q8 || cu * vpu > 8)) cu /= 2;
    a.cu_log2 = ilog2(cu);
    a.C = cu * vpu;
    /* Rows per block: as many as the cap allows (Q8_0 <= 32 chain lanes, floats <= 4 rows of 8
     * lanes), fewer while the launch would not give every SM two blocks. */
    const int64_t groups = (int64_t)s.n_sel * (s.w2 ? 2 : 1);
    int R = terms_cap / a.C;
    const int rmax = q8 ? 32 : 4;
    if (R > rmax) R = rmax;
    if (R < 1) R = 1;
    while (R > 1 && groups * ((s.rows + R - 1) / R) < 2 * mvd_n_sm()) R /= 2;
    if (R > s.rows) R = (int)s.rows;
    a.R = R;
    /* conflict-free chain reads: Q8_0 an odd stride; floats 8 mod 32 (the 4 rows' lanes), a
     * multiple of 4 (the loaders' float4 stores) */
    a.S = q8 ? (a.C | 1) : a.C + 8;
    switch (type) {
    case CU_T_Q8_0: return vec ? mvd_go<CU_T_Q8_0, true>(a, groups, err) : mvd_go<CU_T_Q8_0, false>(a, groups, err);
    case CU_T_F32: return vec ? mvd_go<CU_T_F32, true>(a, groups, err) : mvd_go<CU_T_F32, false>(a, groups, err);
    case CU_T_F16: return vec ? mvd_go<CU_T_F16, true>(a, groups, err) : mvd_go<CU_T_F16, false>(a, groups, err);
    case CU_T_BF16: return vec ? mvd_go<CU_T_BF16, true>(a, groups, err) : mvd_go<CU_T_BF16, false>(a, groups, err);
    default:
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED, "cuda matvec: tensor type %d is not supported", type);
    }
}
