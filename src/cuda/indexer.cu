/*
 * cuda/indexer.cu — the lightning indexer of ratio-4 layers (MODEL_MATH §8): per query token,
 * score every indexer row complete by its position, s_r = Σ_h w_h·relu(q_h·e_r) (heads in
 * order, dots in cpu_dot_f32's order, so scores are bit-identical to model/indexer.c), and keep
 * the top-k by (score desc, row asc), returned in ascending row order.
 *
 * Top-k is an exact radix select over the order-preserving bits of the scores (4 passes of
 * 8 bits); rows tied with the k-th score are taken lowest first by the ordered compaction that
 * writes the selection ascending. One block per token (k_idx_topk), or for decode over 4096+
 * rows a histogram over several blocks, one block for the cut, several for the compaction
 * (k_idx_hist / k_idx_cut / k_idx_write, issue #7): the same rows in the same order.
 * indexer_topk() dispatches: for id 128 the scores of indexer_tile.cu, and up to 32768 rows its
 * one-block top-k; these first kernels serve the other shapes and DS4_CUDA_IDX_V1=1.
 * Must not: prepare the queries (indexer_prep.cu, cuda_indexer_qprep; §8).
 */
#include <stdlib.h>

#include "cuda_api.h"
#include "indexer_impl.cuh"
#include "ops.cuh"

/* grid (row blocks, n_tok), 256 threads; shared: q [ih][id], w [ih]. One warp per row, the 4
 * lane groups of 8 take 4 heads at a time; lane 0 adds the heads in ascending order. */
__global__ void k_idx_score(const float *q, const float *wts, const float *rows, int64_t pos0,
                            int64_t ih, int64_t id, int64_t topk, int64_t ld_scores,
                            float *scores, const int64_t *dpos) {
    cu_pdl_wait();
    if (dpos) pos0 = *dpos; /* cuda_indexer_topk_dpos */
    extern __shared__ float sh[];
    float *sq = sh, *sw = sh + ih * id;
    int64_t t = blockIdx.y, n_c = (pos0 + t + 1) / 4;
    if (n_c <= topk) return; /* every row is kept; no scores needed */
    for (int64_t i = threadIdx.x; i < ih * id; i += blockDim.x) sq[i] = q[t * ih * id + i];
    for (int64_t i = threadIdx.x; i < ih; i += blockDim.x) sw[i] = wts[t * ih + i];
    __syncthreads();
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 3;
    int64_t n_warps = (int64_t)gridDim.x * (blockDim.x >> 5);
    for (int64_t r = (int64_t)blockIdx.x * (blockDim.x >> 5) + warp; r < n_c; r += n_warps) {
        const float *e = rows + r * id;
        float s = 0.0f;
        for (int64_t h0 = 0; h0 < ih; h0 += 4) {
            int64_t h = h0 + g < ih ? h0 + g : 0;
            float d = cu_dot8_ref(sq + h * id, e, id);
            float dd[4];
            for (int k = 0; k < 4; k++) dd[k] = __shfl_sync(0xffffffffu, d, 8 * k);
            for (int k = 0; k < 4 && h0 + k < ih; k++)
                s = __fadd_rn(s, __fmul_rn(sw[h0 + k], dd[k] > 0.0f ? dd[k] : 0.0f));
        }
        if (lane == 0) scores[t * ld_scores + r] = s;
    }
}

/* The same scores with the row held in registers (ID = id known at compile time, multiple of
 * 8): each lane keeps e[8j + lane%8] for j < ID/8, so a row is read once for all heads and the
 * dot's chain runs on shared q and registers. Same summation order (cu_dot8_ref). */
