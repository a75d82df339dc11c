/*
 * cuda/compressor.cu — one step of a KV compressor (MODEL_MATH §6.4) on device state: store the
 * token's projections (+ ape) in the streaming buffer and, when the token completes a window,
 * pool (§6.1/§6.2), shift the overlap half, then finish the entry (§6.3: RMSNorm, RoPE at the
 * entry's first position, FP8 round trip of the non-RoPE dims, or Hadamard + FP4 for indexer
 * rows). Same steps as model/compressor.c comp_push. cuda_comp_push_chunk (chunk_ops.h) does
 * the pushes of a whole prefill chunk in two launches with the same results.
 * Must not: run the projections (A = wkv·x, B = wgate·x come from cuda_matvec).
 */
#include "chunk_ops.h"
#include "cuda_api.h"
#include "ops.cuh"

__global__ void k_comp_store(float *st_kv, float *st_sc, const float *A, const float *B,
                             const float *ape, int64_t row, int64_t in_win, int64_t w,
                             const int64_t *dpos, int64_t r, int64_t coff) {
    cu_pdl_wait();
    if (dpos) { /* cuda_comp_push_dpos: the slot from the device position */
        in_win = *dpos % r;
        row = (coff == 2 ? r : 0) + in_win;
    }
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= w) return;
    st_kv[row * w + i] = A[i];
    st_sc[row * w + i] = __fadd_rn(B[i], ape[in_win * w + i]);
}

/* §6.3 on a pooled entry E [d] in shared memory (whole block): RMSNorm with the weight, RoPE
 * of the tail at the entry's first position pos, then the FP8 round trip of the non-RoPE dims
 * (attention rows) or Hadamard + FP4 (indexer rows); the result goes to E_out. */
__device__ void comp_finish_entry(float *E, float *E_out, int64_t d, const float *norm,
                                  const float *freqs, int n_rope, int64_t pos, int indexer,
                                  float eps, double *shd) {
    float rinv = cu_block_rms_inv(E, d, eps, shd);
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) E[i] = __fmul_rn(norm[i], __fmul_rn(E[i], rinv));
    __syncthreads();
    for (int64_t j = threadIdx.x; j < n_rope / 2; j += blockDim.x)
        cu_rope_pair(E + d - n_rope + 2 * j, freqs[j], (float)pos, 0);
    __syncthreads();
    if (!indexer) {
        for (int64_t b = threadIdx.x >> 5; b < (d - n_rope) / 64; b += blockDim.x >> 5)
            cu_qat_block_warp(E + b * 64, 64, 0);
    } else {
        cu_hadamard_butterflies(E, d);
        float s = (float)(1.0 / sqrt((double)d));
        for (int64_t i = threadIdx.x; i < d; i += blockDim.x) E[i] = __fmul_rn(E[i], s);
        __syncthreads();
        for (int64_t b = threadIdx.x >> 5; b < d / 32; b += blockDim.x >> 5)
            cu_qat_block_warp(E + b * 32, 32, 1);
    }
    __syncthreads();
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) E_out[i] = E[i];
}

/* The pooling of a completed window (§6.1/§6.2), the overlap shift (§6.4) and the entry's
 * finishing into E_out; one block, the entry in dynamic shared memory [d]. */
__device__ void comp_pool_finish(float *st_kv, float *st_sc, float *E_out, int64_t r, int64_t coff,
                                 int64_t d, const float *norm, const float *freqs, int n_rope,
                                 int64_t pos, int indexer, float eps) {
    extern __shared__ float E[];
    __shared__ double shd[32];
    int64_t w = coff * d;
    for (int64_t ch = threadIdx.x; ch < d; ch += blockDim.x) {
        float mx = -INFINITY;
        for (int64_t s = 0; s < coff * r; s++) {
            int64_t off = (coff == 2 && s >= r) ? d : 0;
            mx = fmaxf(mx, st_sc[s * w + off + ch]);
        }
        float den = 0.0f, num = 0.0f;
        for (int64_t s = 0; s < coff * r; s++) {
            int64_t off = (coff == 2 && s >= r) ? d : 0;
            float e = cu_exp_ref(__fsub_rn(st_sc[s * w + off + ch], mx));
            den = __fadd_rn(den, e);
            num = __fadd_rn(num, __fmul_rn(e, st_kv[s * w + off + ch]));
        }
        E[ch] = __fdiv_rn(num, den);
    }
    __syncthreads();
    if (coff == 2) /* §6.4: the completed window becomes the overlap half */
        for (int64_t i = threadIdx.x; i < r * w; i += blockDim.x) {
            st_kv[i] = st_kv[r * w + i];
            st_sc[i] = st_sc[r * w + i];
        }
    comp_finish_entry(E, E_out, d, norm, freqs, n_rope, pos, indexer, eps, shd);
}

