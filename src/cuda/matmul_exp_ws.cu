/*
 * cuda/matmul_exp_ws.cu — the routed experts' prefill product (IQ2_XXS gate/up, Q2_K down;
 * cuda_matmul_experts, also dense cuda_matmul of these types) as a warp-specialised int8
 * tensor-core kernel, bit-identical to cpu_matmul. Off by default: DS4_CUDA_MMX_WS=1 (read at
 * every call, like DS4_CUDA_MM_SKIP); matmul_mma.cu's k_matmul_mma is the default path.
 *
 * Why: matmul_mma.cu's block does everything in turn — every warp unpacks the step's weights
 * (a third of the instructions for IQ2_XXS), a barrier, every warp multiplies, a barrier — so
 * the unpack sits on the critical path and each barrier drains the SM (docs/BENCHMARKS.md,
 * "Prefill quantized products (h5, session 4)"). Here a block of 128 weight rows x 64 tokens
 * has CW consumer warps that only multiply step s from buffer s&1, while PW producer warps copy
 * the raw blocks and activations of the next steps (cp.async) and unpack step s+1 into buffer
 * (s+1)&1: one block-wide barrier per step. A consumer warp holds 16 rows x 64 tokens (CW 8) or
 * x 32 tokens (CW 16), so the n-tiles past the tile's last token are skipped (templated on the
 * 16-token pairs in use: an expert of 48 rows does 6 of 8 n-tiles, no runtime index into the
 * accumulators).
 *
 * Measured (H200, docs/BENCHMARKS.md "Prefill routed experts (h3, session 5)"): exact, but
 * SLOWER than k_matmul_mma at CW 8, one block per item: gate/up 1400 -> 1470 us per call, down
 * 1472 -> 1839. Two buffers of unpacked weights and activations take ~150 KB, so one block per
 * SM: 8 consumer warps (2 per scheduler) instead of k_matmul_mma's 16 warps doing the f32 steps,
 * and each block's start (tile lookup, first loads) is no longer hidden by a second block. The
 * 16-consumer-warp form (CW 16) and the persistent form (k_mm_exp_wsp: one block per SM runs
 * its items as one stream of steps, no fill per item) answer those two; they were built after
 * the session's GPU time was spent and have not run yet.
 *
 * The arithmetic is matmul_mma.cu's, value for value (its header and quants README §4.2-4.3):
 * per 256-column block, exact integer sums by mma (order free), then the CPU's f32 steps with
 * explicit __fmul_rn/__fadd_rn in block order:
 *   Q2_K     4-bit scale folded into the 2-bit value, isum by 8 chained m16n8k32 mmas;
 *            summs = Σ m_j·bsums_j by two m16n8k16 mmas on bsums = 128·hi + lo (the producers
 *            split them); acc += (d_x·d)·isum − (d_x·dmin)·summs.
 *   IQ2_XXS  per 32-group s by one mma on the signed grid values, bsum += (2·s4 + 1)·s;
 *            acc += (d·d_x)·bsum; output 0.125·acc.
 * Producer pipeline per step (raw weights one step further ahead than activations):
 *   issue X(s+1), commit; issue raw(s+2), commit; wait raw(s+1); producer barrier; unpack
 *   raw(s+1); wait X(s+1); [Q2_K: producer barrier, split bsums]; block barrier.
 * Must not: know tensor names or the model.
 */
#include "matmul_impl.cuh"

#define MX_BM 128 /* weight rows per block */
#define MX_BN 64  /* tokens per block */
#define MX_LD 272 /* bytes per int8 row in shared memory (256 + 16: ldmatrix phases hit 32 banks) */
#define MX_RG 8   /* row groups of 16 rows: consumer warp w owns rows 16(w%8) .. +15 */

/* One buffer (the unpacked operands of a step), bytes; two buffers, then the grid and the ring. */
#define MX_W 0                           /* int8 [BM][LD]: unpacked weights */
#define MX_WF (MX_W + MX_BM * MX_LD)     /* float [BM][2]: d, dmin of a row's block */
#define MX_WI (MX_WF + MX_BM * 8)        /* int8 [BM][8]: IQ2_XXS group scales 2·s4 + 1 */
#define MX_WM (MX_WI + MX_BM * 8)        /* int8 [BM][16]: Q2_K mins, A of the summs mma */
#define MX_X (MX_WM + MX_BM * 16)        /* int8 [BN][LD]: activation codes */
#define MX_XF (MX_X + MX_BN * MX_LD)     /* float [BN]: activation scales */
#define MX_XB (MX_XF + MX_BN * 4)        /* int16 [BN][16]: Q8_K bsums as copied */
#define MX_XL (MX_XB + MX_BN * 32)       /* int8 [BN][16]: bsums & 127 */
#define MX_XH (MX_XL + MX_BN * 16)       /* int8 [BN][16]: bsums >> 7 */
#define MX_META (MX_XH + MX_BN * 16)     /* int64 [4]: the step's r0, t0, t1 (persistent kernel) */
#define MX_BUF (MX_META + 32)            /* bytes per buffer */
#define MX_GRID (2 * MX_BUF)             /* IQ2_XXS grid u64[256] */
#define MX_RING (MX_GRID + 256 * 8)      /* raw weight ring, two stages */
static_assert(MX_X % 16 == 0 && MX_XB % 16 == 0 && MX_BUF % 16 == 0 && MX_RING % 16 == 0,
              "cp.async targets and ldmatrix rows are 16-byte aligned");

