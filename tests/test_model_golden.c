/* tests/test_model_golden.c — the CPU forward pass against DeepSeek's official reference
 * outputs in ../shared/testdata/tiny-v4 (README "How to compare"): f32 and bf16 conversions
 * must match every logit of `short` and `window` (prefill and greedy decode) within 1e-3,
 * `short`'s per-layer tensors within 1e-4 and the MTP logits within 1e-3; `long`/`long512`
 * are compared statistically and routing differences are reported. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/ops.h"
#include "test_model_util.h"
#include "testutil.h"

/* Capture of the per-layer tensors and routing decisions of one run. */
typedef struct cap_store {
    int64_t T, D, hc, n_layer, k_idx, n_used;
    int want_layers;
    float *layer[8][4];      /* [layer][what] -> [T][row] */
    int32_t *experts;        /* [T][n_layer][n_used] */
    int32_t *isel[8];        /* [T][k_idx] per indexer layer slot (by layer id) */
    float *kvpre;            /* [T][n_layer][nk] window KV before its FP8 round trip, or NULL */
    int64_t nk;
    int n_flip;              /* kvpre elements {layer, pos, dim} mirrored across their E4M3
                                rounding midpoint before they are rounded */
    int64_t flip[8][3];
    double flip_q[8][2];     /* E4M3 code value (scaled units) before / after the mirror */
} cap_store;

static const char *k_what[4] = {"attn_out", "h_attn", "ffn_out", "h_out"};

static void cap_layer(void *u, int64_t layer, const char *what, int64_t pos0, int64_t n,
                      const float *rows, int64_t row_len) {
    cap_store *c = u;
    for (int w = 0; w < 4; w++) {
        if (strcmp(what, k_what[w]) || layer >= 8) continue;
        if (!c->layer[layer][w]) c->layer[layer][w] = calloc((size_t)(c->T * row_len), sizeof(float));
        for (int64_t t = 0; t < n && pos0 + t < c->T; t++)
            memcpy(c->layer[layer][w] + (pos0 + t) * row_len, rows + t * row_len,
                   (size_t)row_len * sizeof(float));
    }
}

static void cap_experts(void *u, int64_t layer, int64_t pos, const int32_t *ids, int n) {
    cap_store *c = u;
    if (pos >= c->T || n != c->n_used) return;
    memcpy(c->experts + (pos * c->n_layer + layer) * n, ids, (size_t)n * sizeof(int32_t));
}

static void cap_indexer(void *u, int64_t layer, int64_t pos, const int32_t *rows, int n) {
    cap_store *c = u;
    if (pos >= c->T || layer >= 8) return;
    if (!c->isel[layer]) {
        c->isel[layer] = malloc((size_t)(c->T * c->k_idx) * sizeof(int32_t));
        for (int64_t i = 0; i < c->T * c->k_idx; i++) c->isel[layer][i] = -1;
    }
    for (int i = 0; i < n && i < c->k_idx; i++) c->isel[layer][pos * c->k_idx + i] = rows[i];
}

/* MODEL_MATH §12 #1 geometry of one value of a 64-block: scale s = 2^ceil(log2(amax/448))
 * (amax floor 1e-4), then E4M3 step of |x/s| (subnormal step 2^-9). Returns the distance of
 * |x/s| to the nearest rounding midpoint in steps (0 = exact tie, 0.5 = on a code) and the
 * midpoint itself (unscaled) in *mid. */
static double fp8_tie_distance(const float *blk, int k, double *mid, double *s_out) {
    float amax = 0;
    for (int i = 0; i < 64; i++) amax = fabsf(blk[i]) > amax ? fabsf(blk[i]) : amax;
    if (amax < 1e-4f) amax = 1e-4f;
    double s = exp2(ceil(log2((double)amax / 448.0)));
    double a = fabs((double)blk[k]) / s, step;
    if (a < 0.015625) step = 0.001953125;
    else {
        int e;
        frexp(a, &e);
        step = ldexp(1.0, e - 4);
    }
    double f = a / step, m = (floor(f) + 0.5) * step;
    if (mid) *mid = m;
    if (s_out) *s_out = s;
    return fabs(f - floor(f) - 0.5);
}

