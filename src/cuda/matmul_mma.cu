/*
 * cuda/matmul_mma.cu — the prefill product of the quantized weight types (Q8_0, Q2_K, Q4_K,
 * IQ2_XXS) on int8 tensor cores (mma.sync m16n8k32 s8·s8→s32), bit-identical to cpu_matmul.
 *
 * Why it can be exact: the CPU dot (format/quant_dot.c, quants README §4.2) forms, per weight
 * block, exact integer sums of q_w·q_x, then a few f32 steps, and adds the block values in block
 * order from +0.0f. Integer sums do not depend on the order, so the tensor cores may form them;
 * after each block's mma every thread does the CPU's f32 steps (explicit __fmul_rn/__fadd_rn,
 * never contracted) for the (row, token) pairs its accumulator fragment holds, blocks in order.
 *
 * Per type (one 256-column step = one K-quant block or eight Q8_0 blocks):
 *   Q8_0     per 32-block: isum by one mma; acc += (d_w·d_x)·isum.
 *   Q2_K     the 4-bit scale is folded into the 2-bit value (≤ 45 fits int8): isum by 8 chained
 *            mmas; summs = Σ_j bsums[j]·m_j by m16n8k16 mmas on the bsums split exactly as
 *            128·hi + lo (both int8); acc += (d_x·d)·isum − (d_x·dmin)·summs.
 *   Q4_K     per 32-sub-block: s by one mma, isum += sc_j·s (sc ≤ 63 does not fold into int8);
 *            summs = Σ_j m_j·(bsums[2j] + bsums[2j+1]) as for Q2_K; the same f32 steps.
 *   IQ2_XXS  per 32-group: s by one mma on the signed grid values, bsum += (2·s4 + 1)·s;
 *            acc += (d·d_x)·bsum; the output is 0.125·acc.
 *
 * Tiles: 128 weight rows x 64 tokens per block of 8 warps (warp tile 32 x 32), 256 columns per
 * step; weight blocks are unpacked to int8 rows in shared memory (288-byte row pitch: the 8-byte
 * fragment loads hit 32 distinct banks). The k order inside one mma is permuted the same way
 * for both operands (each thread loads 8 consecutive bytes), which leaves every sum unchanged.
 * Must not: know tensor names or the model.
 */
#include "matmul_impl.cuh"

#define MQ_BM 128 /* weight rows per block */
#define MQ_BN 64  /* tokens per block */
#define MQ_LD 288 /* bytes per int8 row in shared memory (256 + 32 pad) */
#define MQ_THREADS 256

/* Shared memory layout (bytes). */
#define MQ_OFF_X (MQ_BM * MQ_LD)
#define MQ_OFF_WF (MQ_OFF_X + MQ_BN * MQ_LD)  /* float [BM][8]: block scales of a row */
#define MQ_OFF_WI (MQ_OFF_WF + MQ_BM * 8 * 4) /* int8 [BM][16]: sub-block integer scales */
#define MQ_OFF_WM (MQ_OFF_WI + MQ_BM * 16)    /* int8 [BM][16]: mins, A of the summs mma */
#define MQ_OFF_XF (MQ_OFF_WM + MQ_BM * 16)    /* float [BN][8]: activation scales */
#define MQ_OFF_XL (MQ_OFF_XF + MQ_BN * 8 * 4) /* int8 [BN][16]: bsums & 127 */
#define MQ_OFF_XH (MQ_OFF_XL + MQ_BN * 16)    /* int8 [BN][16]: bsums >> 7 */
#define MQ_OFF_GRID (MQ_OFF_XH + MQ_BN * 16)  /* IQ2_XXS grid u64[256], signs u8[128] */
#define MQ_SMEM (MQ_OFF_GRID + 256 * 8 + 128)

__device__ uint64_t mq_iq2_grid[256];
__device__ uint8_t mq_iq2_signs[128];
extern "C" const uint64_t q_iq2xxs_grid[256];
extern "C" const uint8_t q_iq2xxs_signs[128];

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

/* Unpacks step s of the weight tile (rows r0 .. r0+BM of expert base wb) to int8 rows and the
 * per-row scales. Rows past `rows` and Q8_0 blocks past the row end become zeros. */
