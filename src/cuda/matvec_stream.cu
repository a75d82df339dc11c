/*
 * cuda/matvec_stream.cu — the Q8_0 decode matvec of 512+ rows (issue #7: wq_b, wo_a, wo_b,
 * wq_a, wkv, the shared expert) as one wave of long-lived blocks that stream row tiles through
 * shared memory, bit-identical to the CPU's single-row dot.
 *
 * Why (Nsight Compute, H200, docs/BENCHMARKS.md "Decode matvecs and attention (h2)"): one warp
 * per row straight from global memory (matvec.cu) issues ~45 instructions per 34-byte block
 * and its blocks live for one row each; wq_b (32768 x 1024) ran at 2.4 TB/s with the schedulers
 * issuing 75% of cycles, wo_b (4096 x 8192) at 2.5 TB/s with half a wave of blocks. Here each
 * block of 256 threads owns every gridDim.x-th tile of R consecutive rows (a contiguous byte
 * range: rows are contiguous within a matrix or expert), copied by 16-byte cp.async into a ring
 * of stages, STAGES-1 tiles in flight while the block computes the oldest.
 *
 * Numbers: the CPU's order, not just its per-block steps: a row is Σ_b (d_b·yd_b)·isum_b added
 * one block after another from 0 (format/quant_avx2.c q_dot_q8_0_avx2 = quant_dot.c). Warps
 * 0..6 compute tile k's block terms into shared memory (exact integer sums, the CPU's two
 * rounded products) while warp 7 adds tile k-1's terms in block order, a lane per row, so the
 * serial adds hide behind the next tile's terms.
 *
 * Tuning (env, read once, for the op bench): DS4_CUDA_MVS="stage_kib,stages,blocks_per_sm".
 */
#include <stdio.h>
#include <stdlib.h>

#include "cuda_api.h"
#include "matvec_impl.cuh"

#define MVS_THREADS 256
#define MVS_TERM_THREADS (MVS_THREADS - 32) /* warps 0..6: block terms; warp 7: row sums */
#define MVS_MAX_STAGES 6

struct mvs_args {
    mvs_shape s;
    int row_bytes, nb, nbp; /* bytes and Q8_0 blocks per row; row stride of the terms (odd) */
    int R, stage_bytes, tiles_per_group, n_tiles;
};

__device__ __forceinline__ void mvs_cp16(uint8_t *dst, const uint8_t *src) {
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d), "l"(src));
}
__device__ __forceinline__ void mvs_commit() { asm volatile("cp.async.commit_group;"); }
template <int N> __device__ __forceinline__ void mvs_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

/* Tile t: its rows' weights, activation and outputs; ok false for a corrupt expert id (the rows
 * get NaN and nothing is read, as in matvec.cu). */
struct mvs_tile {
    const uint8_t *w, *act;
    float *y;
    int nr;
    bool ok;
};

__device__ __forceinline__ mvs_tile mvs_locate(const mvs_args &a, int t) {
    mvs_tile r;
    const unsigned g = a.tiles_per_group == a.n_tiles ? 0u : (unsigned)t / (unsigned)a.tiles_per_group;
    const int r0 = (t - (int)g * a.tiles_per_group) * a.R;
    int j = (int)g;
    const uint8_t *w = a.s.w;
    float *y = a.s.y;
    if (j >= a.s.n_sel) { /* second matrix of a pair */
        j -= a.s.n_sel;
        w = a.s.w2;
        y = a.s.y2;
    }
    const int64_t e = a.s.ids ? a.s.ids[j] : 0;
    r.nr = (int)(a.s.rows - r0 < a.R ? a.s.rows - r0 : a.R);
    r.ok = e >= 0 && e < a.s.n_experts;
    r.w = w + (r.ok ? e : 0) * a.s.w_stride + (int64_t)r0 * a.row_bytes;
    r.act = a.s.act + j * a.s.act_stride;
    r.y = y + (int64_t)j * a.s.rows + r0;
    return r;
}

/* Every thread: start the copy of tile t into stage (nothing past the last tile). */
__device__ __forceinline__ void mvs_issue(const mvs_args &a, int t, uint8_t *stage) {
    if (t >= a.n_tiles) return;
    const mvs_tile r = mvs_locate(a, t);
    if (!r.ok) return;
    const int n = r.nr * a.row_bytes;
    for (int o = threadIdx.x * 16; o < n; o += MVS_THREADS * 16) mvs_cp16(stage + o, r.w + o);
}

