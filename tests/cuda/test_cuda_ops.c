/*
 * tests/cuda/test_cuda_ops.c — the CUDA op table against the CPU reference, op by op
 * (STYLE.md §7: same case on both backends). Run by `make test-cuda` on a GPU machine; with no
 * GPU it says so and exits 0 with the suite reported as skipped, never as passed.
 *
 * Cases: activation quantizers (bit-equal), matvec per weight type on random valid blocks
 * (each block's contribution is bit-equal on both; only the sum order differs, so rows are
 * compared with |Δ| <= 1e-5·Σ|terms|), then a bandwidth benchmark at Flash shapes.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda/cuda_api.h"
#include "format/fp8.h"
#include "format/quant.h"

#include "layer_check.h"

static int n_pass, n_fail;

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng_u64(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static float rng_unit(void) { return (float)((rng_u64() >> 40) * (1.0 / 16777216.0)); }
static float rng_normal(void) {
    float u = rng_unit() + 1e-7f, v = rng_unit();
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

static void check(int ok, const char *fmt, const char *name, double a, double b) {
    if (ok) n_pass++;
    else {
        n_fail++;
        printf("FAIL %s: ", name);
        printf(fmt, a, b);
        printf("\n");
    }
}

/* Random but valid weight blocks: random code bytes, small positive f16 scales. */
static void fill_blocks(int type, uint8_t *w, size_t n_bytes) {
    for (size_t i = 0; i < n_bytes; i++) w[i] = (uint8_t)rng_u64();
    size_t bb = q_block_bytes(type), nb = n_bytes / bb;
    for (size_t b = 0; b < nb; b++) {
        uint8_t *p = w + b * bb;
        uint16_t d = (uint16_t)(0x1800 + (rng_u64() % 0x0800)); /* ~2^-9 .. 2^-8 */
        uint16_t dmin = (uint16_t)(0x1400 + (rng_u64() % 0x0800));
        switch (type) {
        case Q_TYPE_Q8_0: case Q_TYPE_IQ2_XXS: memcpy(p, &d, 2); break;
        case Q_TYPE_Q4_K: memcpy(p, &d, 2); memcpy(p + 2, &dmin, 2); break;
        case Q_TYPE_Q2_K: memcpy(p + 80, &d, 2); memcpy(p + 82, &dmin, 2); break;
        case Q_TYPE_F16:
            for (size_t i = 0; i < bb; i += 2) {
                uint16_t h = fp_f32_to_f16(rng_normal() * 0.05f);
                memcpy(p + i, &h, 2);
            }
            break;
        case Q_TYPE_BF16:
            for (size_t i = 0; i < bb; i += 2) {
                uint16_t h = fp_f32_to_bf16(rng_normal() * 0.05f);
                memcpy(p + i, &h, 2);
            }
            break;
        case Q_TYPE_F32: {
            float f = rng_normal() * 0.05f;
            memcpy(p, &f, 4);
            break;
        }
        default: break;
        }
    }
}

static int test_quantizers(void) {
    const int64_t n = 4096;
    float *x = malloc(n * sizeof *x);
    for (int64_t i = 0; i < n; i++) x[i] = rng_normal() * (i % 512 == 7 ? 30.0f : 1.0f);
    x[300] = 0; /* a zero and an exact tie region */
    for (int i = 256; i < 512; i++) x[i] = (float)(i - 384) + 0.5f;
    size_t kb = n / 256 * sizeof(q8k_block), ab = n / 32 * sizeof(q8act_block);
    q8k_block *ck = malloc(kb), *gk = malloc(kb);
    q8act_block *ca = malloc(ab), *ga = malloc(ab);
    ds4_error err;
    if (q_quantize_q8k(x, ck, n, &err) || q_quantize_q8act(x, ca, n, &err)) {
        printf("cpu quantize: %s\n", err.msg);
        return 1;
    }
    void *dx, *dk, *da;
    if (cuda_malloc(&dx, n * 4, &err) || cuda_malloc(&dk, kb, &err) || cuda_malloc(&da, ab, &err) ||
        cuda_upload(dx, x, n * 4, &err) || cuda_quantize_q8_K(dx, dk, n, &err) ||
        cuda_quantize_q8_0_act(dx, da, n, &err) || cuda_download(gk, dk, kb, &err) ||
        cuda_download(ga, da, ab, &err)) {
        printf("cuda quantize: %s\n", err.msg);
        return 1;
    }
    check(memcmp(ck, gk, kb) == 0, "%g blocks differ%g", "quantize q8_K cpu vs cuda (bytes)", 0, 0);
    check(memcmp(ca, ga, ab) == 0, "%g records differ%g", "quantize q8_0 act cpu vs cuda (bytes)", 0, 0);
    cuda_free(dx); cuda_free(dk); cuda_free(da);
    free(x); free(ck); free(gk); free(ca); free(ga);
    return 0;
}

typedef struct { int type; int64_t rows, cols; } mv_case;

