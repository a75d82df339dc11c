/* tests/test_cpu_matmul.c — cpu_matmul for every weight type equals the f32 product of the
 * dequantized weights with the dequantized (Q8_0 / Q8_K) activation, does not depend on the
 * batch size or the thread count, and decodes rows exactly; in exact-activation mode it equals
 * the F32 product of the decoded weights bit for bit. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/threadpool.h"
#include "cpu/matmul.h"
#include "format/quant.h"

#define N_IN 512
#define N_OUT 40
#define N_TOK 5

static float frand(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xFFFF) / 32768.0f - 1.0f;
}

/* x̃: the activation as the kernel sees it. */
static void dequant_act(int type, const float *x, float *xt) {
    ds4_error err;
    q_act_kind k = q_act_kind_for(type);
    if (k == Q_ACT_F32) {
        memcpy(xt, x, N_IN * sizeof(float));
    } else if (k == Q_ACT_Q8_0) {
        q8act_block b[N_IN / 32];
        cr_assert_eq(q_quantize_q8act(x, b, N_IN, &err), DS4_OK);
        for (int i = 0; i < N_IN; i++) xt[i] = b[i / 32].d * b[i / 32].q[i % 32];
    } else {
        q8k_block b[N_IN / 256];
        cr_assert_eq(q_quantize_q8k(x, b, N_IN, &err), DS4_OK);
        for (int i = 0; i < N_IN; i++) xt[i] = b[i / 256].d * b[i / 256].q[i % 256];
    }
}

static void check_type(int type) {
    ds4_error err = {0};
    uint32_t seed = 12345u + (uint32_t)type;
    uint64_t rb;
    cr_assert_eq(q_row_bytes(type, N_IN, &rb, &err), DS4_OK, "%s", err.msg);
    uint8_t *wq = malloc(rb * N_OUT);
    float *wf = malloc(sizeof(float) * N_IN * N_OUT);
    for (int r = 0; r < N_OUT; r++) {
        float row[N_IN];
        for (int i = 0; i < N_IN; i++) row[i] = frand(&seed) * 0.05f;
        cr_assert_eq(q_encode_row(type, row, wq + r * rb, N_IN, NULL, &err), DS4_OK, "%s", err.msg);
    }
    cpu_mat w = {"test", type, N_IN, N_OUT, rb, wq};
    for (int r = 0; r < N_OUT; r++)
        cr_assert_eq(cpu_mat_row_f32(&w, r, wf + r * N_IN, &err), DS4_OK, "%s", err.msg);
    float x[N_TOK][N_IN], y[N_TOK][N_OUT], y1[N_OUT];
    for (int t = 0; t < N_TOK; t++)
        for (int i = 0; i < N_IN; i++) x[t][i] = frand(&seed) * (1.0f + (float)t);
    ds4_pool *pool;
    cr_assert_eq(ds4_pool_create(&pool, 2, &err), DS4_OK);
    cpu_buf act = {0};
    cr_assert_eq(cpu_matmul(pool, &w, &x[0][0], N_IN, N_TOK, &y[0][0], N_OUT, &act, &err), DS4_OK,
                 "%s", err.msg);
    for (int t = 0; t < N_TOK; t++) {
        float xt[N_IN];
        dequant_act(type, x[t], xt);
        for (int o = 0; o < N_OUT; o++) {
            double ref = 0, mag = 0;
            for (int i = 0; i < N_IN; i++) {
                ref += (double)wf[o * N_IN + i] * xt[i];
                mag += fabs((double)wf[o * N_IN + i] * xt[i]);
            }
            cr_assert(fabs(y[t][o] - ref) <= 1e-5 * mag + 1e-30,
                      "%s tok %d row %d: dequantized f32 %.8g, quantized path %.8g (tol %.3g)",
                      q_type_name(type), t, o, ref, y[t][o], 1e-5 * mag);
        }
        /* Batch-size and thread-count invariance: bit-identical. */
        cr_assert_eq(cpu_matmul(NULL, &w, x[t], N_IN, 1, y1, N_OUT, &act, &err), DS4_OK);
        for (int o = 0; o < N_OUT; o++)
            cr_assert_eq(y1[o], y[t][o], "%s tok %d row %d: batch %.9g single %.9g",
                         q_type_name(type), t, o, y[t][o], y1[o]);
    }
    /* Exact-activation mode: bit-identical to the F32 matrix of the decoded weights (what the
     * dequantized GGUF runs), batched on the pool and token by token inline, and within
     * 1e-5·Σ|w·x| of the double product with the unrounded activation. */
    cpu_mat wd = {"test-f32", Q_TYPE_F32, N_IN, N_OUT, N_IN * sizeof(float), (const uint8_t *)wf};
    float yd[N_TOK][N_OUT], ye[N_TOK][N_OUT];
    cpu_buf ex = {0};
    ex.exact_act = true;
    cr_assert_eq(cpu_matmul(NULL, &wd, &x[0][0], N_IN, N_TOK, &yd[0][0], N_OUT, &act, &err), DS4_OK);
    cr_assert_eq(cpu_matmul(pool, &w, &x[0][0], N_IN, N_TOK, &ye[0][0], N_OUT, &ex, &err), DS4_OK,
                 "%s", err.msg);
    for (int t = 0; t < N_TOK; t++) {
        cr_assert_eq(cpu_matmul(NULL, &w, x[t], N_IN, 1, y1, N_OUT, &ex, &err), DS4_OK);
        for (int o = 0; o < N_OUT; o++) {
            double ref = 0, mag = 0;
            for (int i = 0; i < N_IN; i++) {
                ref += (double)wf[o * N_IN + i] * x[t][i];
                mag += fabs((double)wf[o * N_IN + i] * x[t][i]);
            }
            cr_assert_eq(ye[t][o], yd[t][o], "%s exact tok %d row %d: %.9g, dequantized F32 %.9g",
                         q_type_name(type), t, o, ye[t][o], yd[t][o]);
            cr_assert_eq(y1[o], yd[t][o], "%s exact single tok %d row %d", q_type_name(type), t, o);
            cr_assert(fabs(ye[t][o] - ref) <= 1e-5 * mag + 1e-30, "%s exact tok %d row %d: %.8g vs %.8g",
                      q_type_name(type), t, o, ye[t][o], ref);
        }
    }
    cpu_buf_free(&ex);
    cpu_buf_free(&act);
    ds4_pool_free(pool);
    free(wq);
    free(wf);
}

