/*
 * tests/cuda/test_cuda_layer_attn.c — CUDA vs CPU for the attention side of a layer: sparse
 * attention with sinks over window + compressed rows (MODEL_MATH §5.4-5.6), the compressor step
 * (§6, model/compressor.c comp_push) and the indexer scores + top-k (§8, indexer_select); plus
 * their timings at Flash shapes.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/ops.h"
#include "cpu/refmath.h"
#include "cuda/cuda_api.h"
#include "model/compressor.h"
#include "model/forward.h"

#include "layer_check.h"

#define EPS 1e-6f

/* tests/cuda/test_cuda_chunk.c: the batched prefill ops vs the per-token ones checked here. */
void test_chunk_ops(void);
void bench_chunk_ops(void);
/* tests/cuda/test_cuda_dec.c: the one-token attention (attention_dec.cu), decode matvecs. */
void test_attn_dec(void);
/* tests/cuda/test_cuda_indexer.c: the indexer's query preparation and long-context timings. */
void test_indexer_prep(void);
void bench_indexer(void);

static const cpu_rope_cfg yarn_cfg = {64, 160000.0, 16.0, 32.0, 1.0, 65536.0};

/* The loop of model/attention.c attn_items (static there), from the same CPU primitives:
 * window rows by position (this chunk's from kv_chunk, earlier from the ring), then compressed
 * rows (selection or all complete), scores tau·dot, sink in the denominator, inverse RoPE.
 * Also the reference of the chunk kernel (test_cuda_chunk.c), which must equal it bit for bit. */
void attn_ref(const float *q, const float *kv_chunk, const float *ring, int64_t W,
              const float *comp, int ratio, const int32_t *isel, const int32_t *n_isel,
              int64_t topk, const float *sinks, int64_t n_tok, int64_t pos0, int64_t H,
              int64_t Dh, int n_rope, const float *freqs, float *out);
void attn_ref(const float *q, const float *kv_chunk, const float *ring, int64_t W,
                     const float *comp, int ratio, const int32_t *isel, const int32_t *n_isel,
                     int64_t topk, const float *sinks, int64_t n_tok, int64_t pos0, int64_t H,
                     int64_t Dh, int n_rope, const float *freqs, float *out) {
    size_t keys = cuda_attn_max_keys(W, ratio, topk, isel != NULL, pos0 + n_tok);
    float *z = malloc((keys + (size_t)Dh) * sizeof *z);
    const float tau = (float)(1.0 / sqrt((double)Dh));
    for (int64_t t = 0; t < n_tok; t++) {
        for (int64_t h = 0; h < H; h++) {
            int64_t p = pos0 + t, s0 = p - W + 1 < 0 ? 0 : p - W + 1, n_win = p - s0 + 1;
            int64_t n_comp = 0;
            const int32_t *sel = NULL;
            if (isel) { n_comp = n_isel[t]; sel = isel + t * topk; }
            else if (ratio) n_comp = (p + 1) / ratio;
            const float *qh = q + (t * H + h) * Dh;
            float *o = out + (t * H + h) * Dh, mx = -INFINITY;
#define KEY(i) ((i) < n_win ? ((s0 + (i)) >= pos0 ? kv_chunk + (s0 + (i) - pos0) * Dh        \
                                                  : ring + ((s0 + (i)) % W) * Dh)             \
                            : comp + (sel ? sel[(i) - n_win] : ((i) - n_win)) * Dh)
            for (int64_t i = 0; i < n_win + n_comp; i++) {
                z[i] = tau * cpu_dot_f32(qh, KEY(i), Dh);
                if (z[i] > mx) mx = z[i];
            }
            float den = ref_expf(sinks[h] - mx); /* model/attention.c's exp (cpu/refmath.h) */
            for (int64_t i = 0; i < n_win + n_comp; i++) {
                z[i] = ref_expf(z[i] - mx);
                den += z[i];
            }
            float *acc = z + n_win + n_comp;
            memset(acc, 0, (size_t)Dh * sizeof(float));
            for (int64_t i = 0; i < n_win + n_comp; i++) {
                const float *k = KEY(i);
                for (int64_t d = 0; d < Dh; d++) acc[d] += z[i] * k[d];
            }
#undef KEY
            float inv = 1.0f / den;
            for (int64_t d = 0; d < Dh; d++) o[d] = acc[d] * inv;
            cpu_rope_tail(o + Dh - n_rope, n_rope, freqs, p, true);
        }
    }
    free(z);
}

