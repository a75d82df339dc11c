/*
 * cuda/matvec_exp.cu — the routed experts' decode products (issue #7): y = W_e·x for the
 * selected experts of one token, IQ2_XXS / Q2_K / Q4_K weights read in place (GGUF_LAYOUT §4.3-
 * §4.5) against Q8_K activations (§4.6), bit-identical to the CPU dot (format/quant_dot.c): a
 * block's integer sums are exact in any order, its f32 steps are the CPU's (__f*_rn, no FMA),
 * and a row's block values are summed in block order from +0.0f exactly like q_dot_*_ref.
 *
 * Why this shape (matvec.cu's one-warp-per-row kernel streamed ~0.8 TB/s, bound by load issue
 * and latency, docs/BENCHMARKS.md): one block of up to 16 warps per SM; each warp takes a
 * contiguous range of tiles (a tile = RPL·32/L rows of one expert, L = the row's quant blocks
 * rounded up to a power of two) and streams them with 16-byte cp.async into a ring of
 * MVX_SLOTS shared-memory slots, the next tile in flight while it decodes one. Lane l decodes
 * quant block l % L of rows l / L + k·32/L (k < RPL: independent decodes for the issue-bound
 * IQ2_XXS / Q2_K): its column block never changes, so its 256 activation values live in
 * registers for every row it decodes, and the IQ2_XXS tables are stored once per lane column in
 * shared memory (word idx·32 + lane: lookups without bank conflicts). A row's block values go
 * through shared memory to one lane, which sums them in block order. The down product can
 * write the MoE combination too (comb: the last warp to finish a row group sums it).
 *
 * Owns: the kernel and cuda_mvx_launch (called by matvec.cu's expert entry points).
 * Must not: know the model, or differ from the CPU by a single bit.
 */
#include <stdlib.h>
#include <string.h>

#include "common.cuh"
#include "cuda_api.h"

#define MVX_WARPS 16
#define MVX_SLOTS 2 /* tiles in flight per warp (4: slower in every case measured, issue #7) */
#define MVX_FULL 0xffffffffu
#define MVX_ACT_Q 272 /* shared bytes per activation block's 256 codes: 16-byte rows, skewed banks */

/* IQ2_XXS grid (GGUF_LAYOUT §4.5.1) as prmt selectors, words 0..255: nibble l = code of value l
 * (8 -> 0, 25 -> 1, 43 -> 2); the pool bytes are +8, +25, +43 and (nibble bit 2) -8, -25, -43.
 * Words 256..383: the 7 sign bits completed with their parity (KSIGNS, GGUF_LAYOUT §4.5.2) as
 * nibble bit 2 of the negatives, OR-ed into the grid word. */
#define MVX_SEL_WORDS (256 + 128)
__device__ uint32_t g_mvx_sel[MVX_SEL_WORDS];
static int mvx_grid_ok; /* every grid value is 8, 25 or 43 (checked at upload) */

extern "C" ds4_status cuda_mvx_grid_upload(const uint64_t grid[256], ds4_error *err) {
    uint32_t sel[MVX_SEL_WORDS];
    mvx_grid_ok = 1;
    for (int i = 0; i < 256; i++) {
        sel[i] = 0;
        for (int l = 0; l < 8; l++) {
            const unsigned v = (unsigned)(grid[i] >> (8 * l)) & 255u;
            const unsigned c = v == 8 ? 0 : v == 25 ? 1 : v == 43 ? 2 : 3;
            if (c == 3) mvx_grid_ok = 0;
            sel[i] |= (uint32_t)(c & 3) << (4 * l);
        }
    }
    for (uint32_t s7 = 0; s7 < 128; s7++) {
        uint32_t s8 = s7, v = 0;
        for (int l = 0; l < 7; l++) s8 ^= ((s7 >> l) & 1u) << 7; /* parity into bit 7 */
        for (int l = 0; l < 8; l++) v |= ((s8 >> l) & 1u) << (4 * l + 2);
        sel[256 + s7] = v;
    }
    CU_CHECK(cudaMemcpyToSymbol(g_mvx_sel, sel, sizeof sel), err, "iq2 selector upload");
    return DS4_OK;
}

#define MVX_POS 0x002B1908u /* bytes +8, +25, +43, 0 */
#define MVX_NEG 0x00D5E7F8u /* bytes -8, -25, -43, 0 */

