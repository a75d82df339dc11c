/*
 * cuda/hc.cu — hyper-connections on the device (MODEL_MATH §4): hc_pre (ρ, the pre/post/comb
 * split with Sinkhorn, the weighted stream sum and the sub-layer RMSNorm), hc_post, hc_head.
 * The mixes m = fn·X are a plain matvec done by the caller (cuda_matvec), as in the CPU path
 * (model/forward.c fwd_hc_pre), except in cuda_hc_mix_fused (decode, issue #7), which runs the
 * pending hc_post, the mix and hc_pre in one launch with cuda_matvec's arithmetic. Same steps
 * and order as model/hc.c.
 * Must not: know layer structure (the caller says which hc_post is pending).
 */
#include "cuda_api.h"
#include "matvec_impl.cuh"
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

/* a = Σ_k pre[k]·X[k] (k ascending, from 0.0f), then a = norm ⊙ a·rms_inv(a). */
__device__ static void hc_sum_norm(const float *X, const float *pre, int hc, int64_t d,
                                   const float *norm, float norm_eps, float *a, double *shd) {
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
        float s = 0.0f;
        for (int k = 0; k < hc; k++) s = __fadd_rn(s, __fmul_rn(pre[k], X[(int64_t)k * d + i]));
        a[i] = s;
    }
    __syncthreads();
    float r = cu_block_rms_inv(a, d, norm_eps, shd);
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
        float v = __fmul_rn(a[i], r);
        a[i] = norm ? __fmul_rn(norm[i], v) : v;
    }
}

/* One block per token: model/forward.c fwd_hc_pre after its matmul; with q80 / q8k (nullable)
 * the block also writes a's Q8_0 records / Q8_K blocks (issue #7: the products' input quantized
 * here instead of in launches of its own; the same quantizers, quant.cuh). */
