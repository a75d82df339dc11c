/*
 * cuda/hc.cu — hyper-connections on the device (MODEL_MATH §4): hc_pre (ρ, the pre/post/comb
 * split with Sinkhorn, the weighted stream sum and the sub-layer RMSNorm), hc_post, hc_head.
 * The mixes m = fn·X are a plain matvec done by the caller (cuda_matvec), as in the CPU path
 * (model/forward.c fwd_hc_pre). Same steps and order as model/hc.c.
 * Must not: run the fn projection or know layer structure.
 */
#include "cuda_api.h"
#include "ops.cuh"

#define HC_MAX 16

/* model/hc.c hc_split, one thread: pre, post, and comb through the row softmax and the
 * column/row Sinkhorn rounds of MODEL_MATH §4.2. */
__device__ static void hc_split_dev(const float *m, const float *scale, const float *base, int hc,
                                    int iters, float eps, float *pre, float *post, float *comb) {
    for (int k = 0; k < hc; k++) {
        pre[k] = __fadd_rn(cu_sigmoid_ref(__fadd_rn(__fmul_rn(m[k], scale[0]), base[k])), eps);
        post[k] = __fmul_rn(2.0f, cu_sigmoid_ref(__fadd_rn(__fmul_rn(m[hc + k], scale[1]),
                                                           base[hc + k])));
    }
    for (int j = 0; j < hc; j++)
        for (int k = 0; k < hc; k++)
            comb[j * hc + k] = __fadd_rn(__fmul_rn(m[2 * hc + j * hc + k], scale[2]),
                                         base[2 * hc + j * hc + k]);
    for (int j = 0; j < hc; j++) {
        float *row = comb + j * hc;
        float mx = row[0];
        for (int k = 1; k < hc; k++) if (row[k] > mx) mx = row[k];
        float s = 0.0f;
        for (int k = 0; k < hc; k++) { row[k] = cu_exp_ref(__fsub_rn(row[k], mx)); s = __fadd_rn(s, row[k]); }
        for (int k = 0; k < hc; k++) row[k] = __fadd_rn(__fdiv_rn(row[k], s), eps);
    }
    for (int it = 0; it < iters; it++) {
        if (it > 0) {
            for (int j = 0; j < hc; j++) {
                float s = 0.0f;
                for (int k = 0; k < hc; k++) s = __fadd_rn(s, comb[j * hc + k]);
                for (int k = 0; k < hc; k++) comb[j * hc + k] = __fdiv_rn(comb[j * hc + k], __fadd_rn(s, eps));
            }
        }
        for (int k = 0; k < hc; k++) {
            float s = 0.0f;
            for (int j = 0; j < hc; j++) s = __fadd_rn(s, comb[j * hc + k]);
            for (int j = 0; j < hc; j++) comb[j * hc + k] = __fdiv_rn(comb[j * hc + k], __fadd_rn(s, eps));
        }
    }
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

/* One block per token: model/forward.c fwd_hc_pre after its matmul. */
__global__ void k_hc_pre(const float *X, const float *mix, const float *scale, const float *base,
                         const float *norm, int hc, int64_t d, int iters, float hc_eps,
                         float norm_eps, float *pre, float *post, float *comb, float *a) {
    __shared__ double shd[32];
    __shared__ float s_pre[HC_MAX], s_m[(2 + HC_MAX) * HC_MAX];
    int64_t t = blockIdx.x, nmix = (int64_t)(2 + hc) * hc;
    const float *Xt = X + t * hc * d;
    float rho = cu_block_rms_inv(Xt, hc * d, norm_eps, shd);
    if (threadIdx.x == 0) {
        for (int64_t i = 0; i < nmix; i++) s_m[i] = __fmul_rn(mix[t * nmix + i], rho);
        float p[HC_MAX], q[HC_MAX], c[HC_MAX * HC_MAX];
        hc_split_dev(s_m, scale, base, hc, iters, hc_eps, p, q, c);
        for (int k = 0; k < hc; k++) {
            s_pre[k] = p[k];
            pre[t * hc + k] = p[k];
            post[t * hc + k] = q[k];
        }
        for (int k = 0; k < hc * hc; k++) comb[t * hc * hc + k] = c[k];
    }
    __syncthreads();
    hc_sum_norm(Xt, s_pre, hc, d, norm, norm_eps, a + t * d, shd);
}

static ds4_status hc_check(const char *fn, int64_t n_tok, int hc, int64_t d, ds4_error *err) {
    if (hc < 1 || hc > HC_MAX || d <= 0 || n_tok > INT32_MAX)
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
    k_hc_pre<<<(unsigned)n_tok, 256>>>(d_X, d_mix, d_scale, d_base, d_norm, hc, d, iters,
                                       hc_eps, norm_eps, d_pre, d_post, d_comb, d_a);
    CU_LAUNCH_CHECK(err, "hc_pre launch");
    return DS4_OK;
}

/* MODEL_MATH §4.3: Xout[k] = post[k]·f + Σ_j comb[j][k]·X[j] (j ascending). */
__global__ void k_hc_post(const float *f, const float *X, const float *post, const float *comb,
                          int64_t n_tok, int hc, int64_t d, float *Xout) {
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
    k_hc_post<<<cu_blocks(n, 256), 256>>>(d_f, d_X, d_post, d_comb, n_tok, hc, d, d_Xout);
    CU_LAUNCH_CHECK(err, "hc_post launch");
    return DS4_OK;
}

/* MODEL_MATH §4.4 + §10 norm: pre = σ(ρ·m·scale0 + base) + eps, y = norm(Σ pre[k]·X[k]). */
__global__ void k_hc_head(const float *X, const float *mix, const float *scale, const float *base,
                          const float *norm, int hc, int64_t d, float hc_eps, float norm_eps,
                          float *y) {
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
    k_hc_head<<<(unsigned)n_tok, 256>>>(d_X, d_mix, d_scale, d_base, d_norm, hc, d, hc_eps,
                                        norm_eps, d_y);
    CU_LAUNCH_CHECK(err, "hc_head launch");
    return DS4_OK;
}