template <int ID>
__global__ void __launch_bounds__(256) k_idx_score_reg(const float *q, const float *wts,
                                                       const float *rows, int64_t pos0,
                                                       int64_t ih, int64_t topk,
                                                       int64_t ld_scores, float *scores,
                                                       const int64_t *dpos) {
    cu_pdl_wait();
    if (dpos) pos0 = *dpos;
    extern __shared__ float sh[];
    float *sq = sh, *sw = sh + ih * ID;
    int64_t t = blockIdx.y, n_c = (pos0 + t + 1) / 4;
    if (n_c <= topk) return;
    for (int64_t i = threadIdx.x; i < ih * ID; i += blockDim.x) sq[i] = q[t * ih * ID + i];
    for (int64_t i = threadIdx.x; i < ih; i += blockDim.x) sw[i] = wts[t * ih + i];
    __syncthreads();
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 3, k = lane & 7;
    int64_t n_warps = (int64_t)gridDim.x * (blockDim.x >> 5);
    for (int64_t r = (int64_t)blockIdx.x * (blockDim.x >> 5) + warp; r < n_c; r += n_warps) {
        const float *e = rows + r * ID;
        float er[ID / 8];
#pragma unroll
        for (int j = 0; j < ID / 8; j++) er[j] = e[8 * j + k];
        float s = 0.0f;
        for (int64_t h0 = 0; h0 < ih; h0 += 4) {
            int64_t h = h0 + g < ih ? h0 + g : 0;
            const float *qh = sq + h * ID;
            float acc = 0.0f;
#pragma unroll
            for (int j = 0; j < ID / 8; j++) acc = __fadd_rn(acc, __fmul_rn(qh[8 * j + k], er[j]));
            acc = cu_lanes8_dot_f32(acc);
            float dd[4];
#pragma unroll
            for (int m = 0; m < 4; m++) dd[m] = __shfl_sync(0xffffffffu, acc, 8 * m);
            for (int m = 0; m < 4 && h0 + m < ih; m++)
                s = __fadd_rn(s, __fmul_rn(sw[h0 + m], dd[m] > 0.0f ? dd[m] : 0.0f));
        }
        if (lane == 0) scores[t * ld_scores + r] = s;
    }
}

/* Block-wide radix select (every thread calls): among the n keys (keys[i], or idx_key(sc[i])
 * when keys is NULL) whose bits under `mask` equal `prefix`, the key T of the need-th largest
 * and how many keys equal to T rank within the first need (*rem). The low bits_left bits are
 * resolved in digits of up to 8 bits. hist: 256 shared counters. */
__device__ static __noinline__ void idx_radix(const float *sc, const uint32_t *keys, int64_t n, uint32_t prefix,
                                 uint32_t mask, int bits_left, int64_t need, unsigned *hist,
                                 uint32_t *T, int64_t *rem) {
    __shared__ uint32_t s_prefix;
    __shared__ int64_t s_remaining;
    if (threadIdx.x == 0) { s_remaining = need; s_prefix = prefix; }
    while (bits_left > 0) {
        const int width = bits_left < 8 ? bits_left : 8, shift = bits_left - width;
        const uint32_t dmask = (1u << width) - 1u;
        for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
        __syncthreads();
        /* Scores share their top bits, so bins are hot: aggregate equal bins per warp. */
        for (int64_t base = 0; base < n; base += blockDim.x) {
            int64_t r = base + threadIdx.x;
            int bin = -1;
            if (r < n) {
                uint32_t k = keys ? keys[r] : idx_key(sc[r]);
                if ((k & mask) == prefix) bin = (int)((k >> shift) & dmask);
            }
            unsigned peers = __match_any_sync(0xffffffffu, bin);
            if (bin >= 0 && (threadIdx.x & 31) == __ffs(peers) - 1)
                atomicAdd(&hist[bin], (unsigned)__popc(peers));
        }
        __syncthreads();
        if (threadIdx.x < 32) {
            /* Warp 0 finds the bin holding the cut: lane l owns bins 255-8l .. 248-8l. */
            int lane = threadIdx.x;
            int64_t left = s_remaining;
            __syncwarp(); /* every lane has read it before one lane rewrites it */
            unsigned c[8], tot = 0;
#pragma unroll
            for (int j = 0; j < 8; j++) { c[j] = hist[255 - 8 * lane - j]; tot += c[j]; }
            unsigned incl = tot;
            for (int o = 1; o < 32; o <<= 1) {
                unsigned v = __shfl_up_sync(0xffffffffu, incl, o);
                if (lane >= o) incl += v;
            }
            int64_t above = (int64_t)(incl - tot);
            if (above < left && left <= (int64_t)incl) {
                int b = 255 - 8 * lane;
                for (int j = 0; j < 8; j++, b--) {
                    if (above + c[j] >= left) break;
                    above += c[j];
                }
                s_remaining = left - above;
                s_prefix = prefix | ((uint32_t)b << shift);
            }
        }
        __syncthreads();
        prefix = s_prefix;
        mask |= dmask << shift;
        bits_left = shift;
    }
    *T = prefix;
    *rem = s_remaining;
}