/* k distinct ascending rows of [0, n) (k <= n). */
static void pick_rows(int32_t *sel, int64_t k, int64_t n) {
    int64_t got = 0;
    for (int64_t r = 0; r < n && got < k; r++)
        if ((int64_t)(rnd_u64() % (uint64_t)(n - r)) < k - got) sel[got++] = (int32_t)r;
}

typedef struct attn_case {
    const char *what;
    int64_t H, n_tok, pos0;
    int ratio, indexed;
    int64_t topk;
} attn_case;

static void run_attn_case(const attn_case *c) {
    ds4_error err;
    const int64_t Dh = 512, W = 128, H = c->H, n = c->n_tok;
    const int n_rope = 64;
    float freqs[32];
    cpu_rope_freqs(&yarn_cfg, freqs);
    int64_t n_comp_rows = c->ratio ? (c->pos0 + n) / c->ratio + 1 : 1;
    float *q = rnd_vec(n * H * Dh, 1.0f), *kv = rnd_vec(n * Dh, 1.0f), *ring = rnd_vec(W * Dh, 1.0f);
    float *comp = rnd_vec(n_comp_rows * Dh, 1.0f), *sinks = rnd_vec(H, 1.0f);
    int64_t topk = c->indexed ? c->topk : 1;
    int32_t *isel = calloc((size_t)(n * topk), sizeof *isel), *n_isel = calloc((size_t)n, sizeof *n_isel);
    for (int64_t t = 0; t < n && c->indexed; t++) {
        int64_t n_c = (c->pos0 + t + 1) / 4, k = n_c < topk ? n_c : topk - (t % 3);
        pick_rows(isel + t * topk, k, n_c);
        n_isel[t] = (int32_t)k;
    }
    float *ref = malloc((size_t)(n * H * Dh) * sizeof *ref), *got = malloc((size_t)(n * H * Dh) * sizeof *got);
    attn_ref(q, kv, ring, W, comp, c->ratio, c->indexed ? isel : NULL, n_isel, topk, sinks, n,
             c->pos0, H, Dh, n_rope, freqs, ref);
    float *dq = dev_put(q, n * H * Dh * 4), *dkv = dev_put(kv, n * Dh * 4), *dring = dev_put(ring, W * Dh * 4);
    float *dcomp = dev_put(comp, n_comp_rows * Dh * 4), *dsinks = dev_put(sinks, H * 4);
    float *dfreqs = dev_put(freqs, sizeof freqs), *dout = dev_alloc(n * H * Dh * 4);
    float *dscr = dev_alloc(cuda_attn_scratch_bytes(n, H, Dh, W, c->ratio, topk, c->indexed, c->pos0));
    int32_t *disel = dev_put(isel, n * topk * 4), *dn = dev_put(n_isel, n * 4);
    char name[160];
    snprintf(name, sizeof name, "attn %s: %lld tok at pos %lld, %lld heads x 512, ratio %d%s",
             c->what, (long long)n, (long long)c->pos0, (long long)H, c->ratio,
             c->indexed ? ", indexer rows" : "");
    if (ok_call(cuda_attn(dq, dkv, dring, W, dcomp, c->ratio, c->indexed ? disel : NULL, dn, topk,
                          dsinks, n, c->pos0, H, Dh, n_rope, dfreqs, dscr, dout, &err),
                name, &err)) {
        dev_get(got, dout, n * H * Dh * 4);
        double m = 0;
        for (int64_t i = 0; i < n * H * Dh; i++) m = fmax(m, fabs(ref[i]));
        /* A chunk (n >= 2) follows the CPU's order step for step with the same exp: the same
         * bits. One token may take the split/merge kernels (per-split maxima and sums). */
        if (n >= 2) cmp_f32(name, ref, got, n * H * Dh, 0, 0);
        else cmp_f32(name, ref, got, n * H * Dh, 1e-5, 1e-6 * m);
    }
    dev_free_all();
    free(q); free(kv); free(ring); free(comp); free(sinks); free(isel); free(n_isel); free(ref); free(got);
}

