/*
 * cuda/hc_impl.cuh — the device pieces of hyper-connections (MODEL_MATH §4) shared by hc.cu
 * (hc_pre, hc_post, hc_head) and hc_mix.cu (the fused decode site): the pre/post/comb split with
 * Sinkhorn (model/hc.c hc_split), and the decode form of hc_pre (X held in registers by a block
 * of HCD_THREADS, ρ, the weighted sum, the sub-layer RMSNorm and the quantized a). Same steps
 * and order as model/hc.c, so the same bits wherever they run.
 * Must not: know layer structure, launch anything.
 */
#ifndef DS4_CUDA_HC_IMPL_CUH
#define DS4_CUDA_HC_IMPL_CUH

#include "cuda_api.h"
#include "ops.cuh"
#include "quant.cuh"

#define HC_MAX 16

/* model/hc.c hc_split by the 32 lanes of one warp (all call it): element l of comb belongs to
 * lane l mod 32. Every row/column sum is taken by each lane in the CPU's order from shared
 * values, so each element sees the reference's exact operations (MODEL_MATH §4.1-4.2). `c`
 * is shared [hc*hc]. */
__device__ static void hc_split_warp(const float *m, const float *scale, const float *base,
                                     int hc, int iters, float eps, float *pre, float *post,
                                     float *c) {
    int lane = threadIdx.x & 31, n2 = hc * hc;
    for (int k = lane; k < hc; k += 32) {
        pre[k] = __fadd_rn(cu_sigmoid_ref(__fadd_rn(__fmul_rn(m[k], scale[0]), base[k])), eps);
        post[k] = __fmul_rn(2.0f, cu_sigmoid_ref(__fadd_rn(__fmul_rn(m[hc + k], scale[1]),
                                                           base[hc + k])));
    }
    for (int l = lane; l < n2; l += 32)
        c[l] = __fadd_rn(__fmul_rn(m[2 * hc + l], scale[2]), base[2 * hc + l]);
    __syncwarp();
    float v[8]; /* this lane's elements (hc*hc <= 256) */
    for (int q = 0, l = lane; l < n2; q++, l += 32) {
        const float *row = c + (l / hc) * hc;
        float mx = row[0];
        for (int k = 1; k < hc; k++) if (row[k] > mx) mx = row[k];
        v[q] = cu_exp_ref(__fsub_rn(c[l], mx));
    }
    __syncwarp();
    for (int q = 0, l = lane; l < n2; q++, l += 32) c[l] = v[q];
    __syncwarp();
    for (int q = 0, l = lane; l < n2; q++, l += 32) {
        const float *row = c + (l / hc) * hc;
        float s = 0.0f;
        for (int k = 0; k < hc; k++) s = __fadd_rn(s, row[k]);
        v[q] = __fadd_rn(__fdiv_rn(c[l], s), eps);
    }
    __syncwarp();
    for (int q = 0, l = lane; l < n2; q++, l += 32) c[l] = v[q];
    __syncwarp();
    for (int it = 0; it < iters; it++) {
        if (it > 0) {
            for (int q = 0, l = lane; l < n2; q++, l += 32) {
                const float *row = c + (l / hc) * hc;
                float s = 0.0f;
                for (int k = 0; k < hc; k++) s = __fadd_rn(s, row[k]);
                v[q] = __fdiv_rn(c[l], __fadd_rn(s, eps));
            }
            __syncwarp();
            for (int q = 0, l = lane; l < n2; q++, l += 32) c[l] = v[q];
            __syncwarp();
        }
        for (int q = 0, l = lane; l < n2; q++, l += 32) {
            int k = l % hc;
            float s = 0.0f;
            for (int j = 0; j < hc; j++) s = __fadd_rn(s, c[j * hc + k]);
            v[q] = __fdiv_rn(c[l], __fadd_rn(s, eps));
        }
        __syncwarp();
        for (int q = 0, l = lane; l < n2; q++, l += 32) c[l] = v[q];
        __syncwarp();
    }
}

/* The same split with comb in registers when hc² <= 32 (Flash: hc = 4): lane j·hc+k holds
 * comb[j][k]; every row/column sum is gathered by shuffles in the CPU's order. HCT = hc known
 * at compile time (0: use hc_rt): the 2·iters sums then issue their shuffles together instead
 * of one after the other (issue #7: the Sinkhorn chain is the serial part of hc_pre). */
