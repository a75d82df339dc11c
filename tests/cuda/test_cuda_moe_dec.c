/*
 * tests/cuda/test_cuda_moe_dec.c — the decode MoE's routed-expert products (matvec_exp.cu,
 * issue #7) against the CPU dot, bit for bit: every expert type (IQ2_XXS, Q2_K, Q4_K) through
 * every grouped entry point (cuda_matvec_experts, _preq, _pair_preq, _preq_x) at Flash's
 * shapes, at the block minimum (one block per row), at odd block counts, with misaligned expert
 * strides and tensor bases (the 2-byte copy path), one expert, repeated ids, experts staged from
 * host memory, and a corrupt router id (NaN rows). With --bench: one token's routed experts by
 * the old kernels (DS4_CUDA_EXP_V1=1) and matvec_exp.cu's (with its bench knobs), in one process. Called from test_cuda_layer.c's test_cuda_layer_ops. Test code only.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_api.h"
#include "format/fp8.h"
#include "format/quant.h"

#include "layer_check.h"

void test_moe_dec(int do_bench);

/* Random valid blocks: random code bytes, small positive f16 scales (d ~2^-9..2^-8). */
static void fill_q(int type, uint8_t *w, size_t n_bytes) {
    for (size_t i = 0; i < n_bytes; i++) w[i] = (uint8_t)rnd_u64();
    size_t bb = type == Q_TYPE_IQ2_XXS ? 66 : type == Q_TYPE_Q2_K ? 84 : 144;
    for (size_t b = 0; b < n_bytes / bb; b++) {
        uint8_t *p = w + b * bb;
        uint16_t d = (uint16_t)(0x1800 + (rnd_u64() % 0x0800)), dm = (uint16_t)(0x1400 + (rnd_u64() % 0x0800));
        if (type == Q_TYPE_Q2_K) { memcpy(p + 80, &d, 2); memcpy(p + 82, &dm, 2); }
        else { memcpy(p, &d, 2); if (type == Q_TYPE_Q4_K) memcpy(p + 2, &dm, 2); }
    }
}

enum { EP_PLAIN, EP_PREQ, EP_PAIR, EP_PREQ_X };
static const char *ep_name[] = {"cuda_matvec_experts", "experts_preq", "experts_pair_preq", "experts_preq_x"};

/* One case: n_sel of n_exp experts (ids, one repeated), rows x cols of `type`, entry point ep;
 * base_off shifts the tensors' device base (misaligned when not a multiple of 16). Every output
 * row must equal q_dot_row of the CPU on the same quantized activation, bit for bit (NaN for a
 * corrupt id). */
