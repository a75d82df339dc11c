/* tests/test_session_tools.c — the programs built on the session API: `ds4 --dump-logits`
 * (valid safetensors, logits equal tiny-v4's golden `short` and `window` cases) with its
 * errors, and `ds4-bench` (CSV columns, monotone frontiers, SVG). */
#include <math.h>

#include "session_fixture.h"

/* Writes the golden case's prompt ids to DIR/name.txt (comma and space separated, to exercise
 * both separators); returns the path (caller frees). */
static char *write_prompt(st_file *g, const char *dir, const char *cas, uint32_t *n_out) {
    char name[64];
    snprintf(name, sizeof name, "%s.tokens", cas);
    uint32_t n;
    int32_t *t = sf_tokens(g, name, &n);
    size_t cap = (size_t)n * 12 + 16, len = 0;
    char *txt = malloc(cap);
    for (uint32_t i = 0; i < n; i++) len += (size_t)snprintf(txt + len, cap - len, i % 3 ? ", %d" : "\n%d", t[i]);
    snprintf(name, sizeof name, "%s.txt", cas);
    char *p = tu_join(dir, name);
    tu_write_file(p, txt, len);
    free(txt);
    free(t);
    *n_out = n;
    return p;
}

/* Max |a - b| over a tensor pair of equal shape; fails on shape/dtype mismatch. */
static double max_diff(const st_tensor *a, const st_tensor *b, size_t *at) {
    cr_assert_eq(a->n_dims, b->n_dims, "%s: %d dims vs golden %d", a->name, a->n_dims, b->n_dims);
    for (int d = 0; d < a->n_dims; d++)
        cr_assert_eq(a->shape[d], b->shape[d], "%s: dim %d is %llu, golden %llu", a->name, d,
                     (unsigned long long)a->shape[d], (unsigned long long)b->shape[d]);
    cr_assert_eq(a->dtype, ST_F32, "%s: dtype %s", a->name, st_dtype_name(a->dtype));
    double m = 0;
    const float *x = (const float *)a->data, *y = (const float *)b->data;
    for (uint64_t i = 0; i < a->n_elements; i++) {
        double d = fabs((double)x[i] - (double)y[i]);
        if (!(d <= m)) {
            m = d;
            *at = (size_t)i;
        }
    }
    return m;
}

