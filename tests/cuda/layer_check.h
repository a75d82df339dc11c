/*
 * tests/cuda/layer_check.h — helpers shared by the CUDA layer-op tests (test_cuda_layer*.c):
 * seeded random inputs, device allocations freed per case, and the comparisons that print
 * name, n, worst index, ref and got (STYLE.md §6-7). Test code only.
 */
#ifndef DS4_TESTS_CUDA_LAYER_CHECK_H
#define DS4_TESTS_CUDA_LAYER_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "ds4.h"

/* Entry point called by the runner (test_cuda_ops.c): adds to *n_pass / *n_fail. */
int test_cuda_layer_ops(int do_bench, int *n_pass, int *n_fail);

uint64_t rnd_u64(void);
float rnd_unit(void);
float rnd_normal(void);
float *rnd_vec(int64_t n, float scale); /* malloc'd, N(0, scale²) */

void *dev_alloc(size_t n_bytes);
void *dev_put(const void *h, size_t n_bytes);
void dev_get(void *h, const void *d, size_t n_bytes);
void dev_free_all(void);

int ok_call(ds4_status st, const char *what, const ds4_error *err);
void result(int ok, const char *name, const char *detail);
void cmp_f32(const char *name, const float *ref, const float *got, int64_t n, double rel,
             double abs_tol);
void cmp_i32(const char *name, const int32_t *ref, const int32_t *got, int64_t n);
void cmp_rounded(const char *name, const float *ref, const float *got, int64_t n,
                 int64_t max_flips, double rel_step);
double now_s(void);

/* The cases, by op family. */
void test_rmsnorm(void);
void test_softmax(void);
void test_rope(void);
void test_hadamard(void);
void test_qat(void);
void test_hc(void);
void test_moe(void);
void test_argmax(void);
void test_sample_dev(void);  /* test_cuda_sample.c */
void test_attention(void);
void test_compressor(void);
void test_indexer(void);
void test_matmul(void);
void test_fuse3(void); /* test_cuda_fuse3.c: decode launch fusions = the separate ops */
/* Times `iters` back-to-back calls of one op (after one warm-up call) and prints a "bench"
 * line in microseconds per call, or the failure. */
#define BENCH(label, iters, call)                                                              \
    do {                                                                                       \
        ds4_error e_;                                                                          \
        ds4_status s_ = (call);                                                                \
        cuda_sync(&e_);                                                                        \
        double t0_ = now_s();                                                                  \
        for (int i_ = 0; i_ < (iters) && !s_; i_++) s_ = (call);                               \
        cuda_sync(&e_);                                                                        \
        double us_ = (now_s() - t0_) / (iters) * 1e6;                                          \
        if (s_) printf("bench %-44s failed: %s\n", label, e_.msg);                             \
        else printf("bench %-44s %9.2f us\n", label, us_);                                     \
    } while (0)

void bench_elem_ops(void);
void bench_sample_dev(void); /* test_cuda_sample.c */
void bench_attn_ops(void);
void bench_matmul(void);

#endif