static int test_matvec(const mv_case *c) {
    ds4_error err;
    uint64_t row_bytes;
    if (q_row_bytes(c->type, (uint64_t)c->cols, &row_bytes, &err)) { printf("%s\n", err.msg); return 1; }
    size_t wb = (size_t)row_bytes * (size_t)c->rows;
    uint8_t *w = malloc(wb);
    fill_blocks(c->type, w, wb);
    float *x = malloc(c->cols * sizeof *x), *ref = malloc(c->rows * sizeof *ref),
          *got = malloc(c->rows * sizeof *got), *row = malloc(c->cols * sizeof *row);
    for (int64_t i = 0; i < c->cols; i++) x[i] = rng_normal();
    /* CPU reference: quantize the activation as the engine does, then the row dot. */
    void *act = x;
    q_act_kind k = q_act_kind_for(c->type);
    if (k == Q_ACT_Q8_K) { act = malloc(c->cols / 256 * sizeof(q8k_block)); q_quantize_q8k(x, act, c->cols, &err); }
    if (k == Q_ACT_Q8_0) { act = malloc(c->cols / 32 * sizeof(q8act_block)); q_quantize_q8act(x, act, c->cols, &err); }
    for (int64_t r = 0; r < c->rows; r++)
        if (q_dot_row(c->type, w + r * row_bytes, act, c->cols, &ref[r], &err)) { printf("%s\n", err.msg); return 1; }
    void *dw, *dx, *dact, *dy;
    size_t sb = cuda_matvec_scratch_bytes(c->type, c->cols);
    if (cuda_malloc(&dw, wb, &err) || cuda_malloc(&dx, c->cols * 4, &err) || cuda_malloc(&dact, sb, &err) ||
        cuda_malloc(&dy, c->rows * 4, &err) || cuda_upload(dw, w, wb, &err) ||
        cuda_upload(dx, x, c->cols * 4, &err) ||
        cuda_matvec(c->type, dw, c->rows, c->cols, dx, dact, dy, &err) ||
        cuda_download(got, dy, c->rows * 4, &err)) {
        printf("cuda matvec %s: %s\n", q_type_name(c->type), err.msg);
        return 1;
    }
    /* Scale of the terms: Σ|w|·|x| from the decoded row. */
    double worst = 0;
    int64_t worst_r = 0;
    int ok = 1;
    for (int64_t r = 0; r < c->rows; r++) {
        q_decode_row(c->type, w + r * row_bytes, row, c->cols, &err);
        double m = 0;
        for (int64_t i = 0; i < c->cols; i++) m += fabs((double)row[i] * x[i]);
        double d = fabs((double)got[r] - ref[r]), tol = 1e-5 * m + 1e-30;
        if (!(d <= tol)) ok = 0;
        if (d / tol > worst) { worst = d / tol; worst_r = r; }
    }
    char name[96];
    snprintf(name, sizeof name, "matvec %s %lldx%lld (worst |d|/tol at row %lld)", q_type_name(c->type),
             (long long)c->rows, (long long)c->cols, (long long)worst_r);
    check(ok, "worst |d|/tol = %g (1 is the limit)%g", name, worst, 0);
    if (ok) printf("ok   %s: worst |d|/tol = %.3g\n", name, worst);
    cuda_free(dw); cuda_free(dx); cuda_free(dact); cuda_free(dy);
    if (act != x) free(act);
    free(w); free(x); free(ref); free(got); free(row);
    return 0;
}

