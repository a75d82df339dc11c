/*
 * cuda/matmul_f32.cu — the prefill product of the float weight types (F32, F16, BF16) with f32
 * activations, bit-identical to cpu_matmul: the CPU dot (format/quant_dot.c q_dot_f32_ref and
 * its AVX2 twin) keeps 8 lanes, lane i%8 adds w·x (product rounded, then sum rounded: no FMA),
 * and combines them as ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)). Each thread here keeps those 8
 * lanes for each (row, token) it owns, walking the columns in order.
 *
 * SIMT: in the model these are small matrices (hyper-connection fns, 24 rows; compressor ape);
 * the tiny-v4 f32 golden model uses them everywhere, hence exactness over speed. Two kernels:
 * k_matmul_float (64 rows x 32 tokens per block, a thread keeps the 8 lanes of 4 x 2 outputs)
 * for many rows; k_matmul_float_lanes (16 x 16 outputs per block, one thread per lane of 2 x 4
 * outputs, lanes combined by shuffles in the CPU's order) for few rows, 8x the threads.
 * Zero padding past the row end adds +0.0f, which leaves a lane unchanged (a lane is never
 * -0.0f: it starts at +0.0f and a sum that is zero in round-to-nearest is +0.0f).
 * Must not: know tensor names or the model.
 */
#include "matmul_impl.cuh"

#define MF_BM 64
#define MF_BN 32
#define MF_BK 64

__device__ __forceinline__ float mf_weight(int type, const uint8_t *row, int64_t i) {
    if (type == CU_T_F32) return ((const float *)row)[i];
    uint16_t h = ((const uint16_t *)row)[i];
    if (type == CU_T_F16) return __half2float(__ushort_as_half(h));
    return __uint_as_float((uint32_t)h << 16); /* BF16 */
}

/* thread (ty, tx) owns rows 4ty .. 4ty+3 and tokens 2tx, 2tx+1 of the tile. */
__global__ void __launch_bounds__(256) k_matmul_float(int type, const uint8_t *w, int64_t rows,
                                                      int64_t cols, uint64_t row_bytes,
                                                      uint64_t e_stride, const int32_t *d_off,
                                                      int n_expert, const float *x, int64_t ldx,
                                                      int64_t n_tok, float *y, int64_t ldy) {
    __shared__ float Ws[MF_BM][MF_BK + 1];
    __shared__ float Xs[MF_BN][MF_BK + 1];
    mm_tile tl;
    if (!mm_find_tile(d_off, n_expert, n_tok, MF_BN, blockIdx.y, &tl)) return;
    const uint8_t *wb = w + (uint64_t)tl.e * e_stride;
    int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    int64_t r0 = (int64_t)blockIdx.x * MF_BM;
    float acc[4][2][8];
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 2; c++)
            for (int l = 0; l < 8; l++) acc[r][c][l] = 0.0f;
    for (int64_t k0 = 0; k0 < cols; k0 += MF_BK) {
        for (int c = tid; c < MF_BM * MF_BK; c += 256) {
            int r = c / MF_BK, k = c % MF_BK;
            Ws[r][k] = r0 + r < rows && k0 + k < cols
                           ? mf_weight(type, wb + (uint64_t)(r0 + r) * row_bytes, k0 + k) : 0.0f;
        }
        for (int c = tid; c < MF_BN * MF_BK; c += 256) {
            int t = c / MF_BK, k = c % MF_BK;
            Xs[t][k] = tl.t0 + t < tl.t1 && k0 + k < cols ? x[(tl.t0 + t) * ldx + k0 + k] : 0.0f;
        }
        __syncthreads();
        /* k0 is a multiple of 8, so column k0 + kk goes to lane kk % 8. */
        for (int k8 = 0; k8 < MF_BK; k8 += 8)
#pragma unroll
            for (int l = 0; l < 8; l++) {
                float x0 = Xs[2 * tx][k8 + l], x1 = Xs[2 * tx + 1][k8 + l];
#pragma unroll
                for (int r = 0; r < 4; r++) {
                    float wv = Ws[4 * ty + r][k8 + l];
                    acc[r][0][l] = __fadd_rn(acc[r][0][l], __fmul_rn(wv, x0));
                    acc[r][1][l] = __fadd_rn(acc[r][1][l], __fmul_rn(wv, x1));
                }
            }
        __syncthreads();
    }
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 2; c++) {
            int64_t o = r0 + 4 * ty + r, t = tl.t0 + 2 * tx + c;
            const float *l = acc[r][c];
            float v = __fadd_rn(__fadd_rn(__fadd_rn(l[0], l[4]), __fadd_rn(l[2], l[6])),
                                __fadd_rn(__fadd_rn(l[1], l[5]), __fadd_rn(l[3], l[7])));
            if (o < rows && t < tl.t1) y[t * ldy + o] = v;
        }
}