void test_attention(void) {
    static const attn_case cs[] = {
        {"window only, partial window", 8, 1, 50, 0, 0, 0},
        {"window only, ring wrapped", 8, 1, 1000, 0, 0, 0},
        {"ratio 128 all rows", 8, 1, 1000, 128, 0, 0},
        {"ratio 4 indexed", 8, 1, 3000, 4, 1, 64},
        {"prefill chunk, indexed", 4, 5, 300, 4, 1, 64},
        {"prefill chunk over an entry boundary", 4, 4, 126, 128, 0, 0},
        {"Flash decode", 64, 1, 70000, 4, 1, 512},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) run_attn_case(&cs[i]);
    test_chunk_ops();
    test_attn_dec(); /* test_cuda_dec.c: decode attention bit for bit, decode matvecs */
}

/* ---- compressor ---- */

static void run_comp_case(const char *what, int64_t ratio, int64_t coff, int64_t dim,
                          comp_kind kind, int64_t n_pos) {
    ds4_error err;
    const int n_rope = 64;
    float freqs[32];
    cpu_rope_freqs(&yarn_cfg, freqs);
    int64_t w = coff * dim, st_n = coff * ratio * w, cap = n_pos / ratio + 1;
    kv_comp c = {ratio, coff, dim, cap, calloc((size_t)(cap * dim), 4), malloc((size_t)st_n * 4),
                 malloc((size_t)st_n * 4)};
    for (int64_t i = 0; i < st_n; i++) { c.st_kv[i] = 0.0f; c.st_sc[i] = -INFINITY; } /* §6.4 */
    compressor_weights cw;
    memset(&cw, 0, sizeof cw);
    cw.ratio = ratio; cw.coff = coff; cw.dim = dim;
    cw.ape = rnd_vec(ratio * w, 0.5f);
    cw.norm = rnd_vec(dim, 0.1f);
    for (int64_t i = 0; i < dim; i++) cw.norm[i] += 1.0f;
    float *A = rnd_vec(n_pos * w, 1.0f), *B = rnd_vec(n_pos * w, 1.0f);
    cuda_comp_state g = {ratio, coff, dim, cap, dev_alloc(cap * dim * 4), dev_put(c.st_kv, st_n * 4),
                         dev_put(c.st_sc, st_n * 4)};
    float *dA = dev_put(A, n_pos * w * 4), *dB = dev_put(B, n_pos * w * 4);
    float *dape = dev_put(cw.ape, ratio * w * 4), *dnorm = dev_put(cw.norm, dim * 4);
    float *dfreqs = dev_put(freqs, sizeof freqs);
    char name[160];
    snprintf(name, sizeof name, "comp_push %s: ratio %lld, dim %lld, %lld positions", what,
             (long long)ratio, (long long)dim, (long long)n_pos);
    int ok = 1, n_done = 0;
    for (int64_t p = 0; p < n_pos && ok; p++) {
        bool cpu_fin = comp_push(&c, &cw, A + p * w, B + p * w, p, kind, freqs, n_rope, EPS);
        int fin = 0;
        ok = ok_call(cuda_comp_push(&g, dA + p * w, dB + p * w, dape, dnorm, p,
                                    kind == COMP_INDEXER, dfreqs, n_rope, EPS, &fin, &err),
                     name, &err);
        if (ok && fin != (int)cpu_fin) {
            result(0, name, "finished-entry flag differs from the CPU");
            ok = 0;
        }
        n_done += fin;
    }
    if (ok) {
        int64_t nr = (int64_t)n_done * dim;
        float *got = malloc((size_t)(nr > st_n ? nr : st_n) * 4);
        char nm[200];
        dev_get(got, g.rows, nr * 4);
        snprintf(nm, sizeof nm, "%s: %d finished rows", name, n_done);
        /* Ends in an FP8 (FP4) rounding: an ULP of the pooled value may move one step. */
        cmp_rounded(nm, c.rows, got, nr, 2 + nr / 1000, kind == COMP_ATTN ? 0.25 : 1.0);
        dev_get(got, g.st_kv, st_n * 4);
        snprintf(nm, sizeof nm, "%s: streaming kv state", name);
        cmp_f32(nm, c.st_kv, got, st_n, 0, 0);
        dev_get(got, g.st_sc, st_n * 4);
        snprintf(nm, sizeof nm, "%s: streaming score state", name);
        cmp_f32(nm, c.st_sc, got, st_n, 0, 0);
        free(got);
    }
    dev_free_all();
    free(c.rows); free(c.st_kv); free(c.st_sc); free(cw.ape); free(cw.norm); free(A); free(B);
}

