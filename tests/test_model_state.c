/* tests/test_model_state.c — streaming semantics of the model state (MODEL_MATH §7.4, §13):
 * chunked prefill equals whole-prompt prefill for chunk sizes 1, 3, 64; save after k tokens,
 * restore into a fresh state and continue equals never stopping; misuse and bad payloads are
 * errors, never crashes. Uses the f32 conversion of tiny-v4 and the `window` prompt (300
 * tokens: crosses the 128-row window, ratio-4 and ratio-128 compression and the indexer). */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "test_model_util.h"
#include "testutil.h"

typedef struct fixture {
    char *path;
    tm_model tm;
    st_file *gf;
    const int32_t *toks;
    int64_t T, V;
    float *ref; /* [T][V], whole prompt in one call */
} fixture;

static void fx_open(fixture *fx) {
    fx->path = tm_convert_tiny("f32");
    tm_open(&fx->tm, fx->path, 0);
    fx->gf = tm_golden("golden_topk16.safetensors");
    uint64_t T;
    fx->toks = tm_i32(fx->gf, "window.tokens", &T);
    fx->T = (int64_t)T;
    fx->V = model_get_hparams(fx->tm.m)->n_vocab;
    fx->ref = malloc((size_t)(fx->T * fx->V) * sizeof(float));
    model_state *st;
    ds4_error err = {0};
    cr_assert_eq(model_state_create(&st, fx->tm.m, fx->T, &err), DS4_OK, "%s", err.msg);
    model_eval_opts o = {MODEL_LOGITS_ALL, fx->ref, NULL, NULL};
    cr_assert_eq(model_eval(fx->tm.m, st, fx->toks, fx->T, &o, &err), DS4_OK, "%s", err.msg);
    model_state_free(st);
}

static void fx_close(fixture *fx) {
    free(fx->ref);
    st_close(fx->gf);
    tm_close(&fx->tm);
    tm_remove(fx->path);
}

/* Evaluates toks[from, to) in chunks of `chunk`, writing all logits to out + from*V. */
static void eval_chunks(fixture *fx, model_state *st, int64_t from, int64_t to, int64_t chunk,
                        float *out) {
    ds4_error err = {0};
    for (int64_t p = from; p < to; p += chunk) {
        int64_t n = to - p < chunk ? to - p : chunk;
        model_eval_opts o = {MODEL_LOGITS_ALL, out + p * fx->V, NULL, NULL};
        cr_assert_eq(model_eval(fx->tm.m, st, fx->toks + p, n, &o, &err), DS4_OK,
                     "chunk %lld at %lld: %s", (long long)chunk, (long long)p, err.msg);
        cr_assert_eq(model_state_pos(st), p + n);
    }
}

Test(model_state, chunked_prefill_equals_whole_prompt, .timeout = 120) {
    fixture fx;
    fx_open(&fx);
    const int64_t chunks[] = {1, 3, 64};
    float *got = malloc((size_t)(fx.T * fx.V) * sizeof(float));
    for (int c = 0; c < 3; c++) {
        model_state *st;
        ds4_error err = {0};
        cr_assert_eq(model_state_create(&st, fx.tm.m, fx.T, &err), DS4_OK, "%s", err.msg);
        eval_chunks(&fx, st, 0, fx.T, chunks[c], got);
        int64_t at;
        double e = tm_max_abs(got, fx.ref, fx.T * fx.V, &at);
        cr_log_info("chunk %lld: max |diff| vs whole prompt %.3g", (long long)chunks[c], e);
        cr_assert(e <= 1e-4, "chunk size %lld: max |diff| %.3g > 1e-4 at pos %lld vocab %lld",
                  (long long)chunks[c], e, (long long)(at / fx.V), (long long)(at % fx.V));
        model_state_free(st);
    }
    free(got);
    fx_close(&fx);
}