/* One block; the entry in dynamic shared memory [dim]. */
__global__ void k_comp_finish(float *st_kv, float *st_sc, float *E_out, int64_t r, int64_t coff,
                              int64_t d, const float *norm, const float *freqs, int n_rope,
                              int64_t pos, int indexer, float eps, int active,
                              const int64_t *dpos) {
    cu_pdl_wait();
    if (dpos) { /* launched every step, works when the window completes */
        int64_t p1 = *dpos + 1;
        if (p1 % r) return;
        E_out += (p1 / r - 1) * d; /* E_out is the rows base here */
        pos = r * (p1 / r - 1);
    } else if (!active) {
        return;
    }
    comp_pool_finish(st_kv, st_sc, E_out, r, coff, d, norm, freqs, n_rope, pos, indexer, eps);
}

/* cuda_comp_push_dpos in one launch (issue #7: a decode step is mostly small launches): the
 * block stores the token's row as k_comp_store does, then, when the token completes a window,
 * pools and finishes the entry as k_comp_finish does (its stores are visible to the whole block
 * after the barrier); the same operations on the same values. */
__global__ void k_comp_push_dec(float *st_kv, float *st_sc, const float *A, const float *B,
                                const float *ape, float *rows, int64_t r, int64_t coff, int64_t d,
                                const float *norm, const float *freqs, int n_rope, int indexer,
                                float eps, const int64_t *dpos) {
    cu_pdl_wait();
    const int64_t p = *dpos, in_win = p % r, row = (coff == 2 ? r : 0) + in_win, w = coff * d;
    for (int64_t i = threadIdx.x; i < w; i += blockDim.x) {
        st_kv[row * w + i] = A[i];
        st_sc[row * w + i] = __fadd_rn(B[i], ape[in_win * w + i]);
    }
    if ((p + 1) % r) return; /* uniform over the block */
    __syncthreads();
    const int64_t j = (p + 1) / r - 1;
    comp_pool_finish(st_kv, st_sc, rows + j * d, r, coff, d, norm, freqs, n_rope, r * j, indexer, eps);
}

static ds4_status comp_push_check(const cuda_comp_state *c, int indexer, int n_rope,
                                  ds4_error *err) {
    int64_t r = c->ratio, d = c->dim;
    if (r < 1 || (c->coff != 1 && c->coff != 2) || d < 1 || d > 16384 || n_rope < 0 ||
        (n_rope & 1) || n_rope > d || (!indexer && (d - n_rope) % 64) ||
        (indexer && ((d & (d - 1)) || d % 32)))
        return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                          "cuda_comp_push: ratio %lld, coff %lld, dim %lld, n_rope %d, %s rows",
                          (long long)r, (long long)c->coff, (long long)d, n_rope,
                          indexer ? "indexer" : "attention");
    return DS4_OK;
}

static ds4_status comp_push(const cuda_comp_state *c, const float *d_A, const float *d_B,
                            const float *d_ape, const float *d_norm, int64_t pos,
                            const int64_t *d_pos, int indexer, const float *d_freqs, int n_rope,
                            float eps, int *finished, ds4_error *err) {
    int64_t r = c->ratio, d = c->dim, w = c->coff * d;
    if (finished) *finished = 0;
    ds4_status st = comp_push_check(c, indexer, n_rope, err);
    if (st) return st;
    if (pos < 0) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_comp_push: position %lld", (long long)pos);
    int64_t in_win = pos % r, row = (c->coff == 2 ? r : 0) + in_win;
    cu_launch(k_comp_store, cu_blocks(w, 256), 256, 0, c->st_kv, c->st_sc, d_A, d_B, d_ape,
                                                           row, in_win, w, d_pos, r, c->coff);
    CU_LAUNCH_CHECK(err, "comp_store launch");
    int active = (pos + 1) % r == 0;
    if (!active && !d_pos) return DS4_OK;
    int64_t j = (pos + 1) / r - 1;
    if (!d_pos && j >= c->cap)
        return ds4_seterr(err, DS4_ERR_RANGE, "cuda_comp_push: entry %lld past capacity %lld",
                          (long long)j, (long long)c->cap);
    int threads = d >= 512 ? 512 : (int)((d + 31) / 32 * 32);
    cu_launch(k_comp_finish, 1, threads, (size_t)d * sizeof(float), 
        c->st_kv, c->st_sc, d_pos ? c->rows : c->rows + j * d, r, c->coff, d, d_norm, d_freqs,
        n_rope, r * j, indexer, eps, 1, d_pos);
    CU_LAUNCH_CHECK(err, "comp_finish launch");
    if (finished) *finished = 1;
    return DS4_OK;
}