__global__ void k_hc_pre(const float *X, const float *mix, const float *scale, const float *base,
                         const float *norm, int hc, int64_t d, int iters, float hc_eps,
                         float norm_eps, float *pre, float *post, float *comb, float *a,
                         uint8_t *q80, uint8_t *q8k) {
    cu_pdl_wait();
    __shared__ double shd[32];
    __shared__ float s_pre[HC_MAX], s_post[HC_MAX], s_m[(2 + HC_MAX) * HC_MAX];
    __shared__ float s_c[HC_MAX * HC_MAX];
    int64_t t = blockIdx.x, nmix = (int64_t)(2 + hc) * hc;
    const float *Xt = X + t * hc * d;
    float rho = cu_block_rms_inv(Xt, hc * d, norm_eps, shd);
    if (threadIdx.x < 32) {
        for (int64_t i = threadIdx.x; i < nmix; i += 32) s_m[i] = __fmul_rn(mix[t * nmix + i], rho);
        __syncwarp();
        if (hc == 4) hc_split_reg<4>(s_m, scale, base, hc, iters, hc_eps, s_pre, s_post, s_c);
        else if (hc * hc <= 32) hc_split_reg<0>(s_m, scale, base, hc, iters, hc_eps, s_pre, s_post, s_c);
        else hc_split_warp(s_m, scale, base, hc, iters, hc_eps, s_pre, s_post, s_c);
        __syncwarp();
        for (int k = threadIdx.x; k < hc; k += 32) {
            pre[t * hc + k] = s_pre[k];
            post[t * hc + k] = s_post[k];
        }
        for (int k = threadIdx.x; k < hc * hc; k += 32) comb[t * hc * hc + k] = s_c[k];
    }
    __syncthreads();
    hc_sum_norm(Xt, s_pre, hc, d, norm, norm_eps, a + t * d, shd);
    if (!q80 && !q8k) return;
    __syncthreads(); /* a is complete */
    const float *at = a + t * d;
    const int warp = threadIdx.x >> 5, nw = blockDim.x >> 5, lane = threadIdx.x & 31;
    if (q80)
        for (int64_t r = warp; r < d / 32; r += nw)
            q8act_warp(at[r * 32 + lane], q80 + (t * (d / 32) + r) * CU_Q8_0ACT_BYTES);
    if (q8k)
        for (int64_t b = warp; b < d / 256; b += nw) {
            float v[8];
            for (int i = 0; i < 8; i++) v[i] = at[b * 256 + lane * 8 + i];
            q8k_warp(v, q8k + (t * (d / 256) + b) * CU_Q8_K_BYTES);
        }
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

/* The part of k_hc_pre_dec after ρ, for block role 1 (the split: post/comb) or role 0 (pre,
 * the weighted sum, the norm and the quantized a), x = this thread's X values as loaded by
 * hcd_load; mix/pre/post/comb/a/q80/q8k of this token. Shared by k_hc_pre_dec and k_hc_mix
 * (hcmix below), so both give the same bits. mix is read through L2 (__ldcg): in k_hc_mix
 * other blocks of the same grid wrote it. */
template <int HC, int EPT>
__device__ __forceinline__ void hcd_tail(int role, const float *x, float rho, const float *mix,
                                         const float *scale, const float *base, const float *norm,
                                         int64_t d, int iters, float hc_eps, float norm_eps,
                                         float *pre, float *post, float *comb, float *a,
                                         uint8_t *q80, uint8_t *q8k, double *shd) {
    __shared__ float s_m[(2 + HC) * HC], s_pre[HC], s_post[HC], s_c[HC * HC];
    const int64_t nmix = (2 + HC) * HC;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    if (role == 1) { /* the split: pre/post/comb of MODEL_MATH §4.1-4.2 */
        if (warp) return;
        for (int64_t i = lane; i < nmix; i += 32) s_m[i] = __fmul_rn(__ldcg(mix + i), rho);
        __syncwarp();
        if (HC * HC <= 32) hc_split_reg<HC>(s_m, scale, base, HC, iters, hc_eps, s_pre, s_post, s_c);
        else hc_split_warp(s_m, scale, base, HC, iters, hc_eps, s_pre, s_post, s_c);
        __syncwarp();
        for (int k = lane; k < HC; k += 32) post[k] = s_post[k];
        for (int k = lane; k < HC * HC; k += 32) comb[k] = s_c[k];
        return;
    }
    /* pre[k] as hc_split computes it, by lane k of every warp, shared by shuffles. */
    float pl = 0.0f;
    if (lane < HC)
        pl = __fadd_rn(cu_sigmoid_ref(__fadd_rn(__fmul_rn(__fmul_rn(__ldcg(mix + lane), rho),
                                                          scale[0]), base[lane])), hc_eps);
    float p[HC];
#pragma unroll
    for (int k = 0; k < HC; k++) p[k] = __shfl_sync(0xffffffffu, pl, k);
    if (warp == 0 && lane < HC) pre[lane] = pl;
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
#pragma unroll
    for (int j = 0; j < EPT; j++) {
        int64_t i = (int64_t)j * HCD_THREADS + tid;
        float y = __fmul_rn(v[j], r);
        v[j] = norm ? __fmul_rn(norm[i], y) : y;
        a[i] = v[j];
    }
    /* Q8_0 record j·(blockDim/32) + warp is this warp's 32 values of slot j. */
    if (q80)
#pragma unroll
        for (int j = 0; j < EPT; j++)
            q8act_warp(v[j], q80 + (j * (HCD_THREADS / 32) + warp) * CU_Q8_0ACT_BYTES);
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
}

/* ρ = rms_inv of the hc·d values of X held as x (hcd_tail's order of cu_block_rms_inv). */
template <int HC, int EPT>
__device__ __forceinline__ float hcd_rho(const float *x, int64_t d, float norm_eps, double *shd) {
    return ref_rms_inv(ref_dsum_value(cu_block_dsum(hcd_sumsq<HC * EPT>(x), shd)), HC * d, norm_eps);
}

template <int HC, int EPT>
__global__ void __launch_bounds__(HCD_THREADS)
k_hc_pre_dec(const float *X, const float *mix, const float *scale, const float *base,
             const float *norm, int64_t d, int iters, float hc_eps, float norm_eps, float *pre,
             float *post, float *comb, float *a, uint8_t *q80, uint8_t *q8k) {
    cu_pdl_wait();
    __shared__ double shd[32];
    const int64_t t = blockIdx.x, nmix = (2 + HC) * HC;
    const int tid = threadIdx.x;
    const float *Xt = X + t * HC * d;
    float x[HC * EPT]; /* x[k·EPT + j] = X[k][j·blockDim + tid]: flat index (k·EPT+j)·blockDim + tid */
#pragma unroll
    for (int f = 0; f < HC * EPT; f++) x[f] = Xt[(int64_t)f * HCD_THREADS + tid];
    const float rho = hcd_rho<HC, EPT>(x, d, norm_eps, shd);
    hcd_tail<HC, EPT>((int)blockIdx.y, x, rho, mix + t * nmix, scale, base, norm, d, iters, hc_eps,
                      norm_eps, pre + t * HC, post + t * HC, comb + t * HC * HC, a + t * d,
                      q80 ? q80 + t * (d / 32) * CU_Q8_0ACT_BYTES : NULL,
                      q8k ? q8k + t * (d / 256) * CU_Q8_K_BYTES : NULL, shd);
}

/* Launches the decode kernel when (hc, d, n_tok) has an instance; 0 when it does not. */
static int hc_pre_dec(const float *X, const float *mix, const float *scale, const float *base,
                      const float *norm, int64_t n_tok, int hc, int64_t d, int iters,
                      float hc_eps, float norm_eps, float *pre, float *post, float *comb,
                      float *a, uint8_t *q80, uint8_t *q8k) {
    if (n_tok >= 32 || hc != 4 || d != 4 * HCD_THREADS || n_tok > 65535) return 0;
    /* MODEL_MATH §0: Flash's hc_mult 4, n_embd 4096 */
    cu_launch(k_hc_pre_dec<4, 4>, dim3((unsigned)n_tok, 2), HCD_THREADS, 0, 
        X, mix, scale, base, norm, d, iters, hc_eps, norm_eps, pre, post, comb, a, q80, q8k);
    return 1;
}

/* Decode (a few tokens) puts one block on the whole row: more threads, shorter chains. */
static int hc_threads(int64_t n_tok) { return n_tok < 32 ? 1024 : 256; }

static ds4_status hc_check(const char *fn, int64_t n_tok, int hc, int64_t d, ds4_error *err) {
    if (hc < 1 || hc > HC_MAX || hc * hc > 256 || d <= 0 || n_tok > INT32_MAX)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "%s: hc = %d (1..%d), d = %lld", fn, hc,
                          HC_MAX, (long long)d);
    return DS4_OK;
}

