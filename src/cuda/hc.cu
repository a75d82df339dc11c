/*
 * cuda/hc.cu — hyper-connections on the device (MODEL_MATH §4): hc_pre (ρ, the pre/post/comb
 * split with Sinkhorn, the weighted stream sum and the sub-layer RMSNorm), hc_post, hc_head.
 * The mixes m = fn·X are a plain matvec done by the caller (cuda_matvec), as in the CPU path
 * (model/forward.c fwd_hc_pre); the decode site that runs the pending hc_post, the mix and hc_pre
 * in one launch is hc_mix.cu (cuda_hc_mix_fused). Same steps and order as model/hc.c; the split
 * and the decode hc_pre's pieces are hc_impl.cuh, shared with hc_mix.cu.
 * Must not: know layer structure.
 */
#include "hc_impl.cuh"

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
    __shared__ float s_sc[3], s_ba[(2 + HC) * HC];
    hcd_in<EPT> in;
    hcd_load<HC, EPT>((int)blockIdx.y, scale, base, norm, &in, s_sc, s_ba);
    const float rho = hcd_rho<HC, EPT>(x, d, norm_eps, shd); /* its barriers publish s_sc, s_ba */
    hcd_tail<HC, EPT>((int)blockIdx.y, x, rho, mix + t * nmix, in, s_sc, s_ba, norm != NULL, d, iters,
                      hc_eps, norm_eps, pre + t * HC, post + t * HC, comb + t * HC * HC, a + t * d,
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