/* One block (1024 threads) per token. Four 8-bit radix passes find the score key T of the
 * k-th best row and how many rows scoring exactly T to keep (`rem`); the ordered compaction
 * then keeps every row above T and the first `rem` rows at T (lower rows win ties, MODEL_MATH
 * §17 #2), ascending. With `cached`, the token's scores are first copied to shared memory. */
__global__ void __launch_bounds__(1024) k_idx_topk(const float *scores, int64_t pos0,
                                                   int64_t topk, int64_t ld_scores, int cached,
                                                   int32_t *isel, int32_t *n_isel,
                                                   const int64_t *dpos) {
    cu_pdl_wait();
    if (dpos) pos0 = *dpos;
    extern __shared__ float s_sc[];
    __shared__ unsigned hist[256];
    __shared__ unsigned long long s_warp[32];
    int64_t t = blockIdx.x, n_c = (pos0 + t + 1) / 4;
    int32_t *sel = isel + t * topk;
    if (n_c <= topk) {
        for (int64_t r = threadIdx.x; r < n_c; r += blockDim.x) sel[r] = (int32_t)r;
        if (threadIdx.x == 0) n_isel[t] = (int32_t)n_c;
        return;
    }
    const float *sc = scores + t * ld_scores;
    if (cached) {
        for (int64_t r = threadIdx.x; r < n_c; r += blockDim.x) s_sc[r] = sc[r];
        __syncthreads();
        sc = s_sc;
    }
    uint32_t T;
    int64_t rem; /* rows scoring exactly T that are kept */
    idx_radix(sc, NULL, n_c, 0, 0, 32, topk, hist, &T, &rem);
    int64_t chunk = (n_c + blockDim.x - 1) / blockDim.x;
    int64_t r0 = threadIdx.x * chunk, r1 = r0 + chunk < n_c ? r0 + chunk : n_c;
    unsigned long long cg = 0, ce = 0;
    for (int64_t r = r0; r < r1; r++) {
        uint32_t k = idx_key(sc[r]);
        cg += k > T;
        ce += k == T;
    }
    /* Greater and equal counts scanned together: (greater << 32) | equal. */
    unsigned long long ex = idx_block_excl((cg << 32) | ce, s_warp);
    int64_t g_before = (int64_t)(ex >> 32), e_seen = (int64_t)(ex & 0xFFFFFFFFull);
    int64_t out = g_before + (e_seen < rem ? e_seen : rem);
    for (int64_t r = r0; r < r1; r++) {
        uint32_t k = idx_key(sc[r]);
        if (k > T) sel[out++] = (int32_t)r;
        else if (k == T && e_seen++ < rem) sel[out++] = (int32_t)r;
    }
    if (threadIdx.x == 0) n_isel[t] = (int32_t)topk;
}