extern "C" ds4_status cuda_hc_pre(const float *d_X, const float *d_mix, const float *d_scale,
                                  const float *d_base, const float *d_norm, int64_t n_tok,
                                  int hc, int64_t d, int iters, float hc_eps, float norm_eps,
                                  float *d_pre, float *d_post, float *d_comb, float *d_a,
                                  ds4_error *err) {
    if (n_tok <= 0) return DS4_OK;
    ds4_status st = hc_check("cuda_hc_pre", n_tok, hc, d, err);
    if (st) return st;
    if (!hc_pre_dec(d_X, d_mix, d_scale, d_base, d_norm, n_tok, hc, d, iters, hc_eps, norm_eps,
                    d_pre, d_post, d_comb, d_a, NULL, NULL))
        cu_launch(k_hc_pre, (unsigned)n_tok, hc_threads(n_tok), 0, d_X, d_mix, d_scale, d_base, d_norm, hc, d,
                                           iters, hc_eps, norm_eps, d_pre, d_post, d_comb, d_a, NULL, NULL);
    CU_LAUNCH_CHECK(err, "hc_pre launch");
    return DS4_OK;
}

extern "C" ds4_status cuda_hc_pre_quant(const float *d_X, const float *d_mix, const float *d_scale,
                                        const float *d_base, const float *d_norm, int64_t n_tok,
                                        int hc, int64_t d, int iters, float hc_eps, float norm_eps,
                                        float *d_pre, float *d_post, float *d_comb, float *d_a,
                                        void *d_q80, void *d_q8k, ds4_error *err) {
    if (n_tok <= 0) return DS4_OK;
    ds4_status st = hc_check("cuda_hc_pre_quant", n_tok, hc, d, err);
    if (st) return st;
    if ((d_q80 && d % 32) || (d_q8k && d % 256))
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_hc_pre_quant: d = %lld is not a multiple of "
                          "the quantizer's block", (long long)d);
    if (!hc_pre_dec(d_X, d_mix, d_scale, d_base, d_norm, n_tok, hc, d, iters, hc_eps, norm_eps,
                    d_pre, d_post, d_comb, d_a, (uint8_t *)d_q80, (uint8_t *)d_q8k))
        cu_launch(k_hc_pre, (unsigned)n_tok, hc_threads(n_tok), 0, d_X, d_mix, d_scale, d_base, d_norm, hc, d,
                                           iters, hc_eps, norm_eps, d_pre, d_post, d_comb, d_a,
                                           (uint8_t *)d_q80, (uint8_t *)d_q8k);
    CU_LAUNCH_CHECK(err, "hc_pre launch");
    return DS4_OK;
}