/* Grouped experts: 6 of 8 experts (one repeated), shared input and per-expert inputs. */
static int test_experts(int type, int64_t rows, int64_t cols, int per_expert_x) {
    ds4_error err;
    const int n_exp = 8, n_sel = 6;
    const int32_t ids[6] = {5, 1, 7, 1, 0, 3};
    uint64_t row_bytes;
    q_row_bytes(type, (uint64_t)cols, &row_bytes, &err);
    size_t wb = (size_t)row_bytes * rows * n_exp;
    uint8_t *w = malloc(wb);
    fill_blocks(type, w, wb);
    int n_x = per_expert_x ? n_sel : 1;
    float *x = malloc(sizeof(float) * cols * n_x), *got = malloc(sizeof(float) * rows * n_sel),
          *row = malloc(sizeof(float) * cols);
    for (int64_t i = 0; i < cols * n_x; i++) x[i] = rng_normal();
    size_t sb = cuda_matvec_scratch_bytes(type, cols);
    void *act = malloc(sb * n_x + 1);
    void *dw, *dx, *dact, *dy, *dids;
    if (cuda_malloc(&dw, wb, &err) || cuda_malloc(&dx, sizeof(float) * cols * n_x, &err) ||
        cuda_malloc(&dact, sb * n_x + 1, &err) || cuda_malloc(&dy, sizeof(float) * rows * n_sel, &err) ||
        cuda_malloc(&dids, sizeof ids, &err) || cuda_upload(dw, w, wb, &err) ||
        cuda_upload(dx, x, sizeof(float) * cols * n_x, &err) || cuda_upload(dids, ids, sizeof ids, &err) ||
        cuda_matvec_experts(type, dw, n_exp, rows, cols, dids, n_sel, dx, per_expert_x, dact, dy, &err) ||
        cuda_download(got, dy, sizeof(float) * rows * n_sel, &err)) {
        printf("cuda experts %s: %s\n", q_type_name(type), err.msg);
        return 1;
    }
    double worst = 0;
    int ok = 1;
    for (int j = 0; j < n_sel; j++) {
        const float *xj = x + (per_expert_x ? j * cols : 0);
        q_act_kind kind = q_act_kind_for(type);
        if (kind == Q_ACT_Q8_K) q_quantize_q8k(xj, act, cols, &err);
        if (kind == Q_ACT_Q8_0) q_quantize_q8act(xj, act, cols, &err);
        for (int64_t r = 0; r < rows; r++) {
            const uint8_t *wr = w + ((size_t)ids[j] * rows + r) * row_bytes;
            float ref;
            q_dot_row(type, wr, kind == Q_ACT_F32 ? (const void *)xj : act, cols, &ref, &err);
            q_decode_row(type, wr, row, cols, &err);
            double m = 0;
            for (int64_t i = 0; i < cols; i++) m += fabs((double)row[i] * xj[i]);
            double d = fabs((double)got[j * rows + r] - ref), tol = 1e-5 * m + 1e-30;
            if (!(d <= tol)) ok = 0;
            if (d / tol > worst) worst = d / tol;
        }
    }
    char name[96];
    snprintf(name, sizeof name, "experts matvec %s %lldx%lld, 6 of 8, %s input", q_type_name(type),
             (long long)rows, (long long)cols, per_expert_x ? "per-expert" : "shared");
    check(ok, "worst |d|/tol = %g%g", name, worst, 0);
    if (ok) printf("ok   %s: worst |d|/tol = %.3g\n", name, worst);
    cuda_free(dw); cuda_free(dx); cuda_free(dact); cuda_free(dy); cuda_free(dids);
    free(w); free(x); free(got); free(row); free(act);
    return 0;
}

/* One token's routed experts at Flash shape: 6 gate + 6 up (IQ2_XXS 2048x4096, shared x) and
 * 6 down (Q2_K 4096x2048, per-expert x), as grouped launches out of 256 experts. */
/* Issue #7 fusions must not change a bit: the gate+up pair launch against two preq launches,
 * cuda_swiglu_quant against cuda_swiglu + cuda_quantize_act, and the per-expert quantized
 * down product against cuda_matvec_experts with per-expert inputs. */
