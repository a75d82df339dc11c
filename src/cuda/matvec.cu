/*
 * cuda/matvec.cu — y = W·x for one token (decode), W a GGUF tensor read in place, alone or
 * as the selected routed experts of a token in one grouped launch.
 *
 * One warp per output row. Quantized types work on quantized activations exactly like the
 * CPU reference (quants README §4.2): the integer sums of a 256-value block are exact in any
 * order, and the few float steps per block use __f*_rn intrinsics so nvcc cannot contract
 * them into FMAs — each block's contribution is bit-identical to the CPU's; only the order of
 * the final sum over blocks differs (warp lanes hold interleaved partial sums).
 */
#include "common.cuh"
#include "cuda_api.h"

#define MV_WARPS 4

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
};

struct mv_ptrs {
    const uint8_t *w; /* this row's weights */
    const uint8_t *act;
    float *y;         /* this row's output */
};

__device__ __forceinline__ bool mv_select(const mv_args &a, mv_ptrs *p, int64_t row_bytes) {
    const int64_t row = (int64_t)blockIdx.x * MV_WARPS + (threadIdx.x >> 5);
    if (row >= a.rows) return false;
    const int j = blockIdx.y;
    const int64_t e = a.ids ? a.ids[j] : 0;
    if (e < 0 || e >= a.n_experts) { /* a corrupt router id must not read past the tensor */
        if ((threadIdx.x & 31) == 0) a.y[j * a.rows + row] = __int_as_float(0x7fc00000);
        return false;
    }
    p->w = a.w + e * a.w_stride + row * row_bytes;
    p->act = a.act + j * a.act_stride;
    p->y = a.y + j * a.rows + row;
    return true;
}

/* IQ2_XXS grid (GGUF_LAYOUT §4.5.1), uploaded by cuda_init from the CPU table. */
__constant__ uint64_t c_iq2_grid[256];

extern "C" ds4_status cuda_iq2_tables_upload(const uint64_t grid[256], const uint8_t ksigns[128],
                                             ds4_error *err) {
    (void)ksigns; /* the sign table is computed (parity rule, §4.5.2); checked by the tests */
    CU_CHECK(cudaMemcpyToSymbol(c_iq2_grid, grid, sizeof(uint64_t) * 256), err, "iq2 grid upload");
    return DS4_OK;
}

/* Sign masks of a 7-bit IQ2 sign index: bit 7 = parity (KSIGNS, GGUF_LAYOUT §4.5.2); each bit
 * becomes a byte 0xFF (negative) or 0x00; lo = values 0..3, hi = values 4..7. */
__device__ __forceinline__ void iq2_sign_masks(uint32_t s7, uint32_t *lo, uint32_t *hi) {
    const uint32_t s8 = s7 | ((__popc(s7) & 1u) << 7);
    *lo = (((s8 & 0x0Fu) * 0x00204081u) & 0x01010101u) * 0xFFu;
    *hi = (((s8 >> 4) * 0x00204081u) & 0x01010101u) * 0xFFu;
}

/* IQ2_XXS: lane owns one 32-value group per step; the 8 groups of a block sit in 8 adjacent
 * lanes, whose integer sums combine exactly (cu_sum8_i) into the block sum. */
__global__ void __launch_bounds__(32 * MV_WARPS) k_matvec_iq2_xxs(mv_args a) {
    __shared__ uint64_t grid[256];
    for (int i = threadIdx.x; i < 256; i += blockDim.x) grid[i] = c_iq2_grid[i];
    __syncthreads();
    const int lane = threadIdx.x & 31;
    const int64_t nb = a.cols / 256, ng = nb * 8;
    mv_ptrs p;
    if (!mv_select(a, &p, nb * CU_IQ2_XXS_BYTES)) return;
    float acc = 0.0f;
    for (int64_t g0 = 0; g0 < ng; g0 += 32) {
        const int64_t g = g0 + lane;
        int part = 0;
        if (g < ng) {
            const int64_t blk = g >> 3;
            const int gi = (int)(g & 7);
            const uint8_t *bp = p.w + blk * CU_IQ2_XXS_BYTES + 2 + 8 * gi;
            const uint32_t A = cu_ld_u32_a2(bp), B = cu_ld_u32_a2(bp + 4);
            const int *yq = (const int *)(p.act + blk * CU_Q8_K_BYTES + 4 + 32 * gi);
            int s = 0;
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const uint64_t gv = grid[(A >> (8 * k)) & 255];
                uint32_t mlo, mhi;
                iq2_sign_masks((B >> (7 * k)) & 127u, &mlo, &mhi);
                const uint32_t lo = __vsub4((uint32_t)gv ^ mlo, mlo);
                const uint32_t hi = __vsub4((uint32_t)(gv >> 32) ^ mhi, mhi);
                s = __dp4a((int)lo, yq[2 * k], s);
                s = __dp4a((int)hi, yq[2 * k + 1], s);
            }
            part = (2 * (int)(B >> 28) + 1) * s;
        }
        const int bsum = cu_sum8_i(part);
        if ((lane & 7) == 0 && g < ng) {
            const int64_t blk = g >> 3;
            const float t = __fmul_rn(cu_f16(p.w + blk * CU_IQ2_XXS_BYTES),
                                      cu_f32_at(p.act + blk * CU_Q8_K_BYTES));
            acc = __fadd_rn(acc, __fmul_rn(t, (float)bsum));
        }
    }
    acc = cu_warp_sum(acc);
    if (lane == 0) *p.y = 0.125f * acc;
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

