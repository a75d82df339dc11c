/*
 * model/sampling.c — turning logits into a token: greedy, temperature, top-k, top-p, min-p,
 * repetition / presence / frequency penalties, and a seeded PRNG of our own (never rand()), so a
 * seed reproduces a generation on any platform. Also top-k log-probabilities of a logit vector.
 * Never touches the model: it only reads the float array it is given.
 *
 * Invariants:
 *  1. Candidates are ordered by (logit desc, id asc) — a total order, so every sort and every
 *     filter result is independent of qsort's instability.
 *  2. Probabilities are computed in double from (l - l_max) / T, so the best token has p = 1
 *     exactly and min-p compares against it without a normalising sum (SERVER_CLI §3.2.3).
 *     The exp is smp_exp (model/smp_exp.h), not libm's: the device sampler (cuda/sample_dev.cu)
 *     computes the same bits, so the two draw the same token (issue #7).
 *  3. The draw walks the kept set in a fixed order and always returns a kept token (a u that
 *     rounds past the last cumulative bound takes the last kept token).
 *  4. The cumulative probabilities (top-p mass and cut, total, draw) are sums by blocks of
 *     SMP_SUM_BLOCK candidates (running_sums): a block's own sum in order, plus the sum of the
 *     blocks before it. Blocks are of positions in the sorted order, or of token ids when the
 *     set stays in id order (top_k 0, top_p 1), so the device sampler sums a whole vocabulary's
 *     blocks in parallel and gets the same doubles (cuda/sample_dev.cu).
 */
#include "model/sampling.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "model/smp_exp.h"

/* ---- PRNG ---------------------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void smp_rng_seed(smp_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t smp_rng_next(smp_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double smp_rng_uniform(smp_rng *r) { return (double)(smp_rng_next(r) >> 11) * 0x1.0p-53; }

/* ---- Candidate ordering and top-k ----------------------------------------------------------- */

/* a ranks before b (invariant 1). */
static inline int cand_before(smp_cand a, smp_cand b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

static int cand_cmp(const void *pa, const void *pb) {
    smp_cand a = *(const smp_cand *)pa, b = *(const smp_cand *)pb;
    if (cand_before(a, b)) return -1;
    if (cand_before(b, a)) return 1;
    return 0;
}

/* Min-heap on rank: the root is the worst of the kept k, replaced when a better one arrives. */
static void heap_sift_down(smp_cand *h, uint32_t n, uint32_t i) {
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && cand_before(h[w], h[l])) w = l;
        if (r < n && cand_before(h[w], h[r])) w = r;
        if (w == i) return;
        smp_cand t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

static void heap_sift_up(smp_cand *h, uint32_t i) {
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (!cand_before(h[p], h[i])) return;
        smp_cand t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
    }
}

uint32_t smp_top_k(const float *logits, uint32_t n, uint32_t k, smp_cand *out) {
    uint32_t m = 0;
    if (k == 0) return 0;
    for (uint32_t i = 0; i < n; i++) {
        float l = logits[i];
        if (!isfinite(l)) continue;
        smp_cand c = {(int32_t)i, l};
        if (m < k) {
            out[m] = c;
            heap_sift_up(out, m);
            m++;
        } else if (cand_before(c, out[0])) {
            out[0] = c;
            heap_sift_down(out, m, 0);
        }
    }
    qsort(out, m, sizeof *out, cand_cmp);
    return m;
}

int32_t ds4_argmax(const float *logits, uint32_t n_vocab) {
    int32_t best = -1;
    for (uint32_t i = 0; i < n_vocab; i++) {
        if (!isfinite(logits[i])) continue;
        if (best < 0 || logits[i] > logits[best]) best = (int32_t)i;
    }
    return best;
}

