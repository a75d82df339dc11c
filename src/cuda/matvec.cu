/*
 * cuda/matvec.cu — y = W·x for one token (decode), W a GGUF tensor read in place, alone or
 * as the selected routed experts of a token in one grouped launch.
 *
 * Dense types (Q8_0, F32, F16, BF16) go to matvec_dense.cu (the CPU's summation order), the
 * selected routed experts of IQ2_XXS / Q2_K / Q4_K to matvec_exp.cu; the kernels here serve
 * the rest: routed experts with DS4_CUDA_EXP_V1=1 or shapes matvec_exp.cu does not take, and,
 * with DS4_CUDA_MV_V1=1 (before/after timing), the dense types in the old lane order.
 * One warp per output row for products with many rows; few-row products give a row 4 or 16
 * warps whose partial sums meet in shared memory in warp order (issue #7: 24 busy warps cannot
 * stream 1.5 MB). Quantized types work on quantized activations exactly like the CPU reference
 * (quants README §4.2): the integer sums of a 256-value block are exact in any order, and the
 * few float steps per block use __f*_rn intrinsics so nvcc cannot contract them into FMAs —
 * each block's contribution is bit-identical to the CPU's; only the order of the final sum over
 * blocks differs here (warp lanes hold interleaved partial sums).
 */
#include <stdlib.h>

#include "common.cuh"
#include "cuda_api.h"
#include "matvec_impl.cuh"

/* Grouped launches: blockIdx.y = selection j, expert e = ids[j] (0 when ids is NULL); weights
 * of expert e start at w + e·w_stride, its activation at act + j·act_stride (0 = one shared
 * input), its output at y + j·rows. */
struct mv_args {
    const uint8_t *w;
    int64_t w_stride;
    const int32_t *ids;
    const uint8_t *act;
    int64_t act_stride;
    float *y;
    int64_t rows, cols;
    int64_t n_experts;
    /* A pair (gate and up: issue #7, one launch for both): blockIdx.y >= n_sel runs selection
     * blockIdx.y - n_sel on w2 into y2 (same shape, type and ids); w2 NULL: no pair. */
    const uint8_t *w2;
    float *y2;
    int n_sel;
};

struct mv_ptrs {
    const uint8_t *w; /* this row's weights */
    const uint8_t *act;
    float *y;         /* this row's output */
};

/* WPR warps per output row (1, 4 or 16), max(4, WPR) warps per block: the row of this warp and
 * this warp's first unit (a unit is what one lane handles per step; a warp starts at unit
 * 32·sub and steps by 32·WPR, so 8-lane groups stay inside one quant block). */
template <int WPR> struct mv_shape {
    static constexpr int warps = WPR < 4 ? 4 : WPR, rows_per_block = warps / WPR;
};

template <int WPR>
__device__ __forceinline__ bool mv_select(const mv_args &a, mv_ptrs *p, int64_t row_bytes) {
    const int warp = threadIdx.x >> 5;
    const int64_t row = (int64_t)blockIdx.x * mv_shape<WPR>::rows_per_block + warp / WPR;
    if (row >= a.rows) return false;
    int j = blockIdx.y;
    const uint8_t *w = a.w;
    float *y = a.y;
    if (j >= a.n_sel) {
        j -= a.n_sel;
        w = a.w2;
        y = a.y2;
    }
    const int64_t e = a.ids ? a.ids[j] : 0;
    if (e < 0 || e >= a.n_experts) { /* a corrupt router id must not read past the tensor */
        if ((threadIdx.x & 31) == 0 && warp % WPR == 0) y[j * a.rows + row] = __int_as_float(0x7fc00000);
        return false;
    }
    p->w = w + e * a.w_stride + row * row_bytes;
    p->act = a.act + j * a.act_stride;
    p->y = y + j * a.rows + row;
    return true;
}

/* First unit of this lane and the step between its units. */
template <int WPR> __device__ __forceinline__ int64_t mv_unit0() {
    return (int64_t)((threadIdx.x >> 5) % WPR) * 32 + (threadIdx.x & 31);
}
#define MV_STEP(WPR) ((int64_t)32 * (WPR))

/* The row's sum: lane partials over the warp, then (WPR > 1) the row's warps in warp order
 * through shared memory. Every thread of the block calls it (it may synchronise). */
