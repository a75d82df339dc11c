/*
 * cuda/attention_dec.cu — sparse attention with sinks for ONE query token (the decode step;
 * MODEL_MATH §5.4-5.6) in model/attention.c attn_items' order step for step, like the prefill
 * chunk kernel of attention.cu (the same float operations, so the same bits), but spread over
 * the whole device. The CPU's order (docs/ENGINE.md §3: FP8 and indexer near-ties turn ULP
 * differences into other choices, so it is kept, not approximated) leaves two parallel steps:
 *   1. k_attd_scores: z_i = tau·(q_h·k_i) for every (head, key), each dot in cpu_dot_f32's
 *      8-chain order; a block takes 8 heads x 32 keys (MQA: one read of a key serves 8 heads),
 *      the 32 key rows copied to shared memory by cp.async at once.
 *   2. k_attd_av: a block takes 4 heads (a warp each) x 32 dims (a lane each): the maximum over
 *      the keys (sink excluded; exact in any order), e_i = exp(z_i - max), then key by key from
 *      0 acc[d] += e_i·k_i[d] (key tiles streamed through shared memory by cp.async, issued
 *      before the softmax so they load meanwhile) and beside it den = exp(sink - max) + e_0 +
 *      e_1 .. (every lane: no divergence); out = acc·(1/den) and the inverse RoPE of the value tail (§5.6), the
 *      pair partner by shuffle. Every (head, dim) chain is independent: 64 x 512 of them.
 * exp is (float)exp(double) (ops.cuh cu_exp_ref), as in the chunk kernel: glibc's expf can
 * differ from it in the last bit, so the CPU comparison allows that; the chunk kernel must be
 * equal bit for bit (tests/cuda/test_cuda_dec.c).
 * A chain is as long as the attended rows (4 cycles per row of dependent adds): on an H200 the
 * split/merge kernels of attention.cu are faster at 3968 rows (95 vs 134 us) and slower at 640
 * (31.1 vs 27.0 us in the decode graph), so lists of more than ATD_MAX_KEYS rows (ratio-128
 * layers past ~115k positions) keep them.
 *
 * Scratch: z [H][NKP] (NKP = bound of the rows rounded up to a tile).
 */
#include "attention_dec.cuh"
#include "ops.cuh"

#define ATD_HB 8      /* heads per score block */
#define ATD_KS 32     /* keys per score block: one per 8-lane group of 256 threads */
#define ATD_AH 4      /* heads per AV block (a warp each) */
#define ATD_TK 64     /* keys per AV tile */
#define ATD_DS 32     /* dims per AV block (a lane each) */
#define ATD_STAGES 4
#define ATD_MAX_KEYS 1024 /* longer lists: split/merge (see above) */

struct attd_args {
    attd_in in;
    int64_t nkp; /* row stride of z/e */
};

__device__ __forceinline__ int64_t attd_pos(const attd_args &a) {
    return a.in.dpos ? *a.in.dpos : a.in.pos0;
}

/* attn_items' attended set for position p: window s0 .. p (n_win rows), then compressed rows. */
__device__ __forceinline__ void attd_span(const attd_args &a, int64_t p, int64_t *s0, int64_t *n_win,
                                          int64_t *n_keys) {
    *s0 = p - a.in.W + 1 < 0 ? 0 : p - a.in.W + 1;
    *n_win = p - *s0 + 1;
    int64_t n_comp = 0;
    if (a.in.isel) n_comp = a.in.n_isel[0];
    else if (a.in.ratio) n_comp = (p + 1) / a.in.ratio;
    *n_keys = *n_win + n_comp;
}

/* The attended set of one block: window s0 .. p by position (ring slot of s0: slot0), then
 * the compressed rows (sel: the indexer's selection, copied to shared memory by the caller, so
 * no key address waits on a global load). */
struct attd_keys {
    int64_t p, s0;
    int n_win, n_keys, slot0;
    const int32_t *sel;
};