/* Warps 0..6: term (d_b·yd_b)·isum_b of every block of the tile into cs [row][nbp]. */
__device__ __forceinline__ void mvs_terms(const mvs_args &a, const mvs_tile &r, const uint8_t *st,
                                          float *cs) {
    int row = 0, b = threadIdx.x; /* unit u = row·nb + b, advanced without a division */
    while (b >= a.nb) { b -= a.nb; row++; }
    for (; row < r.nr;) {
        uint32_t q[8];
        const float dw = q8_0_load(st + row * a.row_bytes + b * CU_Q8_0_BYTES, q);
        const uint8_t *ab = r.act + b * CU_Q8_0ACT_BYTES;
        const int *aq = (const int *)(ab + 4);
        int sum = 0;
#pragma unroll
        for (int j = 0; j < 8; j++) sum = __dp4a((int)q[j], __ldg(aq + j), sum);
        cs[row * a.nbp + b] = __fmul_rn(__fmul_rn(dw, __ldg((const float *)ab)), (float)sum);
        b += MVS_TERM_THREADS;
        while (b >= a.nb) { b -= a.nb; row++; }
    }
}

/* Warp 7: the rows' sums, terms added in block order from 0 (lane = row). */
__device__ __forceinline__ void mvs_sums(const mvs_args &a, int t, const float *cs) {
    const mvs_tile r = mvs_locate(a, t);
    for (int row = threadIdx.x & 31; row < r.nr; row += 32) {
        float acc = 0.0f;
        if (r.ok) {
            const float *c = cs + row * a.nbp;
#pragma unroll 8
            for (int b = 0; b < a.nb; b++) acc = __fadd_rn(acc, c[b]);
        } else {
            acc = __int_as_float(0x7fc00000);
        }
        r.y[row] = acc;
    }
}

template <int STAGES>
__global__ void __launch_bounds__(MVS_THREADS) k_mv_stream(mvs_args a) {
    cu_pdl_wait();
    extern __shared__ __align__(16) uint8_t mvs_smem[];
    float *cs0 = (float *)(mvs_smem + STAGES * a.stage_bytes); /* two buffers of R x nbp terms */
    const int t0 = blockIdx.x, step = gridDim.x;
    const bool summer = threadIdx.x >= MVS_TERM_THREADS;
#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        mvs_issue(a, t0 + s * step, mvs_smem + s * a.stage_bytes);
        mvs_commit();
    }
    int k = 0;
    for (; t0 + k * step < a.n_tiles; k++) {
        mvs_wait<STAGES - 2>();
        __syncthreads(); /* tile k landed; stage k-1 and terms buffer (k+1)&1 are free again */
        mvs_issue(a, t0 + (k + STAGES - 1) * step, mvs_smem + ((k + STAGES - 1) % STAGES) * a.stage_bytes);
        mvs_commit();
        if (summer) {
            if (k > 0) mvs_sums(a, t0 + (k - 1) * step, cs0 + ((k - 1) & 1) * a.R * a.nbp);
        } else {
            const mvs_tile r = mvs_locate(a, t0 + k * step);
            if (r.ok) mvs_terms(a, r, mvs_smem + (k % STAGES) * a.stage_bytes, cs0 + (k & 1) * a.R * a.nbp);
        }
    }
    mvs_wait<0>(); /* no copy may outlive the block (the last issues were empty) */
    __syncthreads();
    if (summer && k > 0) mvs_sums(a, t0 + (k - 1) * step, cs0 + ((k - 1) & 1) * a.R * a.nbp);
}

/* Tuning, read once: stage bytes target, stages, blocks per SM (0: as many as fit). */
struct mvs_cfg {
    int stage_kib, stages, bps, n_sm, smem_optin;
};

static const mvs_cfg *mvs_config(void) {
    static mvs_cfg c = {0, 0, 0, 0, 0};
    if (c.n_sm) return &c;
    c.stage_kib = 32;
    c.stages = 3;
    c.bps = 0;
    const char *e = getenv("DS4_CUDA_MVS");
    if (e) {
        int k = 0, s = 0, b = 0;
        if (sscanf(e, "%d,%d,%d", &k, &s, &b) >= 2 && k >= 1 && k <= 96 && s >= 2 && s <= MVS_MAX_STAGES) {
            c.stage_kib = k;
            c.stages = s;
            c.bps = b > 0 && b <= 8 ? b : 0;
        }
    }
    int dev = 0, n = 0, sm = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev);
    cudaDeviceGetAttribute(&sm, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    c.smem_optin = sm;
    c.n_sm = n > 0 ? n : 1;
    return &c;
}

