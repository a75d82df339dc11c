/*
 * cuda/attention_chunk.cu — the attention of a prefill chunk (two or more query tokens of one
 * layer; MODEL_MATH §5.4-5.6) in model/attention.c's order step for step, so bit-identical to
 * the CPU: k_attn_chunk (the first kernel, DS4_CUDA_ATTN_CHUNK=0), the register-tiled
 * k_attn_chunk2 (8 heads per block, =8) and attention_chunk3.cu's k_attn_chunk3 (64 heads per
 * block, the default), chosen by cu_attc. attention.cu routes the calls here (cu_attc_use);
 * the one-token decode kernels live there and in attention_dec.cu.
 *
 * Must not: project, normalise or round q/kv unless asked (cuda_attn_qnorm), or write the
 * window ring.
 */
#include "attention_impl.cuh"
#include "chunk_ops.h"
#include "qnorm.cuh"

#include <stdlib.h>

/* ---- Prefill chunks: one block per (token, ATT_HB heads), the CPU's order ------------------
 * For two or more query tokens (a prefill chunk; not the graph's dpos calls) one block takes a
 * token and ATT_HB heads with q in shared memory and follows model/attention.c attn_items
 * step for step, so the output is bit-identical to the CPU (tests/cuda/test_cuda_chunk.c):
 * scores tau·(q·k) in cpu_dot_f32's order (the split kernel's lane groups and shuffles), the
 * maximum over the keys (sink excluded), den = exp(sink - max) then + e_i key by key, acc[d]
 * = Σ e_i·k_i[d] key by key from 0, out = acc·(1/den), inverse RoPE. No partials buffer: the
 * split/merge pair above (per-split maxima, so a few ULP off the CPU) keeps the single-token
 * decode step, whose one token needs the splits' parallelism. */
#define ATTC_SMEM_MAX (200 * 1024)

static size_t attc_smem(int64_t Dh, int64_t keys) {
    int64_t nk = (keys + ATT_KS - 1) / ATT_KS * ATT_KS;
    return (size_t)(ATT_HB * Dh + ATT_HB * nk) * sizeof(float) + (size_t)nk * sizeof(const float *);
}

static int attc_use(int64_t n_tok, int64_t Dh, int64_t keys, int dpos) {
    return !dpos && n_tok >= 2 && Dh <= 256 * 16 && attc_smem(Dh, keys) <= ATTC_SMEM_MAX;
}