void test_compressor(void) {
    run_comp_case("attention, overlapping", 4, 2, 512, COMP_ATTN, 26);
    run_comp_case("attention, plain", 128, 1, 512, COMP_ATTN, 300);
    run_comp_case("indexer, overlapping", 4, 2, 128, COMP_INDEXER, 42);
}

/* ---- indexer ---- */

static void run_idx_case(const char *what, int64_t ih, int64_t id, int64_t n, int64_t pos0,
                         int64_t topk, int n_zero_rows) {
    ds4_error err;
    const int64_t n_c_max = (pos0 + n) / 4;
    float *q = rnd_vec(n * ih * id, 1.0f), *w = rnd_vec(n * ih, 0.1f);
    float *rows = rnd_vec((n_c_max + 1) * id, 1.0f);
    /* Zero rows score exactly 0: many ties, broken by the lower row (MODEL_MATH §17 #2). */
    for (int64_t r = 0; r < n_zero_rows && r < n_c_max; r++)
        memset(rows + ((r * 7919) % n_c_max) * id, 0, (size_t)id * 4);
    model m;
    memset(&m, 0, sizeof m);
    m.hp.idx_topk = topk; m.hp.idx_n_head = ih; m.hp.idx_head_dim = id;
    fwd_ws ws;
    memset(&ws, 0, sizeof ws);
    ws.iq = q; ws.iw = w;
    ws.isel = malloc((size_t)(n * topk) * 4);
    ws.n_isel = malloc((size_t)n * 4);
    ws.idx.p = malloc((size_t)(n_c_max + 1) * 4);
    ws.idx.cap = (size_t)(n_c_max + 1) * 4;
    kv_comp idx;
    memset(&idx, 0, sizeof idx);
    idx.rows = rows;
    indexer_select(&m, NULL, &idx, pos0, n, &ws);
    float *dq = dev_put(q, n * ih * id * 4), *dw = dev_put(w, n * ih * 4);
    float *drows = dev_put(rows, (n_c_max + 1) * id * 4);
    float *dsc = dev_alloc(cuda_indexer_scratch_bytes(n, pos0));
    int32_t *dsel = dev_alloc(n * topk * 4), *dn = dev_alloc(n * 4);
    char name[160];
    snprintf(name, sizeof name, "indexer %s: %lld heads x %lld, %lld tok at pos %lld, top-%lld of %lld rows",
             what, (long long)ih, (long long)id, (long long)n, (long long)pos0, (long long)topk,
             (long long)n_c_max);
    if (ok_call(cuda_indexer_topk(dq, dw, drows, n, pos0, ih, id, topk, dsc, dsel, dn, &err), name,
                &err)) {
        int32_t *gsel = malloc((size_t)(n * topk) * 4), gn[16];
        dev_get(gsel, dsel, n * topk * 4);
        dev_get(gn, dn, n * 4);
        char nm[200];
        snprintf(nm, sizeof nm, "%s: counts", name);
        cmp_i32(nm, ws.n_isel, gn, n);
        int64_t total = 0;
        for (int64_t t = 0; t < n; t++) {
            /* compare the valid prefix of each token's list */
            memmove(ws.isel + total, ws.isel + t * topk, (size_t)ws.n_isel[t] * 4);
            memmove(gsel + total, gsel + t * topk, (size_t)ws.n_isel[t] * 4);
            total += ws.n_isel[t];
        }
        snprintf(nm, sizeof nm, "%s: selected rows", name);
        cmp_i32(nm, ws.isel, gsel, total);
        int64_t nc_last = (pos0 + n) / 4;
        if (nc_last > topk) { /* the CPU scratch holds the last token's scores */
            size_t ld = (size_t)((pos0 + n) / 4 + 1); /* scores lead the scratch (indexer.cu) */
            float *gs = malloc((size_t)nc_last * 4);
            dev_get(gs, dsc + (size_t)(n - 1) * ld, nc_last * 4);
            snprintf(nm, sizeof nm, "%s: scores of the last token", name);
            cmp_f32(nm, ws.idx.p, gs, nc_last, 0, 0);
            free(gs);
        }
        free(gsel);
    }
    dev_free_all();
    free(q); free(w); free(rows); free(ws.isel); free(ws.n_isel); free(ws.idx.p);
}

