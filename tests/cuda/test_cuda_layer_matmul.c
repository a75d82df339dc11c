/*
 * tests/cuda/test_cuda_layer_matmul.c — the prefill matmul (cuda_matmul) and its grouped form
 * for routed experts (cuda_matmul_experts) against the CPU's cpu_matmul on the same random
 * weight blocks and activations: every weight type, tiles cut at every edge (rows, tokens,
 * columns at the block minimum, 1 token, odd counts), strided input and output, experts of
 * uneven sizes including empty ones. Criterion: bit-identical (max |Δ| = 0), worst index, ref
 * and got printed. --bench: TFLOP/s (2·rows·cols·tokens) at Flash prefill shapes, the old SIMT
 * kernel (cuda_matmul_simt) before, cuda_matmul / cuda_matmul_experts after.
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

/* Exact comparison of rows x n_tok outputs (ldy apart); the gaps of a strided output must keep
 * their -7. Prints the first worst mismatch. */
static void check_exact(const char *name, const float *ref, const float *got, int64_t rows,
                        int64_t n_tok, int64_t ldy) {
    double worst = 0;
    int64_t wo = 0, wt = 0, n_diff = 0, n_gap = 0;
    for (int64_t t = 0; t < n_tok; t++)
        for (int64_t o = 0; o < ldy; o++) {
            float r = ref[t * ldy + o], g = got[t * ldy + o];
            if (o >= rows) { n_gap += g != -7.0f; continue; }
            if (memcmp(&r, &g, 4) == 0) continue;
            n_diff++;
            double d = fabs((double)g - r);
            if (!(d <= worst)) { worst = d; wo = o; wt = t; }
        }
    char detail[240];
    snprintf(detail, sizeof detail,
             "%lld of %lld outputs differ, max |d| = %.3g at row %lld token %lld (ref %.9g, got %.9g); "
             "%lld gap values written", (long long)n_diff, (long long)(rows * n_tok), worst,
             (long long)wo, (long long)wt, (double)ref[wt * ldy + wo], (double)got[wt * ldy + wo],
             (long long)n_gap);
    result(n_diff == 0 && n_gap == 0, name, detail);
}

/* woff: the weights start woff bytes past a 256-byte aligned allocation (GGUF blocks are only
 * 2-byte aligned; the int8 kernels copy the 16-byte chunks around them). */
typedef struct mm_case { int type; int64_t rows, cols, n_tok, ldx, ldy, woff; } mm_case;

static void run_mm_case(const mm_case *c) {
    ds4_error err;
    uint64_t rb;
    if (q_row_bytes(c->type, (uint64_t)c->cols, &rb, &err)) { result(0, "matmul row bytes", err.msg); return; }
    size_t wb = (size_t)rb * (size_t)c->rows;
    uint8_t *w = malloc(wb + (size_t)c->woff);
    fill_weights(c->type, w + c->woff, wb);
    float *x = rnd_vec(c->n_tok * c->ldx, 1.0f), *ref = malloc((size_t)(c->n_tok * c->ldy) * 4);
    float *got = malloc((size_t)(c->n_tok * c->ldy) * 4);
    for (int64_t i = 0; i < c->n_tok * c->ldy; i++) ref[i] = got[i] = -7.0f; /* untouched gaps */
    cpu_mat m = {"test", c->type, c->cols, c->rows, rb, w + c->woff};
    cpu_buf buf = {0};
    char name[128];
    snprintf(name, sizeof name, "matmul %s %lldx%lld x %lld tok (ldx %lld, ldy %lld, w +%lld) bit-exact",
             q_type_name(c->type), (long long)c->rows, (long long)c->cols, (long long)c->n_tok,
             (long long)c->ldx, (long long)c->ldy, (long long)c->woff);
    if (cpu_matmul(NULL, &m, x, c->ldx, c->n_tok, ref, c->ldy, &buf, &err)) {
        result(0, name, err.msg);
        goto out;
    }
    uint8_t *dw = (uint8_t *)dev_put(w, wb + (size_t)c->woff) + c->woff;
    void *dx = dev_put(x, (size_t)(c->n_tok * c->ldx) * 4);
    float *dy = dev_put(got, (size_t)(c->n_tok * c->ldy) * 4);
    void *dact = dev_alloc(cuda_matmul_scratch_bytes(c->type, c->cols, c->n_tok) + 1);
    if (!ok_call(cuda_matmul(c->type, dw, c->rows, c->cols, dx, c->ldx, c->n_tok, dact, dy, c->ldy, &err),
                 name, &err))
        goto out;
    dev_get(got, dy, (size_t)(c->n_tok * c->ldy) * 4);
    check_exact(name, ref, got, c->rows, c->n_tok, c->ldy);
out:
    dev_free_all();
    cpu_buf_free(&buf);
    free(w); free(x); free(ref); free(got);
}