struct mvx_args {
    const uint8_t *w0, *w1; /* the product's matrices (w1: the pair's second, or NULL) */
    float *y0, *y1;
    const int32_t *ids;
    const uint8_t *act;     /* n_x activation rows of nb Q8_K blocks */
    int64_t n_experts, stride, rows, row_bytes, tiles_per, n_tiles;
    int nb, lpr_log, tile_log, n_sel, n_x, aligned; /* a tile: 1 << tile_log rows */
    int diag; /* bench only (DS4_MVX_DIAG): 1 = no decode, 2 = no weight fetch */
    int late; /* the slots after the first asked once the first tile is in (DS4_MVX_LATE=0: not) */
    /* comb: the MoE combination in the same launch (MODEL_MATH §9.5), by the last warp to finish
     * a row group (mvx_combine). Session 3 gave a warp every selection of a row group in turn: 8
     * warps per SM for Flash's down, latency-bound. */
    int comb;
    float *out;
    const float *shared;
    uint32_t slot_bytes, act_off, red_off, ring_off;
};

__device__ __forceinline__ void mvx_cp16(uint32_t dst, const void *src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void mvx_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void mvx_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

/* A warp's position in its tile range: matrix m, selection j, first row r0 (tile order: matrix,
 * selection, row group). One division at the start, then steps (issue #7: a 64-bit division per
 * tile cost as much as decoding it). */
struct mvx_pos {
    int m, j;
    int64_t r0;
};

__device__ __forceinline__ mvx_pos mvx_at(const mvx_args &a, int64_t t) {
    const uint32_t tt = (uint32_t)t, ns = (uint32_t)a.n_sel; /* n_tiles < 2^31 (launch) */
    const uint32_t tp = (uint32_t)a.tiles_per, q = tt / tp;
    mvx_pos p;
    p.r0 = (int64_t)(tt - q * tp) << a.tile_log;
    p.m = (int)(q / ns);
    p.j = (int)(q - (uint32_t)p.m * ns);
    return p;
}

__device__ __forceinline__ void mvx_next(const mvx_args &a, mvx_pos *p) {
    if ((p->r0 += (int64_t)1 << a.tile_log) >= a.rows) {
        p->r0 = 0;
        if (++p->j == a.n_sel) p->j = 0, p->m++;
    }
}

/* Arrivals per row group of the combined down product (comb); the last arrival resets its
 * counter to 0 for the next launch. One set serves every call because two comb launches never
 * run at once: each is a layer's MoE output, which the next layer's first op reads. */
#define MVX_MAX_GROUPS 16384
__device__ uint32_t g_mvx_cnt[MVX_MAX_GROUPS];

/* comb: the warp that wrote tile (j, r0)'s rows of y0 counts it; the n_sel-th arrival for the
 * group sums the group's rows over the selections in order, out[r] = ((0 + y_0[r]) + ... +
 * y_{n-1}[r]) (+ shared[r]) (k_moe_combine's steps). The fences order the y writes before the
 * count; y is read through L2 (__ldcg): other SMs wrote it. (The grid's last block combining
 * every row instead was slower: a serial tail of ~3 us, issue #7.) */
__device__ __forceinline__ void mvx_combine(const mvx_args &a, int64_t r0) {
    const int lane = threadIdx.x & 31;
    const uint32_t g = (uint32_t)(r0 >> a.tile_log);
    __threadfence();
    __syncwarp();
    uint32_t old = 0;
    if (lane == 0) old = atomicAdd(&g_mvx_cnt[g], 1u);
    if (__shfl_sync(MVX_FULL, old, 0) != (uint32_t)a.n_sel - 1) return;
    __threadfence();
    for (int q = lane; q < (1 << a.tile_log) && r0 + q < a.rows; q += 32) {
        const int64_t r = r0 + q;
        float sum = 0.0f;
        int j = 0;
        for (; j + 4 <= a.n_sel; j += 4) { /* four loads in flight, then the sums in order */
            const float *p = a.y0 + (int64_t)j * a.rows + r;
            const float v0 = __ldcg(p), v1 = __ldcg(p + a.rows), v2 = __ldcg(p + 2 * a.rows), v3 = __ldcg(p + 3 * a.rows);
            sum = __fadd_rn(__fadd_rn(__fadd_rn(__fadd_rn(sum, v0), v1), v2), v3);
        }
        for (; j < a.n_sel; j++) sum = __fadd_rn(sum, __ldcg(a.y0 + (int64_t)j * a.rows + r));
        a.out[r] = a.shared ? __fadd_rn(sum, a.shared[r]) : sum;
    }
    if (lane == 0) g_mvx_cnt[g] = 0;
}

/* The expert of selection j (-1: a corrupt router id, which must not read past the tensor). */
__device__ __forceinline__ int64_t mvx_expert(const mvx_args &a, int j) {
    const int64_t e = a.ids[j];
    return e >= 0 && e < a.n_experts ? e : -1;
}

/* The warp copies tile p's rows (contiguous in the expert) into the slot at shared byte off:
 * 16-byte cp.async when the tensor layout allows it, the rest by 2-byte loads (blocks are
 * 2-byte aligned, GGUF_LAYOUT §4). */
__device__ __forceinline__ void mvx_fetch(const mvx_args &a, const mvx_pos &p, uint8_t *sm, uint32_t off) {
    const int lane = threadIdx.x & 31;
    const uint32_t dst = (uint32_t)__cvta_generic_to_shared(sm) + off;
    const int64_t e = mvx_expert(a, p.j);
    if (e < 0) return;
    const uint8_t *src = (p.m ? a.w1 : a.w0) + e * a.stride + p.r0 * a.row_bytes;
    const int64_t nr = a.rows - p.r0 < (1 << a.tile_log) ? a.rows - p.r0 : (1 << a.tile_log);
    const uint32_t n = (uint32_t)(nr * a.row_bytes);
    uint32_t o = 0;
    if (a.aligned) {
        const uint32_t n16 = n & ~15u;
        for (o = 16 * lane; o < n16; o += 512) mvx_cp16(dst + o, src + o);
        o = n16;
    }
    for (uint32_t k = o + 2 * lane; k < n; k += 64)
        *(uint16_t *)(sm + off + k) = *(const uint16_t *)(src + k);
}

/* ---- One quant block of a row by one lane: its value in the CPU's f32 steps ---- */

/* A word of the IQ2_XXS selector tables (shared byte address): the tables are written once
 * before the block's barrier and only read after it, so the load may be scheduled freely. */
__device__ __forceinline__ uint32_t mvx_tbl(uint32_t addr) {
    uint32_t v;
    asm("ld.shared.u32 %0, [%1];" : "=r"(v) : "r"(addr));
    return v;
}

/* IQ2_XXS (q_dot_iq2_xxs_ref): (d·y.d)·Σ_g (2·s_g+1)·Σ signed grid·q; the ×0.125 comes at the
 * row's end. bo: the block's shared byte offset (2-byte aligned); tg / ts: the lane's column of
 * the grid / sign selector tables (shared byte addresses, entry i at +128·i). Per 8 values: a
 * byte extract and a 7-bit field, two table words, one OR, two prmt, two dp4a (issue #7: the
 * decode was issue-bound); two dp4a chains per group so they do not wait on each other. */
__device__ __forceinline__ float mvx_iq2(const uint8_t *sm, uint32_t bo, const int (&y)[64], float yd,
                                         uint32_t tg, uint32_t ts) {
    const float d = __half2float(__ushort_as_half(*(const uint16_t *)(sm + bo)));
    const uint32_t qo = bo + 2, sh = (qo & 2) * 8;
    const uint32_t *p = (const uint32_t *)(sm + (qo & ~3u));
    int bsum = 0;
#pragma unroll
    for (int g = 0; g < 8; g++) {
        const uint32_t w0 = p[2 * g], w1 = p[2 * g + 1], w2 = p[2 * g + 2];
        const uint32_t A = __funnelshift_r(w0, w1, sh), B = __funnelshift_r(w1, w2, sh);
        int s0 = 0, s1 = 0;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const uint32_t gi = __byte_perm(A, 0, 0x4440 + k), si = (B >> (7 * k)) & 127u;
            const uint32_t sel = mvx_tbl(tg + (gi << 7)) | mvx_tbl(ts + (si << 7));
            s0 = __dp4a((int)__byte_perm(MVX_POS, MVX_NEG, sel), y[8 * g + 2 * k], s0);
            s1 = __dp4a((int)__byte_perm(MVX_POS, MVX_NEG, sel >> 16), y[8 * g + 2 * k + 1], s1);
        }
        bsum += (int)(2 * (B >> 28) + 1) * (s0 + s1);
    }
    return __fmul_rn(__fmul_rn(d, yd), (float)bsum);
}

