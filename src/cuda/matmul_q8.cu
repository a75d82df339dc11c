/*
 * cuda/matmul_q8.cu — the prefill product of Q8_0 weights (cuda_matmul's dense and grouped
 * launches) on int8 tensor cores, bit-identical to cpu_matmul: per 32-column block the integer
 * dot of the codes comes from one mma.sync m16n8k32 (exact in any order), then the CPU's f32
 * steps acc += (d_w·d_x)·isum (quants README §4.2), blocks in order, explicit __fmul_rn /
 * __fadd_rn.
 *
 * Why a kernel of its own (matmul_mma.cu's Q8_0 path ran at 6x its f32 issue floor): a step is
 * 8 blocks = 256 columns, whose 8 x 34 = 272 raw bytes of a row are 16-byte aligned whenever the
 * matrix is (rows of 8k blocks, GGUF's 32-byte tensor alignment), so the weights come by plain
 * 16-byte cp.async into a two-stage ring with the activation codes and scales — one barrier per
 * step, no register prefetch, no unpack pass: the mma's A fragments are read straight from the
 * raw blocks (a block's codes start 2 bytes in: odd blocks are 4-byte aligned, even ones take
 * two aligned words and a byte permute). Unaligned weights or a partial last step (cols not a
 * multiple of 256) fill the stage's weights with 2-byte loads instead (ALIGNED false: tests,
 * odd shapes). isum → f32 by the conversion unit: starting the mma's accumulator at 1.5·2^23
 * and subtracting it (exact, one FADD) measured 5% slower (H200), the FMA pipe being the busier.
 * The 8 blocks of a step are unrolled (two at a time measured 3-5% slower).
 * Tiles: 128 weight rows x 64 tokens per block of 8 warps (warp tile 32 x 32), as matmul_mma.cu.
 * Must not: know tensor names or the model.
 */
#include "matmul_impl.cuh"

#define Q8_BM 128
#define Q8_BN 64
#define Q8_THREADS 256
#define Q8_SB 8                                  /* blocks per step */
#define Q8_RB (Q8_SB * CU_Q8_0_BYTES)            /* 272 raw bytes per row and step */
#define Q8_XLD 272                               /* activation row pitch: 256 codes + 16 pad */
#define Q8_OFF_X (Q8_BM * Q8_RB)                 /* int8 [BN][XLD] */
#define Q8_XFP 12 /* floats per token of block scales: 8 + 4 pad (4 tokens of a load, 4 banks) */
#define Q8_OFF_XF (Q8_OFF_X + Q8_BN * Q8_XLD)     /* f32 [BN][XFP]: the tokens' block scales */
#define Q8_STAGE (Q8_OFF_XF + Q8_BN * Q8_XFP * 4) /* bytes per stage */
#define Q8_SMEM (2 * Q8_STAGE)
static_assert(Q8_RB % 16 == 0 && Q8_STAGE % 16 == 0, "stages are 16-byte cp.async targets");
static_assert(Q8_SMEM <= 113 * 1024 - 512, "two blocks per SM (the launch bounds) must fit");

/* d += a·b (m16n8k32, s8 x s8 -> s32). */
__device__ __forceinline__ void q8_mma(int (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                 "{%8,%9}, {%0,%1,%2,%3};"
                 : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* 16 bytes global -> shared, asynchronously; ok false writes zeros and reads nothing. */
__device__ __forceinline__ void q8_cp16(uint8_t *dst, const uint8_t *src, bool ok) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;"
                 ::"r"((unsigned)__cvta_generic_to_shared(dst)), "l"(src), "r"(ok ? 16 : 0));
}

/* Step s into stage st: the weights of rows r0 .. r0+127 (zeros past the matrix), the codes
 * and scales of tokens t0 .. t1 (zeros past the tile). ALIGNED: 17 cp.async per row;
 * otherwise 2-byte loads (blocks past nblk zero). */