/* Grouped: n_expert experts with the given row counts (x rows sorted by expert); the reference
 * is cpu_matmul on each expert's slice with that expert's weights. The experts start woff bytes
 * into the allocation and lie wpad bytes more than their size apart. */
static void run_experts_case_at(int type, int64_t rows, int64_t cols, int n_expert, const int *cnt,
                                int64_t ldy, int woff, int wpad) {
    ds4_error err;
    uint64_t rb;
    if (q_row_bytes(type, (uint64_t)cols, &rb, &err)) { result(0, "experts row bytes", err.msg); return; }
    size_t eb = (size_t)rb * (size_t)rows + (size_t)wpad, wb = eb * (size_t)n_expert + (size_t)woff;
    int32_t *off = malloc((size_t)(n_expert + 1) * 4);
    off[0] = 0;
    for (int e = 0; e < n_expert; e++) off[e + 1] = off[e] + cnt[e];
    int64_t n = off[n_expert];
    uint8_t *w = malloc(wb);
    memset(w, 0x55, wb);
    for (int e = 0; e < n_expert; e++) fill_weights(type, w + woff + (size_t)e * eb, eb - (size_t)wpad);
    float *x = rnd_vec(n * cols, 1.0f), *ref = malloc((size_t)(n * ldy) * 4 + 4);
    float *got = malloc((size_t)(n * ldy) * 4 + 4);
    for (int64_t i = 0; i < n * ldy; i++) ref[i] = got[i] = -7.0f;
    cpu_buf buf = {0};
    char name[160];
    snprintf(name, sizeof name, "matmul_experts %s %lldx%lld, %d experts, %lld rows (ldy %lld, w +%d, "
             "pad %d) bit-exact", q_type_name(type), (long long)rows, (long long)cols, n_expert,
             (long long)n, (long long)ldy, woff, wpad);
    for (int e = 0; e < n_expert; e++) {
        cpu_mat m = {"test", type, cols, rows, rb, w + woff + (size_t)e * eb};
        if (cnt[e] && cpu_matmul(NULL, &m, x + (int64_t)off[e] * cols, cols, cnt[e],
                                 ref + (int64_t)off[e] * ldy, ldy, &buf, &err)) {
            result(0, name, err.msg);
            goto out;
        }
    }
    uint8_t *dw = (uint8_t *)dev_put(w, wb) + woff;
    void *dx = dev_put(x, (size_t)(n * cols) * 4);
    int32_t *doff = dev_put(off, (size_t)(n_expert + 1) * 4);
    float *dy = dev_put(got, (size_t)(n * ldy) * 4);
    void *dact = dev_alloc(cuda_matmul_scratch_bytes(type, cols, n) + 1);
    if (!ok_call(cuda_matmul_experts(type, dw, n_expert, rows, cols, eb, doff, dx, cols, n, dact,
                                     dy, ldy, &err), name, &err))
        goto out;
    dev_get(got, dy, (size_t)(n * ldy) * 4);
    check_exact(name, ref, got, rows, n, ldy);
out:
    dev_free_all();
    cpu_buf_free(&buf);
    free(off); free(w); free(x); free(ref); free(got);
}

static void run_experts_case(int type, int64_t rows, int64_t cols, int n_expert, const int *cnt,
                             int64_t ldy) {
    run_experts_case_at(type, rows, cols, n_expert, cnt, ldy, 0, 0);
}

/* The float kernels (matmul_f32.cu) at the q2 model's F16 shapes (HC fn 24 x 16384, compressor
 * 1024 x 4096, router 256 x 4096) and every tile shape forced in turn (cuda_matmul_float_tile),
 * each with rows, tokens and columns cut inside a tile, 16-byte aligned (cp.async) and not. */
