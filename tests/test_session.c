/* tests/test_session.c — the public session API (src/model/session.c, engine.c) on the tiny-v4
 * model: prefix reuse, rebuilds, rewind, checkpoints, snapshots (memory and file), refusal of
 * foreign/corrupt/truncated snapshots, context overflow and misuse. Every "equals" compares
 * against a fresh session evaluating the same tokens. */
#include <math.h>

#include "model/snapshot.h"
#include "session_fixture.h"

#define TOL 1e-5

static ds4_session *mk(ds4_engine *e, uint32_t n_ctx) {
    ds4_session *s = NULL;
    ds4_error err = {0};
    cr_assert_eq(ds4_session_create(&s, e, n_ctx, &err), DS4_OK, "create(%u): %s", n_ctx, err.msg);
    return s;
}

static uint32_t vocab(ds4_engine *e) {
    ds4_model_info in;
    cr_assert_eq(ds4_engine_info(e, &in, NULL), DS4_OK);
    return in.n_vocab;
}

/* Logits after evaluating tokens[0..n) in a brand-new session (caller frees). */
static float *fresh_logits(ds4_engine *e, const int32_t *tokens, uint32_t n) {
    ds4_session *s = mk(e, 256);
    ds4_error err = {0};
    cr_assert_eq(ds4_session_eval_tokens(s, tokens, n, NULL, &err), DS4_OK, "%s", err.msg);
    const float *l;
    cr_assert_eq(ds4_session_logits(s, &l, &err), DS4_OK);
    uint32_t V = vocab(e);
    float *c = malloc(V * sizeof *c);
    memcpy(c, l, V * sizeof *c);
    ds4_session_free(s);
    return c;
}

static void expect_logits(ds4_session *s, const float *want, uint32_t V, const char *what) {
    const float *got;
    ds4_error err = {0};
    cr_assert_eq(ds4_session_logits(s, &got, &err), DS4_OK, "%s: %s", what, err.msg);
    for (uint32_t i = 0; i < V; i++)
        cr_assert(fabsf(got[i] - want[i]) <= TOL, "%s: logit %u: got %.7g, want %.7g", what, i, (double)got[i],
                  (double)want[i]);
}

/* A stream of n ids: the golden short prompt, then a fixed extension. */
static int32_t *stream(st_file *g, uint32_t n) {
    uint32_t nt;
    int32_t *t = sf_tokens(g, "short.tokens", &nt);
    int32_t *s = malloc(n * sizeof *s);
    for (uint32_t i = 0; i < n; i++) s[i] = i < nt ? t[i] : (int32_t)((i * 131 + 7) % 1000);
    free(t);
    return s;
}

Test(session_sync, reuses_common_prefix_and_counts_work) {
    ds4_engine *e = sf_open_engine();
    st_file *g = sf_golden();
    int32_t *tok = stream(g, 60);
    uint32_t V = vocab(e);
    ds4_session *s = mk(e, 128);
    ds4_sync_stats ss;
    ds4_error err = {0};
    cr_assert_eq(ds4_session_sync(s, tok, 20, &ss, &err), DS4_OK, "%s", err.msg);
    cr_assert(ss.n_reused == 0 && ss.n_evaluated == 20 && !ss.rebuilt, "cold sync: reused %u evaluated %u",
              ss.n_reused, ss.n_evaluated);
    cr_assert_eq(ds4_session_set_prefill_chunk(s, 7, &err), DS4_OK);
    cr_assert_eq(ds4_session_sync(s, tok, 45, &ss, &err), DS4_OK, "%s", err.msg);
    cr_assert(ss.n_reused == 20 && ss.n_evaluated == 25 && !ss.rebuilt, "extend: reused %u evaluated %u",
              ss.n_reused, ss.n_evaluated);
    cr_assert_eq(ds4_session_pos(s), 45);
    float *want = fresh_logits(e, tok, 45);
    expect_logits(s, want, V, "after extending 20 -> 45 in chunks of 7");
    /* Same target again: nothing to do. */
    cr_assert_eq(ds4_session_sync(s, tok, 45, &ss, &err), DS4_OK);
    cr_assert(ss.n_reused == 45 && ss.n_evaluated == 0, "no-op sync evaluated %u", ss.n_evaluated);
    expect_logits(s, want, V, "after no-op sync");
    uint32_t n;
    const int32_t *live = ds4_session_tokens(s, &n);
    cr_assert_eq(n, 45);
    cr_assert_eq(memcmp(live, tok, 45 * sizeof *tok), 0, "live tokens differ from the target");
    free(want);
    free(tok);
    st_close(g);
    ds4_session_free(s);
    ds4_engine_close(e);
}

