/*
 * tests/cuda/test_cuda_chunk.c — the ops of a batched prefill chunk (issue #7) against the
 * per-token ops they replace, which test_cuda_layer*.c check against the CPU: the routed pairs
 * grouped by expert on the device (cuda_moe_group vs the host grouping), the compressor over a
 * whole chunk (cuda_comp_push_chunk vs one cuda_comp_push per token), the chunk attention
 * kernel (cuda_attn on >= 2 tokens vs the CPU loop attn_ref of test_cuda_layer_attn.c) and the
 * row gathers / scatters (cuda_rows_copy vs the host). All bit-identical (the attention's exp
 * is cpu/refmath.h's on both sides).
 * Called from test_cuda_layer_attn.c (test_attention / bench_attn_ops); test code only.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/ops.h"
#include "cuda/chunk_ops.h"
#include "cuda/cuda_api.h"
#include "format/quant_impl.h"

#include "layer_check.h"

void test_chunk_ops(void);
void bench_chunk_ops(void);
void attn_ref(const float *q, const float *kv_chunk, const float *ring, int64_t W,
              const float *comp, int ratio, const int32_t *isel, const int32_t *n_isel,
              int64_t topk, const float *sinks, int64_t n_tok, int64_t pos0, int64_t H,
              int64_t Dh, int n_rope, const float *freqs, float *out);

static const cpu_rope_cfg chunk_rope = {64, 160000.0, 16.0, 32.0, 1.0, 65536.0};

/* Exact equality (+0 == -0): how many differ, the first one. */
static void cmp_exact(const char *name, const float *ref, const float *got, int64_t n) {
    int64_t bad = 0, at = -1;
    for (int64_t i = 0; i < n; i++)
        if (!(ref[i] == got[i]) && !(isnan(ref[i]) && isnan(got[i])) &&
            !(isinf(ref[i]) && ref[i] == got[i])) {
            if (at < 0) at = i;
            bad++;
        }
    char buf[256];
    if (!bad) snprintf(buf, sizeof buf, "n=%lld, bit-identical", (long long)n);
    else snprintf(buf, sizeof buf, "n=%lld, %lld differ, first at %lld (ref %.9g, got %.9g)",
                  (long long)n, (long long)bad, (long long)at, (double)ref[at], (double)got[at]);
    result(bad == 0, name, buf);
}

/* ---- expert grouping ---- */

