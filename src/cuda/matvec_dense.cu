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
 *   - Floats of 512 rows or more (compressor pairs, idx_wq_b): k_mv_fw, k_mv_q8w's structure
 *     for floats (a warp per R rows, U steps of loads in flight per lane, the products
 *     transposed through the warp's tile; below).
 *   - Smaller float products (router, idx_proj, HC fns), and Q8_0 rows of an odd number of
 *     blocks: k_mv_dense, a block of 288 threads
 *     takes R rows: warps 1..8 (the loaders) compute chunk k's terms into shared memory while
 *     warp 0 (the chain warp) adds chunk k-1's, two buffers, one __syncthreads per chunk. A
 *     loader keeps one column unit per chunk and walks the rows, so its activation (a Q8_0
 *     record, or x) is loaded once per chunk and reused for every row.
 * Speed (H200, docs/BENCHMARKS.md "Dense decode products in the CPU's order (h1, session 4)"):
 * Q8_0 within 0.9-1.15x the time of the old lane-order kernels (matvec.cu, kept behind
 * DS4_CUDA_MV_V1=1 for before/after timing). Floats: k_mv_fw (session 5) takes the compressor
 * pairs 18.4 -> 11.7 us and idx_wq_b 17.7 -> 8.7 us ("Float decode products in the CPU's order,
 * warp form"); DS4_CUDA_MVF_WARP=0 gives k_mv_dense for every float product, =1 k_mv_fw for
 * every one it can take.
 * Must not: know the model.
 */
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

/* ---- Floats of 512 rows or more: one warp per R rows, no block barrier ----
 * k_mv_q8w's structure for F32/F16/BF16 rows (issue #7: k_mv_dense's loader/chain split keeps
 * one chunk of loads in flight per loader and pays a __syncthreads per chunk). A unit is 8
 * consecutive values of a row (16 bytes of F16/BF16, 32 of F32): value j of unit u is column
 * 8u + j, so it belongs to CPU lane j, at position u of that lane's chain. R in {1, 2, 4} rows
 * per warp, G = 4 / R groups of 8 lanes per row: lane = (row r, group g, c), gc = 8g + c. Step
 * s of a row is its units 8G·s .. 8G·s + 8G - 1; lane gc takes unit 8G·s + gc (consecutive
 * lanes, consecutive 16 bytes). Each lane keeps U steps of weights in flight in U register
 * slots: slot s % U is refilled with step s + U as soon as step s's products are stored.
 * A round is 4 steps: each lane computes its units' 8 rounded products (F16 / BF16 widened
 * exactly, __fmul_rn: the CPU's product, no FMA; x through __ldg) and stores product j of the
 * round's unit t = 8G·k + gc at tile[r·RS + j·JS + t] (the transpose: CPU lane j's chain of the
 * round lies contiguous, in unit order); after __syncwarp the chain lanes (g = 0, c = the CPU
 * lane) add the round's 32G values left to right (mvd_chain) onto their running sums: the
 * CPU's order within and across rounds. Then the CPU's lane combine (cu_lanes8_qdot) over the 8
 * chain lanes of a row, lanes 8G·r .. 8G·r + 7.
 * Banks: JS = 32G + 4 (== 4 mod 32: the 8 chain lanes of a 128-bit read phase start in 8
 * distinct 4-bank quads), RS = 8·JS + 8G (== 8G mod 32: product j's store by the 32 lanes
 * hits bank (lane + const) mod 32). The tile does not grow with U. Needs cols % 8 == 0 and
 * 16-byte aligned rows and x (checked at launch; else k_mv_dense). */
#define MFW_WARPS 4

template <int T, int R>
struct mfw_cfg {
    static constexpr int G = 4 / R, SU = 8 * G, RU = 4 * SU; /* units per step, per round */
    static constexpr int JS = RU + 4, RS = 8 * JS + 8 * G;
    static constexpr int NV = T == CU_T_F32 ? 2 : 1; /* 16-byte words per unit */
};

template <int NV>
__device__ __forceinline__ void mfw_load(const uint8_t *wr, int64_t u, int64_t nu, uint4 w[NV]) {
    if (u >= nu) return;
#pragma unroll
    for (int v = 0; v < NV; v++) w[v] = __ldg((const uint4 *)(wr + u * 16 * NV) + v);
}

template <int T, int R, int U>
__global__ void __launch_bounds__(32 * MFW_WARPS) k_mv_fw(mvd_args a) {
    cu_pdl_wait();
    typedef mfw_cfg<T, R> C;
    __shared__ __align__(16) float tiles[MFW_WARPS][R * C::RS];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    mvd_tile t;
    const bool ok = mvd_locate(a, ((int64_t)blockIdx.x * MFW_WARPS + warp) * R, &t);
    if (t.nr <= 0) return; /* past the last row (per warp: no block barrier below) */
    if (!ok) {
        if (lane < t.nr) t.y[lane] = __int_as_float(0x7fc00000);
        return;
    }
    float *tile = tiles[warp];
    const int r = lane / C::SU, gc = lane % C::SU, c = lane & 7;
    const bool live = r < t.nr;
    const int64_t nu = a.n_terms / 8, n_steps = (nu + C::SU - 1) / C::SU, nb = (n_steps + U - 1) / U;
    const uint8_t *wr = t.w + (int64_t)(live ? r : 0) * a.row_bytes;
    const float *x = (const float *)t.act;
    uint4 w[U][C::NV];
    if (live) {
#pragma unroll
        for (int k = 0; k < U; k++) mfw_load<C::NV>(wr, (int64_t)k * C::SU + gc, nu, w[k]);
    }
    float acc = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
#pragma unroll
        for (int q = 0; q < U / 4; q++) {
            const int64_t s0 = b * U + q * 4; /* the round's first step (warp-uniform) */
            if (s0 >= n_steps) break;
            if (live) {
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    const int64_t u = (s0 + k) * C::SU + gc;
                    if (u < nu) {
                        const uint4 *wk = w[4 * q + k];
                        const uint32_t wv[8] = {wk[0].x, wk[0].y, wk[0].z, wk[0].w,
                                                wk[C::NV - 1].x, wk[C::NV - 1].y, wk[C::NV - 1].z, wk[C::NV - 1].w};
                        const float4 x0 = __ldg((const float4 *)(x + 8 * u)), x1 = __ldg((const float4 *)(x + 8 * u) + 1);
                        const float xs[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
                        float *dst = tile + r * C::RS + k * C::SU + gc;
#pragma unroll
                        for (int j = 0; j < 8; j++) {
                            float f;
                            if (T == CU_T_F32) f = __uint_as_float(wv[j]);
                            else {
                                const uint32_t h = (wv[j / 2] >> (16 * (j & 1))) & 0xFFFFu;
                                f = T == CU_T_F16 ? __half2float(__ushort_as_half((unsigned short)h))
                                                  : __uint_as_float(h << 16);
                            }
                            dst[j * C::JS] = __fmul_rn(f, xs[j]);
                        }
                    }
                    mfw_load<C::NV>(wr, u + (int64_t)U * C::SU, nu, w[4 * q + k]); /* step s0 + k + U */
                }
            }
            __syncwarp();
            if (live && gc < 8) {
                const int64_t left = nu - s0 * C::SU;
                acc = mvd_chain(acc, tile + r * C::RS + c * C::JS, left < C::RU ? (int)left : C::RU);
            }
            __syncwarp();
        }
    }
    acc = cu_lanes8_qdot(acc); /* every lane; row r's result in lane 8G·r */
    if (live && gc == 0) t.y[r] = acc;
}

/* R rows per warp and U steps in flight per lane: DS4_CUDA_MVF_R / _U when set (timing), else
 * the launch's warps: R = 4 halved while it has fewer than 8 warps per SM (rows / R), U = 4 from
 * 16 warps per SM, 8 from 4, else 16 (F32: at most 8), so that a small product still keeps
 * ~32 KiB of loads in flight per SM. Unmeasured: the next GPU session picks by timing. */
template <int T, int R>
static void mfw_go_r(mvd_args a, int64_t groups, int u) {
    a.R = R;
    const int64_t per_block = (int64_t)MFW_WARPS * R;
    const dim3 grid((unsigned)((a.s.rows + per_block - 1) / per_block), (unsigned)groups);
    const dim3 block(32 * MFW_WARPS);
    if (u == 16 && T != CU_T_F32) cu_launch(k_mv_fw<T, R, T == CU_T_F32 ? 8 : 16>, grid, block, 0, a);
    else if (u >= 8) cu_launch(k_mv_fw<T, R, 8>, grid, block, 0, a);
    else cu_launch(k_mv_fw<T, R, 4>, grid, block, 0, a);
}

template <int T>
static ds4_status mfw_go(const mvd_args &a, int64_t groups, int r, int u, ds4_error *err) {
    if (r == 1) mfw_go_r<T, 1>(a, groups, u);
    else if (r == 2) mfw_go_r<T, 2>(a, groups, u);
    else mfw_go_r<T, 4>(a, groups, u);
    CU_CHECK(cudaGetLastError(), err, "matvec float warp launch");
    return DS4_OK;
}

/* Whether k_mv_fw takes this product, and its R and U. DS4_CUDA_MVF_WARP (0 never, 1 always),
 * DS4_CUDA_MVF_R / _U (forced R, U) are read per call like DS4_CUDA_MV_V1: decode calls happen
 * once, at graph capture. */
static bool mfw_pick(int type, const mvd_shape &s, int64_t groups, int *r, int *u) {
    const char *on = getenv("DS4_CUDA_MVF_WARP"), *er = getenv("DS4_CUDA_MVF_R"), *eu = getenv("DS4_CUDA_MVF_U");
    const int force = on ? atoi(on) : -1; /* 0: never, 1: always, unset: by size */
    if (force == 0) return false;
    /* H200 sweep (docs/BENCHMARKS.md "Float decode products in the CPU's order, warp form"):
     * under 512 rows a launch (router 256, idx_proj 64, HC fn 24 rows x 4096-16384 columns)
     * is bound by its chains' length, and k_mv_dense is faster (5.8 vs 7.8 us for the router) */
    if (force != 1 && groups * s.rows < 512) return false;
    const int64_t sm = mvd_n_sm();
    const int fr = er ? atoi(er) : 0, fu = eu ? atoi(eu) : 0;
    /* rows per warp: fewer while the launch has under 16 warps per SM; steps in flight: more
     * the fewer warps there are to hide the loads (the sweep's best within 3%) */
    int rr = 4;
    while (rr > 1 && groups * ((s.rows + rr - 1) / rr) < 16 * sm) rr /= 2;
    if (fr == 1 || fr == 2 || fr == 4) rr = fr;
    const int64_t warps = groups * ((s.rows + rr - 1) / rr);
    int uu = warps >= 8 * sm ? 4 : warps >= 4 * sm ? 8 : 16;
    if (fu == 4 || fu == 8 || fu == 16) uu = fu;
    if (type == CU_T_F32 && uu > 8) uu = 8;
    *r = rr;
    *u = uu;
    return true;
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
    int fr = 4, fu = 4;
    if (!q8 && vec && s.cols % 8 == 0 && mfw_pick(type, s, (int64_t)s.n_sel * (s.w2 ? 2 : 1), &fr, &fu)) {
        const int64_t groups = (int64_t)s.n_sel * (s.w2 ? 2 : 1);
        if (type == CU_T_F32) return mfw_go<CU_T_F32>(a, groups, fr, fu, err);
        if (type == CU_T_F16) return mfw_go<CU_T_F16>(a, groups, fr, fu, err);
        if (type == CU_T_BF16) return mfw_go<CU_T_BF16>(a, groups, fr, fu, err);
    }
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
