/*
 * model/session.c — the public session: an exact token list over a model_state, prefix-reusing
 * sync, rewind through one checkpoint, logits and log-probabilities, snapshots to memory and
 * files. Runs the model only through model_eval; owns no numerics.
 *
 * Invariants:
 *  1. n_tokens == model_state_pos(st); tokens[0..n_tokens) are exactly what the state has seen.
 *  2. has_logits ⇔ n_tokens > 0, and logits are those after tokens[n_tokens-1]. A failed eval
 *     breaks (1) or (2), so every failure after the state was touched empties the session.
 *  3. The checkpoint (if any) is a self-contained copy: its tokens, logits and model payload.
 *     It stays valid whatever the live stream does afterwards.
 *  4. Reaching a target (sync, rewind) picks the start that keeps the most work: the live state
 *     when it is a prefix of the target, the checkpoint when it is, else position 0 — then
 *     evaluates the remainder in prefill chunks (MODEL_MATH §7.4: chunking never changes results).
 *  5. Backend "cuda" (issue #7): after a one-token eval (a decode step) the current logits stay
 *     on the device (logits_dev; the head not even run yet: head_pending) until something needs
 *     them on the host (ds4_session_logits, checkpoint, snapshot); ds4_session_sample draws
 *     there and downloads only the token id. DS4_CUDA_SAMPLE=0 turns this off (logits
 *     downloaded after every eval, sampling on the host), for comparisons.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/mapfile.h"
#include "model/engine.h"
#include "model/sampling.h"
#include "model/snapshot.h"
#ifdef DS4_CUDA
#include "cuda/model_cuda.h"
#include "cuda/sample_dev.h"
#endif

#define SESSION_DEFAULT_CHUNK 256u
/* The GPU prefills a chunk as batched matmuls (cuda/forward_chunk.c): the routed experts see
 * ~6·chunk/256 rows each, so small chunks starve the tensor cores (docs/BENCHMARKS.md). */
#define SESSION_GPU_CHUNK 2048u
#define PAYLOAD_VERSION 1u   /* model_state_serialize layout as of model.h v1 */

typedef struct checkpoint {
    bool valid;
    uint32_t n_tokens;
    int32_t *tokens;         /* n_ctx capacity */
    float *logits;           /* n_vocab */
    uint8_t *payload;
    size_t payload_bytes, payload_cap;
} checkpoint;

struct ds4_session {
    ds4_engine *eng;
    model_state *st;
    uint32_t n_ctx, n_vocab, chunk;
    int32_t *tokens;         /* n_ctx capacity */
    uint32_t n_tokens;
    float *logits;           /* n_vocab */
    bool has_logits;
    checkpoint ck;
    const model_capture *capture;
    /* Backend "cuda": the device twin of st (st keeps the position and stages snapshots). */
    struct cuda_state *gst;
    bool dev_sample;         /* invariant 5 on (backend cuda, DS4_CUDA_SAMPLE not 0) */
    bool logits_dev;         /* invariant 5: s->logits stale, the current ones on the device */
    bool head_pending;       /* ... and not computed yet */
    struct cuda_sampler *dsmp; /* device scratch of ds4_session_sample, NULL until used */
};

/* Backend glue (issue #7): with the GPU model, evals run on the device state; the host state
 * is brought up to date before it is serialized and marked changed after reset / restore. */
static ds4_status state_eval(ds4_session *s, const int32_t *tokens, uint32_t n,
                             const model_eval_opts *o, ds4_error *err) {
#ifdef DS4_CUDA
    if (s->gst) return cuda_model_eval(s->eng->cuda, s->gst, tokens, n, o, err);
#endif
    return model_eval(s->eng->model, s->st, tokens, n, o, err);
}

static ds4_status state_serialize(const ds4_session *s, void *buf, size_t n_bytes, ds4_error *err) {
#ifdef DS4_CUDA
    ds4_status st;
    if (s->gst && (st = cuda_state_sync_host(s->gst, err)) != DS4_OK) return st;
#endif
    return model_state_serialize(s->st, buf, n_bytes, err);
}

