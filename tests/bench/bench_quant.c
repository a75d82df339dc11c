/*
 * tests/bench/bench_quant.c — throughput of the quant dot kernels (GB/s of weight bytes
 * streamed), scalar versus AVX2, one thread; then of the encoders (MB/s of f32 input, the
 * converter's cost). A benchmark, not a test: nothing is asserted;
 * numbers go to docs/BENCHMARKS.md ("Quant dot kernels").
 *
 * Build and run (after `make`):
 *   cc -O2 -std=c11 -D_GNU_SOURCE -ffp-contract=off -Iinclude -Isrc tests/bench/bench_quant.c \
 *      build/libds4.a -lm -lpthread -o build/bench_quant && build/bench_quant [MiB] [dots] [rows]
 * A second argument `dots` skips the encoders; `rows` (default 4) is the number of activation
 * rows of the q_dot_rows table. A small MiB (1) keeps the matrix in L2 and so
 * shows the kernels' compute rate; the default 64 MiB streams from memory.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "format/quant.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);   /* CPU time: the dev box is shared */
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    double mib = argc > 1 ? atof(argv[1]) : 64.0;
    enum { N = 4096 };   /* row width: the Flash hidden size */
    static const int types[] = {Q_TYPE_F32, Q_TYPE_F16, Q_TYPE_BF16, Q_TYPE_Q8_0,
                                Q_TYPE_Q4_K, Q_TYPE_Q2_K, Q_TYPE_IQ2_XXS};
    float *x = malloc(N * sizeof(float));
    uint64_t seed = 1;
    for (int i = 0; i < N; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        x[i] = (float)((int)(seed >> 40) % 2001 - 1000) * 1e-3f;
    }
    q8k_block ak[N / 256];
    q8act_block a8[N / 32];
    q_quantize_q8k(x, ak, N, NULL);
    q_quantize_q8act(x, a8, N, NULL);
    printf("%-8s %10s %10s %10s\n", "type", "scalar", "avx2", "speedup");
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        int type = types[t];
        uint64_t rb;
        q_row_bytes(type, N, &rb, NULL);
        size_t rows = (size_t)(mib * 1048576.0 / (double)rb);
        uint8_t *w = malloc(rows * rb);
        /* Real encoded rows (a few distinct ones, repeated), so the data is representative. */
        for (size_t r = 0; r < rows; r++) {
            if (r < 8) {
                for (int i = 0; i < N; i++) x[i] = x[(i * 7 + (int)r) % N] * 0.05f;
                q_encode_row(type, x, w + r * rb, N, NULL, NULL);
            } else {
                memcpy(w + r * rb, w + (r % 8) * rb, rb);
            }
        }
        const void *act = q_act_kind_for(type) == Q_ACT_F32 ? (const void *)x
                        : q_act_kind_for(type) == Q_ACT_Q8_0 ? (const void *)a8 : (const void *)ak;
        double gbs[2] = {0, 0};
        volatile float sink = 0;
        for (int simd = 0; simd <= 1; simd++) {
            q_set_simd(simd);
            if (simd && !q_simd_enabled()) break;
            q_dot_fn f = q_dot_kernel(type);
            double best = 1e30;
            for (int rep = 0; rep < 3; rep++) {
                double t0 = now_s();
                for (size_t r = 0; r < rows; r++) sink += f(w + r * rb, act, N);
                double dt = now_s() - t0;
                if (dt < best) best = dt;
            }
            gbs[simd] = (double)(rows * rb) / best / 1e9;
        }
        printf("%-8s %10.2f %10.2f %9.1fx\n", q_type_name(type), gbs[0], gbs[1],
               gbs[0] > 0 ? gbs[1] / gbs[0] : 0.0);
        (void)sink;
        free(w);
    }

    /* One weight row against n_act activation rows (q_dot_rows): GB/s of weight bytes × rows,
     * so it compares with the single-row column (each row counted as its own weight pass). */
    int n_act = argc > 3 ? atoi(argv[3]) : 4;
    if (n_act < 1 || n_act > 64) n_act = 4;
    q8k_block *ak4 = malloc(n_act * sizeof ak);
    q8act_block *a84 = malloc(n_act * sizeof a8);
    float *x4 = malloc(n_act * N * sizeof(float));
    for (int r = 0; r < n_act; r++) {
        for (int i = 0; i < N; i++) x4[r * N + i] = x[(i * 3 + r) % N];
        q_quantize_q8k(x4 + r * N, ak4 + r * (N / 256), N, NULL);
        q_quantize_q8act(x4 + r * N, a84 + r * (N / 32), N, NULL);
    }
    printf("\n%-8s %10s %10s   (q_dot_rows, %d activation rows, GB/s of weight bytes x rows)\n",
           "type", "scalar", "avx2", n_act);
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        int type = types[t];
        uint64_t rb;
        q_row_bytes(type, N, &rb, NULL);
        size_t rows = (size_t)(mib * 1048576.0 / (double)rb);
        uint8_t *w = malloc(rows * rb);
        for (size_t r = 0; r < rows; r++) {
            if (r < 8) q_encode_row(type, x4 + (r % n_act) * N, w + r * rb, N, NULL, NULL);
            else memcpy(w + r * rb, w + (r % 8) * rb, rb);
        }
        q_act_kind k = q_act_kind_for(type);
        const void *act = k == Q_ACT_F32 ? (const void *)x4 : k == Q_ACT_Q8_0 ? (const void *)a84
                                                                                : (const void *)ak4;
        size_t stride = q_act_row_bytes(type, N);
        double gbs[2] = {0, 0};
        float out[64];
        volatile float sink = 0;
        for (int simd = 0; simd <= 1; simd++) {
            q_set_simd(simd);
            if (simd && !q_simd_enabled()) break;
            q_dot_rows_fn f = q_dot_rows_kernel(type);
            double best = 1e30;
            for (int rep = 0; rep < 3; rep++) {
                double t0 = now_s();
                for (size_t r = 0; r < rows; r++) {
                    f(w + r * rb, act, stride, n_act, N, out);
                    sink += out[0];
                }
                double dt = now_s() - t0;
                if (dt < best) best = dt;
            }
            gbs[simd] = (double)(rows * rb) * n_act / best / 1e9;
        }
        printf("%-8s %10.2f %10.2f\n", q_type_name(type), gbs[0], gbs[1]);
        (void)sink;
        free(w);
    }
    free(x4);
    free(a84);
    free(ak4);

    if (argc > 2 && strcmp(argv[2], "dots") == 0) {
        free(x);
        return 0;
    }

    /* Encoders (the converter's cost): MB/s of f32 input, one thread, 4 MiB of rows. */
    enum { ROWS = 256 };
    float *src = malloc((size_t)ROWS * N * sizeof(float)), *imp = malloc(N * sizeof(float));
    uint8_t *dst = malloc((size_t)N * 4);
    for (size_t i = 0; i < (size_t)ROWS * N; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        src[i] = (float)((int)(seed >> 40) % 2001 - 1000) * 2e-5f;
    }
    for (int i = 0; i < N; i++) imp[i] = 1.0f + (float)(i % 7);
    q_encode_row(Q_TYPE_IQ2_XXS, src, dst, N, NULL, NULL);   /* builds the IQ2 tables */
    printf("\n%-8s %14s %14s   (encode, MB/s of f32 input)\n", "type", "no importance", "importance");
    static const int enc_types[] = {Q_TYPE_F16, Q_TYPE_BF16, Q_TYPE_Q8_0, Q_TYPE_Q4_K,
                                    Q_TYPE_Q2_K, Q_TYPE_IQ2_XXS};
    for (size_t t = 0; t < sizeof enc_types / sizeof enc_types[0]; t++) {
        double mbs[2];
        for (int wi = 0; wi < 2; wi++) {
            double t0 = now_s();
            for (int r = 0; r < ROWS; r++)
                q_encode_row(enc_types[t], src + (size_t)r * N, dst, N, wi ? imp : NULL, NULL);
            mbs[wi] = (double)ROWS * N * sizeof(float) / (now_s() - t0) / 1e6;
        }
        printf("%-8s %14.1f %14.1f\n", q_type_name(enc_types[t]), mbs[0], mbs[1]);
    }
    free(dst);
    free(imp);
    free(src);
    free(x);
    return 0;
}