/* MODEL_MATH §4.3: Xout[k] = post[k]·f + Σ_j comb[j][k]·X[j] (j ascending). */
__global__ void k_hc_post(const float *f, const float *X, const float *post, const float *comb,
                          int64_t n_tok, int hc, int64_t d, float *Xout) {
    cu_pdl_wait();
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_tok * hc * d) return;
    int64_t t = i / (hc * d), k = (i / d) % hc, c = i % d;
    const float *Xt = X + t * hc * d, *cm = comb + t * hc * hc;
    float s = __fmul_rn(post[t * hc + k], f[t * d + c]);
    for (int j = 0; j < hc; j++) s = __fadd_rn(s, __fmul_rn(cm[j * hc + k], Xt[(int64_t)j * d + c]));
    Xout[i] = s;
}

extern "C" ds4_status cuda_hc_post(const float *d_f, const float *d_X, const float *d_post,
                                   const float *d_comb, int64_t n_tok, int hc, int64_t d,
                                   float *d_Xout, ds4_error *err) {
    if (n_tok <= 0) return DS4_OK;
    ds4_status st = hc_check("cuda_hc_post", n_tok, hc, d, err);
    if (st) return st;
    int64_t n = n_tok * hc * d;
    cu_launch(k_hc_post, cu_blocks(n, 256), 256, 0, d_f, d_X, d_post, d_comb, n_tok, hc, d, d_Xout);
    CU_LAUNCH_CHECK(err, "hc_post launch");
    return DS4_OK;
}

/* MODEL_MATH §4.4 + §10 norm: pre = σ(ρ·m·scale0 + base) + eps, y = norm(Σ pre[k]·X[k]). */
__global__ void k_hc_head(const float *X, const float *mix, const float *scale, const float *base,
                          const float *norm, int hc, int64_t d, float hc_eps, float norm_eps,
                          float *y) {
    cu_pdl_wait();
    __shared__ double shd[32];
    __shared__ float s_pre[HC_MAX];
    int64_t t = blockIdx.x;
    const float *Xt = X + t * hc * d;
    float rho = cu_block_rms_inv(Xt, hc * d, norm_eps, shd);
    if (threadIdx.x < hc) {
        int k = threadIdx.x;
        float m = __fmul_rn(mix[t * hc + k], rho);
        s_pre[k] = __fadd_rn(cu_sigmoid_ref(__fadd_rn(__fmul_rn(m, scale[0]), base[k])), hc_eps);
    }
    __syncthreads();
    hc_sum_norm(Xt, s_pre, hc, d, norm, norm_eps, y + t * d, shd);
}

extern "C" ds4_status cuda_hc_head(const float *d_X, const float *d_mix, const float *d_scale,
                                   const float *d_base, const float *d_norm, int64_t n_tok,
                                   int hc, int64_t d, float hc_eps, float norm_eps, float *d_y,
                                   ds4_error *err) {
    if (n_tok <= 0) return DS4_OK;
    ds4_status st = hc_check("cuda_hc_head", n_tok, hc, d, err);
    if (st) return st;
    cu_launch(k_hc_head, (unsigned)n_tok, hc_threads(n_tok), 0, d_X, d_mix, d_scale, d_base, d_norm, hc, d, hc_eps,
                                        norm_eps, d_y);
    CU_LAUNCH_CHECK(err, "hc_head launch");
    return DS4_OK;
}

