/* tests/test_sampling.c — the sampler (src/model/sampling.c): greedy, seeds, top-k/p, min-p,
 * penalties, top log-probabilities. Statistical checks use fixed seeds and exact allowed sets. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ds4.h"
#include "model/sampling.h"

/* Logits whose softmax at T = 1 is exactly proportional to rel[] (natural log of it). */
static void logits_from_rel(float *l, const double *rel, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) l[i] = rel[i] > 0 ? (float)log(rel[i]) : -INFINITY;
}

static ds4_sampler *mk(const ds4_sampling_params *p, uint32_t n) {
    ds4_sampler *s = NULL;
    ds4_error err;
    cr_assert_eq(ds4_sampler_create(&s, p, n, &err), DS4_OK, "create: %s", err.msg);
    return s;
}

static int32_t draw(ds4_sampler *s, const float *l) {
    int32_t t = -1;
    ds4_error err;
    cr_assert_eq(ds4_sampler_sample(s, l, &t, &err), DS4_OK, "sample: %s", err.msg);
    return t;
}

static void random_logits(float *l, uint32_t n, uint64_t seed) {
    smp_rng r;
    smp_rng_seed(&r, seed);
    for (uint32_t i = 0; i < n; i++) l[i] = (float)(smp_rng_uniform(&r) * 20.0 - 10.0);
}

Test(sampling_greedy, temperature_zero_is_argmax) {
    enum { N = 5000 };
    float *l = malloc(N * sizeof *l);
    ds4_sampling_params p;
    ds4_sampling_params_init(&p);
    p.temperature = 0;
    ds4_sampler *s = mk(&p, N);
    for (uint64_t trial = 0; trial < 50; trial++) {
        random_logits(l, N, trial);
        int32_t best = 0;
        for (int32_t i = 1; i < N; i++)
            if (l[i] > l[best]) best = i;
        cr_assert_eq(draw(s, l), best, "trial %llu: expected argmax %d", (unsigned long long)trial, best);
        cr_assert_eq(ds4_argmax(l, N), best);
    }
    /* Ties go to the lowest id; non-finite logits never win. */
    for (int i = 0; i < N; i++) l[i] = 1.0f;
    l[7] = NAN;
    l[3] = 2.0f;
    l[9] = 2.0f;
    cr_assert_eq(draw(s, l), 3);
    l[3] = NAN;
    cr_assert_eq(draw(s, l), 9);
    ds4_sampler_free(s);
    free(l);
}

Test(sampling_greedy, top_k_one_and_tiny_temperature_are_greedy) {
    enum { N = 1000 };
    float l[N];
    ds4_sampling_params p;
    ds4_sampling_params_init(&p);
    p.top_k = 1;
    p.min_p = 0;
    ds4_sampler *k1 = mk(&p, N);
    ds4_sampling_params_init(&p);
    p.temperature = 1e-4f;
    p.min_p = 0;
    ds4_sampler *cold = mk(&p, N);
    for (uint64_t trial = 0; trial < 200; trial++) {
        random_logits(l, N, 100 + trial);
        int32_t best = ds4_argmax(l, N);
        /* A margin of >= 0.01 at T = 1e-4 makes every other token's mass < e^-100. */
        l[best] += 0.01f;
        cr_assert_eq(draw(k1, l), best, "top_k=1 trial %llu", (unsigned long long)trial);
        cr_assert_eq(draw(cold, l), best, "T=1e-4 trial %llu", (unsigned long long)trial);
    }
    ds4_sampler_free(k1);
    ds4_sampler_free(cold);
}

