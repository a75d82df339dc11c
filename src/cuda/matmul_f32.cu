/*
 * cuda/matmul_f32.cu — the prefill product of the float weight types (F32, F16, BF16) with f32
 * activations, bit-identical to cpu_matmul: the CPU dot (format/quant_dot.c q_dot_f32_ref /
 * q_dot_f16_ref and their AVX2 twins) keeps 8 lanes, lane i%8 adds w·x (product rounded, then
 * sum rounded: no FMA), and combines them as ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)).
 *
 * In the q2 model these are the dense F16 products (GGUF_LAYOUT §5.3): the hyper-connection fns
 * (24 rows x 16384 columns, twice a layer), the compressors' kv/gate (512-1024 x 4096), the
 * router (256 x 4096), the indexer's (64-256 x 4096); tiny-v4's f32 model uses them everywhere.
 * Exactness forces two FP32 instructions per multiply-add (no FMA, no tensor cores), so the
 * kernel is built to issue them back to back:
 *   - one thread per (lane l, RT rows, TT tokens): RT·TT independent chains, each walking its
 *     lane's columns k ≡ l (mod 8) in order, so the CPU's order holds by construction; a weight
 *     value is reused for TT tokens and an x value for RT rows from registers;
 *   - a block = 8 warps: warp w owns rows w, w+8, .. (all its threads read the same weight row:
 *     one shared-memory wavefront per load), its 4 groups of 8 lanes own tokens tg, tg+4, ..
 *     (x rows 72 floats apart: the 4 groups hit 4 disjoint sets of 8 banks);
 *   - weights (raw F32/F16/BF16 bytes) and x come by 16-byte cp.async in chunks of 64 columns,
 *     two stages, so the next chunk is in flight while this one is summed; pieces past the
 *     row end, the last row or the last token are zero-filled by the copy itself (src-size).
 *     Zero padding adds +0.0f·x or w·+0.0f = ±0.0f, which leaves a lane unchanged (a lane is
 *     never -0.0f: it starts at +0.0f and a zero sum in round-to-nearest is +0.0f);
 *   - the 8 lanes of an output sit in 8 adjacent threads: shuffles xor 4, 2, 1 give the CPU's
 *     pairwise combination.
 * Tile shapes (RT, TT) by rows: few rows (the HC fns) get more token groups and blocks, many rows
 * the largest register tile. Misaligned weights or x (tests; never the model) take plain loads.
 * Must not: know tensor names or the model.
 */
#include "cuda_api.h"
#include "matmul_impl.cuh"

#define MF_BK 64           /* columns per chunk (a multiple of 8: lanes stay column % 8) */
#define MF_PX (MF_BK + 8)  /* x row pitch in floats (72 = 8 mod 32 banks) */
#define MF_THREADS 256

struct mf_args {
    const uint8_t *w;
    int64_t rows, cols;
    uint64_t row_bytes, e_stride;
    const int32_t *d_off;
    int n_expert;
    const float *x;
    int64_t ldx, n_tok;
    float *y;
    int64_t ldy;
    int w_vec, x_vec; /* 16-byte aligned rows: cp.async; else plain loads */
};

template <int TY> struct mf_el;
template <> struct mf_el<CU_T_F32> {
    static constexpr int bytes = 4;
    static __device__ __forceinline__ float get(const uint8_t *s, int i) {
        return ((const float *)s)[i];
    }
};
template <> struct mf_el<CU_T_F16> {
    static constexpr int bytes = 2;
    static __device__ __forceinline__ float get(const uint8_t *s, int i) {
        return __half2float(__ushort_as_half(((const uint16_t *)s)[i]));
    }
};
template <> struct mf_el<CU_T_BF16> {
    static constexpr int bytes = 2;
    static __device__ __forceinline__ float get(const uint8_t *s, int i) {
        return __uint_as_float((uint32_t)((const uint16_t *)s)[i] << 16);
    }
};

__device__ __forceinline__ void mf_cp16(void *dst, const void *src, int n_src) {
    unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src), "r"(n_src));
}
__device__ __forceinline__ void mf_commit() { asm volatile("cp.async.commit_group;"); }
__device__ __forceinline__ void mf_wait1() { asm volatile("cp.async.wait_group 1;" ::: "memory"); }

