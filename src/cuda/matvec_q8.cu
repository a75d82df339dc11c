/*
 * cuda/matvec_q8.cu — the Q8_0 decode products (wq_a, wkv, wq_b, wo_a, wo_b, the shared
 * expert, the output head) streamed at the memory's speed, bit-identical to the CPU's
 * q_dot_q8_0 (issue #7; docs/ENGINE.md §3): row r's block terms (f16(d)·yd)·(float)isum added
 * one after another from block 0 (quants README §4.2).
 *
 * Why a second kernel: k_mv_q8w (matvec_dense.cu) reads its weights and activation records
 * with 32-bit loads at a 68- / 72-byte lane stride: each load instruction touches ~17 lines
 * for 128 useful bytes, so the L1 (not the memory) bounds it (~2.5-3 TB/s at Flash's mid
 * sizes). Here the weights go by 16-byte cp.async (a warp's instruction moves 512 contiguous
 * bytes) straight into a per-warp ring of NS stages in shared memory (NS stages of loads in
 * flight per warp, no register cost), each lane keeps the activation records of its columns
 * in registers for every row, and the terms are computed from shared memory. Needs rows of a
 * multiple of 8 blocks (272 bytes: 16-byte aligned) and at most 256 blocks, 16-byte aligned
 * weights and expert stride (every Flash shape; cu_mq8_takes says no otherwise).
 *
 * Layout. A warp owns row groups of R consecutive whole rows of one matrix (grid.y: the
 * group, an expert or the pair's second matrix, as matvec_dense.cu): gw, gw + W, .. (W: the
 * warps per matrix; one row group per warp unless the grid is capped). A stage is one row
 * group, R·nb·34 contiguous bytes; group i + NS is issued as soon as group i's terms are
 * computed. Lane l computes the terms of columns l, l + 32, .. of the group's rows into the
 * warp's tile [R][S]; after __syncwarp lane r < R adds row r's nb terms in block order
 * (mvd_chain, from 0.0f as q_dot_q8_0_ref) and writes y. No block barrier.
 * Must not: know the model.
 */
#include <stdlib.h>

#include "cuda_api.h"
#include "matvec_impl.cuh"

#define MQ8_WARPS 4
#define MQ8_MAX_NB 256 /* blocks per row the activation registers hold (8 per lane) */

struct mq8_args {
    mvd_shape s;
    int64_t row_bytes; /* nb · 34 */
    int64_t n_rg;      /* row groups per matrix: ceil(rows / R) */
    int nb;            /* blocks per row */
    int R, NS;         /* rows per warp (a stage), stages in flight */
    int S;             /* floats between tile rows (nb + 4: an odd number of 16-byte words) */
    int buf_bytes;     /* one stage: R · nb · 34 */
    int warp_bytes;    /* one warp's ring and tile */
};

__device__ __forceinline__ void mq8_cp16(uint32_t dst, const void *src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void mq8_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }

/* cp.async.wait_group takes an immediate: at most n groups of this thread still pending. */
__device__ __forceinline__ void mq8_wait(int n) {
    switch (n) {
    case 0: asm volatile("cp.async.wait_group 0;" ::: "memory"); break;
    case 1: asm volatile("cp.async.wait_group 1;" ::: "memory"); break;
    case 2: asm volatile("cp.async.wait_group 2;" ::: "memory"); break;
    case 3: asm volatile("cp.async.wait_group 3;" ::: "memory"); break;
    case 4: asm volatile("cp.async.wait_group 4;" ::: "memory"); break;
    case 5: asm volatile("cp.async.wait_group 5;" ::: "memory"); break;
    case 6: asm volatile("cp.async.wait_group 6;" ::: "memory"); break;
    default: asm volatile("cp.async.wait_group 7;" ::: "memory"); break;
    }
}

/* Row group i of this warp (gw + i·W: R whole rows, contiguous) into ring slot i % NS; one
 * commit group per call, empty past the last one, so that "group i landed" is always
 * wait_group(NS - 1) after NS + i commits. Rows past the matrix are not read. */
__device__ __forceinline__ void mq8_issue(const mq8_args &a, const uint8_t *w, int64_t gw, int64_t W,
                                          int64_t i, int64_t n_mine, uint32_t ring, int lane) {
    if (i < n_mine) {
        const int64_t r0 = (gw + i * W) * a.R;
        const int64_t nr = a.s.rows - r0 < a.R ? a.s.rows - r0 : a.R;
        const int n16 = (int)(nr * a.row_bytes / 16);
        const uint8_t *src = w + r0 * a.row_bytes;
        const uint32_t dst = ring + (uint32_t)(i % a.NS) * a.buf_bytes;
        for (int u = lane; u < n16; u += 32) mq8_cp16(dst + 16u * (uint32_t)u, src + 16 * (int64_t)u);
    }
    mq8_commit();
}