#define ML_BM 16
#define ML_BN 16
#define ML_PITCH 68 /* rows 2rg of a warp's four row pairs land 8 banks apart */

/* thread: lane l = tid & 7 of outputs rows 2rg, 2rg+1 (rg = (tid >> 3) & 7) x tokens 4tq ..
 * 4tq+3 (tq = tid >> 6); the 8 lanes of an output sit in 8 adjacent threads. */
__global__ void __launch_bounds__(256) k_matmul_float_lanes(int type, const uint8_t *w, int64_t rows,
                                                            int64_t cols, uint64_t row_bytes,
                                                            uint64_t e_stride, const int32_t *d_off,
                                                            int n_expert, const float *x, int64_t ldx,
                                                            int64_t n_tok, float *y, int64_t ldy) {
    __shared__ float Ws[ML_BM][ML_PITCH];
    __shared__ float Xs[ML_BN][ML_PITCH];
    mm_tile tl;
    if (!mm_find_tile(d_off, n_expert, n_tok, ML_BN, blockIdx.y, &tl)) return;
    const uint8_t *wb = w + (uint64_t)tl.e * e_stride;
    int tid = threadIdx.x, l = tid & 7, rg = (tid >> 3) & 7, tq = tid >> 6;
    int64_t r0 = (int64_t)blockIdx.x * ML_BM;
    float acc[2][4];
    for (int r = 0; r < 2; r++)
        for (int j = 0; j < 4; j++) acc[r][j] = 0.0f;
    for (int64_t k0 = 0; k0 < cols; k0 += 64) {
        for (int c = tid; c < ML_BM * 64; c += 256) {
            int r = c / 64, k = c % 64;
            Ws[r][k] = r0 + r < rows && k0 + k < cols
                           ? mf_weight(type, wb + (uint64_t)(r0 + r) * row_bytes, k0 + k) : 0.0f;
        }
        for (int c = tid; c < ML_BN * 64; c += 256) {
            int t = c / 64, k = c % 64;
            Xs[t][k] = tl.t0 + t < tl.t1 && k0 + k < cols ? x[(tl.t0 + t) * ldx + k0 + k] : 0.0f;
        }
        __syncthreads();
        /* k0 is a multiple of 8: this thread's columns k0 + 8kk + l are its lane's, in order */
#pragma unroll
        for (int kk = 0; kk < 8; kk++) {
            int k = 8 * kk + l;
            float w0 = Ws[2 * rg][k], w1 = Ws[2 * rg + 1][k];
#pragma unroll
            for (int j = 0; j < 4; j++) {
                float xv = Xs[4 * tq + j][k];
                acc[0][j] = __fadd_rn(acc[0][j], __fmul_rn(w0, xv));
                acc[1][j] = __fadd_rn(acc[1][j], __fmul_rn(w1, xv));
            }
        }
        __syncthreads();
    }
    /* ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)): pairs at distance 4, then 2, then 1 */
    for (int r = 0; r < 2; r++)
        for (int j = 0; j < 4; j++) {
            float v = acc[r][j];
            v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, 4));
            v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, 2));
            v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, 1));
            int64_t o = r0 + 2 * rg + r, t = tl.t0 + 4 * tq + j;
            if (l == 0 && o < rows && t < tl.t1) y[t * ldy + o] = v;
        }
}

ds4_status mm_launch_float(const mm_args *a, ds4_error *err) {
    if (a->rows <= 256) {
        int64_t tiles = (a->n_tok + ML_BN - 1) / ML_BN + (a->d_off ? a->n_expert : 0);
        if (tiles > 65535)
            return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_matmul: %lld token tiles (at most 65535)",
                              (long long)tiles);
        dim3 grid((unsigned)((a->rows + ML_BM - 1) / ML_BM), (unsigned)tiles);
        k_matmul_float_lanes<<<grid, 256, 0, cu_stream>>>(a->type, a->w, a->rows, a->cols, a->row_bytes,
                                                          a->expert_stride, a->d_off, a->n_expert, a->x,
                                                          a->ldx, a->n_tok, a->y, a->ldy);
        CU_CHECK(cudaGetLastError(), err, "matmul float launch");
        return DS4_OK;
    }
    int64_t tiles = (a->n_tok + MF_BN - 1) / MF_BN + (a->d_off ? a->n_expert : 0);
    if (tiles > 65535)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_matmul: %lld token tiles (at most 65535)",
                          (long long)tiles);
    dim3 grid((unsigned)((a->rows + MF_BM - 1) / MF_BM), (unsigned)tiles);
    k_matmul_float<<<grid, 256, 0, cu_stream>>>(a->type, a->w, a->rows, a->cols, a->row_bytes,
                                                a->expert_stride, a->d_off, a->n_expert, a->x,
                                                a->ldx, a->n_tok, a->y, a->ldy);
    CU_CHECK(cudaGetLastError(), err, "matmul float launch");
    return DS4_OK;
}