static void expert_case(int type, int64_t rows, int64_t cols, int n_exp, const int32_t *ids, int n_sel,
                        int ep, int base_off) {
    ds4_error err;
    uint64_t rb;
    q_row_bytes(type, (uint64_t)cols, &rb, &err);
    const int n_mat = ep == EP_PAIR ? 2 : 1, per_x = ep == EP_PREQ_X;
    const int n_x = per_x ? n_sel : 1;
    const size_t wb = (size_t)rb * rows * n_exp, ab = (size_t)(cols / 256) * sizeof(q8k_block);
    uint8_t *w = malloc(n_mat * wb + 16);
    fill_q(type, w, n_mat * wb + 16);
    float *x = rnd_vec(cols * n_x, 1.0f), *got = malloc(sizeof(float) * rows * n_sel * n_mat);
    q8k_block *act = malloc(ab * n_x);
    for (int i = 0; i < n_x; i++) q_quantize_q8k(x + (int64_t)i * cols, (q8k_block *)((uint8_t *)act + i * ab), cols, &err);
    uint8_t *dw = dev_alloc(n_mat * wb + 32);
    float *dx = dev_put(x, sizeof(float) * cols * n_x), *dy = dev_alloc(sizeof(float) * rows * n_sel * n_mat);
    void *dact = dev_put(act, ab * n_x);
    void *dscr = dev_alloc(ab * n_x);
    int32_t *dids = dev_put(ids, sizeof(int32_t) * n_sel);
    if (dw) {
        ds4_error e2;
        cuda_upload(dw + base_off, w, n_mat * wb, &e2);
    }
    const uint8_t *w0 = dw + base_off, *w1 = dw + base_off + wb;
    ds4_status st;
    switch (ep) {
    case EP_PLAIN: st = cuda_matvec_experts(type, w0, n_exp, rows, cols, dids, n_sel, dx, per_x, dscr, dy, &err); break;
    case EP_PREQ: st = cuda_matvec_experts_preq(type, w0, n_exp, rows, cols, dids, n_sel, dact, dy, &err); break;
    case EP_PAIR:
        st = cuda_matvec_experts_pair_preq(type, w0, w1, n_exp, rows, cols, dids, n_sel, dact, dy,
                                           dy + rows * n_sel, &err);
        break;
    default: st = cuda_matvec_experts_preq_x(type, w0, n_exp, rows, cols, dids, n_sel, dact, dy, &err); break;
    }
    char name[192];
    snprintf(name, sizeof name, "experts %s %s %lld x %lld, %d of %d%s%s, base+%d: = CPU q_dot_row", ep_name[ep],
             q_type_name(type), (long long)rows, (long long)cols, n_sel, n_exp, per_x ? ", per-expert x" : "",
             cuda_mvx_supports(type, cols, n_x) ? "" : " (old kernel)", base_off);
    if (ok_call(st, name, &err)) {
        dev_get(got, dy, sizeof(float) * rows * n_sel * n_mat);
        int64_t n_bad = 0, first = -1;
        float fr = 0, fg = 0;
        for (int m = 0; m < n_mat; m++)
            for (int j = 0; j < n_sel; j++)
                for (int64_t r = 0; r < rows; r++) {
                    const int64_t i = ((int64_t)m * n_sel + j) * rows + r;
                    float ref = NAN;
                    if (ids[j] >= 0 && ids[j] < n_exp)
                        q_dot_row(type, w + m * wb + ((size_t)ids[j] * rows + r) * rb,
                                  (uint8_t *)act + (per_x ? j : 0) * ab, cols, &ref, &err);
                    const int same = isnan(ref) ? isnan(got[i]) : memcmp(&ref, &got[i], 4) == 0;
                    if (!same && n_bad++ == 0) { first = i; fr = ref; fg = got[i]; }
                }
        char det[160];
        if (n_bad) snprintf(det, sizeof det, "%lld of %lld rows differ, first %lld: cpu %.9g gpu %.9g", (long long)n_bad,
                            (long long)rows * n_sel * n_mat, (long long)first, fr, fg);
        else snprintf(det, sizeof det, "%lld rows, max |d| = 0", (long long)rows * n_sel * n_mat);
        result(n_bad == 0, name, det);
    }
    dev_free_all();
    free(w); free(x); free(got); free(act);
}

/* The decode MoE's fused launches (forward_cuda.c moe_fused) against the separate calls, bit for
 * bit: cuda_swiglu_quant_pair = two cuda_swiglu_quant (routed Q8_K rows with routing weights,
 * shared Q8_0 row), and cuda_matvec_experts_down_combine = cuda_matvec_experts_preq_x +
 * cuda_moe_combine, with and without the shared expert's row. */
