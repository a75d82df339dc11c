/*
 * cuda/matvec_dense.cu — the decode products of dense weights (Q8_0, F32, F16, BF16: wq_a,
 * wkv, wq_b, wo_a, wo_b, the shared expert, the output head, the compressor, the router, the
 * indexer's projections) for one token, bit-identical to the CPU's single-row kernels
 * (format/quant_dot.c and their AVX2 twins; issue #7, docs/ENGINE.md §3).
 *
 * The CPU's order: Q8_0 adds the block terms (f16(d)·yd)·(float)isum one after another from
 * block 0 (q_dot_q8_0_ref = q_dot_q8_0_avx2); F32/F16/BF16 keep 8 lane sums, lane i%8 adds the
 * rounded product w_i·x_i (no FMA), then ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)).
 * The terms (block terms, products) are independent: the same bits wherever computed, so any
 * thread computes them with coalesced loads into shared memory, and only their additions are
 * ordered: one lane per row (Q8_0) or per (row, CPU lane) (floats) adds them in the CPU's order.
 *   - Q8_0 rows with an even number of blocks (every Flash shape): k_mv_q8w, a warp per R rows,
 *     no block barrier (below).
 *   - Floats, and Q8_0 rows of an odd number of blocks: k_mv_dense, a block of 288 threads
 *     takes R rows: warps 1..8 (the loaders) compute chunk k's terms into shared memory while
 *     warp 0 (the chain warp) adds chunk k-1's, two buffers, one __syncthreads per chunk. A
 *     loader keeps one column unit per chunk and walks the rows, so its activation (a Q8_0
 *     record, or x) is loaded once per chunk and reused for every row.
 * Speed (H200, docs/BENCHMARKS.md "Dense decode products in the CPU's order (h1, session 4)"):
 * Q8_0 within 0.9-1.15x the time of the old lane-order kernels (matvec.cu, kept behind
 * DS4_CUDA_MV_V1=1 for before/after timing), the float ones 1.5-2.5x slower: each CPU lane's
 * 512+ dependent adds per row bound them; decode -11% in all.
 * Must not: know the model.
 */
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
    int T;       /* floats: floats between the CPU lanes' chains of a row */
    int n_terms; /* terms per row: Q8_0 blocks, or cols */
};

/* This block's rows: weights, activation, outputs; nr rows (<= R). false for a corrupt
 * expert id: the rows get NaN and nothing is read (the chain warp writes them). */
struct mvd_tile {
    const uint8_t *w, *act;
    float *y;
    int nr;
};

__device__ __forceinline__ bool mvd_locate(const mvd_args &a, int64_t r0, mvd_tile *t) {
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
 * 16-byte aligned), else one value. A loader keeps column unit cu of the chunk for rows slot,
 * slot + slots, .. (at most MVD_FR: R <= 4 rows); mvd_f_load fetches chunk k's weights, which
 * the kernel issues one chunk ahead (before the previous chunk's products and the barrier),
 * mvd_f_store writes the rounded products w·x (no FMA) of value v of the chunk to
 * cs[row·S + (v % 8)·T + v / 8]: each CPU lane's chain contiguous (128-bit chain loads; T a
 * multiple of 4, an odd one of 4 for conflict-free reads by the 8 lanes of a row). */
#define MVD_FR 4
template <int T, bool VEC>
__device__ __forceinline__ void mvd_f_load(const mvd_args &a, const mvd_tile &t, int k, uint4 wv[MVD_FR]) {
    constexpr int VPU = !VEC ? 1 : T == CU_T_F32 ? 4 : 8, ES = T == CU_T_F32 ? 4 : 2;
    const int lt = threadIdx.x - 32, cu = lt & ((1 << a.cu_log2) - 1), slots = MVD_LOADERS >> a.cu_log2;
    const int64_t col = (int64_t)k * a.C + cu * VPU;
    if (cu * VPU >= a.C || col >= a.n_terms) return;
    const uint8_t *wb = t.w + col * ES;
#pragma unroll
    for (int i = 0; i < MVD_FR; i++) {
        const int rr = (lt >> a.cu_log2) + i * slots;
        if (rr >= t.nr) break;
        const uint8_t *p = wb + rr * a.row_bytes;
        if (VEC) wv[i] = __ldg((const uint4 *)p);
        else wv[i].x = ES == 4 ? __ldg((const uint32_t *)p) : (uint32_t)__ldg((const uint16_t *)p);
    }
}

