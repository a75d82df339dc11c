/*
 * cuda/matmul_mma.cu — the prefill product of the K-quant and IQ2_XXS weight types (Q2_K, Q4_K,
 * IQ2_XXS; Q8_0: matmul_q8.cu) on int8 tensor cores (mma.sync m16n8k32 s8·s8→s32),
 * bit-identical to cpu_matmul.
 *
 * Why it can be exact: the CPU dot (format/quant_dot.c, quants README §4.2) forms, per weight
 * block, exact integer sums of q_w·q_x, then a few f32 steps, and adds the block values in block
 * order from +0.0f. Integer sums do not depend on the order, so the tensor cores may form them;
 * after each block's mma every thread does the CPU's f32 steps (explicit __fmul_rn/__fadd_rn,
 * never contracted) for the (row, token) pairs its accumulator fragment holds, blocks in order.
 *
 * Per type (one step = one 256-column block):
 *   Q2_K     the 4-bit scale is folded into the 2-bit value (≤ 45 fits int8): isum by 8 chained
 *            mmas; summs = Σ_j bsums[j]·m_j by m16n8k16 mmas on the bsums split exactly as
 *            128·hi + lo (both int8); acc += (d_x·d)·isum − (d_x·dmin)·summs.
 *   Q4_K     per 32-sub-block: s by one mma, isum += sc_j·s (sc ≤ 63 does not fold into int8);
 *            summs = Σ_j m_j·(bsums[2j] + bsums[2j+1]) as for Q2_K; the same f32 steps.
 *   IQ2_XXS  per 32-group: s by one mma on the signed grid values, bsum += (2·s4 + 1)·s;
 *            acc += (d·d_x)·bsum; the output is 0.125·acc.
 *
 * Tiles: 128 weight rows x 64 tokens per block of 8 warps (warp tile 32 x 32), one step of
 * columns at a time. Pipeline: the activation tile of step s+1 is copied by cp.async into the second of two
 * buffers and the raw weight blocks of step s+1 are loaded (IQ2_XXS, Q2_K: cp.async into a
 * two-stage raw ring, mq_ring; Q4_K: into registers) while step s is multiplied; the
 * weights are then unpacked to int8 rows in shared memory (272-byte row pitch:
 * the 8 rows of an ldmatrix phase hit 32 distinct banks). Activations come quantized in planes
 * (matmul_quant.cu), so their tile is plain 16-byte copies.
 * Must not: know tensor names or the model.
 */
#include "matmul_impl.cuh"

#define MQ_BM 128 /* weight rows per block */
#define MQ_BN 64  /* tokens per block */
#define MQ_LD 272 /* bytes per int8 row in shared memory (256 + 16 pad) */
#define MQ_THREADS 256

/* Shared memory layout (bytes); the activation parts (X, XF, XB) come twice. */
#define MQ_XFS 4 /* floats per token of activation scales (one used: 16-byte rows) */
#define MQ_WFS 4 /* floats per weight row: d and dmin */
#define MQ_X_BYTES (MQ_BN * MQ_LD)
#define MQ_OFF_X (MQ_BM * MQ_LD)                      /* int8 [2][BN][LD] */
#define MQ_OFF_XF (MQ_OFF_X + 2 * MQ_X_BYTES)         /* float [2][BN][XFS]: activation scales */
#define MQ_OFF_XB (MQ_OFF_XF + 2 * MQ_BN * MQ_XFS * 4) /* int16 [2][BN][16]: Q8_K bsums */
#define MQ_OFF_WF (MQ_OFF_XB + 2 * MQ_BN * 32)        /* float [BM][WFS]: block scales of a row */
#define MQ_OFF_WI (MQ_OFF_WF + MQ_BM * MQ_WFS * 4)    /* int8 [BM][16]: sub-block integer scales */
#define MQ_OFF_WM (MQ_OFF_WI + MQ_BM * 16)            /* int8 [BM][16]: mins, A of the summs mma */
#define MQ_OFF_GRID (MQ_OFF_WM + MQ_BM * 16)          /* IQ2_XXS grid u64[256] */
#define MQ_OFF_RAW (MQ_OFF_GRID + 256 * 8)            /* raw weight ring (IQ2_XXS, Q2_K) */