/* The raw ring (as matmul_mma.cu's mq_ring): a row's block of a step (66 / 84 bytes, 2-byte
 * aligned) by the 16-byte aligned chunks that cover it, keeping its offset within the chunk. */
template <int TYPE> struct mx_raw {
    static constexpr int sb = TYPE == CU_T_IQ2_XXS ? CU_IQ2_XXS_BYTES : CU_Q2_K_BYTES;
    static constexpr int nch = (14 + sb + 15) / 16; /* chunks covering sb bytes at any even offset */
    static constexpr int slot = 16 * nch;
    static constexpr int smem = MX_RING + 2 * MX_BM * slot;
};
#define MX_MAXE 1024 /* experts of the persistent kernel's tile table (more: the other kernel) */
#define MX_TAB_BYTES (8 * (MX_MAXE + 1))
static_assert(mx_raw<CU_T_Q2_K>::smem + MX_TAB_BYTES <= 227 * 1024 - 1024, "one block per SM must fit");

__device__ uint64_t mx_iq2_grid[256];
extern "C" const uint64_t q_iq2xxs_grid[256];

__device__ __forceinline__ void mx_mma32(int (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mx_mma16(int (&d)[4], uint32_t a0, uint32_t a1, uint32_t b0) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, "
                 "{%4,%5}, {%6}, {%0,%1,%2,%3};"
                 : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
                 : "r"(a0), "r"(a1), "r"(b0));
}
/* Four 8x8 b16 matrices: lanes 8i .. 8i+7 address matrix i's rows; register i its fragment. */
__device__ __forceinline__ void mx_ldm4(uint32_t (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
}
/* n bytes (4 or 16) global -> shared, asynchronously; n_src 0 writes zeros, reads nothing. */
template <int N>
__device__ __forceinline__ void mx_cp(void *dst, const void *src, int n_src) {
    unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    if constexpr (N == 16)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src), "r"(n_src));
    else
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(d), "l"(src), "r"(n_src));
}
__device__ __forceinline__ void mx_commit() { asm volatile("cp.async.commit_group;"); }
template <int N> __device__ __forceinline__ void mx_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}
/* The producers' own barrier (id 1): the consumers never wait on it. */
template <int PW> __device__ __forceinline__ void mx_bar_prod() {
    asm volatile("bar.sync 1, %0;" ::"n"(32 * PW) : "memory");
}

/* ---- Producers (pt = thread index among the 32·PW producer threads) ---- */

/* Raw blocks of step s of rows r0 .. r0+127 into ring stage st (zeros past the matrix). */
template <int TYPE, int PW>
__device__ __forceinline__ void mx_issue_w(uint8_t *sm, int st, const uint8_t *wb, int64_t r0,
                                           int64_t rows, uint64_t rb, int64_t s, const void *zsrc,
                                           int pt) {
    constexpr int NCH = mx_raw<TYPE>::nch, SB = mx_raw<TYPE>::sb, SLOT = mx_raw<TYPE>::slot;
    uint8_t *dst = sm + MX_RING + st * MX_BM * SLOT;
#pragma unroll
    for (int k = 0; k < (MX_BM * NCH + 32 * PW - 1) / (32 * PW); k++) {
        int idx = pt + 32 * PW * k;
        if (idx < MX_BM * NCH) {
            int r = idx / NCH, c = idx % NCH;
            uintptr_t g = (uintptr_t)wb + (uint64_t)(r0 + r) * rb + (uint64_t)s * SB;
            uintptr_t a = (g & ~(uintptr_t)15) + 16 * c;
            bool ok = r0 + r < rows && a < g + SB;
            mx_cp<16>(dst + r * SLOT + 16 * c, ok ? (const void *)a : zsrc, ok ? 16 : 0);
        }
    }
}

/* Row r's block of step s in ring stage st. */
template <int TYPE>
__device__ __forceinline__ const uint8_t *mx_ring_row(const uint8_t *sm, int st, const uint8_t *wb,
                                                      int64_t r0, int r, uint64_t rb, int64_t s) {
    uintptr_t g = (uintptr_t)wb + (uint64_t)(r0 + r) * rb + (uint64_t)s * mx_raw<TYPE>::sb;
    return sm + MX_RING + (st * MX_BM + r) * mx_raw<TYPE>::slot + (int)(g & 15);
}

/* Activations of step s, tokens t0 .. t1, into buffer buf (rows past t1 keep what they held:
 * their outputs are never stored). */
template <int TYPE, int PW>
__device__ __forceinline__ void mx_issue_x(uint8_t *buf, const mm_planes &pl, int64_t cols,
                                           int64_t t0, int64_t t1, int64_t s, int pt) {
#pragma unroll
    for (int k = 0; k < MX_BN * 16 / (32 * PW); k++) {
        int idx = pt + 32 * PW * k, t = idx >> 4, c = idx & 15;
        if (t0 + t < t1)
            mx_cp<16>(buf + MX_X + t * MX_LD + 16 * c, pl.codes + (t0 + t) * cols + 256 * s + 16 * c, 16);
    }
    if (pt < MX_BN && t0 + pt < t1) mx_cp<4>(buf + MX_XF + 4 * pt, pl.d + (t0 + pt) * pl.nblk + s, 4);
    if constexpr (TYPE == CU_T_Q2_K) {
        int t = pt >> 1, h = pt & 1;
        if (pt < 2 * MX_BN && t0 + t < t1)
            mx_cp<16>(buf + MX_XB + 32 * t + 16 * h, pl.bsums + ((t0 + t) * pl.nblk + s) * 16 + 8 * h, 16);
    }
}