static int test_fused(int type, int down_type, int64_t F, int64_t D) {
    ds4_error err;
    const int n_exp = 8, n_sel = 6;
    const int32_t ids[6] = {2, 6, 0, 6, 7, 4};
    uint64_t rb, rbd;
    q_row_bytes(type, (uint64_t)D, &rb, &err);
    q_row_bytes(down_type, (uint64_t)F, &rbd, &err);
    size_t wb = (size_t)rb * F * n_exp, wbd = (size_t)rbd * D * n_exp;
    uint8_t *w = malloc(2 * wb), *wd = malloc(wbd);
    fill_blocks(type, w, 2 * wb);
    fill_blocks(down_type, wd, wbd);
    float *x = malloc(sizeof(float) * D), *rw = malloc(sizeof(float) * n_sel);
    for (int64_t i = 0; i < D; i++) x[i] = rng_normal();
    for (int j = 0; j < n_sel; j++) rw[j] = rng_unit();
    int k_in = cuda_act_kind(type), k_dn = cuda_act_kind(down_type);
    size_t sa = cuda_matvec_scratch_bytes(type, D), sd = cuda_matvec_scratch_bytes(down_type, F);
    size_t ny = (size_t)n_sel * F, nd = (size_t)n_sel * D;
    float *h1 = malloc(4 * ny), *h2 = malloc(4 * ny), *y1 = malloc(4 * nd), *y2 = malloc(4 * nd);
    float *g1 = malloc(4 * ny), *g2 = malloc(4 * ny);
    uint8_t *q1 = malloc(sd * n_sel), *q2 = malloc(sd * n_sel);
    void *dw, *dwd, *dx, *da, *dids, *drw, *dg, *du, *dg2, *du2, *dh, *dq, *dq2, *dy, *dy2;
    int bad = cuda_malloc(&dw, 2 * wb, &err) || cuda_malloc(&dwd, wbd, &err) || cuda_malloc(&dx, 4 * D, &err) ||
              cuda_malloc(&da, sa, &err) || cuda_malloc(&dids, sizeof ids, &err) ||
              cuda_malloc(&drw, 4 * n_sel, &err) || cuda_malloc(&dg, 4 * ny, &err) ||
              cuda_malloc(&du, 4 * ny, &err) || cuda_malloc(&dg2, 4 * ny, &err) || cuda_malloc(&du2, 4 * ny, &err) ||
              cuda_malloc(&dh, 4 * ny, &err) || cuda_malloc(&dq, sd * n_sel, &err) ||
              cuda_malloc(&dq2, sd * n_sel, &err) || cuda_malloc(&dy, 4 * nd, &err) || cuda_malloc(&dy2, 4 * nd, &err) ||
              cuda_upload(dw, w, 2 * wb, &err) || cuda_upload(dwd, wd, wbd, &err) || cuda_upload(dx, x, 4 * D, &err) ||
              cuda_upload(dids, ids, sizeof ids, &err) || cuda_upload(drw, rw, 4 * n_sel, &err) ||
              cuda_quantize_act(k_in, dx, da, D, &err) ||
              /* reference: separate launches */
              cuda_matvec_experts_preq(type, dw, n_exp, F, D, dids, n_sel, da, dg, &err) ||
              cuda_matvec_experts_preq(type, (uint8_t *)dw + wb, n_exp, F, D, dids, n_sel, da, du, &err) ||
              cuda_download(g1, dg, 4 * ny, &err) ||
              cuda_swiglu(dg, du, drw, n_sel, F, 7.0f, dh, &err) || cuda_download(h1, dh, 4 * ny, &err);
    for (int j = 0; !bad && j < n_sel; j++)
        bad = cuda_quantize_act(k_dn, (float *)dh + j * F, (uint8_t *)dq + j * sd, F, &err);
    bad = bad || cuda_download(q1, dq, sd * n_sel, &err) ||
          cuda_matvec_experts(down_type, dwd, n_exp, D, F, dids, n_sel, dh, 1, dq2, dy, &err) ||
          cuda_download(y1, dy, 4 * nd, &err) ||
          /* fused */
          cuda_matvec_experts_pair_preq(type, dw, (uint8_t *)dw + wb, n_exp, F, D, dids, n_sel, da, dg2, du2,
                                        &err) ||
          cuda_download(g2, dg2, 4 * ny, &err) ||
          cuda_swiglu_quant(k_dn, dg2, du2, drw, n_sel, F, 7.0f, dg2, dq2, &err) ||
          cuda_download(h2, dg2, 4 * ny, &err) || cuda_download(q2, dq2, sd * n_sel, &err) ||
          cuda_matvec_experts_preq_x(down_type, dwd, n_exp, D, F, dids, n_sel, dq2, dy2, &err) ||
          cuda_download(y2, dy2, 4 * nd, &err);
    if (bad) {
        printf("cuda fused %s/%s: %s\n", q_type_name(type), q_type_name(down_type), err.msg);
        return 1;
    }
    char name[128];
    snprintf(name, sizeof name, "fused gate+up pair, swiglu+quantize, down (%s %lldx%lld, %s): bit-identical",
             q_type_name(type), (long long)F, (long long)D, q_type_name(down_type));
    int ok = !memcmp(g1, g2, 4 * ny) && !memcmp(h1, h2, 4 * ny) && !memcmp(q1, q2, sd * n_sel) &&
             !memcmp(y1, y2, 4 * nd);
    check(ok, "gate %g, h/q/down %g differ", name, (double)!memcmp(g1, g2, 4 * ny),
          (double)(!memcmp(h1, h2, 4 * ny) + 2 * !memcmp(q1, q2, sd * n_sel) + 4 * !memcmp(y1, y2, 4 * nd)));
    if (ok) printf("ok   %s\n", name);
    void *dv[] = {dw, dwd, dx, da, dids, drw, dg, du, dg2, du2, dh, dq, dq2, dy, dy2};
    for (size_t i = 0; i < sizeof dv / sizeof dv[0]; i++) cuda_free(dv[i]);
    free(w); free(wd); free(x); free(rw); free(h1); free(h2); free(y1); free(y2); free(g1); free(g2);
    free(q1); free(q2);
    return 0;
}

/* cuda_hc_pre_quant = cuda_hc_pre followed by cuda_quantize_act of a (Q8_0 and Q8_K), bit
 * for bit (issue #7: the quantizers moved into hc_pre's epilogue). Flash widths: hc 4, d 4096. */
