/*
 * cuda/sample_dev.cu — ds4_sampler_sample (model/sampling.c) on device logits, same token bit for
 * bit (issue #7). The host draws the uniform and sends the plan (smp_plan); only the id comes
 * back. Must not: own the PRNG, or differ from sampling.c in any comparison or rounding.
 *
 * Steps (sampling.c order, then why each is exact):
 *  1. penalties: a copy of the logits with each history token's logit changed as
 *     apply_penalties does (float ops, __f*_rn: no contraction);
 *  2. greedy shortcut: argmax (sample.cu, ds4_argmax's semantics);
 *  3. lmax = the argmax's logit; S = { finite i : p_i >= min_p }, p_i = smp_exp((l_i - lmax)·(1/T))
 *     in double, the host's expression and the same exp (model/smp_exp.h); with top-k, the
 *     bin of the k-th best key from a 16-bit histogram of order-preserving keys;
 *  4. U = { finite i : l_i >= min over S, and key_i >= that bin's floor }: every token that
 *     ranks before a member of U is in U, so a token's place in U sorted by (logit desc, id asc)
 *     is its place in the whole vocabulary — top-k is "place < k". U is collected in any order
 *     (atomics) and then sorted, so the result does not depend on the collection order;
 *  5. one block sorts U (bitonic, by (logit desc, id asc), or by id when the host keeps id order:
 *     top_k 0 and top_p off), recomputes p, and one thread runs the host's running sums
 *     (sampling.c invariant 4: by blocks of SMP_SUM_BLOCK) for the top-p cut, u·total and the
 *     walk, with the same double operations in the same order.
 * More than CUDA_SAMPLE_MAX_CAND members of U: in id order, the sums of invariant 4 need no
 * sort (k_sd_big_sum: one block of the vocabulary per CUDA block; k_sd_big_final: the blocks'
 * running total and the walk in the block where u·total falls); in sorted order the answer is
 * CUDA_SAMPLE_HOST.
 */
#include "cuda_api.h"
#include "ops.cuh"
#include "sample_dev.h"

#include "model/smp_exp.h"

#define SD_BINS 65536     /* histogram of the top 16 bits of the order key */
#define SD_THREADS 256
#define SD_FIN_THREADS 1024

/* Device control block, reset at the start of each draw. */
struct sd_ctl {
    unsigned int vmin_key;  /* min order key over S */
    unsigned int thr_key;   /* floor of the k-th best's bin (0: no top-k) */
    unsigned int n_u;       /* members of U seen (may exceed the buffer) */
    int out;                /* the token, -1 or CUDA_SAMPLE_HOST */
    int last_id;            /* big id-order path: the highest kept id */
};

struct cuda_sampler {
    int64_t n_vocab;
    float *work;                 /* penalised logits */
    int32_t *pen_tok;            /* the plan's (token, count) pairs */
    uint32_t *pen_cnt;
    uint32_t pen_cap;
    int32_t *am;                 /* argmax */
    sd_ctl *ctl;
    unsigned int *hist;          /* SD_BINS */
    unsigned long long *cand;    /* CUDA_SAMPLE_MAX_CAND words: (~key << 32) | id */
    double *blk;                 /* big id-order path: each block's sum (n_vocab / SMP_SUM_BLOCK) */
};

/* Parameters of one draw, by value. */
struct sd_par {
    int n;
    int top_k;
    int top_p_on;
    double inv_t, min_p, top_p, u;
};

/* Order-preserving key of a float (-0 taken as +0: the host compares with ==). */
__device__ __forceinline__ unsigned int sd_key(float v) {
    unsigned int u = v == 0.0f ? 0u : __float_as_uint(v);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float sd_unkey(unsigned int k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

/* sampling.c: p = exp(((double)l - (double)lmax) * inv_t), with smp_exp. */
__device__ __forceinline__ double sd_prob(float l, float lmax, double inv_t) {
    return smp_exp(__dmul_rn(__dsub_rn((double)l, (double)lmax), inv_t));
}

__global__ void k_sd_copy(const float *x, float *y, int n) {
    cu_pdl_wait();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) y[i] = x[i];
}

/* apply_penalties on the copy: each distinct token once (no two threads share a token). */
__global__ void k_sd_penalty(float *w, const int32_t *tok, const uint32_t *cnt, int n_pen, float rp,
                             float pp, float fp) {
    cu_pdl_wait();
    for (int j = threadIdx.x; j < n_pen; j += blockDim.x) {
        float l = w[tok[j]];
        if (rp != 1.0f) l = l > 0 ? __fdiv_rn(l, rp) : __fmul_rn(l, rp);
        l = __fsub_rn(l, __fadd_rn(pp, __fmul_rn((float)cnt[j], fp)));
        w[tok[j]] = l;
    }
}

__global__ void k_sd_reset(sd_ctl *c, unsigned int *hist, int clear_hist) {
    cu_pdl_wait();
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i == 0) {
        c->vmin_key = 0xffffffffu;
        c->thr_key = 0;
        c->n_u = 0;
        c->out = -1;
        c->last_id = -1;
    }
    if (clear_hist)
        for (; i < SD_BINS; i += gridDim.x * blockDim.x) hist[i] = 0;
}

