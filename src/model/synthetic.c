/*
 * model/synthetic.c — deterministic random V4 weights (see synthetic.h for the scales).
 * Each row has its own counter-based generator (splitmix64 of seed, tensor-name hash, expert,
 * row), so any slab of rows can be produced on any thread.
 */
#include "model/synthetic.h"
#include "core/error.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct cv_synth {
    const cv_plan *plan;
    uint64_t seed;
    uint64_t bytes; /* atomic: f32 bytes produced */
};

static uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t name_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static uint64_t row_state(const cv_synth *sy, const cv_tensor *t, uint32_t expert, uint64_t row) {
    uint64_t x = sy->seed ^ name_hash(t->name);
    x ^= splitmix(&x) + ((uint64_t)expert << 32);
    x ^= splitmix(&x) + row;
    splitmix(&x);
    return x;
}

/* Approximately N(0, 1): Irwin-Hall sum of the four 16-bit quarters of one splitmix draw,
 * centred and scaled to unit variance (tails end at ±3.46σ, harmless for weights). One 64-bit
 * draw per value and no libm keeps a Flash-width layer (1 G values) at memory speed. */
static float normal(uint64_t *st) {
    uint64_t z = splitmix(st);
    uint32_t sum = (uint32_t)(z & 0xFFFF) + (uint32_t)((z >> 16) & 0xFFFF) +
                   (uint32_t)((z >> 32) & 0xFFFF) + (uint32_t)(z >> 48);
    /* mean 4 * 32767.5, variance 4 * (65536^2 - 1) / 12 */
    return ((float)sum - 131070.0f) * (1.0f / 37837.23f);
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* value = offset + std * N(0, 1) per tensor kind (synthetic.h). */
static void dist(const cv_tensor *t, float *offset, float *std) {
    const char *n = t->name;
    float fan = sqrtf((float)t->ne[0]);
    *offset = 0.0f;
    if (t->fam == CV_FAM_VECTOR) {
        if (ends_with(n, "norm.weight")) *offset = 1.0f, *std = 0.05f;
        else if (strstr(n, "_scale.weight")) *offset = 0.1f, *std = 0.0f;
        else if (strstr(n, "_base.weight")) *std = 0.1f;
        else if (strstr(n, "attn_sinks")) *std = 0.5f;
        else *std = 0.01f; /* router bias */
    } else if (t->fam == CV_FAM_EMBED) {
        *std = 1.0f;
    } else if (strstr(n, "hc_") && ends_with(n, "_fn.weight")) {
        *std = 0.1f / fan;
    } else if (strstr(n, "_ape.weight")) {
        *std = 0.1f;
    } else {
        *std = 1.0f / fan;
    }
}

static ds4_status synth_rows(void *ctx, const cv_tensor *t, uint32_t expert, uint64_t row0,
                             uint64_t n_rows, float *dst, ds4_error *err) {
    (void)err;
    cv_synth *sy = ctx;
    float off, sd;
    dist(t, &off, &sd);
    for (uint64_t r = 0; r < n_rows; r++) {
        uint64_t st = row_state(sy, t, expert, row0 + r);
        float *d = dst + r * t->ne[0];
        for (uint64_t c = 0; c < t->ne[0]; c++) d[c] = sd > 0 ? off + sd * normal(&st) : off;
    }
    __atomic_fetch_add(&sy->bytes, n_rows * t->ne[0] * 4, __ATOMIC_RELAXED);
    return DS4_OK;
}

static ds4_status synth_table(void *ctx, const cv_tensor *t, int32_t *dst, ds4_error *err) {
    cv_synth *sy = ctx;
    uint64_t k = t->ne[0];
    uint32_t n_exp = 0;
    /* The expert count is the router's output width in the same layer. */
    for (uint64_t i = 0; i < sy->plan->n; i++)
        if (sy->plan->t[i].layer == t->layer && sy->plan->t[i].fam == CV_FAM_GATE)
            n_exp = (uint32_t)sy->plan->t[i].ne[2];
    if (n_exp < k)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "synthetic: %s needs %llu experts, layer has %u",
                          t->name, (unsigned long long)k, n_exp);
    for (uint64_t tok = 0; tok < t->ne[1]; tok++) {
        uint64_t st = row_state(sy, t, 0, tok);
        int32_t *d = dst + tok * k;
        for (uint64_t j = 0; j < k; j++) {
            int32_t e;
            bool dup;
            do {
                e = (int32_t)(splitmix(&st) % n_exp);
                dup = false;
                for (uint64_t q = 0; q < j; q++) dup |= d[q] == e;
            } while (dup);
            d[j] = e;
        }
    }
    return DS4_OK;
}

static uint64_t synth_bytes(void *ctx) {
    cv_synth *sy = ctx;
    return __atomic_load_n(&sy->bytes, __ATOMIC_RELAXED);
}

ds4_status cv_synth_create(cv_synth **out, const cv_plan *plan, uint64_t seed, ds4_error *err) {
    cv_synth *sy = calloc(1, sizeof *sy);
    if (!sy) return ds4_seterr(err, DS4_ERR_NOMEM, "synthetic: out of memory");
    sy->plan = plan;
    sy->seed = seed;
    *out = sy;
    return DS4_OK;
}

void cv_synth_free(cv_synth *sy) { free(sy); }

void cv_synth_source(cv_synth *sy, cv_source *src) {
    memset(src, 0, sizeof *src);
    src->ctx = sy;
    src->read_rows = synth_rows;
    src->read_table = synth_table;
    src->bytes_read = synth_bytes;
}