template <int WPR> __device__ __forceinline__ void mv_finish(float acc, bool ok, float *y) {
    acc = cu_warp_sum(acc);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (WPR == 1) {
        if (ok && lane == 0) *y = acc;
        return;
    }
    __shared__ float part[32];
    if (lane == 0) part[warp] = acc;
    __syncthreads();
    if (ok && lane == 0 && warp % WPR == 0) {
        float t = part[warp];
        for (int k = 1; k < WPR; k++) t = __fadd_rn(t, part[warp + k]);
        *y = t;
    }
}

/* IQ2_XXS grid (GGUF_LAYOUT §4.5.1), uploaded by cuda_init from the CPU table. Global memory
 * read through the read-only cache: lanes index it divergently (constant memory would
 * serialise them) and a per-block shared copy cost as much as the 4 rows it served. */
__device__ uint64_t g_iq2_grid[256];

extern "C" ds4_status cuda_iq2_tables_upload(const uint64_t grid[256], const uint8_t ksigns[128],
                                             ds4_error *err) {
    (void)ksigns; /* the sign table is computed (parity rule, §4.5.2); checked by the tests */
    CU_CHECK(cudaMemcpyToSymbol(g_iq2_grid, grid, sizeof(uint64_t) * 256), err, "iq2 grid upload");
    return cuda_mvx_grid_upload(grid, err); /* matvec_exp.cu's copy of the grid */
}

/* Sign masks of a 7-bit IQ2 sign index: bit 7 = parity (KSIGNS, GGUF_LAYOUT §4.5.2); each bit
 * becomes a byte 0xFF (negative) or 0x00; lo = values 0..3, hi = values 4..7. */
__device__ __forceinline__ void iq2_sign_masks(uint32_t s7, uint32_t *lo, uint32_t *hi) {
    const uint32_t s8 = s7 | ((__popc(s7) & 1u) << 7);
    *lo = (((s8 & 0x0Fu) * 0x00204081u) & 0x01010101u) * 0xFFu;
    *hi = (((s8 >> 4) * 0x00204081u) & 0x01010101u) * 0xFFu;
}

/* Units a lane handles per step, their weight bytes loaded before any is used. Q8_0 gains from
 * 4 (more loads in flight); IQ2_XXS and the K-quants lost 10-15% with 4 on an H200 (register
 * pressure), so they keep 1 (2026-11-26, ds4-cuda-tests --bench). */
#define MV_U 4
#define MV_UQ 1

/* IQ2_XXS: a unit is one 32-value group; the 8 groups of a block sit in 8 adjacent lanes, whose
 * integer sums combine exactly (cu_sum8_i) into the block sum. */
template <int WPR>
__global__ void __launch_bounds__(32 * mv_shape<WPR>::warps) k_matvec_iq2_xxs(mv_args a) {
    cu_pdl_wait();
    const int lane = threadIdx.x & 31;
    const int64_t nb = a.cols / 256, ng = nb * 8;
    mv_ptrs p;
    const bool ok = mv_select<WPR>(a, &p, nb * CU_IQ2_XXS_BYTES);
    float acc = 0.0f;
    for (int64_t g0 = mv_unit0<WPR>(); ok && g0 - lane < ng; g0 += MV_UQ * MV_STEP(WPR)) {
        uint32_t A[MV_UQ], B[MV_UQ];
        float d[MV_UQ];
#pragma unroll
        for (int i = 0; i < MV_UQ; i++) {
            const int64_t g = g0 + i * MV_STEP(WPR);
            const uint8_t *bp = p.w + (g >> 3) * CU_IQ2_XXS_BYTES;
            A[i] = B[i] = 0;
            d[i] = 0.0f;
            if (g < ng) {
                A[i] = cu_ld_u32_a2(bp + 2 + 8 * (g & 7));
                B[i] = cu_ld_u32_a2(bp + 6 + 8 * (g & 7));
                if ((lane & 7) == 0) d[i] = cu_f16(bp);
            }
        }
#pragma unroll
        for (int i = 0; i < MV_UQ; i++) {
            const int64_t g = g0 + i * MV_STEP(WPR);
            if (g - lane >= ng) break; /* warp-uniform */
            int part = 0;
            if (g < ng) {
                const int *yq = (const int *)(p.act + (g >> 3) * CU_Q8_K_BYTES + 4 + 32 * (g & 7));
                int s = 0;
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    const uint64_t gv = __ldg(&g_iq2_grid[(A[i] >> (8 * k)) & 255]);
                    uint32_t mlo, mhi;
                    iq2_sign_masks((B[i] >> (7 * k)) & 127u, &mlo, &mhi);
                    const uint32_t lo = __vsub4((uint32_t)gv ^ mlo, mlo);
                    const uint32_t hi = __vsub4((uint32_t)(gv >> 32) ^ mhi, mhi);
                    s = __dp4a((int)lo, yq[2 * k], s);
                    s = __dp4a((int)hi, yq[2 * k + 1], s);
                }
                part = (2 * (int)(B[i] >> 28) + 1) * s;
            }
            const int bsum = cu_sum8_i(part);
            if ((lane & 7) == 0 && g < ng) {
                const float t = __fmul_rn(d[i], cu_f32_at(p.act + (g >> 3) * CU_Q8_K_BYTES));
                acc = __fadd_rn(acc, __fmul_rn(t, (float)bsum));
            }
        }
    }
    mv_finish<WPR>(0.125f * acc, ok, p.y); /* ×2⁻³ is exact: same as scaling the sum */
}