template <int HCT>
__device__ static void hc_split_reg(const float *m, const float *scale, const float *base, int hc_rt,
                                    int iters, float eps, float *pre, float *post, float *comb) {
    const int hc = HCT ? HCT : hc_rt;
    int lane = threadIdx.x & 31, n2 = hc * hc, j = lane / hc, k = lane % hc;
    if (lane < hc) {
        pre[lane] = __fadd_rn(cu_sigmoid_ref(__fadd_rn(__fmul_rn(m[lane], scale[0]), base[lane])), eps);
        post[lane] = __fmul_rn(2.0f, cu_sigmoid_ref(__fadd_rn(__fmul_rn(m[hc + lane], scale[1]),
                                                              base[hc + lane])));
    }
    float c = lane < n2 ? __fadd_rn(__fmul_rn(m[2 * hc + lane], scale[2]), base[2 * hc + lane]) : 0.0f;
    float mx = __shfl_sync(0xffffffffu, c, j * hc);
    for (int q = 1; q < hc; q++) {
        float v = __shfl_sync(0xffffffffu, c, j * hc + q);
        if (v > mx) mx = v;
    }
    c = cu_exp_ref(__fsub_rn(c, mx));
    float s = 0.0f;
    for (int q = 0; q < hc; q++) s = __fadd_rn(s, __shfl_sync(0xffffffffu, c, j * hc + q));
    c = __fadd_rn(__fdiv_rn(c, s), eps);
    for (int it = 0; it < iters; it++) {
        if (it > 0) {
            s = 0.0f;
            for (int q = 0; q < hc; q++) s = __fadd_rn(s, __shfl_sync(0xffffffffu, c, j * hc + q));
            c = __fdiv_rn(c, __fadd_rn(s, eps));
        }
        s = 0.0f;
        for (int q = 0; q < hc; q++) s = __fadd_rn(s, __shfl_sync(0xffffffffu, c, q * hc + k));
        c = __fdiv_rn(c, __fadd_rn(s, eps));
    }
    if (lane < n2) comb[lane] = c;
}

/* ---- decode: X in registers, the Sinkhorn in a block of its own (issue #7) ----
 * k_hc_pre ran ρ, then the 20-round Sinkhorn in one warp while the other 31 warps waited at a
 * barrier, then read X again for the sum. Only pre feeds a; post/comb feed hc_post later. So
 * grid (n_tok, 2): block y=1 computes ρ and the split and writes post/comb; block y=0 computes
 * the same ρ (same code, same order: the same bits), pre (each warp for itself, no barrier),
 * the sum, the norm and the quantized a from registers. The two run side by side on two SMs.
 * Needs blockDim.x == HCD_THREADS and d == EPT·HCD_THREADS; otherwise k_hc_pre runs. */
#define HCD_THREADS 1024

/* Σ x² of this thread's values as a ref_dsum (cpu/refmath.h: the same value in any order, so
 * the CPU's hc_rho / rmsnorm bits), accumulated as cu_block_rms_inv does on the flat row
 * (values f·blockDim + tid, f ascending; four partial sums while four remain, the tail into
 * the first), so ρ and the norm keep the bits of k_hc_pre. */
template <int NF>
__device__ __forceinline__ ref_dsum hcd_sumsq(const float *v) {
    ref_dsum s[4] = {{0.0, 0.0}, {0.0, 0.0}, {0.0, 0.0}, {0.0, 0.0}};
    const int n4 = NF / 4 * 4;
#pragma unroll
    for (int f = 0; f < NF; f++) ref_dsum_add(&s[f < n4 ? (f & 3) : 0], (double)v[f] * v[f]);
    ref_dsum_merge(&s[0], s[1]);
    ref_dsum_merge(&s[2], s[3]);
    ref_dsum_merge(&s[0], s[2]);
    return s[0];
}

/* The weights hcd_tail reads, loaded before it runs (issue #7: in hc_mix.cu's fused site the
 * tail waits for the mix, and each load after the wait is an L2 round trip on the decode's
 * critical path): role 0 keeps this thread's norm values (1 without norm), scale[0] and
 * base[lane] in registers; role 1's warp 0 copies scale[0..2] and base[0..(2+HC)·HC) to the
 * shared sc / ba, which hcd_tail's split reads after a barrier. */
template <int EPT>
struct hcd_in {
    float nv[EPT], sc0, bl;
};

template <int HC, int EPT>
__device__ __forceinline__ void hcd_load(int role, const float *scale, const float *base,
                                         const float *norm, hcd_in<EPT> *in, float *sc, float *ba) {
    const int tid = threadIdx.x, lane = tid & 31;
    if (role == 1) {
        if (tid < 32) {
            for (int i = lane; i < (2 + HC) * HC; i += 32) ba[i] = base[i];
            if (lane < 3) sc[lane] = scale[lane];
        }
        return;
    }
    in->sc0 = scale[0];
    in->bl = lane < HC ? base[lane] : 0.0f;
#pragma unroll
    for (int j = 0; j < EPT; j++) in->nv[j] = norm ? norm[(int64_t)j * HCD_THREADS + tid] : 1.0f;
}

/* The part of k_hc_pre_dec after ρ, for block role 1 (the split: post/comb) or role 0 (pre,
 * the weighted sum, the norm and the quantized a), x = this thread's X values as loaded by
 * hcd_load; in / sc / ba: hcd_load's (a barrier after it); mix/pre/post/comb/a/q80/q8k of this
 * token. Shared by k_hc_pre_dec and hc_mix.cu's fused site, so both give the same bits. mix is
 * read through L2 (__ldcg): in the fused site other blocks of the same grid wrote it.
 * TR (timing builds of hc_mix.cu's trace only): thread 0 of role 0 writes %globaltimer to
 * st[0..4] after pre, the norm's scale, a, the Q8_0 records and the Q8_K blocks. */