/* Q2_K bsums of buffer buf split exactly as 128·hi + lo (lo = bs & 127, hi = bs >> 7: int8
 * since |bs| <= 2048), the B operands of the summs mmas. */
template <int PW>
__device__ __forceinline__ void mx_split_bsums(uint8_t *buf, int pt) {
    if (pt >= 2 * MX_BN) return;
    int t = pt >> 1, h = pt & 1;
    uint4 u = *(const uint4 *)(buf + MX_XB + 32 * t + 16 * h);
    uint32_t w[4] = {u.x, u.y, u.z, u.w}, lo[2] = {0, 0}, hi[2] = {0, 0};
#pragma unroll
    for (int i = 0; i < 8; i++) {
        int v = (int16_t)(w[i >> 1] >> (16 * (i & 1)));
        lo[i >> 2] |= (uint32_t)(v & 127) << (8 * (i & 3));
        hi[i >> 2] |= (uint32_t)(uint8_t)(int8_t)(v >> 7) << (8 * (i & 3));
    }
    *(uint2 *)(buf + MX_XL + 16 * t + 8 * h) = make_uint2(lo[0], lo[1]);
    *(uint2 *)(buf + MX_XH + 16 * t + 8 * h) = make_uint2(hi[0], hi[1]);
}

/* IQ2_XXS step s from ring stage st into buffer buf: task (row r, group g) writes the 32 signed
 * grid values, the group scale and (g = 0) d. Signs as matmul_mma.cu's mq_w<IQ2_XXS>::store:
 * byte masks computed (7 bits + parity; x·0x204081 spreads 4 bits to 4 bytes), -v = (v^0xFF)+1. */
template <int PW>
__device__ __forceinline__ void mx_unpack_iq2(uint8_t *buf, const uint8_t *sm, int st,
                                              const uint8_t *wb, int64_t r0, uint64_t rb,
                                              int64_t s, int pt) {
    const uint2 *grid = (const uint2 *)(sm + MX_GRID);
    const int g = pt & 7;
#pragma unroll
    for (int k = 0; k < MX_BM * 8 / (32 * PW); k++) {
        int r = (pt + 32 * PW * k) >> 3;
        const uint8_t *p = mx_ring_row<CU_T_IQ2_XXS>(sm, st, wb, r0, r, rb, s);
        uint32_t A = cu_ld_u32_a2(p + 2 + 8 * g), B = cu_ld_u32_a2(p + 6 + 8 * g);
        uint32_t out[8];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            uint2 gv = grid[(A >> (8 * j)) & 255u];
            uint32_t s7 = (B >> (7 * j)) & 127u, s8 = s7 | ((__popc(s7) & 1u) << 7);
            uint32_t m0 = ((s8 & 15u) * 0x00204081u) & 0x01010101u;
            uint32_t m1 = ((s8 >> 4) * 0x00204081u) & 0x01010101u;
            out[2 * j] = (gv.x ^ (m0 * 255u)) + m0;
            out[2 * j + 1] = (gv.y ^ (m1 * 255u)) + m1;
        }
        uint4 *dst = (uint4 *)(buf + MX_W + r * MX_LD + 32 * g);
        dst[0] = make_uint4(out[0], out[1], out[2], out[3]);
        dst[1] = make_uint4(out[4], out[5], out[6], out[7]);
        buf[MX_WI + 8 * r + g] = (uint8_t)(2 * (B >> 28) + 1);
        if (g == 0) ((float *)(buf + MX_WF))[2 * r] = cu_f16(p);
    }
}

/* Q2_K step s from ring stage st into buffer buf: task (row r, h, half) as matmul_mma.cu's
 * mq_w<Q2_K>: qs bytes 32h+16half .. +15 hold elements 128h + 32sub + 16half + l (bits 2sub),
 * sub-block 8h + 2sub + half (§4.3); the 2-bit values times their 4-bit scale (<= 45, no carry
 * between bytes), the mins of sub-blocks 8h .. 8h+7, d and dmin. */
template <int PW>
__device__ __forceinline__ void mx_unpack_q2k(uint8_t *buf, const uint8_t *sm, int st,
                                              const uint8_t *wb, int64_t r0, uint64_t rb,
                                              int64_t s, int pt) {
    const int h = (pt >> 1) & 1, half = pt & 1;
    float *wf = (float *)(buf + MX_WF);
#pragma unroll
    for (int k = 0; k < MX_BM * 4 / (32 * PW); k++) {
        int r = (pt + 32 * PW * k) >> 2;
        const uint8_t *p = mx_ring_row<CU_T_Q2_K>(sm, st, wb, r0, r, rb, s);
        uint32_t q[4];
#pragma unroll
        for (int i = 0; i < 4; i++) q[i] = cu_ld_u32_a2(p + 16 + 32 * h + 16 * half + 4 * i);
        uint32_t sc[2] = {cu_ld_u32_a2(p + 8 * h), cu_ld_u32_a2(p + 8 * h + 4)};
#pragma unroll
        for (int sub = 0; sub < 4; sub++) {
            uint32_t m = (sc[sub >> 1] >> (8 * (2 * (sub & 1) + half))) & 15u;
            uint4 v;
            v.x = ((q[0] >> (2 * sub)) & 0x03030303u) * m;
            v.y = ((q[1] >> (2 * sub)) & 0x03030303u) * m;
            v.z = ((q[2] >> (2 * sub)) & 0x03030303u) * m;
            v.w = ((q[3] >> (2 * sub)) & 0x03030303u) * m;
            *(uint4 *)(buf + MX_W + r * MX_LD + 128 * h + 32 * sub + 16 * half) = v;
        }
        if (half == 0)
            *(uint2 *)(buf + MX_WM + 16 * r + 8 * h) =
                make_uint2((sc[0] >> 4) & 0x0F0F0F0Fu, (sc[1] >> 4) & 0x0F0F0F0Fu);
        if (h == 0 && half == 0) {
            wf[2 * r] = cu_f16(p + 80);
            wf[2 * r + 1] = cu_f16(p + 82);
        }
    }
}