static int test_hc_pre_quant(void) {
    ds4_error err;
    const int hc = 4, iters = 20;
    const int64_t d = 4096, nm = (2 + hc) * hc;
    size_t s80 = cuda_matvec_scratch_bytes(Q_TYPE_Q8_0, d), s8k = cuda_matvec_scratch_bytes(Q_TYPE_Q2_K, d);
    float *X = malloc(sizeof(float) * hc * d), *norm = malloc(sizeof(float) * d), mix[24], scale[3], base[24];
    for (int64_t i = 0; i < hc * d; i++) X[i] = rng_normal();
    for (int64_t i = 0; i < d; i++) norm[i] = 1.0f + 0.1f * rng_normal();
    for (int i = 0; i < nm; i++) mix[i] = rng_normal(), base[i] = 0.1f * rng_normal();
    for (int i = 0; i < 3; i++) scale[i] = 0.5f + rng_unit();
    uint8_t *h1 = malloc(s80 + s8k), *h2 = malloc(s80 + s8k);
    float *a1 = malloc(sizeof(float) * d), *a2 = malloc(sizeof(float) * d), o1[48], o2[48];
    void *dX, *dn, *dm, *ds, *db, *dp, *da, *dq1, *dq2;
    int bad = cuda_malloc(&dX, sizeof(float) * hc * d, &err) || cuda_malloc(&dn, sizeof(float) * d, &err) ||
              cuda_malloc(&dm, sizeof mix, &err) || cuda_malloc(&ds, sizeof scale, &err) ||
              cuda_malloc(&db, sizeof base, &err) || cuda_malloc(&dp, sizeof o1, &err) ||
              cuda_malloc(&da, sizeof(float) * d, &err) || cuda_malloc(&dq1, s80 + s8k, &err) ||
              cuda_malloc(&dq2, s80 + s8k, &err) || cuda_upload(dX, X, sizeof(float) * hc * d, &err) ||
              cuda_upload(dn, norm, sizeof(float) * d, &err) || cuda_upload(dm, mix, sizeof mix, &err) ||
              cuda_upload(ds, scale, sizeof scale, &err) || cuda_upload(db, base, sizeof base, &err);
    float *P = dp;
    bad = bad || cuda_hc_pre(dX, dm, ds, db, dn, 1, hc, d, iters, 1e-6f, 1e-6f, P, P + hc, P + 2 * hc, da, &err) ||
          cuda_quantize_act(CUDA_ACT_Q8_0, da, dq1, d, &err) ||
          cuda_quantize_act(CUDA_ACT_Q8_K, da, (uint8_t *)dq1 + s80, d, &err) ||
          cuda_download(a1, da, sizeof(float) * d, &err) || cuda_download(o1, dp, sizeof o1, &err) ||
          cuda_download(h1, dq1, s80 + s8k, &err) ||
          cuda_hc_pre_quant(dX, dm, ds, db, dn, 1, hc, d, iters, 1e-6f, 1e-6f, P, P + hc, P + 2 * hc, da, dq2,
                            (uint8_t *)dq2 + s80, &err) ||
          cuda_download(a2, da, sizeof(float) * d, &err) || cuda_download(o2, dp, sizeof o2, &err) ||
          cuda_download(h2, dq2, s80 + s8k, &err);
    if (bad) {
        printf("cuda hc_pre_quant: %s\n", err.msg);
        return 1;
    }
    const char *name = "hc_pre_quant (hc 4 x 4096, Sinkhorn 20) = hc_pre + quantize Q8_0 and Q8_K: bit-identical";
    int ok_a = !memcmp(a1, a2, sizeof(float) * d) && !memcmp(o1, o2, sizeof(float) * (2 * hc + hc * hc));
    int ok_q = !memcmp(h1, h2, s80 + s8k);
    check(ok_a && ok_q, "a/pre/post/comb equal %g, quantized equal %g", name, ok_a, ok_q);
    if (ok_a && ok_q) printf("ok   %s\n", name);
    void *dv[] = {dX, dn, dm, ds, db, dp, da, dq1, dq2};
    for (size_t i = 0; i < sizeof dv / sizeof dv[0]; i++) cuda_free(dv[i]);
    free(X); free(norm); free(h1); free(h2); free(a1); free(a2);
    return 0;
}

/* cuda_norm_rope_qat = cuda_rmsnorm, cuda_rope_tail, cuda_fp8_roundtrip / cuda_quantize_act in
 * that order, bit for bit: Flash's q heads (64 x 512, no weight, RoPE 64), kv (1 x 512, weight,
 * RoPE, FP8 of 448) and qr (1 x 1024, weight, Q8_0 records); position from the host and the
 * device. */