/* The raw weight ring (IQ2_XXS and Q2_K, the routed experts' types): the step's block of every
 * row (66 / 84 bytes, only 2-byte aligned) comes by 16-byte cp.async of the aligned chunks that
 * cover it, two stages, so the weights of the next step are in flight while this one
 * multiplies without holding registers, and a row's block is a few 16-byte copies instead of
 * a dozen 2-byte loads; the unpack then reads it from shared memory. Q4_K keeps the register
 * prefetch (its 144-byte steps would not fit two blocks per SM). Measured
 * (docs/BENCHMARKS.md): -6% / -12% for grouped Q2_K, +-3% for IQ2_XXS; deeper L2 prefetch of
 * the rows (cp.async.bulk.prefetch, 2-4 steps ahead) was slower, the limit is not DRAM. */
template <int TYPE> struct mq_ring {
    static constexpr bool on = TYPE == CU_T_IQ2_XXS || TYPE == CU_T_Q2_K;
    static constexpr int sb = TYPE == CU_T_IQ2_XXS ? CU_IQ2_XXS_BYTES : CU_Q2_K_BYTES;
    static constexpr int nch = (14 + sb + 15) / 16; /* chunks covering sb bytes at any even offset */
    static constexpr int slot = 16 * nch;           /* bytes per row and stage */
    static constexpr int smem = MQ_OFF_RAW + (on ? 2 * MQ_BM * slot : 0);
};
static_assert(MQ_OFF_RAW % 16 == 0, "ring chunks are 16-byte cp.async targets");
/* 228 KiB per SM, 1 KiB reserved per block, mm_find_tile's static 288 bytes */
static_assert(mq_ring<CU_T_Q2_K>::smem <= 113 * 1024 - 512 && mq_ring<CU_T_IQ2_XXS>::smem <= 113 * 1024 - 512,
              "two blocks per SM (the launch bounds) must fit");

__device__ uint64_t mq_iq2_grid[256];
extern "C" const uint64_t q_iq2xxs_grid[256];

__device__ __forceinline__ void mq_mma32(int (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void mq_mma16(int (&d)[4], uint32_t a0, uint32_t a1, uint32_t b0) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, "
                 "{%4,%5}, {%6}, {%0,%1,%2,%3};"
                 : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
                 : "r"(a0), "r"(a1), "r"(b0));
}

/* 4 bytes global -> shared, asynchronously; n_src 0 writes zeros (and reads nothing). */
__device__ __forceinline__ void mq_cp4(void *dst, const void *src, int n_src) {
    unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(d), "l"(src), "r"(n_src));
}
__device__ __forceinline__ void mq_cp16(void *dst, const void *src, int n_src) {
    unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src), "r"(n_src));
}
/* Four 8x8 b16 matrices from shared memory: lanes 8i .. 8i+7 give the row addresses of
 * matrix i; register i holds matrix i's fragment (row lane/4, bytes 4·(lane%4) .. +3). */
