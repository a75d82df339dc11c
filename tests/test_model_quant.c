/* tests/test_model_quant.c — quantized weights (Q8_0, Q2_K, Q4_K, IQ2_XXS) through the CPU
 * forward pass: (1) on a random-weight model whose expert width (256) fits the K-quant block,
 * the quantized path in exact-activation mode equals the f32 path run on the dequantized
 * weights within 1e-3 (the default path, with ds4's quantized activations, within KL/top-1
 * bounds); (2) KL divergence and
 * top-1 agreement of the tiny-v4 q8_0/q2/q4 conversions against the golden float logits
 * (reported, as quantization quality is; asserted only against loose sanity bounds). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_model_util.h"
#include "testutil.h"

/* Mean KL(P_ref || P_q) over positions (natural log) and top-1 agreement. */
static void kl_top1(const float *ref, const float *q, int64_t T, int64_t V, double *kl_mean,
                    double *kl_max, double *top1) {
    double sum = 0, mx = 0;
    int64_t agree = 0;
    for (int64_t t = 0; t < T; t++) {
        const float *a = ref + t * V, *b = q + t * V;
        double ma = -INFINITY, mb = -INFINITY, sa = 0, sb = 0;
        for (int64_t i = 0; i < V; i++) { if (a[i] > ma) ma = a[i]; if (b[i] > mb) mb = b[i]; }
        for (int64_t i = 0; i < V; i++) { sa += exp(a[i] - ma); sb += exp(b[i] - mb); }
        double la = ma + log(sa), lb = mb + log(sb), kl = 0;
        for (int64_t i = 0; i < V; i++) {
            double pa = a[i] - la;
            kl += exp(pa) * (pa - (b[i] - lb));
        }
        sum += kl;
        if (kl > mx) mx = kl;
        agree += tm_argmax(a, V) == tm_argmax(b, V);
    }
    *kl_mean = sum / (double)T;
    *kl_max = mx;
    *top1 = (double)agree / (double)T;
}

/* All-position logits of toks[0, T) through one model (exact: exact-activation mode). */
static float *run_all_ex(const char *path, const int32_t *toks, int64_t T, int64_t *V, bool exact) {
    tm_model tm;
    ds4_error oerr = {0};
    cr_assert_eq(gguf_open(&tm.g, path, &oerr), DS4_OK, "gguf_open %s: %s", path, oerr.msg);
    model_options mo = {.exact_activations = exact};
    cr_assert_eq(model_open(&tm.m, tm.g, &mo, &oerr), DS4_OK, "model_open %s: %s", path, oerr.msg);
    *V = model_get_hparams(tm.m)->n_vocab;
    float *lg = malloc((size_t)(T * *V) * sizeof(float));
    model_state *st;
    ds4_error err = {0};
    cr_assert_eq(model_state_create(&st, tm.m, T, &err), DS4_OK, "%s", err.msg);
    model_eval_opts o = {MODEL_LOGITS_ALL, lg, NULL, NULL};
    cr_assert_eq(model_eval(tm.m, st, toks, T, &o, &err), DS4_OK, "%s: %s", path, err.msg);
    model_state_free(st);
    tm_close(&tm);
    return lg;
}

static float *run_all(const char *path, const int32_t *toks, int64_t T, int64_t *V) {
    return run_all_ex(path, toks, T, V, false);
}