template <int TYPE, int PW>
__device__ __forceinline__ void mx_unpack(uint8_t *buf, const uint8_t *sm, int st, const uint8_t *wb,
                                          int64_t r0, uint64_t rb, int64_t s, int pt) {
    if constexpr (TYPE == CU_T_IQ2_XXS) mx_unpack_iq2<PW>(buf, sm, st, wb, r0, rb, s, pt);
    else mx_unpack_q2k<PW>(buf, sm, st, wb, r0, rb, s, pt);
}

/* ---- Consumers ---- */

/* Step of buffer buf for a warp's rows rw .. rw+15 and tokens tb .. tb+16·NP-1 of the tile:
 * acc[nt][c] is row rw + g + 8(c/2), token tb + 8nt + 2tg + (c&1) (mma m16n8 fragments). */
template <int TYPE, int NP, int UNR, int NT>
__device__ __forceinline__ void mx_consume(float (&acc)[NT][4], const uint8_t *buf, int rw, int tb,
                                           int lane) {
    const int g = lane >> 2, tg = lane & 3;
    /* A (16 rows x 32 codes): rows 0-7 / 8-15 x bytes 0-15 / 16-31 = a0..a3; B (tokens 16p ..
     * 16p+15): tokens 0-7 bytes 0-15 / 16-31, tokens 8-15 likewise. */
    const unsigned a_addr = (unsigned)__cvta_generic_to_shared(
        buf + MX_W + (rw + (lane & 7) + 8 * ((lane >> 3) & 1)) * MX_LD + 16 * (lane >> 4));
    const unsigned b_addr = (unsigned)__cvta_generic_to_shared(
        buf + MX_X + (tb + (lane & 7) + 8 * (lane >> 4)) * MX_LD + 16 * ((lane >> 3) & 1));
    int isum[2 * NP][4] = {};
    uint2 ri0 = make_uint2(0, 0), ri1 = make_uint2(0, 0);
    if constexpr (TYPE == CU_T_IQ2_XXS) { /* the 8 group scales of rows g and g+8 */
        ri0 = *(const uint2 *)(buf + MX_WI + 8 * (rw + g));
        ri1 = *(const uint2 *)(buf + MX_WI + 8 * (rw + g + 8));
    }
#pragma unroll UNR
    for (int ch = 0; ch < 8; ch++) {
        uint32_t af[4], bf[NP][4];
        mx_ldm4(af, a_addr + (unsigned)(32 * ch));
#pragma unroll
        for (int p = 0; p < NP; p++) mx_ldm4(bf[p], b_addr + (unsigned)(16 * p * MX_LD + 32 * ch));
        if constexpr (TYPE == CU_T_Q2_K) { /* scales folded: one chained integer sum */
#pragma unroll
            for (int nt = 0; nt < 2 * NP; nt++)
                mx_mma32(isum[nt], af, bf[nt >> 1][2 * (nt & 1)], bf[nt >> 1][2 * (nt & 1) + 1]);
        } else {
            const int s0 = (int)(((ch < 4 ? ri0.x : ri0.y) >> (8 * (ch & 3))) & 255u);
            const int s1 = (int)(((ch < 4 ? ri1.x : ri1.y) >> (8 * (ch & 3))) & 255u);
#pragma unroll
            for (int nt = 0; nt < 2 * NP; nt++) {
                int sv[4] = {0, 0, 0, 0};
                mx_mma32(sv, af, bf[nt >> 1][2 * (nt & 1)], bf[nt >> 1][2 * (nt & 1) + 1]);
                isum[nt][0] += s0 * sv[0];
                isum[nt][1] += s0 * sv[1];
                isum[nt][2] += s1 * sv[2];
                isum[nt][3] += s1 * sv[3];
            }
        }
    }
    const float *wf = (const float *)(buf + MX_WF), *xf = (const float *)(buf + MX_XF);
    const float2 w0 = *(const float2 *)(wf + 2 * (rw + g)), w1 = *(const float2 *)(wf + 2 * (rw + g + 8));
    const float wd[2] = {w0.x, w1.x}, wm[2] = {w0.y, w1.y};
    uint32_t a0 = 0, a1 = 0;
    if constexpr (TYPE == CU_T_Q2_K) {
        a0 = *(const uint32_t *)(buf + MX_WM + 16 * (rw + g) + 4 * tg);
        a1 = *(const uint32_t *)(buf + MX_WM + 16 * (rw + g + 8) + 4 * tg);
    }
#pragma unroll
    for (int nt = 0; nt < 2 * NP; nt++) {
        const float2 x2 = *(const float2 *)(xf + tb + 8 * nt + 2 * tg);
        const float xd[2] = {x2.x, x2.y};
        if constexpr (TYPE == CU_T_IQ2_XXS) { /* acc += (d·d_x)·bsum */
#pragma unroll
            for (int c = 0; c < 4; c++)
                acc[nt][c] = __fadd_rn(acc[nt][c], __fmul_rn(__fmul_rn(wd[c >> 1], xd[c & 1]),
                                                             (float)isum[nt][c]));
        } else { /* summs = 128·Σ m·hi + Σ m·lo, then the f32 steps */
            int lo[4] = {0, 0, 0, 0}, hi[4] = {0, 0, 0, 0};
            mx_mma16(lo, a0, a1, *(const uint32_t *)(buf + MX_XL + 16 * (tb + 8 * nt + g) + 4 * tg));
            mx_mma16(hi, a0, a1, *(const uint32_t *)(buf + MX_XH + 16 * (tb + 8 * nt + g) + 4 * tg));
#pragma unroll
            for (int c = 0; c < 4; c++) {
                float dx = xd[c & 1];
                float dall = __fmul_rn(dx, wd[c >> 1]), dmin = __fmul_rn(dx, wm[c >> 1]);
                int summs = hi[c] * 128 + lo[c];
                acc[nt][c] = __fadd_rn(acc[nt][c], __fsub_rn(__fmul_rn(dall, (float)isum[nt][c]),
                                                             __fmul_rn(dmin, (float)summs)));
            }
        }
    }
}

