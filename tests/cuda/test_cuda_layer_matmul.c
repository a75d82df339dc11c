/*
 * tests/cuda/test_cuda_layer_matmul.c — the prefill matmul (cuda_matmul) against the CPU's
 * cpu_matmul on the same random weight blocks and activations, every weight type, tiles cut at
 * every edge (rows, tokens, columns), strided input and output; plus its throughput.
 * Tolerance: 1e-5·Σ|w·x| per output (same activation quantization and products, another
 * summation order), the criterion of the matvec tests.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/matmul.h"
#include "cuda/cuda_api.h"
#include "format/fp8.h"
#include "format/quant.h"

#include "layer_check.h"

/* Random valid blocks: random code bytes, small positive f16 scales at the type's offsets. */
static void fill_weights(int type, uint8_t *w, size_t n_bytes) {
    for (size_t i = 0; i < n_bytes; i++) w[i] = (uint8_t)rnd_u64();
    size_t bb = q_block_bytes(type), nb = n_bytes / bb;
    for (size_t b = 0; b < nb; b++) {
        uint8_t *p = w + b * bb;
        uint16_t d = (uint16_t)(0x1800 + (rnd_u64() % 0x0800));
        uint16_t dmin = (uint16_t)(0x1400 + (rnd_u64() % 0x0800));
        if (type == Q_TYPE_Q8_0 || type == Q_TYPE_IQ2_XXS) memcpy(p, &d, 2);
        else if (type == Q_TYPE_Q4_K) { memcpy(p, &d, 2); memcpy(p + 2, &dmin, 2); }
        else if (type == Q_TYPE_Q2_K) { memcpy(p + 80, &d, 2); memcpy(p + 82, &dmin, 2); }
        else if (type == Q_TYPE_F16 || type == Q_TYPE_BF16) {
            for (size_t i = 0; i < bb; i += 2) {
                float f = rnd_normal() * 0.05f;
                uint16_t h = type == Q_TYPE_F16 ? fp_f32_to_f16(f) : fp_f32_to_bf16(f);
                memcpy(p + i, &h, 2);
            }
        } else if (type == Q_TYPE_F32) {
            float f = rnd_normal() * 0.05f;
            memcpy(p, &f, 4);
        }
    }
}

typedef struct mm_case { int type; int64_t rows, cols, n_tok, ldx, ldy; } mm_case;

static void run_mm_case(const mm_case *c) {
    ds4_error err;
    uint64_t rb;
    if (q_row_bytes(c->type, (uint64_t)c->cols, &rb, &err)) { result(0, "matmul row bytes", err.msg); return; }
    size_t wb = (size_t)rb * (size_t)c->rows;
    uint8_t *w = malloc(wb);
    fill_weights(c->type, w, wb);
    float *x = rnd_vec(c->n_tok * c->ldx, 1.0f), *ref = malloc((size_t)(c->n_tok * c->ldy) * 4);
    float *got = malloc((size_t)(c->n_tok * c->ldy) * 4), *row = malloc((size_t)c->cols * 4);
    for (int64_t i = 0; i < c->n_tok * c->ldy; i++) ref[i] = got[i] = -7.0f; /* untouched gaps */
    cpu_mat m = {"test", c->type, c->cols, c->rows, rb, w};
    cpu_buf buf = {0};
    char name[128];
    snprintf(name, sizeof name, "matmul %s %lldx%lld x %lld tok (ldx %lld, ldy %lld)",
             q_type_name(c->type), (long long)c->rows, (long long)c->cols, (long long)c->n_tok,
             (long long)c->ldx, (long long)c->ldy);
    if (cpu_matmul(NULL, &m, x, c->ldx, c->n_tok, ref, c->ldy, &buf, &err)) {
        result(0, name, err.msg);
        goto out;
    }
    void *dw = dev_put(w, wb), *dx = dev_put(x, (size_t)(c->n_tok * c->ldx) * 4);
    float *dy = dev_put(got, (size_t)(c->n_tok * c->ldy) * 4);
    void *dact = dev_alloc(cuda_matmul_scratch_bytes(c->type, c->cols, c->n_tok) + 1);
    if (!ok_call(cuda_matmul(c->type, dw, c->rows, c->cols, dx, c->ldx, c->n_tok, dact, dy, c->ldy, &err),
                 name, &err))
        goto out;
    dev_get(got, dy, (size_t)(c->n_tok * c->ldy) * 4);
    double worst = 0;
    int64_t wo = 0, wt = 0;
    int ok = 1;
    for (int64_t o = 0; o < c->rows && ok; o++) {
        q_decode_row(c->type, w + (size_t)o * rb, row, (uint64_t)c->cols, &err);
        for (int64_t t = 0; t < c->n_tok; t++) {
            double s = 0;
            for (int64_t i = 0; i < c->cols; i++) s += fabs((double)row[i] * x[t * c->ldx + i]);
            double d = fabs((double)got[t * c->ldy + o] - ref[t * c->ldy + o]), tol = 1e-5 * s + 1e-30;
            if (!(d <= tol)) ok = 0;
            if (!(d / tol <= worst)) { worst = d / tol; wo = o; wt = t; }
        }
    }
    for (int64_t t = 0; t < c->n_tok && ok; t++) /* the gaps of a strided output stay untouched */
        for (int64_t o = c->rows; o < c->ldy; o++) if (got[t * c->ldy + o] != -7.0f) ok = 0;
    char detail[200];
    snprintf(detail, sizeof detail, "worst |d|/tol = %.3g at row %lld token %lld (ref %.9g, got %.9g), tol 1e-5*sum|w*x|",
             worst, (long long)wo, (long long)wt, (double)ref[wt * c->ldy + wo], (double)got[wt * c->ldy + wo]);
    result(ok, name, detail);
out:
    dev_free_all();
    cpu_buf_free(&buf);
    free(w); free(x); free(ref); free(got); free(row);
}

