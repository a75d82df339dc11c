/*
 * cuda/matvec.cu — y = W·x for one token (decode), W a GGUF tensor read in place.
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

/* IQ2_XXS tables (GGUF_LAYOUT §4.5): the grid and the sign patterns expanded to byte masks
 * (0xFF = negative), uploaded by cuda_init from the CPU tables. */
__constant__ uint64_t c_iq2_grid[256];
__constant__ uint64_t c_iq2_signmask[128];

extern "C" ds4_status cuda_iq2_tables_upload(const uint64_t grid[256], const uint8_t ksigns[128],
                                             ds4_error *err) {
    uint64_t masks[128];
    for (int s = 0; s < 128; s++) {
        uint64_t m = 0;
        for (int i = 0; i < 8; i++)
            if (ksigns[s] >> i & 1) m |= (uint64_t)0xFF << (8 * i);
        masks[s] = m;
    }
    CU_CHECK(cudaMemcpyToSymbol(c_iq2_grid, grid, sizeof(uint64_t) * 256), err, "iq2 grid upload");
    CU_CHECK(cudaMemcpyToSymbol(c_iq2_signmask, masks, sizeof masks), err, "iq2 sign upload");
    return DS4_OK;
}

__global__ void __launch_bounds__(32 * MV_WARPS)
k_matvec_iq2_xxs(const uint8_t *__restrict__ w, int64_t rows, int64_t cols,
                 const uint8_t *__restrict__ xq, float *__restrict__ y) {
    __shared__ uint64_t grid[256];
    __shared__ uint64_t smask[128];
    for (int i = threadIdx.x; i < 256; i += blockDim.x) grid[i] = c_iq2_grid[i];
    for (int i = threadIdx.x; i < 128; i += blockDim.x) smask[i] = c_iq2_signmask[i];
    __syncthreads();
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * MV_WARPS + (threadIdx.x >> 5);
    if (row >= rows) return;
    const int64_t nb = cols / 256, ng = nb * 8;
    const uint8_t *wr = w + row * nb * CU_IQ2_XXS_BYTES;
    float acc = 0.0f;
    for (int64_t g0 = 0; g0 < ng; g0 += 32) {
        const int64_t g = g0 + lane;
        int part = 0;
        if (g < ng) {
            const int64_t blk = g >> 3;
            const int gi = (int)(g & 7);
            const uint8_t *bp = wr + blk * CU_IQ2_XXS_BYTES + 2 + 8 * gi;
            const uint32_t A = cu_ld_u32_a2(bp), B = cu_ld_u32_a2(bp + 4);
            const int *yq = (const int *)(xq + blk * CU_Q8_K_BYTES + 4 + 32 * gi);
            int s = 0;
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const uint64_t gv = grid[(A >> (8 * k)) & 255];
                const uint64_t m = smask[(B >> (7 * k)) & 127];
                const uint32_t lo = __vsub4((uint32_t)gv ^ (uint32_t)m, (uint32_t)m);
                const uint32_t hi = __vsub4((uint32_t)(gv >> 32) ^ (uint32_t)(m >> 32), (uint32_t)(m >> 32));
                s = __dp4a((int)lo, yq[2 * k], s);
                s = __dp4a((int)hi, yq[2 * k + 1], s);
            }
            part = (2 * (int)(B >> 28) + 1) * s;
        }
        const int bsum = cu_sum8_i(part);
        if ((lane & 7) == 0 && g < ng) {
            const int64_t blk = g >> 3;
            const float t = __fmul_rn(cu_f16(wr + blk * CU_IQ2_XXS_BYTES),
                                      cu_f32_at(xq + blk * CU_Q8_K_BYTES));
            acc = __fadd_rn(acc, __fmul_rn(t, (float)bsum));
        }
    }
    acc = cu_warp_sum(acc);
    if (lane == 0) y[row] = 0.125f * acc;
}

/* Q2_K: lane k of each 8-lane group owns values 32k..32k+31 of a block: qs bytes 32h..32h+31
 * (h = k/4) at bit shift 2(k%4), sub-blocks 2k and 2k+1 (GGUF_LAYOUT §4.3). */