/* The K-quants' block value: (y.d·d)·isum − (y.d·dmin)·summs (q_dot_q2_k_ref / q4_k_ref). */
__device__ __forceinline__ float mvx_kq_value(float yd, float d, float dmin, int isum, int summs) {
    return __fsub_rn(__fmul_rn(__fmul_rn(yd, d), (float)isum), __fmul_rn(__fmul_rn(yd, dmin), (float)summs));
}

/* bsums j of the lane's activation block (packed two per word). */
__device__ __forceinline__ int mvx_bs(const uint32_t (&bs)[8], int j) {
    return (int)(int16_t)(bs[j >> 1] >> (16 * (j & 1)));
}

/* Q2_K (GGUF_LAYOUT §4.3): scales 0..15, qs 16..79, d 80, dmin 82; value e = 128h + 32s + l
 * is bits 2s of qs[32h + l], sub-block e/16. bo is 4-byte aligned (84-byte blocks). */
__device__ __forceinline__ float mvx_q2k(const uint8_t *sm, uint32_t bo, const int (&y)[64], float yd,
                                         const uint32_t (&bs)[8]) {
    const uint32_t *p = (const uint32_t *)(sm + bo);
    uint32_t sc[4];
#pragma unroll
    for (int i = 0; i < 4; i++) sc[i] = p[i];
    int summs = 0, isum = 0;
#pragma unroll
    for (int j = 0; j < 16; j++) summs += mvx_bs(bs, j) * (int)((sc[j >> 2] >> (8 * (j & 3) + 4)) & 15u);
#pragma unroll
    for (int h = 0; h < 2; h++)
#pragma unroll
        for (int half = 0; half < 2; half++) {
            uint32_t q[4];
#pragma unroll
            for (int i = 0; i < 4; i++) q[i] = p[4 + 8 * h + 4 * half + i];
#pragma unroll
            for (int s = 0; s < 4; s++) {
                int t = 0;
#pragma unroll
                for (int i = 0; i < 4; i++)
                    t = __dp4a((int)((q[i] >> (2 * s)) & 0x03030303u), y[32 * h + 8 * s + 4 * half + i], t);
                const int j = 8 * h + 2 * s + half;
                isum += (int)((sc[j >> 2] >> (8 * (j & 3))) & 15u) * t;
            }
        }
    const uint32_t dd = p[20];
    return mvx_kq_value(yd, __half2float(__ushort_as_half((unsigned short)(dd & 0xFFFFu))),
                        __half2float(__ushort_as_half((unsigned short)(dd >> 16))), isum, summs);
}