/* ---- decode top-k over several blocks (issue #7: one block read 16k-262k scores alone) ----
 * For a few tokens (n_tok <= IDX_MB_TOK) the rows are cut into G slices of S = ceil(n_c/G):
 *   k_idx_hist  (G blocks per token): a histogram of each slice by the key's top 11 bits;
 *   k_idx_cut   (1 block per token):  the bin holding the k-th key, its rows' keys gathered and
 *                radix-selected for the low 21 bits (T, rem as k_idx_topk finds them), then the
 *                rows above T / equal to T in each slice, scanned into slice offsets;
 *   k_idx_write (G blocks per token): each slice's ordered compaction from its offset.
 * Same (score desc, row asc) selection in ascending rows as k_idx_topk. G follows from the
 * position bound only, so a captured graph keeps its launches (cuda_indexer_topk_dpos). */
#define IDX_MB_TOK 2
#define IDX_MB_MIN 4096  /* rows; below, one k_idx_topk launch is quicker (H200: 7 us at 521 rows) */
#define IDX_NB 2048      /* coarse bins: key >> IDX_NB_SHIFT */
#define IDX_NB_SHIFT 21
#define IDX_SLICE 1024   /* rows per slice before the block count is capped */
#define IDX_MAX_G 64
#define IDX_CAP 8192     /* keys of the cut bin gathered in shared memory; more: read from L2 */

static int64_t idx_groups(int64_t max_c) {
    int64_t g = (max_c + IDX_SLICE - 1) / IDX_SLICE;
    return g < 1 ? 1 : (g > IDX_MAX_G ? IDX_MAX_G : g);
}

/* Per token: G·IDX_NB histogram counts, then meta: T, rem, and per slice (above, equal before). */
static size_t idx_mb_words(int64_t max_c) {
    int64_t g = idx_groups(max_c);
    return (size_t)(g * IDX_NB + 2 + 2 * g);
}

/* Rows of token t and the slice bounds: 32-bit row math (rows are int32 in isel; 64-bit
 * division would be a long inline routine in every kernel). */
struct idx_slices {
    int n_c, S;
};
__device__ __forceinline__ idx_slices idx_slices_of(int64_t pos0, int64_t t, int G) {
    idx_slices q;
    q.n_c = (int)((pos0 + t + 1) / 4);
    q.S = (int)(((unsigned)q.n_c + (unsigned)G - 1u) / (unsigned)G);
    return q;
}

__global__ void __launch_bounds__(1024) k_idx_hist(const float *scores, int64_t pos0, int topk,
                                                   int64_t ld, unsigned *mb, const int64_t *dpos) {
    cu_pdl_wait();
    if (dpos) pos0 = *dpos;
    __shared__ unsigned h[IDX_NB];
    const int t = blockIdx.y, G = gridDim.x;
    const idx_slices q = idx_slices_of(pos0, t, G);
    if (q.n_c <= topk) return;
    const int r0 = blockIdx.x * q.S, r1 = min(r0 + q.S, q.n_c);
    const float *sc = scores + t * ld;
    for (int i = threadIdx.x; i < IDX_NB; i += blockDim.x) h[i] = 0;
    __syncthreads();
    for (int base = r0; base < r1; base += blockDim.x) {
        int r = base + threadIdx.x;
        int bin = r < r1 ? (int)(idx_key(sc[r]) >> IDX_NB_SHIFT) : -1;
        unsigned peers = __match_any_sync(0xffffffffu, bin);
        if (bin >= 0 && (threadIdx.x & 31) == __ffs(peers) - 1) atomicAdd(&h[bin], (unsigned)__popc(peers));
    }
    __syncthreads();
    unsigned *out = mb + (size_t)t * (G * IDX_NB + 2 + 2 * G) + blockIdx.x * IDX_NB;
    for (int i = threadIdx.x; i < IDX_NB; i += blockDim.x) out[i] = h[i];
}

