/*
 * tests/cuda/test_cuda_indexer.c — the indexer's long-context kernels (issue #7): the one-launch
 * query preparation (cuda_indexer_qprep) against the four ops it replaces, bit for bit; and with
 * --bench the scores and the top-k timed apart at Flash shapes (64 heads x 128, top-512) for
 * decode and for a 2048-token prefill chunk, first kernels (DS4_CUDA_IDX_V1=1) and current.
 * Called from test_cuda_layer_attn.c (test_indexer / bench_attn_ops); test code only.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/ops.h"
#include "cuda/cuda_api.h"

#include "layer_check.h"

void test_indexer_prep(void);
void bench_indexer(void);

static void set_v1(int on) {
    if (on) setenv("DS4_CUDA_IDX_V1", "1", 1);
    else unsetenv("DS4_CUDA_IDX_V1");
}

/* qprep (one launch) vs rope + hadamard + fp4 + scale (DS4_CUDA_IDX_V1=1): max |Δ| = 0 for q
 * and w; host and device positions. */
static void run_prep_case(int64_t n_tok, int64_t ih, int64_t id, int nr, int64_t pos0, int dpos) {
    ds4_error err;
    const cpu_rope_cfg yarn = {64, 160000.0, 16.0, 32.0, 1.0, 65536.0};
    float freqs[64];
    cpu_rope_freqs(&yarn, freqs);
    int64_t nq = n_tok * ih * id, nw = n_tok * ih;
    float *q = rnd_vec(nq, 3.0f), *w = rnd_vec(nw, 0.5f);
    float *ref_q = malloc((size_t)nq * 4), *got_q = malloc((size_t)nq * 4);
    float *ref_w = malloc((size_t)nw * 4), *got_w = malloc((size_t)nw * 4);
    float *dq = dev_put(q, nq * 4), *dw = dev_put(w, nw * 4), *df = dev_put(freqs, sizeof freqs);
    int64_t *dp = dev_put(&pos0, sizeof pos0);
    char name[160];
    snprintf(name, sizeof name, "indexer qprep %lld tok x %lld heads x %lld, rope %d at pos %lld (%s)",
             (long long)n_tok, (long long)ih, (long long)id, nr, (long long)pos0,
             dpos ? "device pos" : "host pos");
    set_v1(1);
    int ok = ok_call(cuda_indexer_qprep(dq, dw, n_tok, ih, id, nr, df, dpos ? 0 : pos0,
                                        dpos ? dp : NULL, 32, &err), name, &err);
    set_v1(0);
    if (ok) {
        dev_get(ref_q, dq, nq * 4);
        dev_get(ref_w, dw, nw * 4);
        cuda_upload(dq, q, (size_t)nq * 4, &err);
        cuda_upload(dw, w, (size_t)nw * 4, &err);
        if (ok_call(cuda_indexer_qprep(dq, dw, n_tok, ih, id, nr, df, dpos ? 0 : pos0,
                                       dpos ? dp : NULL, 32, &err), name, &err)) {
            dev_get(got_q, dq, nq * 4);
            dev_get(got_w, dw, nw * 4);
            char nm[200];
            snprintf(nm, sizeof nm, "%s: queries vs the four ops", name);
            cmp_f32(nm, ref_q, got_q, nq, 0, 0);
            snprintf(nm, sizeof nm, "%s: weights vs cuda_scale", name);
            cmp_f32(nm, ref_w, got_w, nw, 0, 0);
        }
    }
    dev_free_all();
    free(q); free(w); free(ref_q); free(got_q); free(ref_w); free(got_w);
}

void test_indexer_prep(void) {
    run_prep_case(1, 64, 128, 64, 65535, 1); /* Flash decode (MODEL_MATH §0) */
    run_prep_case(1, 64, 128, 64, 777, 0);
    run_prep_case(5, 64, 128, 64, 16000, 0); /* a chunk: position per token */
    run_prep_case(3, 4, 64, 16, 3, 1);
    run_prep_case(2, 3, 2048, 64, 100000, 0); /* more than 1024 values: several per thread */
}

/* ---- timings ---- */

/* Mean microseconds of iters calls of part (1 scores, 2 top-k, 3 both) after one warm-up. */
static double time_idx(int v1, int part, int iters, const float *dq, const float *dw,
                       const float *drows, int64_t n_tok, int64_t pos0, float *dsc, int32_t *dsel,
                       int32_t *dn) {
    ds4_error err;
    set_v1(v1);
    ds4_status st = DS4_OK;
    double us = -1;
    for (int i = -1; i < iters && !st; i++) {
        if (i == 0) {
            cuda_sync(&err);
            us = now_s();
        }
        st = part == 3 ? cuda_indexer_topk(dq, dw, drows, n_tok, pos0, 64, 128, 512, dsc, dsel, dn, &err)
                       : cuda_indexer_part(part, dq, dw, drows, n_tok, pos0, 64, 128, 512, dsc, dsel,
                                           dn, &err);
    }
    if (!st) st = cuda_sync(&err);
    set_v1(0);
    if (st) {
        printf("bench indexer failed: %s\n", err.msg);
        return -1;
    }
    return (now_s() - us) / iters * 1e6;
}