/* Q4_K (GGUF_LAYOUT §4.4): d 0, dmin 2, 12 scale bytes 4..15, qs 16..143; sub-block j is
 * nibble j&1 of qs bytes 32(j/2)..+31. bo is 4-byte aligned (144-byte blocks). */
__device__ __forceinline__ float mvx_q4k(const uint8_t *sm, uint32_t bo, const int (&y)[64], float yd,
                                         const uint32_t (&bs)[8]) {
    const uint32_t *p = (const uint32_t *)(sm + bo);
    const uint32_t dd = p[0];
    uint8_t s[12];
#pragma unroll
    for (int i = 0; i < 3; i++) {
        const uint32_t v = p[1 + i];
#pragma unroll
        for (int k = 0; k < 4; k++) s[4 * i + k] = (uint8_t)(v >> (8 * k));
    }
    int isum = 0, summs = 0;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        int sc, m;
        if (j < 4) {
            sc = s[j] & 63;
            m = s[j + 4] & 63;
        } else {
            sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
            m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        }
        int t = 0;
#pragma unroll
        for (int i = 0; i < 8; i++)
            t = __dp4a((int)((p[4 + 8 * (j >> 1) + i] >> (4 * (j & 1))) & 0x0F0F0F0Fu), y[8 * j + i], t);
        isum += sc * t;
        summs += m * (mvx_bs(bs, 2 * j) + mvx_bs(bs, 2 * j + 1));
    }
    return mvx_kq_value(yd, __half2float(__ushort_as_half((unsigned short)(dd & 0xFFFFu))),
                        __half2float(__ushort_as_half((unsigned short)(dd >> 16))), isum, summs);
}

/* The activation rows into shared memory by 4-byte cp.async (codes at MVX_ACT_Q bytes per
 * block, d and bsums apart), issued before the weight tiles: the block then waits for them and
 * its first tiles at once, not one latency after another (issue #7: session 3 lost ~4 us per
 * launch in its setup). */