static void run_group_case(int64_t n, int K, int E) {
    ds4_error err;
    int64_t np = n * K;
    int32_t *sel = malloc((size_t)np * 4), *off = malloc((size_t)(E + 1) * 4);
    int32_t *ptok = malloc((size_t)np * 4), *pslot = malloc((size_t)np * 4);
    float *w = rnd_vec(np, 1.0f), *pw = malloc((size_t)np * 4);
    for (int64_t t = 0; t < n; t++) { /* K distinct ascending ids, half of them from the
                                        * lowest quarter of the experts (uneven groups) */
        int32_t *s = sel + t * K;
        for (int got = 0; got < K;) {
            int lo = E / 4 > K ? E / 4 : E;
            int32_t e = (int32_t)(rnd_u64() % 2 ? rnd_u64() % (uint64_t)lo : rnd_u64() % (uint64_t)E);
            int dup = 0;
            for (int k = 0; k < got; k++) dup |= s[k] == e;
            if (!dup) s[got++] = e;
        }
        for (int a = 1; a < K; a++)
            for (int b = a; b > 0 && s[b - 1] > s[b]; b--) {
                int32_t x = s[b]; s[b] = s[b - 1]; s[b - 1] = x;
            }
    }
    /* the host grouping the chunk path used before */
    memset(off, 0, (size_t)(E + 1) * 4);
    for (int64_t i = 0; i < np; i++) off[sel[i] + 1]++;
    for (int e = 0; e < E; e++) off[e + 1] += off[e];
    int32_t *cur = malloc((size_t)(E + 1) * 4);
    memcpy(cur, off, (size_t)(E + 1) * 4);
    for (int64_t i = 0; i < np; i++) {
        int64_t j = cur[sel[i]]++;
        ptok[j] = (int32_t)(i / K);
        pslot[j] = (int32_t)i;
        pw[j] = w[i];
    }
    int32_t *dsel = dev_put(sel, np * 4), *doff = dev_alloc((E + 1) * 4);
    int32_t *dptok = dev_alloc(np * 4), *dpslot = dev_alloc(np * 4);
    float *dw = dev_put(w, np * 4), *dpw = dev_alloc(np * 4);
    char name[160];
    snprintf(name, sizeof name, "moe_group: %lld tokens x %d of %d experts", (long long)n, K, E);
    if (ok_call(cuda_moe_group(dsel, dw, n, K, E, doff, dptok, dpslot, dpw, &err), name, &err)) {
        int32_t *g = malloc((size_t)(np > E + 1 ? np : E + 1) * 4);
        float *gf = malloc((size_t)np * 4);
        char nm[200];
        dev_get(g, doff, (E + 1) * 4);
        snprintf(nm, sizeof nm, "%s: offsets", name);
        cmp_i32(nm, off, g, E + 1);
        dev_get(g, dptok, np * 4);
        snprintf(nm, sizeof nm, "%s: tokens", name);
        cmp_i32(nm, ptok, g, np);
        dev_get(g, dpslot, np * 4);
        snprintf(nm, sizeof nm, "%s: slots", name);
        cmp_i32(nm, pslot, g, np);
        dev_get(gf, dpw, np * 4);
        snprintf(nm, sizeof nm, "%s: weights", name);
        cmp_exact(nm, pw, gf, np);
        free(g);
        free(gf);
    }
    dev_free_all();
    free(sel); free(off); free(ptok); free(pslot); free(w); free(pw); free(cur);
}

/* ---- compressor over a chunk ---- */