static void cap_kv(void *u, int64_t layer, int64_t pos, float *row, int64_t n) {
    cap_store *c = u;
    if (pos >= c->T || layer >= c->n_layer) return;
    for (int f = 0; f < c->n_flip; f++) {
        if (layer != c->flip[f][0] || pos != c->flip[f][1]) continue;
        float *blk = row + c->flip[f][2] / 64 * 64;
        int k = (int)(c->flip[f][2] % 64);
        double mid, sc;
        fp8_tie_distance(blk, k, &mid, &sc);
        double a = fabs((double)blk[k]);
        c->flip_q[f][0] = cpu_e4m3_round((float)(blk[k] / sc));
        /* Same distance from the midpoint, other side: rounds to the other neighbour. */
        blk[k] = (float)((2 * mid * sc - a) * (blk[k] < 0 ? -1 : 1));
        c->flip_q[f][1] = cpu_e4m3_round((float)(blk[k] / sc));
    }
    if (c->kvpre && n == c->nk)
        memcpy(c->kvpre + (pos * c->n_layer + layer) * n, row, (size_t)n * sizeof(float));
}

static void cap_free(cap_store *c) {
    for (int l = 0; l < 8; l++) {
        for (int w = 0; w < 4; w++) free(c->layer[l][w]);
        free(c->isel[l]);
    }
    free(c->experts);
    free(c->kvpre);
}

typedef struct case_result {
    int64_t T, N, V;
    float *prefill;  /* [T][V] */
    float *decode;   /* [N][V] */
    float *hc;       /* [T][hc*D] */
    int32_t *decode_tokens; /* greedy choices we made [N] */
} case_result;

/* Evaluates a golden case: prompt in one call (all logits), then greedy decode of N tokens
 * one at a time, feeding the golden decode tokens (so a single flip cannot cascade). */
static void run_case(tm_model *tm, st_file *gf, const char *cs, cap_store *cap,
                     case_result *r) {
    char nm[96];
    uint64_t T, N;
    snprintf(nm, sizeof nm, "%s.tokens", cs);
    const int32_t *toks = tm_i32(gf, nm, &T);
    snprintf(nm, sizeof nm, "%s.decode_tokens", cs);
    const int32_t *dtoks = tm_i32(gf, nm, &N);
    const model_hparams *hp = model_get_hparams(tm->m);
    int64_t V = hp->n_vocab, hcD = hp->n_hc * hp->n_embd;
    r->T = (int64_t)T;
    r->N = (int64_t)N;
    r->V = V;
    r->prefill = malloc((size_t)(T * V) * sizeof(float));
    r->decode = malloc((size_t)(N * V) * sizeof(float));
    r->hc = malloc((size_t)(T * hcD) * sizeof(float));
    r->decode_tokens = malloc(N * sizeof(int32_t));
    model_state *st;
    ds4_error err = {0};
    cr_assert_eq(model_state_create(&st, tm->m, (int64_t)(T + N), &err), DS4_OK, "%s", err.msg);
    model_capture mc = {cap, cap && cap->want_layers ? cap_layer : NULL, cap_experts, cap_indexer,
                        cap && (cap->kvpre || cap->n_flip) ? cap_kv : NULL};
    model_eval_opts o = {MODEL_LOGITS_ALL, r->prefill, r->hc, cap ? &mc : NULL};
    cr_assert_eq(model_eval(tm->m, st, toks, (int64_t)T, &o, &err), DS4_OK, "%s: %s", cs, err.msg);
    const float *last = r->prefill + (T - 1) * V;
    for (uint64_t i = 0; i < N; i++) {
        r->decode_tokens[i] = tm_argmax(last, V);
        model_eval_opts od = {MODEL_LOGITS_LAST, r->decode + i * V, NULL, cap ? &mc : NULL};
        cr_assert_eq(model_eval(tm->m, st, &dtoks[i], 1, &od, &err), DS4_OK, "%s: %s", cs, err.msg);
        last = r->decode + i * V;
    }
    model_state_free(st);
}

static void free_result(case_result *r) {
    free(r->prefill);
    free(r->decode);
    free(r->hc);
    free(r->decode_tokens);
}

