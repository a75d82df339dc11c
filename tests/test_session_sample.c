/* tests/test_session_sample.c — ds4_session_sample (src/model/session.c) and what the device
 * sampler relies on in src/model/sampling.c: the session entry point draws exactly the tokens
 * of ds4_session_logits + ds4_sampler_sample for many seeds and parameter sets on the tiny-v4
 * model; smp_exp against libm; smp_plan_next draws the uniform ds4_sampler_sample would and
 * smp_plan_undo puts it back. */
#include <math.h>

#include "model/sampling.h"
#include "model/smp_exp.h"
#include "session_fixture.h"

static ds4_session *mk_sess(ds4_engine *e) {
    ds4_session *s = NULL;
    ds4_error err = {0};
    cr_assert_eq(ds4_session_create(&s, e, 128, &err), DS4_OK, "create: %s", err.msg);
    return s;
}

static ds4_sampler *mk_smp(const ds4_sampling_params *p, uint32_t V) {
    ds4_sampler *s = NULL;
    ds4_error err = {0};
    cr_assert_eq(ds4_sampler_create(&s, p, V, &err), DS4_OK, "sampler: %s", err.msg);
    return s;
}

/* Generates n tokens twice from the same prompt and seed: through ds4_session_sample and
 * through the logits + ds4_sampler_sample; the sequences must be identical. */