static int test_norm_rope(int64_t rows, int64_t n, int weighted, int nr, int64_t fp8_n, int q80, int dpos) {
    ds4_error err;
    int64_t N = rows * n, pos = 1234;
    size_t sq = (size_t)(N / 32) * 36;
    float *x = malloc(sizeof(float) * N), *w = malloc(sizeof(float) * n), fr[64];
    float *r1 = malloc(sizeof(float) * N), *r2 = malloc(sizeof(float) * N);
    uint8_t *q1 = malloc(sq + 1), *q2 = malloc(sq + 1);
    for (int64_t i = 0; i < N; i++) x[i] = 3.0f * rng_normal();
    for (int64_t i = 0; i < n; i++) w[i] = 1.0f + 0.2f * rng_normal();
    for (int i = 0; i < 64; i++) fr[i] = powf(10000.0f, -(float)i / 32.0f);
    void *dx, *dw, *df, *dq, *dp;
    int bad = cuda_malloc(&dx, sizeof(float) * N, &err) || cuda_malloc(&dw, sizeof(float) * n, &err) ||
              cuda_malloc(&df, sizeof fr, &err) || cuda_malloc(&dq, sq + 1, &err) ||
              cuda_malloc(&dp, sizeof pos, &err) || cuda_upload(dx, x, sizeof(float) * N, &err) ||
              cuda_upload(dw, w, sizeof(float) * n, &err) || cuda_upload(df, fr, sizeof fr, &err) ||
              cuda_upload(dp, &pos, sizeof pos, &err);
    const float *wp = weighted ? dw : NULL;
    bad = bad || cuda_rmsnorm(dx, dx, wp, rows, n, 1e-6f, &err) ||
          (nr && cuda_rope_tail(dx, rows, n, n - nr, rows, nr, df, pos, 0, &err)) ||
          (fp8_n && cuda_fp8_roundtrip(dx, rows, n, fp8_n, 64, &err)) ||
          (q80 && cuda_quantize_act(CUDA_ACT_Q8_0, dx, dq, N, &err)) ||
          cuda_download(r1, dx, sizeof(float) * N, &err) || (q80 && cuda_download(q1, dq, sq, &err)) ||
          cuda_upload(dx, x, sizeof(float) * N, &err) ||
          cuda_norm_rope_qat(dx, wp, rows, n, 1e-6f, nr, df, dpos ? 0 : pos, dpos ? dp : NULL, fp8_n, 64,
                             q80 ? dq : NULL, &err) ||
          cuda_download(r2, dx, sizeof(float) * N, &err) || (q80 && cuda_download(q2, dq, sq, &err));
    if (bad) {
        printf("cuda norm_rope_qat: %s\n", err.msg);
        return 1;
    }
    char name[160];
    snprintf(name, sizeof name, "norm_rope_qat %lld x %lld%s, rope %d, fp8 %lld%s (%s position) = the ops in turn: "
             "bit-identical", (long long)rows, (long long)n, weighted ? " weighted" : "", nr, (long long)fp8_n,
             q80 ? ", Q8_0 records" : "", dpos ? "device" : "host");
    int ok_x = !memcmp(r1, r2, sizeof(float) * N), ok_q = !q80 || !memcmp(q1, q2, sq);
    check(ok_x && ok_q, "rows equal %g, records equal %g", name, ok_x, ok_q);
    if (ok_x && ok_q) printf("ok   %s\n", name);
    cuda_free(dx); cuda_free(dw); cuda_free(df); cuda_free(dq); cuda_free(dp);
    free(x); free(w); free(r1); free(r2); free(q1); free(q2);
    return 0;
}

static void bench_experts(void) {
    ds4_error err;
    const int n_exp = 256, n_sel = 6;
    int32_t ids[6] = {3, 77, 140, 141, 200, 255};
    uint64_t gb, db;
    q_row_bytes(Q_TYPE_IQ2_XXS, 4096, &gb, &err);
    q_row_bytes(Q_TYPE_Q2_K, 2048, &db, &err);
    size_t gsz = (size_t)gb * 2048 * n_exp, dsz = (size_t)db * 4096 * n_exp;
    uint8_t *h = malloc(gsz > dsz ? gsz : dsz);
    void *dg, *du, *dd, *dx, *dh, *dact, *dy, *dids;
    float *x = malloc(sizeof(float) * 6 * 4096);
    for (int i = 0; i < 6 * 4096; i++) x[i] = rng_normal();
    if (cuda_malloc(&dg, gsz, &err) || cuda_malloc(&du, gsz, &err) || cuda_malloc(&dd, dsz, &err) ||
        cuda_malloc(&dx, 4 * 4096, &err) || cuda_malloc(&dh, 4 * 6 * 2048, &err) ||
        cuda_malloc(&dact, 6 * 16 * 292, &err) || cuda_malloc(&dy, 4 * 6 * 4096, &err) ||
        cuda_malloc(&dids, sizeof ids, &err)) {
        printf("bench experts: %s\n", err.msg);
        return;
    }
    fill_blocks(Q_TYPE_IQ2_XXS, h, gsz);
    cuda_upload(dg, h, gsz, &err);
    cuda_upload(du, h, gsz, &err);
    fill_blocks(Q_TYPE_Q2_K, h, dsz);
    cuda_upload(dd, h, dsz, &err);
    cuda_upload(dx, x, 4 * 4096, &err);
    cuda_upload(dh, x, 4 * 6 * 2048, &err);
    cuda_upload(dids, ids, sizeof ids, &err);
    for (int rep = 0; rep < 2; rep++) {
        double t0 = 0;
        struct timespec a, b;
        int iters = rep ? 200 : 5;
        cuda_sync(&err);
        clock_gettime(CLOCK_MONOTONIC, &a);
        for (int i = 0; i < iters; i++) {
            cuda_matvec_experts(Q_TYPE_IQ2_XXS, dg, n_exp, 2048, 4096, dids, n_sel, dx, 0, dact, dy, &err);
            cuda_matvec_experts(Q_TYPE_IQ2_XXS, du, n_exp, 2048, 4096, dids, n_sel, dx, 0, dact, dy, &err);
            cuda_matvec_experts(Q_TYPE_Q2_K, dd, n_exp, 4096, 2048, dids, n_sel, dh, 1, dact, dy, &err);
        }
        cuda_sync(&err);
        clock_gettime(CLOCK_MONOTONIC, &b);
        t0 = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9;
        if (rep) {
            double bytes = 6.0 * (2.0 * gb * 2048 + (double)db * 4096), s = t0 / iters;
            printf("bench routed experts of one token (6 x gate+up IQ2_XXS, 6 x down Q2_K, 3 grouped launches): "
                   "%.2f us, %.1f MiB, %.1f GB/s\n", s * 1e6, bytes / 1048576.0, bytes / s / 1e9);
        }
    }
    cuda_free(dg); cuda_free(du); cuda_free(dd); cuda_free(dx); cuda_free(dh); cuda_free(dact);
    cuda_free(dy); cuda_free(dids);
    free(h); free(x);
}