static void fused_case(int td, int64_t D, int64_t F, int64_t Fs, int with_shared) {
    ds4_error err;
    const int n_exp = 8, K = 6;
    const int32_t ids[6] = {0, 2, 3, 5, 6, 7};
    uint64_t rbd;
    q_row_bytes(td, (uint64_t)F, &rbd, &err);
    const size_t wbd = (size_t)rbd * D * n_exp, nq = (size_t)K * F / 256 * sizeof(q8k_block), nqs = (size_t)Fs / 32 * 36;
    uint8_t *wd = malloc(wbd);
    fill_q(td, wd, wbd);
    float *g = rnd_vec(K * F, 3.0f), *u = rnd_vec(K * F, 3.0f), *gs = rnd_vec(Fs, 3.0f), *us = rnd_vec(Fs, 3.0f);
    float *sh = rnd_vec(D, 1.0f), rw[6];
    for (int k = 0; k < K; k++) rw[k] = 0.1f + 0.13f * (float)k;
    float *h1 = malloc(4 * K * F), *h2 = malloc(4 * K * F), *hs1 = malloc(4 * Fs), *hs2 = malloc(4 * Fs);
    float *y1 = malloc(4 * K * D), *y2 = malloc(4 * K * D), *o1 = malloc(4 * D), *o2 = malloc(4 * D);
    uint8_t *q1 = malloc(nq), *q2 = malloc(nq), *qs1 = malloc(nqs), *qs2 = malloc(nqs);
    float *dg = dev_put(g, 4 * K * F), *du = dev_put(u, 4 * K * F), *dgs = dev_put(gs, 4 * Fs), *dus = dev_put(us, 4 * Fs);
    float *dh = dev_alloc(4 * K * F), *dhs = dev_alloc(4 * Fs), *drw = dev_put(rw, sizeof rw), *dsh = dev_put(sh, 4 * D);
    float *dy = dev_alloc(4 * K * D), *dout = dev_alloc(4 * D);
    void *dq = dev_alloc(nq), *dqs = dev_alloc(nqs), *dwd = dev_put(wd, wbd);
    int32_t *dids = dev_put(ids, sizeof ids);
    const float *shp = with_shared ? dsh : NULL;
    char name[192];
    snprintf(name, sizeof name, "moe fused: swiglu_quant pair (6 x %lld Q8_K + %lld Q8_0), down+combine %s %lld x %lld%s",
             (long long)F, (long long)Fs, q_type_name(td), (long long)D, (long long)F, with_shared ? " + shared" : "");
    ds4_status st = cuda_swiglu_quant(CUDA_ACT_Q8_K, dg, du, drw, K, F, 7.0f, dh, dq, &err);
    if (!st) st = cuda_swiglu_quant(CUDA_ACT_Q8_0, dgs, dus, NULL, 1, Fs, 9.0f, dhs, dqs, &err);
    if (!st) { dev_get(h1, dh, 4 * K * F); dev_get(q1, dq, nq); dev_get(hs1, dhs, 4 * Fs); dev_get(qs1, dqs, nqs); }
    if (!st) st = cuda_matvec_experts_preq_x(td, dwd, n_exp, D, F, dids, K, dq, dy, &err);
    if (!st) st = cuda_moe_combine(dy, shp, 1, K, D, dout, &err);
    if (!st) { dev_get(y1, dy, 4 * K * D); dev_get(o1, dout, 4 * D); }
    /* fused: in place like moe_fused (h over g) */
    if (!st) st = cuda_swiglu_quant_pair(CUDA_ACT_Q8_K, dg, du, drw, K, F, 7.0f, dg, dq, CUDA_ACT_Q8_0, dgs, dus, NULL,
                                         1, Fs, 9.0f, dgs, dqs, &err);
    if (!st) { dev_get(h2, dg, 4 * K * F); dev_get(q2, dq, nq); dev_get(hs2, dgs, 4 * Fs); dev_get(qs2, dqs, nqs); }
    if (!st) st = cuda_matvec_experts_down_combine(td, dwd, n_exp, D, F, dids, K, dq, dy, shp, dout, &err);
    if (!st) { dev_get(y2, dy, 4 * K * D); dev_get(o2, dout, 4 * D); }
    if (ok_call(st, name, &err)) {
        const int eh = !memcmp(h1, h2, 4 * K * F) && !memcmp(hs1, hs2, 4 * Fs), eq = !memcmp(q1, q2, nq) && !memcmp(qs1, qs2, nqs);
        const int ey = !memcmp(y1, y2, 4 * K * D), eo = !memcmp(o1, o2, 4 * D);
        char det[160];
        snprintf(det, sizeof det, "h %s, records %s, expert rows %s, combined %s", eh ? "equal" : "DIFFER",
                 eq ? "equal" : "DIFFER", ey ? "equal" : "DIFFER", eo ? "bit-identical" : "DIFFER");
        result(eh && eq && ey && eo, name, det);
    }
    dev_free_all();
    free(wd); free(g); free(u); free(gs); free(us); free(sh); free(h1); free(h2); free(hs1); free(hs2);
    free(y1); free(y2); free(o1); free(o2); free(q1); free(q2); free(qs1); free(qs2);
}