/* ---- hc_post, the next HC mix and hc_pre in one launch (issue #7: fewer decode launches) ----
 * A decode layer ran hc_post (X2 = post·f + comb·X), the mix m = fn·X2 (cuda_matvec, F32,
 * 24 x 16384 on Flash) and hc_pre (k_hc_pre_dec) as three launches of a few us each. k_hc_mix
 * does the three: every mix block forms the X2 values of the units it reads with k_hc_post's
 * operations (so the same bits; fn's rows read X2 anyway), and its products are the CPU's
 * (format/quant_dot.c q_dot_f32/f16: lane i%8 adds the rounded product w_i·x_i, then the
 * lanes' combine), as matvec_dense.cu computes them: one block per mix row, warps 1..31 compute
 * chunk k's products into shared memory (each loader one 4-value unit per chunk, its next
 * unit's loads issued first) while lanes 0..7 of warp 0 add chunk k-1's in column order, so mix
 * equals cuda_matvec's and the CPU's. With `pre` (Flash's hc 4 x 4096 only) two more blocks run
 * k_hc_pre_dec's roles: they load X2 and compute ρ while the mix blocks work, then wait on a
 * device counter for the mix rows (the grid is small, all its blocks are resident together:
 * PDL releases the next grid only once every block of this one has started), and block role 0
 * writes X2 to Xout. Role 1 overwrites post/comb, so it waits for role 0 too (the mix blocks
 * read the old post/comb before they count). One counter serves every launch: launches on the
 * stream never overlap (cu_pdl_wait), and the last of the two waiting blocks resets it. */

#define HCM_LOADERS (HCD_THREADS - 32)
#define HCM_C (4 * HCM_LOADERS) /* values per chunk: one 4-value unit per loader (a multiple of 8) */
#define HCM_T (HCM_C / 8 + 4)   /* a CPU lane's chain in a chunk buffer (an odd multiple of 4) */

struct hcm_args {
    const uint8_t *fn;                /* [rows][cols] F32 or F16, cols = hc·d */
    const float *X, *f, *post, *comb; /* X [hc][d]; f NULL: no pending hc_post */
    float *Xout;                      /* X2 (with f) */
    float *mix;                       /* [rows] */
    int64_t rows, cols, d;
    int hc, n_mix_blocks;
    /* hc_pre (k_hc_mix with PRE): as cuda_hc_pre_quant; post_out/comb_out may be post/comb */
    const float *scale, *base, *norm;
    int iters;
    float hc_eps, norm_eps;
    float *pre, *post_out, *comb_out, *a;
    uint8_t *q80, *q8k;
};

__device__ unsigned int g_hcm_count;

/* The 4 values of X2 at stream k, columns c..c+3 (c a multiple of 4): k_hc_post's operations
 * per value (post·f first, then comb[j][k]·X[j] for j ascending). The caller tracks (k, c)
 * without dividing (issue #7: a 64-bit division per unit cost more than the mix). */
__device__ __forceinline__ float4 hcm_x4(const hcm_args &a, int64_t k, int64_t c) {
    const float4 fv = *(const float4 *)(a.f + c);
    const float pk = __ldg(a.post + k);
    float4 s = make_float4(__fmul_rn(pk, fv.x), __fmul_rn(pk, fv.y), __fmul_rn(pk, fv.z), __fmul_rn(pk, fv.w));
    for (int j = 0; j < a.hc; j++) {
        const float cj = __ldg(a.comb + j * a.hc + k);
        const float4 xv = *(const float4 *)(a.X + (int64_t)j * a.d + c);
        s.x = __fadd_rn(s.x, __fmul_rn(cj, xv.x));
        s.y = __fadd_rn(s.y, __fmul_rn(cj, xv.y));
        s.z = __fadd_rn(s.z, __fmul_rn(cj, xv.z));
        s.w = __fadd_rn(s.w, __fmul_rn(cj, xv.w));
    }
    return s;
}

/* Waits until the counter reaches `target` (thread 0; a bound turns a hang into an error). */
__device__ __forceinline__ void hcm_wait(unsigned target) {
    if (threadIdx.x == 0) {
        unsigned n = 0;
        while (*(volatile unsigned *)&g_hcm_count < target) {
            __nanosleep(32);
            if (++n == (1u << 28)) __trap();
        }
        __threadfence();
    }
    __syncthreads();
}