void bench_attn_dec(void); /* test_cuda_dec.c */

/* Bandwidth of the decode matvec at a Flash-like size: the weight bytes read per call / time. */
static void bench_matvec(int type, int64_t rows, int64_t cols) {
    ds4_error err;
    uint64_t row_bytes;
    q_row_bytes(type, (uint64_t)cols, &row_bytes, &err);
    size_t wb = (size_t)row_bytes * (size_t)rows;
    uint8_t *w = malloc(wb);
    fill_blocks(type, w, wb);
    float *x = malloc(cols * sizeof *x);
    for (int64_t i = 0; i < cols; i++) x[i] = rng_normal();
    void *dw, *dx, *dact, *dy;
    float ms = 0;
    if (cuda_malloc(&dw, wb, &err) || cuda_malloc(&dx, cols * 4, &err) ||
        cuda_malloc(&dact, cuda_matvec_scratch_bytes(type, cols) + 1, &err) ||
        cuda_malloc(&dy, rows * 4, &err) || cuda_upload(dw, w, wb, &err) ||
        cuda_upload(dx, x, cols * 4, &err) ||
        cuda_matvec_time(type, dw, rows, cols, dx, dact, dy, 50, &ms, &err)) {
        printf("bench %s: %s\n", q_type_name(type), err.msg);
    } else {
        double s = ms / 50 / 1000.0;
        printf("bench matvec %-8s %6lld x %-6lld %8.1f MiB  %8.2f us  %7.1f GB/s\n", q_type_name(type),
               (long long)rows, (long long)cols, wb / 1048576.0, s * 1e6, wb / s / 1e9);
    }
    cuda_free(dw); cuda_free(dx); cuda_free(dact); cuda_free(dy);
    free(w); free(x);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0); /* a crash must not swallow the lines before it */
    int do_bench = argc > 1 && strcmp(argv[1], "--bench") == 0;
    int n_dev = cuda_device_count();
    if (n_dev == 0) {
        printf("test-cuda: no CUDA device: the whole CUDA suite is skipped (not run)\n");
        printf("0 passed, 0 failed, 1 skipped\n");
        return 0;
    }
    char desc[256];
    ds4_error err;
    cuda_device_describe(0, desc, sizeof desc, &err);
    printf("device 0: %s\n", desc);
    if (cuda_init(0, &err)) {
        printf("cuda_init: %s\n", err.msg);
        return 1;
    }
    q_set_simd(true);
    if (argc > 1 && strcmp(argv[1], "--bench-dec") == 0) { /* decode matvecs + attention only */
        static const mv_case bs[] = {
            {Q_TYPE_Q8_0, 32768, 1024}, {Q_TYPE_Q8_0, 4096, 8192}, {Q_TYPE_Q8_0, 8192, 4096},
            {Q_TYPE_Q8_0, 1024, 4096},  {Q_TYPE_Q8_0, 512, 4096},  {Q_TYPE_Q8_0, 2048, 4096},
            {Q_TYPE_Q8_0, 4096, 2048},  {Q_TYPE_F16, 1024, 4096},  {Q_TYPE_F16, 512, 4096},
            {Q_TYPE_Q8_0, 65536, 4096}, {Q_TYPE_F16, 256, 4096},  {Q_TYPE_F32, 24, 16384},
            {Q_TYPE_F16, 24, 16384},    {Q_TYPE_Q8_0, 129280, 4096},
        };
        /* argument: one matvec shape, or 99 for the attention alone (e.g. under ncu) */
        const int only = argc > 2 ? atoi(argv[2]) : -1;
        for (size_t i = 0; i < sizeof bs / sizeof bs[0]; i++)
            if (only < 0 || (size_t)only == i) bench_matvec(bs[i].type, bs[i].rows, bs[i].cols);
        if (only < 0 || only == 99) bench_attn_dec();
        return 0;
    }
    if (test_quantizers()) return 1;
    static const mv_case cases[] = {
        {Q_TYPE_IQ2_XXS, 257, 4096}, {Q_TYPE_IQ2_XXS, 64, 256},  {Q_TYPE_Q2_K, 129, 2048},
        {Q_TYPE_Q2_K, 33, 768},      {Q_TYPE_Q4_K, 131, 4096},   {Q_TYPE_Q4_K, 5, 256},
        {Q_TYPE_Q8_0, 300, 4096},    {Q_TYPE_Q8_0, 7, 96},       {Q_TYPE_F16, 77, 1000},
        {Q_TYPE_BF16, 65, 512},      {Q_TYPE_F32, 9, 333},
        /* few rows, long rows: 4 or 16 warps per row (issue #7), 16-byte float units */
        {Q_TYPE_F32, 24, 16384},     {Q_TYPE_F32, 4, 16384},     {Q_TYPE_F16, 64, 4096},
        {Q_TYPE_F16, 256, 4096},     {Q_TYPE_BF16, 3, 8192},     {Q_TYPE_Q8_0, 1024, 4096},
        {Q_TYPE_IQ2_XXS, 5, 16384},  {Q_TYPE_Q2_K, 3, 16384},    {Q_TYPE_Q4_K, 600, 4096},
        /* Flash decode shapes: wq_b, wo_b, wkv, the compressors (F16); odd row counts; a long
         * row (the CPU-order variants: test_cuda_dec.c) */
        {Q_TYPE_Q8_0, 32768, 1024},  {Q_TYPE_Q8_0, 4096, 8192},  {Q_TYPE_Q8_0, 512, 4096},
        {Q_TYPE_F16, 1024, 4096},    {Q_TYPE_F16, 512, 4096},    {Q_TYPE_Q8_0, 2051, 1024},
        {Q_TYPE_F16, 777, 2048},     {Q_TYPE_BF16, 600, 1024},   {Q_TYPE_F32, 520, 512},
        {Q_TYPE_Q8_0, 600, 65536},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (test_matvec(&cases[i])) return 1;
    static const int ex_types[] = {Q_TYPE_IQ2_XXS, Q_TYPE_Q2_K, Q_TYPE_Q4_K, Q_TYPE_Q8_0, Q_TYPE_F16};
    for (size_t i = 0; i < sizeof ex_types / sizeof ex_types[0]; i++) {
        if (test_experts(ex_types[i], 96, 512, 0)) return 1;
        if (test_experts(ex_types[i], 64, 256, 1)) return 1;
    }
    if (test_hc_pre_quant()) return 1;
    if (test_norm_rope(64, 512, 0, 64, 0, 0, 0) || test_norm_rope(1, 512, 1, 64, 448, 0, 1) ||
        test_norm_rope(1, 1024, 1, 0, 0, 1, 0) || test_norm_rope(3, 256, 1, 16, 192, 1, 1))
        return 1;
    /* Flash's routed experts (IQ2_XXS gate/up, Q2_K down) and the shared expert's Q8_0 */
    if (test_fused(Q_TYPE_IQ2_XXS, Q_TYPE_Q2_K, 512, 1024) || test_fused(Q_TYPE_Q8_0, Q_TYPE_Q8_0, 256, 512))
        return 1;
    /* few rows per expert: several warps per row, partial sums across warps */
    if (test_experts(Q_TYPE_F32, 16, 4096, 1) || test_experts(Q_TYPE_IQ2_XXS, 8, 16384, 0) ||
        test_experts(Q_TYPE_Q8_0, 40, 4096, 1))
        return 1;
    if (do_bench) {
        bench_experts();
        /* Flash decode shapes (GGUF_LAYOUT §3.3): routed gate/up 2048x4096 IQ2_XXS, down
         * 4096x2048 Q2_K; big stand-ins for bandwidth (all 256 experts' gate of one layer). */
        bench_matvec(Q_TYPE_IQ2_XXS, 2048, 4096);
        bench_matvec(Q_TYPE_Q2_K, 4096, 2048);
        bench_matvec(Q_TYPE_Q8_0, 32768, 1024);
        bench_matvec(Q_TYPE_IQ2_XXS, 2048 * 64, 4096);
        bench_matvec(Q_TYPE_Q2_K, 4096 * 64, 2048);
        bench_matvec(Q_TYPE_Q4_K, 2048 * 64, 4096);
        bench_matvec(Q_TYPE_Q8_0, 4096 * 16, 4096);
        bench_matvec(Q_TYPE_F16, 4096 * 8, 4096);
        /* Flash's few-row products: HC mix (24 x 4·4096 F32), indexer weights (64 x 4096 F16),
         * router (256 x 4096 F16), wq_a (1024 x 4096 Q8_0) */
        bench_matvec(Q_TYPE_F32, 24, 16384);
        bench_matvec(Q_TYPE_F16, 64, 4096);
        bench_matvec(Q_TYPE_F16, 256, 4096);
        bench_matvec(Q_TYPE_Q8_0, 1024, 4096);
    }
    /* The layer op table (test_cuda_layer*.c): norm .. indexer against the CPU reference. */
    test_cuda_layer_ops(do_bench, &n_pass, &n_fail);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