/* Q4_K 6-bit scale/min of sub-block j (GGUF_LAYOUT §4.4). */
__device__ __forceinline__ void cu_q4k_scale_min(const uint8_t *s, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* The two K-quants differ only in where lane k (0..7) of a block's 8-lane group finds its 32
 * values and scales; the integer sums and the per-block float steps are shared below. */
struct q2k_layout { /* GGUF_LAYOUT §4.3 */
    static constexpr int bytes = CU_Q2_K_BYTES, d_off = 80, dmin_off = 82;
    /* values 32k..32k+31: qs bytes 32h..32h+31 (h = k/4) at shift 2(k%4), sub-blocks 2k, 2k+1 */
    static __device__ __forceinline__ void part(const uint8_t *bp, const int *yq,
                                                const int16_t *bsums, int k, int *isum, int *summs) {
        const uint32_t *qs = (const uint32_t *)(bp + 16 + 32 * (k >> 2));
        const int sh = 2 * (k & 3);
#pragma unroll
        for (int sub = 0; sub < 2; sub++) {
            const int j = 2 * k + sub;
            int s = 0;
#pragma unroll
            for (int i = 0; i < 4; i++)
                s = __dp4a((int)((qs[4 * sub + i] >> sh) & 0x03030303u), yq[4 * sub + i], s);
            *isum += (bp[j] & 15) * s;
            *summs += (bp[j] >> 4) * bsums[j];
        }
    }
};

struct q4k_layout { /* GGUF_LAYOUT §4.4 */
    static constexpr int bytes = CU_Q4_K_BYTES, d_off = 0, dmin_off = 2;
    /* sub-block k (32 values): nibble (k&1) of qs bytes 32(k/2)..32(k/2)+31 */
    static __device__ __forceinline__ void part(const uint8_t *bp, const int *yq,
                                                const int16_t *bsums, int k, int *isum, int *summs) {
        const uint32_t *qs = (const uint32_t *)(bp + 16 + 32 * (k >> 1));
        const int sh = 4 * (k & 1);
        int sc, m, s = 0;
        cu_q4k_scale_min(bp + 4, k, &sc, &m);
#pragma unroll
        for (int i = 0; i < 8; i++) s = __dp4a((int)((qs[i] >> sh) & 0x0F0F0F0Fu), yq[i], s);
        *isum += sc * s;
        *summs += m * (bsums[2 * k] + bsums[2 * k + 1]);
    }
};

/* Q2_K / Q4_K × Q8_K: per block acc += (yd·d)·isum − (yd·dmin)·summs (quants README §4.2);
 * a unit is a lane's 32 values of a block (8 units per block in adjacent lanes). */
template <class L, int WPR>
__global__ void __launch_bounds__(32 * mv_shape<WPR>::warps) k_matvec_kquant(mv_args a) {
    cu_pdl_wait();
    const int lane = threadIdx.x & 31;
    const int64_t nb = a.cols / 256, nparts = nb * 8;
    mv_ptrs p;
    const bool ok = mv_select<WPR>(a, &p, nb * L::bytes);
    float acc = 0.0f;
    for (int64_t q0 = mv_unit0<WPR>(); ok && q0 - lane < nparts; q0 += MV_UQ * MV_STEP(WPR)) {
        int isum[MV_UQ], summs[MV_UQ];
#pragma unroll
        for (int i = 0; i < MV_UQ; i++) { /* independent units: the compiler issues all loads first */
            const int64_t q = q0 + i * MV_STEP(WPR);
            isum[i] = summs[i] = 0;
            if (q < nparts) {
                const int64_t blk = q >> 3;
                const int k = (int)(q & 7);
                const uint8_t *yb = p.act + blk * CU_Q8_K_BYTES;
                L::part(p.w + blk * L::bytes, (const int *)(yb + 4 + 32 * k),
                        (const int16_t *)(yb + 260), k, &isum[i], &summs[i]);
            }
        }
#pragma unroll
        for (int i = 0; i < MV_UQ; i++) {
            const int64_t q = q0 + i * MV_STEP(WPR);
            if (q - lane >= nparts) break; /* warp-uniform */
            const int is = cu_sum8_i(isum[i]), sm = cu_sum8_i(summs[i]);
            if ((lane & 7) == 0 && q < nparts) {
                const int64_t blk = q >> 3;
                const uint8_t *bp = p.w + blk * L::bytes;
                const float yd = cu_f32_at(p.act + blk * CU_Q8_K_BYTES);
                const float dall = __fmul_rn(yd, cu_f16(bp + L::d_off));
                const float dmin = __fmul_rn(yd, cu_f16(bp + L::dmin_off));
                acc = __fadd_rn(acc, __fsub_rn(__fmul_rn(dall, (float)is), __fmul_rn(dmin, (float)sm)));
            }
        }
    }
    mv_finish<WPR>(acc, ok, p.y);
}

/* Q8_0 weights × ds4 Q8_0 activation records (DS4_CUDA_MV_V1=1 only: matvec_dense.cu is the
 * default): a unit is one 32-value block. A4: rows 4-byte aligned (q8_0_load), else 16-bit
 * loads. Lane partial sums over the blocks, then the warp sum (each block's term is the CPU's,
 * the order of the sum is not). */
template <int WPR, bool A4>
__global__ void __launch_bounds__(32 * mv_shape<WPR>::warps) k_matvec_q8_0(mv_args a) {
    cu_pdl_wait();
    const int64_t nb = a.cols / 32;
    mv_ptrs p;
    const bool ok = mv_select<WPR>(a, &p, nb * CU_Q8_0_BYTES);
    float acc = 0.0f;
    for (int64_t b0 = mv_unit0<WPR>(); ok && b0 - (threadIdx.x & 31) < nb; b0 += MV_U * MV_STEP(WPR)) {
        int s[MV_U];
        float dw[MV_U];
#pragma unroll
        for (int i = 0; i < MV_U; i++) {
            const int64_t b = b0 + i * MV_STEP(WPR);
            s[i] = 0;
            dw[i] = 0.0f;
            if (b < nb) {
                const uint8_t *bp = p.w + b * CU_Q8_0_BYTES;
                const int *aq = (const int *)(p.act + b * CU_Q8_0ACT_BYTES + 4);
                if (A4) {
                    uint32_t q[8];
                    dw[i] = q8_0_load(bp, q);
#pragma unroll
                    for (int j = 0; j < 8; j++) s[i] = __dp4a((int)q[j], aq[j], s[i]);
                } else {
                    dw[i] = cu_f16(bp);
#pragma unroll
                    for (int j = 0; j < 8; j++) s[i] = __dp4a((int)cu_ld_u32_a2(bp + 2 + 4 * j), aq[j], s[i]);
                }
            }
        }
#pragma unroll
        for (int i = 0; i < MV_U; i++) {
            const int64_t b = b0 + i * MV_STEP(WPR);
            if (b < nb)
                acc = __fadd_rn(acc, __fmul_rn(__fmul_rn(dw[i], cu_f32_at(p.act + b * CU_Q8_0ACT_BYTES)),
                                               (float)s[i]));
        }
    }
    mv_finish<WPR>(acc, ok, p.y);
}

/* Float weights × f32 activations (DS4_CUDA_MV_V1=1 only; fmaf lane chains, not the CPU's order). */
template <int T>
__device__ __forceinline__ float cu_wval(const uint8_t *wr, int64_t i) {
    if (T == CU_T_F32) return ((const float *)wr)[i];
    if (T == CU_T_F16) return __half2float(__ushort_as_half(((const uint16_t *)wr)[i]));
    return __uint_as_float((uint32_t)((const uint16_t *)wr)[i] << 16); /* BF16 */
}

/* VEC: a unit is 16 bytes of the row (rows and x 16-byte aligned, checked at launch), else one
 * value. */
template <int T, bool VEC, int WPR>
__global__ void __launch_bounds__(32 * mv_shape<WPR>::warps) k_matvec_float(mv_args a) {
    cu_pdl_wait();
    mv_ptrs p;
    const bool ok = mv_select<WPR>(a, &p, a.cols * (T == CU_T_F32 ? 4 : 2));
    const float *x = (const float *)p.act;
    float acc = 0.0f;
    if (VEC) {
        const int64_t nu = a.cols / (T == CU_T_F32 ? 4 : 8);
#pragma unroll 4
        for (int64_t u = mv_unit0<WPR>(); ok && u < nu; u += MV_STEP(WPR))
            acc = cu_dot16<T>(p.w, x, u, acc);
    } else {
        for (int64_t i = mv_unit0<WPR>(); ok && i < a.cols; i += MV_STEP(WPR))
            acc = fmaf(cu_wval<T>(p.w, i), x[i], acc);
    }
    mv_finish<WPR>(acc, ok, p.y);
}

static int64_t act_block_bytes(int type, int64_t cols) {
    switch (type) {
    case CU_T_Q2_K: case CU_T_Q4_K: case CU_T_IQ2_XXS: return cols / 256 * CU_Q8_K_BYTES;
    case CU_T_Q8_0: return cols / 32 * CU_Q8_0ACT_BYTES;
    default: return cols * 4;
    }
}

extern "C" size_t cuda_matvec_scratch_bytes(int type, int64_t cols) {
    switch (type) {
    case CU_T_Q2_K: case CU_T_Q4_K: case CU_T_IQ2_XXS: case CU_T_Q8_0:
        return (size_t)act_block_bytes(type, cols);
    default: return 0;
    }
}

static int64_t weight_row_bytes(int type, int64_t cols) {
    switch (type) {
    case CU_T_IQ2_XXS: return cols / 256 * CU_IQ2_XXS_BYTES;
    case CU_T_Q2_K: return cols / 256 * CU_Q2_K_BYTES;
    case CU_T_Q4_K: return cols / 256 * CU_Q4_K_BYTES;
    case CU_T_Q8_0: return cols / 32 * CU_Q8_0_BYTES;
    case CU_T_F32: return cols * 4;
    default: return cols * 2;
    }
}

/* The kernel of `type` with WPR warps per row over rows x n_sel. */
template <int WPR>
static ds4_status mv_dispatch(int type, int vec, int64_t rows, int n_sel, const mv_args &a,
                              ds4_error *err) {
    constexpr int rpb = mv_shape<WPR>::rows_per_block;
    const dim3 grid((unsigned)((rows + rpb - 1) / rpb), (unsigned)(a.w2 ? 2 * n_sel : n_sel));
    const dim3 block(32 * mv_shape<WPR>::warps);
    switch (type) {
    case CU_T_IQ2_XXS: cu_launch(k_matvec_iq2_xxs<WPR>, grid, block, 0, a); break;
    case CU_T_Q2_K: cu_launch(k_matvec_kquant<q2k_layout, WPR>, grid, block, 0, a); break;
    case CU_T_Q4_K: cu_launch(k_matvec_kquant<q4k_layout, WPR>, grid, block, 0, a); break;
    case CU_T_Q8_0:
        if (((uintptr_t)a.w & 3) == 0 && (a.w2 == NULL || ((uintptr_t)a.w2 & 3) == 0) &&
            (a.cols / 32) % 2 == 0 && (a.w_stride & 3) == 0)
            cu_launch(k_matvec_q8_0<WPR, true>, grid, block, 0, a);
        else
            cu_launch(k_matvec_q8_0<WPR, false>, grid, block, 0, a);
        break;
#define MV_FLOAT(T)                                                                            \
    if (vec) cu_launch(k_matvec_float<T, true, WPR>, grid, block, 0, a);                       \
    else cu_launch(k_matvec_float<T, false, WPR>, grid, block, 0, a);                          \
    break;
    case CU_T_F32: MV_FLOAT(CU_T_F32)
    case CU_T_F16: MV_FLOAT(CU_T_F16)
    case CU_T_BF16: MV_FLOAT(CU_T_BF16)
#undef MV_FLOAT
    default:
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED, "cuda matvec: tensor type %d is not supported", type);
    }
    CU_CHECK(cudaGetLastError(), err, "matvec launch");
    return DS4_OK;
}