Test(model_state, save_restore_continues_identically, .timeout = 120) {
    fixture fx;
    fx_open(&fx);
    float *got = malloc((size_t)(fx.T * fx.V) * sizeof(float));
    /* k: inside a ratio-4 window, right after a ratio-128 entry, past the window. */
    const int64_t ks[] = {131, 128, 257};
    for (int i = 0; i < 3; i++) {
        int64_t k = ks[i];
        model_state *a, *b;
        ds4_error err = {0};
        cr_assert_eq(model_state_create(&a, fx.tm.m, fx.T, &err), DS4_OK, "%s", err.msg);
        cr_assert_eq(model_state_create(&b, fx.tm.m, fx.T, &err), DS4_OK, "%s", err.msg);
        eval_chunks(&fx, a, 0, k, 50, got);
        size_t n = model_state_serialized_bytes(a);
        uint8_t *buf = malloc(n);
        cr_assert_eq(model_state_serialize(a, buf, n, &err), DS4_OK, "%s", err.msg);
        model_state_free(a); /* the original is gone: only the payload carries the state */
        cr_assert_eq(model_state_deserialize(b, buf, n, &err), DS4_OK, "%s", err.msg);
        cr_assert_eq(model_state_pos(b), k);
        eval_chunks(&fx, b, k, fx.T, 17, got);
        int64_t at;
        double e = tm_max_abs(got + k * fx.V, fx.ref + k * fx.V, (fx.T - k) * fx.V, &at);
        cr_assert(e <= 1e-4, "restore at %lld: max |diff| %.3g at pos %lld", (long long)k, e,
                  (long long)(k + at / fx.V));
        model_state_free(b);
        free(buf);
    }
    free(got);
    fx_close(&fx);
}