template <int ND>
__global__ void __launch_bounds__(256) k_attn_chunk(attn_args a, int64_t nk_cap) {
    cu_pdl_wait();
    extern __shared__ float sm_[];
    __shared__ float red[32];
    __shared__ float s_mx[ATT_HB], s_inv[ATT_HB];
    const int64_t Dh = a.Dh;
    float *sq = sm_;                           /* [ATT_HB][Dh]; the output after the sums */
    float *sc = sq + ATT_HB * Dh;              /* [ATT_HB][nk_cap]: scores, then exp */
    const float **kp = (const float **)(sc + ATT_HB * nk_cap); /* [nk_cap] key rows */
    int64_t t = blockIdx.y, h0 = (int64_t)blockIdx.x * ATT_HB, p = a.pos0 + t;
    int nh = (int)(a.H - h0 < ATT_HB ? a.H - h0 : ATT_HB);
    int64_t n_keys = attn_key_rows(a, t, kp, ATT_KS);
    int64_t nk32 = (n_keys + ATT_KS - 1) / ATT_KS * ATT_KS;
    for (int64_t i = threadIdx.x; i < (int64_t)nh * Dh; i += blockDim.x)
        sq[i] = a.q[(t * a.H + h0) * Dh + i];
    __syncthreads();
    /* Scores: lane group g (8 lanes) takes keys g, g+32, ...; cpu_dot_f32's 8-lane chains. */
    const float tau = (float)(1.0 / sqrt((double)Dh)); /* MODEL_MATH §5.5 */
    {
        int g = threadIdx.x >> 3, k = threadIdx.x & 7;
        for (int64_t k0 = 0; k0 < nk32; k0 += ATT_KS) {
            float v[ATT_HB];
            attn_dot_heads(sq, kp[k0 + g], Dh, k, v);
#pragma unroll
            for (int h = 0; h < ATT_HB; h++)
                if (k == 0 && h < nh && k0 + g < n_keys) sc[h * nk_cap + k0 + g] = __fmul_rn(tau, v[h]);
        }
    }
    __syncthreads();
    /* The maximum over the keys (exact in any order), then e_i = exp(z_i - max). */
    for (int h = 0; h < nh; h++) {
        float m = -INFINITY;
        for (int64_t i = threadIdx.x; i < n_keys; i += blockDim.x) m = fmaxf(m, sc[h * nk_cap + i]);
        m = cu_block_max(m, red);
        if (threadIdx.x == 0) s_mx[h] = m;
    }
    __syncthreads();
    for (int64_t x = threadIdx.x; x < (int64_t)nh * n_keys; x += blockDim.x) {
        int64_t h = x / n_keys, i = x % n_keys;
        sc[h * nk_cap + i] = cu_exp_ref(__fsub_rn(sc[h * nk_cap + i], s_mx[h]));
    }
    __syncthreads();
    /* den in the CPU's order: the sink's term, then the keys one by one (a thread per head). */
    if (threadIdx.x < nh) {
        int h = threadIdx.x;
        s_inv[h] = attn_inv_den(a.sinks[h0 + h], s_mx[h], sc + h * nk_cap, 1, n_keys);
    }
    /* acc[d] = Σ_i e_i·k_i[d], keys in order; thread owns dims d = threadIdx.x + 256 j. */
    float acc[ND][ATT_HB];
#pragma unroll
    for (int j = 0; j < ND; j++)
#pragma unroll
        for (int h = 0; h < ATT_HB; h++) acc[j][h] = 0.0f;
    for (int64_t i = 0; i < n_keys; i++) {
        const float *kr = kp[i];
        float e[ATT_HB];
#pragma unroll
        for (int h = 0; h < ATT_HB; h++) e[h] = h < nh ? sc[h * nk_cap + i] : 0.0f;
#pragma unroll
        for (int j = 0; j < ND; j++) {
            int64_t d = threadIdx.x + 256 * j;
            float kv = d < Dh ? kr[d] : 0.0f;
#pragma unroll
            for (int h = 0; h < ATT_HB; h++) acc[j][h] = __fadd_rn(acc[j][h], __fmul_rn(e[h], kv));
        }
    }
    __syncthreads(); /* every thread is done with q (and s_inv is written): sq becomes the output */
#pragma unroll
    for (int j = 0; j < ND; j++) {
        int64_t d = threadIdx.x + 256 * j;
        if (d < Dh)
            for (int h = 0; h < nh; h++) sq[h * Dh + d] = __fmul_rn(acc[j][h], s_inv[h]);
    }
    __syncthreads();
    /* MODEL_MATH §5.6: inverse RoPE of the value tail at the query position. */
    int64_t tail = Dh - a.n_rope, npair = a.n_rope / 2;
    for (int64_t x = threadIdx.x; x < (int64_t)nh * npair; x += blockDim.x)
        cu_rope_pair(sq + (x / npair) * Dh + tail + 2 * (x % npair), a.freqs[x % npair], (float)p, 1);
    __syncthreads();
    for (int64_t i = threadIdx.x; i < (int64_t)nh * Dh; i += blockDim.x)
        a.out[(t * a.H + h0) * Dh + i] = sq[i];
}