__device__ __forceinline__ attd_keys attd_set(const attd_args &a) {
    attd_keys k;
    int64_t s0, n_win, n_keys;
    k.p = attd_pos(a);
    attd_span(a, k.p, &s0, &n_win, &n_keys);
    k.s0 = s0;
    k.n_win = (int)n_win;
    k.n_keys = (int)n_keys;
    k.slot0 = (int)(s0 % a.in.W);
    k.sel = a.in.isel;
    return k;
}

/* Key row i: the window by position (this token's row from kv_chunk, earlier ones from the
 * ring), then the compressed rows (the indexer's selection or all). */
__device__ __forceinline__ const float *attd_key(const attd_args &a, const attd_keys &k, int i) {
    if (i < k.n_win) {
        if (k.s0 + i >= k.p) return a.in.kv_chunk + (k.s0 + i - k.p) * a.in.Dh;
        int slot = k.slot0 + i; /* (s0 + i) mod W: i < n_win <= W */
        if (slot >= a.in.W) slot -= (int)a.in.W;
        return a.in.ring + (int64_t)slot * a.in.Dh;
    }
    const int64_t r = k.sel ? k.sel[i - k.n_win] : i - k.n_win;
    return a.in.comp + r * a.in.Dh;
}

__device__ __forceinline__ void attd_cp16(float *dst, const float *src) {
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d), "l"(src));
}

/* grid (head groups, key blocks), 256 threads; shared q [ATD_HB][Dh], keys [ATD_KS][Dh + 8]
 * (the pad puts the 4 keys a warp reads in different banks). */
__global__ void __launch_bounds__(256) k_attd_scores(attd_args a) {
    cu_pdl_wait();
    extern __shared__ __align__(16) float sq[];
    __shared__ const float *kp[ATD_KS];
    const int64_t Dh = a.in.Dh, h0 = (int64_t)blockIdx.x * ATD_HB, ks = Dh + 8;
    float *sk = sq + ATD_HB * Dh;
    const attd_keys kset = attd_set(a);
    const int k0 = (int)blockIdx.y * ATD_KS;
    if (k0 >= kset.n_keys) return;
    const int nh = (int)(a.in.H - h0 < ATD_HB ? a.in.H - h0 : ATD_HB);
    const int nk = kset.n_keys - k0 < ATD_KS ? kset.n_keys - k0 : ATD_KS;
    if (threadIdx.x < ATD_KS) kp[threadIdx.x] = attd_key(a, kset, k0 + (threadIdx.x < (unsigned)nk ? threadIdx.x : 0));
    __syncthreads();
    const int cpr = (int)(Dh / 4); /* 16-byte chunks per row */
    for (int c = threadIdx.x; c < nk * cpr; c += blockDim.x) {
        const int key = c / cpr, part = c - key * cpr;
        attd_cp16(sk + key * ks + part * 4, kp[key] + part * 4);
    }
    for (int c = threadIdx.x; c < nh * cpr; c += blockDim.x) attd_cp16(sq + c * 4, a.in.q + h0 * Dh + c * 4);
    asm volatile("cp.async.commit_group;");
    asm volatile("cp.async.wait_group 0;" ::: "memory");
    __syncthreads();
    const int g = threadIdx.x >> 3, k = threadIdx.x & 7, D = (int)Dh;
    const float *kr = sk + (g < nk ? g : 0) * ks;
    /* cu_dot8_ref for ATD_HB heads at once: lane k of the group runs chain k of each head. */
    const int n8 = D & ~7;
    float acc[ATD_HB];
#pragma unroll
    for (int h = 0; h < ATD_HB; h++) acc[h] = 0.0f;
    const float *qk = sq + k, *kk = kr + k;
#pragma unroll 4
    for (int i = 0; i < n8; i += 8) {
        const float kv = kk[i];
#pragma unroll
        for (int h = 0; h < ATD_HB; h++)
            if (h < nh) acc[h] = __fadd_rn(acc[h], __fmul_rn(qk[h * D + i], kv));
    }
    const float tau = (float)(1.0 / sqrt((double)Dh)); /* MODEL_MATH §5.5 */
#pragma unroll
    for (int h = 0; h < ATD_HB; h++) {
        float x = cu_lanes8_dot_f32(acc[h]);
        if (h < nh) {
            for (int64_t i = n8; i < Dh; i++) x = __fadd_rn(x, __fmul_rn(sq[h * Dh + i], kr[i]));
            if (k == 0 && g < nk) a.in.scratch[(h0 + h) * a.nkp + k0 + g] = __fmul_rn(tau, x);
        }
    }
}