Test(sampling_seed, same_seed_same_sequence_other_seed_differs) {
    enum { N = 300, STEPS = 400 };
    float l[N];
    random_logits(l, N, 7);
    for (int i = 0; i < N; i++) l[i] *= 0.2f; /* flat enough that many tokens are drawn */
    ds4_sampling_params p;
    ds4_sampling_params_init(&p);
    p.seed = 1234;
    p.top_p = 0.9f;
    ds4_sampler *a = mk(&p, N), *b = mk(&p, N);
    p.seed = 1235;
    ds4_sampler *c = mk(&p, N);
    int32_t seq_a[STEPS];
    int differ = 0;
    for (int i = 0; i < STEPS; i++) {
        seq_a[i] = draw(a, l);
        cr_assert_eq(draw(b, l), seq_a[i], "step %d: same seed diverged", i);
        differ += draw(c, l) != seq_a[i];
    }
    cr_assert_gt(differ, STEPS / 4, "seed 1235 matched seed 1234 at %d/%d steps", STEPS - differ, STEPS);
    /* reset reseeds: the sequence starts over. */
    ds4_sampler_reset(a, 1234);
    for (int i = 0; i < STEPS; i++) cr_assert_eq(draw(a, l), seq_a[i], "after reset, step %d", i);
    ds4_sampler_free(a);
    ds4_sampler_free(b);
    ds4_sampler_free(c);
}

Test(sampling_rng, xoshiro_is_seeded_by_splitmix) {
    /* splitmix64 from seed 0 yields 0xe220a8397b1dcdaf first (Vigna's reference output). */
    smp_rng r;
    smp_rng_seed(&r, 0);
    cr_assert_eq(r.s[0], 0xe220a8397b1dcdafull, "splitmix64(0) first output %llx",
                 (unsigned long long)r.s[0]);
    for (int i = 0; i < 1000; i++) {
        double u = smp_rng_uniform(&r);
        cr_assert(u >= 0.0 && u < 1.0);
    }
}

/* Draws `n` tokens and returns per-token counts (caller frees). */
static uint32_t *histogram(ds4_sampler *s, const float *l, uint32_t n_vocab, int n) {
    uint32_t *h = calloc(n_vocab, sizeof *h);
    for (int i = 0; i < n; i++) h[draw(s, l)]++;
    return h;
}

Test(sampling_filters, top_k_keeps_exactly_the_k_best) {
    enum { N = 64 };
    float l[N];
    random_logits(l, N, 99);
    for (int i = 0; i < N; i++) l[i] *= 0.05f; /* nearly flat: everything would be drawn */
    smp_cand top[3];
    cr_assert_eq(smp_top_k(l, N, 3, top), 3);
    ds4_sampling_params p;
    ds4_sampling_params_init(&p);
    p.top_k = 3;
    p.min_p = 0;
    p.seed = 5;
    ds4_sampler *s = mk(&p, N);
    uint32_t *h = histogram(s, l, N, 3000);
    for (int i = 0; i < N; i++) {
        bool allowed = i == top[0].id || i == top[1].id || i == top[2].id;
        if (allowed) cr_assert_gt(h[i], 500, "top-3 token %d drawn only %u times", i, h[i]);
        else cr_assert_eq(h[i], 0, "token %d outside top-3 drawn %u times", i, h[i]);
    }
    free(h);
    ds4_sampler_free(s);
}