__global__ void __launch_bounds__(1024) k_idx_cut(const float *scores, int64_t pos0, int topk,
                                                  int64_t ld, int G, unsigned *mb, int32_t *isel,
                                                  int32_t *n_isel, const int64_t *dpos) {
    cu_pdl_wait();
    if (dpos) pos0 = *dpos;
    __shared__ unsigned h[IDX_NB], hist[256], cnt[2 * IDX_MAX_G];
    __shared__ uint32_t cand[IDX_CAP];
    __shared__ unsigned long long s_warp[32];
    __shared__ int s_bin, s_need;
    __shared__ unsigned n_cand;
    const int t = blockIdx.x, lane = threadIdx.x & 31, nb = blockDim.x;
    const idx_slices q = idx_slices_of(pos0, t, G);
    const int n_c = q.n_c;
    int32_t *sel = isel + (int64_t)t * topk;
    if (n_c <= topk) {
        for (int r = threadIdx.x; r < n_c; r += nb) sel[r] = r;
        if (threadIdx.x == 0) n_isel[t] = n_c;
        return;
    }
    unsigned *mt = mb + (size_t)t * (G * IDX_NB + 2 + 2 * G);
    const float *sc = scores + t * ld;
    /* Whole-row histogram; thread i owns bins IDX_NB-1-per·i downwards (descending keys). */
    const int per = IDX_NB / 1024;
    unsigned tot = 0;
    for (int j = 0; j < per; j++) {
        int b = IDX_NB - 1 - per * threadIdx.x - j;
        unsigned v = 0;
        for (int g = 0; g < G; g++) v += mt[g * IDX_NB + b];
        h[b] = v;
        tot += v;
    }
    for (int i = threadIdx.x; i < 2 * IDX_MAX_G; i += nb) cnt[i] = 0;
    if (threadIdx.x == 0) n_cand = 0;
    int above = (int)idx_block_excl(tot, s_warp);
    if (above < topk && topk <= above + (int)tot) {
        for (int j = 0; j < per; j++) {
            int b = IDX_NB - 1 - per * threadIdx.x - j;
            if (above + (int)h[b] >= topk) { s_bin = b; s_need = topk - above; break; }
            above += h[b];
        }
    }
    __syncthreads();
    const uint32_t bin = (uint32_t)s_bin, cmask = ~0u << IDX_NB_SHIFT;
    uint32_t T;
    int64_t rem;
    if (h[bin] <= IDX_CAP) {
        /* Gather the cut bin's keys (their order does not matter for T and rem); four loads
         * in flight per thread. */
        for (int base = 0; base < n_c; base += 4 * nb) {
            uint32_t k[4];
            idx_keys(sc, base + (int)threadIdx.x, nb, n_c, k);
#pragma unroll
            for (int u = 0; u < 4; u++) {
                int hit = base + u * nb + (int)threadIdx.x < n_c && (k[u] >> IDX_NB_SHIFT) == bin;
                unsigned m = __ballot_sync(0xffffffffu, hit), at = 0;
                if (m && lane == __ffs(m) - 1) at = atomicAdd(&n_cand, (unsigned)__popc(m));
                at = __shfl_sync(0xffffffffu, at, __ffs(m ? m : 1u) - 1);
                if (hit) cand[at + __popc(m & ((1u << lane) - 1u))] = k[u];
            }
        }
        __syncthreads();
        idx_radix(NULL, cand, n_cand, bin << IDX_NB_SHIFT, cmask, IDX_NB_SHIFT, s_need, hist, &T, &rem);
    } else {
        idx_radix(sc, NULL, n_c, bin << IDX_NB_SHIFT, cmask, IDX_NB_SHIFT, s_need, hist, &T, &rem);
    }
    /* Rows above T and equal to T per slice (the slices of k_idx_hist / k_idx_write). */
    for (int base = 0; base < n_c; base += 4 * nb) {
        uint32_t k[4];
        idx_keys(sc, base + (int)threadIdx.x, nb, n_c, k);
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int r = base + u * nb + threadIdx.x;
            if (r < n_c && k[u] >= T) atomicAdd(&cnt[2 * (r / q.S) + (k[u] == T)], 1u);
        }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned gt = 0, eq = 0;
        mt[G * IDX_NB] = T;
        mt[G * IDX_NB + 1] = (unsigned)rem;
        for (int g = 0; g < G; g++) {
            mt[G * IDX_NB + 2 + 2 * g] = gt;
            mt[G * IDX_NB + 3 + 2 * g] = eq;
            gt += cnt[2 * g];
            eq += cnt[2 * g + 1];
        }
        n_isel[t] = topk;
    }
}

