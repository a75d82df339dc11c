/*
 * tests/cuda/test_cuda_sample.c — the device sampler (cuda/sample_dev.cu) against
 * ds4_sampler_sample (model/sampling.c): for random and adversarial logit rows (ties, -inf and
 * NaN, ±3e38, one finite logit, none) and parameter sets (greedy, top_k 1/40/1000/5000, top_p
 * 1e-6/0.9, min_p 0/1, cold and hot temperatures, penalties with a growing history), thousands
 * of draws with the same seed on both sides: every token must be equal. Draws the device hands
 * back (CUDA_SAMPLE_HOST) are finished on the host, as cuda_state_sample does, and counted.
 * Also times one draw on each side at Flash's vocabulary (--bench, or DS4_CUDA_SAMPLE_BENCH=1
 * with the tests alone). Test code only.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_api.h"
#include "cuda/sample_dev.h"
#include "model/sampling.h"

#include "layer_check.h"

typedef struct sd_case {
    const char *name;
    float temperature, top_p, min_p, rp, pp, fp;
    int32_t top_k;
} sd_case;

static const sd_case k_cases[] = {
    {"defaults (T 1, min_p 0.05)", 1.0f, 1.0f, 0.05f, 1.0f, 0, 0, 0},
    {"greedy T 0", 0.0f, 1.0f, 0.05f, 1.0f, 0, 0, 0},
    {"top_k 1", 0.8f, 1.0f, 0.0f, 1.0f, 0, 0, 1},
    {"top_k 40, min_p 0", 1.0f, 1.0f, 0.0f, 1.0f, 0, 0, 40},
    {"top_k 1000, top_p 0.9", 1.3f, 0.9f, 0.0f, 1.0f, 0, 0, 1000},
    {"top_k 5000, T 0.7", 0.7f, 1.0f, 0.0f, 1.0f, 0, 0, 5000},
    {"top_p 1e-6", 1.0f, 1e-6f, 0.0f, 1.0f, 0, 0, 0},
    {"top_p 0.9, min_p 0.02", 1.0f, 0.9f, 0.02f, 1.0f, 0, 0, 0},
    {"min_p 1", 1.0f, 1.0f, 1.0f, 1.0f, 0, 0, 0},
    {"min_p 0 (whole vocabulary)", 1.0f, 1.0f, 0.0f, 1.0f, 0, 0, 0},
    {"T 0.05", 0.05f, 1.0f, 0.05f, 1.0f, 0, 0, 0},
    {"T 8, min_p 0.2", 8.0f, 1.0f, 0.2f, 1.0f, 0, 0, 0},
    {"penalties 1.5/0.4/0.3, top_k 64", 1.0f, 1.0f, 0.05f, 1.5f, 0.4f, 0.3f, 64},
    {"penalties 0.7/-1/0.5, top_p 0.8", 2.0f, 0.8f, 0.01f, 0.7f, -1.0f, 0.5f, 0},
    {"penalties, greedy", 0.0f, 1.0f, 0.05f, 1.3f, 1.0f, 0.0f, 0},
};

/* The sampler parameters of case c (seed: the library's default). */
static ds4_sampling_params sd_params(const sd_case *c) {
    ds4_sampling_params p;
    ds4_sampling_params_init(&p);
    p.temperature = c->temperature;
    p.top_k = c->top_k;
    p.top_p = c->top_p;
    p.min_p = c->min_p;
    p.repeat_penalty = c->rp;
    p.presence_penalty = c->pp;
    p.frequency_penalty = c->fp;
    return p;
}

/* Logit rows: kind 0 N(0, 3) (real-model-like spread), 1 N(0, 0.3) (flat), 2 ties on a grid of
 * 0.25 with -inf / NaN holes and ±3e38 extremes, 3 all equal, 4 one finite logit, 5 none. */
static void fill_row(float *l, int64_t V, int kind) {
    for (int64_t i = 0; i < V; i++) {
        switch (kind) {
        case 0: l[i] = rnd_normal() * 3.0f; break;
        case 1: l[i] = rnd_normal() * 0.3f; break;
        case 2: {
            uint64_t r = rnd_u64();
            l[i] = (float)(int)(r % 24) * 0.25f - 3.0f;
            if (r % 97 == 0) l[i] = -INFINITY;
            if (r % 89 == 0) l[i] = NAN;
            if (r % 50021 == 0) l[i] = -3e38f;
            break;
        }
        case 3: l[i] = 1.5f; break;
        default: l[i] = kind == 4 && i == V / 3 ? 2.0f : -INFINITY; break;
        }
    }
    if (kind == 2) {
        l[V / 2] = 3e38f; /* one huge best: p of the rest underflows to 0 */
        l[V / 2 + 1] = 3e38f;
    }
}

/* One draw on the device as cuda_state_sample does it; -1: no finite logit. */
static ds4_status dev_draw(cuda_sampler *ds, const float *d_l, const float *h_l, ds4_sampler *smp,
                           int32_t *tok, int *n_host, ds4_error *err) {
    smp_plan plan;
    smp_plan_next(smp, &plan);
    ds4_status st = cuda_sample_logits(ds, d_l, &plan, tok, err);
    if (!st && *tok >= 0) return DS4_OK;
    smp_plan_undo(smp, &plan);
    if (st || *tok == -1) return st;
    (*n_host)++;
    return ds4_sampler_sample(smp, h_l, tok, err);
}