/* Every thread: the copies of key tile kt (ATD_TK rows x ATD_DS dims from d0) into a stage
 * (keys past the set are left out). */
__device__ __forceinline__ void attd_issue(const attd_args &a, const attd_keys &k, int kt, int d0, float *sk) {
    const int i0 = kt * ATD_TK;
    if (i0 >= k.n_keys) return;
    for (int c = threadIdx.x; c < ATD_TK * (ATD_DS / 4); c += blockDim.x) {
        const int ki = c / (ATD_DS / 4), part = c % (ATD_DS / 4);
        if (i0 + ki < k.n_keys) attd_cp16(sk + ki * ATD_DS + part * 4, attd_key(a, k, i0 + ki) + d0 + part * 4);
    }
}

/* grid (H / ATD_AH, Dh / ATD_DS), 128 threads: warp = head, lane = dim; shared e [ATD_AH][NKP]. */
__global__ void __launch_bounds__(ATD_AH * 32) k_attd_av(attd_args a) {
    cu_pdl_wait();
    __shared__ __align__(16) float sk[ATD_STAGES][ATD_TK * ATD_DS];
    extern __shared__ __align__(16) float se[]; /* e [ATD_AH][nkp], then the selection */
    const int64_t h0 = (int64_t)blockIdx.x * ATD_AH;
    const int d0 = (int)blockIdx.y * ATD_DS, w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    attd_keys kset = attd_set(a);
    if (a.in.isel) { /* the selection to shared memory: key addresses without global loads */
        int32_t *sel = (int32_t *)(se + ATD_AH * a.nkp);
        for (int j = threadIdx.x; j < kset.n_keys - kset.n_win; j += blockDim.x) sel[j] = a.in.isel[j];
        kset.sel = sel;
        __syncthreads();
    }
    const int n_tiles = (kset.n_keys + ATD_TK - 1) / ATD_TK;
#pragma unroll
    for (int s = 0; s < ATD_STAGES - 1; s++) { /* the first key tiles load during the softmax */
        attd_issue(a, kset, s, d0, sk[s]);
        asm volatile("cp.async.commit_group;");
    }
    const int64_t h = h0 + w;
    const bool live = h < a.in.H; /* warp-uniform */
    float *e = se + w * a.nkp;
    float m = -INFINITY;
    if (live) {
        const float *z = a.in.scratch + h * a.nkp;
        for (int i = lane; i < kset.n_keys; i += 32) {
            const float v = z[i];
            e[i] = v;
            m = fmaxf(m, v);
        }
    }
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    if (live)
        for (int i = lane; i < kset.n_keys; i += 32) e[i] = cu_exp_ref(__fsub_rn(e[i], m));
    /* acc and den side by side in every lane (two independent chains, no divergence) */
    float acc = 0.0f, den = live ? cu_exp_ref(__fsub_rn(a.in.sinks[h], m)) : 0.0f;
    for (int kt = 0; kt < n_tiles; kt++) {
        asm volatile("cp.async.wait_group %0;" ::"n"(ATD_STAGES - 2) : "memory");
        __syncthreads(); /* tile kt landed (and at kt = 0 every e); the stage of tile kt-1 is free */
        attd_issue(a, kset, kt + ATD_STAGES - 1, d0, sk[(kt + ATD_STAGES - 1) % ATD_STAGES]);
        asm volatile("cp.async.commit_group;");
        const int nk = kset.n_keys - kt * ATD_TK < ATD_TK ? kset.n_keys - kt * ATD_TK : ATD_TK;
        const float *kk = sk[kt % ATD_STAGES] + lane, *ee = e + kt * ATD_TK;
#pragma unroll 8
        for (int i = 0; i < nk; i++) {
            const float ei = ee[i];
            acc = __fadd_rn(acc, __fmul_rn(ei, kk[i * ATD_DS]));
            den = __fadd_rn(den, ei);
        }
    }
    asm volatile("cp.async.wait_group 0;" ::: "memory");
    if (!live) return; /* warp-uniform */
    float o = __fmul_rn(acc, __fdiv_rn(1.0f, den));
    /* MODEL_MATH §5.6: inverse RoPE of the value tail at the query position; pairs (tail+2j,
     * tail+2j+1) sit in adjacent lanes (tail and d0 are even). */
    const int64_t d = d0 + lane, Dh = a.in.Dh, tail = Dh - a.in.n_rope, p = kset.p;
    const float partner = __shfl_xor_sync(0xffffffffu, o, 1);
    if (d >= tail) {
        float x2[2] = {(lane & 1) ? partner : o, (lane & 1) ? o : partner};
        cu_rope_pair(x2, a.in.freqs[(d - tail) / 2], (float)p, 1);
        o = x2[lane & 1];
    }
    a.in.out[h * Dh + d] = o;
}