__global__ void __launch_bounds__(1024) k_idx_write(const float *scores, int64_t pos0, int topk,
                                                    int64_t ld, const unsigned *mb, int32_t *isel,
                                                    const int64_t *dpos) {
    cu_pdl_wait();
    if (dpos) pos0 = *dpos;
    __shared__ unsigned long long s_warp[32];
    const int t = blockIdx.y, G = gridDim.x;
    const idx_slices q = idx_slices_of(pos0, t, G);
    if (q.n_c <= topk) return;
    const int s0 = blockIdx.x * q.S, s1 = min(s0 + q.S, q.n_c);
    if (s0 >= s1) return; /* the whole block: no barrier below is split */
    const unsigned *mt = mb + (size_t)t * (G * IDX_NB + 2 + 2 * G);
    const uint32_t T = mt[G * IDX_NB];
    const int rem = (int)mt[G * IDX_NB + 1];
    const int gt_before = (int)mt[G * IDX_NB + 2 + 2 * blockIdx.x];
    const int eq_before = (int)mt[G * IDX_NB + 3 + 2 * blockIdx.x];
    const float *sc = scores + t * ld;
    const int chunk = (s1 - s0 + (int)blockDim.x - 1) / (int)blockDim.x;
    const int r0 = s0 + threadIdx.x * chunk, r1 = min(r0 + chunk, s1);
    unsigned long long cg = 0, ce = 0;
    for (int r = r0; r < r1; r++) {
        uint32_t k = idx_key(sc[r]);
        cg += k > T;
        ce += k == T;
    }
    unsigned long long ex = idx_block_excl((cg << 32) | ce, s_warp);
    int e_seen = eq_before + (int)(ex & 0xFFFFFFFFull);
    int out = gt_before + (int)(ex >> 32) + min(e_seen, rem);
    int32_t *sel = isel + (int64_t)t * topk;
    for (int r = r0; r < r1; r++) {
        uint32_t k = idx_key(sc[r]);
        if (k > T) sel[out++] = r;
        else if (k == T && e_seen++ < rem) sel[out++] = r;
    }
}

/* Scores [n_tok][(pos0+n_tok)/4 + 1], then (few tokens) the multi-block top-k's words. */
static size_t idx_scores_floats(int64_t n_tok, int64_t pos0) {
    return (size_t)n_tok * (size_t)((pos0 + n_tok) / 4 + 1);
}

extern "C" size_t cuda_indexer_scratch_bytes(int64_t n_tok, int64_t pos0) {
    if (n_tok <= 0) return 0;
    size_t b = idx_scores_floats(n_tok, pos0) * sizeof(float);
    if (n_tok <= IDX_MB_TOK) b = (b + 15) / 16 * 16 + (size_t)n_tok * idx_mb_words((pos0 + n_tok) / 4) * 4;
    return b;
}

/* Largest dynamic shared memory a block may opt in to on the current device (48 KB if unknown). */
static size_t idx_smem_optin(void) {
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess || v <= 0) {
        (void)cudaGetLastError(); /* not left for the launch check below */
        return 48 * 1024;
    }
    return (size_t)v;
}

/* pos0: the position, or with d_pos0 an upper bound of it (grids and scratch are sized for it;
 * the kernels read the position from d_pos0). */