extern "C" ds4_status cuda_comp_push(const cuda_comp_state *c, const float *d_A,
                                     const float *d_B, const float *d_ape, const float *d_norm,
                                     int64_t pos, int indexer, const float *d_freqs, int n_rope,
                                     float eps, int *finished, ds4_error *err) {
    return comp_push(c, d_A, d_B, d_ape, d_norm, pos, NULL, indexer, d_freqs, n_rope, eps,
                     finished, err);
}

extern "C" ds4_status cuda_comp_push_dpos(const cuda_comp_state *c, const float *d_A,
                                          const float *d_B, const float *d_ape,
                                          const float *d_norm, const int64_t *d_pos,
                                          int64_t pos_bound, int indexer, const float *d_freqs,
                                          int n_rope, float eps, ds4_error *err) {
    if (!d_pos || pos_bound < 0 || pos_bound / (c->ratio > 0 ? c->ratio : 1) > c->cap)
        return ds4_seterr(err, DS4_ERR_RANGE,
                          "cuda_comp_push_dpos: positions up to %lld exceed %lld entries",
                          (long long)pos_bound, (long long)c->cap);
    return comp_push(c, d_A, d_B, d_ape, d_norm, 0, d_pos, indexer, d_freqs, n_rope, eps, NULL,
                     err);
}

extern "C" ds4_status cuda_comp_push_dpos1(const cuda_comp_state *c, const float *d_A,
                                           const float *d_B, const float *d_ape,
                                           const float *d_norm, const int64_t *d_pos,
                                           int64_t pos_bound, int indexer, const float *d_freqs,
                                           int n_rope, float eps, ds4_error *err) {
    ds4_status st = comp_push_check(c, indexer, n_rope, err);
    if (st) return st;
    if (!d_pos || pos_bound < 0 || pos_bound / (c->ratio > 0 ? c->ratio : 1) > c->cap)
        return ds4_seterr(err, DS4_ERR_RANGE,
                          "cuda_comp_push_dpos1: positions up to %lld exceed %lld entries",
                          (long long)pos_bound, (long long)c->cap);
    int64_t d = c->dim;
    int threads = d >= 512 ? 512 : (int)((d + 31) / 32 * 32);
    cu_launch(k_comp_push_dec, 1, threads, (size_t)d * sizeof(float), c->st_kv, c->st_sc, d_A, d_B,
              d_ape, c->rows, c->ratio, c->coff, d, d_norm, d_freqs, n_rope, indexer, eps, d_pos);
    CU_LAUNCH_CHECK(err, "comp_push_dec launch");
    return DS4_OK;
}

/* ---- A whole prefill chunk (cuda_comp_push_chunk, chunk_ops.h) ------------------------------
 * The streaming buffer as n pushes would see it, without running them: the value of slot s of
 * entry j is position q (coff 2: s < r the previous window, q = r(j-1) + s; s >= r the entry's
 * own, q = rj + s - r; coff 1: q = rj + s). A position of the chunk (q >= pos0) is read from
 * the chunk's rows (score B + ape, the same addition as k_comp_store); an earlier one from the
 * state as it was before the chunk: the current window's slots (rows off + q%r), or for coff 2
 * the previous window (rows 0..r-1, the initial -inf scores before the first entry). */
typedef struct comp_chunk_args {
    float *st_kv, *st_sc, *rows;
    const float *A, *B, *ape, *norm, *freqs;
    int64_t ld, r, coff, d, pos0, n, j0;
    int n_rope, indexer;
    float eps;
} comp_chunk_args;

__device__ __forceinline__ void comp_chunk_val(const comp_chunk_args &a, int64_t q, int64_t s,
                                               int64_t i, float *kv, float *sc) {
    int64_t w = a.coff * a.d;
    if (q >= a.pos0) {
        int64_t t = q - a.pos0;
        *kv = a.A[t * a.ld + i];
        *sc = __fadd_rn(a.B[t * a.ld + i], a.ape[(q % a.r) * w + i]);
        return;
    }
    int64_t cur0 = a.pos0 / a.r * a.r; /* first position of the window open at pos0 */
    int64_t row = q >= cur0 ? (a.coff == 2 ? a.r : 0) + q % a.r : s % a.r;
    *kv = a.st_kv[row * w + i];
    *sc = a.st_sc[row * w + i];
}