static void run_comp_chunk_case(const char *what, int64_t ratio, int64_t coff, int64_t dim,
                                int indexer, const int64_t *chunks, int n_chunks) {
    ds4_error err;
    const int n_rope = 64;
    float freqs[32];
    cpu_rope_freqs(&chunk_rope, freqs);
    int64_t n_pos = 0;
    for (int i = 0; i < n_chunks; i++) n_pos += chunks[i];
    int64_t w = coff * dim, st_n = coff * ratio * w, cap = n_pos / ratio + 1;
    float *st0 = malloc((size_t)st_n * 4);
    for (int64_t i = 0; i < st_n; i++) st0[i] = -INFINITY; /* §6.4: scores -inf, kv 0 */
    float *kv0 = calloc((size_t)st_n, 4);
    float *A = rnd_vec(n_pos * w, 1.0f), *B = rnd_vec(n_pos * w, 1.0f);
    float *ape = rnd_vec(ratio * w, 0.5f), *norm = rnd_vec(dim, 0.1f);
    for (int64_t i = 0; i < dim; i++) norm[i] += 1.0f;
    cuda_comp_state a = {ratio, coff, dim, cap, dev_alloc(cap * dim * 4), dev_put(kv0, st_n * 4),
                         dev_put(st0, st_n * 4)};
    cuda_comp_state b = {ratio, coff, dim, cap, dev_alloc(cap * dim * 4), dev_put(kv0, st_n * 4),
                         dev_put(st0, st_n * 4)};
    float *dA = dev_put(A, n_pos * w * 4), *dB = dev_put(B, n_pos * w * 4);
    float *dape = dev_put(ape, ratio * w * 4), *dnorm = dev_put(norm, dim * 4);
    float *dfreqs = dev_put(freqs, sizeof freqs);
    char name[160];
    snprintf(name, sizeof name, "comp_push_chunk %s: ratio %lld, dim %lld, %d chunks, %lld positions",
             what, (long long)ratio, (long long)dim, n_chunks, (long long)n_pos);
    int ok = a.rows && b.rows && dA && dB;
    if (ok) { /* zero rows on both, so unfinished entries compare equal too */
        float *z = calloc((size_t)(cap * dim), 4);
        ok = !cuda_upload(a.rows, z, (size_t)(cap * dim) * 4, &err) &&
             !cuda_upload(b.rows, z, (size_t)(cap * dim) * 4, &err);
        free(z);
    }
    int64_t p = 0;
    for (int c = 0; c < n_chunks && ok; c++) {
        for (int64_t t = 0; t < chunks[c] && ok; t++)
            ok = ok_call(cuda_comp_push(&a, dA + (p + t) * w, dB + (p + t) * w, dape, dnorm, p + t,
                                        indexer, dfreqs, n_rope, 1e-6f, NULL, &err), name, &err);
        if (ok)
            ok = ok_call(cuda_comp_push_chunk(&b, dA + p * w, dB + p * w, w, dape, dnorm, p,
                                              chunks[c], indexer, dfreqs, n_rope, 1e-6f, &err),
                         name, &err);
        p += chunks[c];
    }
    if (ok) {
        size_t nb = (size_t)(cap * dim > st_n ? cap * dim : st_n) * 4;
        float *ra = malloc(nb), *rb = malloc(nb);
        char nm[200];
        const float *pa[3] = {a.rows, a.st_kv, a.st_sc}, *pb[3] = {b.rows, b.st_kv, b.st_sc};
        const char *what3[3] = {"entries", "streaming kv", "streaming scores"};
        int64_t n3[3] = {cap * dim, st_n, st_n};
        for (int k = 0; k < 3; k++) {
            dev_get(ra, pa[k], n3[k] * 4);
            dev_get(rb, pb[k], n3[k] * 4);
            snprintf(nm, sizeof nm, "%s: %s", name, what3[k]);
            cmp_exact(nm, ra, rb, n3[k]);
        }
        free(ra);
        free(rb);
    }
    dev_free_all();
    free(st0); free(kv0); free(A); free(B); free(ape); free(norm);
}

/* ---- chunk attention vs the CPU's loop ---- */