/* DS4_CUDA_IDX_V1=1: the first kernels (k_idx_score_reg, k_idx_topk / the multi-block
 * select) instead of indexer_tile.cu's, for before/after timings in one process. Read at each
 * call: only eager calls and graph captures reach it. */
int cuda_indexer_v1(void) {
    const char *v = getenv("DS4_CUDA_IDX_V1");
    return v && v[0] == '1';
}

/* parts: IDX_SCORES | IDX_SELECT (cuda_indexer_part times them apart). */
#define IDX_SCORES 1
#define IDX_SELECT 2
static ds4_status indexer_topk(const float *d_q, const float *d_w, const float *d_rows,
                               int64_t n_tok, int64_t pos0, const int64_t *d_pos0, int64_t ih,
                               int64_t id, int64_t topk, float *d_scores, int32_t *d_isel,
                               int32_t *d_n_isel, int parts, ds4_error *err) {
    if (n_tok <= 0) return DS4_OK;
    const int v1 = cuda_indexer_v1();
    size_t smem = (size_t)(ih * id + ih) * sizeof(float);
    if (ih < 1 || id < 1 || topk < 1 || pos0 < 0 || n_tok > 65535 || smem > 200 * 1024 ||
        (pos0 + n_tok) / 4 >= 0xFFFFFFFFll)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                          "cuda_indexer_topk: %lld heads of %lld, top-%lld, %lld tokens at %lld",
                          (long long)ih, (long long)id, (long long)topk, (long long)n_tok,
                          (long long)pos0);
    int64_t ld = (pos0 + n_tok) / 4 + 1, max_c = (pos0 + n_tok) / 4;
    if (max_c > topk && (parts & IDX_SCORES) && !v1 && idx_tile_fits(d_q, d_rows, ih, id)) {
        CU_CHECK(idx_score_tile_launch(d_q, d_w, d_rows, n_tok, pos0, d_pos0, ih, topk, ld, d_scores),
                 err, "indexer score launch");
    } else if (max_c > topk && (parts & IDX_SCORES)) {
        unsigned gx = cu_blocks(max_c, 8);
        if (gx > 512) gx = 512; /* each block loads the token's 32 KiB of queries once */
        if (id == 128) { /* MODEL_MATH §0: index_head_dim */
            if (smem > 48 * 1024)
                CU_CHECK(cudaFuncSetAttribute(k_idx_score_reg<128>,
                                              cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
                         err, "indexer shared memory");
            cu_launch(k_idx_score_reg<128>, dim3(gx, (unsigned)n_tok), 256, smem, 
                d_q, d_w, d_rows, pos0, ih, topk, ld, d_scores, d_pos0);
        } else {
            if (smem > 48 * 1024)
                CU_CHECK(cudaFuncSetAttribute(k_idx_score, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              (int)smem),
                         err, "indexer shared memory");
            cu_launch(k_idx_score, dim3(gx, (unsigned)n_tok), 256, smem, d_q, d_w, d_rows, pos0, ih, id,
                                                                   topk, ld, d_scores, d_pos0);
        }
        CU_LAUNCH_CHECK(err, "indexer score launch");
    }
    if (!(parts & IDX_SELECT)) return DS4_OK;
    if (!v1 && max_c > topk && idx_select1_fits(max_c)) {
        CU_CHECK(idx_select1_launch(d_scores, n_tok, pos0, d_pos0, max_c, topk, ld, d_isel, d_n_isel),
                 err, "indexer top-k launch");
        return DS4_OK;
    }
    if (n_tok <= IDX_MB_TOK && max_c >= IDX_MB_MIN && max_c > topk && max_c < INT32_MAX &&
        topk < INT32_MAX) {
        int G = (int)idx_groups(max_c);
        size_t off = (idx_scores_floats(n_tok, pos0) * sizeof(float) + 15) / 16 * 16;
        unsigned *mb = (unsigned *)((uint8_t *)d_scores + off);
        cu_launch(k_idx_hist, dim3((unsigned)G, (unsigned)n_tok), 1024, 0, d_scores, pos0, (int)topk,
                                                                           ld, mb, d_pos0);
        cu_launch(k_idx_cut, (unsigned)n_tok, 1024, 0, d_scores, pos0, (int)topk, ld, G, mb, d_isel,
                                                           d_n_isel, d_pos0);
        cu_launch(k_idx_write, dim3((unsigned)G, (unsigned)n_tok), 1024, 0, d_scores, pos0, (int)topk,
                                                                            ld, mb, d_isel, d_pos0);
        CU_LAUNCH_CHECK(err, "indexer top-k launch");
        return DS4_OK;
    }
    /* Cache the scores in shared memory when the largest token's fit (n_c <= ~50k rows). The
     * kernel's own ~1.3 KB of static shared memory counts too: from 48 KB in all the launch
     * needs the opt-in (a 2048-token chunk at position 47104 asked for exactly 48 KB of scores
     * and failed, "invalid argument"), and the card's opt-in maximum bounds it (99 KB on
     * sm_86, 163 KB on sm_80); past it the scores are read from global memory. */
    size_t tk_smem = (size_t)(max_c > topk ? max_c : 0) * sizeof(float);
    int cached = tk_smem > 0 && tk_smem <= 200 * 1024;
    if (cached && tk_smem > 32 * 1024) {
        if (tk_smem + 4096 > idx_smem_optin()) cached = 0;
        else
            CU_CHECK(cudaFuncSetAttribute(k_idx_topk, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          (int)tk_smem),
                     err, "indexer top-k shared memory");
    }
    cu_launch(k_idx_topk, (unsigned)n_tok, 1024, cached ? tk_smem : 0, d_scores, pos0, topk, ld, cached,
                                                              d_isel, d_n_isel, d_pos0);
    CU_LAUNCH_CHECK(err, "indexer top-k launch");
    return DS4_OK;
}

