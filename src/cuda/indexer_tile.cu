/*
 * cuda/indexer_tile.cu — the indexer's fast kernels at long context (issue #7; MODEL_MATH §8):
 * the scores of 32 rows x all heads per block with the rows held in registers, and a one-block
 * top-k whose keys stay in registers. Called by indexer.cu's dispatcher, which keeps the first
 * kernels (DS4_CUDA_IDX_V1=1) and the shapes these do not take.
 *
 * Scores: s_r = Σ_h w_h·relu(q_h·e_r), heads in order, each dot in cpu_dot_f32's order (eight
 * accumulators a_k over the elements i ≡ k mod 8, then ((a0+a4)+(a1+a5))+((a2+a6)+(a3+a7))).
 * Two lanes hold two rows, each lane the elements of 4 of the 8 accumulators of both; the
 * warp's lanes read one of two adjacent query float4s (a shared-memory broadcast, no bank
 * conflicts; the first kernel's lane groups read 4 heads' rows at stride 128 floats, 4-way
 * conflicts), each serving two rows. The 4 warps of a block take a quarter of the heads each;
 * the first warp adds the other warps' products (shared memory) after its own, in head order:
 * bit-identical to model/indexer.c.
 *
 * Top-k: an exact radix select (8 + 12 + 12 bits of the order-preserving key) over keys read
 * once into registers, warp w owning rows [w·32·KPT, (w+1)·32·KPT) in 32-row steps, then the
 * ordered compaction by ballots: rows above the cut, and the first `rem` rows equal to it
 * (lower rows win ties, MODEL_MATH §17 #2), ascending.
 * Must not: prepare the queries (indexer_prep.cu) or choose between kernels (indexer.cu).
 */
#include "cuda_api.h"
#include "indexer_impl.cuh"
#include "ops.cuh"

#define IDX_T_ROWS 32  /* rows per block: one per lane */
#define IDX_T_WARPS 4  /* warps per block, each a contiguous quarter of the heads */
#define IDX_T_TOK 4    /* tokens per block (prefill chunks): the rows stay in registers */
#define IDX_T_ID 128   /* MODEL_MATH §0 index_head_dim: the one row length compiled */

/* 16-byte copy global -> shared without a register round trip (sm_80+): the 32 KB of queries
 * are all in flight at once instead of one dependent load per loop step. */
__device__ __forceinline__ void idx_cp16(void *dst, const void *src) {
    unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d), "l"(src) : "memory");
}
__device__ __forceinline__ void idx_cp_wait(void) {
    asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;" ::: "memory");
}

/* grid (row tiles, token groups), 128 threads, 3 blocks per SM (rows take 128 registers).
 * Shared: q [ih][ID] as float4, w [ih], products [ih][32].
 *
 * Lanes 2p and 2p+1 hold rows r0+2p and r0+2p+1, each lane the elements of accumulators
 * 4·half .. 4·half+3 (half = lane & 1): a query float4 read from shared memory serves two rows,
 * and a warp-wide read touches two adjacent 16-byte words (a shared-memory broadcast costs the
 * same wavefronts whether one row or two use it). The pair then swaps partial sums so that
 * lane l ends with row r0+l's dot, added in cpu_dot_f32's tree order. */