void test_indexer(void) {
    run_idx_case("decode", 64, 128, 1, 8000, 512, 0);
    run_idx_case("prefill chunk", 64, 128, 3, 8000, 512, 0);
    run_idx_case("ties at the cut", 64, 128, 2, 4000, 512, 700);
    run_idx_case("fewer rows than k", 64, 128, 2, 100, 512, 0);
    run_idx_case("Flash decode at 64k", 64, 128, 1, 65535, 512, 0);
    run_idx_case("other shape (generic kernel)", 6, 72, 2, 3000, 100, 50);
    run_idx_case("beyond the shared-memory cache", 8, 64, 1, 240000, 512, 0);
    /* decode (1-2 tokens) selects over several blocks (issue #7); more tokens: one block each */
    run_idx_case("ties at the cut, 5 tokens (one block per token)", 64, 128, 5, 4000, 512, 700);
    run_idx_case("decode, 2 uneven slices", 16, 128, 1, 20001, 512, 40);
    run_idx_case("cut in a bin past the gather (16000 zero rows)", 8, 128, 1, 65535, 512, 16000);
    /* Flash shapes for indexer_tile.cu (issue #7): 520 / 4096 / 16384 / 32768 rows; chunks
     * whose tokens straddle the first row past top-k and the 4-token groups; then the first
     * kernels (DS4_CUDA_IDX_V1=1) at the same shapes. */
    run_idx_case("Flash decode at 2k", 64, 128, 1, 2079, 512, 0);
    run_idx_case("Flash decode at 16k, ties at the cut", 64, 128, 1, 16383, 512, 3000);
    run_idx_case("Flash decode at 128k", 64, 128, 1, 131071, 512, 0);
    run_idx_case("chunk across top-k rows", 64, 128, 9, 2043, 512, 0);
    run_idx_case("chunk at 16k, ties", 64, 128, 6, 16378, 512, 2000);
    run_idx_case("past one-block top-k (32769 rows)", 64, 128, 1, 131076, 512, 100);
    setenv("DS4_CUDA_IDX_V1", "1", 1);
    run_idx_case("v1 kernels: Flash decode at 64k", 64, 128, 1, 65535, 512, 0);
    run_idx_case("v1 kernels: chunk at 16k, ties", 64, 128, 6, 16378, 512, 2000);
    unsetenv("DS4_CUDA_IDX_V1");
    test_indexer_prep();
}

/* ---- timings ---- */

/* Device buffer of n_bytes filled with copies of the host block h (h_bytes). */
static void *dev_fill(const float *h, size_t h_bytes, size_t n_bytes) {
    ds4_error err;
    uint8_t *d = dev_alloc(n_bytes);
    for (size_t off = 0; d && off < n_bytes; off += h_bytes) {
        size_t len = n_bytes - off < h_bytes ? n_bytes - off : h_bytes;
        if (cuda_upload(d + off, h, len, &err)) return NULL;
    }
    return d;
}