/* grid (ceil(rows/128), token-tile bound), 32·(CW + PW) threads, mx_raw<TYPE>::smem bytes.
 * CW consumer warps: 8 (warp tile 16 rows x 64 tokens) or 16 (16 x 32: the second 8 take
 * tokens 32 .. 63); PW producer warps. */
template <int TYPE, int CW, int PW>
__global__ void __launch_bounds__(32 * (CW + PW), 1)
k_mm_exp_ws(const uint8_t *w, int64_t rows, int64_t cols, uint64_t rb, uint64_t e_stride,
            const int32_t *d_off, int n_expert, mm_planes pl, int64_t n_tok, float *y, int64_t ldy) {
    cu_pdl_wait();
    extern __shared__ __align__(16) uint8_t sm[];
    mm_tile tl;
    if (!mm_find_tile(d_off, n_expert, n_tok, MX_BN, blockIdx.y, &tl)) return;
    const int64_t r0 = (int64_t)blockIdx.x * MX_BM, ns = pl.nblk;
    const uint8_t *wb = w + (uint64_t)tl.e * e_stride;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    constexpr int NT = 8 * MX_RG / CW; /* n-tiles of 8 tokens per consumer warp */
    const bool prod = warp >= CW;
    const int pt = threadIdx.x - 32 * CW, rw = 16 * (warp % MX_RG), tb = 8 * NT * (warp / MX_RG);
    /* 16-token pairs of n-tiles in use by this warp: 0 .. NT/2 */
    const int64_t left = tl.t1 - tl.t0 - tb;
    const int np = left <= 0 ? 0 : left >= 8 * NT ? NT / 2 : (int)((left + 15) / 16);
    /* chunks unrolled by two; by one under 168 registers, where two spill */
    constexpr int UNR = CW + PW <= 12 ? 2 : 1;
    float acc[NT][4] = {};
    if (prod) { /* step 0 into buffer 0; raw(1) stays in flight */
        if constexpr (TYPE == CU_T_IQ2_XXS) {
            uint64_t *gr = (uint64_t *)(sm + MX_GRID);
            for (int i = pt; i < 256; i += 32 * PW) gr[i] = mx_iq2_grid[i];
        }
        mx_issue_w<TYPE, PW>(sm, 0, wb, r0, rows, rb, 0, pl.codes, pt);
        mx_commit();
        mx_issue_x<TYPE, PW>(sm, pl, cols, tl.t0, tl.t1, 0, pt);
        mx_commit();
        if (ns > 1) mx_issue_w<TYPE, PW>(sm, 1, wb, r0, rows, rb, 1, pl.codes, pt);
        mx_commit();
        mx_wait<1>();
        mx_bar_prod<PW>();
        mx_unpack<TYPE, PW>(sm, sm, 0, wb, r0, rb, 0, pt);
        if constexpr (TYPE == CU_T_Q2_K) mx_split_bsums<PW>(sm, pt);
    }
    __syncthreads();
    for (int64_t s = 0; s < ns; s++) {
        const int cur = (int)(s & 1);
        if (prod) {
            if (s + 1 < ns) { /* step n = s+1 into buffer cur^1 while the consumers multiply s */
                const int64_t n = s + 1;
                uint8_t *nb = sm + (cur ^ 1) * MX_BUF;
                mx_issue_x<TYPE, PW>(nb, pl, cols, tl.t0, tl.t1, n, pt);
                mx_commit();
                /* raw(n+1) into stage (n+1)&1 = cur: raw(s), unpacked before the last barrier */
                if (n + 1 < ns) mx_issue_w<TYPE, PW>(sm, cur, wb, r0, rows, rb, n + 1, pl.codes, pt);
                mx_commit();
                mx_wait<2>(); /* raw(n), committed a step earlier, landed */
                mx_bar_prod<PW>();
                mx_unpack<TYPE, PW>(nb, sm, cur ^ 1, wb, r0, rb, n, pt);
                mx_wait<1>(); /* X(n) landed */
                if constexpr (TYPE == CU_T_Q2_K) {
                    mx_bar_prod<PW>();
                    mx_split_bsums<PW>(nb, pt);
                }
            }
        } else {
            const uint8_t *cb = sm + cur * MX_BUF;
            if constexpr (NT == 8) {
                switch (np) {
                case 1: mx_consume<TYPE, 1, UNR>(acc, cb, rw, tb, lane); break;
                case 2: mx_consume<TYPE, 2, UNR>(acc, cb, rw, tb, lane); break;
                case 3: mx_consume<TYPE, 3, UNR>(acc, cb, rw, tb, lane); break;
                default: mx_consume<TYPE, 4, UNR>(acc, cb, rw, tb, lane); break;
                }
            } else {
                if (np == 1) mx_consume<TYPE, 1, UNR>(acc, cb, rw, tb, lane);
                else if (np == 2) mx_consume<TYPE, 2, UNR>(acc, cb, rw, tb, lane);
            }
        }
        __syncthreads(); /* buffer cur^1 complete; every reader of buffer cur done */
    }
    if (prod) return;
    const int g = lane >> 2, tg = lane & 3;
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int c = 0; c < 4; c++) {
            int64_t o = r0 + rw + g + 8 * (c >> 1), t = tl.t0 + tb + 8 * nt + 2 * tg + (c & 1);
            /* README §4.2: IQ2_XXS x0.125 once */
            float v = TYPE == CU_T_IQ2_XXS ? __fmul_rn(0.125f, acc[nt][c]) : acc[nt][c];
            if (o < rows && t < tl.t1) y[t * ldy + o] = v;
        }
}

