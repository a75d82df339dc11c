/*
 * tests/test_quant_encode.c — the weight encoders: byte-exactness against ds4's converter on
 * the published real blocks (quants README §3.2, §8), encode→decode error bounds per type on
 * Gaussian rows, the effect of importance weights, and dot == decode-then-dot (README §7.2).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/quant.h"
#include "format/quant_impl.h"
#include "testutil.h"

static void *read_q(const char *name, size_t *len) {
    char rel[256];
    snprintf(rel, sizeof rel, "testdata/quants/%s", name);
    return tu_read_shared(rel, len);
}

/* Encodes the rows of <stem>.src.f32 with the per-row recipe of README §3.2 and counts how
 * many of the 64 real blocks equal the published bytes; prints the first mismatches. */
typedef enum { IMP_NONE, IMP_ONES, IMP_FALLBACK_PAIR } imp_kind;

static int count_exact(int type, const char *stem, int n_rows, const imp_kind *recipe) {
    char name[64];
    size_t ns, nb;
    snprintf(name, sizeof name, "%s.src.f32", stem);
    float *src = read_q(name, &ns);
    snprintf(name, sizeof name, "%s.blocks", stem);
    uint8_t *want = read_q(name, &nb);
    size_t n_cols = ns / 4 / (size_t)n_rows;
    size_t bb = q_block_bytes(type), be = q_block_elems(type);
    size_t blocks_per_row = n_cols / be;
    cr_assert_eq(blocks_per_row * (size_t)n_rows, 64, "%s: expected 64 real blocks", stem);
    uint8_t *got = malloc(64 * bb);
    float *imp = malloc(2 * n_cols * sizeof(float));
    for (int r = 0; r < n_rows; r++) {
        const float *x = src + (size_t)r * n_cols;
        const float *w = NULL;
        if (recipe[r] == IMP_ONES) {
            for (size_t c = 0; c < n_cols; c++) imp[c] = 1.0f;
            w = imp;
        } else if (recipe[r] == IMP_FALLBACK_PAIR) {
            /* The converter's synthetic importance over the 2-row matrix (r & ~1, r | 1). */
            q_importance_fallback(src + (size_t)(r & ~1) * n_cols, 2, n_cols, imp);
            w = imp;
        }
        ds4_error err = {0};
        cr_assert_eq(q_encode_row(type, x, got + (size_t)r * blocks_per_row * bb, n_cols, w, &err),
                     DS4_OK, "%s", err.msg);
    }
    int exact = 0, shown = 0;
    for (int b = 0; b < 64; b++) {
        if (memcmp(got + b * bb, want + b * bb, bb) == 0) {
            exact++;
        } else if (shown++ < 3) {
            size_t i = 0;
            while (got[b * bb + i] == want[b * bb + i]) i++;
            fprintf(stderr, "%s encode: block %d differs first at byte %zu: expected 0x%02x got 0x%02x\n",
                    stem, b, i, want[b * bb + i], got[b * bb + i]);
        }
    }
    fprintf(stderr, "%s encoder: %d/64 real blocks byte-exact\n", stem, exact);
    free(imp);
    free(got);
    free(want);
    free(src);
    return exact;
}

Test(quant_encode, q8_0_reproduces_published_blocks) {
    const imp_kind r[2] = {IMP_NONE, IMP_NONE};
    cr_assert_eq(count_exact(Q_TYPE_Q8_0, "Q8_0", 2, r), 64);
}

Test(quant_encode, q2_k_reproduces_published_blocks) {
    const imp_kind r[8] = {IMP_NONE, IMP_NONE, IMP_ONES, IMP_ONES,
                           IMP_NONE, IMP_NONE, IMP_ONES, IMP_ONES};
    cr_assert_eq(count_exact(Q_TYPE_Q2_K, "Q2_K", 8, r), 64);
}

Test(quant_encode, q4_k_reproduces_published_blocks) {
    const imp_kind r[4] = {IMP_NONE, IMP_NONE, IMP_ONES, IMP_ONES};
    cr_assert_eq(count_exact(Q_TYPE_Q4_K, "Q4_K", 4, r), 64);
}

Test(quant_encode, iq2_xxs_reproduces_published_blocks) {
    const imp_kind r[4] = {IMP_FALLBACK_PAIR, IMP_FALLBACK_PAIR, IMP_ONES, IMP_ONES};
    cr_assert_eq(count_exact(Q_TYPE_IQ2_XXS, "IQ2_XXS", 4, r), 64);
}