template <bool ALIGNED>
__device__ __forceinline__ void q8_issue(uint8_t *stg, const uint8_t *wb, int64_t r0, int64_t rows,
                                         uint64_t rb, int64_t nblk, const mm_planes &pl,
                                         int64_t cols, int64_t t0, int64_t t1, int64_t s) {
    const int tid = threadIdx.x;
    const uint8_t *z = (const uint8_t *)pl.codes; /* any 16-byte aligned source of a zero-fill */
    if constexpr (ALIGNED) {
        constexpr int NCH = Q8_RB / 16;
#pragma unroll 1 /* unrolled, the 64-bit addresses of all 9 spill the accumulators */
        for (int k = 0; k < (Q8_BM * NCH + Q8_THREADS - 1) / Q8_THREADS; k++) {
            int idx = tid + Q8_THREADS * k, r = idx / NCH, c = idx % NCH;
            bool ok = idx < Q8_BM * NCH && r0 + r < rows;
            if (idx < Q8_BM * NCH)
                q8_cp16(stg + r * Q8_RB + 16 * c, ok ? wb + (uint64_t)(r0 + r) * rb + (uint64_t)s * Q8_RB + 16 * c
                                                     : z, ok);
        }
    } else {
        int64_t nb = (nblk - Q8_SB * s) * CU_Q8_0_BYTES; /* valid raw bytes of the step */
        for (int idx = tid; idx < Q8_BM * Q8_RB / 2; idx += Q8_THREADS) {
            int r = idx / (Q8_RB / 2), j = 2 * (idx % (Q8_RB / 2));
            bool ok = r0 + r < rows && j < nb;
            ((uint16_t *)stg)[idx] = ok ? *(const uint16_t *)(wb + (uint64_t)(r0 + r) * rb + (uint64_t)s * Q8_RB + j) : 0;
        }
    }
#pragma unroll
    for (int k = 0; k < Q8_BN * 16 / Q8_THREADS; k++) { /* codes, 16 bytes at a time */
        int idx = tid + Q8_THREADS * k, t = idx >> 4, c = idx & 15;
        bool ok = t0 + t < t1 && (ALIGNED || 256 * s + 16 * c < cols);
        q8_cp16(stg + Q8_OFF_X + t * Q8_XLD + 16 * c, ok ? (const uint8_t *)(pl.codes + (t0 + t) * cols + 256 * s + 16 * c)
                                                         : z, ok);
    }
    float *xf = (float *)(stg + Q8_OFF_XF);
    if constexpr (ALIGNED) {
        if (tid < 2 * Q8_BN) { /* 8 scales per token; the planes' rows of 8k floats are 32-byte aligned */
            int t = tid >> 1, h = tid & 1;
            bool ok = t0 + t < t1;
            q8_cp16((uint8_t *)(xf + Q8_XFP * t + 4 * h), ok ? (const uint8_t *)(pl.d + (t0 + t) * nblk + Q8_SB * s + 4 * h)
                                                       : z, ok);
        }
    } else {
        for (int idx = tid; idx < Q8_BN * Q8_SB; idx += Q8_THREADS) {
            int t = idx >> 3, b = idx & 7;
            bool ok = t0 + t < t1 && Q8_SB * s + b < nblk;
            xf[Q8_XFP * t + b] = ok ? pl.d[(t0 + t) * nblk + Q8_SB * s + b] : 0.0f;
        }
    }
}

/* Block b of the step in stage stg (ODD: b odd) for this thread's fragment: rows wr+16mt+g (+8),
 * tokens wt+8nt+2tg (+1); acc += (d_w·d_x)·isum in the CPU's order (README §4.2). */
template <int ODD>
__device__ __forceinline__ void q8_block(float (&acc)[2][4][4], const uint8_t *stg, unsigned b_addr,
                                         int b, int wr, int wt, int g, int tg) {
    const uint32_t *W32 = (const uint32_t *)stg;
    const float *xf = (const float *)(stg + Q8_OFF_XF);
    /* A: the codes of block b start at byte 34b+2 of the row */
    uint32_t af[2][4];
    float rs[2][2], ts[4][2];
#pragma unroll
    for (int mt = 0; mt < 2; mt++) {
        const int ra = wr + 16 * mt + g;
        const uint32_t *p0 = W32 + ra * (Q8_RB / 4), *p1 = p0 + 8 * (Q8_RB / 4);
        if (ODD) { /* 4-byte aligned */
            const int k = (CU_Q8_0_BYTES * b + 2) / 4 + tg;
            af[mt][0] = p0[k]; af[mt][1] = p1[k]; af[mt][2] = p0[k + 4]; af[mt][3] = p1[k + 4];
        } else { /* 2 bytes past a word: bytes 2-3 of one, 0-1 of the next */
            const int k = CU_Q8_0_BYTES * b / 4 + tg;
            af[mt][0] = __byte_perm(p0[k], p0[k + 1], 0x5432);
            af[mt][1] = __byte_perm(p1[k], p1[k + 1], 0x5432);
            af[mt][2] = __byte_perm(p0[k + 4], p0[k + 5], 0x5432);
            af[mt][3] = __byte_perm(p1[k + 4], p1[k + 5], 0x5432);
        }
#pragma unroll
        for (int i = 0; i < 2; i++)
            rs[mt][i] = __half2float(*(const __half *)(stg + (ra + 8 * i) * Q8_RB + CU_Q8_0_BYTES * b));
    }
#pragma unroll
    for (int nt = 0; nt < 4; nt++)
#pragma unroll
        for (int j = 0; j < 2; j++) ts[nt][j] = xf[(wt + 8 * nt + 2 * tg + j) * Q8_XFP + b];
    /* B (tokens 16p .. 16p+15) by ldmatrix: tokens 0-7 bytes 0-15 / 16-31, tokens 8-15 likewise */
    uint32_t bf[4][2];
#pragma unroll
    for (int p = 0; p < 2; p++) {
        uint32_t r[4];
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(b_addr + (unsigned)(16 * p * Q8_XLD + 32 * b))
                     : "memory");
        bf[2 * p][0] = r[0]; bf[2 * p][1] = r[1]; bf[2 * p + 1][0] = r[2]; bf[2 * p + 1][1] = r[3];
    }
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++) {
            int sv[4] = {0, 0, 0, 0};
            q8_mma(sv, af[mt], bf[nt][0], bf[nt][1]);
#pragma unroll
            for (int c = 0; c < 4; c++)
                acc[mt][nt][c] = __fadd_rn(acc[mt][nt][c], __fmul_rn(__fmul_rn(rs[mt][c >> 1], ts[nt][c & 1]),
                                                                     __int2float_rn(sv[c])));
        }
}

