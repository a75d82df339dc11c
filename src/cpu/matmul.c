/*
 * cpu/matmul.c — weight-matrix products on the pool (see cpu/matmul.h).
 */
#include "cpu/matmul.h"

#include <stdlib.h>

#include "core/error.h"
#include "format/quant.h"

ds4_status cpu_buf_reserve(cpu_buf *b, size_t n_bytes, ds4_error *err) {
    if (n_bytes <= b->cap) return DS4_OK;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < n_bytes) cap = cap > SIZE_MAX / 2 ? n_bytes : cap * 2;
    void *p = NULL;
    if (posix_memalign(&p, 64, cap) != 0)
        return ds4_seterr(err, DS4_ERR_NOMEM, "cpu: out of memory for %zu bytes of scratch", cap);
    free(b->p);
    b->p = p;
    b->cap = cap;
    return DS4_OK;
}

void cpu_buf_free(cpu_buf *b) {
    free(b->p);
    b->p = NULL;
    b->cap = 0;
}

cpu_mat cpu_mat_rows(const cpu_mat *w, int64_t r0, int64_t n) {
    cpu_mat v = *w;
    v.data = w->data + (uint64_t)r0 * w->row_bytes;
    v.n_out = n;
    return v;
}

typedef struct mm_job {
    const cpu_mat *w;
    q_dot_fn dot;
    q_dot_rows_fn dot_rows;  /* several tokens per weight row (bit-equal to `dot`) */
    const uint8_t *act;
    size_t act_stride;
    int64_t n_tok;
    float *y;
    int64_t ldy;
    float *wdec;           /* exact mode: one decoded f32 row per worker */
} mm_job;

#define MM_TOK_GROUP 64 /* tokens per q_dot_rows call (stack buffer) */

static void mm_rows(void *ctx, int64_t begin, int64_t end, int thread_idx) {
    (void)thread_idx;
    const mm_job *j = ctx;
    uint64_t n = (uint64_t)j->w->n_in;
    if (j->n_tok == 1) {
        for (int64_t o = begin; o < end; o++)
            j->y[o] = j->dot(j->w->data + (uint64_t)o * j->w->row_bytes, j->act, n);
        return;
    }
    /* Prefill: each weight block is decoded once for several tokens (format/quant.h
     * q_dot_rows: same value per (row, token) as the single-row kernel, bit for bit). */
    float out[MM_TOK_GROUP];
    for (int64_t o = begin; o < end; o++) {
        const uint8_t *row = j->w->data + (uint64_t)o * j->w->row_bytes;
        for (int64_t t0 = 0; t0 < j->n_tok; t0 += MM_TOK_GROUP) {
            int nt = (int)(j->n_tok - t0 < MM_TOK_GROUP ? j->n_tok - t0 : MM_TOK_GROUP);
            j->dot_rows(row, j->act + (size_t)t0 * j->act_stride, j->act_stride, nt, n, out);
            for (int t = 0; t < nt; t++) j->y[(t0 + t) * j->ldy + o] = out[t];
        }
    }
}

/* Exact mode: decode the row once, then the F32 kernel for every token (cpu_matmul.h). */
static void mm_rows_exact(void *ctx, int64_t begin, int64_t end, int thread_idx) {
    const mm_job *j = ctx;
    uint64_t n = (uint64_t)j->w->n_in;
    float *wrow = j->wdec + (size_t)thread_idx * n;
    for (int64_t o = begin; o < end; o++) {
        const uint8_t *row = j->w->data + (uint64_t)o * j->w->row_bytes;
        /* Cannot fail: type and row length were checked by cpu_matmul. */
        (void)q_decode_row(j->w->type, row, wrow, n, NULL);
        for (int64_t t = 0; t < j->n_tok; t++)
            j->y[t * j->ldy + o] = j->dot(wrow, j->act + (size_t)t * j->act_stride, n);
    }
}

