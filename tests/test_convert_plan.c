/* tests/test_convert_plan.c — the Flash tensor plan against the tables of GGUF_LAYOUT §3 (read
 * from ../shared/spec in place), the q2/q4 size accounting of §3.7, synthetic models, and the
 * imatrix reader and its effect on the encoders. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/gguf.h"
#include "format/quant.h"
#include "format/types.h"
#include "model/convert.h"
#include "model/convert_imatrix.h"
#include "model/synthetic.h"
#include "testutil.h"

/* ---- GGUF_LAYOUT.md parsing ----------------------------------------------------------------- */

static char *spec_text(void) {
    size_t len;
    char *s = tu_read_shared("spec/GGUF_LAYOUT.md", &len);
    char *t = realloc(s, len + 1);
    t[len] = 0;
    return t;
}

/* Section text from the heading `from` up to `to` (exclusive), malloc'd. */
static char *section(const char *doc, const char *from, const char *to) {
    const char *a = strstr(doc, from), *b = a ? strstr(a, to) : NULL;
    cr_assert(a && b, "GGUF_LAYOUT.md lacks '%s' .. '%s'", from, to);
    return strndup(a, (size_t)(b - a));
}

/* Splits a markdown table row into trimmed cells; returns the count. */
static int cells(const char *line, char out[][160], int max) {
    int n = 0;
    const char *p = strchr(line, '|');
    while (p && n < max) {
        const char *q = strchr(p + 1, '|');
        const char *nl = strchr(p + 1, '\n');
        if (!q || (nl && nl < q)) break;
        const char *s = p + 1, *e = q;
        while (s < e && *s == ' ') s++;
        while (e > s && e[-1] == ' ') e--;
        snprintf(out[n++], 160, "%.*s", (int)(e - s), s);
        p = q;
    }
    return n;
}

/* Parses "[a, b, c]" lists in `text`. With several lists (compressor rows) the one annotated
 * "(ratio R)" is taken, or, without annotations, the first for ratio 4 and the second for
 * ratio 128 (the order of the §3.3 rows). Returns the dim count. */
static int spec_dims(const char *text, uint32_t ratio, uint64_t ne[3]) {
    const char *p = text;
    int has_ratio = strstr(text, "(ratio") != NULL, idx = 0;
    int want_idx = (!has_ratio && ratio == 128 && strstr(text, "] / [")) ? 1 : 0;
    while ((p = strchr(p, '['))) {
        int n = 0;
        const char *q = p + 1;
        while (n < 3) {
            ne[n++] = strtoull(q, (char **)&q, 10);
            if (*q != ',') break;
            q += 2;
        }
        const char *close = strchr(p, ']');
        unsigned r = 0;
        if (has_ratio ? (sscanf(close + 1, " (ratio %u)", &r) == 1 && r == ratio) : idx == want_idx)
            return n;
        idx++;
        p = close;
    }
    return 0;
}

static uint64_t spaced_number(const char *s) {
    uint64_t v = 0;
    int any = 0;
    for (; *s; s++)
        if (*s >= '0' && *s <= '9') v = v * 10 + (uint64_t)(*s - '0'), any = 1;
    return any ? v : UINT64_MAX;
}

static bool layer_has(const char *rule, uint32_t L, uint32_t ratio) {
    if (!strcmp(rule, "all")) return true;
    if (!strcmp(rule, "L≥2")) return L >= 2;
    if (!strcmp(rule, "L≥3")) return L >= 3;
    if (!strcmp(rule, "L<3")) return L < 3;
    if (!strcmp(rule, "ratio 4")) return ratio == 4;
    cr_assert_fail("GGUF_LAYOUT §3.3: unknown layer rule '%s'", rule);
    return false;
}

static void check_type(const cv_tensor *t, const char *spec_type) {
    ds4_type want;
    cr_assert(ds4_type_from_name(spec_type, &want), "spec type '%s'", spec_type);
    cr_assert_eq(t->type, (uint32_t)want, "%s: type %s, GGUF_LAYOUT says %s", t->name,
                 ds4_type_name(t->type), spec_type);
}

static void check_dims(const cv_tensor *t, const uint64_t *ne, int n) {
    cr_assert_eq((int)t->n_dims, n, "%s: %u dims, GGUF_LAYOUT says %d", t->name, t->n_dims, n);
    for (int d = 0; d < n; d++)
        cr_assert_eq(t->ne[d], ne[d], "%s: ne[%d] = %llu, GGUF_LAYOUT says %llu", t->name, d,
                     (unsigned long long)t->ne[d], (unsigned long long)ne[d]);
}

/* Every tensor of the §3.2/§3.3 tables, in every layer where the table says it exists, has the
 * spec's dims and type; the plan has nothing else; counts and bytes match §3.1/§3.7. */