/* Every logit within tol; greedy decode tokens equal the golden ones. */
static void check_exact_case(tm_model *tm, st_file *gf, const char *cs, double tol,
                             const char *label) {
    case_result r;
    run_case(tm, gf, cs, NULL, &r);
    char nm[96];
    snprintf(nm, sizeof nm, "%s.prefill_logits", cs);
    const float *gp = tm_f32(gf, nm, NULL);
    snprintf(nm, sizeof nm, "%s.decode_logits", cs);
    const float *gd = tm_f32(gf, nm, NULL);
    snprintf(nm, sizeof nm, "%s.decode_tokens", cs);
    const int32_t *dt = tm_i32(gf, nm, NULL);
    int64_t at;
    double e = tm_max_abs(r.prefill, gp, r.T * r.V, &at);
    cr_log_info("%s %s prefill: max |diff| %.3g at pos %lld token %lld", label, cs, e,
                (long long)(at / r.V), (long long)(at % r.V));
    cr_assert(e <= tol, "%s %s prefill logits: max |diff| %.3g > %.0e at pos %lld vocab %lld "
              "(ref %.6f got %.6f)", label, cs, e, tol, (long long)(at / r.V),
              (long long)(at % r.V), gp[at], r.prefill[at]);
    e = tm_max_abs(r.decode, gd, r.N * r.V, &at);
    cr_log_info("%s %s decode: max |diff| %.3g", label, cs, e);
    cr_assert(e <= tol, "%s %s decode logits: max |diff| %.3g > %.0e at step %lld vocab %lld",
              label, cs, e, tol, (long long)(at / r.V), (long long)(at % r.V));
    for (int64_t i = 0; i < r.N; i++)
        cr_assert_eq(r.decode_tokens[i], dt[i], "%s %s greedy step %lld: golden %d, got %d", label,
                     cs, (long long)i, dt[i], r.decode_tokens[i]);
    free_result(&r);
}

static void check_mtp(tm_model *tm, st_file *gf, const char *cs, double tol, const char *label) {
    cr_assert(model_has_mtp(tm->m), "%s: converted model has no MTP block", label);
    case_result r;
    run_case(tm, gf, cs, NULL, &r);
    char nm[96];
    snprintf(nm, sizeof nm, "%s.mtp_logits", cs);
    uint64_t n;
    const float *gm = tm_f32(gf, nm, &n);
    snprintf(nm, sizeof nm, "%s.tokens", cs);
    const int32_t *toks = tm_i32(gf, nm, NULL);
    int64_t P = r.T - 1;
    cr_assert_eq((int64_t)n, P * r.V);
    /* README: MTP at position p gets the final HC state at p and the embedding of token p+1. */
    model_state *st;
    ds4_error err = {0};
    cr_assert_eq(model_state_create(&st, tm->m, r.T, &err), DS4_OK, "%s", err.msg);
    float *lg = malloc((size_t)(P * r.V) * sizeof(float));
    cr_assert_eq(model_eval_mtp(tm->m, st, r.hc, toks + 1, P, lg, NULL, &err), DS4_OK, "%s", err.msg);
    int64_t at;
    double e = tm_max_abs(lg, gm, P * r.V, &at);
    cr_log_info("%s %s mtp: max |diff| %.3g", label, cs, e);
    cr_assert(e <= tol, "%s %s MTP logits: max |diff| %.3g > %.0e at pos %lld vocab %lld "
              "(ref %.6f got %.6f)", label, cs, e, tol, (long long)(at / r.V),
              (long long)(at % r.V), gm[at], lg[at]);
    free(lg);
    model_state_free(st);
    free_result(&r);
}

static void check_layers(tm_model *tm, st_file *gf, double tol, const char *label) {
    const model_hparams *hp = model_get_hparams(tm->m);
    cap_store c = {0};
    uint64_t T;
    tm_i32(gf, "short.tokens", &T);
    c.T = (int64_t)T;
    c.D = hp->n_embd;
    c.hc = hp->n_hc;
    c.n_layer = hp->n_layer;
    c.n_used = hp->n_expert_used;
    c.k_idx = hp->idx_topk;
    c.want_layers = 1;
    c.experts = calloc((size_t)(c.T * c.n_layer * c.n_used), sizeof(int32_t));
    case_result r;
    run_case(tm, gf, "short", &c, &r);
    for (int64_t l = 0; l < hp->n_layer; l++) {
        for (int w = 0; w < 4; w++) {
            char nm[96];
            snprintf(nm, sizeof nm, "short.layer%lld.%s", (long long)l, k_what[w]);
            uint64_t n;
            const float *g = tm_f32(gf, nm, &n);
            cr_assert(c.layer[l][w] != NULL, "no capture for %s", nm);
            int64_t at;
            double e = tm_max_abs(c.layer[l][w], g, (int64_t)n, &at);
            cr_assert(e <= tol, "%s %s: max |diff| %.3g > %.0e at element %lld (ref %.7f got %.7f)",
                      label, nm, e, tol, (long long)at, g[at], c.layer[l][w][at]);
        }
    }
    /* Routing must agree exactly on this well-separated case (manifest margins > 1e-4). */
    uint64_t ne;
    const int32_t *ge = tm_i32(gf, "short.experts", &ne);
    for (int64_t t = 0; t < c.T; t++)
        for (int64_t l = 0; l < c.n_layer; l++)
            for (int64_t k = 0; k < c.n_used; k++) {
                int64_t i = (t * c.n_layer + l) * c.n_used + k;
                cr_assert_eq(c.experts[i], ge[i], "%s short experts pos %lld layer %lld slot %lld: "
                             "golden %d got %d", label, (long long)t, (long long)l, (long long)k,
                             ge[i], c.experts[i]);
            }
    free_result(&r);
    cap_free(&c);
}

