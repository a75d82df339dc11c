/*
 * format/quant.h — the GGUF block formats ds4 uses (GGUF_LAYOUT §4): geometry, decoding to
 * f32, encoding from f32 (the converter's quantizers, GGUF_LAYOUT §5.6), the two activation
 * quantizers (Q8_K, ds4's Q8_0 activation record) and the dot products of one weight row with
 * one quantized activation row, in the exact evaluation order of quants README §4.2.
 *
 * Owns: per-type block math, its scalar reference and the AVX2 path (quant_avx2.c, picked at
 * runtime and bit-equal to the scalar one). Must not: know tensor names, shapes, files or
 * threads; allocate per call on the hot path (dots and activation quantizers never allocate).
 *
 * Type ids are the ggml ids of format/types.h (ds4_type), passed as int.
 *
 * Rows: `n` is always a count of elements along the row; it must be a multiple of the
 * type's block size (checked by every function that returns a status). A row of type T
 * occupies n / q_block_elems(T) * q_block_bytes(T) bytes.
 */
#ifndef DS4_FORMAT_QUANT_H
#define DS4_FORMAT_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ds4.h"
#include "format/types.h"

/* Short aliases of the format/types.h ids this module handles (not a separate enum). */
enum {
    Q_TYPE_F32 = DS4_TYPE_F32, Q_TYPE_F16 = DS4_TYPE_F16, Q_TYPE_Q8_0 = DS4_TYPE_Q8_0,
    Q_TYPE_Q2_K = DS4_TYPE_Q2_K, Q_TYPE_Q4_K = DS4_TYPE_Q4_K, Q_TYPE_Q8_K = DS4_TYPE_Q8_K,
    Q_TYPE_IQ2_XXS = DS4_TYPE_IQ2_XXS, Q_TYPE_BF16 = DS4_TYPE_BF16
};

#define Q_QK8_0 32   /* elements per Q8_0 block and per Q8_0 activation record */
#define Q_QK_K 256   /* elements per K-quant / IQ2_XXS / Q8_K super-block */

/* Q8_K activation block (GGUF_LAYOUT §4.6), 292 bytes, identical to the file layout. */
typedef struct q8k_block {
    float d;               /* value = d·q */
    int8_t q[Q_QK_K];
    int16_t bsums[16];     /* bsums[j] = Σ q[16j .. 16j+15] */
} q8k_block;

/* ds4's runtime Q8_0 activation record (quants README §4.4), 36 bytes: f32 scale, not f16. */
typedef struct q8act_block {
    float d;
    int8_t q[Q_QK8_0];
} q8act_block;

_Static_assert(sizeof(q8k_block) == 292, "Q8_K block is 292 bytes (GGUF_LAYOUT §4.6)");
_Static_assert(sizeof(q8act_block) == 36, "Q8_0 activation record is 36 bytes (README §4.4)");

/* ---- Geometry ---------------------------------------------------------------------------- */

/* Elements per block / bytes per block of a type handled here; 0 for any other id.
 * Q8_K is included (activation only, never stored). */
size_t q_block_elems(int type);
size_t q_block_bytes(int type);

/* Static name ("Q2_K", ...) or "unknown". */
const char *q_type_name(int type);

/* True for types with a decoder and encoder here: F32 F16 BF16 Q8_0 Q2_K Q4_K IQ2_XXS. */
bool q_type_is_weight(int type);

/* Bytes of a row of n elements; fails (DS4_ERR_FORMAT) if n is not a multiple of the block
 * size, the type is unknown (DS4_ERR_UNSUPPORTED) or the size overflows. */
ds4_status q_row_bytes(int type, uint64_t n, uint64_t *out_bytes, ds4_error *err);

/* ---- Decode / encode (weights) ----------------------------------------------------------- */

/* Dequantizes one row of n elements of `type` (F32, F16, BF16, Q8_0, Q2_K, Q4_K, IQ2_XXS) to
 * dst[n]. Bit-exact with ds4 (quants README §3). */
ds4_status q_decode_row(int type, const void *src, float *dst, uint64_t n, ds4_error *err);

/* Quantizes one row of n f32 values into dst (q_row_bytes(type, n) bytes), reproducing ds4's
 * converter (GGUF_LAYOUT §5.6). `importance` is NULL or n per-column weights (an imatrix
 * slice, all >= 0 and finite):
 *  - Q2_K, Q4_K: NULL -> the unweighted reference encoder; non-NULL -> the weighted encoder;
 *  - IQ2_XXS: always weighted; NULL means all weights 1.0 (the converter itself passes the
 *    synthetic fallback of q_importance_fallback() when it has no imatrix, §5.5);
 *  - Q8_0, F16, BF16, F32: importance ignored.
 * Rows should be finite (inf/NaN give in-range but meaningless codes). The IQ2_XXS encoder
 * builds its search tables (~5 MB, ~0.1 s) once, on first use, thread-safely; if that fails
 * every IQ2_XXS encode returns DS4_ERR_NOMEM. Safe to call from several threads at once. */