extern "C" ds4_status cuda_indexer_topk(const float *d_q, const float *d_w, const float *d_rows,
                                        int64_t n_tok, int64_t pos0, int64_t ih, int64_t id,
                                        int64_t topk, float *d_scores, int32_t *d_isel,
                                        int32_t *d_n_isel, ds4_error *err) {
    return indexer_topk(d_q, d_w, d_rows, n_tok, pos0, NULL, ih, id, topk, d_scores, d_isel,
                        d_n_isel, IDX_SCORES | IDX_SELECT, err);
}

extern "C" ds4_status cuda_indexer_part(int part, const float *d_q, const float *d_w,
                                        const float *d_rows, int64_t n_tok, int64_t pos0,
                                        int64_t ih, int64_t id, int64_t topk, float *d_scores,
                                        int32_t *d_isel, int32_t *d_n_isel, ds4_error *err) {
    if (part != IDX_SCORES && part != IDX_SELECT)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_indexer_part: part %d", part);
    return indexer_topk(d_q, d_w, d_rows, n_tok, pos0, NULL, ih, id, topk, d_scores, d_isel,
                        d_n_isel, part, err);
}

extern "C" ds4_status cuda_indexer_topk_dpos(const float *d_q, const float *d_w,
                                             const float *d_rows, int64_t n_tok,
                                             const int64_t *d_pos0, int64_t pos_bound, int64_t ih,
                                             int64_t id, int64_t topk, float *d_scores,
                                             int32_t *d_isel, int32_t *d_n_isel, ds4_error *err) {
    if (!d_pos0 || pos_bound < n_tok)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_indexer_topk_dpos: bound %lld",
                          (long long)pos_bound);
    return indexer_topk(d_q, d_w, d_rows, n_tok, pos_bound - n_tok, d_pos0, ih, id, topk,
                        d_scores, d_isel, d_n_isel, IDX_SCORES | IDX_SELECT, err);
}