/* Quantizes n_x activation rows (if the type needs it) and launches the grouped kernel. */
static ds4_status matvec_launch2(int type, const void *d_w, const void *d_w2, int64_t n_experts,
                                 int64_t w_stride, const int32_t *d_ids, int n_sel, int64_t rows,
                                 int64_t cols, const float *d_x, int n_x, void *d_act, float *d_y,
                                 float *d_y2, ds4_error *err) {
    if (rows <= 0 || cols <= 0 || n_sel <= 0 || n_sel > 65535)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda matvec: bad shape %lld x %lld x %d",
                          (long long)rows, (long long)cols, n_sel);
    const int blk = (type == CU_T_Q8_0) ? 32 : (type == CU_T_Q2_K || type == CU_T_Q4_K || type == CU_T_IQ2_XXS) ? 256 : 1;
    if (cols % blk)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda matvec: %lld columns is not a multiple of %d",
                          (long long)cols, blk);
    mv_args a;
    a.w = (const uint8_t *)d_w;
    a.w_stride = w_stride;
    a.n_experts = n_experts;
    a.ids = d_ids;
    a.y = d_y;
    a.rows = rows;
    a.cols = cols;
    a.w2 = (const uint8_t *)d_w2;
    a.y2 = d_y2;
    a.n_sel = n_sel;
    const int64_t ab = act_block_bytes(type, cols);
    a.act_stride = n_x > 1 ? ab : 0;
    if (blk > 1 && d_x == NULL) { /* cuda_matvec_preq: d_act already holds the quantized x */
        a.act = (const uint8_t *)d_act;
    } else if (blk > 1) {
        ds4_status st = blk == 32 ? cuda_quantize_q8_0_act(d_x, d_act, cols * n_x, err)
                                  : cuda_quantize_q8_K(d_x, d_act, cols * n_x, err);
        if (st != DS4_OK) return st;
        a.act = (const uint8_t *)d_act;
    } else {
        a.act = (const uint8_t *)d_x;
    }
    /* The selected routed experts of IQ2_XXS / Q2_K / Q4_K: matvec_exp.cu (issue #7: wide
     * coalesced loads, bit-identical to the CPU dot); DS4_CUDA_EXP_V1=1 keeps the kernels below. */
    if (d_ids && cuda_mvx_supports(type, cols, n_x))
        return cuda_mvx_launch(type, d_w, d_w2, n_experts, w_stride, d_ids, n_sel, rows, cols, a.act, n_x,
                               d_y, d_y2, err);
    /* Dense types: matvec_dense.cu, bit-identical to the CPU's single-row dot (issue #7).
     * DS4_CUDA_MV_V1=1 (read per call; decode calls happen once, at graph capture): the
     * kernels below, for timing before/after in one run. */
    const char *v1 = getenv("DS4_CUDA_MV_V1");
    if ((type == CU_T_Q8_0 || type == CU_T_F32 || type == CU_T_F16 || type == CU_T_BF16) &&
        !(v1 && atoi(v1) == 1)) {
        const mvd_shape sh = {a.w, a.w2, a.w_stride, a.ids, a.n_experts, a.act, a.act_stride,
                              a.y, a.y2, rows, cols, n_sel};
        return cu_mvd_launch(type, sh, err);
    }
    /* Warps per row: one when the launch has enough rows to fill the device, else 4 or 16,
     * never more than the row has units for (issue #7: few-row products). */
    const int vec = (type == CU_T_F32 || type == CU_T_F16 || type == CU_T_BF16) &&
                    weight_row_bytes(type, cols) % 16 == 0 && ((uintptr_t)d_w & 15) == 0 &&
                    ((uintptr_t)a.act & 15) == 0 && (a.act_stride & 15) == 0 && (a.w_stride & 15) == 0;
    const int64_t units = type == CU_T_Q8_0 ? cols / 32 : blk == 256 ? cols / 32
                          : vec ? weight_row_bytes(type, cols) / 16 : cols;
    /* A pair of float products counts as one matrix: its warps per row, hence its summation
     * order, must be each single product's (cuda_matvec_pair_f == two cuda_matvec, bit for bit;
     * at 256 rows the pair would otherwise take 4 warps per row where one product takes 16). */
    const int64_t total = rows * n_sel * (d_w2 && cuda_act_kind(type) != CUDA_ACT_F32 ? 2 : 1);
    int wpr = total >= 4096 ? 1 : total >= 512 ? 4 : 16;
    while (wpr > 1 && units < 32 * wpr) wpr /= 4;
    switch (wpr) {
    case 16: return mv_dispatch<16>(type, vec, rows, n_sel, a, err);
    case 4: return mv_dispatch<4>(type, vec, rows, n_sel, a, err);
    default: return mv_dispatch<1>(type, vec, rows, n_sel, a, err);
    }
}