static void state_host_changed(ds4_session *s) {
#ifdef DS4_CUDA
    if (s->gst) cuda_state_host_changed(s->gst);
#else
    (void)s;
#endif
}

/* ---- Lifetime ---------------------------------------------------------------------------- */

ds4_status ds4_session_create(ds4_session **out, ds4_engine *e, uint32_t n_ctx, ds4_error *err) {
    if (!out || !e) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "session_create: NULL argument");
    *out = NULL;
    if (n_ctx == 0 || n_ctx > e->info.n_ctx_max)
        return ds4_seterr(err, DS4_ERR_RANGE, "session_create: context %u outside [1, %u]", n_ctx,
                          e->info.n_ctx_max);
    ds4_session *s = calloc(1, sizeof *s);
    if (!s) goto out_nomem;
    s->eng = e;
    s->n_ctx = n_ctx;
    s->n_vocab = e->info.n_vocab;
    s->chunk = SESSION_DEFAULT_CHUNK;
    s->tokens = malloc((size_t)n_ctx * sizeof *s->tokens);
    s->logits = malloc((size_t)s->n_vocab * sizeof *s->logits);
    if (!s->tokens || !s->logits) goto out_free_session;
    ds4_status st = model_state_create(&s->st, e->model, n_ctx, err);
#ifdef DS4_CUDA
    if (st == DS4_OK && e->cuda) st = cuda_state_create(&s->gst, e->cuda, s->st, err);
    if (s->gst) s->chunk = SESSION_GPU_CHUNK;
    const char *ev = getenv("DS4_CUDA_SAMPLE");
    s->dev_sample = s->gst && !(ev && strcmp(ev, "0") == 0);
#endif
    if (st != DS4_OK) {
        ds4_session_free(s);
        return ds4_err_prefix(err, "session_create(%u tokens)", n_ctx);
    }
    *out = s;
    return DS4_OK;
out_free_session:
    ds4_session_free(s);
out_nomem:
    return ds4_seterr(err, DS4_ERR_NOMEM, "session_create: cannot allocate %u tokens", n_ctx);
}

static void checkpoint_free(checkpoint *c) {
    free(c->tokens);
    free(c->logits);
    free(c->payload);
    memset(c, 0, sizeof *c);
}

void ds4_session_free(ds4_session *s) {
    if (!s) return;
#ifdef DS4_CUDA
    cuda_sampler_free(s->dsmp);
    cuda_state_free(s->gst);
#endif
    model_state_free(s->st);
    checkpoint_free(&s->ck);
    free(s->tokens);
    free(s->logits);
    free(s);
}

void ds4_session_reset(ds4_session *s) {
    if (!s) return;
    model_state_reset(s->st);
    state_host_changed(s);
    s->n_tokens = 0;
    s->has_logits = false;
    s->logits_dev = s->head_pending = false;
}

ds4_status ds4_session_set_prefill_chunk(ds4_session *s, uint32_t n_tokens, ds4_error *err) {
    if (!s) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "set_prefill_chunk: NULL session");
    if (n_tokens == 0 || n_tokens > 65536)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "set_prefill_chunk: %u outside [1, 65536]", n_tokens);
    s->chunk = n_tokens;
    return DS4_OK;
}

uint32_t ds4_session_prefill_chunk(const ds4_session *s) { return s ? s->chunk : 0; }

void ds4_session_set_capture(ds4_session *s, const model_capture *cap) {
    if (s) s->capture = cap;
}

uint32_t ds4_session_pos(const ds4_session *s) { return s ? s->n_tokens : 0; }
uint32_t ds4_session_ctx(const ds4_session *s) { return s ? s->n_ctx : 0; }