/* A tiny-v4 conversion opened with one golden file: the fixture of the one-case tests below. */
typedef struct golden_run {
    char *path;
    tm_model tm;
    st_file *gf;
} golden_run;

static void golden_open(golden_run *g, const char *preset, int64_t topk_override,
                        const char *golden) {
    g->path = tm_convert_tiny(preset);
    tm_open(&g->tm, g->path, topk_override);
    g->gf = tm_golden(golden);
}

static void golden_close(golden_run *g) {
    st_close(g->gf);
    tm_close(&g->tm);
    tm_remove(g->path);
}

Test(model_golden, f32_short_window_logits, .timeout = 120) {
    golden_run g;
    golden_open(&g, "f32", 0, "golden_topk16.safetensors");
    check_exact_case(&g.tm, g.gf, "short", 1e-3, "f32");
    check_exact_case(&g.tm, g.gf, "window", 1e-3, "f32");
    golden_close(&g);
}

Test(model_golden, f32_short_layers_and_mtp, .timeout = 120) {
    golden_run g;
    golden_open(&g, "f32", 0, "golden_topk16.safetensors");
    check_layers(&g.tm, g.gf, 1e-4, "f32");
    check_mtp(&g.tm, g.gf, "short", 1e-3, "f32");
    check_mtp(&g.tm, g.gf, "window", 1e-3, "f32");
    golden_close(&g);
}

/* Margin between the two largest values of a row. */
static double top2_margin(const float *row, int64_t n) {
    double a = -INFINITY, b = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        if (row[i] > a) { b = a; a = row[i]; }
        else if (row[i] > b) b = row[i];
    }
    return a - b;
}

/* A capture of the routing (experts, and indexer rows where the engine reports them) over all
 * prompt + decode positions of case cs. Freed by cap_free. */
static cap_store cap_routing(const model_hparams *hp, st_file *gf, const char *cs) {
    char nm[96];
    uint64_t T, N;
    snprintf(nm, sizeof nm, "%s.tokens", cs);
    tm_i32(gf, nm, &T);
    snprintf(nm, sizeof nm, "%s.decode_tokens", cs);
    tm_i32(gf, nm, &N);
    cap_store c = {0};
    c.T = (int64_t)(T + N);
    c.n_layer = hp->n_layer;
    c.n_used = hp->n_expert_used;
    c.k_idx = hp->idx_topk;
    c.experts = calloc((size_t)(c.T * c.n_layer * c.n_used), sizeof(int32_t));
    return c;
}

/* README "How to compare" for cases with near-tied routing: positions within 1e-3, argmax
 * agreement where the golden top-2 margin > 1e-2, routing differences reported.
 * The near-tie below is re-derived and printed by f32_long_divergence_is_an_fp8_near_tie
 * (docs/ENGINE.md has the numbers).
 *
 * Why `long` cannot reach 99% within 1e-3: the FP8 KV round trip (MODEL_MATH §12 #1) is a
 * discrete decision per element. Two correct f32 engines differ by ~5e-7 relative (measured on
 * short.layer*: rel-RMS 2e-7..1e-6), and in `long` layer 1's KV element 32 at position 254
 * lies 1.3e-5 of an E4M3 step from a rounding tie, so it rounds the other way than in the
 * reference (ours: -0.484375417, just past the tie at -0.484375); the ~1e-4 perturbation then
 * flips further near-ties (FP8 and the indexer's top-k) and errors settle around 1e-3 for the
 * rest of the sequence. Forcing the other rounding of that one element (experiment) moves the
 * first position beyond 1e-3 from 331 to 626, right after the next layer-1 near-tie (pos 625). Every position before 254 is
 * within 2e-5. The floors below are what this engine measures (see the report line); the
 * argmax criterion holds at >= 99% of clear-margin positions. */