static void same_tokens(ds4_engine *e, const ds4_sampling_params *p, const char *what) {
    ds4_model_info in;
    cr_assert_eq(ds4_engine_info(e, &in, NULL), DS4_OK);
    const int32_t prompt[] = {0, 17, 256, 3, 999, 41};
    ds4_session *a = mk_sess(e), *b = mk_sess(e);
    ds4_sampler *sa = mk_smp(p, in.n_vocab), *sb = mk_smp(p, in.n_vocab);
    ds4_error err = {0};
    cr_assert_eq(ds4_session_eval_tokens(a, prompt, 6, NULL, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(ds4_session_eval_tokens(b, prompt, 6, NULL, &err), DS4_OK, "%s", err.msg);
    for (int i = 0; i < 6; i++) {
        ds4_sampler_accept(sa, prompt[i]);
        ds4_sampler_accept(sb, prompt[i]);
    }
    for (int step = 0; step < 12; step++) {
        int32_t ta = -1, tb = -1;
        const float *l;
        cr_assert_eq(ds4_session_sample(a, sa, &ta, &err), DS4_OK, "%s step %d: %s", what, step, err.msg);
        cr_assert_eq(ds4_session_logits(b, &l, &err), DS4_OK);
        cr_assert_eq(ds4_sampler_sample(sb, l, &tb, &err), DS4_OK);
        cr_assert_eq(ta, tb, "%s step %d: session_sample drew %d, logits + sampler %d", what, step, ta, tb);
        ds4_sampler_accept(sa, ta);
        ds4_sampler_accept(sb, tb);
        cr_assert_eq(ds4_session_eval(a, ta, &err), DS4_OK, "%s", err.msg);
        cr_assert_eq(ds4_session_eval(b, tb, &err), DS4_OK, "%s", err.msg);
    }
    ds4_sampler_free(sa);
    ds4_sampler_free(sb);
    ds4_session_free(a);
    ds4_session_free(b);
}

Test(session_sample, equals_logits_plus_sampler_for_many_params) {
    ds4_engine *e = sf_open_engine();
    for (uint64_t seed = 0; seed < 6; seed++) {
        ds4_sampling_params p;
        ds4_sampling_params_init(&p);
        p.seed = seed * 7919 + 1;
        char what[96];
        switch (seed) {
        case 0: break; /* defaults: T 1, min_p 0.05 */
        case 1: p.temperature = 1.7f; p.min_p = 0; break;
        case 2: p.top_k = 20; p.temperature = 2.5f; break;
        case 3: p.top_p = 0.6f; p.min_p = 0.01f; break;
        case 4: p.temperature = 0; break;
        case 5: p.repeat_penalty = 1.3f; p.presence_penalty = 0.5f; p.frequency_penalty = 0.25f;
                p.temperature = 3.0f; p.min_p = 0; p.top_k = 50; break;
        }
        snprintf(what, sizeof what, "params #%llu", (unsigned long long)seed);
        same_tokens(e, &p, what);
    }
    ds4_engine_close(e);
}

Test(session_sample, empty_session_and_foreign_vocabulary_are_refused) {
    ds4_engine *e = sf_open_engine();
    ds4_model_info in;
    cr_assert_eq(ds4_engine_info(e, &in, NULL), DS4_OK);
    ds4_session *s = mk_sess(e);
    ds4_sampling_params p;
    ds4_sampling_params_init(&p);
    ds4_sampler *ok = mk_smp(&p, in.n_vocab), *bad = mk_smp(&p, in.n_vocab + 1);
    ds4_error err = {0};
    int32_t t = 5;
    cr_assert_eq(ds4_session_sample(s, ok, &t, &err), DS4_ERR_STATE, "empty session: %s", err.msg);
    cr_assert_eq(ds4_session_eval(s, 1, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(ds4_session_sample(s, bad, &t, &err), DS4_ERR_INVALID_ARG, "vocab + 1 accepted");
    cr_assert_eq(ds4_session_sample(s, ok, NULL, &err), DS4_ERR_INVALID_ARG);
    cr_assert_eq(ds4_session_sample(s, ok, &t, &err), DS4_OK, "%s", err.msg);
    cr_assert(t >= 0 && (uint32_t)t < in.n_vocab, "token %d", t);
    ds4_sampler_free(ok);
    ds4_sampler_free(bad);
    ds4_session_free(s);
    ds4_engine_close(e);
}

Test(sampling_exp, smp_exp_is_libm_exp_to_a_few_ulp_and_exact_at_zero) {
    cr_assert_eq(smp_exp(0.0), 1.0, "smp_exp(0) must be exactly 1 (the best token's p)");
    cr_assert_eq(smp_exp(-0.0), 1.0);
    cr_assert_eq(smp_exp(-800.0), 0.0);
    double worst = 0;
    for (int i = 0; i <= 200000; i++) {
        double x = -700.0 * i / 200000.0 - 1e-7 * (i % 7);
        double a = smp_exp(x), b = exp(x);
        double rel = fabs(a - b) / b;
        if (rel > worst) worst = rel;
        cr_assert(rel < 1e-15, "smp_exp(%.17g) = %.17g, exp = %.17g (rel %.3g)", x, a, b, rel);
    }
    /* monotone on a fine grid near 0, where min-p cuts are made */
    double prev = 1.0;
    for (int i = 1; i <= 100000; i++) {
        double v = smp_exp(-i * 1e-4);
        cr_assert(v <= prev, "smp_exp not monotone at %g", -i * 1e-4);
        prev = v;
    }
}

Test(sampling_plan, plan_draws_the_samplers_uniform_and_undo_restores_it) {
    enum { N = 500 };
    float l[N];
    for (int i = 0; i < N; i++) l[i] = (float)((i * 37) % 101) * 0.05f;
    ds4_sampling_params p;
    ds4_sampling_params_init(&p);
    p.seed = 77;
    p.repeat_penalty = 1.2f;
    p.frequency_penalty = 0.1f;
    ds4_sampler *a = mk_smp(&p, N), *b = mk_smp(&p, N);
    smp_rng r;
    smp_rng_seed(&r, 77);
    ds4_sampler_accept(a, 3);
    ds4_sampler_accept(a, 3);
    ds4_sampler_accept(a, 9);
    for (int k = 0; k < 20; k++) {
        smp_plan pl;
        smp_plan_next(a, &pl);
        cr_assert_eq(pl.u, smp_rng_uniform(&r), "draw %d: the plan's uniform is not the PRNG's next", k);
        cr_assert(!pl.greedy && pl.n_vocab == N && pl.top_k == 0);
        cr_assert_eq(pl.n_pen, 2, "distinct history tokens: %u", pl.n_pen);
        uint32_t c3 = pl.pen_tok[0] == 3 ? pl.pen_count[0] : pl.pen_count[1];
        cr_assert_eq(c3, 2, "count of token 3: %u", c3);
        /* undo, then the host sampler draws with the same PRNG state as a fresh one */
        smp_plan_undo(a, &pl);
        int32_t ta, tb;
        cr_assert_eq(ds4_sampler_sample(a, l, &ta, NULL), DS4_OK);
        if (k == 0) {
            ds4_sampler_accept(b, 3);
            ds4_sampler_accept(b, 3);
            ds4_sampler_accept(b, 9);
        }
        cr_assert_eq(ds4_sampler_sample(b, l, &tb, NULL), DS4_OK);
        cr_assert_eq(ta, tb, "draw %d after undo: %d vs %d", k, ta, tb);
    }
    ds4_sampler_free(a);
    ds4_sampler_free(b);
}