const int32_t *ds4_session_tokens(const ds4_session *s, uint32_t *n_tokens) {
    if (n_tokens) *n_tokens = s ? s->n_tokens : 0;
    return s ? s->tokens : NULL;
}

/* ---- Evaluation -------------------------------------------------------------------------- */

static ds4_status check_tokens(const ds4_session *s, const int32_t *tokens, uint32_t n,
                               const char *what, ds4_error *err) {
    for (uint32_t i = 0; i < n; i++)
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= s->n_vocab)
            return ds4_seterr(err, DS4_ERR_INVALID_ARG, "%s: token %u is %d, outside the vocabulary [0, %u)",
                              what, i, tokens[i], s->n_vocab);
    return DS4_OK;
}

/* Appends tokens (already validated, room checked) in prefill chunks. Logits of every token go
 * to all_logits when non-NULL; the last token's always go to s->logits. Invariant 2 on failure. */
static ds4_status append(ds4_session *s, const int32_t *tokens, uint32_t n, float *all_logits,
                         float *hc_out, ds4_error *err) {
    const model_hparams *hp = model_get_hparams(s->eng->model);
    size_t hc_row = (size_t)(hp->n_hc * hp->n_embd);
    bool keep_dev = false;
    for (uint32_t done = 0; done < n;) {
        uint32_t c = n - done < s->chunk ? n - done : s->chunk;
        bool last = done + c == n;
        /* invariant 5: a decode step leaves its head to the device (one token: the decode path,
         * whose workspace holds the token's final state for the head) */
        keep_dev = s->dev_sample && last && c == 1 && !all_logits;
        model_eval_opts o = {0};
        o.capture = s->capture;
        if (hc_out) o.hc_out = hc_out + (size_t)done * hc_row;
        if (all_logits) {
            o.logits_mode = MODEL_LOGITS_ALL;
            o.logits = all_logits + (size_t)done * s->n_vocab;
        } else if (last && !keep_dev) {
            o.logits_mode = MODEL_LOGITS_LAST;
            o.logits = s->logits;
        } else {
            o.logits_mode = MODEL_LOGITS_NONE;
        }
        s->logits_dev = s->head_pending = false;
        pthread_mutex_lock(&s->eng->eval_mu);
        ds4_status st = state_eval(s, tokens + done, c, &o, err);
        pthread_mutex_unlock(&s->eng->eval_mu);
        if (st != DS4_OK) {
            uint32_t at = s->n_tokens;
            ds4_session_reset(s);
            return ds4_err_prefix(err, "eval of tokens %u..%u failed, session emptied", at, at + c - 1);
        }
        memcpy(s->tokens + s->n_tokens, tokens + done, (size_t)c * sizeof *tokens);
        s->n_tokens += c;
        s->has_logits = false;
        done += c;
    }
    if (all_logits && n)
        memcpy(s->logits, all_logits + (size_t)(n - 1) * s->n_vocab, (size_t)s->n_vocab * sizeof(float));
    s->has_logits = s->n_tokens > 0;
    if (n > 0) s->logits_dev = s->head_pending = keep_dev;
    return DS4_OK;
}

/* Invariant 5: brings the current logits to s->logits. Only the cache changes (the session's
 * observable state does not), hence callable from the const entry points. */
static ds4_status logits_to_host(ds4_session *s, ds4_error *err) {
    if (!s->logits_dev) return DS4_OK;
#ifdef DS4_CUDA
    pthread_mutex_lock(&s->eng->eval_mu);
    ds4_status st = cuda_state_logits(s->gst, s->head_pending, s->logits, err);
    pthread_mutex_unlock(&s->eng->eval_mu);
    if (st != DS4_OK) return ds4_err_prefix(err, "logits of position %u", s->n_tokens);
#else
    (void)err;
#endif
    s->logits_dev = s->head_pending = false;
    return DS4_OK;
}