static void test_matmul_float(void) {
    static const mm_case big[] = {
        {Q_TYPE_F16, 24, 16384, 37, 16384, 24}, {Q_TYPE_F16, 1024, 4096, 21, 4096, 1024},
        {Q_TYPE_F16, 256, 4096, 35, 4096, 256}, {Q_TYPE_F32, 24, 16384, 19, 16384, 24},
        {Q_TYPE_F16, 4, 16384, 3, 16384, 4},
    };
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) run_mm_case(&big[i]);
    static const int tiles[][2] = {{1, 4}, {2, 4}, {3, 4}, {4, 4}, {3, 2}, {4, 8}, {8, 8}, {2, 8}};
    static const mm_case small[] = {
        {Q_TYPE_F16, 40, 520, 45, 520, 41},  {Q_TYPE_F32, 33, 200, 19, 204, 33},
        {Q_TYPE_BF16, 17, 264, 9, 264, 17},  {Q_TYPE_F16, 70, 1001, 38, 1003, 70},
        {Q_TYPE_F32, 9, 67, 70, 67, 9},      {Q_TYPE_F16, 65, 4096, 66, 4100, 66, 2},
    };
    for (size_t k = 0; k < sizeof tiles / sizeof tiles[0]; k++) {
        cuda_matmul_float_tile(tiles[k][0], tiles[k][1]);
        printf("float tile %d x %d:\n", tiles[k][0], tiles[k][1]);
        for (size_t i = 0; i < sizeof small / sizeof small[0]; i++) run_mm_case(&small[i]);
        static const int cnt5[] = {3, 0, 40, 1, 17};
        run_experts_case(Q_TYPE_F16, 33, 264, 5, cnt5, 35);
    }
    cuda_matmul_float_tile(0, 0);
}