/* grid (ceil(rows/128), token-tile bound), 256 threads, Q8_SMEM bytes of dynamic shared
 * memory. Warp w owns rows 32(w%4) .. +31 and tokens 32(w/4) .. +31 of the tile. */
template <bool ALIGNED>
__global__ void __launch_bounds__(Q8_THREADS, 2)
k_matmul_q8(const uint8_t *w, int64_t rows, int64_t cols, uint64_t rb, uint64_t e_stride,
            const int32_t *d_off, int n_expert, mm_planes pl, int64_t n_tok, float *y, int64_t ldy) {
    cu_pdl_wait();
    extern __shared__ __align__(16) uint8_t sm[];
    mm_tile tl;
    if (!mm_find_tile(d_off, n_expert, n_tok, Q8_BN, blockIdx.y, &tl)) return;
    const int64_t r0 = (int64_t)blockIdx.x * Q8_BM, nblk = pl.nblk;
    const int64_t nsteps = (nblk + Q8_SB - 1) / Q8_SB;
    const uint8_t *wb = w + (uint64_t)tl.e * e_stride;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, tg = lane & 3, wr = 32 * (warp & 3), wt = 32 * (warp >> 2);
    float acc[2][4][4] = {};
    q8_issue<ALIGNED>(sm, wb, r0, rows, rb, nblk, pl, cols, tl.t0, tl.t1, 0);
    asm volatile("cp.async.commit_group;");
    for (int64_t s = 0; s < nsteps; s++) {
        const uint8_t *stg = sm + (s & 1) * Q8_STAGE;
        asm volatile("cp.async.wait_group 0;" ::: "memory");
        __syncthreads(); /* step s landed everywhere; every reader of step s-1 is done */
        if (s + 1 < nsteps) { /* in flight while this step multiplies */
            q8_issue<ALIGNED>(sm + ((s + 1) & 1) * Q8_STAGE, wb, r0, rows, rb, nblk, pl, cols, tl.t0, tl.t1, s + 1);
            asm volatile("cp.async.commit_group;"); /* (!ALIGNED: plain stores, seen after the next barrier) */
        }
        const unsigned b_addr = (unsigned)__cvta_generic_to_shared(
            stg + Q8_OFF_X + (wt + (lane & 7) + 8 * (lane >> 4)) * Q8_XLD + 16 * ((lane >> 3) & 1));
        const int nb = (int)(nblk - Q8_SB * s < Q8_SB ? nblk - Q8_SB * s : Q8_SB);
        /* blocks in pairs (even, odd: the two alignments), the whole step unrolled */
#pragma unroll
        for (int bp = 0; bp < Q8_SB; bp += 2) {
            if (!ALIGNED && bp >= nb) break;
            q8_block<0>(acc, stg, b_addr, bp, wr, wt, g, tg);
            if (!ALIGNED && bp + 1 >= nb) break;
            q8_block<1>(acc, stg, b_addr, bp + 1, wr, wt, g, tg);
        }
    }
    mm_store_frags(acc, 1.0f, y, ldy, r0, rows, tl.t0, tl.t1, wr, wt, g, tg);
}

template <bool ALIGNED>
static ds4_status q8_launch(const mm_args *a, dim3 grid, ds4_error *err) {
    static int attr_set;
    if (!attr_set) {
        CU_CHECK(cudaFuncSetAttribute(k_matmul_q8<ALIGNED>, cudaFuncAttributeMaxDynamicSharedMemorySize, Q8_SMEM),
                 err, "matmul q8 smem attribute");
        attr_set = 1;
    }
    cu_launch(k_matmul_q8<ALIGNED>, grid, Q8_THREADS, Q8_SMEM, a->w, a->rows, a->cols, a->row_bytes,
              a->expert_stride, a->d_off, a->n_expert, a->planes, a->n_tok, a->y, a->ldy);
    CU_CHECK(cudaGetLastError(), err, "matmul q8 launch");
    return DS4_OK;
}

ds4_status mm_launch_q8(const mm_args *a, ds4_error *err) {
    int64_t tiles = (a->n_tok + Q8_BN - 1) / Q8_BN + (a->d_off ? a->n_expert : 0);
    if (tiles > 65535)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_matmul: %lld token tiles (at most 65535)",
                          (long long)tiles);
    dim3 grid((unsigned)((a->rows + Q8_BM - 1) / Q8_BM), (unsigned)tiles);
    /* 16-byte aligned steps: whole steps (rows of 8k blocks) at 16-byte aligned rows */
    bool al = a->planes.nblk % Q8_SB == 0 && (((uintptr_t)a->w | a->expert_stride) & 15) == 0;
    return al ? q8_launch<true>(a, grid, err) : q8_launch<false>(a, grid, err);
}