void test_matmul(void) {
    static const mm_case cs[] = {
        {Q_TYPE_IQ2_XXS, 130, 512, 37, 512, 130}, {Q_TYPE_Q2_K, 70, 768, 5, 1024, 73},
        {Q_TYPE_Q4_K, 64, 256, 33, 256, 64},      {Q_TYPE_Q8_0, 100, 96, 9, 96, 100},
        {Q_TYPE_F16, 65, 1001, 3, 1001, 65},      {Q_TYPE_BF16, 33, 512, 40, 512, 33},
        {Q_TYPE_F32, 9, 333, 2, 340, 9},          {Q_TYPE_Q8_0, 257, 4096, 64, 4096, 257},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) run_mm_case(&cs[i]);
}

void bench_matmul(void) {
    static const mm_case cs[] = {
        {Q_TYPE_Q8_0, 4096, 4096, 512, 4096, 4096}, {Q_TYPE_IQ2_XXS, 2048, 4096, 512, 4096, 2048},
        {Q_TYPE_Q2_K, 4096, 2048, 512, 2048, 4096}, {Q_TYPE_F16, 4096, 4096, 512, 4096, 4096},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        const mm_case *c = &cs[i];
        ds4_error err;
        uint64_t rb;
        q_row_bytes(c->type, (uint64_t)c->cols, &rb, &err);
        size_t wb = (size_t)rb * (size_t)c->rows;
        uint8_t *w = malloc(wb);
        fill_weights(c->type, w, wb);
        float *x = rnd_vec(c->n_tok * c->cols, 1.0f);
        void *dw = dev_put(w, wb), *dx = dev_put(x, (size_t)(c->n_tok * c->cols) * 4);
        float *dy = dev_alloc((size_t)(c->n_tok * c->rows) * 4);
        void *dact = dev_alloc(cuda_matmul_scratch_bytes(c->type, c->cols, c->n_tok) + 1);
        ds4_status st = cuda_matmul(c->type, dw, c->rows, c->cols, dx, c->cols, c->n_tok, dact, dy, c->rows, &err);
        cuda_sync(&err);
        double t0 = now_s();
        const int it = 10;
        for (int k = 0; k < it && !st; k++)
            st = cuda_matmul(c->type, dw, c->rows, c->cols, dx, c->cols, c->n_tok, dact, dy, c->rows, &err);
        cuda_sync(&err);
        double s = (now_s() - t0) / it;
        if (st) printf("bench matmul %s failed: %s\n", q_type_name(c->type), err.msg);
        else
            printf("bench matmul (prefill) %-8s %5lld x %-5lld x %4lld tok %9.1f us  %6.2f TFLOP/s\n",
                   q_type_name(c->type), (long long)c->rows, (long long)c->cols, (long long)c->n_tok,
                   s * 1e6, 2.0 * c->rows * c->cols * c->n_tok / s / 1e12);
        dev_free_all();
        free(w); free(x);
    }
}