ds4_status cpu_matmul(ds4_pool *pool, const cpu_mat *w, const float *x, int64_t ldx,
                      int64_t n_tok, float *y, int64_t ldy, cpu_buf *act, ds4_error *err) {
    if (n_tok <= 0 || w->n_out <= 0) return DS4_OK;
    q_dot_fn dot = q_dot_kernel(w->type);
    if (!dot)
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED, "cpu: tensor '%s': no dot kernel for type %s",
                          w->name ? w->name : "?", q_type_name(w->type));
    q_act_kind kind = q_act_kind_for(w->type);
    const uint8_t *a;
    size_t stride, dec_bytes = 0;
    uint64_t n = (uint64_t)w->n_in;
    bool exact = act->exact_act && kind != Q_ACT_F32;
    if (exact) {
        uint64_t rb;
        ds4_status st = q_row_bytes(w->type, n, &rb, err);
        if (st) return ds4_err_prefix(err, "cpu: tensor '%s'", w->name ? w->name : "?");
        kind = Q_ACT_F32;
        dot = q_dot_kernel(Q_TYPE_F32);
        dec_bytes = (size_t)n * sizeof(float) * (size_t)ds4_pool_size(pool) + 64; /* + alignment */
        size_t need = ldx == w->n_in ? 0 : (size_t)n * sizeof(float) * (size_t)n_tok;
        if ((st = cpu_buf_reserve(act, need + dec_bytes, err))) return st;
    }
    if (kind == Q_ACT_F32 && ldx == w->n_in) {
        a = (const uint8_t *)x;
        stride = (size_t)n * sizeof(float);
    } else {
        if (kind == Q_ACT_F32) stride = (size_t)n * sizeof(float);
        else if (kind == Q_ACT_Q8_0) stride = (size_t)(n / Q_QK8_0) * sizeof(q8act_block);
        else stride = (size_t)(n / Q_QK_K) * sizeof(q8k_block);
        ds4_status st = cpu_buf_reserve(act, stride * (size_t)n_tok + dec_bytes, err);
        if (st) return st;
        for (int64_t t = 0; t < n_tok; t++) {
            const float *xt = x + t * ldx;
            uint8_t *dst = (uint8_t *)act->p + (size_t)t * stride;
            if (kind == Q_ACT_F32) {
                for (uint64_t i = 0; i < n; i++) ((float *)dst)[i] = xt[i];
            } else if (kind == Q_ACT_Q8_0) {
                st = q_quantize_q8act(xt, (q8act_block *)dst, n, err);
            } else {
                st = q_quantize_q8k(xt, (q8k_block *)dst, n, err);
            }
            if (st) return ds4_err_prefix(err, "cpu: tensor '%s'", w->name ? w->name : "?");
        }
        a = act->p;
    }
    mm_job j = {w, dot, q_dot_rows_kernel(w->type), a, stride, n_tok, y, ldy, NULL};
    /* Enough multiply-adds per chunk (~64K) that a worker's share amortises the hand-off. */
    int64_t work = w->n_in * n_tok;
    int64_t min_chunk = work >= 65536 ? 1 : 65536 / work;
    if (exact) {
        /* Decode rows sit after the activations (or at the start when x is used in place). */
        size_t used = a == (const uint8_t *)x ? 0 : stride * (size_t)n_tok;
        j.wdec = (float *)((uint8_t *)act->p + ((used + 63) & ~(size_t)63));
        ds4_pool_run(pool, w->n_out, min_chunk, mm_rows_exact, &j);
        return DS4_OK;
    }
    ds4_pool_run(pool, w->n_out, min_chunk, mm_rows, &j);
    return DS4_OK;
}

ds4_status cpu_mat_row_f32(const cpu_mat *w, int64_t r, float *dst, ds4_error *err) {
    ds4_status st = q_decode_row(w->type, w->data + (uint64_t)r * w->row_bytes, dst,
                                 (uint64_t)w->n_in, err);
    if (st) return ds4_err_prefix(err, "cpu: tensor '%s' row %lld", w->name ? w->name : "?",
                                  (long long)r);
    return DS4_OK;
}