Test(sampling_filters, top_p_keeps_smallest_prefix_reaching_mass) {
    /* probabilities 0.5, 0.3, 0.15, 0.05 (ids shuffled) */
    const double rel[6] = {0.15, 0.5, 0.0, 0.05, 0.3, 0.0};
    float l[6];
    logits_from_rel(l, rel, 6);
    ds4_sampling_params p;
    ds4_sampling_params_init(&p);
    p.min_p = 0;
    p.seed = 11;
    p.top_p = 0.75f; /* 0.5 < 0.75 <= 0.8 → {1, 4} */
    ds4_sampler *s = mk(&p, 6);
    uint32_t *h = histogram(s, l, 6, 20000);
    cr_assert_eq(h[0] + h[2] + h[3] + h[5], 0, "top_p=0.75 drew excluded ids: %u %u %u %u", h[0], h[2],
                 h[3], h[5]);
    /* Renormalised over {0.5, 0.3}: 0.625 / 0.375. */
    cr_assert(fabs(h[1] / 20000.0 - 0.625) < 0.02, "id 1 frequency %g, expected 0.625", h[1] / 20000.0);
    free(h);
    ds4_sampler_free(s);
    p.top_p = 0.9f; /* 0.8 < 0.9 <= 0.95 → {1, 4, 0} */
    s = mk(&p, 6);
    h = histogram(s, l, 6, 20000);
    cr_assert_eq(h[2] + h[3] + h[5], 0, "top_p=0.9 drew excluded ids");
    cr_assert(h[0] > 2000 && h[1] > 8000 && h[4] > 5000, "top_p=0.9 counts %u %u %u", h[0], h[1], h[4]);
    free(h);
    ds4_sampler_free(s);
    p.top_p = 0.1f; /* best token alone */
    s = mk(&p, 6);
    h = histogram(s, l, 6, 1000);
    cr_assert_eq(h[1], 1000, "top_p=0.1 must keep only the best token, got %u/1000", h[1]);
    free(h);
    ds4_sampler_free(s);
}

Test(sampling_filters, min_p_drops_tokens_below_fraction_of_best) {
    const double rel[5] = {0.1, 1.0, 0.2, 0.5, 0.24};
    float l[5];
    logits_from_rel(l, rel, 5);
    ds4_sampling_params p;
    ds4_sampling_params_init(&p);
    p.min_p = 0.25f; /* keeps 1.0 and 0.5 only (0.24 is just below) */
    p.seed = 3;
    ds4_sampler *s = mk(&p, 5);
    uint32_t *h = histogram(s, l, 5, 30000);
    cr_assert_eq(h[0] + h[2] + h[4], 0, "min_p=0.25 drew excluded ids: %u %u %u", h[0], h[2], h[4]);
    cr_assert(fabs(h[1] / 30000.0 - 2.0 / 3.0) < 0.02, "id 1 frequency %g, expected 0.667",
              h[1] / 30000.0);
    free(h);
    ds4_sampler_free(s);
    /* Temperature 0.5 squares the ratios: 0.25 → kept set {1.0, 0.25} = ids 1, 3. */
    p.temperature = 0.5f;
    p.min_p = 0.2f;
    s = mk(&p, 5);
    h = histogram(s, l, 5, 30000);
    cr_assert_eq(h[0] + h[2] + h[4], 0, "T=0.5 min_p=0.2 drew excluded ids: %u %u %u", h[0], h[2], h[4]);
    cr_assert(fabs(h[1] / 30000.0 - 0.8) < 0.02, "id 1 frequency %g, expected 0.8", h[1] / 30000.0);
    free(h);
    ds4_sampler_free(s);
}

Test(sampling_filters, plain_temperature_matches_softmax) {
    const double rel[4] = {0.4, 0.3, 0.2, 0.1};
    float l[4];
    logits_from_rel(l, rel, 4);
    ds4_sampling_params p;
    ds4_sampling_params_init(&p);
    p.min_p = 0;
    p.seed = 42;
    ds4_sampler *s = mk(&p, 4);
    uint32_t *h = histogram(s, l, 4, 40000);
    for (int i = 0; i < 4; i++)
        cr_assert(fabs(h[i] / 40000.0 - rel[i]) < 0.015, "id %d frequency %g, expected %g", i,
                  h[i] / 40000.0, rel[i]);
    free(h);
    ds4_sampler_free(s);
}