/* S's smallest key; with top-k the histogram of every finite key. */
__global__ void k_sd_minp(const float *x, const int32_t *am, sd_par P, sd_ctl *c, unsigned int *hist) {
    cu_pdl_wait();
    __shared__ unsigned int s_min;
    if (threadIdx.x == 0) s_min = 0xffffffffu;
    __syncthreads();
    int best = *am;
    if (best < 0) return;
    float lmax = x[best];
    unsigned int mn = 0xffffffffu;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < P.n; i += gridDim.x * blockDim.x) {
        float l = x[i];
        if (!isfinite(l)) continue;
        unsigned int k = sd_key(l);
        if (P.top_k > 0) atomicAdd(&hist[k >> 16], 1u);
        if (sd_prob(l, lmax, P.inv_t) >= P.min_p && k < mn) mn = k;
    }
    atomicMin(&s_min, mn);
    __syncthreads();
    if (threadIdx.x == 0 && s_min != 0xffffffffu) atomicMin(&c->vmin_key, s_min);
}

/* top-k: the highest bin b whose count with every bin above reaches k; thr = b's floor. */
__global__ void k_sd_topk_bin(const unsigned int *hist, int k, sd_ctl *c) {
    cu_pdl_wait();
    __shared__ unsigned int s_sum[SD_FIN_THREADS];
    const int per = SD_BINS / SD_FIN_THREADS, t = threadIdx.x;
    unsigned int s = 0;
    for (int b = 0; b < per; b++) s += hist[t * per + b];
    s_sum[t] = s;
    __syncthreads();
    if (t == 0) {
        unsigned int above = 0; /* count in the ranges of threads > j */
        for (int j = SD_FIN_THREADS - 1; j >= 0; j--) {
            if (above + s_sum[j] >= (unsigned int)k) {
                for (int b = per - 1; b >= 0; b--) {
                    above += hist[j * per + b];
                    if (above >= (unsigned int)k) {
                        c->thr_key = (unsigned int)(j * per + b) << 16;
                        return;
                    }
                }
            }
            above += s_sum[j];
        }
        c->thr_key = 0; /* fewer than k finite logits: all of them */
    }
}

__global__ void k_sd_collect(const float *x, const int32_t *am, int n, sd_ctl *c,
                             unsigned long long *cand) {
    cu_pdl_wait();
    if (*am < 0) return;
    unsigned int lo = c->vmin_key > c->thr_key ? c->vmin_key : c->thr_key;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        float l = x[i];
        if (!isfinite(l)) continue;
        unsigned int k = sd_key(l);
        if (k < lo) continue;
        unsigned int slot = atomicAdd(&c->n_u, 1u);
        if (slot < CUDA_SAMPLE_MAX_CAND) cand[slot] = ((unsigned long long)(~k) << 32) | (unsigned int)i;
    }
}

__device__ __forceinline__ bool sd_after(unsigned long long a, unsigned long long b, bool by_id) {
    return by_id ? (unsigned int)a > (unsigned int)b : a > b;
}