__device__ __forceinline__ unsigned long long hcd_now(void) {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

template <int HC, int EPT, bool TR = false>
__device__ __forceinline__ void hcd_tail(int role, const float *x, float rho, const float *mix,
                                         const hcd_in<EPT> &in, const float *sc, const float *ba,
                                         bool norm, int64_t d, int iters, float hc_eps, float norm_eps,
                                         float *pre, float *post, float *comb, float *a,
                                         uint8_t *q80, uint8_t *q8k, double *shd,
                                         unsigned long long *st = nullptr) {
    __shared__ float s_m[(2 + HC) * HC], s_pre[HC], s_post[HC], s_c[HC * HC];
    const int64_t nmix = (2 + HC) * HC;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    if (role == 1) { /* the split: pre/post/comb of MODEL_MATH §4.1-4.2 */
        if (warp) return;
        for (int64_t i = lane; i < nmix; i += 32) s_m[i] = __fmul_rn(__ldcg(mix + i), rho);
        __syncwarp();
        if (HC * HC <= 32) hc_split_reg<HC>(s_m, sc, ba, HC, iters, hc_eps, s_pre, s_post, s_c);
        else hc_split_warp(s_m, sc, ba, HC, iters, hc_eps, s_pre, s_post, s_c);
        __syncwarp();
        for (int k = lane; k < HC; k += 32) post[k] = s_post[k];
        for (int k = lane; k < HC * HC; k += 32) comb[k] = s_c[k];
        return;
    }
    /* pre[k] as hc_split computes it, by lane k of every warp, shared by shuffles. */
    float pl = 0.0f;
    if (lane < HC)
        pl = __fadd_rn(cu_sigmoid_ref(__fadd_rn(__fmul_rn(__fmul_rn(__ldcg(mix + lane), rho),
                                                          in.sc0), in.bl)), hc_eps);
    float p[HC];
#pragma unroll
    for (int k = 0; k < HC; k++) p[k] = __shfl_sync(0xffffffffu, pl, k);
    if (warp == 0 && lane < HC) pre[lane] = pl;
    if (TR && tid == 0) st[0] = hcd_now();
    /* a = Σ_k pre[k]·X[k] (k ascending from 0.0f), then norm ⊙ a·rms_inv(a) (hc_sum_norm). */
    float v[EPT];
#pragma unroll
    for (int j = 0; j < EPT; j++) {
        float s = 0.0f;
#pragma unroll
        for (int k = 0; k < HC; k++) s = __fadd_rn(s, __fmul_rn(p[k], x[k * EPT + j]));
        v[j] = s;
    }
    const float r = ref_rms_inv(ref_dsum_value(cu_block_dsum(hcd_sumsq<EPT>(v), shd)), d, norm_eps);
    if (TR && tid == 0) st[1] = hcd_now();
#pragma unroll
    for (int j = 0; j < EPT; j++) {
        int64_t i = (int64_t)j * HCD_THREADS + tid;
        float y = __fmul_rn(v[j], r);
        v[j] = norm ? __fmul_rn(in.nv[j], y) : y;
        a[i] = v[j];
    }
    if (TR && tid == 0) st[2] = hcd_now();
    /* Q8_0 record j·(blockDim/32) + warp is this warp's 32 values of slot j. */
    if (q80)
#pragma unroll
        for (int j = 0; j < EPT; j++)
            q8act_warp(v[j], q80 + (j * (HCD_THREADS / 32) + warp) * CU_Q8_0ACT_BYTES);
    if (TR && tid == 0) st[3] = hcd_now();
    if (q8k) { /* Q8_K wants 8 consecutive values per lane: through shared memory */
        __shared__ float s_a[EPT * HCD_THREADS];
#pragma unroll
        for (int j = 0; j < EPT; j++) s_a[j * HCD_THREADS + tid] = v[j];
        __syncthreads();
        for (int64_t b = warp; b < d / 256; b += HCD_THREADS / 32) {
            float w8[8];
            for (int i = 0; i < 8; i++) w8[i] = s_a[b * 256 + lane * 8 + i];
            q8k_warp(w8, q8k + b * CU_Q8_K_BYTES);
        }
    }
    if (TR && tid == 0) st[4] = hcd_now();
}

/* ρ = rms_inv of the hc·d values of X held as x (hcd_tail's order of cu_block_rms_inv). */
template <int HC, int EPT>
__device__ __forceinline__ float hcd_rho(const float *x, int64_t d, float norm_eps, double *shd) {
    return ref_rms_inv(ref_dsum_value(cu_block_dsum(hcd_sumsq<HC * EPT>(x), shd)), HC * d, norm_eps);
}

static inline ds4_status hc_check(const char *fn, int64_t n_tok, int hc, int64_t d, ds4_error *err) {
    if (hc < 1 || hc > HC_MAX || hc * hc > 256 || d <= 0 || n_tok > INT32_MAX)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "%s: hc = %d (1..%d), d = %lld", fn, hc,
                          HC_MAX, (long long)d);
    return DS4_OK;
}
#endif
