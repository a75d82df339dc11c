/*
 * cpu/matmul.h — matrix x activations for every weight type the converter writes (F32, F16,
 * BF16, Q8_0, Q2_K, Q4_K, IQ2_XXS), row-parallel on the persistent pool.
 *
 * Quantized weights dot a quantized activation (Q8_0 weights: ds4's Q8_0 activation record;
 * K-quants and IQ2_XXS: Q8_K), F32/F16/BF16 weights dot the f32 activation, all through the
 * format library's kernels (format/quant.h). Prefill hands a weight row and up to 64 tokens to
 * q_dot_rows (each block decoded once for several tokens), which equals the single-row kernel
 * per (row, token) bit for bit, so results do not depend on the batch size or thread count.
 *
 * Exact-activation mode (cpu_buf.exact_act, a checking mode, issue #3): a quantized weight row
 * is decoded to f32 (q_decode_row, per worker) and dotted with the f32 activation by the F32
 * kernel, which is bit-for-bit the product the same model gives after its weights were
 * dequantized to F32 in the file. Slower (a decode per row per call); for verification.
 *
 * Owns: the loop structure (each weight row read once per batch) and activation scratch.
 * Must not: know tensor names or the model.
 */
#ifndef DS4_CPU_MATMUL_H
#define DS4_CPU_MATMUL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/threadpool.h"
#include "ds4.h"

/* A 2-D weight view: n_out rows of n_in elements of `type`, row r at data + r*row_bytes. */
typedef struct cpu_mat {
    const char *name;      /* for error messages */
    int type;
    int64_t n_in, n_out;
    uint64_t row_bytes;
    const uint8_t *data;
} cpu_mat;

/* Growable scratch owned by the caller (one per evaluating thread of control). */
typedef struct cpu_buf {
    void *p;
    size_t cap;
    /* As cpu_matmul's `act`: true = exact-activation mode (header comment). Kept by
     * cpu_buf_reserve/cpu_buf_free; zero-initialised = ds4's quantized activations. */
    bool exact_act;
} cpu_buf;

ds4_status cpu_buf_reserve(cpu_buf *b, size_t n_bytes, ds4_error *err);
void cpu_buf_free(cpu_buf *b);

/* Rows [r0, r0+n) of w as a view. */
cpu_mat cpu_mat_rows(const cpu_mat *w, int64_t r0, int64_t n);

/* y[t*ldy + o] = Σ_i W[o][i]·x[t*ldx + i] for t < n_tok, o < n_out. `act` is scratch for
 * the quantized activations and selects the mode (exact_act). Scratch needed: n_tok rows of
 * the activation record, plus in exact mode ds4_pool_size(pool) f32 rows of n_in. */
ds4_status cpu_matmul(ds4_pool *pool, const cpu_mat *w, const float *x, int64_t ldx,
                      int64_t n_tok, float *y, int64_t ldy, cpu_buf *act, ds4_error *err);

/* Decodes row r of w to f32 (embedding lookup). */
ds4_status cpu_mat_row_f32(const cpu_mat *w, int64_t r, float *dst, ds4_error *err);

#endif