ds4_status ds4_logits_top_logprobs(const float *logits, uint32_t n_vocab, uint32_t k,
                                   ds4_token_logprob *out, uint32_t *n_out, ds4_error *err) {
    if (!logits || !out || !n_out || n_vocab == 0)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "top_logprobs: NULL argument or empty vocab");
    *n_out = 0;
    if (k > n_vocab) k = n_vocab;
    int32_t imax = ds4_argmax(logits, n_vocab);
    if (imax < 0) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "top_logprobs: no finite logit");
    double lmax = logits[imax], sum = 0.0;
    for (uint32_t i = 0; i < n_vocab; i++)
        if (isfinite(logits[i])) sum += exp((double)logits[i] - lmax);
    double lse = lmax + log(sum);
    smp_cand *c = malloc((size_t)(k ? k : 1) * sizeof *c);
    if (!c) return ds4_seterr(err, DS4_ERR_NOMEM, "top_logprobs: cannot allocate %u candidates", k);
    uint32_t m = smp_top_k(logits, n_vocab, k, c);
    for (uint32_t i = 0; i < m; i++) {
        out[i].token = c[i].id;
        out[i].logprob = (float)((double)c[i].logit - lse);
    }
    free(c);
    *n_out = m;
    return DS4_OK;
}

/* ---- Sampler --------------------------------------------------------------------------------- */

struct ds4_sampler {
    ds4_sampling_params p;
    uint32_t n_vocab;
    smp_rng rng;
    int32_t *hist;        /* ring of the last repeat_last_n accepted tokens */
    uint32_t hist_len, hist_head;
    uint32_t *counts;     /* scratch: occurrences per token in the ring (n_vocab) */
    float *work;          /* scratch: penalised logits (n_vocab) */
    smp_cand *cand;       /* scratch: candidates (n_vocab) */
    double *prob;         /* scratch: relative probabilities of candidates (n_vocab) */
    int32_t *pen_tok;     /* scratch of smp_plan_next: distinct history tokens (repeat_last_n) */
    uint32_t *pen_count;  /* and their counts */
};

void ds4_sampling_params_init(ds4_sampling_params *p) {
    memset(p, 0, sizeof *p);
    p->temperature = 1.0f;
    p->top_k = 0;
    p->top_p = 1.0f;
    p->min_p = 0.05f;
    p->seed = 0;
    p->repeat_penalty = 1.0f;
    p->repeat_last_n = 64;
}

static bool penalties_on(const ds4_sampling_params *p) {
    return p->repeat_last_n > 0 &&
           (p->repeat_penalty != 1.0f || p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f);
}

ds4_status ds4_sampler_create(ds4_sampler **out, const ds4_sampling_params *p, uint32_t n_vocab,
                              ds4_error *err) {
    if (!out || !p) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "sampler: NULL argument");
    *out = NULL;
    if (n_vocab == 0 || n_vocab > (1u << 30))
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "sampler: vocabulary size %u out of range", n_vocab);
    if (!isfinite(p->temperature) || p->temperature < 0.0f)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "sampler: temperature %g must be finite and >= 0",
                          (double)p->temperature);
    if (!isfinite(p->top_p) || p->top_p <= 0.0f || p->top_p > 1.0f)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "sampler: top_p %g must be in (0, 1]",
                          (double)p->top_p);
    if (!isfinite(p->min_p) || p->min_p < 0.0f || p->min_p > 1.0f)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "sampler: min_p %g must be in [0, 1]",
                          (double)p->min_p);
    if (!isfinite(p->repeat_penalty) || p->repeat_penalty <= 0.0f)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "sampler: repeat_penalty %g must be > 0",
                          (double)p->repeat_penalty);
    if (!isfinite(p->presence_penalty) || !isfinite(p->frequency_penalty))
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "sampler: presence/frequency penalty not finite");
    if (p->repeat_last_n > (1u << 24))
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "sampler: repeat_last_n %u too large",
                          p->repeat_last_n);
    ds4_sampler *s = calloc(1, sizeof *s);
    if (!s) goto out_nomem;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->cand = malloc((size_t)n_vocab * sizeof *s->cand);
    s->prob = malloc((size_t)n_vocab * sizeof *s->prob);
    if (!s->cand || !s->prob) goto out_free_sampler;
    if (penalties_on(p)) {
        s->hist = malloc((size_t)p->repeat_last_n * sizeof *s->hist);
        s->counts = calloc(n_vocab, sizeof *s->counts);
        s->work = malloc((size_t)n_vocab * sizeof *s->work);
        s->pen_tok = malloc((size_t)p->repeat_last_n * sizeof *s->pen_tok);
        s->pen_count = malloc((size_t)p->repeat_last_n * sizeof *s->pen_count);
        if (!s->hist || !s->counts || !s->work || !s->pen_tok || !s->pen_count) goto out_free_sampler;
    }
    smp_rng_seed(&s->rng, p->seed);
    *out = s;
    return DS4_OK;