static int64_t attd_nkp(int64_t max_keys) { return (max_keys + ATD_TK - 1) / ATD_TK * ATD_TK; }

static size_t attd_scores_smem(int64_t Dh) {
    return (size_t)(ATD_HB * Dh + ATD_KS * (Dh + 8)) * sizeof(float);
}

static int attd_ok(int64_t H, int64_t Dh, int64_t max_keys) {
    return max_keys >= 1 && max_keys <= ATD_MAX_KEYS && Dh % ATD_DS == 0 && H >= 1 && H <= 65535 &&
           attd_scores_smem(Dh) <= 200 * 1024;
}

size_t attd_scratch_bytes(int64_t H, int64_t Dh, int64_t max_keys) {
    if (!attd_ok(H, Dh, max_keys)) return 0;
    return (size_t)(H * attd_nkp(max_keys)) * sizeof(float);
}

int attd_launch(const attd_in &in, ds4_status *st, ds4_error *err) {
    const uintptr_t al = (uintptr_t)in.q | (uintptr_t)in.kv_chunk | (uintptr_t)in.ring |
                         (uintptr_t)(in.comp ? in.comp : in.ring) | (uintptr_t)in.scratch;
    if (!attd_ok(in.H, in.Dh, in.max_keys) || (al & 15) || ((in.Dh - in.n_rope) & 1)) return 0;
    attd_args a;
    a.in = in;
    a.nkp = attd_nkp(in.max_keys);
    const size_t s1 = attd_scores_smem(in.Dh);
    const size_t s2 = (size_t)ATD_AH * a.nkp * sizeof(float) + (in.isel ? (size_t)in.topk * sizeof(int32_t) : 0);
    /* opt-in shared memory, set once per size (not on every eager call) */
    static size_t set1 = 0, set2 = 0;
    cudaError_t e = cudaSuccess;
    if (s1 > 48 * 1024 && s1 > set1) {
        e = cudaFuncSetAttribute(k_attd_scores, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)s1);
        if (e == cudaSuccess) set1 = s1;
    }
    if (e == cudaSuccess && s2 > 16 * 1024 && s2 > set2) {
        e = cudaFuncSetAttribute(k_attd_av, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)s2);
        if (e == cudaSuccess) set2 = s2;
    }
    if (e == cudaSuccess) {
        cu_launch(k_attd_scores, dim3((unsigned)((in.H + ATD_HB - 1) / ATD_HB), (unsigned)((in.max_keys + ATD_KS - 1) / ATD_KS)),
                  dim3(256), s1, a);
        cu_launch(k_attd_av, dim3((unsigned)((in.H + ATD_AH - 1) / ATD_AH), (unsigned)(in.Dh / ATD_DS)),
                  dim3(ATD_AH * 32), s2, a);
        e = cudaGetLastError();
    }
    *st = e == cudaSuccess ? DS4_OK
                           : ds4_seterr(err, DS4_ERR_INTERNAL, "cuda: attn decode launch: %s", cudaGetErrorString(e));
    return 1;
}