static void run_attn_chunk_case(const char *what, int64_t H, int64_t Dh, int64_t n, int64_t pos0,
                                int ratio, int indexed, int64_t topk) {
    ds4_error err;
    const int64_t W = 128;
    const int n_rope = 64;
    float freqs[32];
    cpu_rope_freqs(&chunk_rope, freqs);
    int64_t n_comp_rows = ratio ? (pos0 + n) / ratio + 1 : 1;
    float *q = rnd_vec(n * H * Dh, 1.0f), *kv = rnd_vec(n * Dh, 1.0f), *ring = rnd_vec(W * Dh, 1.0f);
    float *comp = rnd_vec(n_comp_rows * Dh, 1.0f), *sinks = rnd_vec(H, 1.0f);
    if (!indexed) topk = 1;
    int32_t *isel = calloc((size_t)(n * topk), 4), *n_isel = calloc((size_t)n, 4);
    for (int64_t t = 0; t < n && indexed; t++) {
        int64_t n_c = (pos0 + t + 1) / 4, k = n_c < topk ? n_c : topk - (t % 3), got = 0;
        for (int64_t r = 0; r < n_c && got < k; r++)
            if ((int64_t)(rnd_u64() % (uint64_t)(n_c - r)) < k - got) isel[t * topk + got++] = (int32_t)r;
        n_isel[t] = (int32_t)k;
    }
    float *dq = dev_put(q, n * H * Dh * 4), *dkv = dev_put(kv, n * Dh * 4);
    float *dring = dev_put(ring, W * Dh * 4), *dcomp = dev_put(comp, n_comp_rows * Dh * 4);
    float *dsinks = dev_put(sinks, H * 4), *dfreqs = dev_put(freqs, sizeof freqs);
    float *dout = dev_alloc(n * H * Dh * 4);
    int32_t *disel = dev_put(isel, n * topk * 4), *dn = dev_put(n_isel, n * 4);
    float *dscr = dev_alloc(cuda_attn_scratch_bytes(n, H, Dh, W, ratio, topk, indexed, pos0));
    char name[200];
    snprintf(name, sizeof name, "attn chunk kernel %s: %lld tok at pos %lld, %lld heads x %lld, "
             "ratio %d%s vs the CPU loop", what, (long long)n, (long long)pos0, (long long)H,
             (long long)Dh, ratio, indexed ? ", indexed" : "");
    if (ok_call(cuda_attn(dq, dkv, dring, W, dcomp, ratio, indexed ? disel : NULL, dn, topk,
                          dsinks, n, pos0, H, Dh, n_rope, dfreqs, dscr, dout, &err),
                name, &err)) {
        float *a = malloc((size_t)(n * H * Dh) * 4), *b = malloc((size_t)(n * H * Dh) * 4);
        attn_ref(q, kv, ring, W, comp, ratio, indexed ? isel : NULL, n_isel, topk, sinks, n, pos0,
                 H, Dh, n_rope, freqs, a);
        dev_get(b, dout, n * H * Dh * 4);
        cmp_exact(name, a, b, n * H * Dh);
        /* Every chunk kernel (cuda_attn_chunk_set_variant) gives the same bits. */
        static const int variants[] = {0, 8, 64};
        for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
            char vn[240];
            snprintf(vn, sizeof vn, "%s: kernel variant %d == default", name, variants[v]);
            cuda_attn_chunk_set_variant(variants[v]);
            if (ok_call(cuda_attn(dq, dkv, dring, W, dcomp, ratio, indexed ? disel : NULL, dn,
                                  topk, dsinks, n, pos0, H, Dh, n_rope, dfreqs, dscr, dout, &err),
                        vn, &err)) {
                dev_get(a, dout, n * H * Dh * 4);
                cmp_exact(vn, b, a, n * H * Dh);
            }
        }
        cuda_attn_chunk_set_variant(-1);
        /* cuda_attn_qnorm (q's norm + RoPE inside the kernel) == cuda_qnorm_rope_chunk then
         * cuda_attn, for every variant (0: the norm runs as its own launch). */
        float *dq2 = dev_put(q, n * H * Dh * 4), *dq3 = dev_alloc(n * H * Dh * 4);
        if (ok_call(cuda_qnorm_rope_chunk(dq2, n * H, Dh, 1e-6f, Dh - n_rope, H, n_rope, dfreqs,
                                          pos0, &err), name, &err) &&
            ok_call(cuda_attn(dq2, dkv, dring, W, dcomp, ratio, indexed ? disel : NULL, dn, topk,
                              dsinks, n, pos0, H, Dh, n_rope, dfreqs, dscr, dout, &err), name, &err)) {
            dev_get(b, dout, n * H * Dh * 4);
            for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
                char vn[320];
                snprintf(vn, sizeof vn, "%s: attn_qnorm variant %d == qnorm_rope_chunk + attn", name,
                         variants[v]);
                cuda_attn_chunk_set_variant(variants[v]);
                cuda_upload(dq3, q, (size_t)(n * H * Dh) * 4, &err);
                if (ok_call(cuda_attn_qnorm(dq3, dkv, dring, W, dcomp, ratio, indexed ? disel : NULL,
                                            dn, topk, dsinks, n, pos0, H, Dh, n_rope, dfreqs, 1e-6f,
                                            dscr, dout, &err),
                            vn, &err)) {
                    dev_get(a, dout, n * H * Dh * 4);
                    cmp_exact(vn, b, a, n * H * Dh);
                }
            }
            cuda_attn_chunk_set_variant(-1);
        }
        free(a);
        free(b);
    }
    dev_free_all();
    free(q); free(kv); free(ring); free(comp); free(sinks); free(isel); free(n_isel);
}