static void check_flash_plan(cv_preset preset) {
    cv_shape s;
    ds4_error err;
    cr_assert_eq(cv_shape_preset(&s, "flash", &err), DS4_OK, "%s", err.msg);
    cv_policy pol;
    cv_policy_init(&pol, preset);
    cv_plan plan;
    cr_assert_eq(cv_plan_build(&plan, &s, &pol, false, &err), DS4_OK, "%s", err.msg);
    int col = preset == CV_PRESET_Q2 ? 0 : 1;
    char *doc = spec_text();
    uint8_t *seen = calloc(plan.n, 1);
    char c[8][160];
    /* §3.2 globals. */
    char *glob = section(doc, "### 3.2", "### 3.3");
    for (char *line = glob; (line = strstr(line, "\n| `")); line++) {
        cr_assert(cells(line + 1, c, 8) >= 4);
        char name[96];
        cr_assert(sscanf(c[0], "`%95[^`]`", name) == 1);
        const cv_tensor *t = cv_plan_find(&plan, name);
        cr_assert(t, "plan lacks global %s", name);
        uint64_t ne[3];
        int n = spec_dims(c[1], 0, ne);
        check_dims(t, ne, n);
        check_type(t, c[2 + col]);
        seen[t - plan.t] = 1;
    }
    /* §3.3 per layer. */
    char *lay = section(doc, "### 3.3", "### 3.4");
    int rows = 0;
    for (char *line = lay; (line = strstr(line, "\n| `")); line++) {
        cr_assert(cells(line + 1, c, 8) >= 4);
        char name[96], q2[32], q4[32];
        cr_assert(sscanf(c[0], "`%95[^`]`", name) == 1);
        cr_assert(sscanf(c[2], "%31s / %31s", q2, q4) == 2, "types cell '%s'", c[2]);
        rows++;
        for (uint32_t L = 0; L < s.n_layers; L++) {
            char full[128];
            snprintf(full, sizeof full, "blk.%u.%s", L, name);
            const cv_tensor *t = cv_plan_find(&plan, full);
            if (!layer_has(c[3], L, s.ratios[L])) {
                cr_assert_null(t, "%s should not exist (layers: %s)", full, c[3]);
                continue;
            }
            cr_assert(t, "plan lacks %s", full);
            uint64_t ne[3];
            int n = spec_dims(c[1], s.ratios[L], ne);
            check_dims(t, ne, n);
            check_type(t, col ? q4 : q2);
            seen[t - plan.t] = 1;
        }
    }
    /* 23 in every layer + router bias / tid2eid + 4 compressor + 6 indexer rows. */
    cr_assert_eq(rows, 35, "§3.3 lists 35 per-layer rows, parsed %d", rows);
    for (uint64_t i = 0; i < plan.n; i++) cr_assert(seen[i], "plan has %s, not in GGUF_LAYOUT §3", plan.t[i].name);
    /* §3.1 total and §3.7 per-type accounting. */
    char *s31 = section(doc, "### 3.1", "### 3.2");
    const char *tot = strstr(s31, "= **");
    cr_assert(tot, "§3.1 total not found");
    char num[8];
    snprintf(num, sizeof num, "%.5s", tot + 4);
    cr_assert_eq(plan.n, spaced_number(num), "tensor count %llu, §3.1 says %s",
                 (unsigned long long)plan.n, num);
    free(s31);
    char *acc = section(doc, "### 3.7", "### 3.8");
    uint64_t n_by[DS4_TYPE_ID_LIMIT] = {0}, b_by[DS4_TYPE_ID_LIMIT] = {0};
    for (uint64_t i = 0; i < plan.n; i++) n_by[plan.t[i].type]++, b_by[plan.t[i].type] += plan.t[i].n_bytes;
    int types_checked = 0;
    for (char *line = acc; (line = strstr(line, "\n| ")); line++) {
        if (cells(line + 1, c, 8) < 4) continue;
        ds4_type ty;
        uint64_t want = spaced_number(c[2 + col]);
        if (strstr(c[0], "data region")) {
            cr_assert_eq(plan.data_bytes, want, "data region %llu bytes, GGUF_LAYOUT §3.7 says %llu",
                         (unsigned long long)plan.data_bytes, (unsigned long long)want);
            types_checked++;
            continue;
        }
        if (!ds4_type_from_name(c[0], &ty)) continue;
        if (want == UINT64_MAX) {
            cr_assert_eq(n_by[ty], 0, "%s should not occur", c[0]);
        } else {
            cr_assert_eq(n_by[ty], spaced_number(c[1]), "%s count", c[0]);
            cr_assert_eq(b_by[ty], want, "%s bytes %llu, spec %llu", c[0],
                         (unsigned long long)b_by[ty], (unsigned long long)want);
        }
        types_checked++;
    }
    cr_assert_eq(types_checked, 8, "§3.7 rows parsed: %d", types_checked);
    free(seen);
    free(glob);
    free(lay);
    free(acc);
    free(doc);
    cv_plan_free(&plan);
}