template <int TYPE>
__device__ __forceinline__ void mq_load_w(uint8_t *sm, const uint8_t *wb, int64_t r0,
                                          int64_t rows, uint64_t row_bytes, int64_t s,
                                          int64_t nblk) {
    int tid = threadIdx.x;
    uint8_t *W = sm;
    float *wf = (float *)(sm + MQ_OFF_WF);
    int8_t *wi = (int8_t *)(sm + MQ_OFF_WI), *wm = (int8_t *)(sm + MQ_OFF_WM);
    if constexpr (TYPE == CU_T_Q8_0) {
        int64_t nbv = nblk - 8 * s < 8 ? nblk - 8 * s : 8;
        for (int idx = tid; idx < MQ_BM * 32; idx += MQ_THREADS) {
            int r = idx >> 5, b = (idx >> 2) & 7, q4 = idx & 3;
            uint32_t lo = 0, hi = 0;
            float d = 0.0f;
            if (r0 + r < rows && b < nbv) {
                const uint8_t *p = wb + (uint64_t)(r0 + r) * row_bytes + (uint64_t)(8 * s + b) * CU_Q8_0_BYTES;
                lo = cu_ld_u32_a2(p + 2 + 8 * q4);
                hi = cu_ld_u32_a2(p + 6 + 8 * q4);
                d = cu_f16(p);
            }
            *(uint2 *)(W + r * MQ_LD + 32 * b + 8 * q4) = make_uint2(lo, hi);
            if (q4 == 0) wf[r * 8 + b] = d;
        }
    } else if constexpr (TYPE == CU_T_Q2_K) {
        /* Task (row, h, half): qs bytes 32h+16half .. +15 hold elements 128h + 32sub + 16half
         * + l (bits 2sub), sub-block j = 8h + 2sub + half (GGUF_LAYOUT §4.3). */
        for (int idx = tid; idx < MQ_BM * 4; idx += MQ_THREADS) {
            int r = idx >> 2, h = (idx >> 1) & 1, half = idx & 1;
            uint32_t q[4] = {0, 0, 0, 0}, sc[2] = {0, 0};
            const uint8_t *p = wb + (uint64_t)(r0 + r) * row_bytes + (uint64_t)s * CU_Q2_K_BYTES;
            bool ok = r0 + r < rows;
            if (ok) {
                for (int i = 0; i < 4; i++) q[i] = cu_ld_u32_a2(p + 16 + 32 * h + 16 * half + 4 * i);
                sc[0] = cu_ld_u32_a2(p + 8 * h); /* scales of sub-blocks 8h .. 8h+7 */
                sc[1] = cu_ld_u32_a2(p + 8 * h + 4);
            }
#pragma unroll
            for (int sub = 0; sub < 4; sub++) {
                /* sub-block 8h + 2sub + half: byte 2sub + half of sc */
                uint32_t m = (sc[sub >> 1] >> (8 * (2 * (sub & 1) + half))) & 15u;
                /* 2-bit value x 4-bit scale <= 45 per byte: no carry between bytes. */
                uint32_t *dst = (uint32_t *)(W + r * MQ_LD + 128 * h + 32 * sub + 16 * half);
#pragma unroll
                for (int i = 0; i < 4; i++) dst[i] = ((q[i] >> (2 * sub)) & 0x03030303u) * m;
            }
            if (half == 0) { /* mins of sub-blocks 8h .. 8h+7; the row's d, dmin */
                ((uint32_t *)(wm + r * 16 + 8 * h))[0] = (sc[0] >> 4) & 0x0F0F0F0Fu;
                ((uint32_t *)(wm + r * 16 + 8 * h))[1] = (sc[1] >> 4) & 0x0F0F0F0Fu;
                if (h == 0) {
                    wf[r * 8] = ok ? cu_f16(p + 80) : 0.0f;
                    wf[r * 8 + 1] = ok ? cu_f16(p + 82) : 0.0f;
                }
            }
        }
    } else if constexpr (TYPE == CU_T_Q4_K) {
        /* Task (row, p): qs bytes 32p .. 32p+31, low nibbles sub-block 2p, high 2p+1. */
        for (int idx = tid; idx < MQ_BM * 4; idx += MQ_THREADS) {
            int r = idx >> 2, pq = idx & 3;
            const uint8_t *p = wb + (uint64_t)(r0 + r) * row_bytes + (uint64_t)s * CU_Q4_K_BYTES;
            bool ok = r0 + r < rows;
            uint32_t *lo = (uint32_t *)(W + r * MQ_LD + 64 * pq), *hi = lo + 8;
            for (int i = 0; i < 8; i++) {
                uint32_t v = ok ? cu_ld_u32_a2(p + 16 + 32 * pq + 4 * i) : 0u;
                lo[i] = v & 0x0F0F0F0Fu;
                hi[i] = (v >> 4) & 0x0F0F0F0Fu;
            }
            if (pq == 0) {
                uint8_t sb[12];
                for (int i = 0; i < 12; i++) sb[i] = ok ? p[4 + i] : 0;
                for (int j = 0; j < 8; j++) {
                    int sc, m; /* format/quant_impl.h q_q4k_scale_min */
                    if (j < 4) { sc = sb[j] & 63; m = sb[j + 4] & 63; }
                    else {
                        sc = (sb[j + 4] & 15) | ((sb[j - 4] >> 6) << 4);
                        m = (sb[j + 4] >> 4) | ((sb[j] >> 6) << 4);
                    }
                    wi[r * 16 + j] = (int8_t)sc;
                    wm[r * 16 + 2 * j] = wm[r * 16 + 2 * j + 1] = (int8_t)m;
                }
                wf[r * 8] = ok ? cu_f16(p) : 0.0f;
                wf[r * 8 + 1] = ok ? cu_f16(p + 2) : 0.0f;
            }
        }
    } else { /* IQ2_XXS: task (row, group g) -> 32 signed grid values, ls = 2·s4 + 1 */
        const uint64_t *grid = (const uint64_t *)(sm + MQ_OFF_GRID);
        const uint8_t *signs = sm + MQ_OFF_GRID + 256 * 8;
        for (int idx = tid; idx < MQ_BM * 8; idx += MQ_THREADS) {
            int r = idx >> 3, g = idx & 7;
            uint32_t A = 0, B = 0;
            const uint8_t *p = wb + (uint64_t)(r0 + r) * row_bytes + (uint64_t)s * CU_IQ2_XXS_BYTES;
            bool ok = r0 + r < rows;
            if (ok) {
                A = cu_ld_u32_a2(p + 2 + 8 * g);
                B = cu_ld_u32_a2(p + 6 + 8 * g);
            }
            uint32_t *dst = (uint32_t *)(W + r * MQ_LD + 32 * g);
            for (int k = 0; k < 4; k++) {
                uint64_t gv = ok ? grid[(A >> (8 * k)) & 255u] : 0;
                uint32_t sg = signs[(B >> (7 * k)) & 127u];
                for (int hw = 0; hw < 2; hw++) {
                    uint32_t v = (uint32_t)(gv >> (32 * hw)), out = 0;
                    for (int l = 0; l < 4; l++) {
                        int b = (int)((v >> (8 * l)) & 255u);
                        if ((sg >> (4 * hw + l)) & 1) b = -b;
                        out |= (uint32_t)(uint8_t)b << (8 * l);
                    }
                    dst[2 * k + hw] = out;
                }
            }
            wi[r * 16 + g] = (int8_t)(ok ? 2 * (B >> 28) + 1 : 0);
            if (g == 0) wf[r * 8] = ok ? cu_f16(p) : 0.0f;
        }
    }
}