__device__ __forceinline__ void mq_ldm4(uint32_t (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
}
__device__ __forceinline__ void mq_cp_commit() { asm volatile("cp.async.commit_group;"); }
__device__ __forceinline__ void mq_cp_wait_all() { asm volatile("cp.async.wait_group 0;" ::: "memory"); }

/* ---- Raw weight ring (mq_ring): issue and address ---- */

/* Copies step s of rows r0 .. r0+127 into ring stage st: per row the 16-byte aligned chunks that
 * cover its block (the block keeps its offset within the chunk); rows past the matrix and chunks
 * past the block are zero-filled (src-size 0 reads nothing; zsrc is any 16-byte aligned pointer). */
template <int TYPE>
__device__ __forceinline__ void mq_issue_w(uint8_t *sm, int st, const uint8_t *wb, int64_t r0,
                                           int64_t rows, uint64_t rb, int64_t s, const void *zsrc) {
    constexpr int NCH = mq_ring<TYPE>::nch, SB = mq_ring<TYPE>::sb, SLOT = mq_ring<TYPE>::slot;
    uint8_t *dst = sm + MQ_OFF_RAW + st * MQ_BM * SLOT;
#pragma unroll
    for (int k = 0; k < (MQ_BM * NCH + MQ_THREADS - 1) / MQ_THREADS; k++) {
        int idx = threadIdx.x + MQ_THREADS * k;
        if (idx < MQ_BM * NCH) {
            int r = idx / NCH, c = idx % NCH;
            uintptr_t g = (uintptr_t)wb + (uint64_t)(r0 + r) * rb + (uint64_t)s * SB;
            uintptr_t a = (g & ~(uintptr_t)15) + 16 * c;
            bool ok = r0 + r < rows && a < g + SB;
            mq_cp16(dst + r * SLOT + 16 * c, ok ? (const void *)a : zsrc, ok ? 16 : 0);
        }
    }
}

/* Row r's block of step s in ring stage st. */
template <int TYPE>
__device__ __forceinline__ const uint8_t *mq_ring_row(const uint8_t *sm, int st, const uint8_t *wb,
                                                      int64_t r0, int r, uint64_t rb, int64_t s) {
    uintptr_t g = (uintptr_t)wb + (uint64_t)(r0 + r) * rb + (uint64_t)s * mq_ring<TYPE>::sb;
    return sm + MQ_OFF_RAW + (st * MQ_BM + r) * mq_ring<TYPE>::slot + (int)(g & 15);
}

/* ---- Weights: raw blocks of this thread's tasks (registers), then unpacked to shared ---- */

/* Tasks per thread and raw words per task. A thread's task k is idx = tid + 256k, so the low
 * bits of idx (which part of a row) are those of tid for every k. */
template <int TYPE> struct mq_w;

template <> struct mq_w<CU_T_Q2_K> {
    /* idx < BM·4: row idx>>2, h = (idx>>1)&1, half = idx&1: qs bytes 32h+16half .. +15 hold
     * elements 128h + 32sub + 16half + l (bits 2sub), sub-block 8h + 2sub + half (§4.3). */
    uint32_t q[2][4], sc[2][2], dd[2];
    /* From ring stage st (rows past the matrix are zeros there). */
    __device__ void fetch_sh(const uint8_t *sm, int st, const uint8_t *wb, int64_t r0, uint64_t rb, int64_t s) {
        int tid = threadIdx.x, h = (tid >> 1) & 1, half = tid & 1;
#pragma unroll
        for (int k = 0; k < 2; k++) {
            const uint8_t *p = mq_ring_row<CU_T_Q2_K>(sm, st, wb, r0, (tid + 256 * k) >> 2, rb, s);
#pragma unroll
            for (int i = 0; i < 4; i++) q[k][i] = cu_ld_u32_a2(p + 16 + 32 * h + 16 * half + 4 * i);
            sc[k][0] = cu_ld_u32_a2(p + 8 * h); /* scales of sub-blocks 8h .. 8h+7 */
            sc[k][1] = cu_ld_u32_a2(p + 8 * h + 4);
            dd[k] = (tid & 3) == 0 ? cu_ld_u32_a2(p + 80) : 0u; /* d, dmin */
        }
    }
    __device__ void store(uint8_t *sm) const {
        int tid = threadIdx.x, h = (tid >> 1) & 1, half = tid & 1;
        float *wf = (float *)(sm + MQ_OFF_WF);
        int8_t *wm = (int8_t *)(sm + MQ_OFF_WM);
#pragma unroll
        for (int k = 0; k < 2; k++) {
            int r = (tid + 256 * k) >> 2;
#pragma unroll
            for (int sub = 0; sub < 4; sub++) {
                uint32_t m = (sc[k][sub >> 1] >> (8 * (2 * (sub & 1) + half))) & 15u;
                /* 2-bit value x 4-bit scale <= 45 per byte: no carry between bytes. */
                uint4 v;
                v.x = ((q[k][0] >> (2 * sub)) & 0x03030303u) * m;
                v.y = ((q[k][1] >> (2 * sub)) & 0x03030303u) * m;
                v.z = ((q[k][2] >> (2 * sub)) & 0x03030303u) * m;
                v.w = ((q[k][3] >> (2 * sub)) & 0x03030303u) * m;
                *(uint4 *)(sm + r * MQ_LD + 128 * h + 32 * sub + 16 * half) = v;
            }
            if (half == 0) /* mins of sub-blocks 8h .. 8h+7 */
                *(uint2 *)(wm + r * 16 + 8 * h) = make_uint2((sc[k][0] >> 4) & 0x0F0F0F0Fu, (sc[k][1] >> 4) & 0x0F0F0F0Fu);
            if ((tid & 3) == 0) {
                wf[r * MQ_WFS] = __half2float(__ushort_as_half((uint16_t)dd[k]));
                wf[r * MQ_WFS + 1] = __half2float(__ushort_as_half((uint16_t)(dd[k] >> 16)));
            }
        }
    }
};

template <> struct mq_w<CU_T_Q4_K> {
    /* idx < BM·4: row idx>>2, p = idx&3: qs bytes 32p .. +31, low nibbles sub-block 2p, high
     * 2p+1 (§4.4); the p = 0 task also the 12 scale bytes and d, dmin. */
    uint32_t q[2][8], sb[2][3], dd[2];
    __device__ void fetch(const uint8_t *wb, int64_t r0, int64_t rows, uint64_t rb, int64_t s, int64_t) {
        int tid = threadIdx.x, pq = tid & 3;
#pragma unroll
        for (int k = 0; k < 2; k++) {
            int r = (tid + 256 * k) >> 2;
            bool ok = r0 + r < rows;
            const uint8_t *p = wb + (uint64_t)(r0 + r) * rb + (uint64_t)s * CU_Q4_K_BYTES;
#pragma unroll
            for (int i = 0; i < 8; i++) q[k][i] = ok ? cu_ld_u32_a2(p + 16 + 32 * pq + 4 * i) : 0u;
            bool sc = ok && pq == 0;
#pragma unroll
            for (int i = 0; i < 3; i++) sb[k][i] = sc ? cu_ld_u32_a2(p + 4 + 4 * i) : 0u;
            dd[k] = sc ? cu_ld_u32_a2(p) : 0u;
        }
    }
    __device__ void store(uint8_t *sm) const {
        int tid = threadIdx.x, pq = tid & 3;
        float *wf = (float *)(sm + MQ_OFF_WF);
        int8_t *wi = (int8_t *)(sm + MQ_OFF_WI), *wm = (int8_t *)(sm + MQ_OFF_WM);
#pragma unroll
        for (int k = 0; k < 2; k++) {
            int r = (tid + 256 * k) >> 2;
            uint32_t *lo = (uint32_t *)(sm + r * MQ_LD + 64 * pq), *hi = lo + 8;
#pragma unroll
            for (int i = 0; i < 8; i++) {
                lo[i] = q[k][i] & 0x0F0F0F0Fu;
                hi[i] = (q[k][i] >> 4) & 0x0F0F0F0Fu;
            }
            if (pq == 0) {
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    /* format/quant_impl.h q_q4k_scale_min over the bytes s[0..11] */
#define MQ_SB(i) ((int)((sb[k][(i) >> 2] >> (8 * ((i) & 3))) & 255u))
                    int sc, m;
                    if (j < 4) { sc = MQ_SB(j) & 63; m = MQ_SB(j + 4) & 63; }
                    else {
                        sc = (MQ_SB(j + 4) & 15) | ((MQ_SB(j - 4) >> 6) << 4);
                        m = (MQ_SB(j + 4) >> 4) | ((MQ_SB(j) >> 6) << 4);
                    }
#undef MQ_SB
                    wi[r * 16 + j] = (int8_t)sc;
                    wm[r * 16 + 2 * j] = wm[r * 16 + 2 * j + 1] = (int8_t)m;
                }
                wf[r * MQ_WFS] = __half2float(__ushort_as_half((uint16_t)dd[k]));
                wf[r * MQ_WFS + 1] = __half2float(__ushort_as_half((uint16_t)(dd[k] >> 16)));
            }
        }
    }
};