static ds4_status room_for(const ds4_session *s, uint32_t n, const char *what, ds4_error *err) {
    if (n > s->n_ctx - s->n_tokens)
        return ds4_seterr(err, DS4_ERR_RANGE,
                          "%s: context overflow: %u tokens + %u new > context size %u", what,
                          s->n_tokens, n, s->n_ctx);
    return DS4_OK;
}

ds4_status ds4_session_eval(ds4_session *s, int32_t token, ds4_error *err) {
    if (!s) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "session_eval: NULL session");
    ds4_status st = check_tokens(s, &token, 1, "session_eval", err);
    if (st == DS4_OK) st = room_for(s, 1, "session_eval", err);
    return st != DS4_OK ? st : append(s, &token, 1, NULL, NULL, err);
}

ds4_status ds4_session_eval_tokens(ds4_session *s, const int32_t *tokens, uint32_t n_tokens,
                                   float *logits_out, ds4_error *err) {
    if (!s || (!tokens && n_tokens))
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "session_eval_tokens: NULL argument");
    ds4_status st = check_tokens(s, tokens, n_tokens, "session_eval_tokens", err);
    if (st == DS4_OK) st = room_for(s, n_tokens, "session_eval_tokens", err);
    return st != DS4_OK ? st : append(s, tokens, n_tokens, logits_out, NULL, err);
}

ds4_status ds4_session_eval_tokens_hc(ds4_session *s, const int32_t *tokens, uint32_t n_tokens,
                                      float *logits_out, float *hc_out, ds4_error *err) {
    if (!s || (!tokens && n_tokens))
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "session_eval_tokens: NULL argument");
    ds4_status st = check_tokens(s, tokens, n_tokens, "session_eval_tokens", err);
    if (st == DS4_OK) st = room_for(s, n_tokens, "session_eval_tokens", err);
    return st != DS4_OK ? st : append(s, tokens, n_tokens, logits_out, hc_out, err);
}

ds4_status ds4_session_eval_mtp(ds4_session *s, const float *hc_in, const int32_t *tokens, uint32_t n,
                                float *logits, ds4_error *err) {
    if (!s || !hc_in || !tokens || !logits)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "session_eval_mtp: NULL argument");
    ds4_status st = check_tokens(s, tokens, n, "session_eval_mtp", err);
    if (st != DS4_OK) return st;
    pthread_mutex_lock(&s->eng->eval_mu);
    st = model_eval_mtp(s->eng->model, s->st, hc_in, tokens, n, logits, NULL, err);
    pthread_mutex_unlock(&s->eng->eval_mu);
    return st;
}

/* ---- Checkpoint, sync, rewind ------------------------------------------------------------ */

ds4_status ds4_session_checkpoint(ds4_session *s, ds4_error *err) {
    if (!s) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "session_checkpoint: NULL session");
    checkpoint *c = &s->ck;
    size_t need = model_state_serialized_bytes(s->st);
    if (!c->tokens) {
        c->tokens = malloc((size_t)s->n_ctx * sizeof *c->tokens);
        c->logits = malloc((size_t)s->n_vocab * sizeof *c->logits);
        if (!c->tokens || !c->logits) goto out_nomem;
    }
    if (need > c->payload_cap) {
        uint8_t *p = realloc(c->payload, need);
        if (!p) goto out_nomem;
        c->payload = p;
        c->payload_cap = need;
    }
    c->valid = false;
    ds4_status st = logits_to_host(s, err);
    if (st == DS4_OK) st = state_serialize(s, c->payload, need, err);
    if (st != DS4_OK) return ds4_err_prefix(err, "session_checkpoint");
    c->payload_bytes = need;
    c->n_tokens = s->n_tokens;
    memcpy(c->tokens, s->tokens, (size_t)s->n_tokens * sizeof *s->tokens);
    if (s->has_logits) memcpy(c->logits, s->logits, (size_t)s->n_vocab * sizeof *s->logits);
    c->valid = true;
    return DS4_OK;