__device__ __forceinline__ void mvx_act_async(const mvx_args &a, uint8_t *sm) {
    const int nw = a.n_x * a.nb * 73; /* 4-byte words of the Q8_K rows */
    const uint32_t aq = (uint32_t)__cvta_generic_to_shared(sm) + a.act_off;
    const uint32_t ad = aq + (uint32_t)(a.n_x * a.nb * MVX_ACT_Q), abs = ad + 4 * (uint32_t)(a.n_x * a.nb);
    for (int i = threadIdx.x; i < nw; i += blockDim.x) {
        const int b = i / 73, k = i - b * 73;
        const uint32_t dst = k == 0 ? ad + 4 * b : k <= 64 ? aq + b * MVX_ACT_Q + 4 * (k - 1) : abs + 32 * b + 4 * (k - 65);
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(dst), "l"(a.act + (size_t)b * CU_Q8_K_BYTES + 4 * k)
                     : "memory");
    }
    mvx_commit();
}

/* The IQ2_XXS selector tables into shared memory, each entry's word 32 times (one per lane,
 * 16-byte stores), loads before stores: ~12 instructions per thread (session 3 built the sign
 * table here by ALU and stored word by word: ~1-2 us per launch). */
__device__ __forceinline__ void mvx_tables(uint8_t *sm) {
    const int nt = blockDim.x, n = MVX_SEL_WORDS * 8; /* 16-byte stores */
    uint4 *t = (uint4 *)sm;
    for (int i0 = threadIdx.x; i0 < n; i0 += 8 * nt) {
        uint32_t v[8];
#pragma unroll
        for (int u = 0; u < 8; u++) v[u] = i0 + u * nt < n ? __ldg(&g_mvx_sel[(i0 + u * nt) >> 3]) : 0;
#pragma unroll
        for (int u = 0; u < 8; u++)
            if (i0 + u * nt < n) t[i0 + u * nt] = make_uint4(v[u], v[u], v[u], v[u]);
    }
}

/* TYPE: CU_T_IQ2_XXS, CU_T_Q2_K or CU_T_Q4_K; MVX_SLOTS slots per warp; RPL rows per lane per tile
 * (lane l decodes block l % L of rows l / L + k·32/L, k < RPL: independent decodes that share the
 * activation registers, for the issue-bound IQ2_XXS decode). */