Test(convert_plan, flash_q2_matches_gguf_layout) { check_flash_plan(CV_PRESET_Q2); }
Test(convert_plan, flash_q4_matches_gguf_layout) { check_flash_plan(CV_PRESET_Q4); }

/* Test presets (issue #3): every matrix the checkpoint stores in F32 (the "(F32," HF source
 * cells of §3.2/§3.3) stays F32, every other matrix gets the preset type, vectors stay F32;
 * an explicit family override (`dense_override`) wins over the F32 rule. */
static void check_test_preset(cv_preset preset, uint32_t mat_type, const char *dense_override) {
    cv_shape s;
    ds4_error err;
    cr_assert_eq(cv_shape_preset(&s, "flash", &err), DS4_OK, "%s", err.msg);
    cv_policy pol;
    cv_policy_init(&pol, preset);
    if (dense_override) cr_assert_eq(cv_policy_override(&pol, dense_override, &err), DS4_OK);
    cv_plan plan;
    cr_assert_eq(cv_plan_build(&plan, &s, &pol, false, &err), DS4_OK, "%s", err.msg);
    char *doc = spec_text();
    char *tab = section(doc, "### 3.2", "### 3.4");
    char c[8][160];
    int n_f32_src = 0;
    for (char *line = tab; (line = strstr(line, "\n| `")); line++) {
        int nc = cells(line + 1, c, 8);
        cr_assert(nc >= 5);
        char name[96];
        cr_assert(sscanf(c[0], "`%95[^`]`", name) == 1);
        const char *src = c[4]; /* both tables: name, dims, types, (types | layers), source */
        uint64_t ne[3];
        int nd = spec_dims(c[1], strstr(c[1], "(ratio") ? 4 : 0, ne);
        bool f32_src = strstr(src, "(F32,") != NULL;
        for (uint32_t L = 0; L <= s.n_layers; L++) {
            char full[128];
            if (L == s.n_layers) snprintf(full, sizeof full, "%s", name);
            else snprintf(full, sizeof full, "blk.%u.%s", L, name);
            const cv_tensor *t = cv_plan_find(&plan, full);
            if (!t) continue;
            uint32_t want = nd < 2 ? DS4_TYPE_F32 : mat_type;
            if (t->src == CV_SRC_TID2EID) want = DS4_TYPE_I32;
            else if (nd >= 2 && f32_src && !dense_override) want = DS4_TYPE_F32;
            n_f32_src += nd >= 2 && f32_src;
            cr_assert_eq(t->type, want, "%s preset: %s is %s, expected %s (HF source %s)",
                         cv_preset_name(preset), full, ds4_type_name(t->type), ds4_type_name(want),
                         src);
            cr_assert_eq(t->src_f32, nd >= 2 && f32_src, "%s: src_f32 flag vs HF source %s", full, src);
        }
    }
    /* hc_attn_fn + hc_ffn_fn per layer, ape per compressed layer and indexer, output_hc_fn. */
    cr_assert_eq(n_f32_src, 2 * 43 + 41 + 21 + 1, "F32-source matrices found: %d", n_f32_src);
    free(tab);
    free(doc);
    cv_plan_free(&plan);
}

Test(convert_plan, f32_f16_bf16_q8_0_keep_f32_sources) {
    check_test_preset(CV_PRESET_F32, DS4_TYPE_F32, NULL);
    check_test_preset(CV_PRESET_F16, DS4_TYPE_F16, NULL);
    check_test_preset(CV_PRESET_BF16, DS4_TYPE_BF16, NULL);
    check_test_preset(CV_PRESET_Q8_0, DS4_TYPE_Q8_0, NULL);
}

Test(convert_plan, explicit_dense_type_overrides_f32_sources) {
    check_test_preset(CV_PRESET_BF16, DS4_TYPE_BF16, "dense=bf16");
}

Test(convert_plan, file_size_includes_header) {
    cv_shape s;
    ds4_error err;
    cr_assert_eq(cv_shape_preset(&s, "flash", &err), DS4_OK);
    cv_policy pol;
    cv_policy_init(&pol, CV_PRESET_Q2);
    cv_plan plan;
    cr_assert_eq(cv_plan_build(&plan, &s, &pol, false, &err), DS4_OK);
    uint64_t fb;
    cr_assert_eq(cv_plan_file_bytes(&s, &plan, &pol, NULL, &fb, &err), DS4_OK, "%s", err.msg);
    /* Header = 1328 directory records + metadata: more than 40 KB, less than 1 MB without a
     * tokenizer; the data region starts 32-aligned. */
    cr_assert(fb > plan.data_bytes + 40000 && fb < plan.data_bytes + (1u << 20), "file %llu data %llu",
              (unsigned long long)fb, (unsigned long long)plan.data_bytes);
    cv_plan_free(&plan);
}