out_nomem:
    c->valid = false;
    return ds4_seterr(err, DS4_ERR_NOMEM, "session_checkpoint: cannot allocate %zu bytes", need);
}

static uint32_t common_prefix(const int32_t *a, uint32_t na, const int32_t *b, uint32_t nb) {
    uint32_t n = na < nb ? na : nb, i = 0;
    while (i < n && a[i] == b[i]) i++;
    return i;
}

static ds4_status restore_checkpoint(ds4_session *s, ds4_error *err) {
    checkpoint *c = &s->ck;
    ds4_status st = model_state_deserialize(s->st, c->payload, c->payload_bytes, err);
    state_host_changed(s);
    if (st != DS4_OK) {
        ds4_session_reset(s);
        return ds4_err_prefix(err, "restoring the rewind checkpoint failed, session emptied");
    }
    memcpy(s->tokens, c->tokens, (size_t)c->n_tokens * sizeof *s->tokens);
    s->n_tokens = c->n_tokens;
    memcpy(s->logits, c->logits, (size_t)s->n_vocab * sizeof *s->logits);
    s->has_logits = c->n_tokens > 0;
    s->logits_dev = s->head_pending = false;
    return DS4_OK;
}

/* Brings the session to target[0..n) (invariant 4). target may alias s->tokens. */
static ds4_status go_to(ds4_session *s, const int32_t *target, uint32_t n, ds4_sync_stats *stats,
                        ds4_error *err) {
    ds4_sync_stats local = {0};
    uint32_t live = common_prefix(s->tokens, s->n_tokens, target, n);
    bool live_ok = live == s->n_tokens;  /* live stream is a prefix of the target */
    bool ck_ok = s->ck.valid && s->ck.n_tokens <= n &&
                 common_prefix(s->ck.tokens, s->ck.n_tokens, target, n) == s->ck.n_tokens;
    ds4_status st;
    if (live_ok && (!ck_ok || s->ck.n_tokens <= s->n_tokens)) {
        local.n_reused = s->n_tokens;
    } else if (ck_ok && s->ck.n_tokens > 0) {
        st = restore_checkpoint(s, err);
        if (st != DS4_OK) return st;
        local.n_reused = s->ck.n_tokens;
        local.rebuilt = true;
    } else {
        local.rebuilt = s->n_tokens > 0;
        ds4_session_reset(s);
    }
    uint32_t from = s->n_tokens;
    local.n_evaluated = n - from;
    /* The suffix comes from target, which may be s->tokens itself (rewind): the region
     * [from, n) of it is read before append writes the same values over it. */
    if (n > from) {
        int32_t *suffix = malloc((size_t)(n - from) * sizeof *suffix);
        if (!suffix) return ds4_seterr(err, DS4_ERR_NOMEM, "sync: cannot allocate %u tokens", n - from);
        memcpy(suffix, target + from, (size_t)(n - from) * sizeof *suffix);
        st = append(s, suffix, n - from, NULL, NULL, err);
        free(suffix);
        if (st != DS4_OK) return st;
    }
    if (stats) *stats = local;
    return DS4_OK;
}

ds4_status ds4_session_sync(ds4_session *s, const int32_t *tokens, uint32_t n_tokens,
                            ds4_sync_stats *stats, ds4_error *err) {
    if (!s || !tokens) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "session_sync: NULL argument");
    if (n_tokens == 0) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "session_sync: empty target");
    if (n_tokens > s->n_ctx)
        return ds4_seterr(err, DS4_ERR_RANGE, "session_sync: context overflow: %u tokens > context size %u",
                          n_tokens, s->n_ctx);
    ds4_status st = check_tokens(s, tokens, n_tokens, "session_sync", err);
    return st != DS4_OK ? st : go_to(s, tokens, n_tokens, stats, err);
}