template <> struct mq_w<CU_T_IQ2_XXS> {
    /* idx < BM·8: row idx>>3, group g = idx&7: A = 4 grid indices, B = 4 x 7 sign bits + s4;
     * the g = 0 task also d. */
    uint32_t A[4], B[4], d[4];
    __device__ void fetch_sh(const uint8_t *sm, int st, const uint8_t *wb, int64_t r0, uint64_t rb, int64_t s) {
        int tid = threadIdx.x, g = tid & 7;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const uint8_t *p = mq_ring_row<CU_T_IQ2_XXS>(sm, st, wb, r0, (tid + 256 * k) >> 3, rb, s);
            A[k] = cu_ld_u32_a2(p + 2 + 8 * g);
            B[k] = cu_ld_u32_a2(p + 6 + 8 * g);
            d[k] = g == 0 ? *(const uint16_t *)p : 0u;
        }
    }
    /* Signs by byte masks (0xFF where the CPU negates): -v = (v ^ 0xFF) + 1 per byte; grid
     * values are 8, 25 or 43, so no byte carries. The sign byte is the 7 bits plus their parity
     * (q_iq2xxs_signs), and x·0x204081 puts bits 0-3 of x at bits 0, 8, 16, 24 (no carries):
     * computed, not looked up in a table of masks, whose random 8-byte loads (bank conflicts)
     * cost 14% of the grouped product (H200, docs/BENCHMARKS.md). */
    __device__ void store(uint8_t *sm) const {
        int tid = threadIdx.x, g = tid & 7;
        const uint2 *grid = (const uint2 *)(sm + MQ_OFF_GRID);
        float *wf = (float *)(sm + MQ_OFF_WF);
        int8_t *wi = (int8_t *)(sm + MQ_OFF_WI);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            int r = (tid + 256 * k) >> 3;
            uint32_t out[8];
#pragma unroll
            for (int j = 0; j < 4; j++) {
                uint2 gv = grid[(A[k] >> (8 * j)) & 255u];
                uint32_t s7 = (B[k] >> (7 * j)) & 127u, s8 = s7 | ((__popc(s7) & 1u) << 7);
                uint32_t m0 = ((s8 & 15u) * 0x00204081u) & 0x01010101u;
                uint32_t m1 = ((s8 >> 4) * 0x00204081u) & 0x01010101u;
                out[2 * j] = (gv.x ^ (m0 * 255u)) + m0;
                out[2 * j + 1] = (gv.y ^ (m1 * 255u)) + m1;
            }
            uint4 *dst = (uint4 *)(sm + r * MQ_LD + 32 * g);
            dst[0] = make_uint4(out[0], out[1], out[2], out[3]);
            dst[1] = make_uint4(out[4], out[5], out[6], out[7]);
            wi[r * 16 + g] = (int8_t)(2 * (B[k] >> 28) + 1);
            if (g == 0) wf[r * MQ_WFS] = __half2float(__ushort_as_half((uint16_t)d[k]));
        }
    }
};