static ds4_status matvec_launch(int type, const void *d_w, int64_t n_experts, int64_t w_stride,
                                const int32_t *d_ids, int n_sel, int64_t rows, int64_t cols,
                                const float *d_x, int n_x, void *d_act, float *d_y, ds4_error *err) {
    return matvec_launch2(type, d_w, NULL, n_experts, w_stride, d_ids, n_sel, rows, cols, d_x, n_x,
                          d_act, d_y, NULL, err);
}

extern "C" ds4_status cuda_matvec(int type, const void *d_w, int64_t rows, int64_t cols,
                                  const float *d_x, void *d_act, float *d_y, ds4_error *err) {
    return matvec_launch(type, d_w, 1, 0, NULL, 1, rows, cols, d_x, 1, d_act, d_y, err);
}

extern "C" ds4_status cuda_matvec_experts(int type, const void *d_w, int64_t n_experts,
                                          int64_t rows, int64_t cols, const int32_t *d_ids,
                                          int n_sel, const float *d_x, int per_expert_x,
                                          void *d_act, float *d_y, ds4_error *err) {
    if (n_experts <= 0)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda experts matvec: %lld experts", (long long)n_experts);
    return matvec_launch(type, d_w, n_experts, weight_row_bytes(type, cols) * rows, d_ids, n_sel, rows, cols,
                         d_x, per_expert_x ? n_sel : 1, d_act, d_y, err);
}