ds4_status ds4_session_rewind(ds4_session *s, uint32_t pos, ds4_sync_stats *stats, ds4_error *err) {
    if (!s) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "session_rewind: NULL session");
    if (pos > s->n_tokens)
        return ds4_seterr(err, DS4_ERR_RANGE, "session_rewind: position %u is past the stream end %u", pos,
                          s->n_tokens);
    if (pos == 0) {
        bool had = s->n_tokens > 0;
        ds4_session_reset(s);
        if (stats) *stats = (ds4_sync_stats){.n_reused = 0, .n_evaluated = 0, .rebuilt = had};
        return DS4_OK;
    }
    if (pos == s->n_tokens) {
        if (stats) *stats = (ds4_sync_stats){.n_reused = pos};
        return DS4_OK;
    }
    /* The target live[0..pos) is shorter than the live stream, so go_to cannot keep the live
     * state: it restores the checkpoint (if at or before pos) or starts over. */
    int32_t *target = malloc((size_t)pos * sizeof *target);
    if (!target) return ds4_seterr(err, DS4_ERR_NOMEM, "session_rewind: cannot allocate %u tokens", pos);
    memcpy(target, s->tokens, (size_t)pos * sizeof *target);
    ds4_status st = go_to(s, target, pos, stats, err);
    free(target);
    return st;
}

/* ---- Logits ------------------------------------------------------------------------------ */

ds4_status ds4_session_logits(const ds4_session *s, const float **out, ds4_error *err) {
    if (!s || !out) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "session_logits: NULL argument");
    *out = NULL;
    if (!s->has_logits)
        return ds4_seterr(err, DS4_ERR_STATE, "session_logits: no token evaluated yet (session is empty)");
    ds4_status st = logits_to_host((ds4_session *)s, err);
    if (st != DS4_OK) return st;
    *out = s->logits;
    return DS4_OK;
}

ds4_status ds4_session_sample(ds4_session *s, ds4_sampler *smp, int32_t *out_token, ds4_error *err) {
    if (!s || !smp || !out_token) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "session_sample: NULL argument");
    if (!s->has_logits)
        return ds4_seterr(err, DS4_ERR_STATE, "session_sample: no token evaluated yet (session is empty)");
    if (smp_sampler_n_vocab(smp) != s->n_vocab)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "session_sample: sampler for %u tokens, model has %u",
                          smp_sampler_n_vocab(smp), s->n_vocab);
#ifdef DS4_CUDA
    if (s->logits_dev) {
        bool on_host = false;
        pthread_mutex_lock(&s->eng->eval_mu);
        ds4_status st = cuda_state_sample(s->gst, &s->dsmp, smp, s->head_pending, s->logits, &on_host,
                                          out_token, err);
        pthread_mutex_unlock(&s->eng->eval_mu);
        if (st != DS4_OK) return ds4_err_prefix(err, "session_sample at position %u", s->n_tokens);
        s->head_pending = false;
        if (on_host) s->logits_dev = false;
        return DS4_OK;
    }
#endif
    return ds4_sampler_sample(smp, s->logits, out_token, err);
}

ds4_status ds4_session_top_logprobs(const ds4_session *s, uint32_t k, ds4_token_logprob *out,
                                    uint32_t *n_out, ds4_error *err) {
    const float *l;
    ds4_status st = ds4_session_logits(s, &l, err);
    if (st != DS4_OK) return st;
    return ds4_logits_top_logprobs(l, s->n_vocab, k, out, n_out, err);
}

/* ---- Snapshots --------------------------------------------------------------------------- */

static void fill_meta(const ds4_session *s, snap_meta *m) {
    memset(m, 0, sizeof *m);
    memcpy(m->model_id, s->eng->info.model_id, 32);
    m->n_ctx = s->n_ctx;
    m->n_tokens = s->n_tokens;
    m->n_vocab = s->has_logits ? s->n_vocab : 0;
    m->payload_version = PAYLOAD_VERSION;
    m->payload_bytes = model_state_serialized_bytes(s->st);
}