template <int S>
static ds4_status mvs_launch(const mvs_args &a, int smem, int grid, ds4_error *err) {
    static int set_to = 0; /* largest opt-in size set so far for this instantiation */
    if (smem > 48 * 1024 && smem > set_to) {
        CU_CHECK(cudaFuncSetAttribute(k_mv_stream<S>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem),
                 err, "matvec stream shared memory");
        set_to = smem;
    }
    cu_launch(k_mv_stream<S>, dim3((unsigned)grid), dim3(MVS_THREADS), (size_t)smem, a);
    CU_CHECK(cudaGetLastError(), err, "matvec stream launch");
    return DS4_OK;
}

int cu_mv_stream(int type, const mvs_shape &s, ds4_status *st, ds4_error *err) {
    if (type != CU_T_Q8_0 || s.cols % 32 || s.cols > (1 << 20) || s.rows > (1 << 24)) return 0;
    const mvs_cfg *c = mvs_config();
    const int64_t row_bytes = s.cols / 32 * CU_Q8_0_BYTES, nb = s.cols / 32, nbp = nb | 1;
    const uintptr_t wa = (uintptr_t)s.w | (uintptr_t)(s.w2 ? s.w2 : s.w);
    if (row_bytes % 16 || (wa & 15) || (s.w_stride & 15) || ((uintptr_t)s.act & 3) || (s.act_stride & 3))
        return 0;
    const int64_t groups = (int64_t)s.n_sel * (s.w2 ? 2 : 1);
    /* Rows per tile near the stage target, fewer when the tiles would not give every SM two
     * (small products: one tile loads while the other is summed). */
    int64_t R = (int64_t)c->stage_kib * 1024 / row_bytes;
    if (R < 1) R = 1;
    while (R > 1 && groups * ((s.rows + R - 1) / R) < 2 * c->n_sm) R = (R + 1) / 2;
    if (R > s.rows) R = s.rows;
    /* Shared memory: the stages, then two buffers of the tile's block terms. */
#define MVS_SMEM(S, R) ((int64_t)(S) * (R) * row_bytes + 2 * (int64_t)(R) * nbp * 4)
    int stages = c->stages;
    while (stages > 2 && MVS_SMEM(stages, R) > c->smem_optin) stages--;
    while (R > 1 && MVS_SMEM(stages, R) > c->smem_optin) R = (R + 1) / 2;
    if (MVS_SMEM(stages, R) > c->smem_optin) return 0;
    const int smem = (int)MVS_SMEM(stages, R);
#undef MVS_SMEM
    const int64_t tpg = (s.rows + R - 1) / R;
    if (groups * tpg > (1 << 30)) return 0;
    mvs_args a;
    a.s = s;
    a.row_bytes = (int)row_bytes;
    a.nb = (int)nb;
    a.nbp = (int)nbp;
    a.R = (int)R;
    a.stage_bytes = (int)(R * row_bytes);
    a.tiles_per_group = (int)tpg;
    a.n_tiles = (int)(groups * tpg);
    /* One wave: as many blocks per SM as the shared memory (and 2048 threads) allow. */
    int bps = (c->smem_optin + 1024) / (smem + 1024);
    if (bps > 2048 / MVS_THREADS) bps = 2048 / MVS_THREADS;
    if (c->bps && c->bps < bps) bps = c->bps;
    if (bps < 1) bps = 1;
    int64_t grid = (int64_t)c->n_sm * bps;
    if (grid > a.n_tiles) grid = a.n_tiles;
    switch (stages) {
    case 2: *st = mvs_launch<2>(a, smem, (int)grid, err); break;
    case 3: *st = mvs_launch<3>(a, smem, (int)grid, err); break;
    case 4: *st = mvs_launch<4>(a, smem, (int)grid, err); break;
    case 5: *st = mvs_launch<5>(a, smem, (int)grid, err); break;
    default: *st = mvs_launch<6>(a, smem, (int)grid, err); break;
    }
    return 1;
}