/* Columns [k0, k0 + MF_BK) of BR weight rows from r0 and BT x rows of the tile into a stage. */
template <int TY, int BR, int BT>
__device__ __forceinline__ void mf_load(const mf_args &a, const uint8_t *wb, int64_t r0,
                                        const mm_tile &tl, int64_t k0, uint8_t *ws, float *xs) {
    constexpr int ES = mf_el<TY>::bytes, WPR = MF_BK * ES / 16; /* 16-byte pieces per row */
    int tid = threadIdx.x;
    for (int p = tid; p < BR * WPR; p += MF_THREADS) {
        int r = p / WPR, q = p % WPR;
        int64_t col = k0 + (int64_t)q * (16 / ES);
        bool rv = r0 + r < a.rows;
        uint8_t *dst = ws + p * 16;
        const uint8_t *src = wb + (uint64_t)(rv ? r0 + r : 0) * a.row_bytes;
        if (a.w_vec) {
            int64_t left = rv && col < a.cols ? (a.cols - col) * ES : 0;
            mf_cp16(dst, left ? src + col * ES : wb, left < 16 ? (int)left : 16);
        } else {
            for (int e = 0; e < 16 / ES; e++) {
                bool ok = rv && col + e < a.cols;
                if (ES == 4) ((uint32_t *)dst)[e] = ok ? ((const uint32_t *)src)[col + e] : 0u;
                else ((uint16_t *)dst)[e] = ok ? ((const uint16_t *)src)[col + e] : (uint16_t)0;
            }
        }
    }
    for (int p = tid; p < BT * (MF_BK / 4); p += MF_THREADS) {
        int t = p / (MF_BK / 4), q = p % (MF_BK / 4);
        int64_t col = k0 + 4 * q, tok = tl.t0 + t;
        bool tv = tok < tl.t1;
        float *dst = xs + t * MF_PX + 4 * q;
        const float *src = a.x + (tv ? tok : tl.t0) * a.ldx;
        if (a.x_vec) {
            int64_t left = tv && col < a.cols ? (a.cols - col) * 4 : 0;
            mf_cp16(dst, left ? src + col : a.x, left < 16 ? (int)left : 16);
        } else {
            for (int e = 0; e < 4; e++) dst[e] = tv && col + e < a.cols ? src[col + e] : 0.0f;
        }
    }
}

template <int TY, int RT, int TT>
__global__ void __launch_bounds__(MF_THREADS) k_mf(mf_args a) {
    cu_pdl_wait();
    constexpr int BR = 8 * RT, BT = 4 * TT, ES = mf_el<TY>::bytes;
    constexpr int WST = BR * MF_BK * ES, XST = BT * MF_PX * 4; /* stage bytes, multiples of 16 */
    extern __shared__ __align__(16) uint8_t mf_smem[];
    mm_tile tl;
    if (!mm_find_tile(a.d_off, a.n_expert, a.n_tok, BT, blockIdx.y, &tl)) return;
    const uint8_t *wb = a.w + (uint64_t)tl.e * a.e_stride;
    int64_t r0 = (int64_t)blockIdx.x * BR;
    int tid = threadIdx.x, l = tid & 7, tg = (tid >> 3) & 3, rg = tid >> 5;
    /* stage s: weights at s·WST, x at 2·WST + s·XST (offsets, not a pointer array: no stack) */
    float *xs0 = (float *)(mf_smem + 2 * WST);
    float acc[RT][TT];
#pragma unroll
    for (int i = 0; i < RT; i++)
#pragma unroll
        for (int j = 0; j < TT; j++) acc[i][j] = 0.0f;
    int64_t nch = (a.cols + MF_BK - 1) / MF_BK;
    mf_load<TY, BR, BT>(a, wb, r0, tl, 0, mf_smem, xs0);
    mf_commit();
    for (int64_t c = 0; c < nch; c++) {
        int s = (int)(c & 1);
        if (c + 1 < nch)
            mf_load<TY, BR, BT>(a, wb, r0, tl, (c + 1) * MF_BK, mf_smem + (s ^ 1) * WST,
                                xs0 + (s ^ 1) * (XST / 4));
        mf_commit(); /* possibly empty: wait_group 1 then always means "chunk c has landed" */
        mf_wait1();
        __syncthreads();
        const uint8_t *ws = mf_smem + s * WST;
        const float *xs = xs0 + s * (XST / 4) + tg * MF_PX;
        /* chunk c starts at a multiple of 8: column 8m + l of it is lane l's, in order */
#pragma unroll
        for (int m = 0; m < MF_BK / 8; m++) {
            int k = 8 * m + l;
            float wv[RT], xv[TT];
#pragma unroll
            for (int i = 0; i < RT; i++) wv[i] = mf_el<TY>::get(ws + (rg + 8 * i) * MF_BK * ES, k);
#pragma unroll
            for (int j = 0; j < TT; j++) xv[j] = xs[4 * j * MF_PX + k];
#pragma unroll
            for (int i = 0; i < RT; i++)
#pragma unroll
                for (int j = 0; j < TT; j++)
                    acc[i][j] = __fadd_rn(acc[i][j], __fmul_rn(wv[i], xv[j]));
        }
        __syncthreads(); /* the stage is refilled by the next iteration's copies */
    }
    /* ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)): pairs at distance 4, then 2, then 1 */
#pragma unroll
    for (int i = 0; i < RT; i++)
#pragma unroll
        for (int j = 0; j < TT; j++) {
            float v = cu_lanes8_qdot(acc[i][j]);
            int64_t o = r0 + rg + 8 * i, t = tl.t0 + tg + 4 * j;
            if (l == 0 && o < a.rows && t < tl.t1) a.y[t * a.ldy + o] = v;
        }
}

