/*
 * cuda/chunk_moe.cu — the routed experts of a prefill chunk grouped by expert on the device
 * (issue #7; MODEL_MATH §9): from the router's ids, the offsets of every expert's rows and the
 * (token, slot, weight) of each grouped row, so the expert products run as one grouped matmul
 * without downloading the ids and synchronising per layer.
 *
 * One block per expert scans all pairs in order: it counts the pairs of lower experts (its
 * offset) and compacts its own pairs in pair order (tokens ascending: a token selects an expert
 * at most once), so the grouping is deterministic, with no atomics.
 * Must not: know the model or run the expert products.
 */
#include "chunk_ops.h"
#include "ops.cuh"

#define GRP_THREADS 256

/* grid n_expert + 1 (the last block writes off[n_expert]), GRP_THREADS threads. */
__global__ void __launch_bounds__(GRP_THREADS) k_moe_group(const int32_t *sel, const float *w,
                                                           int64_t np, int K, int E,
                                                           int32_t *off, int32_t *ptok,
                                                           int32_t *pslot, float *pw) {
    cu_pdl_wait();
    __shared__ int s_warp[GRP_THREADS / 32];
    __shared__ int s_tot;
    int e = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int64_t below = 0; /* this thread's count of pairs of experts < e */
    int64_t base = 0;  /* this expert's rows written so far (all threads agree) */
    int32_t start = 0;
    /* First pass: the offset of expert e (block sum of the lower-expert counts). */
    for (int64_t i = threadIdx.x; i < np; i += blockDim.x) {
        int32_t x = sel[i];
        below += x >= 0 && x < e;
    }
    {
        int v = (int)below;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) s_warp[warp] = v;
        __syncthreads();
        if (threadIdx.x == 0) {
            int t = 0;
            for (int k = 0; k < GRP_THREADS / 32; k++) t += s_warp[k];
            s_tot = t;
        }
        __syncthreads();
        start = s_tot;
        __syncthreads();
    }
    if (e == E) {
        if (threadIdx.x == 0) off[E] = start;
        return;
    }
    if (threadIdx.x == 0) off[e] = start;
    /* Second pass: ordered compaction of the pairs with sel == e. */
    for (int64_t i0 = 0; i0 < np; i0 += blockDim.x) {
        int64_t i = i0 + threadIdx.x;
        int mine = i < np && sel[i] == e;
        unsigned b = __ballot_sync(0xffffffffu, mine);
        if (lane == 0) s_warp[warp] = __popc(b);
        __syncthreads();
        int before = 0, tile = 0;
        for (int k = 0; k < GRP_THREADS / 32; k++) {
            if (k < warp) before += s_warp[k];
            tile += s_warp[k];
        }
        if (mine) {
            int64_t r = start + base + before + __popc(b & ((1u << lane) - 1u));
            ptok[r] = (int32_t)(i / K);
            pslot[r] = (int32_t)i;
            pw[r] = w[i];
        }
        base += tile;
        __syncthreads();
    }
}

extern "C" ds4_status cuda_moe_group(const int32_t *d_sel, const float *d_w, int64_t n_tok,
                                     int n_used, int n_expert, int32_t *d_off, int32_t *d_ptok,
                                     int32_t *d_pslot, float *d_pw, ds4_error *err) {
    if (n_expert < 1 || n_expert > 65535 || n_used < 1 || n_tok < 0 ||
        n_tok * (int64_t)n_used > INT32_MAX)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_moe_group: %lld tokens x %d of %d experts",
                          (long long)n_tok, n_used, n_expert);
    cu_launch(k_moe_group, (unsigned)n_expert + 1, GRP_THREADS, 0, 
        d_sel, d_w, n_tok * n_used, n_used, n_expert, d_off, d_ptok, d_pslot, d_pw);
    CU_LAUNCH_CHECK(err, "moe_group launch");
    return DS4_OK;
}