static void quant_vs_dequant(const char *preset) {
    char *shape = tu_join(getenv("DS4_TEST_DATA") ? getenv("DS4_TEST_DATA") : "tests/data",
                          "model/synthetic_q.json");
    char *q = tm_convert_synthetic(shape, preset, 0, 0, 7);
    char *dir = tu_tmpdir();
    char *f = tu_join(dir, "dequant.gguf");
    tm_rewrite_gguf(q, f, true, NULL, NULL, 0);
    st_file *gf = tm_golden("golden_topk16.safetensors");
    uint64_t T;
    const int32_t *toks = tm_i32(gf, "short.tokens", &T);
    int64_t V;
    float *a = run_all(q, toks, (int64_t)T, &V);
    float *b = run_all(f, toks, (int64_t)T, &V);
    int64_t at;
    double e = tm_max_abs(a, b, (int64_t)T * V, &at), kl, klmax, top1;
    kl_top1(b, a, (int64_t)T, V, &kl, &klmax, &top1);
    printf("%s synthetic (expert width 256), quantized vs dequantized-f32 weights: max |diff| "
           "%.3g, KL mean %.3g max %.3g, top-1 %.1f%%\n", preset, e, kl, klmax, 100 * top1);
    /* The default path also quantizes activations (Q8_0 / Q8_K records, as ds4 does), so the
     * model-level difference is that noise (~0.2%% per product) carried through FP8 rounding;
     * per-product equality with the dequantized f32 path is asserted in test_cpu_matmul.c. */
    cr_assert(top1 >= 0.8, "%s: top-1 agreement %.3f < 0.8", preset, top1);
    cr_assert(kl <= 0.01, "%s: mean KL %.3g > 0.01", preset, kl);
    /* Issue #3 criterion, in exact-activation mode: the quantized weights dotted with f32
     * activations equal the f32 path on the dequantized weights within 1e-3 on every logit
     * (the product is the same F32 kernel on the same decoded values, so expected: 0). */
    float *x = run_all_ex(q, toks, (int64_t)T, &V, true);
    double ex = tm_max_abs(x, b, (int64_t)T * V, &at);
    printf("%s synthetic, exact activations vs dequantized-f32 weights: max |diff| %.3g over "
           "%lld logits\n", preset, ex, (long long)((int64_t)T * V));
    cr_assert(ex <= 1e-3, "%s exact activations: max |diff| %.3g > 1e-3 at pos %lld vocab %lld "
              "(dequantized %.6f, quantized %.6f)", preset, ex, (long long)(at / V),
              (long long)(at % V), b[at], x[at]);
    /* The mode must really change the path: the default one differs (activation rounding). */
    cr_assert(e > 0, "%s: default path equals the exact one; activations were not quantized", preset);
    free(x);
    free(a);
    free(b);
    st_close(gf);
    tm_remove(f);
    tm_rmdir(dir);
    tm_remove(q);
    free(shape);
}

Test(model_quant, q8_0_equals_dequantized_f32, .timeout = 120) { quant_vs_dequant("q8_0"); }
Test(model_quant, q2_equals_dequantized_f32, .timeout = 120) { quant_vs_dequant("q2"); }
Test(model_quant, q4_equals_dequantized_f32, .timeout = 120) { quant_vs_dequant("q4"); }

/* KL divergence and top-1 agreement of the quantized tiny-v4 conversions against the golden
 * float logits (short + window prefill and decode). Reported; the bounds only catch a broken
 * path (a wrong kernel gives KL ~1 and chance-level top-1). */
static void quant_vs_golden(const char *preset, double max_kl, double min_top1) {
    char *p = tm_convert_tiny(preset);
    st_file *gf = tm_golden("golden_topk16.safetensors");
    const char *cases[2] = {"short", "window"};
    for (int c = 0; c < 2; c++) {
        char nm[64];
        uint64_t T;
        snprintf(nm, sizeof nm, "%s.tokens", cases[c]);
        const int32_t *toks = tm_i32(gf, nm, &T);
        int64_t V;
        float *lg = run_all(p, toks, (int64_t)T, &V);
        snprintf(nm, sizeof nm, "%s.prefill_logits", cases[c]);
        const float *g = tm_f32(gf, nm, NULL);
        double kl, klmax, top1;
        kl_top1(g, lg, (int64_t)T, V, &kl, &klmax, &top1);
        printf("tiny-v4 %s vs golden float logits, %s prefill (%llu positions): KL mean %.4g "
               "max %.4g, top-1 agreement %.1f%%\n", preset, cases[c], (unsigned long long)T, kl,
               klmax, 100 * top1);
        cr_assert(kl <= max_kl && top1 >= min_top1, "%s %s: KL %.3g (max %.3g), top-1 %.3f (min %.3f)",
                  preset, cases[c], kl, max_kl, top1, min_top1);
        free(lg);
    }
    st_close(gf);
    tm_remove(p);
}

Test(model_quant, q8_0_kl_vs_golden, .timeout = 120) { quant_vs_golden("q8_0", 0.05, 0.8); }
Test(model_quant, q4_kl_vs_golden, .timeout = 120) { quant_vs_golden("q4", 0.2, 0.5); }
Test(model_quant, q2_kl_vs_golden, .timeout = 120) { quant_vs_golden("q2", 0.5, 0.3); }