Test(sampling_penalty, repeat_and_frequency_penalties_move_greedy_choice) {
    float l[4] = {1.0f, 3.0f, 2.5f, -1.0f};
    ds4_sampling_params p;
    ds4_sampling_params_init(&p);
    p.temperature = 0;
    p.repeat_penalty = 1.5f; /* 3.0 → 2.0 < 2.5 */
    ds4_sampler *s = mk(&p, 4);
    cr_assert_eq(draw(s, l), 1);
    ds4_sampler_accept(s, 1);
    cr_assert_eq(draw(s, l), 2, "repeat penalty should demote token 1");
    cr_assert_eq(l[1], 3.0f, "input logits must not be modified");
    ds4_sampler_reset(s, 0);
    cr_assert_eq(draw(s, l), 1, "reset forgets history");
    ds4_sampler_free(s);
    ds4_sampling_params_init(&p);
    p.temperature = 0;
    p.frequency_penalty = 0.3f; /* two occurrences: 3.0 - 0.6 = 2.4 < 2.5 */
    s = mk(&p, 4);
    ds4_sampler_accept(s, 1);
    cr_assert_eq(draw(s, l), 1, "one occurrence: 2.7 still wins");
    ds4_sampler_accept(s, 1);
    cr_assert_eq(draw(s, l), 2, "two occurrences: 2.4 loses to 2.5");
    ds4_sampler_free(s);
}

Test(sampling_params, invalid_values_are_refused) {
    ds4_sampling_params p;
    ds4_sampler *s = (ds4_sampler *)1;
    ds4_error err;
    ds4_sampling_params_init(&p);
    p.top_p = 0;
    cr_assert_eq(ds4_sampler_create(&s, &p, 10, &err), DS4_ERR_INVALID_ARG);
    cr_assert_null(s);
    cr_assert(strstr(err.msg, "top_p"), "message: %s", err.msg);
    ds4_sampling_params_init(&p);
    p.temperature = NAN;
    cr_assert_eq(ds4_sampler_create(&s, &p, 10, &err), DS4_ERR_INVALID_ARG);
    ds4_sampling_params_init(&p);
    p.min_p = 1.5f;
    cr_assert_eq(ds4_sampler_create(&s, &p, 10, &err), DS4_ERR_INVALID_ARG);
    ds4_sampling_params_init(&p);
    cr_assert_eq(ds4_sampler_create(&s, &p, 0, &err), DS4_ERR_INVALID_ARG);
    cr_assert_eq(ds4_sampler_create(NULL, &p, 10, &err), DS4_ERR_INVALID_ARG);
    /* All logits non-finite → error, not a crash or a garbage id. */
    s = mk(&p, 3);
    float bad[3] = {NAN, -INFINITY, INFINITY};
    int32_t t;
    cr_assert_eq(ds4_sampler_sample(s, bad, &t, &err), DS4_ERR_INVALID_ARG);
    cr_assert_eq(ds4_sampler_sample(s, NULL, &t, &err), DS4_ERR_INVALID_ARG);
    ds4_sampler_free(s);
}

Test(sampling_logprobs, top_logprobs_equal_log_softmax) {
    enum { N = 777 };
    float l[N];
    random_logits(l, N, 2024);
    double m = -INFINITY, sum = 0;
    for (int i = 0; i < N; i++) m = fmax(m, l[i]);
    for (int i = 0; i < N; i++) sum += exp(l[i] - m);
    ds4_token_logprob top[10];
    uint32_t n = 0;
    ds4_error err;
    cr_assert_eq(ds4_logits_top_logprobs(l, N, 10, top, &n, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(n, 10);
    for (uint32_t i = 0; i < n; i++) {
        double want = l[top[i].token] - m - log(sum);
        cr_assert(fabs(top[i].logprob - want) < 1e-5, "rank %u id %d: got %g want %g", i, top[i].token,
                  (double)top[i].logprob, want);
        if (i) cr_assert_geq(top[i - 1].logprob, top[i].logprob, "rank %u out of order", i);
    }
    /* Nothing outside the list beats its last entry. */
    for (int i = 0; i < N; i++) {
        bool in = false;
        for (uint32_t j = 0; j < n; j++) in |= top[j].token == i;
        if (!in) cr_assert_leq(l[i], l[top[n - 1].token], "id %d (%g) missing from top-10", i, (double)l[i]);
    }
    cr_assert_eq(ds4_logits_top_logprobs(l, 5, 10, top, &n, &err), DS4_OK);
    cr_assert_eq(n, 5, "k > vocab clamps to vocab");
}
