/*
 * tests/cuda/test_cuda_layer.c — the op table of the V4 layer on CUDA against the CPU reference
 * on the same random inputs (STYLE.md §7): norm, softmax, RoPE, Hadamard, FP8/FP4 round trips,
 * hyper-connections, MoE routing / SwiGLU / combine, argmax, attention, compressor, indexer.
 * Called from the runner in test_cuda_ops.c; with --bench also times each op at Flash shapes.
 *
 * Where the CPU op is a public function (cpu/ops.h, model/hc.h, model/compressor.h,
 * indexer_select, ds4_argmax) it is called directly. Attention items, the MoE router and the
 * SwiGLU are static inside model/attention.c and model/moe.c, so the reference here is the same
 * loop written from the CPU primitives (cpu_dot_f32, expf, cpu_rope_tail, cpu_softplus,
 * cpu_silu), in the order of those files; see each function's comment.
 *
 * Tolerances: rounding ops (FP8/FP4, Hadamard, hc_post, combine, indexer scores and top-k,
 * router selection) must be bit-identical. Ops with exp/cos/sin or a double reduction are
 * checked with |Δ| <= rel·|ref| + abs and print how many values are not bit-equal. Ops that end
 * in an FP8/FP4 rounding (compressor rows) allow a value to land one quantization step away when
 * the pre-rounded input differs by an ULP; the test bounds how many may.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu/ops.h"
#include "cuda/cuda_api.h"
#include "model/compressor.h"
#include "model/forward.h"
#include "model/hc.h"

#include "layer_check.h"

static int *g_pass, *g_fail;

static uint64_t rs = 0x243F6A8885A308D3ull;
uint64_t rnd_u64(void) {
    uint64_t z = (rs += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
float rnd_unit(void) { return (float)((rnd_u64() >> 40) * (1.0 / 16777216.0)); }
float rnd_normal(void) {
    float u = rnd_unit() + 1e-7f, v = rnd_unit();
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}
float *rnd_vec(int64_t n, float scale) {
    float *x = malloc((size_t)n * sizeof *x);
    for (int64_t i = 0; i < n; i++) x[i] = rnd_normal() * scale;
    return x;
}

/* ---- device allocations of one case, freed together ---- */
static void *g_dev[64];
static int g_ndev;
static int g_dev_failed;

void *dev_alloc(size_t n_bytes) {
    ds4_error err;
    void *p = NULL;
    if (g_ndev >= 64 || cuda_malloc(&p, n_bytes, &err)) {
        if (!g_dev_failed) printf("FAIL cuda alloc of %zu bytes: %s\n", n_bytes, g_ndev >= 64 ? "too many" : err.msg);
        g_dev_failed = 1;
        return NULL;
    }
    g_dev[g_ndev++] = p;
    return p;
}
void *dev_put(const void *h, size_t n_bytes) {
    ds4_error err;
    void *p = dev_alloc(n_bytes);
    if (p && cuda_upload(p, h, n_bytes, &err)) {
        printf("FAIL upload: %s\n", err.msg);
        g_dev_failed = 1;
    }
    return p;
}
void dev_get(void *h, const void *d, size_t n_bytes) {
    ds4_error err;
    if (!d || cuda_download(h, d, n_bytes, &err)) {
        if (d) printf("FAIL download: %s\n", err.msg);
        g_dev_failed = 1;
        memset(h, 0xFF, n_bytes);
    }
}
void dev_free_all(void) {
    for (int i = 0; i < g_ndev; i++) cuda_free(g_dev[i]);
    g_ndev = 0;
    g_dev_failed = 0;
}

/* A CUDA call that must succeed: prints and counts a failure otherwise. */
int ok_call(ds4_status st, const char *what, const ds4_error *err) {
    if (st == DS4_OK && !g_dev_failed) return 1;
    (*g_fail)++;
    printf("FAIL %s: %s\n", what, st ? err->msg : "device allocation/copy failed");
    return 0;
}

void result(int ok, const char *name, const char *detail) {
    if (ok) (*g_pass)++;
    else (*g_fail)++;
    printf("%s %s: %s\n", ok ? "ok  " : "FAIL", name, detail);
}