extern "C" ds4_status cuda_matvec_time(int type, const void *d_w, int64_t rows, int64_t cols,
                                       const float *d_x, void *d_act, float *d_y, int iters,
                                       float *out_ms, ds4_error *err) {
    cudaEvent_t a, b;
    CU_CHECK(cudaEventCreate(&a), err, "event");
    CU_CHECK(cudaEventCreate(&b), err, "event");
    ds4_status st = cuda_matvec(type, d_w, rows, cols, d_x, d_act, d_y, err); /* warm-up */
    cudaEventRecord(a);
    for (int i = 0; st == DS4_OK && i < iters; i++) st = cuda_matvec(type, d_w, rows, cols, d_x, d_act, d_y, err);
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    cudaEventElapsedTime(out_ms, a, b);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return st;
}

/* ---- Quantize once, use many times (issue #7: fewer launches) ---- */

extern "C" int cuda_act_kind(int type) {
    switch (type) {
    case CU_T_Q2_K: case CU_T_Q4_K: case CU_T_IQ2_XXS: return CUDA_ACT_Q8_K;
    case CU_T_Q8_0: return CUDA_ACT_Q8_0;
    default: return CUDA_ACT_F32;
    }
}

extern "C" ds4_status cuda_quantize_act(int kind, const float *d_x, void *d_q, int64_t n,
                                        ds4_error *err) {
    if (kind == CUDA_ACT_Q8_K) return cuda_quantize_q8_K(d_x, d_q, n, err);
    if (kind == CUDA_ACT_Q8_0) return cuda_quantize_q8_0_act(d_x, d_q, n, err);
    return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_quantize_act: kind %d", kind);
}