static void check_stat_case(tm_model *tm, st_file *gf, const char *cs, bool tail_only,
                            int min_close_pct, const char *label) {
    const model_hparams *hp = model_get_hparams(tm->m);
    char nm[96];
    cap_store c = cap_routing(hp, gf, cs);
    case_result r;
    run_case(tm, gf, cs, &c, &r);
    int64_t V = r.V, n_pos = 0, n_close = 0, n_margin = 0, n_arg_bad = 0, first_far = -1;
    double worst = 0;
    const float *gp;
    int64_t p0 = 0;
    if (tail_only) {
        uint64_t n;
        snprintf(nm, sizeof nm, "%s.prefill_logits_tail", cs);
        gp = tm_f32(gf, nm, &n);
        p0 = r.T - (int64_t)(n / (uint64_t)V);
        /* Argmax of every prompt position (no margins known there: counted, >= 99% equal). */
        snprintf(nm, sizeof nm, "%s.prefill_argmax", cs);
        const int32_t *ga = tm_i32(gf, nm, NULL);
        int64_t same = 0;
        for (int64_t t = 0; t < r.T; t++) same += tm_argmax(r.prefill + t * V, V) == ga[t];
        cr_log_info("%s %s: prompt argmax equal at %lld / %lld positions", label, cs,
                    (long long)same, (long long)r.T);
        cr_assert(same * 100 >= r.T * 99, "%s %s: argmax equal at only %lld of %lld positions",
                  label, cs, (long long)same, (long long)r.T);
    } else {
        snprintf(nm, sizeof nm, "%s.prefill_logits", cs);
        gp = tm_f32(gf, nm, NULL);
    }
    snprintf(nm, sizeof nm, "%s.decode_logits", cs);
    const float *gd = tm_f32(gf, nm, NULL);
    for (int64_t t = p0; t < r.T + r.N; t++) {
        const float *g = t < r.T ? gp + (t - p0) * V : gd + (t - r.T) * V;
        const float *o = t < r.T ? r.prefill + t * V : r.decode + (t - r.T) * V;
        double e = tm_max_abs(o, g, V, NULL);
        if (e > worst) worst = e;
        if (e > 1e-3 && first_far < 0) first_far = t;
        n_pos++;
        n_close += e <= 1e-3;
        if (top2_margin(g, V) > 1e-2) {
            n_margin++;
            n_arg_bad += tm_argmax(o, V) != tm_argmax(g, V);
        }
    }
    /* Routing differences against the reference's choices. */
    snprintf(nm, sizeof nm, "%s.experts", cs);
    const int32_t *ge = tm_i32(gf, nm, NULL);
    int64_t exp_diff = 0;
    for (int64_t t = 0; t < c.T; t++) {
        int d = 0;
        for (int64_t i = 0; i < c.n_layer * c.n_used; i++)
            d |= c.experts[t * c.n_layer * c.n_used + i] != ge[t * c.n_layer * c.n_used + i];
        exp_diff += d;
    }
    int64_t idx_diff = 0, J = 0, idx_compared = 0;
    for (int64_t l = 0; l < hp->n_layer && l < 8; l++) {
        if (hparams_ratio(hp, l) != 4) continue;
        snprintf(nm, sizeof nm, "%s.indexer_sel.%lld", cs, (long long)J++);
        if (!st_find(gf, nm)) continue; /* long512 ships no indexer selections */
        idx_compared++;
        uint64_t n;
        const int32_t *gi = tm_i32(gf, nm, &n);
        int64_t k = (int64_t)(n / (uint64_t)c.T);
        for (int64_t t = 0; t < c.T; t++) {
            /* The reference sorts its k slots ascending with -1 (none) included, so the
             * padding comes first: compare as sets. */
            int64_t n_mine = 0, n_g = 0, d = 0;
            for (int64_t i = 0; i < c.k_idx && c.isel[l]; i++) n_mine += c.isel[l][t * c.k_idx + i] >= 0;
            for (int64_t i = 0; i < k; i++) n_g += gi[t * k + i] >= 0;
            d = n_mine != n_g;
            for (int64_t i = 0; i < n_g && !d; i++) d = c.isel[l][t * c.k_idx + i] != gi[t * k + (k - n_g) + i];
            idx_diff += d != 0;

        }
    }
    char line[512], idx_s[32] = "n/a (no reference)";
    if (idx_compared) snprintf(idx_s, sizeof idx_s, "%lld", (long long)idx_diff);
    snprintf(line, sizeof line, "%s %s: %lld/%lld positions within 1e-3 (worst %.3g, first beyond "
             "1e-3 at %lld); argmax differs at %lld of %lld clear-margin positions; positions "
             "choosing other experts: %lld, other indexer rows: %s (of %lld)", label, cs,
             (long long)n_close, (long long)n_pos, worst, (long long)first_far,
             (long long)n_arg_bad, (long long)n_margin, (long long)exp_diff, idx_s,
             (long long)c.T);
    cr_log_info("%s", line);
    printf("%s\n", line);
    cr_assert(n_close * 100 >= n_pos * min_close_pct, "%s %s: only %lld of %lld positions within "
              "1e-3 (floor %d%%)", label, cs, (long long)n_close, (long long)n_pos, min_close_pct);
    cr_assert(n_arg_bad * 100 <= n_margin, "%s %s: argmax differs at %lld of %lld clear-margin "
              "positions (> 1%%)", label, cs, (long long)n_arg_bad, (long long)n_margin);
    free_result(&r);
    cap_free(&c);
}