Test(session_sync, diverging_prefix_rebuilds_and_matches_fresh) {
    ds4_engine *e = sf_open_engine();
    st_file *g = sf_golden();
    int32_t *a = stream(g, 40), *b = stream(g, 40);
    for (int i = 25; i < 40; i++) b[i] = (b[i] + 17) % 1000;
    uint32_t V = vocab(e);
    ds4_session *s = mk(e, 64);
    ds4_sync_stats ss;
    ds4_error err = {0};
    cr_assert_eq(ds4_session_sync(s, a, 40, &ss, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(ds4_session_sync(s, b, 33, &ss, &err), DS4_OK, "%s", err.msg);
    cr_assert(ss.rebuilt && ss.n_reused == 0 && ss.n_evaluated == 33,
              "diverged without checkpoint: rebuilt %d reused %u evaluated %u", ss.rebuilt, ss.n_reused,
              ss.n_evaluated);
    float *want = fresh_logits(e, b, 33);
    expect_logits(s, want, V, "after diverged sync");
    free(want);
    /* A target that is a strict prefix of the live stream also rebuilds (state cannot shrink). */
    cr_assert_eq(ds4_session_sync(s, b, 30, &ss, &err), DS4_OK);
    cr_assert(ss.rebuilt && ss.n_evaluated == 30, "shorter target: evaluated %u", ss.n_evaluated);
    want = fresh_logits(e, b, 30);
    expect_logits(s, want, V, "after shrinking sync");
    free(want);
    free(a);
    free(b);
    st_close(g);
    ds4_session_free(s);
    ds4_engine_close(e);
}

Test(session_rewind, checkpoint_limits_reevaluation_and_rewind_equals_fresh) {
    ds4_engine *e = sf_open_engine();
    st_file *g = sf_golden();
    int32_t *tok = stream(g, 50);
    uint32_t V = vocab(e);
    ds4_session *s = mk(e, 64);
    ds4_sync_stats ss;
    ds4_error err = {0};
    cr_assert_eq(ds4_session_sync(s, tok, 30, NULL, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(ds4_session_checkpoint(s, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(ds4_session_eval_tokens(s, tok + 30, 15, NULL, &err), DS4_OK, "%s", err.msg);
    /* Rewind behind the end but after the checkpoint: restore at 30, evaluate 8. */
    cr_assert_eq(ds4_session_rewind(s, 38, &ss, &err), DS4_OK, "%s", err.msg);
    cr_assert(ss.rebuilt && ss.n_reused == 30 && ss.n_evaluated == 8, "rewind 45->38: reused %u evaluated %u",
              ss.n_reused, ss.n_evaluated);
    float *want = fresh_logits(e, tok, 38);
    expect_logits(s, want, V, "rewind to 38");
    free(want);
    /* Continuing after a rewind equals never having gone further. */
    cr_assert_eq(ds4_session_eval_tokens(s, tok + 38, 12, NULL, &err), DS4_OK);
    want = fresh_logits(e, tok, 50);
    expect_logits(s, want, V, "rewind then continue to 50");
    free(want);
    /* Before the checkpoint: from scratch. */
    cr_assert_eq(ds4_session_rewind(s, 12, &ss, &err), DS4_OK);
    cr_assert(ss.n_reused == 0 && ss.n_evaluated == 12, "rewind to 12: reused %u evaluated %u", ss.n_reused,
              ss.n_evaluated);
    want = fresh_logits(e, tok, 12);
    expect_logits(s, want, V, "rewind to 12");
    free(want);
    /* The checkpoint survives the rewind below it: a target extending it restores it. */
    int32_t *alt = malloc(36 * sizeof *alt);
    memcpy(alt, tok, 30 * sizeof *alt);
    for (int i = 30; i < 36; i++) alt[i] = 500 + i;
    cr_assert_eq(ds4_session_sync(s, alt, 36, &ss, &err), DS4_OK);
    cr_assert(ss.rebuilt && ss.n_reused == 30 && ss.n_evaluated == 6, "sync via checkpoint: reused %u evaluated %u",
              ss.n_reused, ss.n_evaluated);
    want = fresh_logits(e, alt, 36);
    expect_logits(s, want, V, "sync through the checkpoint");
    free(want);
    /* rewind(0) empties; past the end is an error. */
    cr_assert_eq(ds4_session_rewind(s, 37, NULL, &err), DS4_ERR_RANGE);
    cr_assert_eq(ds4_session_rewind(s, 0, NULL, &err), DS4_OK);
    const float *l;
    cr_assert_eq(ds4_session_logits(s, &l, &err), DS4_ERR_STATE);
    free(alt);
    free(tok);
    st_close(g);
    ds4_session_free(s);
    ds4_engine_close(e);
}

Test(session_snapshot, restore_mid_stream_then_continue_equals_uninterrupted) {
    ds4_engine *e = sf_open_engine();
    st_file *g = sf_golden();
    int32_t *tok = stream(g, 170); /* past the 128-row window and a 128-ratio boundary */
    uint32_t V = vocab(e);
    static const uint32_t ks[] = {1, 37, 150};
    for (size_t ki = 0; ki < 3; ki++) {
        uint32_t k = ks[ki];
        ds4_session *a = mk(e, 200), *b = mk(e, 256);
        ds4_error err = {0};
        cr_assert_eq(ds4_session_eval_tokens(a, tok, k, NULL, &err), DS4_OK, "%s", err.msg);
        uint8_t *buf;
        uint64_t n, n2;
        cr_assert_eq(ds4_session_snapshot(a, &buf, &n, &err), DS4_OK, "%s", err.msg);
        cr_assert_eq(ds4_session_snapshot_bytes(a, &n2, &err), DS4_OK);
        cr_assert_eq(n, n2, "snapshot_bytes %llu != snapshot size %llu", (unsigned long long)n2,
                     (unsigned long long)n);
        cr_assert_eq(ds4_session_restore(b, buf, n, &err), DS4_OK, "k=%u: %s", k, err.msg);
        cr_assert_eq(ds4_session_pos(b), k);
        free(buf);
        for (uint32_t i = k; i < 170; i++) {
            cr_assert_eq(ds4_session_eval(a, tok[i], &err), DS4_OK, "%s", err.msg);
            cr_assert_eq(ds4_session_eval(b, tok[i], &err), DS4_OK, "%s", err.msg);
            if (i % 20 == 0 || i == 169) {
                const float *la;
                ds4_session_logits(a, &la, NULL);
                char what[64];
                snprintf(what, sizeof what, "snapshot at %u, continued to %u", k, i + 1);
                expect_logits(b, la, V, what);
            }
        }
        ds4_session_free(a);
        ds4_session_free(b);
    }
    free(tok);
    st_close(g);
    ds4_engine_close(e);
}

Test(session_snapshot, file_round_trip_and_refusals_leave_session_unchanged) {
    ds4_engine *e = sf_open_engine();
    st_file *g = sf_golden();
    int32_t *tok = stream(g, 40);
    uint32_t V = vocab(e);
    ds4_error err = {0};
    ds4_session *a = mk(e, 64), *b = mk(e, 64);
    cr_assert_eq(ds4_session_eval_tokens(a, tok, 30, NULL, &err), DS4_OK);
    char *dir = tu_tmpdir(), *path = tu_join(dir, "s.ds4snap");
    cr_assert_eq(ds4_session_save_file(a, path, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(ds4_session_load_file(b, path, &err), DS4_OK, "%s", err.msg);
    const float *la;
    ds4_session_logits(a, &la, NULL);
    expect_logits(b, la, V, "file round trip");
    /* b now holds 30 tokens; every refused restore below must leave exactly that. */
    size_t n;
    uint8_t *buf = tu_read_file(path, &n);
    uint8_t *bad = malloc(n);
    struct {
        const char *what;
        ds4_status want;
        const char *msg;
    } cases[] = {
        {"flipped payload byte", DS4_ERR_FORMAT, "SHA-256"},
        {"truncated", DS4_ERR_FORMAT, "truncated"},
        {"other model", DS4_ERR_UNSUPPORTED, "another model"},
        {"future version", DS4_ERR_UNSUPPORTED, "newer"},
        {"empty", DS4_ERR_FORMAT, "not a ds4 snapshot"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        memcpy(bad, buf, n);
        uint64_t len = n;
        if (c == 0) bad[n - 100] ^= 0x10;
        if (c == 1) len = n - 1000;
        if (c == 2) {
            bad[16] ^= 1; /* model_id, resealed so only the identity is wrong */
            snap_seal(bad, n);
        }
        if (c == 3) {
            bad[8] = 2;
            snap_seal(bad, n);
        }
        if (c == 4) len = 0;
        ds4_status st = ds4_session_restore(b, bad, len, &err);
        cr_assert_eq(st, cases[c].want, "%s: status %s (%s)", cases[c].what, ds4_status_str(st), err.msg);
        cr_assert(strstr(err.msg, cases[c].msg), "%s: message '%s' lacks '%s'", cases[c].what, err.msg,
                  cases[c].msg);
        cr_assert_eq(ds4_session_pos(b), 30, "%s changed the session", cases[c].what);
        expect_logits(b, la, V, cases[c].what);
    }
    /* A snapshot of the same architecture converted with another preset is another model. */
    char *bf16 = sf_tiny_gguf_preset("bf16");
    ds4_engine *other = NULL;
    ds4_engine_options oo;
    ds4_engine_options_init(&oo);
    oo.n_threads = 1;
    cr_assert_eq(ds4_engine_open(&other, bf16, &oo, &err), DS4_OK, "%s", err.msg);
    ds4_session *os = mk(other, 64);
    cr_assert_eq(ds4_session_restore(os, buf, n, &err), DS4_ERR_UNSUPPORTED, "f32 snapshot into bf16 model: %s",
                 err.msg);
    cr_assert(strstr(err.msg, "another model"), "%s", err.msg);
    cr_assert_eq(ds4_session_pos(os), 0);
    ds4_session_free(os);
    ds4_engine_close(other);
    free(bf16);
    /* More tokens than the session's context. */
    ds4_session *small = mk(e, 16);
    cr_assert_eq(ds4_session_restore(small, buf, n, &err), DS4_ERR_RANGE, "%s", err.msg);
    cr_assert_eq(ds4_session_pos(small), 0);
    /* Missing and garbage files. */
    char *missing = tu_join(dir, "nope.ds4snap");
    cr_assert_eq(ds4_session_load_file(b, missing, &err), DS4_ERR_IO, "%s", err.msg);
    tu_write_file(missing, "hello world, not a snapshot at all", 34);
    cr_assert_eq(ds4_session_load_file(b, missing, &err), DS4_ERR_FORMAT, "%s", err.msg);
    cr_assert(strstr(err.msg, missing), "message should name the file: %s", err.msg);
    cr_assert_eq(ds4_session_pos(b), 30);
    free(missing);
    free(bad);
    free(buf);
    free(path);
    free(dir);
    free(tok);
    st_close(g);
    ds4_session_free(small);
    ds4_session_free(a);
    ds4_session_free(b);
    ds4_engine_close(e);
}

Test(session_limits, context_overflow_and_misuse_return_errors) {
    ds4_engine *e = sf_open_engine();
    ds4_error err = {0};
    ds4_session *s = mk(e, 8);
    const float *l;
    cr_assert_eq(ds4_session_logits(s, &l, &err), DS4_ERR_STATE, "logits before eval");
    cr_assert(strstr(err.msg, "empty"), "%s", err.msg);
    ds4_token_logprob tl[4];
    uint32_t nl;
    cr_assert_eq(ds4_session_top_logprobs(s, 4, tl, &nl, &err), DS4_ERR_STATE);
    int32_t t8[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    cr_assert_eq(ds4_session_sync(s, t8, 9, NULL, &err), DS4_ERR_RANGE, "sync past ctx");
    cr_assert_eq(ds4_session_eval_tokens(s, t8, 8, NULL, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(ds4_session_eval(s, 1, &err), DS4_ERR_RANGE, "eval past ctx");
    cr_assert(strstr(err.msg, "context overflow"), "%s", err.msg);
    cr_assert_eq(ds4_session_pos(s), 8, "overflow changed the session");
    cr_assert_eq(ds4_session_rewind(s, 4, NULL, &err), DS4_OK);
    cr_assert_eq(ds4_session_eval_tokens(s, t8, 5, NULL, &err), DS4_ERR_RANGE);
    cr_assert_eq(ds4_session_pos(s), 4);
    cr_assert_eq(ds4_session_eval(s, -1, &err), DS4_ERR_INVALID_ARG);
    cr_assert_eq(ds4_session_eval(s, (int32_t)vocab(e), &err), DS4_ERR_INVALID_ARG);
    cr_assert(strstr(err.msg, "vocabulary"), "%s", err.msg);
    cr_assert_eq(ds4_session_pos(s), 4, "bad token changed the session");
    cr_assert_eq(ds4_session_sync(s, NULL, 3, NULL, &err), DS4_ERR_INVALID_ARG);
    cr_assert_eq(ds4_session_sync(s, t8, 0, NULL, &err), DS4_ERR_INVALID_ARG);
    cr_assert_eq(ds4_session_eval(NULL, 1, &err), DS4_ERR_INVALID_ARG);
    cr_assert_eq(ds4_session_restore(s, NULL, 10, &err), DS4_ERR_INVALID_ARG);
    cr_assert_eq(ds4_session_set_prefill_chunk(s, 0, &err), DS4_ERR_INVALID_ARG);
    ds4_session *x = NULL;
    cr_assert_eq(ds4_session_create(&x, e, 0, &err), DS4_ERR_RANGE);
    cr_assert_eq(ds4_session_create(&x, NULL, 8, &err), DS4_ERR_INVALID_ARG);
    ds4_engine *bad = NULL;
    cr_assert_eq(ds4_engine_open(&bad, "/nonexistent/model.gguf", NULL, &err), DS4_ERR_IO, "%s", err.msg);
    ds4_engine_options o;
    ds4_engine_options_init(&o);
    o.backend = "metal";
    char *p = sf_tiny_gguf();
    cr_assert_eq(ds4_engine_open(&bad, p, &o, &err), DS4_ERR_UNSUPPORTED);
    free(p);
    /* Top logprobs agree with the logits. */
    cr_assert_eq(ds4_session_top_logprobs(s, 4, tl, &nl, &err), DS4_OK);
    cr_assert_eq(ds4_session_logits(s, &l, &err), DS4_OK);
    cr_assert_eq(nl, 4);
    cr_assert_eq(tl[0].token, ds4_argmax(l, vocab(e)));
    ds4_session_free(s);
    ds4_engine_close(e);
}

Test(session_engine, info_estimate_and_identity) {
    ds4_engine *e = sf_open_engine();
    ds4_model_info in;
    ds4_error err = {0};
    cr_assert_eq(ds4_engine_info(e, &in, &err), DS4_OK);
    /* testdata/tiny-v4/README.md: vocab 1024, dim 256, 5 layers, 8 heads, 16 experts top 6. */
    cr_assert(in.n_vocab == 1024 && in.n_embd == 256 && in.n_layer == 5 && in.n_head == 8 &&
                  in.n_expert == 16 && in.n_expert_used == 6,
              "info: vocab %u embd %u layers %u heads %u experts %u/%u", in.n_vocab, in.n_embd, in.n_layer,
              in.n_head, in.n_expert_used, in.n_expert);
    cr_assert_geq(in.n_ctx_max, 4096);
    ds4_memory_estimate m1, m2;
    cr_assert_eq(ds4_engine_memory_estimate(e, 1024, &m1, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(ds4_engine_memory_estimate(e, 2048, &m2, &err), DS4_OK);
    cr_assert_eq(m1.kv_bytes_per_token, m2.kv_bytes_per_token);
    cr_assert_gt(m1.kv_bytes_per_token, 0);
    cr_assert_gt(m2.total_bytes, m1.total_bytes);
    cr_assert_eq(ds4_engine_memory_estimate(e, 0, &m1, &err), DS4_ERR_RANGE);
    /* Identity is stable across opens of the same file. */
    ds4_engine *e2 = sf_open_engine();
    ds4_model_info in2;
    ds4_engine_info(e2, &in2, NULL);
    cr_assert_eq(memcmp(in.model_id, in2.model_id, 32), 0, "model id differs between two opens");
    ds4_engine_close(e2);
    ds4_engine_close(e);
}