void test_matmul(void) {
    static const mm_case cs[] = {
        {Q_TYPE_IQ2_XXS, 130, 512, 37, 512, 130}, {Q_TYPE_Q2_K, 70, 768, 5, 1024, 73},
        {Q_TYPE_Q4_K, 64, 256, 33, 256, 64},      {Q_TYPE_Q8_0, 100, 96, 9, 96, 100},
        {Q_TYPE_F16, 65, 1001, 3, 1001, 65},      {Q_TYPE_BF16, 33, 512, 40, 512, 33},
        {Q_TYPE_F32, 9, 333, 2, 340, 9},          {Q_TYPE_Q8_0, 257, 4096, 64, 4096, 257},
        /* one token, the block minimum of columns, rows past one tile, odd token counts */
        {Q_TYPE_Q8_0, 129, 32, 1, 32, 129},       {Q_TYPE_Q8_0, 300, 288, 67, 300, 301},
        {Q_TYPE_Q2_K, 129, 256, 1, 256, 129},     {Q_TYPE_Q2_K, 257, 1024, 131, 1024, 257},
        {Q_TYPE_Q4_K, 200, 512, 65, 520, 203},    {Q_TYPE_Q4_K, 17, 256, 1, 256, 17},
        {Q_TYPE_IQ2_XXS, 1, 256, 1, 256, 1},      {Q_TYPE_IQ2_XXS, 255, 2048, 129, 2048, 255},
        {Q_TYPE_F32, 70, 7, 33, 7, 71},           {Q_TYPE_F16, 1, 64, 1, 64, 1},
        {Q_TYPE_BF16, 129, 1024, 65, 1030, 130},
        /* float types with many rows take the other kernel (matmul_f32.cu) */
        {Q_TYPE_F16, 300, 512, 17, 512, 300},     {Q_TYPE_F32, 257, 72, 5, 72, 258},
        /* weights at 2-byte (not 4- or 16-byte) aligned addresses: every chunk offset of the
         * IQ2_XXS / Q2_K weight ring, and the register loads of the other types */
        {Q_TYPE_IQ2_XXS, 131, 768, 70, 768, 131, 6}, {Q_TYPE_Q2_K, 130, 512, 65, 512, 130, 2},
        {Q_TYPE_Q2_K, 3, 256, 5, 256, 3, 14},        {Q_TYPE_IQ2_XXS, 129, 256, 64, 256, 129, 10},
        {Q_TYPE_Q8_0, 65, 160, 9, 160, 65, 2},       {Q_TYPE_Q4_K, 33, 512, 7, 512, 33, 6},
        /* Q8_0 in 256-column steps from 16-byte aligned rows (matmul_q8.cu): a real shape
         * (wq_b), one token, tokens past two tiles with strided x / y, a 16-byte offset */
        {Q_TYPE_Q8_0, 32768, 1024, 67, 1024, 32768}, {Q_TYPE_Q8_0, 129, 256, 1, 256, 129},
        {Q_TYPE_Q8_0, 130, 512, 129, 520, 133, 16},  {Q_TYPE_Q8_0, 4096, 4096, 70, 4096, 4096},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) run_mm_case(&cs[i]);
    static const int cnt7[] = {5, 0, 70, 1, 0, 33, 130};
    static const int types[] = {Q_TYPE_IQ2_XXS, Q_TYPE_Q2_K, Q_TYPE_Q4_K, Q_TYPE_Q8_0, Q_TYPE_F16,
                                Q_TYPE_BF16, Q_TYPE_F32};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        run_experts_case(types[i], 130, 512, 7, cnt7, 131);
    /* More experts than threads of a block (the tile scan's multi-expert ranges), most empty. */
    int cnt[300];
    for (int e = 0; e < 300; e++) cnt[e] = (int)(rnd_u64() % 4 == 0 ? rnd_u64() % 70 : 0);
    cnt[299] = 3;
    run_experts_case(Q_TYPE_Q2_K, 64, 256, 300, cnt, 64);
    /* experts at 2-byte aligned starts and strides (odd multiples of 2 bytes apart) */
    run_experts_case_at(Q_TYPE_IQ2_XXS, 130, 512, 7, cnt7, 131, 10, 6);
    run_experts_case_at(Q_TYPE_Q2_K, 130, 768, 7, cnt7, 130, 2, 2);
    run_experts_case_at(Q_TYPE_Q2_K, 70, 256, 7, cnt7, 70, 14, 30);
    static const int cnt_empty[] = {0, 0, 2, 0};
    run_experts_case(Q_TYPE_Q8_0, 33, 64, 4, cnt_empty, 33);
    /* Flash's routed shapes (gate/up IQ2_XXS 2048 x 4096, down Q2_K 4096 x 2048) with 0, 1,
     * a partial tile, a tile and one, two tiles and more tokens per expert */
    static const int cnt6[] = {0, 1, 47, 65, 130, 2};
    run_experts_case(Q_TYPE_IQ2_XXS, 2048, 4096, 6, cnt6, 2048);
    run_experts_case(Q_TYPE_Q2_K, 4096, 2048, 6, cnt6, 4096);
    run_experts_case(Q_TYPE_Q8_0, 2048, 4096, 6, cnt6, 2048);
    test_matmul_float();
}

/* ---- throughput ---- */

static void bench_line(const char *what, int type, int64_t rows, int64_t cols, int64_t n_tok,
                       double s, ds4_status st, const ds4_error *err) {
    if (st) printf("bench matmul %s %s failed: %s\n", what, q_type_name(type), err->msg);
    else
        printf("bench matmul %-20s %-8s %5lld x %-5lld x %5lld tok %10.1f us %7.2f TFLOP/s\n", what,
               q_type_name(type), (long long)rows, (long long)cols, (long long)n_tok, s * 1e6,
               2.0 * rows * cols * n_tok / s / 1e12);
}

/* DS4_MM_BENCH_QUICK set: the new kernels only (no SIMT "before"), e.g. under a profiler. */
static int bench_quick(void) {
    const char *q = getenv("DS4_MM_BENCH_QUICK");
    return q && *q && *q != '0';
}

/* Timed variant k: 0 the SIMT kernel, 1 the int8 kernels; grouped also 2 / 3: the int8 kernels
 * with the skip of empty n-tiles forced on / off (DS4_CUDA_MM_SKIP, read at every call). Sets
 * the switch and returns the label; k 1 resets it. */
static const char *bench_variant(int k) {
    static const char *names[] = {"before (simt)", "after (mma)", "after, skip on", "after, skip off"};
    unsetenv("DS4_CUDA_MM_SKIP");
    if (k >= 2) setenv("DS4_CUDA_MM_SKIP", k == 2 ? "1" : "0", 1);
    return names[k];
}