extern "C" ds4_status cuda_matvec_preq(int type, const void *d_w, int64_t rows, int64_t cols,
                                       const void *d_act, float *d_y, ds4_error *err) {
    if (cuda_act_kind(type) == CUDA_ACT_F32)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_matvec_preq: type %d takes f32 input", type);
    return matvec_launch(type, d_w, 1, 0, NULL, 1, rows, cols, NULL, 1, (void *)d_act, d_y, err);
}

extern "C" ds4_status cuda_matvec_experts_preq(int type, const void *d_w, int64_t n_experts,
                                               int64_t rows, int64_t cols, const int32_t *d_ids,
                                               int n_sel, const void *d_act, float *d_y,
                                               ds4_error *err) {
    if (n_experts <= 0 || cuda_act_kind(type) == CUDA_ACT_F32)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_matvec_experts_preq: %lld experts of type %d",
                          (long long)n_experts, type);
    return matvec_launch(type, d_w, n_experts, weight_row_bytes(type, cols) * rows, d_ids, n_sel,
                         rows, cols, NULL, 1, (void *)d_act, d_y, err);
}

/* ---- Pairs in one launch (issue #7: gate and up read the same input) ---- */

extern "C" ds4_status cuda_matvec_pair_preq(int type, const void *d_w1, const void *d_w2,
                                            int64_t rows, int64_t cols, const void *d_act,
                                            float *d_y1, float *d_y2, ds4_error *err) {
    if (cuda_act_kind(type) == CUDA_ACT_F32 || !d_w1 || !d_w2)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_matvec_pair_preq: type %d", type);
    return matvec_launch2(type, d_w1, d_w2, 1, 0, NULL, 1, rows, cols, NULL, 1, (void *)d_act, d_y1,
                          d_y2, err);
}