ds4_status ds4_session_snapshot_bytes(const ds4_session *s, uint64_t *out_bytes, ds4_error *err) {
    if (!s || !out_bytes) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "snapshot_bytes: NULL argument");
    snap_meta m;
    fill_meta(s, &m);
    return snap_total_bytes(&m, out_bytes, err);
}

ds4_status ds4_session_snapshot(const ds4_session *s, uint8_t **out, uint64_t *out_bytes, ds4_error *err) {
    if (!s || !out || !out_bytes) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "snapshot: NULL argument");
    *out = NULL;
    *out_bytes = 0;
    snap_meta m;
    fill_meta(s, &m);
    uint64_t total;
    ds4_status st = snap_total_bytes(&m, &total, err);
    if (st != DS4_OK) return st;
    if (total > SIZE_MAX) return ds4_seterr(err, DS4_ERR_NOMEM, "snapshot: %llu bytes", (unsigned long long)total);
    uint8_t *buf = malloc((size_t)total);
    if (!buf)
        return ds4_seterr(err, DS4_ERR_NOMEM, "snapshot: cannot allocate %llu bytes", (unsigned long long)total);
    uint8_t *payload;
    st = logits_to_host((ds4_session *)s, err);
    if (st == DS4_OK)
        st = snap_write_head(buf, total, &m, s->tokens, s->has_logits ? s->logits : NULL, &payload, err);
    if (st == DS4_OK) st = state_serialize(s, payload, (size_t)m.payload_bytes, err);
    if (st != DS4_OK) {
        free(buf);
        return ds4_err_prefix(err, "snapshot");
    }
    snap_seal(buf, total);
    *out = buf;
    *out_bytes = total;
    return DS4_OK;
}

ds4_status ds4_session_restore(ds4_session *s, const uint8_t *buf, uint64_t n_bytes, ds4_error *err) {
    if (!s || !buf) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "restore: NULL argument");
    snap_view v;
    ds4_status st = snap_parse(&v, buf, n_bytes, err);
    if (st != DS4_OK) return st;
    const uint8_t *id = s->eng->info.model_id;
    if (memcmp(v.meta.model_id, id, 32) != 0) {
        char a[17], b[17];
        snap_id_hex(v.meta.model_id, 8, a);
        snap_id_hex(id, 8, b);
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED,
                          "restore: snapshot is from another model (model id %s…, this model %s…)", a, b);
    }
    if (v.meta.payload_version != PAYLOAD_VERSION)
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED, "restore: engine payload version %u, this build reads %u",
                          v.meta.payload_version, PAYLOAD_VERSION);
    if (v.meta.n_tokens > s->n_ctx)
        return ds4_seterr(err, DS4_ERR_RANGE, "restore: snapshot holds %u tokens, session context is %u",
                          v.meta.n_tokens, s->n_ctx);
    if (v.meta.n_vocab != (v.meta.n_tokens ? s->n_vocab : 0))
        return ds4_seterr(err, DS4_ERR_FORMAT, "restore: snapshot of %u tokens has %u logits, expected %u",
                          v.meta.n_tokens, v.meta.n_vocab, v.meta.n_tokens ? s->n_vocab : 0);
    for (uint32_t i = 0; i < v.meta.n_tokens; i++) {
        int32_t t = snap_token(&v, i);
        if (t < 0 || (uint32_t)t >= s->n_vocab)
            return ds4_seterr(err, DS4_ERR_FORMAT, "restore: token %u is %d, outside the vocabulary [0, %u)", i,
                              t, s->n_vocab);
    }
    if (v.meta.payload_bytes > SIZE_MAX)
        return ds4_seterr(err, DS4_ERR_FORMAT, "restore: payload of %llu bytes",
                          (unsigned long long)v.meta.payload_bytes);
    /* Past this point the state is overwritten: a payload the model refuses empties it. */
    st = model_state_deserialize(s->st, v.payload, (size_t)v.meta.payload_bytes, err);
    state_host_changed(s);
    if (st == DS4_OK && model_state_pos(s->st) != (int64_t)v.meta.n_tokens)
        st = ds4_seterr(err, DS4_ERR_FORMAT, "restore: payload is at position %lld, snapshot has %u tokens",
                        (long long)model_state_pos(s->st), v.meta.n_tokens);
    if (st != DS4_OK) {
        ds4_session_reset(s);
        return ds4_err_prefix(err, "restore (session emptied)");
    }
    for (uint32_t i = 0; i < v.meta.n_tokens; i++) s->tokens[i] = snap_token(&v, i);
    s->n_tokens = v.meta.n_tokens;
    if (v.meta.n_vocab) snap_copy_logits(&v, s->logits);
    s->has_logits = s->n_tokens > 0;
    s->logits_dev = s->head_pending = false;
    return DS4_OK;
}

