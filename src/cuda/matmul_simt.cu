/*
 * cuda/matmul_simt.cu — the first prefill matmul (SIMT f32 over dequantized tiles), kept only as
 * the "before" of the benchmark (tests/cuda/test_cuda_layer_matmul.c --bench): tiles of 64
 * weight rows x 32 tokens x 64 columns dequantized to f32 in shared memory and multiplied with
 * f32 FMAs. Its sum order is not the CPU's; cuda_matmul (matmul.cu) is the exact one.
 * Must not: know tensor names or the model.
 */
#include "cuda_api.h"
#include "matmul_impl.cuh"
#include "ops.cuh"

#define MM_BM 64 /* weight rows per block */
#define MM_BN 32 /* tokens per block */
#define MM_BK 64 /* columns per step */

__constant__ uint64_t ms_iq2_grid[256];
__constant__ uint8_t ms_iq2_signs[128];

extern "C" const uint64_t q_iq2xxs_grid[256];
extern "C" const uint8_t q_iq2xxs_signs[128];

__device__ __forceinline__ float mm_f16(const uint8_t *p) {
    return __half2float(__ushort_as_half(*(const uint16_t *)p));
}

/* Values col0 .. col0+7 of a weight row (col0 a multiple of 8; quantized rows hold whole
 * blocks, float rows may end inside the chunk: n_valid). The float steps of format/quant.c. */
__device__ void mm_dec8(int type, const uint8_t *row, int64_t col0, int n_valid, float *y) {
    switch (type) {
    case CU_T_F32:
        for (int l = 0; l < 8; l++) y[l] = l < n_valid ? ((const float *)row)[col0 + l] : 0.0f;
        return;
    case CU_T_F16:
        for (int l = 0; l < 8; l++) y[l] = l < n_valid ? mm_f16(row + 2 * (col0 + l)) : 0.0f;
        return;
    case CU_T_BF16:
        for (int l = 0; l < 8; l++)
            y[l] = l < n_valid ? __uint_as_float((uint32_t)((const uint16_t *)row)[col0 + l] << 16)
                               : 0.0f;
        return;
    case CU_T_Q8_0: {
        const uint8_t *b = row + (col0 / 32) * CU_Q8_0_BYTES;
        float d = mm_f16(b);
        for (int l = 0; l < 8; l++) y[l] = __fmul_rn(d, (float)(int8_t)b[2 + col0 % 32 + l]);
        return;
    }
    case CU_T_Q2_K: {
        const uint8_t *b = row + (col0 / 256) * CU_Q2_K_BYTES, *qs = b + 16;
        float d = mm_f16(b + 80), dmin = mm_f16(b + 82);
        for (int l = 0; l < 8; l++) {
            int e = (int)(col0 % 256) + l;
            int q = (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
            int sc = b[e / 16];
            y[l] = __fsub_rn(__fmul_rn(d, (float)((sc & 15) * q)), __fmul_rn(dmin, (float)(sc >> 4)));
        }
        return;
    }
    case CU_T_Q4_K: {
        const uint8_t *b = row + (col0 / 256) * CU_Q4_K_BYTES, *s = b + 4;
        float d = mm_f16(b), dmin = mm_f16(b + 2);
        int e0 = (int)(col0 % 256), j = e0 / 32, sc, m;
        if (j < 4) { sc = s[j] & 63; m = s[j + 4] & 63; }
        else { sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4); m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4); }
        const uint8_t *q = b + 16 + 32 * (j / 2);
        int shift = (j & 1) ? 4 : 0;
        for (int l = 0; l < 8; l++)
            y[l] = __fsub_rn(__fmul_rn(d, (float)(sc * ((q[e0 % 32 + l] >> shift) & 15))),
                             __fmul_rn(dmin, (float)m));
        return;
    }
    case CU_T_IQ2_XXS: {
        const uint8_t *b = row + (col0 / 256) * CU_IQ2_XXS_BYTES;
        int e0 = (int)(col0 % 256), g = e0 / 32, k = (e0 % 32) / 8;
        float d = mm_f16(b);
        uint32_t A = cu_ld_u32_a2(b + 2 + 8 * g), B = cu_ld_u32_a2(b + 6 + 8 * g);
        float db = __fmul_rn(__fmul_rn(d, __fadd_rn(0.5f, (float)(B >> 28))), 0.25f);
        uint64_t grid = ms_iq2_grid[(A >> (8 * k)) & 255u];
        uint8_t signs = ms_iq2_signs[(B >> (7 * k)) & 127u];
        for (int l = 0; l < 8; l++) {
            float v = __fmul_rn(db, (float)((grid >> (8 * l)) & 255u));
            y[l] = (signs >> l) & 1 ? -v : v;
        }
        return;
    }
    default:
        for (int l = 0; l < 8; l++) y[l] = 0.0f;
    }
}

/* Activation values col0 .. col0+7 of token t: f32, Q8_0 records or Q8_K blocks (d·q). */
__device__ __forceinline__ void mm_act8(int kind, const uint8_t *act, size_t stride,
                                        int64_t ldx, int64_t t, int64_t col0, int n_valid,
                                        float *x) {
    if (kind == 0) {
        const float *r = (const float *)act + t * ldx;
        for (int l = 0; l < 8; l++) x[l] = l < n_valid ? r[col0 + l] : 0.0f;
    } else if (kind == 1) {
        const uint8_t *b = act + t * stride + (col0 / 32) * CU_Q8_0ACT_BYTES;
        float d = *(const float *)b;
        for (int l = 0; l < 8; l++) x[l] = __fmul_rn(d, (float)(int8_t)b[4 + col0 % 32 + l]);
    } else {
        const uint8_t *b = act + t * stride + (col0 / 256) * CU_Q8_K_BYTES;
        float d = *(const float *)b;
        for (int l = 0; l < 8; l++) x[l] = __fmul_rn(d, (float)(int8_t)b[4 + col0 % 256 + l]);
    }
}