/* Experts in host memory (expert_stage.cu, forward_moe.c): the selected experts copied from
 * pinned mapped host memory into a device buffer, then the products on ids 0..K-1 of the copy:
 * every row = q_dot_row of the original expert, bit for bit. */
static void staged_case(int type, int64_t rows, int64_t cols) {
    ds4_error err;
    enum { N_EXP = 8, K = 6 };
    static const int32_t ids[K] = {5, 1, 7, 1, 0, 3}, seq[K] = {0, 1, 2, 3, 4, 5};
    uint64_t rb;
    q_row_bytes(type, (uint64_t)cols, &rb, &err);
    const size_t eb = (size_t)rb * rows, ab = (size_t)(cols / 256) * sizeof(q8k_block);
    char name[160];
    snprintf(name, sizeof name, "experts staged from host memory %s %lld x %lld, %d of %d: = CPU q_dot_row",
             q_type_name(type), (long long)rows, (long long)cols, K, N_EXP);
    void *host = NULL, *hdev = NULL;
    if (!ok_call(cuda_host_alloc_mapped(&host, &hdev, N_EXP * eb, &err), name, &err)) return;
    fill_q(type, host, N_EXP * eb);
    float *x = rnd_vec(cols, 1.0f), *got = malloc(sizeof(float) * rows * K);
    q8k_block *act = malloc(ab);
    q_quantize_q8k(x, act, (uint64_t)cols, &err);
    uint8_t *dst = dev_alloc(K * eb);
    int32_t *dids = dev_put(ids, sizeof ids), *dseq = dev_put(seq, sizeof seq);
    void *dact = dev_put(act, ab);
    float *dy = dev_alloc(sizeof(float) * rows * K);
    ds4_status st = cuda_expert_stage(dst, hdev, (int64_t)eb, N_EXP, dids, K, &err);
    if (!st) st = cuda_matvec_experts_preq(type, dst, K, rows, cols, dseq, K, dact, dy, &err);
    if (ok_call(st, name, &err)) {
        dev_get(got, dy, sizeof(float) * rows * K);
        int64_t n_bad = 0;
        for (int j = 0; j < K; j++)
            for (int64_t r = 0; r < rows; r++) {
                float ref;
                q_dot_row(type, (uint8_t *)host + ((size_t)ids[j] * rows + r) * rb, act, cols, &ref, &err);
                n_bad += memcmp(&ref, &got[(int64_t)j * rows + r], 4) != 0;
            }
        char det[96];
        snprintf(det, sizeof det, "%lld of %lld rows differ", (long long)n_bad, (long long)rows * K);
        result(n_bad == 0, name, det);
    }
    dev_free_all();
    cuda_host_free(host);
    free(x); free(got); free(act);
}

/* One token's routed experts as moe_fused() runs them (forward_moe.c: the gate+up pair on a
 * shared x, then down + combine with the shared expert's row on per-expert x), 6 of 256
 * experts, back-to-back eager launches; each call takes the next of 16 disjoint selections, so
 * the weights come from DRAM (one selection's 40 MB would stay in L2); per variant of the
 * kernels (environment switches read per call): us for gate+up alone, down alone and the token. */