template <int ID>
__global__ void __launch_bounds__(IDX_T_WARPS * 32, 3)
    k_idx_score_tile(const float *__restrict__ q, const float *__restrict__ wts,
                     const float *__restrict__ rows, int64_t pos0, int ih, int n_tok, int topk,
                     int64_t ld, float *__restrict__ scores, const int64_t *dpos) {
    cu_pdl_wait();
    if (dpos) pos0 = *dpos; /* cuda_indexer_topk_dpos */
    extern __shared__ float4 sh_tile[];
    float4 *sq = sh_tile;
    float *sw = (float *)(sh_tile + (size_t)ih * (ID / 4)), *sp = sw + ih;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, half = lane & 1;
    const int t0 = blockIdx.y * IDX_T_TOK, t1 = min(t0 + IDX_T_TOK, n_tok);
    const int64_t nc_hi = (pos0 + t1) / 4; /* rows complete by the block's last token */
    const int64_t r0 = (int64_t)blockIdx.x * IDX_T_ROWS, r = r0 + lane;
    if (nc_hi <= topk || r0 >= nc_hi) return; /* the whole block */
    const int hpw = (ih + IDX_T_WARPS - 1) / IDX_T_WARPS;
    const int h0 = warp * hpw, h1 = min(h0 + hpw, ih);
    bool have_q = false; /* the first token's queries are requested before the rows load */
    if (t0 < t1 && (pos0 + t0 + 1) / 4 > topk && r0 < (pos0 + t0 + 1) / 4) {
        const float4 *qt = (const float4 *)(q + (int64_t)t0 * ih * ID);
        for (int i = threadIdx.x; i < ih * (ID / 4); i += blockDim.x) idx_cp16(sq + i, qt + i);
        have_q = true;
    }
    /* Rows past the end are replaced by row r0 (complete, so readable); not written. */
    const int64_t ra = r0 + (lane & ~1), rb = ra + 1;
    const float4 *pa = (const float4 *)(rows + (ra < nc_hi ? ra : r0) * ID) + half;
    const float4 *pb = (const float4 *)(rows + (rb < nc_hi ? rb : r0) * ID) + half;
    float4 ea[ID / 8], eb[ID / 8]; /* elements 8j + 4·half + 0..3 of rows ra, rb */
#pragma unroll
    for (int j = 0; j < ID / 8; j++) {
        ea[j] = pa[2 * j];
        eb[j] = pb[2 * j];
    }
    for (int t = t0; t < t1; t++) {
        const int64_t n_c = (pos0 + t + 1) / 4;
        if (n_c <= topk || r0 >= n_c) continue; /* the same for every thread of the block */
        if (!have_q) {
            __syncthreads(); /* the previous token's queries and products are read */
            const float4 *qt = (const float4 *)(q + (int64_t)t * ih * ID);
            for (int i = threadIdx.x; i < ih * (ID / 4); i += blockDim.x) idx_cp16(sq + i, qt + i);
        }
        have_q = false;
        for (int i = threadIdx.x; i < ih; i += blockDim.x) sw[i] = wts[(int64_t)t * ih + i];
        idx_cp_wait();
        __syncthreads();
        float s = 0.0f;
        for (int h = h0; h < h1; h++) {
            const float4 *qh = sq + h * (ID / 4) + half;
            float a[4] = {0.0f, 0.0f, 0.0f, 0.0f}, b[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
            for (int j = 0; j < ID / 8; j++) {
                const float4 v = qh[2 * j];
                a[0] = __fadd_rn(a[0], __fmul_rn(v.x, ea[j].x));
                a[1] = __fadd_rn(a[1], __fmul_rn(v.y, ea[j].y));
                a[2] = __fadd_rn(a[2], __fmul_rn(v.z, ea[j].z));
                a[3] = __fadd_rn(a[3], __fmul_rn(v.w, ea[j].w));
                b[0] = __fadd_rn(b[0], __fmul_rn(v.x, eb[j].x));
                b[1] = __fadd_rn(b[1], __fmul_rn(v.y, eb[j].y));
                b[2] = __fadd_rn(b[2], __fmul_rn(v.z, eb[j].z));
                b[3] = __fadd_rn(b[3], __fmul_rn(v.w, eb[j].w));
            }
            /* Accumulators k (half 0: k = 0..3, half 1: k = 4..7). Half 0 forms
             * (a0+a4)+(a1+a5) of both rows, half 1 (a2+a6)+(a3+a7); then half 0 finishes row
             * ra, half 1 row rb: ((a0+a4)+(a1+a5))+((a2+a6)+(a3+a7)) as cpu_dot_f32. */
            const float x0 = __shfl_xor_sync(0xffffffffu, half ? a[0] : a[2], 1);
            const float x1 = __shfl_xor_sync(0xffffffffu, half ? a[1] : a[3], 1);
            const float x2 = __shfl_xor_sync(0xffffffffu, half ? b[0] : b[2], 1);
            const float x3 = __shfl_xor_sync(0xffffffffu, half ? b[1] : b[3], 1);
            float pa_, pb_; /* half 0: y of ra, rb; half 1: z of ra, rb */
            if (half == 0) {
                pa_ = __fadd_rn(__fadd_rn(a[0], x0), __fadd_rn(a[1], x1));
                pb_ = __fadd_rn(__fadd_rn(b[0], x2), __fadd_rn(b[1], x3));
            } else {
                pa_ = __fadd_rn(__fadd_rn(x0, a[2]), __fadd_rn(x1, a[3]));
                pb_ = __fadd_rn(__fadd_rn(x2, b[2]), __fadd_rn(x3, b[3]));
            }
            const float o = __shfl_xor_sync(0xffffffffu, half ? pa_ : pb_, 1);
            const float d = half ? __fadd_rn(o, pb_) : __fadd_rn(pa_, o);
            const float p = __fmul_rn(sw[h], d > 0.0f ? d : 0.0f);
            if (warp == 0) s = __fadd_rn(s, p);
            else sp[h * IDX_T_ROWS + lane] = p;
        }
        __syncthreads();
        if (warp == 0) {
            for (int h = h1; h < ih; h++) s = __fadd_rn(s, sp[h * IDX_T_ROWS + lane]);
            if (r < n_c) scores[(int64_t)t * ld + r] = s;
        }
    }
}

int idx_tile_fits(const float *d_q, const float *d_rows, int64_t ih, int64_t id) {
    /* ih <= 128: at most 82 KB of shared memory, within every sm_80+ card's opt-in. */
    return id == IDX_T_ID && ih >= 1 && ih <= 128 && ((uintptr_t)d_q & 15) == 0 &&
           ((uintptr_t)d_rows & 15) == 0;
}

cudaError_t idx_score_tile_launch(const float *d_q, const float *d_w, const float *d_rows,
                                  int64_t n_tok, int64_t pos0, const int64_t *d_pos0, int64_t ih,
                                  int64_t topk, int64_t ld, float *d_scores) {
    const int64_t max_c = (pos0 + n_tok) / 4;
    size_t smem = (size_t)ih * IDX_T_ID * 4 + (size_t)ih * 4 + (size_t)ih * IDX_T_ROWS * 4;
    if (smem > 48 * 1024) {
        cudaError_t e = cudaFuncSetAttribute(k_idx_score_tile<IDX_T_ID>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess) return e;
    }
    dim3 grid((unsigned)((max_c + IDX_T_ROWS - 1) / IDX_T_ROWS),
              (unsigned)((n_tok + IDX_T_TOK - 1) / IDX_T_TOK));
    return cu_launch(k_idx_score_tile<IDX_T_ID>, grid, IDX_T_WARPS * 32, smem, d_q, d_w, d_rows,
                     pos0, (int)ih, (int)n_tok, (int)topk, ld, d_scores, d_pos0);
}

/* ---- one-block top-k, keys in registers ---- */

/* One radix digit (bits [SHIFT, SHIFT+WIDTH)) among the keys whose bits above it equal
 * *prefix: the digit of the need-th largest is appended to *prefix and *need becomes its rank
 * among the keys of that digit. Every thread calls (1024). The first digit (sign and exponent
 * bits) is hot, the scores sharing a few binades: each warp counts into a private histogram
 * (hist: 32 x 256 counters; between warps no atomic meets another), one atomic per distinct bin
 * of a warp step, and the 32 histograms are added after. Later digits see only the keys of the
 * cut bin, spread over 4096 bins: plain shared atomics. */
template <int KPT, int SHIFT, int WIDTH, bool FIRST>
__device__ __forceinline__ void idx_sel_digit(const uint32_t (&k)[KPT], int wbase, int n_c,
                                              uint32_t *prefix, int *need, unsigned *hist,
                                              unsigned long long *s_warp, uint32_t *s_prefix,
                                              int *s_need) {
    constexpr int nb = 1 << WIDTH, per = nb > 1024 ? nb / 1024 : 1, owners = nb / per;
    constexpr uint32_t dmask = (uint32_t)nb - 1u;
    constexpr uint32_t mask = SHIFT + WIDTH >= 32 ? 0u : ~0u << (SHIFT + WIDTH < 32 ? SHIFT + WIDTH : 0);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const uint32_t pre = *prefix;
    if (FIRST) {
        unsigned *wh = hist + warp * nb;
        for (int i = lane; i < nb; i += 32) wh[i] = 0;
        __syncwarp();
#pragma unroll
        for (int j = 0; j < KPT; j++) {
            const int bin = wbase + j * 32 + lane < n_c ? (int)((k[j] >> SHIFT) & dmask) : -1;
            const unsigned peers = __match_any_sync(0xffffffffu, bin);
            if (bin >= 0 && lane == __ffs(peers) - 1) atomicAdd(&wh[bin], (unsigned)__popc(peers));
        }
    } else {
        for (int i = threadIdx.x; i < nb; i += blockDim.x) hist[i] = 0;
        __syncthreads();
#pragma unroll
        for (int j = 0; j < KPT; j++) {
            const int r = wbase + j * 32 + lane;
            if (r < n_c && (k[j] & mask) == pre) atomicAdd(&hist[(k[j] >> SHIFT) & dmask], 1u);
        }
    }
    __syncthreads();
    /* Thread i < owners owns bins nb-1-per·i downwards (descending keys); the bins above it are
     * scanned. */
    unsigned c[per], tot = 0;
#pragma unroll
    for (int jj = 0; jj < per; jj++) {
        c[jj] = 0;
        if ((int)threadIdx.x < owners) {
            const int b = nb - 1 - per * (int)threadIdx.x - jj;
            if (FIRST)
                for (int w = 0; w < 32; w++) c[jj] += hist[w * nb + b];
            else
                c[jj] = hist[b];
        }
        tot += c[jj];
    }
    int above = (int)idx_block_excl(tot, s_warp);
    const int nd = *need;
    if (above < nd && nd <= above + (int)tot) {
        int b = nb - 1 - per * (int)threadIdx.x;
#pragma unroll
        for (int jj = 0; jj < per; jj++) {
            if (above + (int)c[jj] >= nd) break;
            above += (int)c[jj];
            b--;
        }
        *s_prefix = pre | ((uint32_t)b << SHIFT);
        *s_need = nd - above;
    }
    __syncthreads();
    *prefix = *s_prefix;
    *need = *s_need;
}

/* One block of 1024 threads per token; n_c <= 1024·KPT rows. */
template <int KPT>
__global__ void __launch_bounds__(1024)
    k_idx_select1(const float *scores, int64_t pos0, int topk, int64_t ld, int32_t *isel,
                  int32_t *n_isel, const int64_t *dpos) {
    cu_pdl_wait();
    if (dpos) pos0 = *dpos;
    __shared__ unsigned hist[32 * 256], s_cnt[64]; /* 32 warps x 256 bins, or 4096 bins */
    __shared__ unsigned long long s_warp[32];
    __shared__ uint32_t s_prefix;
    __shared__ int s_need;
    const int t = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int n_c = (int)((pos0 + t + 1) / 4);
    int32_t *sel = isel + (int64_t)t * topk;
    if (n_c <= topk) {
        for (int r = threadIdx.x; r < n_c; r += blockDim.x) sel[r] = r;
        if (threadIdx.x == 0) n_isel[t] = n_c;
        return;
    }
    const float *sc = scores + (int64_t)t * ld;
    const int wbase = warp * 32 * KPT;
    uint32_t k[KPT];
    idx_keys(sc, wbase + lane, 32, n_c, k);
    uint32_t prefix = 0;
    int need = topk;
    /* 8 + 12 + 12 bits (MODEL_MATH §8: the k-th score exactly, ties counted) */
    idx_sel_digit<KPT, 24, 8, true>(k, wbase, n_c, &prefix, &need, hist, s_warp, &s_prefix, &s_need);
    idx_sel_digit<KPT, 12, 12, false>(k, wbase, n_c, &prefix, &need, hist, s_warp, &s_prefix, &s_need);
    idx_sel_digit<KPT, 0, 12, false>(k, wbase, n_c, &prefix, &need, hist, s_warp, &s_prefix, &s_need);
    const uint32_t T = prefix; /* the k-th key; `rem` rows equal to it are kept */
    const int rem = need;
    /* Rows above T / equal to T per warp, then an exclusive scan over the 32 warps. */
    unsigned gt = 0, eq = 0;
#pragma unroll
    for (int j = 0; j < KPT; j++) {
        const int ok = wbase + j * 32 + lane < n_c;
        gt += __popc(__ballot_sync(0xffffffffu, ok && k[j] > T));
        eq += __popc(__ballot_sync(0xffffffffu, ok && k[j] == T));
    }
    if (lane == 0) { s_cnt[2 * warp] = gt; s_cnt[2 * warp + 1] = eq; }
    __syncthreads();
    if (warp == 0) {
        const unsigned g = s_cnt[2 * lane], e = s_cnt[2 * lane + 1];
        unsigned gi = g, ei = e;
        for (int o = 1; o < 32; o <<= 1) {
            const unsigned gu = __shfl_up_sync(0xffffffffu, gi, o), eu = __shfl_up_sync(0xffffffffu, ei, o);
            if (lane >= o) { gi += gu; ei += eu; }
        }
        __syncwarp();
        s_cnt[2 * lane] = gi - g;
        s_cnt[2 * lane + 1] = ei - e;
    }
    __syncthreads();
    int g_before = (int)s_cnt[2 * warp], e_before = (int)s_cnt[2 * warp + 1];
    const unsigned below = (1u << lane) - 1u;
#pragma unroll
    for (int j = 0; j < KPT; j++) {
        const int r = wbase + j * 32 + lane, ok = r < n_c;
        const unsigned mg = __ballot_sync(0xffffffffu, ok && k[j] > T);
        const unsigned me = __ballot_sync(0xffffffffu, ok && k[j] == T);
        const int gb = g_before + __popc(mg & below), eb = e_before + __popc(me & below);
        if ((mg >> lane) & 1u) sel[gb + min(eb, rem)] = r;
        else if (((me >> lane) & 1u) && eb < rem) sel[gb + eb] = r;
        g_before += __popc(mg);
        e_before += __popc(me);
    }
    if (threadIdx.x == 0) n_isel[t] = topk;
}

int idx_select1_fits(int64_t max_c) { return max_c <= 1024 * 32; }

cudaError_t idx_select1_launch(const float *d_scores, int64_t n_tok, int64_t pos0,
                               const int64_t *d_pos0, int64_t max_c, int64_t topk, int64_t ld,
                               int32_t *d_isel, int32_t *d_n_isel) {
    const unsigned g = (unsigned)n_tok;
    if (max_c <= 1024 * 4)
        return cu_launch(k_idx_select1<4>, g, 1024, 0, d_scores, pos0, (int)topk, ld, d_isel,
                         d_n_isel, d_pos0);
    if (max_c <= 1024 * 8)
        return cu_launch(k_idx_select1<8>, g, 1024, 0, d_scores, pos0, (int)topk, ld, d_isel,
                         d_n_isel, d_pos0);
    if (max_c <= 1024 * 16)
        return cu_launch(k_idx_select1<16>, g, 1024, 0, d_scores, pos0, (int)topk, ld, d_isel,
                         d_n_isel, d_pos0);
    return cu_launch(k_idx_select1<32>, g, 1024, 0, d_scores, pos0, (int)topk, ld, d_isel,
                     d_n_isel, d_pos0);
}