/* ---- Persistent form: a block runs items (row block, token tile) blockIdx.x, +gridDim.x, ...
 * as one stream of steps, so the producers fill the next item's first step while the consumers
 * finish the last one's: no pipeline fill per item and no partial last wave (the startup of a
 * one-block-per-SM kernel is otherwise exposed). Items are numbered tile-major (row blocks of a
 * tile adjacent: the blocks running at once share activation tiles in L2). ---- */

struct mx_item {
    const uint8_t *wb; /* the item's expert weights */
    int64_t r0, t0, t1;
};

/* Item it from the tile table: tb[e] tiles before expert e (tb[n_e] all), st[e] its first row. */
__device__ __forceinline__ mx_item mx_item_of(const int *tb, const int *st, int n_e, int nrb,
                                              const uint8_t *w, uint64_t e_stride, int64_t it) {
    const int tile = (int)(it / nrb);
    int lo = 0, hi = n_e; /* tb[lo] <= tile < tb[hi] */
    while (hi - lo > 1) {
        int mid = (lo + hi) >> 1;
        if (tb[mid] <= tile) lo = mid;
        else hi = mid;
    }
    mx_item m;
    m.wb = w + (uint64_t)lo * e_stride;
    m.r0 = (int64_t)(it % nrb) * MX_BM;
    m.t0 = st[lo] + (int64_t)(tile - tb[lo]) * MX_BN;
    m.t1 = m.t0 + MX_BN < st[lo + 1] ? m.t0 + MX_BN : st[lo + 1];
    return m;
}

/* grid: at most one block per SM; n_e experts (<= MX_MAXE; dense: 1), rows of expert e
 * d_off[e] .. d_off[e+1] (dense: 0 .. n_tok). */