/* ---- row gather / scatter (cuda_rows_copy) ---- */

/* dst[di[i]] = src[si[i]] for n rows of D floats: a permutation gather into a scatter, against
 * the host; D a multiple of 4 takes the 16-byte path, odd D (or offset bases) the plain one. */
static void run_rows_case(int64_t n, int64_t D, int64_t off) {
    ds4_error err;
    float *src = rnd_vec(n * D + off, 1.0f), *got = malloc((size_t)(n * D + off) * 4);
    float *ref = malloc((size_t)(n * D + off) * 4);
    int32_t *si = malloc((size_t)n * 4), *di = malloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) si[i] = di[i] = (int32_t)i;
    for (int64_t i = n - 1; i > 0; i--) { /* two random permutations */
        int64_t j = (int64_t)(rnd_u64() % (uint64_t)(i + 1)), k = (int64_t)(rnd_u64() % (uint64_t)(i + 1));
        int32_t t = si[i]; si[i] = si[j]; si[j] = t;
        t = di[i]; di[i] = di[k]; di[k] = t;
    }
    for (int64_t i = 0; i < n * D + off; i++) ref[i] = got[i] = -7.0f;
    for (int64_t i = 0; i < n; i++) memcpy(ref + off + di[i] * D, src + off + si[i] * D, (size_t)D * 4);
    float *ds = dev_put(src, (n * D + off) * 4), *dd = dev_put(got, (n * D + off) * 4);
    int32_t *dsi = dev_put(si, n * 4), *ddi = dev_put(di, n * 4);
    char name[128];
    snprintf(name, sizeof name, "rows_copy %lld rows of %lld (+%lld floats) vs host", (long long)n,
             (long long)D, (long long)off);
    if (ok_call(cuda_rows_copy(dd + off, ddi, ds + off, dsi, n, D, &err), name, &err)) {
        dev_get(got, dd, (n * D + off) * 4);
        cmp_exact(name, ref, got, n * D + off);
    }
    dev_free_all();
    free(src); free(got); free(ref); free(si); free(di);
}

/* ---- hc_post over a chunk (cuda_hc_post_chunk) vs cuda_hc_post ---- */

static void run_hc_post_case(int64_t n, int hc, int64_t d) {
    ds4_error err;
    float *f = rnd_vec(n * d, 1.0f), *X = rnd_vec(n * hc * d, 1.0f), *post = rnd_vec(n * hc, 1.0f);
    float *comb = rnd_vec(n * hc * hc, 1.0f);
    float *a = malloc((size_t)(n * hc * d) * 4), *b = malloc((size_t)(n * hc * d) * 4);
    float *df = dev_put(f, n * d * 4), *dX = dev_put(X, n * hc * d * 4), *dp = dev_put(post, n * hc * 4);
    float *dc = dev_put(comb, n * hc * hc * 4), *d1 = dev_alloc(n * hc * d * 4), *d2 = dev_alloc(n * hc * d * 4);
    char name[128];
    snprintf(name, sizeof name, "hc_post_chunk %lld tok, hc %d, d %lld == cuda_hc_post", (long long)n, hc,
             (long long)d);
    if (ok_call(cuda_hc_post(df, dX, dp, dc, n, hc, d, d1, &err), name, &err) &&
        ok_call(cuda_hc_post_chunk(df, dX, dp, dc, n, hc, d, d2, &err), name, &err)) {
        dev_get(a, d1, n * hc * d * 4);
        dev_get(b, d2, n * hc * d * 4);
        cmp_exact(name, a, b, n * hc * d);
    }
    dev_free_all();
    free(f); free(X); free(post); free(comb); free(a); free(b);
}