/* Step s of the activation tile: tokens t0 .. t1 (x rows), int8 values, scales, bsums. */
template <int TYPE>
__device__ __forceinline__ void mq_load_x(uint8_t *sm, const uint8_t *act, size_t stride,
                                          int64_t t0, int64_t t1, int64_t s, int64_t nblk) {
    int tid = threadIdx.x;
    uint8_t *X = sm + MQ_OFF_X;
    float *xf = (float *)(sm + MQ_OFF_XF);
    if constexpr (TYPE == CU_T_Q8_0) {
        int64_t nbv = nblk - 8 * s < 8 ? nblk - 8 * s : 8;
        for (int idx = tid; idx < MQ_BN * 64; idx += MQ_THREADS) {
            int t = idx >> 6, b = (idx >> 3) & 7, i = idx & 7;
            uint32_t v = 0;
            const uint8_t *rec = act + (size_t)(t0 + t) * stride + (size_t)(8 * s + b) * CU_Q8_0ACT_BYTES;
            bool ok = t0 + t < t1 && b < nbv;
            if (ok) v = *(const uint32_t *)(rec + 4 + 4 * i);
            *(uint32_t *)(X + t * MQ_LD + 32 * b + 4 * i) = v;
            if (i == 0) xf[t * 8 + b] = ok ? *(const float *)rec : 0.0f;
        }
    } else {
        for (int idx = tid; idx < MQ_BN * 64; idx += MQ_THREADS) {
            int t = idx >> 6, i = idx & 63;
            const uint8_t *blk = act + (size_t)(t0 + t) * stride + (size_t)s * CU_Q8_K_BYTES;
            bool ok = t0 + t < t1;
            *(uint32_t *)(X + t * MQ_LD + 4 * i) = ok ? *(const uint32_t *)(blk + 4 + 4 * i) : 0u;
            if (i == 0) xf[t * 8] = ok ? *(const float *)blk : 0.0f;
        }
        if constexpr (TYPE != CU_T_IQ2_XXS) {
            int8_t *xl = (int8_t *)(sm + MQ_OFF_XL), *xh = (int8_t *)(sm + MQ_OFF_XH);
            for (int idx = tid; idx < MQ_BN * 16; idx += MQ_THREADS) {
                int t = idx >> 4, j = idx & 15;
                int bs = 0;
                if (t0 + t < t1)
                    bs = *(const int16_t *)(act + (size_t)(t0 + t) * stride + (size_t)s * CU_Q8_K_BYTES + 260 + 2 * j);
                /* bs = 128·(bs >> 7) + (bs & 127), both parts int8 (|bs| <= 2048). */
                xl[t * 16 + j] = (int8_t)(bs & 127);
                xh[t * 16 + j] = (int8_t)(bs >> 7);
            }
        }
    }
}

