/*
 * cuda/matmul.cu — weight matrix x several tokens (prefill), the CUDA counterpart of
 * cpu/matmul.c cpu_matmul: y[t*ldy + o] = Σ_i W[o][i]·x[t*ldx + i] for every GGUF weight type
 * the converter writes (F32, F16, BF16, Q8_0, Q2_K, Q4_K, IQ2_XXS), read in place, bit-identical
 * to the CPU; and the routed experts of a chunk in one grouped launch (cuda_matmul_experts).
 *
 * Like the CPU, activations are first quantized per x row (Q8_K for K-quants and IQ2_XXS, ds4's
 * Q8_0 record for Q8_0, plain f32 otherwise) with the bit-exact quantizers of quantize.cu, so
 * both backends multiply the same numbers; the kernels then sum in the CPU's order:
 * matmul_mma.cu (int8 tensor cores, quantized types), matmul_f32.cu (float types).
 * This file: argument checks, quantization, dispatch.
 * Must not: know tensor names or the model.
 */
#include "cuda_api.h"
#include "matmul_impl.cuh"

ds4_status mm_check(int type, int64_t rows, int64_t cols, int64_t ldx, int64_t ldy,
                    uint64_t *out, ds4_error *err) {
    int64_t blk = 1, bytes = 0;
    switch (type) {
    case CU_T_F32: bytes = 4; break;
    case CU_T_F16: case CU_T_BF16: bytes = 2; break;
    case CU_T_Q8_0: blk = 32; bytes = CU_Q8_0_BYTES; break;
    case CU_T_Q2_K: blk = 256; bytes = CU_Q2_K_BYTES; break;
    case CU_T_Q4_K: blk = 256; bytes = CU_Q4_K_BYTES; break;
    case CU_T_IQ2_XXS: blk = 256; bytes = CU_IQ2_XXS_BYTES; break;
    default:
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED, "cuda_matmul: no kernel for ggml type %d", type);
    }
    if (cols <= 0 || cols % blk)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                          "cuda_matmul: %lld columns is not a multiple of the type's block of %lld",
                          (long long)cols, (long long)blk);
    if (ldx < cols || ldy < rows || rows > 2147483647ll)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                          "cuda_matmul: ldx %lld < %lld columns, ldy %lld < %lld rows, or too many rows",
                          (long long)ldx, (long long)cols, (long long)ldy, (long long)rows);
    *out = (uint64_t)(cols / blk) * (uint64_t)bytes;
    return DS4_OK;
}

ds4_status mm_quantize(int type, const float *d_x, int64_t ldx, int64_t n, int64_t cols,
                       void *d_act, size_t *stride, ds4_error *err) {
    int kind = cuda_act_kind(type);
    *stride = 0;
    if (kind == CUDA_ACT_F32) return DS4_OK;
    *stride = cuda_matvec_scratch_bytes(type, cols);
    /* Rows are quantized independently (blocks never straddle rows), so a dense x is one call. */
    int64_t step = ldx == cols ? n : 1;
    for (int64_t t = 0; t < n; t += step) {
        ds4_status st = cuda_quantize_act(kind, d_x + t * ldx, (uint8_t *)d_act + (size_t)t * *stride,
                                          step * cols, err);
        if (st) return ds4_err_prefix(err, "cuda_matmul");
    }
    return DS4_OK;
}

extern "C" size_t cuda_matmul_scratch_bytes(int type, int64_t cols, int64_t n_tok) {
    size_t rec = (size_t)(n_tok > 0 ? n_tok : 0) * cuda_matvec_scratch_bytes(type, cols);
    return rec ? rec + MM_PLANES_SLACK : 0; /* the planes hold the records' bytes, aligned */
}

static ds4_status mm_run(mm_args *a, ds4_error *err) {
    int kind = cuda_act_kind(a->type);
    if (kind == CUDA_ACT_F32) return mm_launch_float(a, err);
    a->planes = mm_planes_of((void *)a->act, kind, a->n_tok, a->cols);
    ds4_status st = mm_quantize_planes(kind, a->x, a->ldx, a->n_tok, a->cols, &a->planes, err);
    if (st) return ds4_err_prefix(err, "cuda_matmul");
    return mm_launch_mma(a, err);
}

/* The arguments both entry points share, checked (mm_check) and filled into a. */
static ds4_status mm_args_of(mm_args *a, int type, const void *d_w, int64_t rows, int64_t cols,
                             const float *d_x, int64_t ldx, int64_t n_tok, void *d_act,
                             float *d_y, int64_t ldy, ds4_error *err) {
    *a = mm_args{};
    ds4_status st = mm_check(type, rows, cols, ldx, ldy, &a->row_bytes, err);
    if (st) return st;
    a->type = type;
    a->w = (const uint8_t *)d_w;
    a->rows = rows;
    a->cols = cols;
    a->act = (const uint8_t *)d_act;
    a->x = d_x;
    a->ldx = ldx;
    a->n_tok = n_tok;
    a->y = d_y;
    a->ldy = ldy;
    return DS4_OK;
}

extern "C" ds4_status cuda_matmul(int type, const void *d_w, int64_t rows, int64_t cols,
                                  const float *d_x, int64_t ldx, int64_t n_tok, void *d_act,
                                  float *d_y, int64_t ldy, ds4_error *err) {
    if (n_tok <= 0 || rows <= 0) return DS4_OK;
    mm_args a;
    ds4_status st = mm_args_of(&a, type, d_w, rows, cols, d_x, ldx, n_tok, d_act, d_y, ldy, err);
    if (st) return st;
    return mm_run(&a, err);
}

extern "C" ds4_status cuda_matmul_experts(int type, const void *d_w, int64_t n_expert,
                                          int64_t rows, int64_t cols, uint64_t expert_stride_bytes,
                                          const int32_t *d_off, const float *d_x, int64_t ldx,
                                          int64_t n_rows_total, void *d_act, float *d_y,
                                          int64_t ldy, ds4_error *err) {
    if (n_rows_total <= 0 || rows <= 0 || n_expert <= 0) return DS4_OK;
    mm_args a;
    ds4_status st = mm_args_of(&a, type, d_w, rows, cols, d_x, ldx, n_rows_total, d_act, d_y, ldy,
                               err);
    if (st) return st;
    if (n_expert > 65535 || expert_stride_bytes < a.row_bytes * (uint64_t)rows)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                          "cuda_matmul_experts: %lld experts, or an expert stride of %llu bytes "
                          "below the %llu of one expert", (long long)n_expert,
                          (unsigned long long)expert_stride_bytes,
                          (unsigned long long)(a.row_bytes * (uint64_t)rows));
    a.expert_stride = expert_stride_bytes;
    a.d_off = d_off;
    a.n_expert = (int)n_expert;
    return mm_run(&a, err);
}
