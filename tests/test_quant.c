/*
 * tests/test_quant.c — known answers for the block formats (../shared/testdata/quants,
 * README §3-§5): every decoder, both activation quantizers and every dot, bit for bit, on
 * the scalar path and on the AVX2 path; plus row-length validation.
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

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* Decodes every block of <T>.blocks and compares with <T>.f32 by bit pattern. */
static void check_decode(int type, const char *stem) {
    char name[64];
    size_t nb_bytes, nf_bytes;
    snprintf(name, sizeof name, "%s.blocks", stem);
    uint8_t *blocks = read_q(name, &nb_bytes);
    snprintf(name, sizeof name, "%s.f32", stem);
    float *want = read_q(name, &nf_bytes);
    size_t be = q_block_elems(type), bb = q_block_bytes(type);
    size_t n_blocks = nb_bytes / bb;
    cr_assert_eq(nb_bytes % bb, 0, "%s: %zu bytes is not whole blocks", stem, nb_bytes);
    cr_assert_eq(nf_bytes, n_blocks * be * 4, "%s: %zu f32 bytes for %zu blocks", stem, nf_bytes,
                 n_blocks);
    float *got = malloc(n_blocks * be * sizeof(float));
    ds4_error err = {0};
    cr_assert_eq(q_decode_row(type, blocks, got, n_blocks * be, &err), DS4_OK, "%s", err.msg);
    for (size_t i = 0; i < n_blocks * be; i++)
        cr_assert_eq(bits(got[i]), bits(want[i]),
                     "%s decode: block %zu index %zu: expected 0x%08x got 0x%08x", stem,
                     i / be, i % be, bits(want[i]), bits(got[i]));
    free(got);
    free(want);
    free(blocks);
}

Test(quant_decode, q8_0_matches_known_answers) { check_decode(Q_TYPE_Q8_0, "Q8_0"); }
Test(quant_decode, q2_k_matches_known_answers) { check_decode(Q_TYPE_Q2_K, "Q2_K"); }
Test(quant_decode, q4_k_matches_known_answers) { check_decode(Q_TYPE_Q4_K, "Q4_K"); }
Test(quant_decode, iq2_xxs_matches_known_answers) { check_decode(Q_TYPE_IQ2_XXS, "IQ2_XXS"); }
Test(quant_decode, f16_matches_known_answers) { check_decode(Q_TYPE_F16, "F16"); }
Test(quant_decode, bf16_matches_known_answers) { check_decode(Q_TYPE_BF16, "BF16"); }

Test(quant_decode, f32_is_a_copy) {
    float src[5] = {1.5f, -0.0f, INFINITY, 3e-45f, -7.25f}, got[5];
    cr_assert_eq(q_decode_row(Q_TYPE_F32, src, got, 5, NULL), DS4_OK);
    cr_assert_eq(memcmp(src, got, sizeof src), 0, "F32 decode must copy bits");
}

/* The converted prefix of F16/BF16.blocks comes from the converter's encoder (README §3.3). */
static void check_half_encoder(int type, const char *stem) {
    char name[64];
    size_t ns, nb;
    snprintf(name, sizeof name, "%s.src.f32", stem);
    float *src = read_q(name, &ns);
    snprintf(name, sizeof name, "%s.blocks", stem);
    uint16_t *want = read_q(name, &nb);
    size_t n = ns / 4;
    cr_assert(nb >= n * 2);
    uint16_t *got = malloc(n * 2);
    cr_assert_eq(q_encode_row(type, src, got, n, NULL, NULL), DS4_OK);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(got[i], want[i], "%s encode: value %zu (src 0x%08x): expected 0x%04x got 0x%04x",
                     stem, i, bits(src[i]), want[i], got[i]);
    free(got);
    free(want);
    free(src);
}

Test(quant_encode, f16_matches_converter) { check_half_encoder(Q_TYPE_F16, "F16"); }
Test(quant_encode, bf16_matches_converter) { check_half_encoder(Q_TYPE_BF16, "BF16"); }