Test(cpu_matmul, f32_f16_bf16_match_dequantized) {
    check_type(Q_TYPE_F32);
    check_type(Q_TYPE_F16);
    check_type(Q_TYPE_BF16);
}
Test(cpu_matmul, q8_0_matches_dequantized) { check_type(Q_TYPE_Q8_0); }
Test(cpu_matmul, q2_k_matches_dequantized) { check_type(Q_TYPE_Q2_K); }
Test(cpu_matmul, q4_k_matches_dequantized) { check_type(Q_TYPE_Q4_K); }
Test(cpu_matmul, iq2_xxs_matches_dequantized) { check_type(Q_TYPE_IQ2_XXS); }

Test(cpu_matmul, strided_input_and_output) {
    /* ldx/ldy larger than the row: the grouped output projection (MODEL_MATH §5.6) uses this. */
    ds4_error err = {0};
    float w[4 * 32], x[2 * 64], y[2 * 8];
    for (int i = 0; i < 4 * 32; i++) w[i] = (float)(i % 7) - 3.0f;
    for (int i = 0; i < 2 * 64; i++) x[i] = (float)(i % 5) * 0.5f;
    for (int i = 0; i < 16; i++) y[i] = -99.0f;
    cpu_mat m = {"w", Q_TYPE_F32, 32, 4, 32 * 4, (const uint8_t *)w};
    cpu_buf act = {0};
    cr_assert_eq(cpu_matmul(NULL, &m, x + 16, 64, 2, y + 2, 8, &act, &err), DS4_OK, "%s", err.msg);
    for (int t = 0; t < 2; t++) {
        for (int o = 0; o < 4; o++) {
            float ref = 0;
            for (int i = 0; i < 32; i++) ref += w[o * 32 + i] * x[16 + t * 64 + i];
            cr_assert_eq(y[2 + t * 8 + o], ref);
        }
        cr_assert_eq(y[t * 8], -99.0f);
        cr_assert_eq(y[t * 8 + 6], -99.0f); /* untouched outside the written columns */
    }
    cpu_buf_free(&act);
}