/* Role r of k_hc_pre_dec on X2 (see above). */
template <int HC, int EPT>
__device__ void hcm_pre_block(const hcm_args &a, int role) {
    __shared__ double shd[32];
    const int tid = threadIdx.x;
    float x[HC * EPT]; /* flat index f·blockDim + tid: stream f / EPT, column (f % EPT)·blockDim + tid */
    if (a.f) {
        float pk[HC], cm[HC * HC];
#pragma unroll
        for (int k = 0; k < HC; k++) pk[k] = __ldg(a.post + k);
#pragma unroll
        for (int k = 0; k < HC * HC; k++) cm[k] = __ldg(a.comb + k);
#pragma unroll
        for (int f = 0; f < HC * EPT; f++) {
            const int k = f / EPT;
            const int64_t c = (int64_t)(f % EPT) * HCD_THREADS + tid;
            float v = __fmul_rn(pk[k], a.f[c]);
#pragma unroll
            for (int j = 0; j < HC; j++) v = __fadd_rn(v, __fmul_rn(cm[j * HC + k], a.X[(int64_t)j * a.d + c]));
            x[f] = v;
            if (role == 0) a.Xout[(int64_t)f * HCD_THREADS + tid] = v;
        }
    } else {
#pragma unroll
        for (int f = 0; f < HC * EPT; f++) x[f] = a.X[(int64_t)f * HCD_THREADS + tid];
    }
    const unsigned P = (unsigned)a.n_mix_blocks + 1; /* mix blocks + role 0 */
    if (role == 0) { /* role 0 has read post/comb: count it with the mix blocks */
        __syncthreads();
        if (tid == 0) atomicAdd(&g_hcm_count, 1u);
    }
    const float rho = hcd_rho<HC, EPT>(x, a.d, a.norm_eps, shd);
    hcm_wait(P);
    if (tid == 0 && atomicAdd(&g_hcm_count, 1u) == P + 1) atomicExch(&g_hcm_count, 0u);
    hcd_tail<HC, EPT>(role, x, rho, a.mix, a.scale, a.base, a.norm, a.d, a.iters, a.hc_eps,
                      a.norm_eps, a.pre, a.post_out, a.comb_out, a.a, a.q80, a.q8k, shd);
}

/* Loader: unit u (4 values at column col = 4u of fn's row and of X2) of stream k, column c of
 * X2 (pending hc_post); w: its fn words (F16: the first two). */
template <int T>
__device__ __forceinline__ void hcm_fetch(const hcm_args &a, const uint8_t *wr, int64_t col,
                                          int64_t k, int64_t c, uint4 *w, float4 *x) {
    if (T == CU_T_F32) {
        *w = __ldg((const uint4 *)(wr + col * 4));
    } else {
        const uint2 h = __ldg((const uint2 *)(wr + col * 2));
        *w = make_uint4(h.x, h.y, 0u, 0u);
    }
    *x = a.f ? hcm_x4(a, k, c) : *(const float4 *)(a.X + col);
}

/* T: fn's type (F32, F16); PRE: the last two blocks run hc_pre. One block of HCD_THREADS per
 * mix row; the chunk buffers (2 x 8 lanes x HCM_T floats: value v of a chunk at (v % 8)·HCM_T
 * + v / 8, each CPU lane's chain contiguous) are dynamic shared memory. */