/* ---- Activation quantizers (README §5) ---- */

static void check_q8k(bool simd) {
    q_set_simd(simd);
    size_t nx, ny;
    float *x = read_q("q8k_input.f32", &nx);
    uint8_t *want = read_q("q8k_expected.blocks", &ny);
    size_t n = nx / 4;
    cr_assert_eq(ny, n / 256 * sizeof(q8k_block));
    q8k_block *got = calloc(n / 256, sizeof *got);
    cr_assert_eq(q_quantize_q8k(x, got, n, NULL), DS4_OK);
    for (size_t b = 0; b < n / 256; b++)
        for (size_t i = 0; i < sizeof(q8k_block); i++)
            cr_assert_eq(((uint8_t *)got)[b * 292 + i], want[b * 292 + i],
                         "Q8_K (%s) block %zu byte %zu: expected 0x%02x got 0x%02x",
                         simd ? "avx2" : "scalar", b, i, want[b * 292 + i],
                         ((uint8_t *)got)[b * 292 + i]);
    free(got);
    free(want);
    free(x);
}

static void check_q8act(bool simd) {
    q_set_simd(simd);
    size_t nx, ny;
    float *x = read_q("q80act_input.f32", &nx);
    uint8_t *want = read_q("q80act_expected.blocks", &ny);
    size_t n = nx / 4;
    cr_assert_eq(ny, n / 32 * sizeof(q8act_block));
    q8act_block *got = calloc(n / 32, sizeof *got);
    cr_assert_eq(q_quantize_q8act(x, got, n, NULL), DS4_OK);
    for (size_t i = 0; i < ny; i++)
        cr_assert_eq(((uint8_t *)got)[i], want[i],
                     "Q8_0 activation (%s) record %zu byte %zu: expected 0x%02x got 0x%02x",
                     simd ? "avx2" : "scalar", i / 36, i % 36, want[i], ((uint8_t *)got)[i]);
    free(got);
    free(want);
    free(x);
}

Test(quant_act, q8k_scalar_matches_known_answers) { check_q8k(false); }
Test(quant_act, q8k_avx2_matches_known_answers) {
    if (!q_cpu_has_avx2()) cr_skip_test("CPU has no AVX2");
    check_q8k(true);
}
Test(quant_act, q8act_scalar_matches_known_answers) { check_q8act(false); }
Test(quant_act, q8act_avx2_matches_known_answers) {
    if (!q_cpu_has_avx2()) cr_skip_test("CPU has no AVX2");
    check_q8act(true);
}

/* ---- Dots (README §4): every weight block against every activation record ---- */

static void check_dots(int type, const char *stem, bool simd) {
    q_set_simd(simd);
    cr_assert_eq(q_simd_enabled(), simd);
    char name[64];
    size_t nw, na, nd;
    snprintf(name, sizeof name, "%s.blocks", stem);
    uint8_t *w = read_q(name, &nw);
    snprintf(name, sizeof name, "%s.dot_act.blocks", stem);
    uint8_t *act = read_q(name, &na);
    snprintf(name, sizeof name, "%s.dot.f32", stem);
    float *want = read_q(name, &nd);
    size_t be = q_block_elems(type), bb = q_block_bytes(type);
    size_t ab = type == Q_TYPE_Q8_0 ? sizeof(q8act_block) : sizeof(q8k_block);
    size_t n_w = nw / bb, n_a = na / ab;
    cr_assert_eq(nd, n_w * n_a * 4, "%s: dot file size", stem);
    for (size_t a = 0; a < n_a; a++)
        for (size_t b = 0; b < n_w; b++) {
            float got;
            ds4_error err = {0};
            cr_assert_eq(q_dot_row(type, w + b * bb, act + a * ab, be, &got, &err), DS4_OK, "%s",
                         err.msg);
            float exp = want[a * n_w + b];
            cr_assert_eq(bits(got), bits(exp),
                         "%s dot (%s) act %zu block %zu: expected %.9g (0x%08x) got %.9g (0x%08x)",
                         stem, simd ? "avx2" : "scalar", a, b, exp, bits(exp), got, bits(got));
        }
    free(want);
    free(act);
    free(w);
}