template <int TYPE, int RPL>
__global__ void __launch_bounds__(32 * MVX_WARPS, 1) k_mvx(mvx_args a) {
    cu_pdl_wait();
    constexpr int S = MVX_SLOTS;
    extern __shared__ __align__(16) uint8_t sm[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const int64_t NW = (int64_t)gridDim.x * nw, gw = (int64_t)blockIdx.x * nw + warp;
    const int64_t t0 = gw * a.n_tiles / NW, t1 = (gw + 1) * a.n_tiles / NW;
    const uint32_t ring = a.ring_off + (uint32_t)warp * S * a.slot_bytes;
    /* The activation rows, then the warp's first tile; its other S - 1 slots only once that
     * tile is in (a.late; empty copy groups keep the count): with every slot of every warp asked
     * at once, ~2/3 of Flash's gate+up bytes were in flight before any warp could decode, and
     * the decode ran after the fetch instead of under it (issue #7). */
    mvx_act_async(a, sm);
    mvx_pos fp = mvx_at(a, t0), cp = fp;
    const int first = a.late ? 1 : S;
#pragma unroll
    for (int s = 0; s < S; s++) {
        if (s < first && t0 + s < t1) {
            if (!(a.diag & 2)) mvx_fetch(a, fp, sm, ring + s * a.slot_bytes);
            mvx_next(a, &fp);
        }
        mvx_commit();
    }
    if (TYPE == CU_T_IQ2_XXS) mvx_tables(sm);
    mvx_wait<S>(); /* the activation group */
    __syncthreads();
    const uint8_t *aq = sm + a.act_off;
    const float *ad = (const float *)(aq + (size_t)a.n_x * a.nb * MVX_ACT_Q);
    const uint32_t *abs = (const uint32_t *)(ad + a.n_x * a.nb);
    const uint32_t smb = (uint32_t)__cvta_generic_to_shared(sm);
    const uint32_t tg = smb + 4 * lane, ts = tg + 256 * 32 * 4;
    float *red = (float *)(sm + a.red_off) + warp * 32 * RPL;

    const int lpr = 1 << a.lpr_log, li = lane & (lpr - 1), rr = lane >> a.lpr_log, G = 32 >> a.lpr_log;
    int y[64] = {0};
    uint32_t bs[8] = {0};
    float yd = 0.0f;
    int cur = -1;
    for (int64_t t = t0; t < t1; t++) {
        mvx_wait<S - 1>();
        __syncwarp();
        if (t == t0 && first < S) { /* the first tile is in: the other slots now */
#pragma unroll
            for (int s = 1; s < S; s++) {
                if (t0 + s < t1) {
                    if (!(a.diag & 2)) mvx_fetch(a, fp, sm, ring + s * a.slot_bytes);
                    mvx_next(a, &fp);
                }
                mvx_commit();
            }
        }
        const int m = cp.m, j = cp.j;
        const int64_t r0 = cp.r0, e = mvx_expert(a, j);
        mvx_next(a, &cp);
        const int x = a.n_x > 1 ? j : 0;
        if (x != cur && li < a.nb) { /* the lane's activation block into registers */
            const int b = x * a.nb + li;
            const int4 *q4 = (const int4 *)(aq + (size_t)b * MVX_ACT_Q);
#pragma unroll
            for (int i = 0; i < 16; i++) {
                const int4 v = q4[i];
                y[4 * i] = v.x, y[4 * i + 1] = v.y, y[4 * i + 2] = v.z, y[4 * i + 3] = v.w;
            }
#pragma unroll
            for (int i = 0; i < 8; i++) bs[i] = abs[b * 8 + i];
            yd = ad[b];
        }
        cur = x;
        const uint32_t slot = ring + ((uint32_t)(t - t0) % S) * a.slot_bytes;
#pragma unroll
        for (int k = 0; k < RPL; k++) {
            float c = 0.0f;
            if (e >= 0 && li < a.nb && r0 + rr + k * G < a.rows && !(a.diag & 1)) {
                const uint32_t bo = slot + (uint32_t)((rr + k * G) * a.row_bytes);
                if (TYPE == CU_T_IQ2_XXS) c = mvx_iq2(sm, bo + li * CU_IQ2_XXS_BYTES, y, yd, tg, ts);
                else if (TYPE == CU_T_Q2_K) c = mvx_q2k(sm, bo + li * CU_Q2_K_BYTES, y, yd, bs);
                else c = mvx_q4k(sm, bo + li * CU_Q4_K_BYTES, y, yd, bs);
            }
            red[32 * k + lane] = c;
        }
        __syncwarp();
        /* Row q of the tile (lanes q % G·L.., pass q / G) by lane q % 32: its blocks in block
         * order from +0.0f, as the CPU sums them (one shared read per 4 blocks, not a shuffle
         * per block). */
#pragma unroll
        for (int k = 0; k < RPL; k++) {
            const int q = lane + 32 * k;
            const int64_t r = r0 + q;
            if (q >= G * RPL || r >= a.rows) break;
            const float *rv = red + 32 * (q / G) + (q % G) * lpr;
            float acc = 0.0f;
            if ((a.nb & 3) == 0) {
                for (int b = 0; b < a.nb; b += 4) {
                    const float4 v = *(const float4 *)(rv + b);
                    acc = __fadd_rn(__fadd_rn(__fadd_rn(__fadd_rn(acc, v.x), v.y), v.z), v.w);
                }
            } else {
                for (int b = 0; b < a.nb; b++) acc = __fadd_rn(acc, rv[b]);
            }
            const float v = e < 0 ? __int_as_float(0x7fc00000) : TYPE == CU_T_IQ2_XXS ? __fmul_rn(0.125f, acc) : acc;
            (m ? a.y1 : a.y0)[(int64_t)j * a.rows + r] = v;
        }
        if (a.comb) mvx_combine(a, r0);
        __syncwarp();
        if (t + S < t1) {
            if (!(a.diag & 2)) mvx_fetch(a, fp, sm, slot);
            mvx_next(a, &fp);
        }
        mvx_commit();
    }
    mvx_wait<0>();
}

/* ---- Host side ---- */

static int mvx_sms = -1, mvx_smem_max;

static int mvx_block_bytes(int type) {
    return type == CU_T_IQ2_XXS ? CU_IQ2_XXS_BYTES : type == CU_T_Q2_K ? CU_Q2_K_BYTES : CU_Q4_K_BYTES;
}

/* Rows per lane per tile: 2 for the issue-bound IQ2_XXS and Q2_K decodes (two independent blocks
 * share the activation registers), 1 for Q4_K (measured faster: its tiles are twice as long).
 * DS4_MVX_RPL=1|2: bench knob. */
static int mvx_rpl(int type) {
    const char *v = getenv("DS4_MVX_RPL");
    if (v && (atoi(v) == 1 || atoi(v) == 2)) return atoi(v);
    return type == CU_T_Q4_K ? 1 : 2;
}

/* Shared bytes of the tables, activations and the warps' row sums, and of one ring slot (a tile
 * of RPL·32/L rows, +16: the IQ2_XXS decode reads a word past its block). */
static void mvx_sizes(int type, int64_t cols, int n_x, int rpl, uint32_t *fixed, uint32_t *red_off,
                      uint32_t *slot, int *lpr_log) {
    const int nb = (int)(cols / 256);
    int lg = 0;
    while ((1 << lg) < nb) lg++;
    *lpr_log = lg;
    const uint32_t tbl = type == CU_T_IQ2_XXS ? MVX_SEL_WORDS * 32 * 4 : 0;
    const uint32_t act = (uint32_t)((n_x * nb * (MVX_ACT_Q + 4 + 32) + 15) & ~15);
    *red_off = tbl + act;
    *fixed = tbl + act + MVX_WARPS * 32 * 4 * (uint32_t)rpl;
    const uint32_t tile = (uint32_t)(rpl * (32 >> lg) * nb * mvx_block_bytes(type));
    *slot = (tile + 16 + 15) & ~15u;
}

extern "C" int cuda_mvx_supports(int type, int64_t cols, int n_x) {
    /* read per call (host only, not in a captured graph's replay) so one process can time both */
    const char *v1 = getenv("DS4_CUDA_EXP_V1");
    if (v1 && *v1 && strcmp(v1, "0") != 0) return 0;
    if (mvx_sms < 0) {
        int dev = 0;
        cudaGetDevice(&dev);
        if (cudaDeviceGetAttribute(&mvx_sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&mvx_smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
            mvx_sms = 0;
    }
    if (mvx_sms <= 0) return 0;
    if (type != CU_T_IQ2_XXS && type != CU_T_Q2_K && type != CU_T_Q4_K) return 0;
    if (type == CU_T_IQ2_XXS && !mvx_grid_ok) return 0;
    if (cols <= 0 || cols % 256 || cols / 256 > 32 || n_x <= 0) return 0;
    uint32_t fixed, red_off, slot;
    int lg;
    mvx_sizes(type, cols, n_x, mvx_rpl(type), &fixed, &red_off, &slot, &lg);
    return (int64_t)fixed + 4ll * MVX_SLOTS * slot <= mvx_smem_max; /* at least 4 warps per block */
}

template <int TYPE, int RPL>
static cudaError_t mvx_launch_k(unsigned grid, unsigned threads, size_t smem, const mvx_args &a) {
    static int attr_set;
    if (!attr_set) {
        cudaError_t e = cudaFuncSetAttribute(k_mvx<TYPE, RPL>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             mvx_smem_max);
        if (e != cudaSuccess) return e;
        attr_set = 1;
    }
    return cu_launch(k_mvx<TYPE, RPL>, dim3(grid), dim3(threads), smem, a);
}

template <int TYPE>
static cudaError_t mvx_launch_t(int rpl, unsigned grid, unsigned threads, size_t smem, const mvx_args &a) {
    return rpl == 2 ? mvx_launch_k<TYPE, 2>(grid, threads, smem, a) : mvx_launch_k<TYPE, 1>(grid, threads, smem, a);
}

static ds4_status mvx_launch(int type, const void *d_w1, const void *d_w2, int64_t n_experts,
                             int64_t w_stride, const int32_t *d_ids, int n_sel, int64_t rows,
                             int64_t cols, const void *d_act, int n_x, float *d_y1, float *d_y2,
                             const float *d_shared, float *d_out, ds4_error *err) {
    if (!cuda_mvx_supports(type, cols, n_x) || rows <= 0 || n_sel <= 0 || n_experts <= 0 ||
        (n_x != 1 && n_x != n_sel) || (d_out && d_w2) || rows * n_sel * (d_w2 ? 2 : 1) >= (1ll << 31))
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_mvx_launch: type %d, %lld x %lld, %d of %lld experts",
                          type, (long long)rows, (long long)cols, n_sel, (long long)n_experts);
    mvx_args a;
    uint32_t fixed, red_off, slot;
    int lg;
    const int rpl = mvx_rpl(type);
    mvx_sizes(type, cols, n_x, rpl, &fixed, &red_off, &slot, &lg);
    /* Bench knobs (docs/BENCHMARKS.md "Routed experts of a decode token (h3, session 4)"):
     * DS4_MVX_RPL (above), DS4_MVX_LATE (below), DS4_MVX_DIAG
     * (1: no decode, 2: no weight fetch; results then wrong). */
    const int S = MVX_SLOTS;
    a.w0 = (const uint8_t *)d_w1;
    a.w1 = (const uint8_t *)d_w2;
    a.y0 = d_y1;
    a.y1 = d_y2;
    a.ids = d_ids;
    a.act = (const uint8_t *)d_act;
    a.n_experts = n_experts;
    a.stride = w_stride;
    a.rows = rows;
    a.nb = (int)(cols / 256);
    a.row_bytes = (int64_t)a.nb * mvx_block_bytes(type);
    a.lpr_log = lg;
    a.tile_log = 5 - lg + (rpl == 2);
    a.n_sel = n_sel;
    a.n_x = n_x;
    const int rw = rpl * (32 >> lg), n_mat = d_w2 ? 2 : 1;
    a.tiles_per = (rows + rw - 1) / rw;
    a.n_tiles = a.tiles_per * n_sel * n_mat;
    a.comb = d_out != NULL;
    if (a.comb && a.tiles_per > MVX_MAX_GROUPS)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda experts down+combine: %lld row groups (at most %d)",
                          (long long)a.tiles_per, MVX_MAX_GROUPS);
    a.out = d_out;
    a.shared = d_shared;
    /* 16-byte copies: every tile starts 16-byte aligned */
    a.aligned = ((uintptr_t)d_w1 & 15) == 0 && ((uintptr_t)d_w2 & 15) == 0 && (w_stride & 15) == 0 &&
                ((int64_t)rw * a.row_bytes) % 16 == 0;
    a.slot_bytes = slot;
    const char *dg = getenv("DS4_MVX_DIAG");
    a.diag = dg ? atoi(dg) : 0;
    const char *lv = getenv("DS4_MVX_LATE");
    a.late = !(lv && strcmp(lv, "0") == 0);
    a.act_off = type == CU_T_IQ2_XXS ? MVX_SEL_WORDS * 32 * 4 : 0;
    a.red_off = red_off;
    a.ring_off = fixed;
    int nw = (int)((mvx_smem_max - (int64_t)fixed) / ((int64_t)S * slot));
    if (nw > MVX_WARPS) nw = MVX_WARPS;
    /* every SM busy before more warps per block */
    if (nw > (a.n_tiles + mvx_sms - 1) / mvx_sms) nw = (int)((a.n_tiles + mvx_sms - 1) / mvx_sms);
    if (nw < 1) nw = 1;
    const int64_t want = (a.n_tiles + nw - 1) / nw;
    const unsigned grid = (unsigned)(want < mvx_sms ? want : mvx_sms);
    const size_t smem = fixed + (size_t)nw * S * slot;
    cudaError_t e;
    if (type == CU_T_IQ2_XXS) e = mvx_launch_t<CU_T_IQ2_XXS>(rpl, grid, 32 * nw, smem, a);
    else if (type == CU_T_Q2_K) e = mvx_launch_t<CU_T_Q2_K>(rpl, grid, 32 * nw, smem, a);
    else e = mvx_launch_t<CU_T_Q4_K>(rpl, grid, 32 * nw, smem, a);
    CU_CHECK(e, err, "experts matvec launch");
    CU_CHECK(cudaGetLastError(), err, "experts matvec launch");
    return DS4_OK;
}

extern "C" ds4_status cuda_mvx_launch(int type, const void *d_w1, const void *d_w2, int64_t n_experts,
                                      int64_t w_stride, const int32_t *d_ids, int n_sel, int64_t rows,
                                      int64_t cols, const void *d_act, int n_x, float *d_y1, float *d_y2,
                                      ds4_error *err) {
    return mvx_launch(type, d_w1, d_w2, n_experts, w_stride, d_ids, n_sel, rows, cols, d_act, n_x, d_y1,
                      d_y2, NULL, NULL, err);
}

extern "C" ds4_status cuda_matvec_experts_down_combine(int type, const void *d_w, int64_t n_experts,
                                                       int64_t rows, int64_t cols, const int32_t *d_ids,
                                                       int n_sel, const void *d_act, float *d_y,
                                                       const float *d_shared, float *d_out,
                                                       ds4_error *err) {
    if (!d_out || !cuda_mvx_supports(type, cols, n_sel))
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED, "cuda experts down+combine: type %d, %lld columns",
                          type, (long long)cols);
    return mvx_launch(type, d_w, NULL, n_experts, (int64_t)(cols / 256) * mvx_block_bytes(type) * rows, d_ids,
                      n_sel, rows, cols, d_act, n_sel, d_y, NULL, d_shared, d_out, err);
}