/* AJ = ceil(nb / 32) rounded up to a power of two: lane l holds the activation records of
 * columns l, l + 32, .. (< nb) in registers for every row it computes (no activation loads
 * per term: with them, the L1 was the bound, as in k_mv_q8w). */
template <int AJ>
__global__ void __launch_bounds__(32 * MQ8_WARPS) k_mv_q8s(mq8_args a) {
    cu_pdl_wait();
    extern __shared__ __align__(16) uint8_t mq8_smem[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t W = (int64_t)gridDim.x * MQ8_WARPS, gw = (int64_t)blockIdx.x * MQ8_WARPS + warp;
    if (gw >= a.n_rg) return; /* per warp: no block barrier below */
    int j = blockIdx.y;
    const uint8_t *w = a.s.w;
    float *y = a.s.y;
    if (j >= a.s.n_sel) { /* second matrix of a pair */
        j -= a.s.n_sel;
        w = a.s.w2;
        y = a.s.y2;
    }
    y += (int64_t)j * a.s.rows;
    const int64_t e = a.s.ids ? a.s.ids[j] : 0;
    if (e < 0 || e >= a.s.n_experts) { /* a corrupt expert id: NaN rows, nothing read */
        for (int64_t rg = gw; rg < a.n_rg; rg += W)
            for (int r = lane; r < a.R; r += 32)
                if (rg * a.R + r < a.s.rows) y[rg * a.R + r] = __int_as_float(0x7fc00000);
        return;
    }
    w += e * a.s.w_stride;
    uint8_t *mine = mq8_smem + warp * a.warp_bytes;
    float *tile = (float *)(mine + a.NS * a.buf_bytes);
    const uint32_t ring = (uint32_t)__cvta_generic_to_shared(mine);
    const int64_t n_mine = (a.n_rg - gw + W - 1) / W; /* row groups of this warp */
    for (int i = 0; i < a.NS; i++) mq8_issue(a, w, gw, W, i, n_mine, ring, lane);
    const uint8_t *act = a.s.act + j * a.s.act_stride;
    float yd[AJ];
    int aq[AJ][8];
#pragma unroll
    for (int jj = 0; jj < AJ; jj++) {
        const int c = lane + 32 * jj;
        const uint8_t *ab = act + (int64_t)(c < a.nb ? c : 0) * CU_Q8_0ACT_BYTES;
        yd[jj] = __ldg((const float *)ab);
#pragma unroll
        for (int q = 0; q < 8; q++) aq[jj][q] = __ldg((const int *)(ab + 4) + q);
    }
    for (int64_t i = 0; i < n_mine; i++) {
        mq8_wait(a.NS - 1);
        __syncwarp(); /* every lane's copies of group i visible to the warp */
        const int64_t r0 = (gw + i * W) * a.R;
        const int nr = (int)(a.s.rows - r0 < a.R ? a.s.rows - r0 : a.R);
        const uint8_t *buf = mine + (i % a.NS) * a.buf_bytes;
#pragma unroll
        for (int jj = 0; jj < AJ; jj++) {
            const int c = lane + 32 * jj;
            if (c >= a.nb) break;
            for (int r = 0; r < nr; r++) {
                uint32_t qw[8];
                const float dw = q8_0_load(buf + (r * a.nb + c) * CU_Q8_0_BYTES, qw);
                tile[r * a.S + c] = mvd_q8_term(dw, yd[jj], qw, aq[jj]);
            }
        }
        __syncwarp(); /* slot i % NS read by all: refill it; the tile is complete */
        mq8_issue(a, w, gw, W, i + a.NS, n_mine, ring, lane);
        if (lane < nr) y[r0 + lane] = mvd_chain(0.0f, tile + lane * a.S, a.nb);
        __syncwarp(); /* the chains have read the tile */
    }
}

static int mq8_env(const char *name, int dflt) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : dflt;
}

bool cu_mq8_takes(const mvd_shape &s) {
    const int64_t nb = s.cols / 32;
    const uintptr_t wa = (uintptr_t)s.w | (uintptr_t)(s.w2 ? s.w2 : s.w);
    return mq8_env("DS4_CUDA_MQ8", 0) == 1 && s.cols % 32 == 0 && nb % 8 == 0 && nb <= MQ8_MAX_NB &&
           (wa & 15) == 0 && (s.w_stride & 15) == 0 && ((uintptr_t)s.act & 3) == 0 && s.act_stride % 4 == 0;
}