/* ---- Prefill chunks, register-tiled (h5): the same steps per head as k_attn_chunk --------
 * What made k_attn_chunk slow is the work per instruction, not the key traffic (16 heads per
 * block, which halves the passes over the keys, was no faster): in the scores each lane group
 * took one key, so every multiply-add paid its own q load from shared memory and a key load
 * with nothing independent in flight; the value sums paid one shared-memory load per head per
 * key. Here a lane group takes up to ATC2_RK keys at once (one q load serves RK keys, RK key
 * loads in flight), the scores are stored key-major ([key][HB]) so the value sums read a key's
 * HB weights as float4s, and the value sums load 4 keys ahead. Per (head, key) and per (head,
 * dimension) the float steps and their order are exactly k_attn_chunk's (cpu_dot_f32's lane
 * chains and pairwise lane sum; max; exp; den from the sink then key by key; acc key by key),
 * so the output is the same bits (tests/cuda/test_cuda_chunk.c compares the two). */
#define ATC2_RK 4

/* Scores of the keys k0 + r·32 + g (r < RK) against the block's HB heads; lane k of the
 * 8-lane group g holds chain k. Keys past n_keys read row 0 and are not written. */
template <int HB, int RK, int NG>
__device__ __forceinline__ void attc2_scores(const float *sq, const float *const *kp, float *sc,
                                             int64_t Dh, int64_t k0, int64_t n_keys, int nh,
                                             float tau) {
    int g = threadIdx.x >> 3, k = threadIdx.x & 7;
    const float *kr[RK];
    float acc[RK][HB];
#pragma unroll
    for (int r = 0; r < RK; r++) {
        kr[r] = kp[k0 + r * NG + g];
#pragma unroll
        for (int h = 0; h < HB; h++) acc[r][h] = 0.0f;
    }
    int64_t n8 = Dh & ~(int64_t)7;
#pragma unroll 2
    for (int64_t i = 0; i < n8; i += 8) {
        float kv[RK];
#pragma unroll
        for (int r = 0; r < RK; r++) kv[r] = kr[r][i + k];
#pragma unroll
        for (int h = 0; h < HB; h++) {
            float qv = sq[h * Dh + i + k];
#pragma unroll
            for (int r = 0; r < RK; r++) acc[r][h] = __fadd_rn(acc[r][h], __fmul_rn(qv, kv[r]));
        }
    }
#pragma unroll
    for (int r = 0; r < RK; r++) {
        int64_t j = k0 + r * NG + g;
#pragma unroll
        for (int h = 0; h < HB; h++) {
            float x = cu_lanes8_dot_f32(acc[r][h]);
            for (int64_t i = n8; i < Dh; i++) x = __fadd_rn(x, __fmul_rn(sq[h * Dh + i], kr[r][i]));
            if (k == 0 && h < nh && j < n_keys) sc[j * HB + h] = __fmul_rn(tau, x);
        }
    }
}

/* Key slots: keys rounded up to the lane groups of a block (NT / 8). */
static int64_t attc2_nk(int64_t keys, int nt) { return (keys + nt / 8 - 1) / (nt / 8) * (nt / 8); }

static size_t attc2_smem(int64_t Dh, int64_t keys, int hb, int nt) {
    int64_t nk = attc2_nk(keys, nt);
    return (size_t)(hb * Dh + hb * nk) * sizeof(float) + (size_t)nk * sizeof(const float *);
}

/* grid (head groups of HB, tokens), NT threads (NT / 8 lane groups; a lane group takes up to
 * RKM keys at once); the thread owns dims threadIdx.x + NT j. */