template <int T, bool VEC>
__device__ __forceinline__ void mvd_f_store(const mvd_args &a, const mvd_tile &t, int k,
                                            const uint4 wv[MVD_FR], float *cs) {
    constexpr int VPU = !VEC ? 1 : T == CU_T_F32 ? 4 : 8;
    const int lt = threadIdx.x - 32, cu = lt & ((1 << a.cu_log2) - 1), slots = MVD_LOADERS >> a.cu_log2;
    const int col = cu * VPU;
    if (col >= a.C || (int64_t)k * a.C + col >= a.n_terms) return;
    const float *x = (const float *)t.act + (int64_t)k * a.C + col;
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
#pragma unroll
    for (int i = 0; i < MVD_FR; i++) {
        const int rr = (lt >> a.cu_log2) + i * slots;
        if (rr >= t.nr) break;
        const uint32_t w4[4] = {wv[i].x, wv[i].y, wv[i].z, wv[i].w};
        float pr[VPU];
#pragma unroll
        for (int j = 0; j < VPU; j++) {
            float f;
            if (T == CU_T_F32) f = __uint_as_float(w4[j]);
            else {
                const uint32_t h = VEC ? (w4[j / 2] >> (16 * (j & 1))) & 0xFFFFu : w4[0];
                f = T == CU_T_F16 ? __half2float(__ushort_as_half((unsigned short)h)) : __uint_as_float(h << 16);
            }
            pr[j] = __fmul_rn(f, xv[j]);
        }
        /* CPU lane (col + j) % 8 of the row, position (col + j) / 8 in its chain */
        float *dst = cs + rr * a.S + (col >> 3);
#pragma unroll
        for (int j = 0; j < VPU; j++) dst[((col + j) & 7) * a.T + (j >> 3)] = pr[j];
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
    const bool ok = mvd_locate(a, (int64_t)blockIdx.x * a.R, &t);
    const int lane = threadIdx.x & 31;
    if (!ok) {
        if (threadIdx.x < t.nr) t.y[threadIdx.x] = __int_as_float(0x7fc00000);
        return; /* uniform over the block */
    }
    const int n_chunks = (a.n_terms + a.C - 1) / a.C, buf = a.R * a.S;
    /* chain lane: row cr, CPU lane cl (floats), or row = lane (Q8_0) */
    const int cr = F ? lane >> 3 : lane, cl = F ? lane & 7 : 0;
    float acc = 0.0f;
    uint4 wv[MVD_FR], wn[MVD_FR]; /* floats: this chunk's weights and the next's */
    if (F && threadIdx.x >= 32) mvd_f_load<T, VEC>(a, t, 0, wv);
    for (int k = 0; k <= n_chunks; k++) {
        if (threadIdx.x >= 32) {
            if (k < n_chunks) {
                const int64_t c0 = (int64_t)k * a.C;
                const int cb = (int)(a.n_terms - c0 < a.C ? a.n_terms - c0 : a.C);
                float *cs = mvd_smem + (k & 1) * buf;
                if (F) {
                    if (k + 1 < n_chunks) mvd_f_load<T, VEC>(a, t, k + 1, wn);
                    mvd_f_store<T, VEC>(a, t, k, wv, cs);
#pragma unroll
                    for (int i = 0; i < MVD_FR; i++) wv[i] = wn[i];
                } else {
                    mvd_q8_terms<VEC>(a, t, c0, cb, cs);
                }
            }
        } else if (k > 0 && cr < t.nr) {
            const int64_t c0 = (int64_t)(k - 1) * a.C;
            const int cb = (int)(a.n_terms - c0 < a.C ? a.n_terms - c0 : a.C);
            const float *c = mvd_smem + ((k - 1) & 1) * buf + cr * a.S;
            if (F) acc = mvd_chain(acc, c + cl * a.T, cb / 8 + (cl < cb % 8));
            else acc = mvd_chain(acc, c, cb);
        }
        __syncthreads();
    }
    if (threadIdx.x >= 32) return;
    if (F) {
        acc = cu_lanes8_qdot(acc);
        if (cl == 0 && cr < t.nr) t.y[cr] = acc;
    } else if (lane < t.nr) {
        t.y[lane] = acc;
    }
}

static int ilog2(int v) {
    int l = 0;
    while ((2 << l) <= v) l++;
    return l;
}

/* ---- Q8_0 rows of 4-byte aligned rows: one warp per R rows, no block barrier ----
 * Each warp owns R consecutive rows. A step covers P' pair columns (2-block units, P' <= 32 a
 * power of two): lane (rs, pc) takes pair column pc of rows rs, rs + g, .. (g = 32 / P'
 * row slots, RPL rows per lane), its activation pair loaded once per step, and writes the 2·RPL
 * terms into the warp's tile [R][2P' + 1]; after __syncwarp lane r < R adds row r's 2P' terms
 * in block order to its running sum (the CPU's order across steps too). The next step's
 * weights are loaded before the adds, so a warp's loads stay in flight while it sums. */
#define MQW_WARPS 4
#define MQW_TILE 384 /* floats per warp tile: R·S with R = RPL·g <= 32, RPL <= 4 */

template <int RPL>
__device__ __forceinline__ void mqw_load(const mvd_tile &t, int64_t row_bytes, int pcol, int P,
                                         int rs, int g, uint32_t w[RPL][17]) {
#pragma unroll
    for (int i = 0; i < RPL; i++) {
        const int row = rs + g * i;
        if (row >= t.nr || pcol >= P) continue;
        const uint32_t *bp = (const uint32_t *)(t.w + row * row_bytes + (int64_t)pcol * 2 * CU_Q8_0_BYTES);
#pragma unroll
        for (int j = 0; j < 17; j++) w[i][j] = __ldg(bp + j);
    }
}

template <int RPL>
__global__ void __launch_bounds__(32 * MQW_WARPS) k_mv_q8w(mvd_args a) {
    cu_pdl_wait();
    __shared__ __align__(16) float tiles[MQW_WARPS][MQW_TILE];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    mvd_tile t;
    const bool ok = mvd_locate(a, (int64_t)blockIdx.x * MQW_WARPS * a.R + (int64_t)warp * a.R, &t);
    if (t.nr <= 0) return; /* past the last row (per warp: no block barrier below) */
    if (!ok) {
        if (lane < t.nr) t.y[lane] = __int_as_float(0x7fc00000);
        return;
    }
    float *tile = tiles[warp];
    const int P = a.n_terms / 2, Pp = 1 << a.cu_log2, g = 32 >> a.cu_log2;
    const int pc = lane & (Pp - 1), rs = lane >> a.cu_log2, steps = (P + Pp - 1) / Pp;
    uint32_t w[RPL][17];
    mqw_load<RPL>(t, a.row_bytes, pc, P, rs, g, w);
    float acc = 0.0f;
    for (int st = 0; st < steps; st++) {
        const int pcol = st * Pp + pc;
        if (pcol < P) {
            const uint8_t *ab = t.act + (int64_t)pcol * 2 * CU_Q8_0ACT_BYTES;
            float yd[2];
            int aq[2][8];
#pragma unroll
            for (int u = 0; u < 2; u++) {
                yd[u] = __ldg((const float *)(ab + u * CU_Q8_0ACT_BYTES));
#pragma unroll
                for (int j = 0; j < 8; j++) aq[u][j] = __ldg((const int *)(ab + u * CU_Q8_0ACT_BYTES + 4) + j);
            }
#pragma unroll
            for (int i = 0; i < RPL; i++) {
                const int row = rs + g * i;
                if (row >= t.nr) continue;
                uint32_t q[8];
#pragma unroll
                for (int j = 0; j < 8; j++) q[j] = __funnelshift_r(w[i][j], w[i][j + 1], 16);
                float *dst = tile + row * a.S + 2 * pc;
                dst[0] = mvd_q8_term(__half2float(__ushort_as_half((unsigned short)(w[i][0] & 0xFFFFu))),
                                     yd[0], q, aq[0]);
                dst[1] = mvd_q8_term(__half2float(__ushort_as_half((unsigned short)(w[i][8] >> 16))),
                                     yd[1], &w[i][9], aq[1]);
            }
        }
        if (st + 1 < steps) mqw_load<RPL>(t, a.row_bytes, pcol + Pp, P, rs, g, w);
        __syncwarp();
        if (lane < t.nr) {
            const int cb = 2 * (P - st * Pp < Pp ? P - st * Pp : Pp);
            acc = mvd_chain(acc, tile + lane * a.S, cb);
        }
        __syncwarp();
    }
    if (lane < t.nr) t.y[lane] = acc;
}

/* Launches k_mv_q8w for 4-byte aligned Q8_0 rows (an even number of blocks). */
static ds4_status mqw_go(mvd_args a, int64_t groups, ds4_error *err) {
    const int P = a.n_terms / 2;
    int Pp = 1;
    while (Pp < 32 && 2 * Pp <= P) Pp *= 2;
    const int g = 32 / Pp;
    /* rows per lane: 4 (H200 op bench, 06:25 UTC: 1 and 2 were slower at the Flash shapes,
     * fewer warps with more loads in flight each won), fewer where R = rpl·g would pass 32 */
    int rpl = 4;
    while (rpl > 1 && rpl * g > 32) rpl /= 2;
    a.R = rpl * g > 32 ? 32 : rpl * g;
    a.cu_log2 = ilog2(Pp);
    a.S = (2 * Pp + 4 + 3) & ~3; /* 16-byte rows, an odd multiple of 4 floats from P' = 4 */
    const int64_t per_block = (int64_t)MQW_WARPS * a.R;
    const dim3 grid((unsigned)((a.s.rows + per_block - 1) / per_block), (unsigned)groups);
    if (rpl == 4) cu_launch(k_mv_q8w<4>, grid, dim3(32 * MQW_WARPS), 0, a);
    else if (rpl == 2) cu_launch(k_mv_q8w<2>, grid, dim3(32 * MQW_WARPS), 0, a);
    else cu_launch(k_mv_q8w<1>, grid, dim3(32 * MQW_WARPS), 0, a);
    CU_CHECK(cudaGetLastError(), err, "matvec q8 launch");
    return DS4_OK;
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

ds4_status cu_mvd_launch(int type, const mvd_shape &s, ds4_error *err) {
    /* the most terms per chunk buffer (rows x chunk): 8 KiB of Q8_0 terms, 16 KiB of float
     * products (H200 op bench: 8192 float terms, 4 rows of 2048, was no faster) */
    const int q8_terms = 2048, f_terms = 4096;
    const bool q8 = type == CU_T_Q8_0;
    const int es = type == CU_T_F32 ? 4 : 2;
    mvd_args a = {};
    a.s = s;
    a.row_bytes = q8 ? s.cols / 32 * CU_Q8_0_BYTES : s.cols * es;
    a.n_terms = (int)(q8 ? s.cols / 32 : s.cols);
    const uintptr_t wa = (uintptr_t)s.w | (uintptr_t)(s.w2 ? s.w2 : s.w);
    /* Q8_0: 4-byte aligned rows (an even number of blocks) take 2-block units of 32-bit loads;
     * floats: 16-byte units when rows and x are 16-byte aligned */
    const bool vec = q8 ? (a.row_bytes & 3) == 0 && (wa & 3) == 0 && (s.w_stride & 3) == 0
                        : (a.row_bytes & 15) == 0 && (wa & 15) == 0 && (s.w_stride & 15) == 0 &&
                              ((uintptr_t)s.act & 15) == 0 && (s.act_stride & 15) == 0;
    if (q8 && vec) return mqw_go(a, (int64_t)s.n_sel * (s.w2 ? 2 : 1), err);
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
    a.T = (a.C / 8 + 3) / 4 * 4;
    if (a.T % 8 == 0) a.T += 4;
    a.S = q8 ? ((a.C + 3) / 4 * 4) | 4 : 8 * a.T;
    switch (type) {
    case CU_T_Q8_0: return vec ? mvd_go<CU_T_Q8_0, true>(a, groups, err) : mvd_go<CU_T_Q8_0, false>(a, groups, err);
    case CU_T_F32: return vec ? mvd_go<CU_T_F32, true>(a, groups, err) : mvd_go<CU_T_F32, false>(a, groups, err);
    case CU_T_F16: return vec ? mvd_go<CU_T_F16, true>(a, groups, err) : mvd_go<CU_T_F16, false>(a, groups, err);
    case CU_T_BF16: return vec ? mvd_go<CU_T_BF16, true>(a, groups, err) : mvd_go<CU_T_BF16, false>(a, groups, err);
    default:
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED, "cuda matvec: tensor type %d is not supported", type);
    }
}