Test(model_golden, f32_long_statistics, .timeout = 240) {
    golden_run g;
    golden_open(&g, "f32", 0, "golden_topk16.safetensors");
    check_stat_case(&g.tm, g.gf, "long", false, 40, "f32");
    golden_close(&g);
}

#define N_FORCE_ROUNDS 8

/* Max |logit diff| per position of a run against the golden (prefill then decode); NAN where
 * the golden has no logits (long512 ships only the last 64 prompt positions). */
static double *pos_diffs(st_file *gf, const char *cs, const case_result *r) {
    char nm[96];
    uint64_t n;
    snprintf(nm, sizeof nm, "%s.prefill_logits", cs);
    bool tail = st_find(gf, nm) == NULL;
    if (tail) snprintf(nm, sizeof nm, "%s.prefill_logits_tail", cs);
    const float *gp = tm_f32(gf, nm, &n);
    int64_t p0 = r->T - (int64_t)(n / (uint64_t)r->V);
    snprintf(nm, sizeof nm, "%s.decode_logits", cs);
    const float *gd = tm_f32(gf, nm, NULL);
    double *e = malloc((size_t)(r->T + r->N) * sizeof(double));
    for (int64_t t = 0; t < r->T + r->N; t++) {
        if (t < p0) { e[t] = NAN; continue; }
        const float *g = t < r->T ? gp + (t - p0) * r->V : gd + (t - r->T) * r->V;
        const float *o = t < r->T ? r->prefill + t * r->V : r->decode + (t - r->T) * r->V;
        e[t] = tm_max_abs(o, g, r->V, NULL);
    }
    return e;
}

static int64_t first_beyond(const double *e, int64_t n, double tol) {
    for (int64_t t = 0; t < n; t++) if (e[t] > tol) return t;
    return -1;
}

/* Issue #3 point 3, the evidence that the 99%-within-1e-3 target of `long` / `long512` is out
 * of reach for an f32 engine (docs/ENGINE.md): (1) every compared position before P agrees
 * within 1e-4 and P is the first that does not; (2) at P one FP8 KV rounding (MODEL_MATH §12
 * #1) of the engine lies within 1e-4 E4M3 steps of a rounding midpoint (a few f32 ulps: below
 * what two f32 engines' summation orders decide); (3) forcing that value to the other side of
 * the midpoint moves the first divergence past P, so the reference rounded it the other way;
 * repeating that for each next divergence brings the case to >= 99% of its compared positions
 * within 1e-3. Printed, and asserted, so that a change of the engine or data that invalidates
 * the explanation fails here. Returns nothing; fails the test on a broken premise. */