void bench_attn_ops(void) {
    const int64_t H = 64, Dh = 512, W = 128, big = 262144;
    float *h = rnd_vec(big * 8, 1.0f);
    float freqs[32];
    cpu_rope_freqs(&yarn_cfg, freqs);
    int32_t *sel = malloc(512 * 4), n512 = 512;
    for (int i = 0; i < 512; i++) sel[i] = i * 31;
    float *dq = dev_put(h, H * Dh * 4), *dkv = dev_put(h, Dh * 4), *dring = dev_put(h, W * Dh * 4);
    size_t hb = (size_t)big * 8 * 4;
    float *dcomp = dev_fill(h, hb, 16384 * Dh * 4), *dsinks = dev_put(h, H * 4);
    float *dfreqs = dev_put(freqs, sizeof freqs), *dout = dev_alloc(H * Dh * 4);
    float *dscr = dev_alloc(cuda_attn_scratch_bytes(1, H, Dh, W, 128, 0, 0, 1048575));
    int32_t *dsel = dev_put(sel, 512 * 4), *dn = dev_put(&n512, 4);
    float *didx_rows = dev_fill(h, hb, (size_t)big * 128 * 4);
    float *diq = dev_put(h, 64 * 128 * 4), *diw = dev_put(h, 64 * 4);
    float *dsc = dev_alloc(cuda_indexer_scratch_bytes(1, 1048575));
    int32_t *disel = dev_alloc(512 * 4), *din = dev_alloc(4);
    float *st_a = dev_alloc(65536 * 4), *st_b = dev_alloc(65536 * 4), *crow = dev_alloc(64 * 1024 * 4);
    float *dape = dev_put(h, 128 * 1024 * 4);
    if (!dape || !dcomp || !didx_rows || !dscr) { printf("bench attn: allocation failed\n"); dev_free_all(); free(h); free(sel); return; }
    const int it = 100;
    BENCH("attn decode window only (128 rows)", it,
          cuda_attn(dq, dkv, dring, W, dcomp, 0, NULL, NULL, 0, dsinks, 1, 70000, H, Dh, 64, dfreqs, dscr, dout, &e_));
    BENCH("attn decode ratio 4, 128 + 512 indexed rows", it,
          cuda_attn(dq, dkv, dring, W, dcomp, 4, dsel, dn, 512, dsinks, 1, 70000, H, Dh, 64, dfreqs, dscr, dout, &e_));
    BENCH("attn decode ratio 128 at 64k (128 + 512 rows)", it,
          cuda_attn(dq, dkv, dring, W, dcomp, 128, NULL, NULL, 0, dsinks, 1, 65535, H, Dh, 64, dfreqs, dscr, dout, &e_));
    BENCH("attn decode ratio 128 at 1M (128 + 8192 rows)", 20,
          cuda_attn(dq, dkv, dring, W, dcomp, 128, NULL, NULL, 0, dsinks, 1, 1048575, H, Dh, 64, dfreqs, dscr, dout, &e_));
    cuda_comp_state c4 = {4, 2, 512, 64, crow, st_a, st_b}, c128 = {128, 1, 512, 64, crow, st_a, st_b};
    cuda_comp_state ci = {4, 2, 128, 256, crow, st_a, st_b};
    BENCH("comp_push ratio 4 attn, store only", it,
          cuda_comp_push(&c4, dq, dq, dape, dq, 1, 0, dfreqs, 64, EPS, NULL, &e_));
    BENCH("comp_push ratio 4 attn, store + finish", it,
          cuda_comp_push(&c4, dq, dq, dape, dq, 3, 0, dfreqs, 64, EPS, NULL, &e_));
    BENCH("comp_push ratio 128 attn, store + finish", it,
          cuda_comp_push(&c128, dq, dq, dape, dq, 127, 0, dfreqs, 64, EPS, NULL, &e_));
    BENCH("comp_push ratio 4 indexer, store + finish", it,
          cuda_comp_push(&ci, dq, dq, dape, dq, 3, 1, dfreqs, 64, EPS, NULL, &e_));
    BENCH("indexer score + top-512 at 64k (16384 rows)", it,
          cuda_indexer_topk(diq, diw, didx_rows, 1, 65535, 64, 128, 512, dsc, disel, din, &e_));
    BENCH("indexer score + top-512 at 1M (262144 rows)", 10,
          cuda_indexer_topk(diq, diw, didx_rows, 1, 1048575, 64, 128, 512, dsc, disel, din, &e_));
    dev_free_all();
    free(h);
    free(sel);
    bench_indexer();
    bench_chunk_ops();
}