Test(model_state, misuse_and_bad_payloads_are_errors, .timeout = 60) {
    fixture fx;
    fx_open(&fx);
    ds4_error err = {0};
    model_state *st, *other;
    cr_assert_eq(model_state_create(&st, fx.tm.m, 10, &err), DS4_OK, "%s", err.msg);
    float *lg = malloc((size_t)fx.V * sizeof(float));
    model_eval_opts o = {MODEL_LOGITS_LAST, lg, NULL, NULL};
    /* Context overflow: refused, state unchanged. */
    cr_assert_eq(model_eval(fx.tm.m, st, fx.toks, 11, &o, &err), DS4_ERR_RANGE);
    cr_assert(strstr(err.msg, "context") != NULL, "message: %s", err.msg);
    cr_assert_eq(model_state_pos(st), 0);
    /* Token outside the vocabulary. */
    int32_t bad[2] = {5, (int32_t)fx.V};
    cr_assert_eq(model_eval(fx.tm.m, st, bad, 2, &o, &err), DS4_ERR_INVALID_ARG);
    cr_assert_eq(model_state_pos(st), 0);
    /* Logits requested without a buffer. */
    model_eval_opts nob = {MODEL_LOGITS_ALL, NULL, NULL, NULL};
    cr_assert_eq(model_eval(fx.tm.m, st, fx.toks, 1, &nob, &err), DS4_ERR_INVALID_ARG);
    cr_assert_eq(model_state_create(&other, fx.tm.m, 0, &err), DS4_ERR_INVALID_ARG);
    cr_assert_eq(model_eval(fx.tm.m, st, fx.toks, 8, &o, &err), DS4_OK, "%s", err.msg);
    size_t n = model_state_serialized_bytes(st);
    uint8_t *buf = malloc(n + 8);
    cr_assert_eq(model_state_serialize(st, buf, n - 1, &err), DS4_ERR_INVALID_ARG);
    cr_assert_eq(model_state_serialize(st, buf, n, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(model_state_create(&other, fx.tm.m, 4, &err), DS4_OK, "%s", err.msg);
    /* Saved position 8 does not fit a 4-token context. */
    cr_assert_eq(model_state_deserialize(other, buf, n, &err), DS4_ERR_RANGE);
    model_state_free(other);
    cr_assert_eq(model_state_create(&other, fx.tm.m, 10, &err), DS4_OK, "%s", err.msg);
    /* Truncated, extended, bad magic, wrong layer count: format errors, state untouched. */
    cr_assert_eq(model_state_deserialize(other, buf, n - 4, &err), DS4_ERR_FORMAT);
    memset(buf + n, 0, 8);
    cr_assert_eq(model_state_deserialize(other, buf, n + 8, &err), DS4_ERR_FORMAT);
    cr_assert_eq(model_state_deserialize(other, buf, 3, &err), DS4_ERR_FORMAT);
    buf[0] ^= 1;
    cr_assert_eq(model_state_deserialize(other, buf, n, &err), DS4_ERR_FORMAT);
    buf[0] ^= 1;
    buf[8] ^= 1;
    cr_assert_eq(model_state_deserialize(other, buf, n, &err), DS4_ERR_FORMAT);
    cr_assert(strstr(err.msg, "layers") != NULL, "message: %s", err.msg);
    buf[8] ^= 1;
    cr_assert_eq(model_state_pos(other), 0);
    cr_assert_eq(model_state_deserialize(other, buf, n, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(model_state_pos(other), 8);
    free(buf);
    free(lg);
    model_state_free(other);
    model_state_free(st);
    fx_close(&fx);
}

Test(model_state, missing_or_misshapen_tensor_is_named, .timeout = 60) {
    char *p = tm_convert_tiny("f32");
    char *dir = tu_tmpdir();
    char *q = tu_join(dir, "missing.gguf");
    tm_rewrite_gguf(p, q, false, "blk.3.attn_compressor_norm.weight", NULL, 0);
    gguf_ctx *g;
    model *m;
    ds4_error err = {0};
    cr_assert_eq(gguf_open(&g, q, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(model_open(&m, g, NULL, &err), DS4_ERR_NOT_FOUND);
    cr_assert(strstr(err.msg, "blk.3.attn_compressor_norm.weight") != NULL, "message: %s", err.msg);
    gguf_close(g);
    /* A metadata value that disagrees with the tensors: the first mismatching tensor named. */
    tm_rewrite_gguf(p, q, false, NULL, "deepseek4.attention.q_lora_rank", 64);
    cr_assert_eq(gguf_open(&g, q, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(model_open(&m, g, NULL, &err), DS4_ERR_FORMAT);
    cr_assert(strstr(err.msg, "attn_q_a.weight") != NULL && strstr(err.msg, "expected dims") != NULL,
              "message: %s", err.msg);
    gguf_close(g);
    /* An absurd hyper-parameter is refused before any allocation. */
    tm_rewrite_gguf(p, q, false, NULL, "deepseek4.block_count", 5000000);
    cr_assert_eq(gguf_open(&g, q, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(model_open(&m, g, NULL, &err), DS4_ERR_FORMAT);
    cr_assert(strstr(err.msg, "block_count") != NULL, "message: %s", err.msg);
    gguf_close(g);
    tm_remove(q);
    tm_rmdir(dir);
    tm_remove(p);
}

Test(model_state, thread_count_does_not_change_results, .timeout = 120) {
    fixture fx;
    fx_open(&fx); /* fx.ref: default thread count */
    gguf_ctx *g;
    model *m1;
    ds4_error err = {0};
    cr_assert_eq(gguf_open(&g, fx.path, &err), DS4_OK, "%s", err.msg);
    model_options o1 = {.n_threads = 1};
    cr_assert_eq(model_open(&m1, g, &o1, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(model_n_threads(m1), 1);
    model_state *st;
    cr_assert_eq(model_state_create(&st, m1, fx.T, &err), DS4_OK, "%s", err.msg);
    float *got = malloc((size_t)(fx.T * fx.V) * sizeof(float));
    model_eval_opts o = {MODEL_LOGITS_ALL, got, NULL, NULL};
    cr_assert_eq(model_eval(m1, st, fx.toks, fx.T, &o, &err), DS4_OK, "%s", err.msg);
    int64_t at;
    double e = tm_max_abs(got, fx.ref, fx.T * fx.V, &at);
    cr_assert_eq(e, 0.0, "1 thread vs %d threads: max |diff| %.3g at pos %lld", model_n_threads(fx.tm.m),
                 e, (long long)(at / fx.V));
    free(got);
    model_state_free(st);
    model_close(m1);
    gguf_close(g);
    fx_close(&fx);
}

/* model_eval_opts.token_out (issue #7): the greedy token is ds4_argmax of the last token's
 * logits, with the logits asked for (LAST, ALL) or not (NONE: the head runs into scratch). */
Test(model_state, token_out_is_argmax_of_last_logits, .timeout = 120) {
    fixture fx;
    fx_open(&fx);
    ds4_error err = {0};
    const model_logits_mode modes[] = {MODEL_LOGITS_NONE, MODEL_LOGITS_LAST, MODEL_LOGITS_ALL};
    float *lg = malloc((size_t)(fx.T * fx.V) * sizeof(float));
    for (int mi = 0; mi < 3; mi++) {
        model_state *st;
        cr_assert_eq(model_state_create(&st, fx.tm.m, fx.T, &err), DS4_OK, "%s", err.msg);
        /* a prefill of 40 tokens, then single decode steps */
        for (int64_t p = 0; p < 48;) {
            int64_t n = p == 0 ? 40 : 1;
            int32_t tok = -7;
            model_eval_opts o = {modes[mi], lg, NULL, NULL, &tok};
            cr_assert_eq(model_eval(fx.tm.m, st, fx.toks + p, n, &o, &err), DS4_OK, "%s", err.msg);
            p += n;
            int32_t want = ds4_argmax(fx.ref + (p - 1) * fx.V, (uint32_t)fx.V);
            cr_assert(want >= 0);
            cr_assert_eq(tok, want, "mode %d, position %lld: token_out %d, argmax of the reference %d",
                         mi, (long long)(p - 1), tok, want);
        }
        model_state_free(st);
    }
    free(lg);
    fx_close(&fx);
}