/* grid (ceil(rows/64), ceil(n_tok/32)), 256 threads; thread (ty, tx) owns rows 4ty..4ty+3 and
 * tokens 2tx, 2tx+1 of the tile. */
__global__ void __launch_bounds__(256) k_matmul(int type, const uint8_t *w, int64_t rows,
                                                int64_t cols, uint64_t row_bytes, int kind,
                                                const uint8_t *act, size_t act_stride,
                                                int64_t ldx, int64_t n_tok, float *y,
                                                int64_t ldy) {
    cu_pdl_wait();
    __shared__ float Ws[MM_BM][MM_BK + 1];
    __shared__ float Xs[MM_BN][MM_BK + 1];
    int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    int64_t r0 = (int64_t)blockIdx.x * MM_BM, t0 = (int64_t)blockIdx.y * MM_BN;
    float acc[4][2] = {{0}};
    for (int64_t k0 = 0; k0 < cols; k0 += MM_BK) {
        for (int c = tid; c < MM_BM * (MM_BK / 8); c += blockDim.x) {
            int r = c / (MM_BK / 8), kc = c % (MM_BK / 8);
            int64_t col0 = k0 + 8 * kc, nv = cols - col0;
            float v[8];
            if (r0 + r < rows && nv > 0) mm_dec8(type, w + (uint64_t)(r0 + r) * row_bytes, col0, nv > 8 ? 8 : (int)nv, v);
            else for (int l = 0; l < 8; l++) v[l] = 0.0f;
            for (int l = 0; l < 8; l++) Ws[r][8 * kc + l] = v[l];
        }
        for (int c = tid; c < MM_BN * (MM_BK / 8); c += blockDim.x) {
            int t = c / (MM_BK / 8), kc = c % (MM_BK / 8);
            int64_t col0 = k0 + 8 * kc, nv = cols - col0;
            float v[8];
            if (t0 + t < n_tok && nv > 0) mm_act8(kind, act, act_stride, ldx, t0 + t, col0, nv > 8 ? 8 : (int)nv, v);
            else for (int l = 0; l < 8; l++) v[l] = 0.0f;
            for (int l = 0; l < 8; l++) Xs[t][8 * kc + l] = v[l];
        }
        __syncthreads();
#pragma unroll 8
        for (int kk = 0; kk < MM_BK; kk++) {
            float x0 = Xs[2 * tx][kk], x1 = Xs[2 * tx + 1][kk];
#pragma unroll
            for (int r = 0; r < 4; r++) {
                float wv = Ws[4 * ty + r][kk];
                acc[r][0] = fmaf(wv, x0, acc[r][0]);
                acc[r][1] = fmaf(wv, x1, acc[r][1]);
            }
        }
        __syncthreads();
    }
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 2; c++) {
            int64_t o = r0 + 4 * ty + r, t = t0 + 2 * tx + c;
            if (o < rows && t < n_tok) y[t * ldy + o] = acc[r][c];
        }
}

static int g_ms_tables; /* IQ2_XXS tables uploaded to this file's constant memory */

extern "C" ds4_status cuda_matmul_simt(int type, const void *d_w, int64_t rows, int64_t cols,
                                       const float *d_x, int64_t ldx, int64_t n_tok, void *d_act,
                                       float *d_y, int64_t ldy, ds4_error *err) {
    if (n_tok <= 0 || rows <= 0) return DS4_OK;
    uint64_t row_bytes = 0;
    ds4_status st = mm_check(type, rows, cols, ldx, ldy, &row_bytes, err);
    if (st) return st;
    if (n_tok > 65535 * (int64_t)MM_BN)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_matmul_simt: %lld tokens", (long long)n_tok);
    if (type == CU_T_IQ2_XXS && !g_ms_tables) {
        CU_CHECK(cudaMemcpyToSymbol(ms_iq2_grid, q_iq2xxs_grid, sizeof ms_iq2_grid), err, "iq2 grid");
        CU_CHECK(cudaMemcpyToSymbol(ms_iq2_signs, q_iq2xxs_signs, sizeof ms_iq2_signs), err, "iq2 signs");
        g_ms_tables = 1;
    }
    size_t stride = 0;
    if ((st = mm_quantize(type, d_x, ldx, n_tok, cols, d_act, &stride, err))) return st;
    int kind = cuda_act_kind(type);
    const uint8_t *act = kind ? (const uint8_t *)d_act : (const uint8_t *)d_x;
    dim3 grid((unsigned)((rows + MM_BM - 1) / MM_BM), (unsigned)((n_tok + MM_BN - 1) / MM_BN));
    cu_launch(k_matmul, grid, 256, 0, type, (const uint8_t *)d_w, rows, cols, row_bytes, kind, act, stride,
                            ldx, n_tok, d_y, ldy);
    CU_LAUNCH_CHECK(err, "matmul launch");
    return DS4_OK;
}