out_free_sampler:
    ds4_sampler_free(s);
out_nomem:
    return ds4_seterr(err, DS4_ERR_NOMEM, "sampler: cannot allocate scratch for %u tokens", n_vocab);
}

void ds4_sampler_free(ds4_sampler *s) {
    if (!s) return;
    free(s->hist);
    free(s->counts);
    free(s->work);
    free(s->cand);
    free(s->prob);
    free(s->pen_tok);
    free(s->pen_count);
    free(s);
}

void ds4_sampler_reset(ds4_sampler *s, uint64_t seed) {
    if (!s) return;
    s->hist_len = s->hist_head = 0;
    smp_rng_seed(&s->rng, seed);
}

void ds4_sampler_accept(ds4_sampler *s, int32_t token) {
    if (!s || !s->hist || token < 0 || (uint32_t)token >= s->n_vocab) return;
    uint32_t cap = s->p.repeat_last_n;
    s->hist[s->hist_head] = token;
    s->hist_head = (s->hist_head + 1) % cap;
    if (s->hist_len < cap) s->hist_len++;
}

/* Returns logits with the penalties applied (s->work) or the input when none apply. */
static const float *apply_penalties(ds4_sampler *s, const float *logits) {
    if (!s->hist || s->hist_len == 0) return logits;
    memcpy(s->work, logits, (size_t)s->n_vocab * sizeof *logits);
    for (uint32_t i = 0; i < s->hist_len; i++) s->counts[s->hist[i]]++;
    for (uint32_t i = 0; i < s->hist_len; i++) {
        int32_t t = s->hist[i];
        uint32_t c = s->counts[t];
        if (c == 0) continue; /* already applied for this token */
        float l = s->work[t];
        if (s->p.repeat_penalty != 1.0f) l = l > 0 ? l / s->p.repeat_penalty : l * s->p.repeat_penalty;
        l -= s->p.presence_penalty + (float)c * s->p.frequency_penalty;
        s->work[t] = l;
        s->counts[t] = 0;
    }
    return s->work;
}

/* Invariant 4: p[i] := acc(i) = P_b + s_b(i), b = i's block (by position in sorted order, else
 * by token id), P_b the sum of the blocks before it, s_b(i) the sum of b's members up to i;
 * every sum in double, in list order. */
static void running_sums(const smp_cand *c, double *p, uint32_t n, bool by_pos) {
    double before = 0.0, in = 0.0;
    uint32_t cur = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t b = by_pos ? i / SMP_SUM_BLOCK : (uint32_t)c[i].id / SMP_SUM_BLOCK;
        if (b != cur) { /* the blocks between hold nothing: adding their 0.0 changes nothing */
            before += in;
            in = 0.0;
            cur = b;
        }
        in += p[i];
        p[i] = before + in;
    }
}