Test(quant_dot, q8_0_scalar_matches_known_answers) { check_dots(Q_TYPE_Q8_0, "Q8_0", false); }
Test(quant_dot, q2_k_scalar_matches_known_answers) { check_dots(Q_TYPE_Q2_K, "Q2_K", false); }
Test(quant_dot, q4_k_scalar_matches_known_answers) { check_dots(Q_TYPE_Q4_K, "Q4_K", false); }
Test(quant_dot, iq2_xxs_scalar_matches_known_answers) { check_dots(Q_TYPE_IQ2_XXS, "IQ2_XXS", false); }

Test(quant_dot, avx2_matches_known_answers) {
    if (!q_cpu_has_avx2()) cr_skip_test("CPU has no AVX2");
    check_dots(Q_TYPE_Q8_0, "Q8_0", true);
    check_dots(Q_TYPE_Q2_K, "Q2_K", true);
    check_dots(Q_TYPE_Q4_K, "Q4_K", true);
    check_dots(Q_TYPE_IQ2_XXS, "IQ2_XXS", true);
}

/* ---- Row validation ---- */

Test(quant_row, length_not_a_block_multiple_is_rejected) {
    float x[300] = {0}, out;
    uint8_t buf[1024] = {0};
    ds4_error err = {0};
    cr_assert_eq(q_decode_row(Q_TYPE_Q2_K, buf, x, 300, &err), DS4_ERR_FORMAT);
    cr_assert(strstr(err.msg, "Q2_K") && strstr(err.msg, "300"), "message: %s", err.msg);
    cr_assert_eq(q_encode_row(Q_TYPE_Q8_0, x, buf, 33, NULL, &err), DS4_ERR_FORMAT);
    cr_assert_eq(q_dot_row(Q_TYPE_IQ2_XXS, buf, buf, 128, &out, &err), DS4_ERR_FORMAT);
    cr_assert_eq(q_quantize_q8k(x, (q8k_block *)buf, 255, &err), DS4_ERR_FORMAT);
    cr_assert_eq(q_quantize_q8act(x, (q8act_block *)buf, 31, &err), DS4_ERR_FORMAT);
    uint64_t rb;
    cr_assert_eq(q_row_bytes(Q_TYPE_Q4_K, 512, &rb, &err), DS4_OK);
    cr_assert_eq(rb, 288);
    cr_assert_eq(q_row_bytes(Q_TYPE_Q8_0, UINT64_MAX - 31, &rb, &err), DS4_ERR_RANGE);
    cr_assert_eq(q_row_bytes(Q_TYPE_F32, UINT64_MAX, &rb, &err), DS4_ERR_RANGE);
}

Test(quant_row, unknown_type_is_rejected) {
    float x[256] = {0}, out;
    ds4_error err = {0};
    cr_assert_eq(q_decode_row(26 /* I32 */, x, x, 256, &err), DS4_ERR_UNSUPPORTED);
    cr_assert(strstr(err.msg, "26"), "message: %s", err.msg);
    cr_assert_eq(q_decode_row(Q_TYPE_Q8_K, x, x, 256, &err), DS4_ERR_UNSUPPORTED);
    cr_assert_eq(q_dot_row(99, x, x, 256, &out, &err), DS4_ERR_UNSUPPORTED);
    cr_assert_null(q_dot_kernel(99));
    cr_assert_eq(q_act_kind_for(Q_TYPE_Q4_K), Q_ACT_Q8_K);
    cr_assert_eq(q_act_kind_for(Q_TYPE_Q8_0), Q_ACT_Q8_0);
    cr_assert_eq(q_act_kind_for(Q_TYPE_BF16), Q_ACT_F32);
}