/* ---- query norm + RoPE in one launch (cuda_qnorm_rope_chunk) vs the two ops ---- */

static void run_qnorm_case(int64_t n_tok, int64_t H, int64_t Dh, int n_rope, int64_t pos0,
                           float scale) {
    ds4_error err;
    float freqs[64];
    cpu_rope_freqs(&chunk_rope, freqs);
    int64_t rows = n_tok * H;
    float *x = rnd_vec(rows * Dh, scale), *a = malloc((size_t)(rows * Dh) * 4), *b = malloc((size_t)(rows * Dh) * 4);
    float *d1 = dev_put(x, rows * Dh * 4), *d2 = dev_put(x, rows * Dh * 4), *df = dev_put(freqs, sizeof freqs);
    char name[128];
    snprintf(name, sizeof name, "qnorm_rope_chunk %lld tok x %lld heads x %lld, rope %d at %lld == rmsnorm, rope_tail",
             (long long)n_tok, (long long)H, (long long)Dh, n_rope, (long long)pos0);
    if (ok_call(cuda_rmsnorm(d1, d1, NULL, rows, Dh, 1e-6f, &err), name, &err) &&
        ok_call(cuda_rope_tail(d1, rows, Dh, Dh - n_rope, H, n_rope, df, pos0, 0, &err), name, &err) &&
        ok_call(cuda_qnorm_rope_chunk(d2, rows, Dh, 1e-6f, Dh - n_rope, H, n_rope, df, pos0, &err), name, &err)) {
        dev_get(a, d1, rows * Dh * 4);
        dev_get(b, d2, rows * Dh * 4);
        cmp_exact(name, a, b, rows * Dh);
    }
    dev_free_all();
    free(x); free(a); free(b);
}

void test_chunk_ops(void) {
    run_qnorm_case(33, 64, 512, 64, 1000, 1.0f);
    run_qnorm_case(5, 8, 128, 64, 0, 30.0f);
    run_qnorm_case(3, 3, 1100, 64, 7, 0.01f);
    run_qnorm_case(2, 4, 4096, 64, 9, 1.0f); /* < 32 rows of >= 2048: the two ops */
    run_qnorm_case(40, 1, 3000, 0, 5, 1.0f);
    run_hc_post_case(37, 4, 4096);
    run_hc_post_case(5, 4, 1000);
    run_hc_post_case(3, 2, 4100);
    run_hc_post_case(9, 3, 256);
    run_rows_case(300, 4096, 0);
    run_rows_case(65, 7, 0);
    run_rows_case(33, 64, 1);
    run_rows_case(5, 1024 + 4, 0);
    run_group_case(37, 6, 16);
    run_group_case(2048, 6, 256);
    run_group_case(1, 8, 8);
    static const int64_t c4[] = {1, 3, 7, 64, 2, 201, 5, 16};
    static const int64_t c128[] = {100, 27, 1, 300, 129, 2};
    run_comp_chunk_case("attention, overlapping", 4, 2, 512, 0, c4, 8);
    run_comp_chunk_case("attention, plain", 128, 1, 512, 0, c128, 6);
    run_comp_chunk_case("indexer, overlapping", 4, 2, 128, 1, c4, 8);
    run_attn_chunk_case("window only", 16, 512, 40, 100, 0, 0, 0);
    run_attn_chunk_case("ratio 128", 16, 512, 33, 1000, 128, 0, 0);
    run_attn_chunk_case("ratio 4 indexed", 64, 512, 20, 3000, 4, 1, 512);
    run_attn_chunk_case("from position 0", 12, 512, 64, 0, 4, 1, 16);
    run_attn_chunk_case("two tokens, tiny-v4 heads", 8, 128, 2, 250, 4, 1, 16);
    run_attn_chunk_case("tiny-v4 heads, ratio 128", 8, 128, 7, 120, 128, 0, 0);
    /* Flash's 64 heads (k_attn_chunk3: one block per token): whole 64-key tiles, a last tile
     * of <= 32 or of 33..63 keys, heads past 64 (a second head group of 8), Dh 256, and more
     * rows than k_attn_chunk3 takes (AC3_SMEM_MAX: it hands over to k_attn_chunk2). */
    run_attn_chunk_case("64 heads, ratio 128, 136 rows", 64, 512, 9, 1100, 128, 0, 0);
    run_attn_chunk_case("72 heads, window, 128 rows", 72, 512, 5, 300, 0, 0, 0);
    run_attn_chunk_case("64 heads x 256, ratio 4 indexed", 64, 256, 6, 1500, 4, 1, 200);
    run_attn_chunk_case("64 heads, ratio 128, 900 rows", 64, 512, 3, 99000, 128, 0, 0);
    /* last key tiles of 26..28 and 34..36 keys (inside a 32 / 64-key score tile), 64 heads of
     * 128, and 1612 rows (past k_attn_chunk3's 704: it hands over to k_attn_chunk2) */
    run_attn_chunk_case("64 heads, ratio 4 indexed, last tile 26..28", 64, 512, 6, 3000, 4, 1, 90);
    run_attn_chunk_case("64 heads, ratio 4 indexed, last tile 34..36", 64, 512, 6, 3000, 4, 1, 100);
    run_attn_chunk_case("64 heads x 128, ratio 4 indexed", 64, 128, 5, 700, 4, 1, 100);
    run_attn_chunk_case("64 heads, ratio 128, 1612 rows", 64, 512, 3, 190000, 128, 0, 0);
    if (getenv("DS4_CHUNK_BENCH")) bench_chunk_ops(); /* the chunk benches without --bench */
}