template <int TYPE, int CW, int PW>
__global__ void __launch_bounds__(32 * (CW + PW), 1)
k_mm_exp_wsp(const uint8_t *w, int64_t rows, int64_t cols, uint64_t rb, uint64_t e_stride,
             const int32_t *d_off, int n_e, mm_planes pl, int64_t n_tok, float *y, int64_t ldy) {
    cu_pdl_wait();
    extern __shared__ __align__(16) uint8_t sm[];
    __shared__ int s_warp[32];
    constexpr int NT = 8 * MX_RG / CW, NTH = 32 * (CW + PW);
    int *tb = (int *)(sm + mx_raw<TYPE>::smem), *st = tb + MX_MAXE + 1;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    { /* the tile table: exclusive prefix of the experts' tile counts over the threads' ranges */
        const int per = (n_e + NTH - 1) / NTH, e0 = tid * per, e1 = e0 + per < n_e ? e0 + per : n_e;
        int mine = 0;
        for (int e = e0; e < e1; e++) {
            int a = d_off ? d_off[e] : 0, b = d_off ? d_off[e + 1] : (int)n_tok;
            st[e] = a;
            mine += (b - a + MX_BN - 1) / MX_BN;
        }
        int inc = mine;
        for (int o = 1; o < 32; o <<= 1) {
            int v = __shfl_up_sync(0xffffffffu, inc, o);
            if (lane >= o) inc += v;
        }
        if (lane == 31) s_warp[warp] = inc;
        __syncthreads();
        int run = inc - mine;
        for (int k = 0; k < warp; k++) run += s_warp[k];
        for (int e = e0; e < e1; e++) {
            tb[e] = run;
            run += ((d_off ? d_off[e + 1] : (int)n_tok) - st[e] + MX_BN - 1) / MX_BN;
        }
        if (tid == NTH - 1) {
            tb[n_e] = run;
            st[n_e] = d_off ? d_off[n_e] : (int)n_tok;
        }
        __syncthreads();
    }
    const int nrb = (int)((rows + MX_BM - 1) / MX_BM);
    const int64_t n_items = (int64_t)tb[n_e] * nrb, ns = pl.nblk;
    const int64_t nk = n_items > blockIdx.x ? (n_items - blockIdx.x + gridDim.x - 1) / gridDim.x : 0;
    const int64_t nq = nk * ns; /* steps of this block */
    if (nq == 0) return;
    const bool prod = warp >= CW;
    const int pt = tid - 32 * CW, rw = 16 * (warp % MX_RG), tbk = 8 * NT * (warp / MX_RG);
    constexpr int UNR = CW + PW <= 12 ? 2 : 1;
    float acc[NT][4] = {};
    /* producers: the items of the activation / unpack stream (step n) and of the raw stream (n+1) */
    int64_t kx = -1, kw = -1;
    mx_item ix = {}, iw = {};
    auto item = [&](int64_t q, int64_t &kc, mx_item &m) {
        int64_t k = q / ns;
        if (k != kc) {
            kc = k;
            m = mx_item_of(tb, st, n_e, nrb, w, e_stride, blockIdx.x + k * gridDim.x);
        }
    };
    /* Step n into buffer n&1: its activations (issued now), its raw weights (issued a step
     * earlier), the raw weights of step n+1 issued; unpack; the step's item for the consumers. */
    auto produce = [&](int64_t n) {
        uint8_t *nb = sm + (int)(n & 1) * MX_BUF;
        item(n, kx, ix);
        mx_issue_x<TYPE, PW>(nb, pl, cols, ix.t0, ix.t1, n % ns, pt);
        mx_commit();
        if (n + 1 < nq) {
            item(n + 1, kw, iw);
            mx_issue_w<TYPE, PW>(sm, (int)((n + 1) & 1), iw.wb, iw.r0, rows, rb, (n + 1) % ns, pl.codes, pt);
        }
        mx_commit();
        mx_wait<2>();
        mx_bar_prod<PW>();
        mx_unpack<TYPE, PW>(nb, sm, (int)(n & 1), ix.wb, ix.r0, rb, n % ns, pt);
        if (pt == 0) {
            int64_t *meta = (int64_t *)(nb + MX_META);
            meta[0] = ix.r0;
            meta[1] = ix.t0;
            meta[2] = ix.t1;
        }
        mx_wait<1>();
        if constexpr (TYPE == CU_T_Q2_K) {
            mx_bar_prod<PW>();
            mx_split_bsums<PW>(nb, pt);
        }
    };
    if (prod) {
        if constexpr (TYPE == CU_T_IQ2_XXS) {
            uint64_t *gr = (uint64_t *)(sm + MX_GRID);
            for (int i = pt; i < 256; i += 32 * PW) gr[i] = mx_iq2_grid[i];
        }
        item(0, kw, iw);
        mx_issue_w<TYPE, PW>(sm, 0, iw.wb, iw.r0, rows, rb, 0, pl.codes, pt);
        mx_commit(); /* then produce(0): the group count as in the loop */
        produce(0);
    }
    __syncthreads();
    for (int64_t q = 0; q < nq; q++) {
        const uint8_t *cb = sm + (int)(q & 1) * MX_BUF;
        if (prod) {
            if (q + 1 < nq) produce(q + 1);
        } else {
            const int64_t *meta = (const int64_t *)(cb + MX_META);
            const int64_t r0 = meta[0], t0 = meta[1], t1 = meta[2], left = t1 - t0 - tbk;
            const int np = left <= 0 ? 0 : left >= 8 * NT ? NT / 2 : (int)((left + 15) / 16);
            if constexpr (NT == 8) {
                switch (np) {
                case 1: mx_consume<TYPE, 1, UNR>(acc, cb, rw, tbk, lane); break;
                case 2: mx_consume<TYPE, 2, UNR>(acc, cb, rw, tbk, lane); break;
                case 3: mx_consume<TYPE, 3, UNR>(acc, cb, rw, tbk, lane); break;
                case 4: mx_consume<TYPE, 4, UNR>(acc, cb, rw, tbk, lane); break;
                default: break;
                }
            } else {
                if (np == 1) mx_consume<TYPE, 1, UNR>(acc, cb, rw, tbk, lane);
                else if (np == 2) mx_consume<TYPE, 2, UNR>(acc, cb, rw, tbk, lane);
            }
            if (q % ns == ns - 1) { /* the item's last step: store, start the next from +0 */
                const int g = lane >> 2, tg = lane & 3;
#pragma unroll
                for (int nt = 0; nt < NT; nt++)
#pragma unroll
                    for (int c = 0; c < 4; c++) {
                        int64_t o = r0 + rw + g + 8 * (c >> 1), t = t0 + tbk + 8 * nt + 2 * tg + (c & 1);
                        /* README §4.2: IQ2_XXS x0.125 once */
                        float v = TYPE == CU_T_IQ2_XXS ? __fmul_rn(0.125f, acc[nt][c]) : acc[nt][c];
                        if (o < rows && t < t1) y[t * ldy + o] = v;
                        acc[nt][c] = 0.0f;
                    }
            }
        }
        __syncthreads(); /* buffer (q+1)&1 complete; every reader of buffer q&1 done */
    }
}