ds4_status q_encode_row(int type, const float *src, void *dst, uint64_t n,
                        const float *importance, ds4_error *err);

/* Synthetic importance for a matrix without an imatrix entry (GGUF_LAYOUT §5.5):
 * imp[c] = Σ_r rows[r·n_cols + c]², summed in f32 from 0 in row order. */
void q_importance_fallback(const float *rows, uint64_t n_rows, uint64_t n_cols, float *imp);

/* ---- Activation quantizers --------------------------------------------------------------- */

/* x[n] -> n/256 Q8_K blocks (ds4_quantize_row_q8_K, quants README §5.1). */
ds4_status q_quantize_q8k(const float *x, q8k_block *y, uint64_t n, ds4_error *err);

/* x[n] -> n/32 ds4 Q8_0 activation records (quantize_q8_0_activation, README §4.4). */
ds4_status q_quantize_q8act(const float *x, q8act_block *y, uint64_t n, ds4_error *err);

/* ---- Dot products ------------------------------------------------------------------------ */

/* What a weight type is dotted with. */
typedef enum q_act_kind {
    Q_ACT_NONE = 0,   /* not a weight type */
    Q_ACT_F32,        /* F32, F16, BF16 rows: plain f32 vector */
    Q_ACT_Q8_0,       /* Q8_0 rows: q8act_block records */
    Q_ACT_Q8_K        /* Q2_K, Q4_K, IQ2_XXS rows: q8k_block blocks */
} q_act_kind;

q_act_kind q_act_kind_for(int type);

/* Dot of one weight row (n elements of `type`) with one activation row of the matching kind
 * (float[n], q8act_block[n/32] or q8k_block[n/256]). Bit-exact with ds4 for the quantized
 * types (README §4.2: per-block f32 values accumulated in block order from +0.0f).
 * F32/F16/BF16 use this library's fixed order: 8 interleaved partial sums (lane = i mod 8,
 * acc += w·x without FMA), combined as ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)). */
ds4_status q_dot_row(int type, const void *w, const void *act, uint64_t n, float *out,
                     ds4_error *err);

/* Unchecked kernel for hot loops: same result as q_dot_row; the caller guarantees n is a
 * multiple of the block size and the pointers cover the row. */
typedef float (*q_dot_fn)(const void *w, const void *act, uint64_t n);

/* The kernel for `type` under the current SIMD setting; NULL if not a weight type. Fetch it
 * again after q_set_simd(). */
q_dot_fn q_dot_kernel(int type);

/* ---- One weight row, several activation rows ----------------------------------------------
 * For prefill and batched decode: out[r] = the q_dot_row result of row w with activation row r,
 * bit for bit, for r < n_act. Activation row r starts at act + r·act_stride (bytes; at least the
 * activation row size, q_act_row_bytes). The AVX2 kernels of Q8_0, Q2_K, Q4_K (4 rows per
 * pass) and IQ2_XXS (8 rows per pass) decode each weight block once per pass (1.3x to 2.4x the
 * single-row rate per row); F32/F16/BF16 and the scalar path loop over the single-row kernel.
 * Never allocates. */
typedef void (*q_dot_rows_fn)(const void *w, const void *act, size_t act_stride, int n_act,
                              uint64_t n, float *out);

/* The kernel for `type` under the current SIMD setting; NULL if not a weight type. Unchecked
 * like q_dot_kernel (n whole blocks, n_act >= 0, pointers cover every row). */
q_dot_rows_fn q_dot_rows_kernel(int type);

/* Bytes of one activation row of n elements for weight `type` (float, q8act_block or q8k_block
 * records); 0 if not a weight type, n is not whole blocks or the size overflows size_t. */
size_t q_act_row_bytes(int type, uint64_t n);

/* Checked form: DS4_ERR_UNSUPPORTED / DS4_ERR_FORMAT as q_dot_row, DS4_ERR_RANGE when the
 * activation row size overflows, DS4_ERR_INVALID_ARG for n_act < 0, or act_stride below
 * q_act_row_bytes(type, n) when n_act > 1. */
ds4_status q_dot_rows(int type, const void *w, const void *act, size_t act_stride, int n_act,
                      uint64_t n, float *out, ds4_error *err);

/* ---- SIMD dispatch ----------------------------------------------------------------------- */

/* AVX2 is used when the CPU has it (and FMA/F16C), unless disabled here or by the environment
 * variable DS4_NO_SIMD=1 (read once). Results are identical either way; this exists for tests
 * and benchmarks. q_set_simd(true) on a CPU without AVX2 keeps the scalar path. */
void q_set_simd(bool enable);
bool q_simd_enabled(void);

#endif
