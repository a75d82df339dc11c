/* tests/test_model_compressor.c — MODEL_MATH §15 #6: the streaming compressor (token by token,
 * §6.4) equals batched pooling computed straight from §6.1/§6.2 in f64, for ratio 4
 * (overlapping) and ratio 128, over S in {1,3,4,5,127,128,129,1000} tokens; ratio-4 entry 0
 * pools only its own 4 tokens. The QAT and RoPE steps are neutralised (RoPE over all dims at
 * frequency 0 = identity, no FP8 dims) so the pooling itself is what is compared. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/compressor.h"

#define DIM 64

static double drand(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(*s >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

static void check_ratio(int64_t ratio, int64_t S) {
    int64_t coff = ratio == 4 ? 2 : 1, w = coff * DIM;
    uint64_t seed = 99 + (uint64_t)ratio * 1000 + (uint64_t)S;
    float *A = malloc(sizeof(float) * (size_t)(S * w)), *B = malloc(sizeof(float) * (size_t)(S * w));
    float *ape = malloc(sizeof(float) * (size_t)(ratio * w)), norm[DIM], freqs[DIM / 2];
    for (int64_t i = 0; i < S * w; i++) { A[i] = (float)drand(&seed); B[i] = (float)(2 * drand(&seed)); }
    for (int64_t i = 0; i < ratio * w; i++) ape[i] = (float)(0.3 * drand(&seed));
    for (int i = 0; i < DIM; i++) norm[i] = 1.0f;
    memset(freqs, 0, sizeof freqs);
    compressor_weights cw = {ratio, coff, DIM, {0}, {0}, ape, norm};
    kv_comp c = {ratio, coff, DIM, S / ratio + 1, NULL, NULL, NULL};
    c.rows = calloc((size_t)(c.cap * DIM), sizeof(float));
    c.st_kv = malloc(sizeof(float) * (size_t)(coff * ratio * w));
    c.st_sc = malloc(sizeof(float) * (size_t)(coff * ratio * w));
    for (int64_t i = 0; i < coff * ratio * w; i++) { c.st_kv[i] = 0; c.st_sc[i] = -INFINITY; }
    int64_t emitted = 0;
    for (int64_t t = 0; t < S; t++)
        emitted += comp_push(&c, &cw, A + t * w, B + t * w, t, COMP_ATTN, freqs, DIM, 1e-6f);
    cr_assert_eq(emitted, S / ratio, "ratio %lld S %lld: %lld entries", (long long)ratio,
                 (long long)S, (long long)emitted);
    for (int64_t j = 0; j < S / ratio; j++) {
        double P[DIM], ss = 0;
        for (int ch = 0; ch < DIM; ch++) {
            /* candidates: own window through the last lane; for ratio 4 also the previous
             * window through the first lane (absent for j = 0). */
            double mx = -INFINITY, den = 0, num = 0;
            for (int pass = 0; pass < 2; pass++) {
                for (int64_t s = (j - (coff - 1)) * ratio; s < (j + 1) * ratio; s++) {
                    if (s < 0) continue;
                    int64_t off = (coff == 2 && s >= j * ratio) ? DIM : 0;
                    double b = (double)B[s * w + off + ch] + ape[(s % ratio) * w + off + ch];
                    if (pass == 0) { if (b > mx) mx = b; continue; }
                    double e = exp(b - mx);
                    den += e;
                    num += e * A[s * w + off + ch];
                }
            }
            P[ch] = num / den;
            ss += P[ch] * P[ch];
        }
        double r = 1.0 / sqrt(ss / DIM + 1e-6);
        for (int ch = 0; ch < DIM; ch++) {
            double ref = P[ch] * r;
            float got = c.rows[j * DIM + ch];
            cr_assert(fabs(got - ref) <= 2e-5 * (1 + fabs(ref)),
                      "ratio %lld S %lld entry %lld ch %d: batch %.7f streaming %.7f",
                      (long long)ratio, (long long)S, (long long)j, ch, ref, got);
        }
    }
    free(A); free(B); free(ape); free(c.rows); free(c.st_kv); free(c.st_sc);
}

Test(model_compressor, streaming_equals_batch_pooling) {
    const int64_t sizes[] = {1, 3, 4, 5, 127, 128, 129, 1000};
    for (int i = 0; i < 8; i++) {
        check_ratio(4, sizes[i]);
        check_ratio(128, sizes[i]);
    }
}