/* One launch: persistent (one block per SM over all items) or one block per item. */
template <int TYPE, int CW, int PW>
static ds4_status mx_run(const mm_args *a, dim3 grid, bool persist, ds4_error *err) {
    static int attr_set, n_sm;
    constexpr int SM_P = mx_raw<TYPE>::smem + MX_TAB_BYTES;
    if (!attr_set) {
        CU_CHECK(cudaFuncSetAttribute(k_mm_exp_ws<TYPE, CW, PW>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      mx_raw<TYPE>::smem),
                 err, "matmul_exp_ws smem attribute");
        CU_CHECK(cudaFuncSetAttribute(k_mm_exp_wsp<TYPE, CW, PW>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      SM_P),
                 err, "matmul_exp_ws smem attribute");
        int dev = 0;
        CU_CHECK(cudaGetDevice(&dev), err, "matmul_exp_ws device");
        CU_CHECK(cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, dev), err, "matmul_exp_ws SMs");
        attr_set = 1;
    }
    if (persist) {
        uint64_t items = (uint64_t)grid.x * grid.y;
        unsigned nb = (unsigned)(items < (uint64_t)n_sm ? items : (uint64_t)n_sm);
        cu_launch(k_mm_exp_wsp<TYPE, CW, PW>, dim3(nb), 32 * (CW + PW), SM_P, a->w, a->rows, a->cols,
                  a->row_bytes, a->expert_stride, a->d_off, a->d_off ? a->n_expert : 1, a->planes,
                  a->n_tok, a->y, a->ldy);
    } else {
        cu_launch(k_mm_exp_ws<TYPE, CW, PW>, grid, 32 * (CW + PW), mx_raw<TYPE>::smem, a->w, a->rows,
                  a->cols, a->row_bytes, a->expert_stride, a->d_off, a->n_expert, a->planes, a->n_tok,
                  a->y, a->ldy);
    }
    CU_CHECK(cudaGetLastError(), err, "matmul_exp_ws launch");
    return DS4_OK;
}

template <int TYPE>
static ds4_status mx_run_type(const mm_args *a, dim3 grid, int cw, int pw, bool persist, ds4_error *err) {
    if (cw == 16)
        return pw == 8 ? mx_run<TYPE, 16, 8>(a, grid, persist, err) : mx_run<TYPE, 16, 4>(a, grid, persist, err);
    return pw == 8 ? mx_run<TYPE, 8, 8>(a, grid, persist, err) : mx_run<TYPE, 8, 4>(a, grid, persist, err);
}

/* Whether IQ2_XXS / Q2_K products take this kernel: DS4_CUDA_MMX_WS=1 (read at every call, so a
 * bench can time both paths in one process). */
bool mm_exp_ws_on(int type) {
    if (type != CU_T_IQ2_XXS && type != CU_T_Q2_K) return false;
    const char *ev = getenv("DS4_CUDA_MMX_WS");
    return ev && ev[0] == '1';
}

/* Defaults: the form measured on a GPU (H200, docs/BENCHMARKS.md "Prefill routed experts (h3,
 * session 5)"): 8 consumer warps, one block per item, 8 producer warps for IQ2_XXS (its unpack
 * is about twice Q2_K's per step; 4 measured 8% slower), 4 for Q2_K. DS4_CUDA_MMX_CW=8|16,
 * DS4_CUDA_MMX_PW=4|8 and DS4_CUDA_MMX_PERSIST=0|1 pick the others (16 consumer warps and the
 * persistent form were built after the session's GPU time was spent: not yet run). */
ds4_status mm_launch_exp_ws(const mm_args *a, ds4_error *err) {
    static int grid_up;
    if (a->type == CU_T_IQ2_XXS && !grid_up) {
        CU_CHECK(cudaMemcpyToSymbol(mx_iq2_grid, q_iq2xxs_grid, sizeof mx_iq2_grid), err, "iq2 grid");
        grid_up = 1;
    }
    /* GGUF blocks start at even addresses (f16 scales); the ring's chunk count assumes it. */
    if (((uintptr_t)a->w | a->row_bytes | a->expert_stride) & 1)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_matmul: weights at an odd address or stride");
    int64_t tiles = (a->n_tok + MX_BN - 1) / MX_BN + (a->d_off ? a->n_expert : 0);
    if (tiles > 65535)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_matmul: %lld token tiles (at most 65535)",
                          (long long)tiles);
    dim3 grid((unsigned)((a->rows + MX_BM - 1) / MX_BM), (unsigned)tiles);
    int cw = 8, pw = a->type == CU_T_IQ2_XXS ? 8 : 4;
    const char *ec = getenv("DS4_CUDA_MMX_CW"), *ep = getenv("DS4_CUDA_MMX_PW");
    if (ec && (!strcmp(ec, "8") || !strcmp(ec, "16"))) cw = atoi(ec);
    if (ep && (!strcmp(ep, "4") || !strcmp(ep, "8"))) pw = atoi(ep);
    const char *eq = getenv("DS4_CUDA_MMX_PERSIST");
    bool persist = eq && eq[0] == '1' && (!a->d_off || a->n_expert <= MX_MAXE);
    if (a->type == CU_T_IQ2_XXS) return mx_run_type<CU_T_IQ2_XXS>(a, grid, cw, pw, persist, err);
    return mx_run_type<CU_T_Q2_K>(a, grid, cw, pw, persist, err);
}