static void force_near_ties(const char *file, const char *cs, int64_t topk) {
    char *p = tm_convert_tiny("f32");
    tm_model tm;
    tm_open(&tm, p, topk);
    const model_hparams *hp = model_get_hparams(tm.m);
    st_file *gf = tm_golden(file);
    cap_store c = cap_routing(hp, gf, cs);
    c.nk = hp->head_dim - hp->n_rope;
    c.kvpre = calloc((size_t)(c.T * c.n_layer * c.nk), sizeof(float));
    int64_t n_pos = c.T, P0 = -1, P1 = -1, last_close = 0, n_known = 0;
    double bd0 = 1;
    /* Round k runs with the k near-ties found so far forced the other way, finds the first
     * position beyond 1e-4 and the nearest-to-tie KV rounding there (every layer, every
     * non-RoPE dim), and forces it in round k+1. */
    for (int k = 0; k <= N_FORCE_ROUNDS; k++) {
        case_result r;
        run_case(&tm, gf, cs, &c, &r);
        double *e = pos_diffs(gf, cs, &r);
        int64_t P = first_beyond(e, n_pos, 1e-4), far = first_beyond(e, n_pos, 1e-3), close = 0;
        double before = 0;
        n_known = 0;
        for (int64_t t = 0; t < n_pos; t++) close += e[t] <= 1e-3, n_known += !isnan(e[t]);
        for (int64_t t = 0; t < (P < 0 ? n_pos : P); t++) before = e[t] > before ? e[t] : before;
        int64_t bl = -1, bi = -1, n_near = 0;
        double bd = 1, bmid = 0, bs = 0;
        for (int64_t t = 0; t < n_pos; t++)
            for (int64_t l = 0; l < c.n_layer; l++) {
                const float *row = c.kvpre + (t * c.n_layer + l) * c.nk;
                for (int64_t i = 0; i < c.nk; i++) {
                    double mid, sc, d = fp8_tie_distance(row + i / 64 * 64, (int)(i % 64), &mid, &sc);
                    n_near += d < 1e-4;
                    if (t == P && d < bd) bd = d, bl = l, bi = i, bmid = mid, bs = sc;
                }
            }
        char line[768], forced[96] = "";
        if (k > 0)
            snprintf(forced, sizeof forced, " (forced: layer %lld pos %lld dim %lld, E4M3 %g -> %g)",
                     (long long)c.flip[k - 1][0], (long long)c.flip[k - 1][1],
                     (long long)c.flip[k - 1][2], c.flip_q[k - 1][0], c.flip_q[k - 1][1]);
        int w = snprintf(line, sizeof line, "%s FP8 near-ties, round %d%s: %lld/%lld compared "
                         "positions within 1e-3, all compared before %lld within %.2g, first "
                         "beyond 1e-4 at %lld, beyond 1e-3 at %lld", cs, k, forced,
                         (long long)close, (long long)n_known, (long long)P, before,
                         (long long)P, (long long)far);
        if (P >= 0 && w > 0 && (size_t)w < sizeof line) {
            float v = c.kvpre[(P * c.n_layer + bl) * c.nk + bi];
            snprintf(line + w, sizeof line - (size_t)w, "; there the nearest KV rounding is layer "
                     "%lld dim %lld = %.9f, %.2e E4M3 steps from the midpoint %.9f (scale 2^%d; "
                     "%lld of %lld roundings of this run are within 1e-4 steps)", (long long)bl,
                     (long long)bi, v, bd, (v < 0 ? -1 : 1) * bmid * bs, (int)lround(log2(bs)),
                     (long long)n_near, (long long)(n_pos * c.n_layer * c.nk));
        }
        cr_log_info("%s", line);
        printf("%s\n", line);
        if (k == 0) P0 = P, bd0 = bd;
        last_close = close;
        if (k == 1) P1 = P;
        if (k > 0)
            cr_assert(c.flip_q[k - 1][0] != c.flip_q[k - 1][1], "round %d: forcing did not change "
                      "the E4M3 code", k);
        free(e);
        free_result(&r);
        if (P < 0 || bd >= 1e-4 || c.n_flip == 8) break; /* nothing left / not an FP8 near-tie */
        c.flip[c.n_flip][0] = bl, c.flip[c.n_flip][1] = P, c.flip[c.n_flip][2] = bi;
        c.n_flip++;
    }
    cr_assert(P0 > 0, "%s: no position beyond 1e-4 (first %lld): the premise changed", cs,
              (long long)P0);
    cr_assert(bd0 < 1e-4, "%s: the nearest FP8 rounding at the first divergent position %lld is "
              "%.3g steps from a tie; the near-tie explanation does not hold", cs, (long long)P0, bd0);
    cr_assert(P1 < 0 || P1 > P0, "%s: forcing the other rounding at %lld did not move the first "
              "divergence (still %lld)", cs, (long long)P0, (long long)P1);
    /* With those few FP8 decisions taken the reference's way, issue #3's criterion holds. */
    cr_assert(last_close * 100 >= n_known * 99, "%s with %d FP8 near-ties forced: only %lld of "
              "%lld compared positions within 1e-3", cs, c.n_flip, (long long)last_close,
              (long long)n_known);
    cap_free(&c);
    st_close(gf);
    tm_close(&tm);
    tm_remove(p);
}