/* Q2_K / Q4_K × Q8_K: per block acc += (yd·d)·isum − (yd·dmin)·summs (quants README §4.2). */
template <class L>
__global__ void __launch_bounds__(32 * MV_WARPS) k_matvec_kquant(mv_args a) {
    const int lane = threadIdx.x & 31;
    const int64_t nb = a.cols / 256, nparts = nb * 8;
    mv_ptrs p;
    if (!mv_select(a, &p, nb * L::bytes)) return;
    float acc = 0.0f;
    for (int64_t p0 = 0; p0 < nparts; p0 += 32) {
        const int64_t q = p0 + lane;
        int isum = 0, summs = 0;
        if (q < nparts) {
            const int64_t blk = q >> 3;
            const int k = (int)(q & 7);
            const uint8_t *yb = p.act + blk * CU_Q8_K_BYTES;
            L::part(p.w + blk * L::bytes, (const int *)(yb + 4 + 32 * k),
                    (const int16_t *)(yb + 260), k, &isum, &summs);
        }
        isum = cu_sum8_i(isum);
        summs = cu_sum8_i(summs);
        if ((lane & 7) == 0 && q < nparts) {
            const int64_t blk = q >> 3;
            const uint8_t *bp = p.w + blk * L::bytes;
            const float yd = cu_f32_at(p.act + blk * CU_Q8_K_BYTES);
            const float dall = __fmul_rn(yd, cu_f16(bp + L::d_off));
            const float dmin = __fmul_rn(yd, cu_f16(bp + L::dmin_off));
            acc = __fadd_rn(acc, __fsub_rn(__fmul_rn(dall, (float)isum), __fmul_rn(dmin, (float)summs)));
        }
    }
    acc = cu_warp_sum(acc);
    if (lane == 0) *p.y = acc;
}

/* Q8_0 weights × ds4 Q8_0 activation records: one 32-value block per lane per step. */
__global__ void __launch_bounds__(32 * MV_WARPS) k_matvec_q8_0(mv_args a) {
    const int lane = threadIdx.x & 31;
    const int64_t nb = a.cols / 32;
    mv_ptrs p;
    if (!mv_select(a, &p, nb * CU_Q8_0_BYTES)) return;
    float acc = 0.0f;
    for (int64_t b = lane; b < nb; b += 32) {
        const uint8_t *bp = p.w + b * CU_Q8_0_BYTES;
        const uint8_t *ap = p.act + b * CU_Q8_0ACT_BYTES;
        const int *aq = (const int *)(ap + 4);
        int s = 0;
#pragma unroll
        for (int i = 0; i < 8; i++) s = __dp4a((int)cu_ld_u32_a2(bp + 2 + 4 * i), aq[i], s);
        acc = __fadd_rn(acc, __fmul_rn(__fmul_rn(cu_f16(bp), cu_f32_at(ap)), (float)s));
    }
    acc = cu_warp_sum(acc);
    if (lane == 0) *p.y = acc;
}

/* Float weights × f32 activations. */
template <int T>
__device__ __forceinline__ float cu_wval(const uint8_t *wr, int64_t i) {
    if (T == CU_T_F32) return ((const float *)wr)[i];
    if (T == CU_T_F16) return __half2float(__ushort_as_half(((const uint16_t *)wr)[i]));
    return __uint_as_float((uint32_t)((const uint16_t *)wr)[i] << 16); /* BF16 */
}

template <int T>
__global__ void __launch_bounds__(32 * MV_WARPS) k_matvec_float(mv_args a) {
    const int lane = threadIdx.x & 31;
    mv_ptrs p;
    if (!mv_select(a, &p, a.cols * (T == CU_T_F32 ? 4 : 2))) return;
    const float *x = (const float *)p.act;
    float acc = 0.0f;
    for (int64_t i = lane; i < a.cols; i += 32) acc = fmaf(cu_wval<T>(p.w, i), x[i], acc);
    acc = cu_warp_sum(acc);
    if (lane == 0) *p.y = acc;
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

/* Quantizes n_x activation rows (if the type needs it) and launches the grouped kernel. */
static ds4_status matvec_launch(int type, const void *d_w, int64_t n_experts, int64_t w_stride,
                                const int32_t *d_ids,
                                int n_sel, int64_t rows, int64_t cols, const float *d_x,
                                int n_x, void *d_act, float *d_y, ds4_error *err) {
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
    const dim3 grid((unsigned)((rows + MV_WARPS - 1) / MV_WARPS), (unsigned)n_sel);
    const dim3 block(32 * MV_WARPS);
    switch (type) {
    case CU_T_IQ2_XXS: k_matvec_iq2_xxs<<<grid, block, 0, cu_stream>>>(a); break;
    case CU_T_Q2_K: k_matvec_kquant<q2k_layout><<<grid, block, 0, cu_stream>>>(a); break;
    case CU_T_Q4_K: k_matvec_kquant<q4k_layout><<<grid, block, 0, cu_stream>>>(a); break;
    case CU_T_Q8_0: k_matvec_q8_0<<<grid, block, 0, cu_stream>>>(a); break;
    case CU_T_F32: k_matvec_float<CU_T_F32><<<grid, block, 0, cu_stream>>>(a); break;
    case CU_T_F16: k_matvec_float<CU_T_F16><<<grid, block, 0, cu_stream>>>(a); break;
    case CU_T_BF16: k_matvec_float<CU_T_BF16><<<grid, block, 0, cu_stream>>>(a); break;
    default:
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED, "cuda matvec: tensor type %d is not supported", type);
    }
    CU_CHECK(cudaGetLastError(), err, "matvec launch");
    return DS4_OK;
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