void test_sample_dev(void) {
    static const int64_t vocabs[] = {129280, 1000};
    ds4_error err;
    for (int vi = 0; vi < 2; vi++) {
        int64_t V = vocabs[vi];
        float *l = malloc((size_t)V * sizeof *l);
        float *dl = dev_alloc((size_t)V * sizeof *dl);
        cuda_sampler *ds = NULL;
        if (!l || !dl || !ok_call(cuda_sampler_create(&ds, V, &err), "cuda_sampler_create", &err)) {
            free(l);
            dev_free_all();
            return;
        }
        for (size_t ci = 0; ci < sizeof k_cases / sizeof k_cases[0]; ci++) {
            const sd_case *c = &k_cases[ci];
            ds4_sampling_params p = sd_params(c);
            p.seed = 1000 + ci;
            ds4_sampler *ref = NULL, *dev = NULL;
            if (ds4_sampler_create(&ref, &p, (uint32_t)V, &err) || ds4_sampler_create(&dev, &p, (uint32_t)V, &err)) {
                result(0, c->name, err.msg);
                ds4_sampler_free(ref);
                continue;
            }
            int n_draw = 0, n_host = 0, n_none = 0, bad = 0;
            char detail[768] = "";
            for (int kind = 0; kind < 6 && !bad; kind++) {
                fill_row(l, V, kind);
                if (cuda_upload(dl, l, (size_t)V * sizeof *l, &err)) {
                    bad = 1;
                    snprintf(detail, sizeof detail, "upload: %s", err.msg);
                    break;
                }
                int draws = V > 10000 ? 40 : 100;
                for (int d = 0; d < draws; d++) {
                    int32_t tr = -5, td = -5;
                    ds4_status sr = ds4_sampler_sample(ref, l, &tr, NULL);
                    ds4_status sd = dev_draw(ds, dl, l, dev, &td, &n_host, &err);
                    if (sd && sd != DS4_ERR_INVALID_ARG) {
                        bad = 1;
                        snprintf(detail, sizeof detail, "row kind %d draw %d: device error: %s", kind, d, err.msg);
                        break;
                    }
                    if (sr) tr = -1;
                    n_draw++;
                    n_none += tr < 0;
                    if (tr != td) {
                        bad = 1;
                        snprintf(detail, sizeof detail, "V %lld row kind %d draw %d: host token %d, device %d",
                                 (long long)V, kind, d, tr, td);
                        break;
                    }
                    if (tr >= 0) {
                        ds4_sampler_accept(ref, tr);
                        ds4_sampler_accept(dev, td);
                    }
                }
            }
            if (!bad)
                snprintf(detail, sizeof detail, "V %lld: %d draws equal (%d finished on the host, %d with no finite logit)",
                         (long long)V, n_draw, n_host, n_none);
            char name[128];
            snprintf(name, sizeof name, "device sampler: %s", c->name);
            result(!bad, name, detail);
            ds4_sampler_free(ref);
            ds4_sampler_free(dev);
        }
        cuda_sampler_free(ds);
        dev_free_all();
        free(l);
    }
    /* the timings without the rest of --bench (one GPU call: tests and these numbers) */
    if (getenv("DS4_CUDA_SAMPLE_BENCH")) bench_sample_dev();
}

/* One draw at Flash's vocabulary (129,280): device (launches + the id's download) and host
 * (ds4_sampler_sample on logits already on the host; the 0.5 MB download is not included). */
void bench_sample_dev(void) {
    const int64_t V = 129280;
    ds4_error err;
    float *l = malloc((size_t)V * sizeof *l);
    fill_row(l, V, 0);
    float *dl = dev_put(l, (size_t)V * sizeof *l);
    cuda_sampler *ds = NULL;
    if (!dl || cuda_sampler_create(&ds, V, &err)) {
        printf("bench sample: setup failed\n");
        free(l);
        dev_free_all();
        return;
    }
    for (int ci = 0; ci < 4; ci++) {
        static const int idx[4] = {0, 3, 12, 9};
        const sd_case *c = &k_cases[idx[ci]];
        ds4_sampling_params p = sd_params(c);
        ds4_sampler *smp = NULL;
        if (ds4_sampler_create(&smp, &p, (uint32_t)V, &err)) continue;
        for (int i = 0; i < 64; i++) ds4_sampler_accept(smp, (int32_t)(i * 977 % V));
        int32_t t;
        int n_host = 0;
        char label[96];
        snprintf(label, sizeof label, "sample device %s", c->name);
        BENCH(label, 200, dev_draw(ds, dl, l, smp, &t, &n_host, &e_));
        snprintf(label, sizeof label, "sample host %s", c->name);
        BENCH(label, 50, ds4_sampler_sample(smp, l, &t, &e_));
        BENCH("logits download 129280 (the host path's copy)", 200, cuda_download(l, dl, (size_t)V * sizeof *l, &e_));
        ds4_sampler_free(smp);
    }
    cuda_sampler_free(ds);
    dev_free_all();
    free(l);
}