/* grid (ceil(rows/128), token-tile bound), 256 threads, MQ_SMEM bytes of dynamic shared memory.
 * Warp w owns rows 32(w%4) .. +31 and tokens 32(w/4) .. +31 of the tile. */
template <int TYPE>
__global__ void __launch_bounds__(MQ_THREADS, 2)
k_matmul_mma(const uint8_t *w, int64_t rows, int64_t nblk, uint64_t row_bytes,
             uint64_t e_stride, const int32_t *d_off, int n_expert, const uint8_t *act,
             size_t act_stride, int64_t n_tok, float *y, int64_t ldy) {
    extern __shared__ __align__(16) uint8_t sm[];
    mm_tile tl;
    if (!mm_find_tile(d_off, n_expert, n_tok, MQ_BN, blockIdx.y, &tl)) return;
    int64_t r0 = (int64_t)blockIdx.x * MQ_BM;
    const uint8_t *wb = w + (uint64_t)tl.e * e_stride;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    int g = lane >> 2, tg = lane & 3, wr = 32 * (warp & 3), wt = 32 * (warp >> 2);
    if (TYPE == CU_T_IQ2_XXS) {
        for (int i = tid; i < 256; i += MQ_THREADS) ((uint64_t *)(sm + MQ_OFF_GRID))[i] = mq_iq2_grid[i];
        for (int i = tid; i < 128; i += MQ_THREADS) sm[MQ_OFF_GRID + 2048 + i] = mq_iq2_signs[i];
    }
    const uint8_t *W = sm, *X = sm + MQ_OFF_X;
    const float *wf = (const float *)(sm + MQ_OFF_WF), *xf = (const float *)(sm + MQ_OFF_XF);
    const int8_t *wi = (const int8_t *)(sm + MQ_OFF_WI);
    float acc[2][4][4];
#pragma unroll
    for (int a = 0; a < 2; a++)
#pragma unroll
        for (int b = 0; b < 4; b++)
#pragma unroll
            for (int c = 0; c < 4; c++) acc[a][b][c] = 0.0f;
    int64_t nsteps = TYPE == CU_T_Q8_0 ? (nblk + 7) / 8 : nblk;
    for (int64_t s = 0; s < nsteps; s++) {
        __syncthreads();
        mq_load_w<TYPE>(sm, wb, r0, rows, row_bytes, s, nblk);
        mq_load_x<TYPE>(sm, act, act_stride, tl.t0, tl.t1, s, nblk);
        __syncthreads();
        int nchunk = TYPE == CU_T_Q8_0 ? (int)(nblk - 8 * s < 8 ? nblk - 8 * s : 8) : 8;
        int isum[2][4][4];
#pragma unroll
        for (int a = 0; a < 2; a++)
#pragma unroll
            for (int b = 0; b < 4; b++)
#pragma unroll
                for (int c = 0; c < 4; c++) isum[a][b][c] = 0;
#pragma unroll 1
        for (int ch = 0; ch < nchunk; ch++) {
            uint32_t af[2][4], bf[4][2];
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                uint2 u0 = *(const uint2 *)(W + (wr + 16 * mt + g) * MQ_LD + 32 * ch + 8 * tg);
                uint2 u1 = *(const uint2 *)(W + (wr + 16 * mt + g + 8) * MQ_LD + 32 * ch + 8 * tg);
                af[mt][0] = u0.x; af[mt][1] = u1.x; af[mt][2] = u0.y; af[mt][3] = u1.y;
            }
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
                uint2 u = *(const uint2 *)(X + (wt + 8 * nt + g) * MQ_LD + 32 * ch + 8 * tg);
                bf[nt][0] = u.x; bf[nt][1] = u.y;
            }
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int nt = 0; nt < 4; nt++) {
                    if constexpr (TYPE == CU_T_Q2_K) { /* scales folded: one chained integer sum */
                        mq_mma32(isum[mt][nt], af[mt], bf[nt][0], bf[nt][1]);
                        } else {
                        int sv[4] = {0, 0, 0, 0};
                        mq_mma32(sv, af[mt], bf[nt][0], bf[nt][1]);
#pragma unroll
                        for (int c = 0; c < 4; c++) {
                            int rl = wr + 16 * mt + g + 8 * (c >> 1), tk = wt + 8 * nt + 2 * tg + (c & 1);
                            if constexpr (TYPE == CU_T_Q8_0) /* README §4.2: acc += (d_w·d_x)·isum */
                                acc[mt][nt][c] = __fadd_rn(acc[mt][nt][c],
                                                           __fmul_rn(__fmul_rn(wf[rl * 8 + ch], xf[tk * 8 + ch]), (float)sv[c]));
                            else
                                isum[mt][nt][c] += (int)wi[rl * 16 + ch] * sv[c];
                        }
                    }
                }
        }
        if constexpr (TYPE == CU_T_Q8_0) continue;
        if constexpr (TYPE == CU_T_IQ2_XXS) { /* acc += (d·d_x)·bsum */
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int nt = 0; nt < 4; nt++)
#pragma unroll
                    for (int c = 0; c < 4; c++) {
                        int rl = wr + 16 * mt + g + 8 * (c >> 1), tk = wt + 8 * nt + 2 * tg + (c & 1);
                        acc[mt][nt][c] = __fadd_rn(acc[mt][nt][c],
                                                   __fmul_rn(__fmul_rn(wf[rl * 8], xf[tk * 8]), (float)isum[mt][nt][c]));
                    }
            continue;
        }
        /* Q2_K / Q4_K: summs = Σ_16 m·bsums = 128·Σ m·hi + Σ m·lo, then the f32 steps. */
        const uint8_t *WM = sm + MQ_OFF_WM, *XL = sm + MQ_OFF_XL, *XH = sm + MQ_OFF_XH;
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
            uint32_t a0 = *(const uint32_t *)(WM + (wr + 16 * mt + g) * 16 + 4 * tg);
            uint32_t a1 = *(const uint32_t *)(WM + (wr + 16 * mt + g + 8) * 16 + 4 * tg);
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
                int lo[4] = {0, 0, 0, 0}, hi[4] = {0, 0, 0, 0};
                mq_mma16(lo, a0, a1, *(const uint32_t *)(XL + (wt + 8 * nt + g) * 16 + 4 * tg));
                mq_mma16(hi, a0, a1, *(const uint32_t *)(XH + (wt + 8 * nt + g) * 16 + 4 * tg));