template <int ND, int HB, int NT, int RKM>
__global__ void __launch_bounds__(NT) k_attn_chunk2(attn_args a, int64_t nk_cap, float qn_eps) {
    cu_pdl_wait();
    extern __shared__ __align__(16) float sm2_[];
    __shared__ float s_red[NT / 32][HB];
    const int NG = NT / 8;
    __shared__ float s_mx[HB], s_inv[HB];
    const int64_t Dh = a.Dh;
    float *sq = sm2_;                          /* [HB][Dh]; the output after the sums */
    float *sc = sq + HB * Dh;                  /* [nk_cap][HB]: scores, then exp (0 past nh) */
    const float **kp = (const float **)(sc + HB * nk_cap); /* [nk_cap] key rows */
    int64_t t = blockIdx.y, h0 = (int64_t)blockIdx.x * HB, p = a.pos0 + t;
    int nh = (int)(a.H - h0 < HB ? a.H - h0 : HB);
    int64_t n_keys = attn_key_rows(a, t, kp, NG);
    for (int64_t i = threadIdx.x; i < (int64_t)nh * Dh; i += blockDim.x)
        sq[i] = a.q[(t * a.H + h0) * Dh + i];
    __syncthreads();
    if (qn_eps > 0.0f) { /* cuda_attn_qnorm: §3.2-3.3 on the staged q rows, a warp per head */
        for (int h = (int)(threadIdx.x >> 5); h < nh; h += NT / 32)
            cu_qnorm_rope_warp(sq + h * Dh, Dh, qn_eps, Dh - a.n_rope, a.n_rope, a.freqs, (float)p);
        __syncthreads();
    }
    const float tau = (float)(1.0 / sqrt((double)Dh)); /* MODEL_MATH §5.5 */
    for (int64_t k0 = 0; k0 < n_keys;) { /* as many keys per lane group as are left, up to RKM */
        int64_t rem = n_keys - k0;
        if (RKM >= 4 && rem > 3 * NG) {
            attc2_scores<HB, RKM >= 4 ? 4 : 1, NG>(sq, kp, sc, Dh, k0, n_keys, nh, tau);
            k0 += 4 * NG;
        } else if (RKM >= 3 && rem > 2 * NG) {
            attc2_scores<HB, RKM >= 3 ? 3 : 1, NG>(sq, kp, sc, Dh, k0, n_keys, nh, tau);
            k0 += 3 * NG;
        } else if (RKM >= 2 && rem > NG) {
            attc2_scores<HB, 2, NG>(sq, kp, sc, Dh, k0, n_keys, nh, tau);
            k0 += 2 * NG;
        } else {
            attc2_scores<HB, 1, NG>(sq, kp, sc, Dh, k0, n_keys, nh, tau);
            k0 += NG;
        }
    }
    __syncthreads();
    /* The maximum over the keys per head (exact in any order): thread x takes head x mod HB. */
    {
        int h = threadIdx.x % HB;
        float m = -INFINITY;
        for (int64_t x = threadIdx.x; x < n_keys * HB; x += blockDim.x) m = fmaxf(m, sc[x]);
        for (int o = HB; o < 32; o <<= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
        if ((threadIdx.x & 31) < HB) s_red[threadIdx.x >> 5][h] = m;
        __syncthreads();
        if (threadIdx.x < HB) {
            float v = s_red[0][threadIdx.x];
            for (int w = 1; w < NT / 32; w++) v = fmaxf(v, s_red[w][threadIdx.x]);
            s_mx[threadIdx.x] = v;
        }
        __syncthreads();
    }
    for (int64_t x = threadIdx.x; x < n_keys * HB; x += blockDim.x) {
        int h = (int)(x % HB);
        sc[x] = h < nh ? cu_exp_ref(__fsub_rn(sc[x], s_mx[h])) : 0.0f;
    }
    __syncthreads();
    /* den in the CPU's order: the sink's term, then the keys one by one (a thread per head). */
    if (threadIdx.x < nh) {
        int h = threadIdx.x;
        s_inv[h] = attn_inv_den(a.sinks[h0 + h], s_mx[h], sc + h, HB, n_keys);
    }
    /* acc[d] = Σ_i e_i·k_i[d], keys in order, UK keys' rows loaded ahead. */
    float acc[ND][HB];
#pragma unroll
    for (int j = 0; j < ND; j++)
#pragma unroll
        for (int h = 0; h < HB; h++) acc[j][h] = 0.0f;
    const int UK = ND * HB > 16 ? 2 : 4;
    int64_t i = 0;
    for (; i + UK <= n_keys; i += UK) {
        float kv[UK][ND];
#pragma unroll
        for (int u = 0; u < UK; u++) {
            const float *kr = kp[i + u];
#pragma unroll
            for (int j = 0; j < ND; j++) {
                int64_t d = threadIdx.x + NT * j;
                kv[u][j] = d < Dh ? kr[d] : 0.0f;
            }
        }
#pragma unroll
        for (int u = 0; u < UK; u++) {
            float e[HB];
            const float4 *e4 = (const float4 *)(sc + (i + u) * HB);
#pragma unroll
            for (int c = 0; c < HB / 4; c++) {
                float4 v = e4[c];
                e[4 * c] = v.x, e[4 * c + 1] = v.y, e[4 * c + 2] = v.z, e[4 * c + 3] = v.w;
            }
#pragma unroll
            for (int j = 0; j < ND; j++)
#pragma unroll
                for (int h = 0; h < HB; h++) acc[j][h] = __fadd_rn(acc[j][h], __fmul_rn(e[h], kv[u][j]));
        }
    }
    for (; i < n_keys; i++) {
        const float *kr = kp[i];
#pragma unroll
        for (int j = 0; j < ND; j++) {
            int64_t d = threadIdx.x + NT * j;
            float kv = d < Dh ? kr[d] : 0.0f;
#pragma unroll
            for (int h = 0; h < HB; h++) acc[j][h] = __fadd_rn(acc[j][h], __fmul_rn(sc[i * HB + h], kv));
        }
    }
    __syncthreads(); /* every thread is done with q (and s_inv is written): sq becomes the output */
#pragma unroll
    for (int j = 0; j < ND; j++) {
        int64_t d = threadIdx.x + NT * j;
        if (d < Dh) /* h unrolled: a runtime bound would put acc in local memory */
#pragma unroll
            for (int h = 0; h < HB; h++)
                if (h < nh) sq[h * Dh + d] = __fmul_rn(acc[j][h], s_inv[h]);
    }
    __syncthreads();
    /* MODEL_MATH §5.6: inverse RoPE of the value tail at the query position. */
    int64_t tail = Dh - a.n_rope, npair = a.n_rope / 2;
    for (int64_t x = threadIdx.x; x < (int64_t)nh * npair; x += blockDim.x)
        cu_rope_pair(sq + (x / npair) * Dh + tail + 2 * (x % npair), a.freqs[x % npair], (float)p, 1);
    __syncthreads();
    for (int64_t x = threadIdx.x; x < (int64_t)nh * Dh; x += blockDim.x)
        a.out[(t * a.H + h0) * Dh + x] = sq[x];
}

template <int ND, int HB, int NT, int RKM>
static ds4_status attc2_launch(const attn_args &a, int64_t n_tok, int64_t keys, float qn_eps,
                               ds4_error *err) {
    int64_t nk_cap = attc2_nk(keys, NT);
    size_t smem = attc2_smem(a.Dh, keys, HB, NT);
    CU_CHECK(cudaFuncSetAttribute(k_attn_chunk2<ND, HB, NT, RKM>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
             err, "attn chunk shared memory");
    dim3 g((unsigned)((a.H + HB - 1) / HB), (unsigned)n_tok);
    cu_launch(k_attn_chunk2<ND, HB, NT, RKM>, g, NT, smem, a, nk_cap, qn_eps);
    CU_LAUNCH_CHECK(err, "attn chunk launch");
    return DS4_OK;
}

/* The chunk kernel to take (cuda_attn_chunk_set_variant): 0 = k_attn_chunk, 8 = k_attn_chunk2
 * (8 heads per block), 64 = k_attn_chunk3 (attention_chunk3.cu; where it does not fit, 8).
 * Default 64: on the H200 (06:24 UTC, session 4) the full-size chunk's attention took 147.4
 * ms with 64 and 186.3 with 8 (2048 tokens, 43 layers). k_attn_chunk2 with 16 heads per
 * block (200.6 ms in session 3), 32 (255.0) and with the key values loaded a step ahead (slower
 * than 8 in every op bench, session 4) are gone. */
static int g_attc_variant = -1;

extern "C" void cuda_attn_chunk_set_variant(int v) { g_attc_variant = v; }

static int attc_variant(void) {
    if (g_attc_variant < 0) {
        const char *e = getenv("DS4_CUDA_ATTN_CHUNK");
        int v = e ? atoi(e) : 64;
        g_attc_variant = v == 0 || v == 8 ? v : 64;
    }
    return g_attc_variant;
}

template <int ND>
static ds4_status attc_launch(const attn_args &a, int64_t n_tok, int64_t keys, ds4_error *err) {
    int64_t nk_cap = (keys + ATT_KS - 1) / ATT_KS * ATT_KS;
    size_t smem = attc_smem(a.Dh, keys);
    CU_CHECK(cudaFuncSetAttribute(k_attn_chunk<ND>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  (int)smem),
             err, "attn chunk shared memory");
    dim3 g((unsigned)((a.H + ATT_HB - 1) / ATT_HB), (unsigned)n_tok);
    cu_launch(k_attn_chunk<ND>, g, 256, smem, a, nk_cap);
    CU_LAUNCH_CHECK(err, "attn chunk launch");
    return DS4_OK;
}

/* Whether attc takes k_attn_chunk2 for head dim Dh and this many keys (variant v). */
static bool attc2_takes(int v, int64_t Dh, int64_t keys) {
    int64_t nd = (Dh + 255) / 256;
    if (v == 8) return nd <= 2 && attc2_smem(Dh, keys, 8, 256) <= ATTC_SMEM_MAX;
    return false;
}

/* qn_eps > 0 (cuda_attn_qnorm; only where attc2_takes): q's norm + RoPE in the kernel. */
static ds4_status attc(const attn_args &a, int64_t n_tok, int64_t keys, ds4_error *err,
                       float qn_eps = 0.0f) {
    int64_t nd = (a.Dh + 255) / 256;
    int v = attc_variant();
    if (v == 64) { /* k_attn_chunk3 where it fits, else the 8-head kernel (which then fits) */
        ds4_status st = DS4_OK;
        if (qn_eps <= 0.0f && cu_attc3(a, n_tok, keys, &st, err)) return st;
        v = 8;
    }
    /* k_attn_chunk2 for head dims up to 512 while its shared memory fits (else the first). */
    if (v == 8 && nd <= 2 && attc2_smem(a.Dh, keys, 8, 256) <= ATTC_SMEM_MAX)
        return nd <= 1 ? attc2_launch<1, 8, 256, 4>(a, n_tok, keys, qn_eps, err)
                       : attc2_launch<2, 8, 256, 4>(a, n_tok, keys, qn_eps, err);
    if (nd <= 1) return attc_launch<1>(a, n_tok, keys, err);
    if (nd <= 2) return attc_launch<2>(a, n_tok, keys, err);
    if (nd <= 4) return attc_launch<4>(a, n_tok, keys, err);
    if (nd <= 8) return attc_launch<8>(a, n_tok, keys, err);
    return attc_launch<16>(a, n_tok, keys, err);
}

int cu_attc_use(int64_t n_tok, int64_t Dh, int64_t keys, int dpos) {
    return attc_use(n_tok, Dh, keys, dpos);
}

ds4_status cu_attc(const attn_args &a, int64_t n_tok, int64_t keys, ds4_error *err, float qn_eps) {
    return attc(a, n_tok, keys, err, qn_eps);
}

bool cu_attc_qnorm_ok(int64_t Dh, int64_t keys) { return attc2_takes(attc_variant(), Dh, keys); }