/* Two float products (F32/F16/BF16) of one shape on the same f32 x in one launch (issue #7:
 * the compressor's kv and gate); the kernel is chosen for the pair as for cuda_matvec_pair_preq. */
extern "C" ds4_status cuda_matvec_pair_f(int type, const void *d_w1, const void *d_w2, int64_t rows,
                                         int64_t cols, const float *d_x, float *d_y1, float *d_y2,
                                         ds4_error *err) {
    if (cuda_act_kind(type) != CUDA_ACT_F32 || !d_w1 || !d_w2 || !d_x)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_matvec_pair_f: type %d", type);
    return matvec_launch2(type, d_w1, d_w2, 1, 0, NULL, 1, rows, cols, d_x, 1, NULL, d_y1, d_y2, err);
}

extern "C" ds4_status cuda_matvec_experts_pair_preq(int type, const void *d_w1, const void *d_w2,
                                                    int64_t n_experts, int64_t rows, int64_t cols,
                                                    const int32_t *d_ids, int n_sel,
                                                    const void *d_act, float *d_y1, float *d_y2,
                                                    ds4_error *err) {
    if (n_experts <= 0 || cuda_act_kind(type) == CUDA_ACT_F32 || !d_w1 || !d_w2 || n_sel > 32767)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_matvec_experts_pair_preq: %lld experts of type %d",
                          (long long)n_experts, type);
    return matvec_launch2(type, d_w1, d_w2, n_experts, weight_row_bytes(type, cols) * rows, d_ids, n_sel,
                          rows, cols, NULL, 1, (void *)d_act, d_y1, d_y2, err);
}

/* Per-expert inputs already quantized (cuda_swiglu_quant): selection j reads activation row j. */
extern "C" ds4_status cuda_matvec_experts_preq_x(int type, const void *d_w, int64_t n_experts,
                                                 int64_t rows, int64_t cols, const int32_t *d_ids,
                                                 int n_sel, const void *d_act, float *d_y,
                                                 ds4_error *err) {
    if (n_experts <= 0 || cuda_act_kind(type) == CUDA_ACT_F32)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_matvec_experts_preq_x: %lld experts of type %d",
                          (long long)n_experts, type);
    return matvec_launch2(type, d_w, NULL, n_experts, weight_row_bytes(type, cols) * rows, d_ids, n_sel,
                          rows, cols, NULL, n_sel, (void *)d_act, d_y, NULL, err);
}