static const char *bench_env[] = {"DS4_CUDA_EXP_V1", "DS4_MVX_RPL", "DS4_MVX_DIAG", "DS4_MVX_LATE"};
static const struct { const char *name, *var, *val; } bench_var[] = {
    {"v1 (matvec.cu)", "DS4_CUDA_EXP_V1", "1"}, {"new", NULL, NULL}, {"new, 1 row per lane", "DS4_MVX_RPL", "1"},
    {"new, 2 rows per lane", "DS4_MVX_RPL", "2"}, {"new, all slots asked at once", "DS4_MVX_LATE", "0"},
    {"new, no decode", "DS4_MVX_DIAG", "1"}, {"new, no fetch", "DS4_MVX_DIAG", "2"},
    {"new, neither", "DS4_MVX_DIAG", "3"}};

static void bench_token(int tg, int td, int64_t D, int64_t F) {
    ds4_error err;
    enum { N_SETS = 16 };
    const int n_exp = 256, K = 6;
    int32_t ids[N_SETS * 6];
    for (int i = 0; i < N_SETS * K; i++) ids[i] = (int32_t)(i * 83 % n_exp); /* 83 odd: 96 distinct */
    uint64_t gb, db;
    q_row_bytes(tg, (uint64_t)D, &gb, &err);
    q_row_bytes(td, (uint64_t)F, &db, &err);
    size_t gsz = (size_t)gb * F * n_exp, dsz = (size_t)db * D * n_exp;
    uint8_t *h = malloc(gsz > dsz ? gsz : dsz);
    uint8_t *dg = dev_alloc(2 * gsz), *dd = dev_alloc(dsz);
    float *x = rnd_vec(K * F, 1.0f), *sh = rnd_vec(D, 1.0f);
    q8k_block *a = malloc(K * F / 256 * sizeof(q8k_block));
    q_quantize_q8k(x, a, (uint64_t)K * F, &err);
    void *dact = dev_put(a, K * F / 256 * sizeof(q8k_block));
    float *dy = dev_alloc(sizeof(float) * K * (2 * F + D)), *dsh = dev_put(sh, sizeof(float) * D);
    float *dout = dev_alloc(sizeof(float) * D);
    int32_t *dsel = dev_put(ids, sizeof ids);
    fill_q(tg, h, gsz);
    if (dg) { cuda_upload(dg, h, gsz, &err); cuda_upload(dg + gsz, h, gsz, &err); }
    fill_q(td, h, dsz);
    if (dd) cuda_upload(dd, h, dsz, &err);
    const double bg = 2.0 * K * gb * F, bd = (double)K * db * D;
    for (size_t v = 0; v < sizeof bench_var / sizeof bench_var[0]; v++) {
        for (size_t i = 0; i < sizeof bench_env / sizeof bench_env[0]; i++) unsetenv(bench_env[i]);
        if (bench_var[v].var) setenv(bench_var[v].var, bench_var[v].val, 1);
        double us[3];
        ds4_status st = DS4_OK;
        for (int what = 0; what < 3 && !st; what++) {
            const int iters = 200;
            double t0 = now_s();
            for (int i = 0; i <= iters && !st; i++) {
                if (i == 1) { cuda_sync(&err); t0 = now_s(); }
                const int32_t *dids = dsel + (i % N_SETS) * K;
                if (what != 1)
                    st = cuda_matvec_experts_pair_preq(tg, dg, dg + gsz, n_exp, F, D, dids, K, dact, dy, dy + K * F, &err);
                if (what == 0 || st) continue;
                if (cuda_mvx_supports(td, F, K))
                    st = cuda_matvec_experts_down_combine(td, dd, n_exp, D, F, dids, K, dact, dy + 2 * K * F, dsh, dout, &err);
                else {
                    st = cuda_matvec_experts_preq_x(td, dd, n_exp, D, F, dids, K, dact, dy + 2 * K * F, &err);
                    if (!st) st = cuda_moe_combine(dy + 2 * K * F, dsh, 1, K, D, dout, &err);
                }
            }
            cuda_sync(&err);
            us[what] = (now_s() - t0) / iters * 1e6;
        }
        char nm[128];
        snprintf(nm, sizeof nm, "experts of one token %s/%s, %s", q_type_name(tg), q_type_name(td), bench_var[v].name);
        if (st) printf("bench %s failed: %s\n", nm, err.msg);
        else printf("bench %-58s gate+up %6.2f us (%4.0f GB/s)  down+comb %6.2f us (%4.0f GB/s)  token %6.2f us (%4.0f GB/s)\n",
                    nm, us[0], bg / us[0] * 1e-3, us[1], bd / us[1] * 1e-3, us[2], (bg + bd) / us[2] * 1e-3);
    }
    for (size_t i = 0; i < sizeof bench_env / sizeof bench_env[0]; i++) unsetenv(bench_env[i]);
    dev_free_all();
    free(h); free(x); free(sh); free(a);
}