/* ---- Activations: step s of tokens t0 .. t1 into buffer `buf` by cp.async from the planes
 * (the rows past t1 are left as they are: their outputs are never stored): int8 codes at the
 * same column positions as the weights, the scale, the Q8_K bsums. ---- */
template <int TYPE>
__device__ __forceinline__ void mq_issue_x(uint8_t *sm, int buf, const mm_planes &pl, int64_t cols,
                                           int64_t t0, int64_t t1, int64_t s) {
    int tid = threadIdx.x;
    uint8_t *X = sm + MQ_OFF_X + buf * MQ_X_BYTES;
    float *xf = (float *)(sm + MQ_OFF_XF) + buf * MQ_BN * MQ_XFS;
#pragma unroll
    for (int k = 0; k < MQ_BN * 16 / MQ_THREADS; k++) {
        int idx = tid + MQ_THREADS * k, t = idx >> 4, c = idx & 15;
        if (t0 + t < t1) mq_cp16(X + t * MQ_LD + 16 * c, pl.codes + (t0 + t) * cols + 256 * s + 16 * c, 16);
    }
    if (tid < MQ_BN && t0 + tid < t1) mq_cp4(xf + tid * MQ_XFS, pl.d + (t0 + tid) * pl.nblk + s, 4);
    if constexpr (TYPE != CU_T_IQ2_XXS) {
        int16_t *xb = (int16_t *)(sm + MQ_OFF_XB) + buf * MQ_BN * 16;
        int t = tid >> 1, h = tid & 1;
        if (tid < 2 * MQ_BN && t0 + t < t1)
            mq_cp16(xb + t * 16 + 8 * h, pl.bsums + ((t0 + t) * pl.nblk + s) * 16 + 8 * h, 16);
    }
}

/* bsums of token row tb, entries 4tg .. 4tg+3, split exactly as 128·hi + lo (lo = bs & 127,
 * hi = bs >> 7, both int8 since |bs| <= 2048), packed 4 to a register. */
__device__ __forceinline__ void mq_bsums_split(const int16_t *xb, int tb, int tg, uint32_t *lo,
                                               uint32_t *hi) {
    uint2 u = *(const uint2 *)(xb + tb * 16 + 4 * tg);
    int v[4] = {(int16_t)(u.x & 0xFFFFu), (int16_t)(u.x >> 16), (int16_t)(u.y & 0xFFFFu), (int16_t)(u.y >> 16)};
    uint32_t l = 0, h = 0;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        l |= (uint32_t)(v[i] & 127) << (8 * i);
        h |= (uint32_t)(uint8_t)(int8_t)(v[i] >> 7) << (8 * i);
    }
    *lo = l;
    *hi = h;
}