/* grid: the entries the chunk completes (j0 + blockIdx.x); the entry in shared memory [d]. */
__global__ void k_comp_chunk_finish(comp_chunk_args a) {
    cu_pdl_wait();
    extern __shared__ float E[];
    __shared__ double shd[32];
    int64_t j = a.j0 + blockIdx.x, r = a.r, d = a.d, ns = a.coff * r;
    for (int64_t ch = threadIdx.x; ch < d; ch += blockDim.x) {
        float mx = -INFINITY, kv, sc;
        for (int64_t s = 0; s < ns; s++) {
            int64_t off = (a.coff == 2 && s >= r) ? d : 0;
            int64_t q = a.coff == 2 ? r * (j - 1) + s : r * j + s;
            comp_chunk_val(a, q, s, off + ch, &kv, &sc);
            mx = fmaxf(mx, sc);
        }
        float den = 0.0f, num = 0.0f;
        for (int64_t s = 0; s < ns; s++) {
            int64_t off = (a.coff == 2 && s >= r) ? d : 0;
            int64_t q = a.coff == 2 ? r * (j - 1) + s : r * j + s;
            comp_chunk_val(a, q, s, off + ch, &kv, &sc);
            float e = cu_exp_ref(__fsub_rn(sc, mx));
            den = __fadd_rn(den, e);
            num = __fadd_rn(num, __fmul_rn(e, kv));
        }
        E[ch] = __fdiv_rn(num, den);
    }
    __syncthreads();
    comp_finish_entry(E, a.rows + j * d, d, a.norm, a.freqs, a.n_rope, r * j, a.indexer, a.eps,
                      shd);
}

/* The streaming buffer after the chunk (runs after k_comp_finish read the old one): slot s of
 * the open window holds the last position q < pos0+n with q % r == s; for coff 2, when the
 * chunk completed entries, rows 0..r-1 hold the last completed window. One thread per (s, i)
 * reads the old open-window value before writing both rows. */
__global__ void k_comp_chunk_state(comp_chunk_args a, int64_t j_last) {
    cu_pdl_wait();
    int64_t w = a.coff * a.d, r = a.r, pe = a.pos0 + a.n;
    int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= r * w) return;
    int64_t s = idx / w, i = idx % w, cur = (a.coff == 2 ? r : 0) + s;
    float old_kv = a.st_kv[cur * w + i], old_sc = a.st_sc[cur * w + i], kv, sc;
    if (a.coff == 2 && j_last >= 0) {
        int64_t q = r * j_last + s;
        if (q >= a.pos0) {
            comp_chunk_val(a, q, s, i, &kv, &sc);
        } else {
            kv = old_kv;
            sc = old_sc;
        }
        a.st_kv[s * w + i] = kv;
        a.st_sc[s * w + i] = sc;
    }
    if (pe - 1 >= s) {
        int64_t q = pe - 1 - (pe - 1 - s) % r;
        if (q >= a.pos0) {
            comp_chunk_val(a, q, s, i, &kv, &sc);
            a.st_kv[cur * w + i] = kv;
            a.st_sc[cur * w + i] = sc;
        }
    }
}

extern "C" ds4_status cuda_comp_push_chunk(const cuda_comp_state *c, const float *d_A,
                                           const float *d_B, int64_t ld, const float *d_ape,
                                           const float *d_norm, int64_t pos0, int64_t n,
                                           int indexer, const float *d_freqs, int n_rope,
                                           float eps, ds4_error *err) {
    int64_t r = c->ratio, d = c->dim, w = c->coff * d;
    if (n <= 0) return DS4_OK;
    if (r < 1 || (c->coff != 1 && c->coff != 2) || d < 1 || d > 16384 || pos0 < 0 || ld < w ||
        n_rope < 0 || (n_rope & 1) || n_rope > d || (!indexer && (d - n_rope) % 64) ||
        (indexer && ((d & (d - 1)) || d % 32)))
        return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                          "cuda_comp_push_chunk: ratio %lld, coff %lld, dim %lld, ld %lld, "
                          "n_rope %d, %s rows",
                          (long long)r, (long long)c->coff, (long long)d, (long long)ld, n_rope,
                          indexer ? "indexer" : "attention");
    /* entries completed by positions pos0 .. pos0+n-1: j0 .. j1 */
    int64_t j0 = (pos0 + r) / r - 1, j1 = (pos0 + n) / r - 1;
    comp_chunk_args a = {c->st_kv, c->st_sc, c->rows, d_A, d_B, d_ape, d_norm, d_freqs,
                         ld, r, c->coff, d, pos0, n, j0, n_rope, indexer, eps};
    if (j1 >= j0) {
        if (j1 >= c->cap || j1 - j0 + 1 > 2147483647ll)
            return ds4_seterr(err, DS4_ERR_RANGE,
                              "cuda_comp_push_chunk: entry %lld past capacity %lld",
                              (long long)j1, (long long)c->cap);
        int threads = d >= 512 ? 512 : (int)((d + 31) / 32 * 32);
        cu_launch(k_comp_chunk_finish, (unsigned)(j1 - j0 + 1), threads, (size_t)d * sizeof(float), a);
        CU_LAUNCH_CHECK(err, "comp_chunk_finish launch");
    }
    cu_launch(k_comp_chunk_state, cu_blocks(r * w, 256), 256, 0, a, j1 >= j0 ? j1 : -1);
    CU_LAUNCH_CHECK(err, "comp_chunk_state launch");
    return DS4_OK;
}