void test_moe_dec(int do_bench) {
    static const int32_t ids6[6] = {5, 1, 7, 1, 0, 3}, bad[3] = {2, 9, 0};
    static const int types[3] = {Q_TYPE_IQ2_XXS, Q_TYPE_Q2_K, Q_TYPE_Q4_K};
    for (int ti = 0; ti < 3; ti++) {
        const int t = types[ti];
        /* Flash: gate/up 2048 x 4096 (pair, shared x), down 4096 x 2048 (per-expert x) */
        expert_case(t, 2048, 4096, 8, ids6, 6, EP_PAIR, 0);
        expert_case(t, 4096, 2048, 8, ids6, 6, EP_PREQ_X, 0);
        expert_case(t, 300, 4096, 8, ids6, 6, EP_PREQ, 0);
        expert_case(t, 96, 512, 8, ids6, 6, EP_PLAIN, 0);
        /* one block per row (32 rows a tile), partial last tile */
        expert_case(t, 37, 256, 8, ids6, 6, EP_PAIR, 0);
        /* 3 and 32 blocks per row */
        expert_case(t, 45, 768, 8, ids6, 6, EP_PREQ_X, 0);
        expert_case(t, 19, 8192, 8, ids6, 6, EP_PAIR, 0);
        /* misaligned expert stride (odd rows of odd blocks) and a base 2 bytes off */
        expert_case(t, 7, 256, 8, ids6, 6, EP_PREQ_X, 0);
        expert_case(t, 64, 1024, 8, ids6, 6, EP_PAIR, 2);
        /* a corrupt router id: its rows are NaN, the others exact */
        expert_case(t, 64, 512, 8, bad, 3, EP_PAIR, 0);
        /* one expert; 5 blocks per row (not a multiple of 4) */
        expert_case(t, 2048, 4096, 8, ids6 + 1, 1, EP_PAIR, 0);
        expert_case(t, 130, 1280, 8, ids6, 6, EP_PREQ_X, 0);
        staged_case(t, 2048, 4096);
        staged_case(t, 40, 768);
    }
    fused_case(Q_TYPE_Q2_K, 4096, 2048, 2048, 1);
    fused_case(Q_TYPE_Q2_K, 4096, 2048, 2048, 0);
    fused_case(Q_TYPE_Q4_K, 1024, 512, 256, 1);
    fused_case(Q_TYPE_IQ2_XXS, 300, 768, 96, 1);
    fused_case(Q_TYPE_Q2_K, 37, 256, 32, 1);
    fused_case(Q_TYPE_Q2_K, 130, 1280, 256, 0);
    if (do_bench) {
        bench_token(Q_TYPE_IQ2_XXS, Q_TYPE_Q2_K, 4096, 2048);
        bench_token(Q_TYPE_Q4_K, Q_TYPE_Q4_K, 4096, 2048);
    }
}