static void check_case(const char *cas, uint32_t n_decode, const char *extra, bool layers) {
    char *model = sf_tiny_gguf(), *dir = tu_tmpdir(), *ds4 = tu_bin_path("ds4");
    st_file *g = sf_golden();
    uint32_t n;
    char *prompt = write_prompt(g, dir, cas, &n);
    char *out = tu_join(dir, "out.safetensors");
    char cmd[4096], *log = NULL;
    snprintf(cmd, sizeof cmd, "%s --model %s --prompt-tokens %s --dump-logits %s --decode %u --threads 1 %s", ds4,
             model, prompt, out, n_decode, extra);
    int rc = tu_run(cmd, &log);
    cr_assert_eq(rc, 0, "%s failed (%d): %s", cmd, rc, log);
    st_file *o = NULL;
    ds4_error err = {0};
    cr_assert_eq(st_open(&o, out, &err), DS4_OK, "output is not valid safetensors: %s", err.msg);
    static const char *const names[] = {"prefill_logits", "decode_logits"};
    for (int k = 0; k < 2; k++) {
        char gname[96];
        snprintf(gname, sizeof gname, "%s.%s", cas, names[k]);
        const st_tensor *got = sf_tensor(o, names[k], ST_F32), *want = sf_tensor(g, gname, ST_F32);
        size_t at = 0;
        double m = max_diff(got, want, &at);
        cr_assert(m <= 1e-3, "%s %s: max |diff| %.3g > 1e-3 at element %zu", cas, names[k], m, at);
    }
    char gname[96];
    snprintf(gname, sizeof gname, "%s.decode_tokens", cas);
    const st_tensor *dt = sf_tensor(o, "decode_tokens", ST_I32), *gt = sf_tensor(g, gname, ST_I32);
    cr_assert_eq(dt->n_elements, gt->n_elements, "decode_tokens count %llu, golden %llu",
                 (unsigned long long)dt->n_elements, (unsigned long long)gt->n_elements);
    cr_assert_eq(memcmp(dt->data, gt->data, dt->n_bytes), 0, "%s: greedy continuation differs from golden", cas);
    const st_tensor *mt = st_find(o, "mtp_logits");
    if (strstr(extra, "--dump-mtp")) {
        cr_assert_not_null(mt, "--dump-mtp wrote no mtp_logits");
        snprintf(gname, sizeof gname, "%s.mtp_logits", cas);
        size_t at = 0;
        double m = max_diff(mt, sf_tensor(g, gname, ST_F32), &at);
        cr_assert(m <= 1e-3, "%s mtp_logits: max |diff| %.3g > 1e-3 at element %zu", cas, m, at);
    }
    if (layers) {
        int found = 0;
        for (size_t i = 0; i < st_count(o); i++) {
            const st_tensor *t = st_get(o, i);
            if (strncmp(t->name, "layer", 5) != 0) continue;
            snprintf(gname, sizeof gname, "%s.%s", cas, t->name);
            size_t at = 0;
            double m = max_diff(t, sf_tensor(g, gname, ST_F32), &at);
            cr_assert(m <= 1e-4, "%s: max |diff| %.3g > 1e-4 at element %zu", gname, m, at);
            found++;
        }
        cr_assert_eq(found, 5 * 4, "expected 4 tensors for each of 5 layers, got %d", found);
    }
    st_close(o);
    st_close(g);
    free(log);
    free(out);
    free(prompt);
    free(ds4);
    free(dir);
    free(model);
}

Test(session_cli, dump_logits_short_matches_golden_with_layers_and_mtp) {
    check_case("short", 8, "--dump-layers --dump-mtp", true);
}

Test(session_cli, dump_logits_window_in_chunks_matches_golden) { check_case("window", 16, "--prefill-chunk 37 --threads 2", false); }