/* ---- timings at Flash prefill shapes (2048 tokens) ---- */

void bench_chunk_ops(void) {
    const int64_t n = 2048, H = 64, Dh = 512, W = 128, topk = 512;
    float *h = rnd_vec(n * Dh * 4, 1.0f);
    float freqs[32];
    cpu_rope_freqs(&chunk_rope, freqs);
    int32_t *isel = malloc((size_t)(n * topk) * 4), *n_isel = malloc((size_t)n * 4);
    for (int64_t t = 0; t < n; t++) {
        int64_t k = (t + 1) / 4 < topk ? (t + 1) / 4 : topk;
        for (int64_t i = 0; i < k; i++) isel[t * topk + i] = (int32_t)i;
        n_isel[t] = (int32_t)k;
    }
    float *dq = dev_alloc(n * H * Dh * 4), *dout = dev_alloc(n * H * Dh * 4);
    float *dkv = dev_put(h, n * Dh * 4), *dring = dev_put(h, W * Dh * 4);
    float *dcomp = dev_put(h, 1024 * Dh * 4), *dsinks = dev_put(h, H * 4);
    float *dfreqs = dev_put(freqs, sizeof freqs);
    int32_t *disel = dev_put(isel, n * topk * 4), *dn = dev_put(n_isel, n * 4);
    float *dscr = dev_alloc(cuda_attn_scratch_bytes(n, H, Dh, W, 4, topk, 1, 0));
    ds4_error err;
    for (int64_t i = 0; dq && i < H; i++) cuda_upload(dq + i * n * Dh, h, (size_t)(n * Dh) * 4, &err);
    if (!dq || !dout || !dscr) {
        printf("bench chunk: allocation failed\n");
        dev_free_all();
        free(h); free(isel); free(n_isel);
        return;
    }
    static const int variants[] = {0, 8, 64}; /* every chunk kernel, same bits; 64 last: the default */
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        cuda_attn_chunk_set_variant(variants[v]);
        printf("bench: attn chunk kernel variant %d:\n", variants[v]);
        BENCH("attn chunk 2048 tok x 64 heads, window only", 3,
              cuda_attn(dq, dkv, dring, W, dcomp, 0, NULL, NULL, 0, dsinks, n, 0, H, Dh, 64, dfreqs, dscr, dout, &e_));
        BENCH("attn chunk 2048 tok, ratio 4 + top-512", 3,
              cuda_attn(dq, dkv, dring, W, dcomp, 4, disel, dn, topk, dsinks, n, 0, H, Dh, 64, dfreqs, dscr, dout, &e_));
        BENCH("attn chunk 2048 tok, ratio 128 at 64k", 3,
              cuda_attn(dq, dkv, dring, W, dcomp, 128, NULL, NULL, 0, dsinks, n, 63488, H, Dh, 64, dfreqs, dscr, dout, &e_));
        BENCH("attn_qnorm 2048 tok, ratio 4 + top-512", 3, /* q norm + RoPE in the kernel */
              cuda_attn_qnorm(dq, dkv, dring, W, dcomp, 4, disel, dn, topk, dsinks, n, 0, H, Dh, 64, dfreqs, 1e-6f, dscr, dout, &e_));
    }
    cuda_attn_chunk_set_variant(-1);
    float *hX = dev_alloc(n * 4 * 4096 * 4), *hX2 = dev_alloc(n * 4 * 4096 * 4), *hf = dev_alloc(n * 4096 * 4);
    if (hX && hX2 && hf) { /* hc_post at Flash's chunk shape: post / comb read from any floats */
        BENCH("hc_post 2048 tok x 4 x 4096 (per value)", 10,
              cuda_hc_post(hf, hX, dkv, dkv, n, 4, 4096, hX2, &e_));
        BENCH("hc_post_chunk 2048 tok x 4 x 4096", 10,
              cuda_hc_post_chunk(hf, hX, dkv, dkv, n, 4, 4096, hX2, &e_));
    }
    BENCH("rmsnorm q 2048 tok x 64 heads x 512", 10, cuda_rmsnorm(dout, dout, NULL, n * H, Dh, 1e-6f, &e_));
    BENCH("rope_tail q 2048 tok x 64 heads", 10, cuda_rope_tail(dout, n * H, Dh, Dh - 64, H, 64, dfreqs, 0, 0, &e_));
    BENCH("qnorm_rope_chunk q 2048 tok x 64 heads x 512", 10,
          cuda_qnorm_rope_chunk(dout, n * H, Dh, 1e-6f, Dh - 64, H, 64, dfreqs, 0, &e_));
    float *crow = dev_alloc(1024 * 512 * 4), *st_a = dev_alloc(2 * 4 * 1024 * 4), *st_b = dev_alloc(2 * 4 * 1024 * 4);
    float *dape = dev_put(h, 128 * 1024 * 4);
    cuda_comp_state c4 = {4, 2, 512, 1024, crow, st_a, st_b};
    if (crow && st_a && st_b && dape) {
        BENCH("comp_push_chunk ratio 4 attn, 2048 tok", 10,
              cuda_comp_push_chunk(&c4, dkv, dkv, 1024, dape, dkv, 0, 512, 0, dfreqs, 64, 1e-6f, &e_));
    }
    int32_t *sel = malloc((size_t)n * 6 * 4);
    for (int64_t i = 0; i < n * 6; i++) sel[i] = (int32_t)((i % 6) * 40 + (i / 6) % 40);
    int32_t *dsel = dev_put(sel, n * 6 * 4), *doff = dev_alloc(257 * 4);
    int32_t *dpt = dev_alloc(n * 6 * 4), *dps = dev_alloc(n * 6 * 4);
    float *dpw = dev_alloc(n * 6 * 4);
    if (dsel && doff && dpt && dps && dpw)
        BENCH("moe_group 2048 tok x 6 of 256 experts", 20,
              cuda_moe_group(dsel, dkv, n, 6, 256, doff, dpt, dps, dpw, &e_));
    dev_free_all();
    free(h); free(isel); free(n_isel); free(sel);
}