#pragma unroll
                for (int c = 0; c < 4; c++) {
                    int rl = wr + 16 * mt + g + 8 * (c >> 1), tk = wt + 8 * nt + 2 * tg + (c & 1);
                    int summs = hi[c] * 128 + lo[c];
                    float dx = xf[tk * 8];
                    float dall = __fmul_rn(dx, wf[rl * 8]), dmin = __fmul_rn(dx, wf[rl * 8 + 1]);
                    acc[mt][nt][c] = __fadd_rn(acc[mt][nt][c],
                                               __fsub_rn(__fmul_rn(dall, (float)isum[mt][nt][c]),
                                                         __fmul_rn(dmin, (float)summs)));
                }
            }
        }
    }
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int c = 0; c < 4; c++) {
                int64_t o = r0 + wr + 16 * mt + g + 8 * (c >> 1);
                int64_t t = tl.t0 + wt + 8 * nt + 2 * tg + (c & 1);
                float v = acc[mt][nt][c];
                if (TYPE == CU_T_IQ2_XXS) v = __fmul_rn(0.125f, v); /* README §4.2: ×0.125 once */
                if (o < rows && t < tl.t1) y[t * ldy + o] = v;
            }
}

static int g_mq_tables; /* IQ2_XXS tables uploaded */

template <int TYPE>
static ds4_status mq_run(const mm_args *a, ds4_error *err) {
    static int attr_set;
    if (!attr_set) {
        CU_CHECK(cudaFuncSetAttribute(k_matmul_mma<TYPE>, cudaFuncAttributeMaxDynamicSharedMemorySize, MQ_SMEM),
                 err, "matmul smem attribute");
        attr_set = 1;
    }
    int64_t nblk = TYPE == CU_T_Q8_0 ? a->cols / 32 : a->cols / 256;
    int64_t tiles = (a->n_tok + MQ_BN - 1) / MQ_BN + (a->d_off ? a->n_expert : 0);
    if (tiles > 65535)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_matmul: %lld token tiles (at most 65535)",
                          (long long)tiles);
    dim3 grid((unsigned)((a->rows + MQ_BM - 1) / MQ_BM), (unsigned)tiles);
    k_matmul_mma<TYPE><<<grid, MQ_THREADS, MQ_SMEM, cu_stream>>>(
        a->w, a->rows, nblk, a->row_bytes, a->expert_stride, a->d_off, a->n_expert, a->act,
        a->act_stride, a->n_tok, a->y, a->ldy);
    CU_CHECK(cudaGetLastError(), err, "matmul mma launch");
    return DS4_OK;
}

ds4_status mm_launch_mma(const mm_args *a, ds4_error *err) {
    switch (a->type) {
    case CU_T_Q8_0: return mq_run<CU_T_Q8_0>(a, err);
    case CU_T_Q2_K: return mq_run<CU_T_Q2_K>(a, err);
    case CU_T_Q4_K: return mq_run<CU_T_Q4_K>(a, err);
    case CU_T_IQ2_XXS:
        if (!g_mq_tables) {
            CU_CHECK(cudaMemcpyToSymbol(mq_iq2_grid, q_iq2xxs_grid, sizeof mq_iq2_grid), err, "iq2 grid");
            CU_CHECK(cudaMemcpyToSymbol(mq_iq2_signs, q_iq2xxs_signs, sizeof mq_iq2_signs), err, "iq2 signs");
            g_mq_tables = 1;
        }
        return mq_run<CU_T_IQ2_XXS>(a, err);
    default:
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED, "cuda_matmul: no int8 kernel for type %d", a->type);
    }
}