__global__ void __launch_bounds__(32 * MV_WARPS)
k_matvec_q2_K(const uint8_t *__restrict__ w, int64_t rows, int64_t cols,
              const uint8_t *__restrict__ xq, float *__restrict__ y) {
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * MV_WARPS + (threadIdx.x >> 5);
    if (row >= rows) return;
    const int64_t nb = cols / 256, nparts = nb * 8;
    const uint8_t *wr = w + row * nb * CU_Q2_K_BYTES;
    float acc = 0.0f;
    for (int64_t p0 = 0; p0 < nparts; p0 += 32) {
        const int64_t p = p0 + lane;
        int isum = 0, summs = 0;
        if (p < nparts) {
            const int64_t blk = p >> 3;
            const int k = (int)(p & 7), h = k >> 2, sh = 2 * (k & 3);
            const uint8_t *bp = wr + blk * CU_Q2_K_BYTES;
            const uint8_t *yb = xq + blk * CU_Q8_K_BYTES;
            const uint32_t *qs = (const uint32_t *)(bp + 16 + 32 * h);
            const int *yq = (const int *)(yb + 4 + 32 * k);
            const int16_t *bsums = (const int16_t *)(yb + 260);
#pragma unroll
            for (int sub = 0; sub < 2; sub++) {
                const int j = 2 * k + sub;
                const int sc = bp[j] & 15, m = bp[j] >> 4;
                int s = 0;
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const uint32_t codes = (qs[4 * sub + i] >> sh) & 0x03030303u;
                    s = __dp4a((int)codes, yq[4 * sub + i], s);
                }
                isum += sc * s;
                summs += m * bsums[j];
            }
        }
        isum = cu_sum8_i(isum);
        summs = cu_sum8_i(summs);
        if ((lane & 7) == 0 && p < nparts) {
            const int64_t blk = p >> 3;
            const uint8_t *bp = wr + blk * CU_Q2_K_BYTES;
            const float yd = cu_f32_at(xq + blk * CU_Q8_K_BYTES);
            const float dall = __fmul_rn(yd, cu_f16(bp + 80));
            const float dmin = __fmul_rn(yd, cu_f16(bp + 82));
            acc = __fadd_rn(acc, __fsub_rn(__fmul_rn(dall, (float)isum), __fmul_rn(dmin, (float)summs)));
        }
    }
    acc = cu_warp_sum(acc);
    if (lane == 0) y[row] = acc;
}

/* Q4_K: lane k of each 8-lane group owns sub-block k (32 values): nibble (k&1) of qs bytes
 * 32(k/2)..32(k/2)+31; 6-bit scale/min unpacked per GGUF_LAYOUT §4.4. */