Test(model_golden, f32_long_divergence_is_an_fp8_near_tie, .timeout = 240) {
    force_near_ties("golden_topk16.safetensors", "long", 0);
}

/* Not for long512: its golden has logits only from prompt position 2536 on, and that first
 * compared position already differs by 1.3e-2, so the first divergence cannot be located;
 * forcing any one of the 19 window-KV roundings within 1.5e-5 steps of a tie before 2536 does
 * not remove it either (experiment, docs/ENGINE.md §3). */

Test(model_golden, f32_long512_statistics, .timeout = 240) {
    golden_run g;
    /* golden_topk512: same weights, index_topk 512 */
    golden_open(&g, "f32", 512, "golden_topk512.safetensors");
    check_stat_case(&g.tm, g.gf, "long512", true, 90, "f32");
    golden_close(&g);
}

Test(model_golden, window_indexer_and_experts_match, .timeout = 120) {
    golden_run g;
    golden_open(&g, "f32", 0, "golden_topk16.safetensors");
    check_stat_case(&g.tm, g.gf, "window", false, 100, "f32");
    golden_close(&g);
}

/* The bf16 preset as issue #3 states it: the converter keeps the matrices the checkpoint
 * stores in F32 (hc_*_fn, compressor ape) in F32 (cv_policy.keep_f32_src) and every other
 * source (BF16, FP8, FP4) is exact in BF16, so the file is lossless. */
Test(model_golden, bf16_short_window_logits_and_mtp, .timeout = 120) {
    golden_run g;
    golden_open(&g, "bf16", 0, "golden_topk16.safetensors");
    check_exact_case(&g.tm, g.gf, "short", 1e-3, "bf16");
    check_exact_case(&g.tm, g.gf, "window", 1e-3, "bf16");
    check_mtp(&g.tm, g.gf, "short", 1e-3, "bf16");
    check_mtp(&g.tm, g.gf, "window", 1e-3, "bf16");
    golden_close(&g);
}

/* The f16 preset: BF16/FP8/FP4 sources in F16 (exact unless a value leaves F16's range or
 * needs more than its 10 mantissa bits below 2^-14), F32 sources kept F32; measured as close
 * as f32 (max 6e-6). */
Test(model_golden, f16_short_window_logits, .timeout = 120) {
    golden_run g;
    golden_open(&g, "f16", 0, "golden_topk16.safetensors");
    check_exact_case(&g.tm, g.gf, "short", 1e-3, "f16");
    check_exact_case(&g.tm, g.gf, "window", 1e-3, "f16");
    golden_close(&g);
}

/* GGUF_LAYOUT §3.8: the MTP block in a companion file, as ds4 publishes it. */
Test(model_golden, mtp_from_companion_file, .timeout = 120) {
    char *p = tm_convert_tiny("f32");
    char *dir = tu_tmpdir();
    char *mainp = tu_join(dir, "main.gguf"), *mtpp = tu_join(dir, "mtp.gguf");
    tm_split_mtp(p, mainp, mtpp);
    tm_model tm;
    tm_open(&tm, mainp, 0);
    cr_assert(!model_has_mtp(tm.m), "main file alone must have no MTP block");
    tm_close(&tm);
    gguf_ctx *g, *gm;
    ds4_error err = {0};
    cr_assert_eq(gguf_open(&g, mainp, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(gguf_open(&gm, mtpp, &err), DS4_OK, "%s", err.msg);
    model_options o = {.mtp_gguf = gm};
    cr_assert_eq(model_open(&tm.m, g, &o, &err), DS4_OK, "%s", err.msg);
    tm.g = g;
    st_file *gf = tm_golden("golden_topk16.safetensors");
    check_mtp(&tm, gf, "short", 1e-3, "f32 companion");
    /* A companion without the block is an error naming the missing tensor. */
    model *m2;
    model_options bad = {.mtp_gguf = g};
    cr_assert_eq(model_open(&m2, g, &bad, &err), DS4_ERR_NOT_FOUND);
    cr_assert(strstr(err.msg, "mtp.0.") != NULL, "message: %s", err.msg);
    st_close(gf);
    tm_close(&tm);
    gguf_close(gm);
    tm_remove(mainp);
    tm_remove(mtpp);
    tm_rmdir(dir);
    tm_remove(p);
}