template <int T, bool PRE>
__global__ void __launch_bounds__(HCD_THREADS) k_hc_mix(hcm_args a) {
    cu_pdl_wait();
    if (PRE && (int)blockIdx.x >= a.n_mix_blocks) {
        hcm_pre_block<4, 4>(a, (int)blockIdx.x - a.n_mix_blocks);
        return;
    }
    extern __shared__ __align__(16) float hcm_buf[]; /* [2][8][HCM_T] */
    const int64_t row = blockIdx.x;
    const int lt = (int)threadIdx.x - 32, lane = threadIdx.x & 31;
    /* without PRE the first row's block writes X2 (its loaders visit every unit once) */
    const bool writer = !PRE && a.f && blockIdx.x == 0;
    const uint8_t *wr = a.fn + row * a.cols * (T == CU_T_F32 ? 4 : 2);
    const int n_chunks = (int)((a.cols + HCM_C - 1) / HCM_C);
    /* this loader's column in chunk 0, its X2 stream and column (advanced by HCM_C a chunk) */
    int64_t col = 4 * (int64_t)lt, k = 0, c = col;
    if (a.f && lt >= 0) {
        k = c / a.d;
        c -= k * a.d;
    }
    uint4 wn = make_uint4(0u, 0u, 0u, 0u);
    float4 xn = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (lt >= 0 && col < a.cols) hcm_fetch<T>(a, wr, col, k, c, &wn, &xn);
    float acc = 0.0f;
    for (int q = 0; q <= n_chunks; q++) {
        if (lt >= 0) {
            if (q < n_chunks && col < a.cols) {
                const uint4 w = wn;
                const float4 x = xn;
                const int64_t cur = col;
                col += HCM_C;
                for (c += HCM_C; a.f && c >= a.d; c -= a.d) k++;
                if (col < a.cols) hcm_fetch<T>(a, wr, col, k, c, &wn, &xn); /* the next chunk's unit */
                if (writer) *(float4 *)(a.Xout + cur) = x;
                float wf[4];
                if (T == CU_T_F32) {
                    wf[0] = __uint_as_float(w.x); wf[1] = __uint_as_float(w.y);
                    wf[2] = __uint_as_float(w.z); wf[3] = __uint_as_float(w.w);
                } else {
                    wf[0] = __half2float(__ushort_as_half((unsigned short)(w.x & 0xFFFFu)));
                    wf[1] = __half2float(__ushort_as_half((unsigned short)(w.x >> 16)));
                    wf[2] = __half2float(__ushort_as_half((unsigned short)(w.y & 0xFFFFu)));
                    wf[3] = __half2float(__ushort_as_half((unsigned short)(w.y >> 16)));
                }
                float *dst = hcm_buf + (q & 1) * 8 * HCM_T + (lt >> 1);
                const int l0 = (4 * lt) & 7;
                dst[l0 * HCM_T] = __fmul_rn(wf[0], x.x);
                dst[(l0 + 1) * HCM_T] = __fmul_rn(wf[1], x.y);
                dst[(l0 + 2) * HCM_T] = __fmul_rn(wf[2], x.z);
                dst[(l0 + 3) * HCM_T] = __fmul_rn(wf[3], x.w);
            }
        } else if (q > 0 && lane < 8) { /* chain lanes: column ≡ lane (mod 8), in order */
            const int64_t c0 = (int64_t)(q - 1) * HCM_C;
            const int cb = (int)(a.cols - c0 < HCM_C ? a.cols - c0 : HCM_C);
            acc = mvd_chain(acc, hcm_buf + ((q - 1) & 1) * 8 * HCM_T + lane * HCM_T,
                            cb / 8 + (lane < cb % 8));
        }
        __syncthreads();
    }
    if (lt < 0) {
        acc = cu_lanes8_qdot(acc);
        if (lane == 0) a.mix[row] = acc;
    }
    if (PRE) { /* this block's row is written: count it */
        __threadfence();
        __syncthreads();
        if (threadIdx.x == 0) atomicAdd(&g_hcm_count, 1u);
    }
}

template <int T, bool PRE>
static ds4_status hcm_launch(const hcm_args &a0, ds4_error *err) {
    hcm_args a = a0;
    a.n_mix_blocks = (int)a.rows;
    const size_t smem = 2 * 8 * HCM_T * sizeof(float);
    static bool set = false; /* static shared (hc_pre's roles) + this may pass 48 KiB */
    if (!set) {
        CU_CHECK(cudaFuncSetAttribute(k_hc_mix<T, PRE>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      (int)smem), err, "hc_mix shared memory");
        set = true;
    }
    cu_launch(k_hc_mix<T, PRE>, a.n_mix_blocks + (PRE ? 2 : 0), HCD_THREADS, smem, a);
    return DS4_OK;
}