__device__ __forceinline__ void cu_q4k_scale_min(const uint8_t *s, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

__global__ void __launch_bounds__(32 * MV_WARPS)
k_matvec_q4_K(const uint8_t *__restrict__ w, int64_t rows, int64_t cols,
              const uint8_t *__restrict__ xq, float *__restrict__ y) {
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * MV_WARPS + (threadIdx.x >> 5);
    if (row >= rows) return;
    const int64_t nb = cols / 256, nparts = nb * 8;
    const uint8_t *wr = w + row * nb * CU_Q4_K_BYTES;
    float acc = 0.0f;
    for (int64_t p0 = 0; p0 < nparts; p0 += 32) {
        const int64_t p = p0 + lane;
        int isum = 0, summs = 0;
        if (p < nparts) {
            const int64_t blk = p >> 3;
            const int k = (int)(p & 7);
            const uint8_t *bp = wr + blk * CU_Q4_K_BYTES;
            const uint8_t *yb = xq + blk * CU_Q8_K_BYTES;
            const uint32_t *qs = (const uint32_t *)(bp + 16 + 32 * (k >> 1));
            const int *yq = (const int *)(yb + 4 + 32 * k);
            const int16_t *bsums = (const int16_t *)(yb + 260);
            const int sh = 4 * (k & 1);
            int sc, m, s = 0;
            cu_q4k_scale_min(bp + 4, k, &sc, &m);
#pragma unroll
            for (int i = 0; i < 8; i++) s = __dp4a((int)((qs[i] >> sh) & 0x0F0F0F0Fu), yq[i], s);
            isum = sc * s;
            summs = m * (bsums[2 * k] + bsums[2 * k + 1]);
        }
        isum = cu_sum8_i(isum);
        summs = cu_sum8_i(summs);
        if ((lane & 7) == 0 && p < nparts) {
            const int64_t blk = p >> 3;
            const uint8_t *bp = wr + blk * CU_Q4_K_BYTES;
            const float yd = cu_f32_at(xq + blk * CU_Q8_K_BYTES);
            acc = __fadd_rn(acc, __fsub_rn(__fmul_rn(__fmul_rn(yd, cu_f16(bp)), (float)isum),
                                           __fmul_rn(__fmul_rn(yd, cu_f16(bp + 2)), (float)summs)));
        }
    }
    acc = cu_warp_sum(acc);
    if (lane == 0) y[row] = acc;
}

/* Q8_0 weights × ds4 Q8_0 activation records: one 32-value block per lane per step. */
__global__ void __launch_bounds__(32 * MV_WARPS)
k_matvec_q8_0(const uint8_t *__restrict__ w, int64_t rows, int64_t cols,
              const uint8_t *__restrict__ xq, float *__restrict__ y) {
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * MV_WARPS + (threadIdx.x >> 5);
    if (row >= rows) return;
    const int64_t nb = cols / 32;
    const uint8_t *wr = w + row * nb * CU_Q8_0_BYTES;
    float acc = 0.0f;
    for (int64_t b = lane; b < nb; b += 32) {
        const uint8_t *bp = wr + b * CU_Q8_0_BYTES;
        const uint8_t *ap = xq + b * CU_Q8_0ACT_BYTES;
        const int *aq = (const int *)(ap + 4);
        int s = 0;
#pragma unroll
        for (int i = 0; i < 8; i++) s = __dp4a((int)cu_ld_u32_a2(bp + 2 + 4 * i), aq[i], s);
        acc = __fadd_rn(acc, __fmul_rn(__fmul_rn(cu_f16(bp), cu_f32_at(ap)), (float)s));
    }
    acc = cu_warp_sum(acc);
    if (lane == 0) y[row] = acc;
}

/* Float weights × f32 activations. */
template <int T>
__device__ __forceinline__ float cu_wval(const uint8_t *wr, int64_t i) {
    if (T == CU_T_F32) return ((const float *)wr)[i];
    if (T == CU_T_F16) return __half2float(__ushort_as_half(((const uint16_t *)wr)[i]));
    return __uint_as_float((uint32_t)((const uint16_t *)wr)[i] << 16); /* BF16 */
}

template <int T>
__global__ void __launch_bounds__(32 * MV_WARPS)
k_matvec_float(const uint8_t *__restrict__ w, int64_t rows, int64_t cols,
               const float *__restrict__ x, float *__restrict__ y) {
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * MV_WARPS + (threadIdx.x >> 5);
    if (row >= rows) return;
    const int esize = T == CU_T_F32 ? 4 : 2;
    const uint8_t *wr = w + row * cols * esize;
    float acc = 0.0f;
    for (int64_t i = lane; i < cols; i += 32) acc = fmaf(cu_wval<T>(wr, i), x[i], acc);
    acc = cu_warp_sum(acc);
    if (lane == 0) y[row] = acc;
}

extern "C" size_t cuda_matvec_scratch_bytes(int type, int64_t cols) {
    switch (type) {
    case CU_T_Q2_K: case CU_T_Q4_K: case CU_T_IQ2_XXS: return (size_t)(cols / 256) * CU_Q8_K_BYTES;
    case CU_T_Q8_0: return (size_t)(cols / 32) * CU_Q8_0ACT_BYTES;
    default: return 0;
    }
}

extern "C" ds4_status cuda_matvec(int type, const void *d_w, int64_t rows, int64_t cols,
                                  const float *d_x, void *d_act, float *d_y, ds4_error *err) {
    if (rows <= 0 || cols <= 0)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda matvec: bad shape %lld x %lld",
                          (long long)rows, (long long)cols);
    const unsigned grid = (unsigned)((rows + MV_WARPS - 1) / MV_WARPS);
    const dim3 block(32 * MV_WARPS);
    const uint8_t *w = (const uint8_t *)d_w;
    uint8_t *act = (uint8_t *)d_act;
    ds4_status st;
    switch (type) {
    case CU_T_IQ2_XXS: case CU_T_Q2_K: case CU_T_Q4_K:
        if (cols % 256) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda matvec: %lld columns is not a multiple of 256", (long long)cols);
        if ((st = cuda_quantize_q8_K(d_x, act, cols, err)) != DS4_OK) return st;
        if (type == CU_T_IQ2_XXS) k_matvec_iq2_xxs<<<grid, block>>>(w, rows, cols, act, d_y);
        else if (type == CU_T_Q2_K) k_matvec_q2_K<<<grid, block>>>(w, rows, cols, act, d_y);
        else k_matvec_q4_K<<<grid, block>>>(w, rows, cols, act, d_y);
        break;
    case CU_T_Q8_0:
        if (cols % 32) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda matvec: %lld columns is not a multiple of 32", (long long)cols);
        if ((st = cuda_quantize_q8_0_act(d_x, act, cols, err)) != DS4_OK) return st;
        k_matvec_q8_0<<<grid, block>>>(w, rows, cols, act, d_y);
        break;
    case CU_T_F32: k_matvec_float<CU_T_F32><<<grid, block>>>(w, rows, cols, d_x, d_y); break;
    case CU_T_F16: k_matvec_float<CU_T_F16><<<grid, block>>>(w, rows, cols, d_x, d_y); break;
    case CU_T_BF16: k_matvec_float<CU_T_BF16><<<grid, block>>>(w, rows, cols, d_x, d_y); break;
    default:
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED, "cuda matvec: tensor type %d is not supported", type);
    }
    CU_CHECK(cudaGetLastError(), err, "matvec launch");
    return DS4_OK;
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