/* |got - ref| <= rel·|ref| + abs for every value (rel = abs = 0: bit-identical). */
void cmp_f32(const char *name, const float *ref, const float *got, int64_t n, double rel,
                    double abs_tol) {
    int64_t worst = 0, n_diff_bits = 0;
    double worst_r = -1, worst_d = 0;
    int ok = 1;
    for (int64_t i = 0; i < n; i++) {
        if (memcmp(&ref[i], &got[i], sizeof(float)) != 0) n_diff_bits++;
        else continue;
        double d = fabs((double)got[i] - (double)ref[i]);
        double tol = rel * fabs((double)ref[i]) + abs_tol;
        int bad = !(d <= tol) || (rel == 0 && abs_tol == 0);
        if (bad) ok = 0;
        double r = tol > 0 ? d / tol : INFINITY;
        if (isnan(r)) r = INFINITY;
        if (r > worst_r) { worst_r = r; worst = i; worst_d = d; }
    }
    char buf[256];
    if (n_diff_bits == 0)
        snprintf(buf, sizeof buf, "n=%lld, bit-identical", (long long)n);
    else
        snprintf(buf, sizeof buf,
                 "n=%lld, %lld not bit-equal, worst at i=%lld |d|=%.3g (ref %.9g, got %.9g), "
                 "tol %.1e*|ref|+%.1e",
                 (long long)n, (long long)n_diff_bits, (long long)worst, worst_d,
                 (double)ref[worst], (double)got[worst], rel, abs_tol);
    result(ok, name, buf);
}

void cmp_i32(const char *name, const int32_t *ref, const int32_t *got, int64_t n) {
    int64_t bad = -1;
    for (int64_t i = 0; i < n && bad < 0; i++) if (ref[i] != got[i]) bad = i;
    char buf[160];
    if (bad < 0) snprintf(buf, sizeof buf, "n=%lld, identical", (long long)n);
    else snprintf(buf, sizeof buf, "n=%lld, first difference at i=%lld (ref %d, got %d)",
                  (long long)n, (long long)bad, ref[bad], got[bad]);
    result(bad < 0, name, buf);
}

/* Rows that end in an FP8/FP4 rounding: at most max_flips values may differ, each by at most
 * rel_step·|ref| (one quantization step), all others bit-identical. */
void cmp_rounded(const char *name, const float *ref, const float *got, int64_t n,
                        int64_t max_flips, double rel_step) {
    int64_t flips = 0, worst = -1;
    int ok = 1;
    for (int64_t i = 0; i < n; i++) {
        if (memcmp(&ref[i], &got[i], sizeof(float)) == 0) continue;
        flips++;
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= rel_step * fabs((double)ref[i]) + 1e-30)) ok = 0;
        if (worst < 0) worst = i;
    }
    if (flips > max_flips) ok = 0;
    char buf[256];
    if (worst < 0) snprintf(buf, sizeof buf, "n=%lld, bit-identical", (long long)n);
    else snprintf(buf, sizeof buf,
                  "n=%lld, %lld values not bit-equal (limit %lld, each <= one rounding step, "
                  "%.3g*|ref|), "
                  "first at i=%lld (ref %.9g, got %.9g)",
                  (long long)n, (long long)flips, (long long)max_flips, rel_step,
                  (long long)worst, (double)ref[worst], (double)got[worst]);
    result(ok, name, buf);
}

double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

void test_moe_dec(int do_bench); /* test_cuda_moe_dec.c: routed-expert products (h1) */
void test_refmath(void);         /* test_cuda_refmath.c: exp / log1p / cos / sin, both sides */

int test_cuda_layer_ops(int do_bench, int *n_pass, int *n_fail) {
    g_pass = n_pass;
    g_fail = n_fail;
    int before = *n_fail;
    test_rmsnorm();
    test_softmax();
    test_rope();
    test_refmath();
    test_hadamard();
    test_qat();
    test_hc();
    test_moe();
    test_argmax();
    test_sample_dev();
    test_attention();
    test_compressor();
    test_indexer();
    test_matmul();
    test_fuse3();
    test_moe_dec(do_bench);
    if (do_bench) {
        bench_elem_ops();
        bench_sample_dev();
        bench_attn_ops();
        bench_matmul();
    }
    return *n_fail > before;
}