Test(convert_plan, overrides_and_bad_specs) {
    cv_policy pol;
    ds4_error err;
    cv_policy_init(&pol, CV_PRESET_Q2);
    cr_assert_eq(cv_policy_override(&pol, "experts=Q4-K", &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(pol.fam_type[CV_FAM_GATE], DS4_TYPE_Q4_K);
    cr_assert_eq(pol.fam_type[CV_FAM_DOWN], DS4_TYPE_Q4_K);
    cr_assert_eq(cv_policy_override(&pol, "down=q2_k", &err), DS4_OK);
    cr_assert_eq(pol.fam_type[CV_FAM_DOWN], DS4_TYPE_Q2_K);
    cr_assert_eq(cv_policy_override(&pol, "attention=f16", &err), DS4_OK);
    cr_assert_eq(pol.fam_type[CV_FAM_ATTN], DS4_TYPE_F16);
    cr_assert_eq(cv_policy_override(&pol, "attention", &err), DS4_ERR_INVALID_ARG);
    cr_assert_eq(cv_policy_override(&pol, "bogus=f16", &err), DS4_ERR_INVALID_ARG);
    cr_assert(strstr(err.msg, "bogus"), "%s", err.msg);
    cr_assert_eq(cv_policy_override(&pol, "dense=q3_k", &err), DS4_ERR_INVALID_ARG);
    cr_assert(strstr(err.msg, "q3_k"), "%s", err.msg);
    cr_assert_eq(cv_policy_override(&pol, "vector=f16", &err), DS4_ERR_INVALID_ARG);
    cv_preset p;
    cr_assert_eq(cv_preset_from_name("q5", &p, &err), DS4_ERR_INVALID_ARG);
}

/* ---- synthetic models ------------------------------------------------------------------------ */

/* Tiny shape with expert width 256 so q2/q4 keep their K-quant/IQ2 types. */
static void shape_256(cv_shape *s, uint32_t layers, uint32_t experts) {
    ds4_error err;
    cr_assert_eq(cv_shape_preset(s, "tiny", &err), DS4_OK);
    s->moe_inter = 256;
    s->n_mtp = 0;
    cr_assert_eq(cv_shape_shrink(s, layers, experts, &err), DS4_OK, "%s", err.msg);
}

static char *write_synth(const cv_shape *s, cv_preset p, const cv_imatrix *im, int threads,
                         cv_plan *plan, cv_source *src_out, cv_synth **sy_out) {
    ds4_error err;
    cv_policy pol;
    cv_policy_init(&pol, p);
    cr_assert_eq(cv_plan_build(plan, s, &pol, false, &err), DS4_OK, "%s", err.msg);
    cv_synth *sy;
    cr_assert_eq(cv_synth_create(&sy, plan, 7, &err), DS4_OK);
    cv_source src;
    cv_synth_source(sy, &src);
    char *tmp = tu_tmpdir();
    char *out = tu_join(tmp, "synth.gguf");
    cv_options o = {.n_threads = threads, .imatrix = im};
    cr_assert_eq(cv_convert(out, s, plan, &pol, &src, &o, &err), DS4_OK, "%s", err.msg);
    free(tmp);
    if (src_out) *src_out = src;
    if (sy_out) *sy_out = sy;
    else cv_synth_free(sy);
    return out;
}

Test(convert_synth, q2_model_opens_finite_with_sane_scales, .timeout = 120) {
    cv_shape s;
    shape_256(&s, 3, 8);
    cv_plan plan;
    cv_source src;
    cv_synth *sy;
    char *path = write_synth(&s, CV_PRESET_Q2, NULL, 2, &plan, &src, &sy);
    gguf_ctx *g;
    ds4_error err;
    cr_assert_eq(gguf_open(&g, path, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(gguf_n_tensors(g), plan.n);
    double worst_q2k = 0;
    for (uint64_t i = 0; i < plan.n; i++) {
        const cv_tensor *t = &plan.t[i];
        const gguf_tensor *gt = gguf_tensor_at(g, i);
        cr_assert_str_eq(gt->name, t->name);
        cr_assert_eq(gt->type, t->type, "%s", t->name);
        if (t->src == CV_SRC_TID2EID) {
            for (uint64_t tok = 0; tok < t->ne[1]; tok++)
                for (uint64_t a = 0; a < t->ne[0]; a++) {
                    int32_t v;
                    memcpy(&v, (const uint8_t *)gt->data + 4 * (tok * t->ne[0] + a), 4);
                    cr_assert(v >= 0 && v < (int32_t)s.n_experts, "%s[%llu]: %d", t->name,
                              (unsigned long long)tok, v);
                    for (uint64_t b = 0; b < a; b++) {
                        int32_t w;
                        memcpy(&w, (const uint8_t *)gt->data + 4 * (tok * t->ne[0] + b), 4);
                        cr_assert_neq(v, w, "%s: token %llu repeats expert %d", t->name,
                                      (unsigned long long)tok, v);
                    }
                }
            continue;
        }
        uint64_t rows = (t->n_dims >= 2 ? t->ne[1] : 1) * (t->n_dims >= 3 ? t->ne[2] : 1);
        uint64_t rb;
        cr_assert_eq(ds4_type_row_bytes(gt->type, t->ne[0], &rb, &err), DS4_OK);
        float *row = malloc(t->ne[0] * sizeof *row), *ref = malloc(t->ne[0] * sizeof *ref);
        double sum = 0, sum2 = 0, d2 = 0, r2 = 0;
        for (uint64_t r = 0; r < rows; r++) {
            cr_assert_eq(q_decode_row((int)gt->type, (const uint8_t *)gt->data + r * rb, row, t->ne[0], &err), DS4_OK);
            uint32_t e = t->src == CV_SRC_EXPERTS ? (uint32_t)(r / t->ne[1]) : 0;
            uint64_t rr = t->src == CV_SRC_EXPERTS ? r % t->ne[1] : r;
            cr_assert_eq(src.read_rows(src.ctx, t, e, rr, 1, ref, &err), DS4_OK);
            for (uint64_t c = 0; c < t->ne[0]; c++) {
                cr_assert(isfinite(row[c]), "%s row %llu col %llu not finite", t->name,
                          (unsigned long long)r, (unsigned long long)c);
                sum += row[c], sum2 += (double)row[c] * row[c];
                d2 += (row[c] - ref[c]) * (double)(row[c] - ref[c]), r2 += (double)ref[c] * ref[c];
            }
        }
        double n = (double)rows * t->ne[0], mean = sum / n, sd = sqrt(sum2 / n - mean * mean);
        if (strstr(t->name, "norm.weight"))
            cr_assert(fabs(mean - 1) < 0.05, "%s mean %g, want ~1", t->name, mean);
        else if (t->n_dims >= 2 && t->fam != CV_FAM_EMBED && !strstr(t->name, "hc_") &&
                 !strstr(t->name, "_ape"))
            /* N(0, 1/fan_in) weights (synthetic.h); quantization widens a little. */
            cr_assert(fabs(sd * sqrt((double)t->ne[0]) - 1) < 0.15, "%s: std %g x sqrt(%llu) = %g",
                      t->name, sd, (unsigned long long)t->ne[0], sd * sqrt((double)t->ne[0]));
        if (gt->type == DS4_TYPE_Q2_K && sqrt(d2 / r2) > worst_q2k) worst_q2k = sqrt(d2 / r2);
        free(row);
        free(ref);
    }
    cr_assert_eq(gguf_find_tensor(g, "blk.0.ffn_down_exps.weight")->type, DS4_TYPE_Q2_K);
    cr_assert_eq(gguf_find_tensor(g, "blk.0.ffn_up_exps.weight")->type, DS4_TYPE_IQ2_XXS);
    /* Q2_K on Gaussian rows: measured 0.297 relative RMS error (bound with ~25% margin). */
    cr_log_info("Q2_K worst relative RMS error %.4g", worst_q2k);
    cr_assert(worst_q2k > 0.2 && worst_q2k < 0.37, "Q2_K relative RMS error %g", worst_q2k);
    gguf_close(g);
    cv_synth_free(sy);
    cv_plan_free(&plan);
    free(path);
}

static uint8_t *file_bytes(const char *path, size_t *len) { return tu_read_file(path, len); }

Test(convert_synth, output_is_independent_of_threads, .timeout = 120) {
    cv_shape s;
    shape_256(&s, 2, 6);
    cv_plan p1, p2;
    char *a = write_synth(&s, CV_PRESET_Q4, NULL, 1, &p1, NULL, NULL);
    char *b = write_synth(&s, CV_PRESET_Q4, NULL, 3, &p2, NULL, NULL);
    size_t la, lb;
    uint8_t *x = file_bytes(a, &la), *y = file_bytes(b, &lb);
    cr_assert_eq(la, lb);
    cr_assert_eq(memcmp(x, y, la), 0, "1 and 3 threads gave different files");
    free(x), free(y), free(a), free(b);
    cv_plan_free(&p1), cv_plan_free(&p2);
}

/* ---- imatrix --------------------------------------------------------------------------------- */

typedef struct buf {
    uint8_t *p;
    size_t n;
} buf;

static void put(buf *b, const void *d, size_t n) {
    b->p = realloc(b->p, b->n + n);
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_i32(buf *b, int32_t v) { put(b, &v, 4); }
static void put_entry(buf *b, const char *name, int32_t ncall, const float *v, int32_t n) {
    put_i32(b, (int32_t)strlen(name));
    put(b, name, strlen(name));
    put_i32(b, ncall);
    put_i32(b, n);
    put(b, v, (size_t)n * 4);
}

Test(convert_imatrix, parse_lookup_and_errors) {
    float v[12];
    for (int i = 0; i < 12; i++) v[i] = (float)(i + 1);
    buf b = {0};
    put_i32(&b, 2);
    put_entry(&b, "blk.0.ffn_gate_exps.weight", 2, v, 12); /* 3 experts x 4 columns */
    put_entry(&b, "x.weight", 1, v, 4);
    put_i32(&b, 10);
    put_i32(&b, 5);
    put(&b, "data!", 5);
    cv_imatrix *im;
    ds4_error err;
    cr_assert_eq(cv_imatrix_parse(&im, b.p, b.n, "mem", &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(cv_imatrix_count(im), 2);
    cr_assert_eq(cv_imatrix_chunks(im), 10);
    cr_assert_str_eq(cv_imatrix_dataset(im), "data!");
    const float *f;
    cr_assert_eq(cv_imatrix_find(im, "blk.0.ffn_gate_exps.weight", NULL, 2, 3, 4, &f, &err), DS4_OK);
    cr_assert(f && f[0] == 4.5f && f[3] == 6.0f, "expert 2 slice divided by ncall 2");
    cr_assert_eq(cv_imatrix_find(im, "nope", "x.weight", 0, 0, 4, &f, &err), DS4_OK);
    cr_assert(f && f[1] == 2.0f, "found by the HF name");
    cr_assert_eq(cv_imatrix_find(im, "none", NULL, 0, 0, 4, &f, &err), DS4_OK);
    cr_assert_null(f);
    cr_assert_eq(cv_imatrix_find(im, "x.weight", NULL, 0, 0, 5, &f, &err), DS4_ERR_FORMAT);
    cr_assert(strstr(err.msg, "x.weight"), "%s", err.msg);
    cv_imatrix_free(im);
    /* Truncations anywhere fail cleanly. */
    for (size_t cut = 0; cut < b.n; cut++) {
        ds4_status st = cv_imatrix_parse(&im, b.p, cut, "mem", &err);
        if (st == DS4_OK) cv_imatrix_free(im);
        /* Only the end of the entries (no trailer, 13 bytes) is a valid place to stop. */
        if (cut == b.n - 13) cr_assert_eq(st, DS4_OK, "%s", err.msg);
        else cr_assert_neq(st, DS4_OK, "cut at %zu accepted", cut);
    }
    /* A NaN value is rejected naming the entry. */
    float nanv[4] = {1, NAN, 1, 1};
    buf c = {0};
    put_i32(&c, 1);
    put_entry(&c, "bad.weight", 1, nanv, 4);
    cr_assert_eq(cv_imatrix_parse(&im, c.p, c.n, "mem", &err), DS4_ERR_FORMAT);
    cr_assert(strstr(err.msg, "bad.weight"), "%s", err.msg);
    free(b.p);
    free(c.p);
}

Test(convert_imatrix, importance_changes_the_encoding, .timeout = 120) {
    cv_shape s;
    shape_256(&s, 2, 4);
    /* Strongly uneven importance over the 256 input columns of layer 0's gate and down experts. */
    uint64_t ng = s.dim * s.n_experts, nd = s.moe_inter * s.n_experts;
    float *vg = malloc(ng * 4), *vd = malloc(nd * 4);
    for (uint64_t i = 0; i < ng; i++) vg[i] = (i % 7 == 0) ? 100.0f : 0.01f;
    for (uint64_t i = 0; i < nd; i++) vd[i] = (i % 5 == 0) ? 100.0f : 0.01f;
    buf b = {0};
    put_i32(&b, 2);
    put_entry(&b, "blk.0.ffn_gate_exps.weight", 1, vg, (int32_t)ng);
    put_entry(&b, "blk.0.ffn_down_exps.weight", 1, vd, (int32_t)nd);
    cv_imatrix *im;
    ds4_error err;
    cr_assert_eq(cv_imatrix_parse(&im, b.p, b.n, "made-up.dat", &err), DS4_OK, "%s", err.msg);
    cv_plan p1, p2;
    char *plain = write_synth(&s, CV_PRESET_Q2, NULL, 2, &p1, NULL, NULL);
    char *weighted = write_synth(&s, CV_PRESET_Q2, im, 2, &p2, NULL, NULL);
    gguf_ctx *a, *w;
    cr_assert_eq(gguf_open(&a, plain, &err), DS4_OK);
    cr_assert_eq(gguf_open(&w, weighted, &err), DS4_OK);
    static const struct { const char *name; int differs; } cases[] = {
        {"blk.0.ffn_gate_exps.weight", 1}, {"blk.0.ffn_down_exps.weight", 1},
        {"blk.0.ffn_up_exps.weight", 0},   {"blk.1.ffn_gate_exps.weight", 0},
        {"blk.1.ffn_down_exps.weight", 0}, {"blk.0.attn_q_a.weight", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const gguf_tensor *x = gguf_find_tensor(a, cases[i].name), *y = gguf_find_tensor(w, cases[i].name);
        cr_assert(x && y && x->n_bytes == y->n_bytes);
        int diff = memcmp(x->data, y->data, x->n_bytes) != 0;
        cr_assert_eq(diff, cases[i].differs, "%s: imatrix %s the bytes", cases[i].name,
                     diff ? "changed" : "did not change");
    }
    gguf_str str;
    uint64_t cnt;
    cr_assert_eq(gguf_get_str(w, "quantize.imatrix.file", &str, &err), DS4_OK, "%s", err.msg);
    cr_assert(gguf_str_eq(str, "made-up.dat"));
    cr_assert_eq(gguf_get_u64(w, "quantize.imatrix.entries_count", &cnt, &err), DS4_OK);
    cr_assert_eq(cnt, 2);
    cr_assert_null(gguf_find_value(a, "quantize.imatrix.file"));
    gguf_close(a), gguf_close(w);
    cv_imatrix_free(im);
    cv_plan_free(&p1), cv_plan_free(&p2);
    free(plain), free(weighted), free(vg), free(vd), free(b.p);
}

/* ---- MTP block (GGUF_LAYOUT §3.8) ------------------------------------------------------------ */

typedef struct mtp_row {
    const char *name;
    uint32_t n_dims;
    uint64_t ne0, ne1, ne2;
    int type; /* -1: "F16 or F32", -2: as the main layers (compared with blk.0) */
} mtp_row;

Test(convert_plan, flash_mtp_block_matches_gguf_layout) {
    /* The §3.8 table, row by row (Flash widths). */
    static const mtp_row rows[] = {
        {"hc_head_base.weight", 1, 4, 1, 1, DS4_TYPE_F32},
        {"hc_head_fn.weight", 2, 16384, 4, 1, -1},
        {"hc_head_scale.weight", 1, 1, 1, 1, DS4_TYPE_F32},
        {"e_proj.weight", 2, 4096, 4096, 1, DS4_TYPE_Q8_0},
        {"h_proj.weight", 2, 4096, 4096, 1, DS4_TYPE_Q8_0},
        {"enorm.weight", 1, 4096, 1, 1, DS4_TYPE_F32},
        {"hnorm.weight", 1, 4096, 1, 1, DS4_TYPE_F32},
        {"norm.weight", 1, 4096, 1, 1, DS4_TYPE_F32},
        {"hc_attn_fn.weight", 2, 16384, 24, 1, -1},
        {"hc_ffn_fn.weight", 2, 16384, 24, 1, -1},
        {"hc_attn_scale.weight", 1, 3, 1, 1, DS4_TYPE_F32},
        {"hc_attn_base.weight", 1, 24, 1, 1, DS4_TYPE_F32},
        {"hc_ffn_scale.weight", 1, 3, 1, 1, DS4_TYPE_F32},
        {"hc_ffn_base.weight", 1, 24, 1, 1, DS4_TYPE_F32},
        {"attn_norm.weight", 0, 0, 0, 0, -2},     {"attn_q_a.weight", 0, 0, 0, 0, -2},
        {"attn_q_a_norm.weight", 0, 0, 0, 0, -2}, {"attn_q_b.weight", 0, 0, 0, 0, -2},
        {"attn_kv.weight", 0, 0, 0, 0, -2},       {"attn_kv_a_norm.weight", 0, 0, 0, 0, -2},
        {"attn_sinks.weight", 0, 0, 0, 0, -2},    {"attn_output_a.weight", 0, 0, 0, 0, -2},
        {"attn_output_b.weight", 0, 0, 0, 0, -2},
        {"ffn_norm.weight", 1, 4096, 1, 1, DS4_TYPE_F32},
        {"ffn_gate_inp.weight", 2, 4096, 256, 1, -1},
        {"exp_probs_b.bias", 1, 256, 1, 1, DS4_TYPE_F32},
        {"ffn_gate_exps.weight", 0, 0, 0, 0, -2}, {"ffn_up_exps.weight", 0, 0, 0, 0, -2},
        {"ffn_down_exps.weight", 0, 0, 0, 0, -2},
        {"ffn_gate_shexp.weight", 0, 0, 0, 0, -2}, {"ffn_up_shexp.weight", 0, 0, 0, 0, -2},
        {"ffn_down_shexp.weight", 0, 0, 0, 0, -2},
    };
    cv_shape s;
    ds4_error err;
    cr_assert_eq(cv_shape_preset(&s, "flash", &err), DS4_OK);
    cv_policy pol;
    cv_policy_init(&pol, CV_PRESET_Q4);
    cv_plan plan, main_only;
    cr_assert_eq(cv_plan_build(&plan, &s, &pol, true, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(cv_plan_build(&main_only, &s, &pol, false, &err), DS4_OK);
    size_t n_rows = sizeof rows / sizeof rows[0];
    cr_assert_eq(plan.n, main_only.n + n_rows, "the MTP block adds exactly the %zu §3.8 tensors", n_rows);
    for (size_t i = 0; i < n_rows; i++) {
        char name[128];
        snprintf(name, sizeof name, "mtp.0.%s", rows[i].name);
        const cv_tensor *t = cv_plan_find(&plan, name);
        cr_assert(t, "plan lacks %s", name);
        if (rows[i].type == -2) {
            snprintf(name, sizeof name, "blk.3.%s", rows[i].name); /* a non-hash main layer */
            const cv_tensor *m = cv_plan_find(&plan, name);
            cr_assert(m, "%s", name);
            cr_assert(t->n_dims == m->n_dims && !memcmp(t->ne, m->ne, sizeof t->ne) && t->type == m->type,
                      "mtp.0.%s differs from %s", rows[i].name, name);
            continue;
        }
        uint64_t ne[3] = {rows[i].ne0, rows[i].ne1, rows[i].ne2};
        check_dims(t, ne, (int)rows[i].n_dims);
        if (rows[i].type == -1)
            cr_assert(t->type == DS4_TYPE_F16 || t->type == DS4_TYPE_F32, "%s: %s", t->name, ds4_type_name(t->type));
        else
            cr_assert_eq(t->type, (uint32_t)rows[i].type, "%s: %s", t->name, ds4_type_name(t->type));
    }
    cr_assert_eq(cv_plan_find(&plan, "mtp.0.ffn_gate_exps.weight")->type, DS4_TYPE_Q4_K);
    cr_assert_null(cv_plan_find(&plan, "mtp.0.attn_compressor_kv.weight"));
    cr_assert_null(cv_plan_find(&plan, "mtp.0.ffn_gate_tid2eid.weight"));
    cv_plan_free(&plan);
    cv_plan_free(&main_only);
}

/* The engine runs a 43-layer synthetic model (tiny widths, expert width 256, Q8_0) and its
 * logits stay finite, of unit-order spread, and not the same token everywhere: the scales of
 * synthetic.h keep activations sane over the full Flash depth. */
Test(convert_synth, deep_model_runs_finite_in_the_engine, .timeout = 300) {
    cv_shape s;
    shape_256(&s, 43, 16);
    cv_plan plan;
    char *path = write_synth(&s, CV_PRESET_Q8_0, NULL, 2, &plan, NULL, NULL);
    ds4_engine *eng;
    ds4_error err;
    ds4_engine_options opt;
    ds4_engine_options_init(&opt);
    opt.n_threads = 2;
    cr_assert_eq(ds4_engine_open(&eng, path, &opt, &err), DS4_OK, "%s", err.msg);
    ds4_session *ses;
    cr_assert_eq(ds4_session_create(&ses, eng, 256, &err), DS4_OK, "%s", err.msg);
    enum { T = 48 };
    int32_t toks[T];
    for (int i = 0; i < T; i++) toks[i] = (int32_t)((i * 37 + 11) % s.vocab);
    float *logits = malloc(sizeof(float) * T * s.vocab);
    cr_assert_eq(ds4_session_eval_tokens(ses, toks, T, logits, &err), DS4_OK, "%s", err.msg);
    int distinct_argmax = 0, prev = -1;
    for (int t = 0; t < T; t++) {
        const float *l = logits + (size_t)t * s.vocab;
        double m = 0, m2 = 0;
        for (uint32_t v = 0; v < s.vocab; v++) {
            cr_assert(isfinite(l[v]), "position %d token %u: logit %g", t, v, l[v]);
            m += l[v], m2 += (double)l[v] * l[v];
        }
        m /= s.vocab;
        double sd = sqrt(m2 / s.vocab - m * m);
        cr_assert(sd > 0.05 && sd < 20, "position %d: logit std %g", t, sd);
        int a = ds4_argmax(l, s.vocab);
        distinct_argmax += a != prev;
        prev = a;
    }
    cr_assert(distinct_argmax > T / 4, "argmax changed only %d times over %d positions", distinct_argmax, T);
    free(logits);
    ds4_session_free(ses);
    ds4_engine_close(eng);
    cv_plan_free(&plan);
    free(path);
}