/* The instantiation for rows of nb blocks (AJ = nb / 32 rounded up to a power of two). */
static void (*mq8_kernel(int nb))(mq8_args) {
    return nb > 128 ? k_mv_q8s<8> : nb > 64 ? k_mv_q8s<4> : nb > 32 ? k_mv_q8s<2> : k_mv_q8s<1>;
}

/* R rows per warp (a stage), NS stages in flight, the grid capped at WAVES waves of resident
 * blocks (0: one row group per warp). DS4_CUDA_MQ8_R / _NS / _WAVES force them (timing; cut
 * to what the shared memory holds). The rule is a guess from the H200 sweep of this kernel's
 * first form (activation loaded per term; docs/BENCHMARKS.md "Q8_0 decode products (h6,
 * session 5)"), whose best were 4.25 KiB stages (128 blocks), 2 in flight, one wave. */
ds4_status cu_mq8_launch(const mvd_shape &s, ds4_error *err) {
    const int nb = (int)(s.cols / 32);
    const int64_t groups = (int64_t)s.n_sel * (s.w2 ? 2 : 1);
    static int opt_in = 0; /* the device's most shared memory per block, allowed once */
    if (!opt_in) {
        int dev = 0, v = 0;
        cudaGetDevice(&dev);
        CU_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), err,
                 "matvec q8 stream shared memory");
        for (int n = 32; n <= MQ8_MAX_NB; n *= 2)
            CU_CHECK(cudaFuncSetAttribute(mq8_kernel(n), cudaFuncAttributeMaxDynamicSharedMemorySize, v), err,
                     "matvec q8 stream shared memory");
        opt_in = v;
    }
    void (*k)(mq8_args) = mq8_kernel(nb);
    int R = mq8_env("DS4_CUDA_MQ8_R", 0);
    if (R != 1 && R != 2 && R != 4 && R != 8) { /* stages of ~128 blocks (4.25 KiB) */
        R = 1;
        while (R < 8 && 2 * R * nb <= 128) R *= 2;
    }
    int NS = mq8_env("DS4_CUDA_MQ8_NS", 2);
    NS = NS < 1 ? 1 : NS > 8 ? 8 : NS;
    const int waves = mq8_env("DS4_CUDA_MQ8_WAVES", 1);
    mq8_args a = {};
    a.s = s;
    a.nb = nb;
    a.row_bytes = (int64_t)nb * CU_Q8_0_BYTES;
    a.S = nb + 4; /* nb % 8 == 0: an odd number of 16-byte words, conflict-free 128-bit chains */
    for (;;) { /* what fits the shared memory: fewer stages, then fewer rows */
        a.buf_bytes = R * nb * CU_Q8_0_BYTES;
        if ((size_t)MQ8_WARPS * (NS * a.buf_bytes + R * a.S * 4) <= (size_t)opt_in || (NS == 1 && R == 1)) break;
        if (NS > 1) NS--;
        else R /= 2;
    }
    a.R = R;
    a.n_rg = (s.rows + R - 1) / R;
    int64_t gx = (a.n_rg + MQ8_WARPS - 1) / MQ8_WARPS;
    if (waves > 0) {
        int occ = 0;
        const size_t smem0 = (size_t)MQ8_WARPS * (NS * a.buf_bytes + R * a.S * 4);
        CU_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, k, 32 * MQ8_WARPS, smem0), err,
                 "matvec q8 stream occupancy");
        const int64_t cap = ((int64_t)waves * (occ > 0 ? occ : 1) * cu_mvd_n_sm() + groups - 1) / groups;
        if (gx > cap) gx = cap;
    }
    /* no more ring slots than a warp has row groups */
    const int64_t mine = (a.n_rg + gx * MQ8_WARPS - 1) / (gx * MQ8_WARPS);
    if (NS > mine) NS = (int)mine;
    a.NS = NS;
    a.warp_bytes = NS * a.buf_bytes + R * a.S * 4;
    const size_t smem = (size_t)MQ8_WARPS * a.warp_bytes;
    cu_launch(k, dim3((unsigned)gx, (unsigned)groups), dim3(32 * MQ8_WARPS), smem, a);
    CU_CHECK(cudaGetLastError(), err, "matvec q8 stream launch");
    return DS4_OK;
}