/* grid (ceil(rows/128), token-tile bound), 256 threads, mq_ring<TYPE>::smem bytes of dynamic
 * shared memory. Warp w owns rows 32(w%4) .. +31 and tokens 32(w/4) .. +31 of the tile. */
template <int TYPE, bool SKIP>
__global__ void __launch_bounds__(MQ_THREADS, 2)
k_matmul_mma(const uint8_t *w, int64_t rows, int64_t cols, uint64_t row_bytes,
             uint64_t e_stride, const int32_t *d_off, int n_expert, mm_planes pl,
             int64_t n_tok, float *y, int64_t ldy) {
    cu_pdl_wait();
    extern __shared__ __align__(16) uint8_t sm[];
    constexpr bool RING = mq_ring<TYPE>::on;
    mm_tile tl;
    if (!mm_find_tile(d_off, n_expert, n_tok, MQ_BN, blockIdx.y, &tl)) return;
    int64_t r0 = (int64_t)blockIdx.x * MQ_BM;
    const uint8_t *wb = w + (uint64_t)tl.e * e_stride;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    int g = lane >> 2, tg = lane & 3, wr = 32 * (warp & 3), wt = 32 * (warp >> 2);
    if constexpr (TYPE == CU_T_IQ2_XXS) { /* the grid of mq_w::store */
        uint64_t *gr = (uint64_t *)(sm + MQ_OFF_GRID);
        for (int i = tid; i < 256; i += MQ_THREADS) gr[i] = mq_iq2_grid[i];
        __syncthreads();
    }
    const int64_t nblk = pl.nblk;
    /* SKIP (grouped launches): n-tiles of this warp holding a token of the tile (warp-uniform),
     * so small expert slices skip the mma and f32 work of the empty ones. */
    int64_t nv = tl.t1 - tl.t0 - wt;
    const int ntv = !SKIP ? 4 : nv <= 0 ? 0 : nv >= 32 ? 4 : (int)((nv + 7) / 8);
    const uint8_t *W = sm;
    const float *wf = (const float *)(sm + MQ_OFF_WF);
    const int8_t *wi = (const int8_t *)(sm + MQ_OFF_WI);
    float acc[2][4][4] = {};
    const int64_t nsteps = nblk;
    mq_w<TYPE> raw;
    if constexpr (RING) mq_issue_w<TYPE>(sm, 0, wb, r0, rows, row_bytes, 0, pl.codes);
    else raw.fetch(wb, r0, rows, row_bytes, 0, nblk);
    mq_issue_x<TYPE>(sm, 0, pl, cols, tl.t0, tl.t1, 0);
    mq_cp_commit();
    for (int64_t s = 0; s < nsteps; s++) {
        int buf = (int)(s & 1);
        if constexpr (RING) {
            mq_cp_wait_all();
            __syncthreads(); /* step s landed everywhere; every reader of step s-1 is done */
            if (s + 1 < nsteps) { /* in flight while this step unpacks and multiplies */
                mq_issue_w<TYPE>(sm, buf ^ 1, wb, r0, rows, row_bytes, s + 1, pl.codes);
                mq_issue_x<TYPE>(sm, buf ^ 1, pl, cols, tl.t0, tl.t1, s + 1);
                mq_cp_commit();
            }
            raw.fetch_sh(sm, buf, wb, r0, row_bytes, s);
            raw.store(sm);
            __syncthreads();
        } else {
            raw.store(sm); /* the previous step's readers finished at the loop's closing barrier */
            mq_cp_wait_all();
            __syncthreads();
            if (s + 1 < nsteps) { /* in flight while this step multiplies */
                mq_issue_x<TYPE>(sm, buf ^ 1, pl, cols, tl.t0, tl.t1, s + 1);
                mq_cp_commit();
                raw.fetch(wb, r0, rows, row_bytes, s + 1, nblk);
            }
        }
        const unsigned a_addr = (unsigned)__cvta_generic_to_shared(
            W + (wr + (lane & 7) + 8 * ((lane >> 3) & 1)) * MQ_LD + 16 * (lane >> 4));
        const unsigned b_addr = (unsigned)__cvta_generic_to_shared(
            sm + MQ_OFF_X + buf * MQ_X_BYTES + (wt + (lane & 7) + 8 * (lane >> 4)) * MQ_LD + 16 * ((lane >> 3) & 1));
        const float *xf = (const float *)(sm + MQ_OFF_XF) + buf * MQ_BN * MQ_XFS;
        int nchunk = 8;
        int isum[2][4][4] = {};
        if (SKIP && ntv == 0) nchunk = 0;
#pragma unroll 1
        for (int ch = 0; ch < nchunk; ch++) {
            uint32_t af[2][4], bf[4][2];
            /* A (16 rows x 32 codes): matrices rows 0-7 / 8-15 x bytes 0-15 / 16-31 = a0..a3;
             * B (tokens 16p .. 16p+15): tokens 0-7 bytes 0-15 / 16-31, tokens 8-15 likewise. */
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
                mq_ldm4(af[mt], a_addr + (unsigned)(16 * mt * MQ_LD + 32 * ch));
#pragma unroll
            for (int p = 0; p < 2; p++) {
                uint32_t r[4] = {0, 0, 0, 0};
                if (!SKIP || 2 * p < ntv) mq_ldm4(r, b_addr + (unsigned)(16 * p * MQ_LD + 32 * ch));
                bf[2 * p][0] = r[0]; bf[2 * p][1] = r[1]; bf[2 * p + 1][0] = r[2]; bf[2 * p + 1][1] = r[3];
            }
            if constexpr (TYPE == CU_T_Q2_K) { /* scales folded: one chained integer sum */
#pragma unroll
                for (int mt = 0; mt < 2; mt++)
#pragma unroll
                    for (int nt = 0; nt < 4; nt++)
                        if (!SKIP || nt < ntv) mq_mma32(isum[mt][nt], af[mt], bf[nt][0], bf[nt][1]);
            } else {
                /* the sub-block scales of this thread's rows wr+16mt+g+8i */
                int ri[2][2];
#pragma unroll
                for (int mt = 0; mt < 2; mt++)
#pragma unroll
                    for (int i = 0; i < 2; i++) ri[mt][i] = wi[(wr + 16 * mt + g + 8 * i) * 16 + ch];
#pragma unroll
                for (int mt = 0; mt < 2; mt++)
#pragma unroll
                    for (int nt = 0; nt < 4; nt++) {
                        if (SKIP && nt >= ntv) continue;
                        int sv[4] = {0, 0, 0, 0};
                        mq_mma32(sv, af[mt], bf[nt][0], bf[nt][1]);
#pragma unroll
                        for (int c = 0; c < 4; c++) isum[mt][nt][c] += ri[mt][c >> 1] * sv[c];
                    }
            }
        }
        /* The scales of this thread's rows and tokens, once per step. */
        float wd[2][2], wm[2][2], xd[4][2];
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int i = 0; i < 2; i++) {
                int rl = wr + 16 * mt + g + 8 * i;
                wd[mt][i] = wf[rl * MQ_WFS];
                wm[mt][i] = TYPE == CU_T_IQ2_XXS ? 0.0f : wf[rl * MQ_WFS + 1];
            }
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int j = 0; j < 2; j++) xd[nt][j] = xf[(wt + 8 * nt + 2 * tg + j) * MQ_XFS];
        if constexpr (TYPE == CU_T_IQ2_XXS) { /* acc += (d·d_x)·bsum; |bsum| may pass 2^22 */
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int nt = 0; nt < 4; nt++)
#pragma unroll
                    for (int c = 0; c < 4; c++) {
                        if (SKIP && nt >= ntv) continue;
                        acc[mt][nt][c] = __fadd_rn(acc[mt][nt][c],
                                                   __fmul_rn(__fmul_rn(wd[mt][c >> 1], xd[nt][c & 1]),
                                                             (float)isum[mt][nt][c]));
                    }
        } else {
            /* summs = Σ_16 m·bsums = 128·Σ m·hi + Σ m·lo, then the f32 steps; the integer
             * sums converted by the conversion unit (an exact add, exact below 2^22, measured
             * slower: the FMA pipe is the busier one). */
            const uint8_t *WM = sm + MQ_OFF_WM;
            const int16_t *xb = (const int16_t *)(sm + MQ_OFF_XB) + buf * MQ_BN * 16;
            uint32_t blo[4], bhi[4];
#pragma unroll
            for (int nt = 0; nt < 4; nt++) mq_bsums_split(xb, wt + 8 * nt + g, tg, &blo[nt], &bhi[nt]);
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                uint32_t a0 = *(const uint32_t *)(WM + (wr + 16 * mt + g) * 16 + 4 * tg);
                uint32_t a1 = *(const uint32_t *)(WM + (wr + 16 * mt + g + 8) * 16 + 4 * tg);
#pragma unroll
                for (int nt = 0; nt < 4; nt++) {
                    if (SKIP && nt >= ntv) continue;
                    int lo[4] = {0, 0, 0, 0}, hi[4] = {0, 0, 0, 0};
                    mq_mma16(lo, a0, a1, blo[nt]);
                    mq_mma16(hi, a0, a1, bhi[nt]);
#pragma unroll
                    for (int c = 0; c < 4; c++) {
                        float dx = xd[nt][c & 1];
                        float dall = __fmul_rn(dx, wd[mt][c >> 1]), dmin = __fmul_rn(dx, wm[mt][c >> 1]);
                        int summs = hi[c] * 128 + lo[c];
                        acc[mt][nt][c] = __fadd_rn(acc[mt][nt][c],
                                                   __fsub_rn(__fmul_rn(dall, (float)isum[mt][nt][c]),
                                                             __fmul_rn(dmin, (float)summs)));
                    }
                }
            }
        }
        if constexpr (!RING) __syncthreads();
    }
    /* README §4.2: IQ2_XXS ×0.125 once */
    mm_store_frags(acc, TYPE == CU_T_IQ2_XXS ? 0.125f : 1.0f, y, ldy, r0, rows, tl.t0, tl.t1, wr, wt, g, tg);
}