void bench_indexer(void) {
    const int64_t max_tok = 2048, max_rows = 32768;
    float *h = rnd_vec(1 << 20, 1.0f);
    float *dq = dev_alloc((size_t)max_tok * 64 * 128 * 4), *dw = dev_alloc((size_t)max_tok * 64 * 4);
    float *drows = dev_alloc((size_t)max_rows * 128 * 4);
    float *dsc = dev_alloc(cuda_indexer_scratch_bytes(max_tok, 4 * max_rows));
    int32_t *dsel = dev_alloc((size_t)max_tok * 512 * 4), *dn = dev_alloc((size_t)max_tok * 4);
    if (!dq || !dw || !drows || !dsc || !dsel || !dn) {
        printf("bench indexer: allocation failed\n");
        dev_free_all();
        free(h);
        return;
    }
    ds4_error err;
    for (int64_t off = 0; off < max_tok * 64 * 128; off += 1 << 20) cuda_upload(dq + off, h, 4u << 20, &err);
    for (int64_t off = 0; off < max_rows * 128; off += 1 << 20) cuda_upload(drows + off, h, 4u << 20, &err);
    cuda_upload(dw, h, (size_t)max_tok * 64 * 4, &err);
    printf("bench indexer (64 heads x 128, top-512; us per call; v1 = DS4_CUDA_IDX_V1=1)\n");
    static const int64_t dec_pos[] = {2079, 16383, 65535, 131071}; /* 520, 4096, 16384, 32768 rows */
    for (size_t i = 0; i < sizeof dec_pos / sizeof dec_pos[0]; i++) {
        int64_t p = dec_pos[i];
        double s1 = time_idx(1, 1, 50, dq, dw, drows, 1, p, dsc, dsel, dn);
        double k1 = time_idx(1, 2, 50, dq, dw, drows, 1, p, dsc, dsel, dn);
        double a1 = time_idx(1, 3, 50, dq, dw, drows, 1, p, dsc, dsel, dn);
        double s2 = time_idx(0, 1, 50, dq, dw, drows, 1, p, dsc, dsel, dn);
        double k2 = time_idx(0, 2, 50, dq, dw, drows, 1, p, dsc, dsel, dn);
        double a2 = time_idx(0, 3, 50, dq, dw, drows, 1, p, dsc, dsel, dn);
        printf("bench indexer decode %6lld rows: v1 scores %8.2f top-k %7.2f both %8.2f | "
               "now scores %8.2f top-k %7.2f both %8.2f\n",
               (long long)((p + 1) / 4), s1, k1, a1, s2, k2, a2);
    }
    static const int64_t chunk_pos[] = {14336, 63488}; /* chunks ending at 16k and 64k */
    for (size_t i = 0; i < sizeof chunk_pos / sizeof chunk_pos[0]; i++) {
        int64_t p = chunk_pos[i];
        double s1 = time_idx(1, 1, 1, dq, dw, drows, max_tok, p, dsc, dsel, dn);
        double k1 = time_idx(1, 2, 1, dq, dw, drows, max_tok, p, dsc, dsel, dn);
        double s2 = time_idx(0, 1, 2, dq, dw, drows, max_tok, p, dsc, dsel, dn);
        double k2 = time_idx(0, 2, 2, dq, dw, drows, max_tok, p, dsc, dsel, dn);
        printf("bench indexer chunk of 2048 at %6lld (%5lld rows at the end): v1 scores %9.1f "
               "top-k %8.1f | now scores %9.1f top-k %8.1f\n",
               (long long)p, (long long)((p + max_tok) / 4), s1, k1, s2, k2);
    }
    const cpu_rope_cfg yarn = {64, 160000.0, 16.0, 32.0, 1.0, 65536.0};
    float freqs[32];
    cpu_rope_freqs(&yarn, freqs);
    float *df = dev_put(freqs, sizeof freqs);
    for (int v1 = 1; v1 >= 0; v1--) {
        set_v1(v1);
        ds4_status st = cuda_indexer_qprep(dq, dw, 1, 64, 128, 64, df, 70000, NULL, 32, &err);
        cuda_sync(&err);
        double t0 = now_s();
        for (int i = 0; i < 100 && !st; i++)
            st = cuda_indexer_qprep(dq, dw, 1, 64, 128, 64, df, 70000, NULL, 32, &err);
        cuda_sync(&err);
        set_v1(0);
        if (st) printf("bench indexer qprep failed: %s\n", err.msg);
        else printf("bench indexer query prep, one token (%s) %8.2f us\n",
                    v1 ? "v1: rope + hadamard + fp4 + scale" : "one launch", (now_s() - t0) / 100 * 1e6);
    }
    dev_free_all();
    free(h);
}