/* Sort U, p per member, then the host's sequential sums in one thread (file comment, step 5). */
__global__ void k_sd_final(const float *x, const int32_t *am, sd_par P, sd_ctl *c,
                           const unsigned long long *cand) {
    cu_pdl_wait();
    extern __shared__ unsigned long long s_w[];
    double *s_p = (double *)(s_w + CUDA_SAMPLE_MAX_CAND);
    int best = *am;
    if (best < 0) return; /* c->out stays -1 */
    unsigned int n = c->n_u;
    bool by_id = P.top_k == 0 && !P.top_p_on; /* sampling.c keeps id order then */
    if (n > CUDA_SAMPLE_MAX_CAND) { /* id order: k_sd_big_* take it; sorted: the host */
        if (threadIdx.x == 0 && !by_id) c->out = CUDA_SAMPLE_HOST;
        return;
    }
    float lmax = x[best];
    unsigned int np = 1;
    while (np < n) np <<= 1;
    for (unsigned int i = threadIdx.x; i < np; i += blockDim.x) s_w[i] = i < n ? cand[i] : ~0ull;
    __syncthreads();
    for (unsigned int k = 2; k <= np; k <<= 1)
        for (unsigned int j = k >> 1; j > 0; j >>= 1) {
            for (unsigned int i = threadIdx.x; i < np; i += blockDim.x) {
                unsigned int ij = i ^ j;
                if (ij <= i) continue;
                unsigned long long a = s_w[i], b = s_w[ij];
                bool up = (i & k) == 0;
                if (sd_after(a, b, by_id) == up) {
                    s_w[i] = b;
                    s_w[ij] = a;
                }
            }
            __syncthreads();
        }
    /* p of each kept member, -1 for the others: below min_p, or (top-k) at place >= k */
    for (unsigned int i = threadIdx.x; i < n; i += blockDim.x) {
        float l = sd_unkey(~(unsigned int)(s_w[i] >> 32));
        double p = sd_prob(l, lmax, P.inv_t);
        bool keep = p >= P.min_p && (P.top_k == 0 || i < (unsigned int)P.top_k);
        s_p[i] = keep ? p : -1.0;
    }
    __syncthreads();
    if (threadIdx.x != 0) return;
    /* s_p[i] := acc(i) of sampling.c invariant 4 for the kept members (blocks of ids in id
     * order, of kept positions in sorted order); the others stay -1 */
    double before = 0.0, in = 0.0;
    unsigned int cur = 0, kp = 0;
    int last = -1;
    for (unsigned int i = 0; i < n; i++) {
        if (s_p[i] < 0.0) continue;
        unsigned int b = (by_id ? (unsigned int)s_w[i] : kp) / SMP_SUM_BLOCK;
        kp++;
        if (b != cur) {
            before = __dadd_rn(before, in);
            in = 0.0;
            cur = b;
        }
        in = __dadd_rn(in, s_p[i]);
        s_p[i] = __dadd_rn(before, in);
        last = (int)i;
    }
    unsigned int end = n; /* members the draw considers: [0, end) */
    if (P.top_p_on) {
        double want = __dmul_rn(P.top_p, s_p[last]);
        for (unsigned int i = 0; i < n; i++)
            if (s_p[i] >= 0.0 && s_p[i] >= want) {
                end = i + 1;
                last = (int)i;
                break;
            }
    }
    double u = __dmul_rn(P.u, s_p[last]);
    int pick = (int)(unsigned int)s_w[last]; /* invariant 3 of sampling.c */
    for (unsigned int i = 0; i < end; i++)
        if (s_p[i] >= 0.0 && u < s_p[i]) {
            pick = (int)(unsigned int)s_w[i];
            break;
        }
    c->out = pick;
}

/* Id order with more than CUDA_SAMPLE_MAX_CAND members: no sort needed. Block b sums the p of
 * the kept ids in [b·SMP_SUM_BLOCK, (b+1)·SMP_SUM_BLOCK) in id order (0.0 for the others,
 * which changes no sum), as sampling.c's running_sums does. */
__global__ void k_sd_big_sum(const float *x, const int32_t *am, sd_par P, sd_ctl *c, double *blk) {
    cu_pdl_wait();
    __shared__ double s_q[SMP_SUM_BLOCK];
    int best = *am;
    if (best < 0 || c->n_u <= CUDA_SAMPLE_MAX_CAND) return;
    float lmax = x[best];
    int i = blockIdx.x * SMP_SUM_BLOCK + threadIdx.x;
    double q = 0.0;
    if (i < P.n && isfinite(x[i])) {
        double p = sd_prob(x[i], lmax, P.inv_t);
        if (p >= P.min_p) {
            q = p;
            atomicMax(&c->last_id, i);
        }
    }
    s_q[threadIdx.x] = q;
    __syncthreads();
    if (threadIdx.x == 0) {
        double in = 0.0;
        for (int j = 0; j < (int)SMP_SUM_BLOCK; j++) in = __dadd_rn(in, s_q[j]);
        blk[blockIdx.x] = in;
    }
}

/* The blocks' running total, u·total, the first block whose end passes it, then the walk in
 * that block: acc(i) = (sum of the blocks before) + (the block's sum up to i). */