static int g_mq_tables; /* IQ2_XXS grid uploaded */

template <int TYPE>
static ds4_status mq_run(const mm_args *a, ds4_error *err) {
    static int attr_set;
    if (!attr_set) {
        CU_CHECK(cudaFuncSetAttribute(k_matmul_mma<TYPE, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, mq_ring<TYPE>::smem),
                 err, "matmul smem attribute");
        CU_CHECK(cudaFuncSetAttribute(k_matmul_mma<TYPE, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, mq_ring<TYPE>::smem),
                 err, "matmul smem attribute");
        attr_set = 1;
    }
    /* GGUF blocks start at even addresses (f16 scales); the ring's chunk count assumes it. */
    if (((uintptr_t)a->w | a->row_bytes | a->expert_stride) & 1)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_matmul: weights at an odd address or stride");
    int64_t tiles = (a->n_tok + MQ_BN - 1) / MQ_BN + (a->d_off ? a->n_expert : 0);
    if (tiles > 65535)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_matmul: %lld token tiles (at most 65535)",
                          (long long)tiles);
    dim3 grid((unsigned)((a->rows + MQ_BM - 1) / MQ_BM), (unsigned)tiles);
    /* Skipping empty n-tiles costs registers (spills): used only for small expert slices,
     * where most of a 64-token tile is empty (H200: 256 experts x 48 rows ran 2-8% slower
     * with it). DS4_CUDA_MM_SKIP=0|1 forces it off / on for grouped launches (timing; read at
     * every call). */
    bool skip = a->d_off && a->n_tok < 32 * (int64_t)a->n_expert;
    const char *ev = getenv("DS4_CUDA_MM_SKIP");
    if (a->d_off && ev && (*ev == '0' || *ev == '1')) skip = *ev == '1';
    auto kern = skip ? k_matmul_mma<TYPE, true> : k_matmul_mma<TYPE, false>;
    cu_launch(kern, grid, MQ_THREADS, mq_ring<TYPE>::smem, a->w, a->rows, a->cols, a->row_bytes,
                                                  a->expert_stride, a->d_off, a->n_expert,
                                                  a->planes, a->n_tok, a->y, a->ldy);
    CU_CHECK(cudaGetLastError(), err, "matmul mma launch");
    return DS4_OK;
}

ds4_status mm_launch_q8(const mm_args *a, ds4_error *err); /* matmul_q8.cu */

ds4_status mm_launch_mma(const mm_args *a, ds4_error *err) {
    switch (a->type) {
    case CU_T_Q8_0: return mm_launch_q8(a, err);
    case CU_T_Q2_K: return mq_run<CU_T_Q2_K>(a, err);
    case CU_T_Q4_K: return mq_run<CU_T_Q4_K>(a, err);
    case CU_T_IQ2_XXS:
        if (!g_mq_tables) {
            CU_CHECK(cudaMemcpyToSymbol(mq_iq2_grid, q_iq2xxs_grid, sizeof mq_iq2_grid), err, "iq2 grid");
            g_mq_tables = 1;
        }
        return mq_run<CU_T_IQ2_XXS>(a, err);
    default:
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED, "cuda_matmul: no int8 kernel for type %d", a->type);
    }
}