static void bench_dense(int type, int64_t rows, int64_t cols, int64_t n_tok) {
    ds4_error err;
    uint64_t rb;
    q_row_bytes(type, (uint64_t)cols, &rb, &err);
    size_t wb = (size_t)rb * (size_t)rows;
    uint8_t *w = malloc(wb);
    fill_weights(type, w, wb);
    float *x = rnd_vec(n_tok * cols, 1.0f);
    void *dw = dev_put(w, wb), *dx = dev_put(x, (size_t)(n_tok * cols) * 4);
    float *dy = dev_alloc((size_t)(n_tok * rows) * 4);
    void *dact = dev_alloc(cuda_matmul_scratch_bytes(type, cols, n_tok) + 1);
    for (int k = bench_quick(); k < 2; k++) {
        const char *what = bench_variant(k);
        ds4_status (*fn)(int, const void *, int64_t, int64_t, const float *, int64_t, int64_t,
                         void *, float *, int64_t, ds4_error *) = k ? cuda_matmul : cuda_matmul_simt;
        ds4_status st = fn(type, dw, rows, cols, dx, cols, n_tok, dact, dy, rows, &err);
        cuda_sync(&err);
        const int it = 5;
        double t0 = now_s();
        for (int i = 0; i < it && !st; i++) st = fn(type, dw, rows, cols, dx, cols, n_tok, dact, dy, rows, &err);
        cuda_sync(&err);
        bench_line(what, type, rows, cols, n_tok, (now_s() - t0) / it, st, &err);
    }
    dev_free_all();
    free(w); free(x);
}

/* n_expert experts of `per` rows each: before = one old-kernel call per expert (the chunk path's
 * loop), after = one cuda_matmul_experts. Weights: 16 random experts repeated. */
static void bench_grouped(int type, int64_t rows, int64_t cols, int n_expert, int per) {
    ds4_error err;
    uint64_t rb;
    q_row_bytes(type, (uint64_t)cols, &rb, &err);
    size_t eb = (size_t)rb * (size_t)rows, wb = eb * (size_t)n_expert;
    uint8_t *w = malloc(wb);
    fill_weights(type, w, eb * 16);
    for (int e = 16; e < n_expert; e++) memcpy(w + (size_t)e * eb, w + (size_t)(e % 16) * eb, eb);
    int64_t n = (int64_t)n_expert * per;
    int32_t *off = malloc((size_t)(n_expert + 1) * 4);
    for (int e = 0; e <= n_expert; e++) off[e] = e * per;
    float *x = rnd_vec(n * cols, 1.0f);
    uint8_t *dw = dev_put(w, wb);
    float *dx = dev_put(x, (size_t)(n * cols) * 4), *dy = dev_alloc((size_t)(n * rows) * 4);
    int32_t *doff = dev_put(off, (size_t)(n_expert + 1) * 4);
    void *dact = dev_alloc(cuda_matmul_scratch_bytes(type, cols, n) + 1);
    char what[64];
    for (int k = bench_quick(); k < 4; k++) {
        const char *label = bench_variant(k);
        ds4_status st = DS4_OK;
        const int it = 3;
        double t0 = 0;
        for (int i = 0; i <= it && !st; i++) {
            if (i == 1) { cuda_sync(&err); t0 = now_s(); }
            if (k) st = cuda_matmul_experts(type, dw, n_expert, rows, cols, eb, doff, dx, cols, n,
                                            dact, dy, rows, &err);
            else
                for (int e = 0; e < n_expert && !st; e++)
                    st = cuda_matmul_simt(type, dw + (size_t)e * eb, rows, cols, dx + (int64_t)e * per * cols,
                                          cols, per, dact, dy + (int64_t)e * per * rows, rows, &err);
        }
        cuda_sync(&err);
        snprintf(what, sizeof what, "%s %dx%d", k ? label : "before (loop)", n_expert, per);
        bench_line(what, type, rows, cols, n, (now_s() - t0) / it, st, &err);
    }
    bench_variant(1);
    dev_free_all();
    free(w); free(x); free(off);
}