__global__ void k_sd_big_final(const float *x, const int32_t *am, sd_par P, sd_ctl *c,
                               const double *blk, int n_blk) {
    cu_pdl_wait();
    __shared__ double s_q[SMP_SUM_BLOCK];
    __shared__ int s_b;
    __shared__ double s_before, s_u;
    int best = *am;
    if (best < 0 || c->n_u <= CUDA_SAMPLE_MAX_CAND) return;
    if (threadIdx.x == 0) {
        double total = 0.0;
        for (int b = 0; b < n_blk; b++) total = __dadd_rn(total, blk[b]);
        double u = __dmul_rn(P.u, total), before = 0.0;
        s_b = -1;
        for (int b = 0; b < n_blk; b++) {
            double next = __dadd_rn(before, blk[b]);
            if (u < next) {
                s_b = b;
                break;
            }
            before = next;
        }
        s_before = before;
        s_u = u;
    }
    __syncthreads();
    int b = s_b;
    if (b < 0) { /* u·total rounded past every bound: the last kept token */
        if (threadIdx.x == 0) c->out = c->last_id;
        return;
    }
    float lmax = x[best];
    int i = b * SMP_SUM_BLOCK + threadIdx.x;
    double q = -1.0;
    if (i < P.n && isfinite(x[i])) {
        double p = sd_prob(x[i], lmax, P.inv_t);
        if (p >= P.min_p) q = p;
    }
    s_q[threadIdx.x] = q;
    __syncthreads();
    if (threadIdx.x != 0) return;
    double in = 0.0;
    int pick = c->last_id;
    for (int j = 0; j < (int)SMP_SUM_BLOCK; j++) {
        if (s_q[j] < 0.0) continue;
        in = __dadd_rn(in, s_q[j]);
        if (s_u < __dadd_rn(s_before, in)) {
            pick = b * SMP_SUM_BLOCK + j;
            break;
        }
    }
    c->out = pick;
}

extern "C" ds4_status cuda_sampler_create(cuda_sampler **out, int64_t n_vocab, ds4_error *err) {
    *out = NULL;
    if (n_vocab <= 0 || n_vocab > (1 << 30))
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_sampler: vocabulary of %lld", (long long)n_vocab);
    cuda_sampler *d = (cuda_sampler *)calloc(1, sizeof *d);
    if (!d) return ds4_seterr(err, DS4_ERR_NOMEM, "cuda_sampler: out of memory");
    d->n_vocab = n_vocab;
    ds4_status st;
    if ((st = cuda_malloc((void **)&d->work, (size_t)n_vocab * sizeof(float), err)) ||
        (st = cuda_malloc((void **)&d->am, sizeof(int32_t), err)) ||
        (st = cuda_malloc((void **)&d->ctl, sizeof(sd_ctl), err)) ||
        (st = cuda_malloc((void **)&d->hist, SD_BINS * sizeof(unsigned int), err)) ||
        (st = cuda_malloc((void **)&d->cand, CUDA_SAMPLE_MAX_CAND * sizeof(unsigned long long), err)) ||
        (st = cuda_malloc((void **)&d->blk, (size_t)(n_vocab / SMP_SUM_BLOCK + 1) * sizeof(double), err))) {
        cuda_sampler_free(d);
        return st;
    }
    int smem = CUDA_SAMPLE_MAX_CAND * (int)(sizeof(unsigned long long) + sizeof(double));
    cudaError_t e = cudaFuncSetAttribute(k_sd_final, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e != cudaSuccess) {
        cuda_sampler_free(d);
        return ds4_seterr(err, DS4_ERR_INTERNAL, "cuda_sampler: %d bytes of shared memory: %s", smem,
                          cudaGetErrorString(e));
    }
    *out = d;
    return DS4_OK;
}

extern "C" void cuda_sampler_free(cuda_sampler *d) {
    if (!d) return;
    cuda_free(d->work);
    cuda_free(d->pen_tok);
    cuda_free(d->pen_cnt);
    cuda_free(d->am);
    cuda_free(d->ctl);
    cuda_free(d->hist);
    cuda_free(d->cand);
    cuda_free(d->blk);
    free(d);
}