Test(session_cli, dump_logits_errors_are_reported) {
    char *model = sf_tiny_gguf(), *dir = tu_tmpdir(), *ds4 = tu_bin_path("ds4");
    char *bad = tu_join(dir, "bad.txt"), *big = tu_join(dir, "big.txt"), *out = tu_join(dir, "o.st");
    tu_write_file(bad, "1 2 x3 4", 8);
    tu_write_file(big, "1, 2, 99999", 11);
    struct {
        const char *args;
        int rc;
        const char *msg;
    } cases[] = {
        {"--prompt-tokens /nonexistent/t.txt", 1, "cannot open --prompt-tokens"},
        {"--prompt-tokens BAD", 1, "'x3' is not a token id"},
        {"--prompt-tokens BIG", 1, "outside the vocabulary"},
        {"--prompt-tokens BAD --decode -3", 2, "--decode"},
        {"", 2, "needs --model, --prompt-tokens"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char args[512], cmd[4096], *log = NULL;
        const char *p;
        if ((p = strstr(cases[i].args, "BAD"))) snprintf(args, sizeof args, "--prompt-tokens %s%s", bad, p + 3);
        else if (strstr(cases[i].args, "BIG")) snprintf(args, sizeof args, "--prompt-tokens %s", big);
        else snprintf(args, sizeof args, "%s", cases[i].args);
        snprintf(cmd, sizeof cmd, "%s --model %s --threads 1 --dump-logits %s %s", ds4, model, out, args);
        if (cases[i].rc == 2 && !*cases[i].args) snprintf(cmd, sizeof cmd, "%s --dump-logits %s", ds4, out);
        int rc = tu_run(cmd, &log);
        cr_assert_eq(rc, cases[i].rc, "%s: exit %d, expected %d: %s", cmd, rc, cases[i].rc, log);
        cr_assert(strstr(log, cases[i].msg), "%s: output lacks '%s': %s", cmd, cases[i].msg, log);
        free(log);
    }
    /* A model that does not exist. */
    char cmd[4096], *log = NULL;
    snprintf(cmd, sizeof cmd, "%s --model %s/none.gguf --prompt-tokens %s --dump-logits %s", ds4, dir, big, out);
    cr_assert_eq(tu_run(cmd, &log), 1, "%s", log);
    cr_assert(strstr(log, "none.gguf"), "message should name the model: %s", log);
    free(log);
    free(out);
    free(big);
    free(bad);
    free(ds4);
    free(dir);
    free(model);
}

Test(session_cli, bench_writes_csv_with_monotone_frontiers_and_svg) {
    char *model = sf_tiny_gguf(), *dir = tu_tmpdir(), *bench = tu_bin_path("ds4-bench");
    char *csv = tu_join(dir, "b.csv"), *svg = tu_join(dir, "b.svg");
    char cmd[4096], *log = NULL;
    snprintf(cmd, sizeof cmd,
             "%s --model %s --ctx-start 64 --ctx-max 300 --step-incr 64 --gen-tokens 4 --threads 1 --no-membw "
             "--out %s --svg %s",
             bench, model, csv, svg);
    int rc = tu_run(cmd, &log);
    cr_assert_eq(rc, 0, "%s failed: %s", cmd, log);
    cr_assert(strstr(log, "ctx    300"), "progress on stderr lacks the last frontier: %s", log);
    size_t n;
    char *text = tu_read_file(csv, &n);
    const char *hdr = "ctx_tokens,prefill_tokens,prefill_tps,gen_tokens,gen_tps,kvcache_bytes\n";
    cr_assert_eq(strncmp(text, hdr, strlen(hdr)), 0, "CSV header: %.80s", text);
    /* Frontiers 64, 128, 192, 256, then exactly ctx-max 300. */
    static const unsigned want_ctx[] = {64, 128, 192, 256, 300}, want_pre[] = {64, 64, 64, 64, 44};
    char *line = text + strlen(hdr);
    unsigned long long prev_kv = 0;
    for (int r = 0; r < 5; r++) {
        unsigned ctx, pre, gen;
        double ptps, gtps;
        unsigned long long kv;
        int got = sscanf(line, "%u,%u,%lf,%u,%lf,%llu", &ctx, &pre, &ptps, &gen, &gtps, &kv);
        cr_assert_eq(got, 6, "row %d is not 6 fields: %.80s", r, line);
        cr_assert(ctx == want_ctx[r] && pre == want_pre[r] && gen == 4, "row %d: ctx %u prefill %u gen %u", r, ctx,
                  pre, gen);
        cr_assert(ptps > 0 && gtps > 0, "row %d: rates %g %g", r, ptps, gtps);
        cr_assert_gt(kv, prev_kv, "row %d: kvcache_bytes %llu not above %llu", r, kv, prev_kv);
        prev_kv = kv;
        line = strchr(line, '\n');
        cr_assert_not_null(line);
        line++;
    }
    cr_assert_eq(*line, '\0', "extra CSV rows: %s", line);
    char *s = tu_read_file(svg, &n);
    cr_assert(strstr(s, "<svg") && strstr(s, "</svg>"), "SVG not closed");
    char *p1 = strstr(s, "<polyline"), *p2 = p1 ? strstr(p1 + 1, "<polyline") : NULL;
    cr_assert(p1 && p2, "SVG should draw two curves");
    free(s);
    free(text);
    /* Usage errors. */
    snprintf(cmd, sizeof cmd, "%s --model %s --ctx-start 500 --ctx-max 100", bench, model);
    free(log);
    cr_assert_eq(tu_run(cmd, &log), 2, "%s", log);
    cr_assert(strstr(log, "--ctx-start"), "%s", log);
    free(log);
    free(svg);
    free(csv);
    free(bench);
    free(dir);
    free(model);
}