ds4_status ds4_sampler_sample(ds4_sampler *s, const float *logits, int32_t *out_token,
                              ds4_error *err) {
    if (!s || !logits || !out_token) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "sample: NULL argument");
    const float *l = apply_penalties(s, logits);
    uint32_t n = s->n_vocab;
    if (s->p.temperature <= 0.0f || s->p.top_k == 1) {
        int32_t t = ds4_argmax(l, n);
        if (t < 0) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "sample: no finite logit");
        *out_token = t;
        return DS4_OK;
    }
    /* Candidate set: top-k sorted best first, or every finite logit in id order. */
    uint32_t m = 0;
    bool sorted = false;
    if (s->p.top_k > 0 && (uint32_t)s->p.top_k < n) {
        m = smp_top_k(l, n, (uint32_t)s->p.top_k, s->cand);
        sorted = true;
    } else {
        for (uint32_t i = 0; i < n; i++)
            if (isfinite(l[i])) s->cand[m++] = (smp_cand){(int32_t)i, l[i]};
    }
    if (m == 0) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "sample: no finite logit");
    float lmax = s->cand[0].logit;
    for (uint32_t i = 1; i < m; i++)
        if (s->cand[i].logit > lmax) lmax = s->cand[i].logit;
    double inv_t = 1.0 / (double)s->p.temperature;
    /* p >= min_p needs x >= ln(min_p); below x_cut (1e-9 under it, far more than smp_exp's
     * ~1e-15 relative error) p < min_p for certain, so the exp is skipped: the same kept set,
     * without an exp per token of the vocabulary. */
    double x_cut = s->p.min_p > 0.0f ? log((double)s->p.min_p) - 1e-9 : -INFINITY;
    /* min-p against p_best = 1 (invariant 2); compacts cand/prob in place, order kept. */
    uint32_t kept = 0;
    for (uint32_t i = 0; i < m; i++) {
        double x = ((double)s->cand[i].logit - (double)lmax) * inv_t;
        if (x < x_cut) continue;
        double p = smp_exp(x);
        if (p < (double)s->p.min_p) continue;
        s->cand[kept] = s->cand[i];
        s->prob[kept] = p;
        kept++;
    }
    /* kept >= 1: the best token has p = 1 >= min_p. */
    if (s->p.top_p < 1.0f && !sorted) {
        qsort(s->cand, kept, sizeof *s->cand, cand_cmp);
        for (uint32_t i = 0; i < kept; i++)
            s->prob[i] = smp_exp(((double)s->cand[i].logit - (double)lmax) * inv_t);
        sorted = true;
    }
    running_sums(s->cand, s->prob, kept, sorted); /* prob[i] := acc(i), invariant 4 */
    if (s->p.top_p < 1.0f) {
        double want = (double)s->p.top_p * s->prob[kept - 1];
        for (uint32_t i = 0; i < kept; i++)
            if (s->prob[i] >= want) {
                kept = i + 1;
                break;
            }
    }
    double u = smp_rng_uniform(&s->rng) * s->prob[kept - 1];
    int32_t pick = s->cand[kept - 1].id; /* invariant 3 */
    for (uint32_t i = 0; i < kept; i++)
        if (u < s->prob[i]) {
            pick = s->cand[i].id;
            break;
        }
    *out_token = pick;
    return DS4_OK;
}

/* ---- The same draw as data (smp_plan, for the device sampler) ------------------------------- */

void smp_plan_next(ds4_sampler *s, smp_plan *out) {
    memset(out, 0, sizeof *out);
    out->n_vocab = s->n_vocab;
    out->greedy = s->p.temperature <= 0.0f || s->p.top_k == 1;
    out->top_k = s->p.top_k > 0 && (uint32_t)s->p.top_k < s->n_vocab ? (uint32_t)s->p.top_k : 0;
    out->inv_t = out->greedy ? 0.0 : 1.0 / (double)s->p.temperature;
    out->min_p = (double)s->p.min_p;
    out->top_p = (double)s->p.top_p;
    out->top_p_on = s->p.top_p < 1.0f;
    out->repeat_penalty = s->p.repeat_penalty;
    out->presence_penalty = s->p.presence_penalty;
    out->frequency_penalty = s->p.frequency_penalty;
    /* apply_penalties' (token, count) pairs: each distinct token once, with its count */
    if (s->hist && s->hist_len > 0) {
        for (uint32_t i = 0; i < s->hist_len; i++) s->counts[s->hist[i]]++;
        for (uint32_t i = 0; i < s->hist_len; i++) {
            int32_t t = s->hist[i];
            if (s->counts[t] == 0) continue;
            s->pen_tok[out->n_pen] = t;
            s->pen_count[out->n_pen] = s->counts[t];
            out->n_pen++;
            s->counts[t] = 0;
        }
    }
    out->pen_tok = s->pen_tok;
    out->pen_count = s->pen_count;
    out->saved = s->rng;
    if (!out->greedy) out->u = smp_rng_uniform(&s->rng);
}

void smp_plan_undo(ds4_sampler *s, const smp_plan *p) { s->rng = p->saved; }

uint32_t smp_sampler_n_vocab(const ds4_sampler *s) { return s ? s->n_vocab : 0; }