/* The tile shapes (rows x tokens per thread). Forced by cuda_matmul_float_tile (bench). */
static int mf_force_rt, mf_force_tt;

extern "C" void cuda_matmul_float_tile(int rt, int tt) {
    mf_force_rt = rt;
    mf_force_tt = tt;
}

template <int TY, int RT, int TT>
static ds4_status mf_run(const mf_args &a, ds4_error *err) {
    constexpr int BR = 8 * RT, BT = 4 * TT;
    size_t smem = 2 * ((size_t)BR * MF_BK * mf_el<TY>::bytes + (size_t)BT * MF_PX * 4);
    int64_t tiles = (a.n_tok + BT - 1) / BT + (a.d_off ? a.n_expert : 0);
    if (tiles > 65535)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_matmul: %lld token tiles (at most 65535)",
                          (long long)tiles);
    static bool smem_set; /* once per instantiation (above the 48 KiB default) */
    if (smem > 48 * 1024 && !smem_set) {
        cudaError_t e = cudaFuncSetAttribute(k_mf<TY, RT, TT>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        CU_CHECK(e, err, "matmul float smem");
        smem_set = true;
    }
    dim3 grid((unsigned)((a.rows + BR - 1) / BR), (unsigned)tiles);
    cu_launch(k_mf<TY, RT, TT>, grid, MF_THREADS, smem, a);
    CU_CHECK(cudaGetLastError(), err, "matmul float launch");
    return DS4_OK;
}

template <int TY> static ds4_status mf_pick(const mf_args &a, ds4_error *err) {
    int rt = mf_force_rt, tt = mf_force_tt;
    if (!rt) {
        /* Measured on an H200 at 2048 tokens (docs/BENCHMARKS.md "prefill: F32 products"):
         * few rows: one row block, 16 tokens per block (HC fn 24 rows: 3x4 201 us, 3x2 242,
         * 4x4 249); 64 rows: 4x8 92 us, 4x4 95, 2x8 102; 256 and 1024 rows: 8x8 (64
         * chains per thread) 246 / 953 us, 4x8 285 / 1078. */
        int64_t r = a.rows;
        rt = r <= 8 ? 1 : r <= 16 ? 2 : r <= 24 ? 3 : r <= 32 ? 4 : r < 128 ? 4 : 8;
        tt = r <= 32 ? 4 : 8;
    }
#define MF_CASE(R, T) \
    if (rt == R && tt == T) return mf_run<TY, R, T>(a, err)
    MF_CASE(1, 4); MF_CASE(2, 4); MF_CASE(3, 4); MF_CASE(4, 4);
    MF_CASE(3, 2); MF_CASE(4, 8); MF_CASE(8, 8); MF_CASE(2, 8);
#undef MF_CASE
    return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_matmul: no float tile %d x %d", rt, tt);
}

ds4_status mm_launch_float(const mm_args *m, ds4_error *err) {
    mf_args a;
    a.w = m->w;
    a.rows = m->rows;
    a.cols = m->cols;
    a.row_bytes = m->row_bytes;
    a.e_stride = m->expert_stride;
    a.d_off = m->d_off;
    a.n_expert = m->n_expert;
    a.x = m->x;
    a.ldx = m->ldx;
    a.n_tok = m->n_tok;
    a.y = m->y;
    a.ldy = m->ldy;
    a.w_vec = ((uintptr_t)m->w % 16 == 0 && m->row_bytes % 16 == 0 &&
               (!m->d_off || m->expert_stride % 16 == 0));
    a.x_vec = ((uintptr_t)m->x % 16 == 0 && m->ldx % 4 == 0);
    if (m->type == CU_T_F32) return mf_pick<CU_T_F32>(a, err);
    if (m->type == CU_T_F16) return mf_pick<CU_T_F16>(a, err);
    return mf_pick<CU_T_BF16>(a, err);
}