/* The plan's penalty pairs into device memory (grown as needed). */
static ds4_status sd_upload_pen(cuda_sampler *d, const smp_plan *p, ds4_error *err) {
    ds4_status st;
    if (p->n_pen > d->pen_cap) {
        cuda_free(d->pen_tok);
        cuda_free(d->pen_cnt);
        d->pen_tok = NULL;
        d->pen_cnt = NULL;
        d->pen_cap = 0;
        if ((st = cuda_malloc((void **)&d->pen_tok, p->n_pen * sizeof(int32_t), err)) ||
            (st = cuda_malloc((void **)&d->pen_cnt, p->n_pen * sizeof(uint32_t), err)))
            return st;
        d->pen_cap = p->n_pen;
    }
    if ((st = cuda_upload(d->pen_tok, p->pen_tok, p->n_pen * sizeof(int32_t), err))) return st;
    return cuda_upload(d->pen_cnt, p->pen_count, p->n_pen * sizeof(uint32_t), err);
}

extern "C" ds4_status cuda_sample_logits(cuda_sampler *d, const float *d_logits, const smp_plan *p,
                                         int32_t *tok, ds4_error *err) {
    if (!d || !d_logits || !p || !tok) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_sample: NULL argument");
    if ((int64_t)p->n_vocab != d->n_vocab)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_sample: plan for %u tokens, sampler for %lld",
                          p->n_vocab, (long long)d->n_vocab);
    int n = (int)p->n_vocab;
    int grid = (n + SD_THREADS - 1) / SD_THREADS;
    if (grid > 1024) grid = 1024;
    ds4_status st;
    const float *x = d_logits;
    if (p->n_pen > 0) {
        if ((st = sd_upload_pen(d, p, err))) return st;
        cu_launch(k_sd_copy, grid, SD_THREADS, 0, d_logits, d->work, n);
        CU_LAUNCH_CHECK(err, "sample: copy launch");
        cu_launch(k_sd_penalty, 1, SD_THREADS, 0, d->work, (const int32_t *)d->pen_tok,
                  (const uint32_t *)d->pen_cnt, (int)p->n_pen, p->repeat_penalty, p->presence_penalty,
                  p->frequency_penalty);
        CU_LAUNCH_CHECK(err, "sample: penalty launch");
        x = d->work;
    }
    if ((st = cuda_argmax(x, 1, n, d->am, err))) return st;
    if (p->greedy) return cuda_download(tok, d->am, sizeof(int32_t), err);
    sd_par P = {n, (int)p->top_k, p->top_p_on, p->inv_t, p->min_p, p->top_p, p->u};
    cu_launch(k_sd_reset, p->top_k ? SD_BINS / SD_THREADS : 1, SD_THREADS, 0, d->ctl, d->hist, p->top_k ? 1 : 0);
    CU_LAUNCH_CHECK(err, "sample: reset launch");
    cu_launch(k_sd_minp, grid, SD_THREADS, 0, x, (const int32_t *)d->am, P, d->ctl, d->hist);
    CU_LAUNCH_CHECK(err, "sample: min-p launch");
    if (p->top_k) {
        cu_launch(k_sd_topk_bin, 1, SD_FIN_THREADS, 0, (const unsigned int *)d->hist, (int)p->top_k, d->ctl);
        CU_LAUNCH_CHECK(err, "sample: top-k bin launch");
    }
    cu_launch(k_sd_collect, grid, SD_THREADS, 0, x, (const int32_t *)d->am, n, d->ctl, d->cand);
    CU_LAUNCH_CHECK(err, "sample: collect launch");
    size_t smem = CUDA_SAMPLE_MAX_CAND * (sizeof(unsigned long long) + sizeof(double));
    cu_launch(k_sd_final, 1, SD_FIN_THREADS, smem, x, (const int32_t *)d->am, P, d->ctl,
              (const unsigned long long *)d->cand);
    CU_LAUNCH_CHECK(err, "sample: final launch");
    if (!p->top_k && !p->top_p_on) { /* id order: the large-set path (exits at once when small) */
        int n_blk = (int)((n + SMP_SUM_BLOCK - 1) / SMP_SUM_BLOCK);
        cu_launch(k_sd_big_sum, n_blk, SMP_SUM_BLOCK, 0, x, (const int32_t *)d->am, P, d->ctl, d->blk);
        CU_LAUNCH_CHECK(err, "sample: block sums launch");
        cu_launch(k_sd_big_final, 1, SMP_SUM_BLOCK, 0, x, (const int32_t *)d->am, P, d->ctl,
                  (const double *)d->blk, n_blk);
        CU_LAUNCH_CHECK(err, "sample: block walk launch");
    }
    return cuda_download(tok, &d->ctl->out, sizeof(int32_t), err);
}