/* The float kernels at the q2 model's F16 shapes and an F32 HC fn: cuda_matmul with the tile
 * picked by shape, then (tiles set) each tile forced (cuda_matmul_float_tile). The kernels of
 * commit 2ac978b took 721 / 1468 / 753 / 723 / 201 / 690 us on these shapes (H200; see
 * docs/BENCHMARKS.md "prefill: F32 products"). */
static void bench_float(int type, int64_t rows, int64_t cols, int64_t n_tok, int tiles) {
    ds4_error err;
    uint64_t rb;
    q_row_bytes(type, (uint64_t)cols, &rb, &err);
    size_t wb = (size_t)rb * (size_t)rows;
    uint8_t *w = malloc(wb);
    fill_weights(type, w, wb);
    float *x = rnd_vec(n_tok * cols, 1.0f);
    void *dw = dev_put(w, wb), *dx = dev_put(x, (size_t)(n_tok * cols) * 4);
    float *dy = dev_alloc((size_t)(n_tok * rows) * 4);
    static const int tl[][2] = {{0, 0}, {3, 4}, {3, 2}, {4, 4}, {4, 8}, {8, 8}, {2, 8}};
    for (int k = 0; k < (tiles ? 7 : 1); k++) {
        char what[48];
        if (k == 0) snprintf(what, sizeof what, "float, by shape");
        else snprintf(what, sizeof what, "float, tile %dx%d", tl[k][0], tl[k][1]);
        cuda_matmul_float_tile(tl[k][0], tl[k][1]);
        ds4_status st = DS4_OK;
        const int it = 5;
        double t0 = 0;
        for (int i = 0; i <= it && !st; i++) {
            if (i == 1) { cuda_sync(&err); t0 = now_s(); }
            st = cuda_matmul(type, dw, rows, cols, dx, cols, n_tok, NULL, dy, rows, &err);
        }
        cuda_sync(&err);
        bench_line(what, type, rows, cols, n_tok, (now_s() - t0) / it, st, &err);
    }
    cuda_matmul_float_tile(0, 0);
    dev_free_all();
    free(w); free(x);
}

void bench_matmul(void) {
    bench_float(Q_TYPE_F16, 24, 16384, 2048, 1); /* HC fn (hc_attn_fn / hc_ffn_fn) */
    bench_float(Q_TYPE_F16, 1024, 4096, 2048, 1); /* compressor kv/gate, ratio 4 */
    bench_float(Q_TYPE_F16, 512, 4096, 2048, 0);  /* compressor kv/gate, ratio 128 */
    bench_float(Q_TYPE_F16, 256, 4096, 2048, 1); /* router, indexer compressor */
    bench_float(Q_TYPE_F16, 64, 4096, 2048, 1);  /* indexer weights proj */
    bench_float(Q_TYPE_F32, 24, 16384, 2048, 0); /* f32 models' HC fn */
    if (getenv("DS4_MM_BENCH_FLOAT")) return;
    bench_dense(Q_TYPE_Q8_0, 4096, 4096, 512);
    bench_dense(Q_TYPE_Q8_0, 4096, 4096, 2048);
    bench_dense(Q_TYPE_Q8_0, 32768, 1024, 512);
    bench_dense(Q_TYPE_Q8_0, 32768, 1024, 2048);
    bench_dense(Q_TYPE_Q8_0, 4096, 8192, 2048); /* wo_b */
    bench_dense(Q_TYPE_Q8_0, 1024, 4096, 2048); /* wq_a, a wo_a group */
    bench_dense(Q_TYPE_Q2_K, 4096, 2048, 2048);
    bench_dense(Q_TYPE_Q4_K, 4096, 4096, 2048);
    bench_dense(Q_TYPE_IQ2_XXS, 2048, 4096, 2048);
    bench_dense(Q_TYPE_F16, 4096, 4096, 512);
    bench_dense(Q_TYPE_F16, 24, 16384, 2048); /* hyper-connection fn shape (few rows) */
    bench_grouped(Q_TYPE_IQ2_XXS, 2048, 4096, 256, 48); /* 2048-token chunks: 6 x 2048 / 256 */
    bench_grouped(Q_TYPE_Q2_K, 4096, 2048, 256, 48);
    bench_grouped(Q_TYPE_IQ2_XXS, 2048, 4096, 256, 12); /* 512-token chunks */
    bench_grouped(Q_TYPE_Q2_K, 4096, 2048, 256, 12);
}