extern "C" ds4_status cuda_hc_mix_fused(int fn_type, const void *d_fn, int64_t rows,
                                        const float *d_X, const float *d_f, const float *d_post,
                                        const float *d_comb, float *d_Xout, int hc, int64_t d,
                                        float *d_mix,
                                        const float *d_scale, const float *d_base,
                                        const float *d_norm, int iters, float hc_eps,
                                        float norm_eps, float *d_pre, float *d_post_out,
                                        float *d_comb_out, float *d_a, void *d_q80, void *d_q8k,
                                        int one_launch, ds4_error *err) {
    ds4_status st = hc_check("cuda_hc_mix_fused", 1, hc, d, err);
    if (st) return st;
    const int64_t cols = hc * d;
    if (rows <= 0 || cuda_act_kind(fn_type) != CUDA_ACT_F32 ||
        (d_f && (!d_post || !d_comb || !d_Xout || d_Xout == d_X)) ||
        (d_q80 && d % 32) || (d_q8k && d % 256))
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_hc_mix_fused: %lld rows, hc %d, d %lld",
                          (long long)rows, hc, (long long)d);
    const float *X2 = d_f ? d_Xout : d_X; /* the streams hc_pre and the mix read */
    /* 4-value units of F32 / F16 rows, 16-byte aligned; other types and the unaligned cases
     * (and a grid too large for one block per row): the separate ops. */
    const bool vec = (fn_type == CU_T_F32 || fn_type == CU_T_F16) && d % 4 == 0 &&
                     ((uintptr_t)d_fn & 15) == 0 && ((uintptr_t)d_X & 15) == 0 &&
                     (!d_f || (((uintptr_t)d_f & 15) == 0 && ((uintptr_t)d_Xout & 15) == 0));
    if (!vec || rows > 65535) {
        if (d_f && (st = cuda_hc_post(d_f, d_X, d_post, d_comb, 1, hc, d, d_Xout, err))) return st;
        if ((st = cuda_matvec(fn_type, d_fn, rows, cols, X2, NULL, d_mix, err))) return st;
        if (!d_scale) return DS4_OK;
        return cuda_hc_pre_quant(X2, d_mix, d_scale, d_base, d_norm, 1, hc, d, iters, hc_eps,
                                 norm_eps, d_pre, d_post_out, d_comb_out, d_a, d_q80, d_q8k, err);
    }
    hcm_args a;
    a.fn = (const uint8_t *)d_fn;
    a.X = d_X;
    a.f = d_f;
    a.post = d_post;
    a.comb = d_comb;
    a.Xout = d_Xout;
    a.mix = d_mix;
    a.rows = rows;
    a.cols = cols;
    a.d = d;
    a.hc = hc;
    a.n_mix_blocks = 0;
    a.scale = d_scale;
    a.base = d_base;
    a.norm = d_norm;
    a.iters = iters;
    a.hc_eps = hc_eps;
    a.norm_eps = norm_eps;
    a.pre = d_pre;
    a.post_out = d_post_out;
    a.comb_out = d_comb_out;
    a.a = d_a;
    a.q80 = (uint8_t *)d_q80;
    a.q8k = (uint8_t *)d_q8k;
    /* hc_pre inside: k_hc_pre_dec's shape (MODEL_MATH §0: Flash's hc 4, n_embd 4096), and one
     * SM for each of the grid's blocks (1024 threads at up to 64 registers: one block per SM),
     * so the waiting blocks can never hold an SM a mix block needs */
    int dev = 0, n_sm = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
        n_sm = 0;
    const bool pre = one_launch && d_scale && hc == 4 && d == 4 * HCD_THREADS && n_sm >= rows + 2;
    st = fn_type == CU_T_F32 ? (pre ? hcm_launch<CU_T_F32, true>(a, err) : hcm_launch<CU_T_F32, false>(a, err))
                             : (pre ? hcm_launch<CU_T_F16, true>(a, err) : hcm_launch<CU_T_F16, false>(a, err));
    if (st) return st;
    CU_LAUNCH_CHECK(err, "hc_mix launch");
    if (!d_scale || pre) return DS4_OK;
    return cuda_hc_pre_quant(X2, d_mix, d_scale, d_base, d_norm, 1, hc, d, iters, hc_eps, norm_eps,
                             d_pre, d_post_out, d_comb_out, d_a, d_q80, d_q8k, err);
}