static ds4_status write_all(int fd, const uint8_t *p, uint64_t n, const char *path, ds4_error *err) {
    while (n > 0) {
        size_t want = n > (1u << 30) ? (1u << 30) : (size_t)n;
        ssize_t w = write(fd, p, want);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return ds4_seterr(err, DS4_ERR_IO, "write %s: %s", path, strerror(errno));
        p += w;
        n -= (uint64_t)w;
    }
    return DS4_OK;
}

/* Makes the rename durable (SERVER_CLI Appendix B #6). Best effort: some filesystems refuse
 * fsync on a directory, and the file itself is already complete and synced. */
static void fsync_parent(const char *path) {
    char *dir = strdup(path);
    if (!dir) return;
    char *slash = strrchr(dir, '/');
    const char *d = slash ? (slash == dir ? "/" : (*slash = '\0', dir)) : ".";
    int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

ds4_status ds4_session_save_file(const ds4_session *s, const char *path, ds4_error *err) {
    if (!s || !path) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "save_file: NULL argument");
    uint8_t *buf;
    uint64_t n;
    ds4_status st = ds4_session_snapshot(s, &buf, &n, err);
    if (st != DS4_OK) return st;
    size_t plen = strlen(path) + 32;
    char *tmp = malloc(plen);
    if (!tmp) {
        free(buf);
        return ds4_seterr(err, DS4_ERR_NOMEM, "save_file: out of memory");
    }
    snprintf(tmp, plen, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        st = ds4_seterr(err, DS4_ERR_IO, "save_file: cannot create %s: %s", tmp, strerror(errno));
        goto out_free;
    }
    st = write_all(fd, buf, n, tmp, err);
    if (st == DS4_OK && fsync(fd) != 0)
        st = ds4_seterr(err, DS4_ERR_IO, "save_file: fsync %s: %s", tmp, strerror(errno));
    if (close(fd) != 0 && st == DS4_OK)
        st = ds4_seterr(err, DS4_ERR_IO, "save_file: close %s: %s", tmp, strerror(errno));
    if (st == DS4_OK && rename(tmp, path) != 0)
        st = ds4_seterr(err, DS4_ERR_IO, "save_file: rename %s -> %s: %s", tmp, path, strerror(errno));
    if (st != DS4_OK) unlink(tmp);
    else fsync_parent(path);
out_free:
    free(tmp);
    free(buf);
    return st;
}

ds4_status ds4_session_load_file(ds4_session *s, const char *path, ds4_error *err) {
    if (!s || !path) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "load_file: NULL argument");
    ds4_mapfile mf;
    ds4_status st = ds4_mapfile_open(&mf, path, err);
    if (st != DS4_OK) return st;
    if (mf.size_bytes == 0) st = ds4_seterr(err, DS4_ERR_FORMAT, "snapshot: file is empty");
    else st = ds4_session_restore(s, mf.data, mf.size_bytes, err);
    ds4_mapfile_close(&mf);
    return st != DS4_OK ? ds4_err_prefix(err, "%s", path) : DS4_OK;
}
