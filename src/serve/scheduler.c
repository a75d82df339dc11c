/*
 * serve/scheduler.c — slots, queue, worker thread and the generation loop (see scheduler.h).
 *
 * Per job the worker: picks the slot with the longest common token prefix (else the least
 * recently used one, saving its conversation to disk first when it would be lost); restores a
 * longer prefix from the disk cache when there is one; prefills the rest in chunks (checking
 * cancel and timeout between chunks); saves the prompt state; samples token by token through
 * the text stream and formatter; parses a held tool block at the end; saves the turn state.
 */
#include "serve/scheduler.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"

typedef struct srv_slot {
    void *sess;
    int64_t last_used_ms;
    int32_t *ck;          /* tokens of the session's checkpoint (the last prompt end) */
    size_t n_ck;
    size_t saved_len;     /* tokens of this conversation's last disk save (0 = none yet) */
} srv_slot;

struct srv_sched {
    srv_engine eng;
    srv_sched_opts o;
    srv_slot *slots;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    srv_job **queue;
    int q_head, q_len;
    bool stopping, joined;
    atomic_bool shutting_down;   /* readable without the lock, for messages */
    srv_job *running;
    pthread_t worker;
};

int64_t srv_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

srv_job *srv_job_new(srv_request *req, int32_t *prompt, size_t n_prompt) {
    srv_job *j = calloc(1, sizeof *j);
    if (!j) { srv_request_free(req); free(prompt); return NULL; }
    j->req = *req;
    memset(req, 0, sizeof *req);
    j->prompt = prompt;
    j->n_prompt = n_prompt;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    atomic_init(&j->cancel, false);
    atomic_init(&j->refs, 1);
    return j;
}

void srv_job_unref(srv_job *j) {
    if (!j || atomic_fetch_sub(&j->refs, 1) != 1) return;
    srv_fmt_free(&j->fmt);
    srv_request_free(&j->req);
    free(j->prompt);
    free(j->forced);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
}

static size_t lcp(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    size_t n = na < nb ? na : nb, i = 0;
    while (i < n && a[i] == b[i]) i++;
    return i;
}

static bool job_stopped(srv_job *j) {
    return atomic_load(&j->cancel) || (j->deadline_ms && srv_now_ms() > j->deadline_ms);
}

/* Saves the slot's whole state under its token prefix, with the tool-id map of every DSML
 * block its text contains (best effort: the cache is an optimisation). */
static void save_slot(srv_sched *s, void *sess) {
    if (!s->o.kv) return;
    size_t n = 0;
    const int32_t *toks = s->eng.session_tokens(sess, &n);
    if (n < s->o.kv_min_tokens || n == 0) return;
    uint8_t *snap = NULL;
    uint64_t snap_bytes = 0;
    ds4_error err;
    if (s->eng.session_snapshot(sess, &snap, &snap_bytes, &err)) return;
    toks = s->eng.session_tokens(sess, &n);
    int32_t *copy = malloc(n * sizeof *copy);
    srv_buf text, trailer;
    srv_buf_init(&text);
    srv_buf_init(&trailer);
    if (copy) memcpy(copy, toks, n * sizeof *copy);
    for (size_t i = 0; copy && s->o.toolmem && i < n; i++) {
        const char *p;
        size_t nb;
        if (s->eng.token_bytes(s->eng.ctx, copy[i], &p, &nb, &err) == DS4_OK) srv_buf_append(&text, p, nb);
    }
    if (s->o.toolmem && text.len) srv_toolmem_export(s->o.toolmem, text.data, text.len, &trailer);
    if (copy && srv_buf_ok(&trailer))
        srv_kv_save(s->o.kv, copy, n, snap, (size_t)snap_bytes, trailer.data, trailer.len, &err);
    free(copy);
    srv_buf_free(&text);
    srv_buf_free(&trailer);
    free(snap);
}

/* Prompt tokens a slot can serve without recomputation: its live tokens when they are a
 * prefix of the prompt, else its checkpoint when that is (engine sync rule), else none. */
static size_t usable_prefix(srv_sched *s, srv_slot *sl, const int32_t *p, size_t n, bool *live_ok) {
    size_t nl = 0;
    const int32_t *t = s->eng.session_tokens(sl->sess, &nl);
    *live_ok = nl <= n && lcp(t, nl, p, n) == nl;
    if (*live_ok) return nl;
    if (sl->n_ck && sl->n_ck <= n && lcp(sl->ck, sl->n_ck, p, n) == sl->n_ck) return sl->n_ck;
    return 0;
}

/* Chooses and prepares a slot for the job's prompt (issue #6: longest common prefix). */
static srv_slot *pick_slot(srv_sched *s, srv_job *j, ds4_error *err) {
    srv_slot *best = NULL, *lru = NULL;
    size_t best_use = 0;
    bool ok;
    for (int i = 0; i < s->o.n_slots; i++) {
        srv_slot *sl = &s->slots[i];
        if (!sl->sess) { if (!lru || lru->sess) lru = sl; continue; }
        size_t u = usable_prefix(s, sl, j->prompt, j->n_prompt, &ok);
        if (u > best_use) { best_use = u; best = sl; }
        if (!lru || (lru->sess && sl->last_used_ms < lru->last_used_ms)) lru = sl;
    }
    srv_slot *sl = best ? best : lru;
    if (!sl->sess && s->eng.session_create(s->eng.ctx, &sl->sess, err)) return NULL;
    size_t use = usable_prefix(s, sl, j->prompt, j->n_prompt, &ok);
    /* Another conversation takes the slot: keep the old one on disk first. (When only the
     * checkpoint serves, it is the same conversation with a re-rendered tail, e.g. dropped
     * reasoning; saving then would write a snapshot every turn.) */
    if (!ok && use == 0) {
        save_slot(s, sl->sess);
        sl->saved_len = 0;
    }
    if (s->o.kv) {
        srv_kv_entry e;
        size_t min = use + 1 > s->o.kv_min_tokens ? use + 1 : s->o.kv_min_tokens;
        if (srv_kv_lookup(s->o.kv, j->prompt, j->n_prompt, min, &e)) {
            ds4_error rerr;
            if (s->eng.session_restore(sl->sess, e.payload, e.payload_bytes, &rerr) != DS4_OK)
                s->eng.session_reset(sl->sess);
            else
                sl->saved_len = e.n_tokens;
            if (s->o.toolmem && e.trailer_bytes) srv_toolmem_import(s->o.toolmem, e.trailer, e.trailer_bytes);
            srv_kv_entry_free(&e);
        }
    }
    sl->last_used_ms = srv_now_ms();
    return sl;
}

static void job_fail(srv_job *j, int status, const char *msg) {
    pthread_mutex_lock(&j->mu);
    if (!j->fmt.began || !j->req.stream) {
        j->error_before_output = true;
        srv_reqerr_set(&j->err, status, NULL, "%s", msg);
    } else {
        srv_fmt_error(&j->fmt, msg);
    }
    j->finish = SRV_FINISH_ERROR;
    j->done = true;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

/* Generated text → DSML streaming parser → formatter events (SERVER_CLI §4.2-§4.4): reasoning,
 * content and live tool-call headers / argument fragments. Runs under job->mu. */
typedef struct gen_ctx {
    srv_sched *s;
    srv_job *j;
    ds4_dsml_parser *dp;
    bool visible;          /* content or a call was seen (reasoning-token accounting) */
    bool failed;
} gen_ctx;

static int on_dsml_event(void *user, const ds4_dsml_event *ev) {
    gen_ctx *g = user;
    srv_fmt *f = &g->j->fmt;
    switch (ev->kind) {
    case DS4_DSML_REASONING: srv_fmt_reasoning(f, ev->text, ev->text_bytes); break;
    case DS4_DSML_CONTENT: g->visible = true; srv_fmt_content(f, ev->text, ev->text_bytes); break;
    case DS4_DSML_CALL_START: g->visible = true; srv_fmt_tool_begin(f, ev->id ? ev->id : "", ev->name ? ev->name : ""); break;
    case DS4_DSML_CALL_ARGS: srv_fmt_tool_args(f, ev->text, ev->text_bytes); break;
    case DS4_DSML_CALL_END: srv_fmt_tool_end(f); break;
    case DS4_DSML_CALLS_ABORT: srv_fmt_tool_abort(f); break; /* the block text follows as content */
    }
    return 0;
}

/* Unguessable ids: they index the exact-DSML replay memory (§3.2.8, §5.7). */
static int make_call_id(void *user, size_t call_index, char *id) {
    (void)call_index;
    gen_ctx *g = user;
    return srv_random_id(id, DS4_TOOL_ID_MAX, g->j->req.api == SRV_API_ANTHROPIC ? "toolu_" : "call_") ? 0 : 1;
}

static void feed_dsml(void *ud, const char *text, size_t n) {
    gen_ctx *g = ud;
    ds4_error err;
    if (!g->failed && ds4_dsml_feed(g->dp, text, n, &err) != DS4_OK) g->failed = true;
}

/* True when the generated text ends with a tool-calls closing tag (any spelling, §5.5). */
static bool tool_block_closed(const srv_textstream *ts) {
    static const char *const ends[] = {("</\xef\xbd\x9c" "DSML\xef\xbd\x9c" "tool_calls>"),
                                       ("</DSML\xef\xbd\x9c" "tool_calls>"), "</tool_calls>"};
    size_t n = ts->raw.len;
    while (n > 0 && (ts->raw.data[n - 1] == ' ' || ts->raw.data[n - 1] == '\n')) n--;
    for (size_t i = 0; i < sizeof ends / sizeof *ends; i++) {
        size_t l = strlen(ends[i]);
        if (n >= l && memcmp(ts->raw.data + n - l, ends[i], l) == 0) return true;
    }
    return false;
}

/* Ends the parse; returns the finish reason adjusted for tool calls. */
static srv_finish finish_dsml(gen_ctx *g, srv_finish fin) {
    ds4_parsed p;
    memset(&p, 0, sizeof p);
    ds4_error err;
    if (ds4_dsml_finish(g->dp, &p, &err) != DS4_OK) return SRV_FINISH_ERROR;
    if (p.n_calls && fin != SRV_FINISH_ERROR) fin = SRV_FINISH_TOOL_CALLS;
    for (size_t i = 0; g->s->o.toolmem && i < p.n_calls; i++)
        if (p.calls[i].id && p.dsml_bytes) srv_toolmem_put(g->s->o.toolmem, p.calls[i].id, p.dsml, p.dsml_bytes);
    ds4_parsed_clear(&p);
    return fin;
}

/* Log-probability of the chosen token under the model's distribution (temperature 1, as
 * OpenAI reports) and the request's top alternatives. */
static void record_logprobs(srv_sched *s, srv_job *j, const float *logits, int32_t tok) {
    float mx = logits[0];
    for (uint32_t i = 1; i < s->eng.n_vocab; i++) if (logits[i] > mx) mx = logits[i];
    double sum = 0;
    for (uint32_t i = 0; i < s->eng.n_vocab; i++) sum += exp((double)(logits[i] - mx));
    float lp = (float)((double)(logits[tok] - mx) - log(sum));
    ds4_token_logprob top[20];
    srv_logprob_alt alts[20];
    uint32_t n_top = 0;
    uint32_t k = j->req.top_logprobs > 20 ? 20 : (uint32_t)j->req.top_logprobs;
    if (k && ds4_logits_top_logprobs(logits, s->eng.n_vocab, k, top, &n_top, NULL) != DS4_OK) n_top = 0;
    size_t n_alts = 0;
    for (uint32_t i = 0; i < n_top; i++) {
        if (s->eng.token_bytes(s->eng.ctx, top[i].token, &alts[n_alts].bytes, &alts[n_alts].n, NULL) != DS4_OK) continue;
        alts[n_alts++].logprob = top[i].logprob;
    }
    const char *b;
    size_t nb = 0;
    if (s->eng.token_bytes(s->eng.ctx, tok, &b, &nb, NULL) != DS4_OK) return;
    pthread_mutex_lock(&j->mu);
    srv_fmt_logprob(&j->fmt, b, nb, lp, alts, n_alts);
    pthread_mutex_unlock(&j->mu);
}

static void run_job(srv_sched *s, srv_job *j) {
    ds4_error err;
    srv_request *rq = &j->req;
    srv_usage u = {(int)j->n_prompt, 0, 0, 0};
    srv_slot *sl = pick_slot(s, j, &err);
    if (!sl) { job_fail(j, 500, err.msg); return; }
    /* The reuse point is known before prefill, so the stream can open now (Anthropic's
     * message_start carries the cache-read count) and the client sees progress at once. */
    bool live_ok;
    size_t predicted = usable_prefix(s, sl, j->prompt, j->n_prompt, &live_ok);
    u.cached_tokens = (int)predicted;
    pthread_mutex_lock(&j->mu);
    if (rq->stream) srv_fmt_begin(&j->fmt, &u);
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    int64_t t0 = srv_now_ms();
    size_t chunk = s->o.prefill_chunk > 0 ? (size_t)s->o.prefill_chunk : 512;
    size_t cached = 0;
    bool first = true;
    /* Cold anchor (SERVER_CLI §6.5): for a conversation's first save, stop the prefill at its
     * last user-turn marker and save there: that prefix (system prompt, tools, history) is what
     * other conversations and retries share, unlike the whole prompt. */
    size_t anchor = 0;
    if (s->o.kv && sl->saved_len == 0 && s->eng.user_tok >= 0) {
        for (size_t k = j->n_prompt; k-- > 0;)
            if (j->prompt[k] == s->eng.user_tok) { anchor = k; break; }
        if (anchor < s->o.kv_min_tokens || anchor <= predicted) anchor = 0;
    }
    for (size_t pos = 0; first || pos < j->n_prompt;) {
        if (job_stopped(j)) {
            if (s->o.metrics) atomic_fetch_add(&s->o.metrics->cancelled, 1);
            job_fail(j, 503, "request cancelled");
            return;
        }
        /* First step: the engine picks its reuse point (live state or checkpoint); then the
         * prefill goes chunk by chunk so cancellation and timeouts act between chunks, and the
         * work done so far stays in the slot. */
        size_t reused = 0, from = first ? predicted : pos;
        size_t next = j->n_prompt - from > chunk ? from + chunk : j->n_prompt;
        if (anchor && from < anchor && next > anchor) next = anchor;
        if (s->eng.session_sync(sl->sess, j->prompt, next, &reused, &err)) { job_fail(j, 500, err.msg); return; }
        if (first) cached = reused;
        first = false;
        pos = next;
        if (anchor && pos == anchor) {
            save_slot(s, sl->sess);
            sl->saved_len = anchor;
        }
    }
    u.cached_tokens = (int)cached;
    int64_t t1 = srv_now_ms();
    if (s->eng.session_checkpoint(sl->sess, &err) == DS4_OK) {
        int32_t *ck = realloc(sl->ck, (j->n_prompt ? j->n_prompt : 1) * sizeof *ck);
        if (ck) { memcpy(ck, j->prompt, j->n_prompt * sizeof *ck); sl->ck = ck; sl->n_ck = j->n_prompt; }
        else sl->n_ck = 0;
    } else {
        sl->n_ck = 0;
    }
    /* Disk writes cost ~14 KB per token with the real model, so a conversation is saved when
     * it first reaches the cache minimum and then every --kv-cache-interval tokens, plus on
     * slot eviction and shutdown; not after every turn (ANCHORS §3.9: write volume). */
    if (cached < j->n_prompt && (sl->saved_len == 0 || j->n_prompt >= sl->saved_len + s->o.kv_interval_tokens)) {
        save_slot(s, sl->sess);
        if (j->n_prompt >= s->o.kv_min_tokens) sl->saved_len = j->n_prompt;
    }

    ds4_sampling_params sp;
    ds4_sampling_params_init(&sp);
    if (rq->think == SRV_THINK_NONE) {
        /* Thinking modes use DeepSeek's fixed sampling (§3.2.3 rule 1); chat mode the client's. */
        sp.temperature = (float)rq->temperature;
        sp.top_p = rq->top_p > 0 ? (float)rq->top_p : 1.0f;
        sp.top_k = rq->top_k;
        sp.min_p = (float)rq->min_p;
    }
    if (rq->has_seed) sp.seed = rq->seed;
    else if (!srv_random_u64(&sp.seed)) sp.seed = (uint64_t)srv_now_ms();
    ds4_sampler *smp = NULL;
    if (ds4_sampler_create(&smp, &sp, s->eng.n_vocab, &err)) { job_fail(j, 500, err.msg); return; }

    int32_t *forced = NULL;
    size_t n_forced = 0;
    if (j->forced && s->eng.tokenize(s->eng.ctx, j->forced, strlen(j->forced), 0, &forced, &n_forced, &err)) {
        ds4_sampler_free(smp);
        job_fail(j, 500, err.msg);
        return;
    }

    srv_textstream ts;
    srv_ts_init(&ts, &j->fmt, rq);
    gen_ctx g = {s, j, NULL, false, false};
    if (rq->api != SRV_API_COMPLETIONS) {
        ds4_dsml_opts dopts = {.thinking = rq->think != SRV_THINK_NONE, .tools = rq->tools_active,
                               .on_event = on_dsml_event, .event_user = &g, .make_id = make_call_id, .id_user = &g};
        if (ds4_dsml_parser_create(&g.dp, &dopts, &err) != DS4_OK) {
            ds4_sampler_free(smp);
            free(forced);
            srv_ts_free(&ts);
            job_fail(j, 500, err.msg);
            return;
        }
        srv_ts_set_sink(&ts, feed_dsml, &g);
    }
    size_t room = (size_t)s->eng.n_ctx > j->n_prompt ? (size_t)s->eng.n_ctx - j->n_prompt : 0;
    size_t limit = (size_t)rq->max_tokens < room ? (size_t)rq->max_tokens : room;
    srv_finish fin = SRV_FINISH_LENGTH;
    const char *fail = NULL;
    for (size_t i = 0; i < limit; i++) {
        if (job_stopped(j)) {
            fin = SRV_FINISH_ERROR;
            fail = atomic_load(&s->shutting_down) ? "server shutting down"
                 : atomic_load(&j->cancel) ? "request cancelled" : "request timed out";
            if (s->o.metrics) atomic_fetch_add(&s->o.metrics->cancelled, 1);
            break;
        }
        const float *logits = NULL;
        int32_t tok;
        /* Log-probabilities and the forced completion read the logits; a plain draw runs where
         * the logits are (session_sample: on the GPU only the id crosses the bus, issue #7). */
        bool on_host = forced || j->fmt.want_logprobs || !s->eng.session_sample;
        if (on_host && s->eng.session_logits(sl->sess, &logits, &err)) { fin = SRV_FINISH_ERROR; fail = "decode failed"; break; }
        if (forced) tok = i < n_forced ? forced[i] : s->eng.eos;
        else if (on_host ? ds4_sampler_sample(smp, logits, &tok, &err) : s->eng.session_sample(sl->sess, smp, &tok, &err)) {
            fin = SRV_FINISH_ERROR;
            fail = "sampling failed";
            break;
        }
        if (tok == s->eng.eos) { fin = SRV_FINISH_STOP; break; }
        if (j->fmt.want_logprobs) record_logprobs(s, j, logits, tok);
        if (s->eng.session_eval(sl->sess, tok, &err)) { fin = SRV_FINISH_ERROR; fail = "decode failed"; break; }
        ds4_sampler_accept(smp, tok);
        u.completion_tokens++;
        if (g.dp ? rq->think != SRV_THINK_NONE && !g.visible : ts.in_reasoning) u.reasoning_tokens++;
        const char *bytes;
        size_t nb = 0;
        if (s->eng.token_bytes(s->eng.ctx, tok, &bytes, &nb, &err)) { fin = SRV_FINISH_ERROR; fail = "detokenize failed"; break; }
        pthread_mutex_lock(&j->mu);
        bool more = srv_ts_push(&ts, bytes, nb);
        pthread_cond_broadcast(&j->cv);
        pthread_mutex_unlock(&j->mu);
        if (!more) { fin = SRV_FINISH_STOP; break; }
        /* A closed tool block ends the turn (SERVER_CLI §4.1 step 7): the model would emit EOS
         * next, and a confused one must not ramble on after its call. */
        if (g.dp && rq->tools_active && j->fmt.n_calls > 0 && tool_block_closed(&ts)) { fin = SRV_FINISH_STOP; break; }
    }
    int64_t t2 = srv_now_ms();
    ds4_sampler_free(smp);
    free(forced);

    pthread_mutex_lock(&j->mu);
    srv_ts_flush(&ts);
    if (g.dp) {
        fin = finish_dsml(&g, fin);
        if (g.failed && fin != SRV_FINISH_ERROR) { fin = SRV_FINISH_ERROR; fail = "tool-call parser failed"; }
        ds4_dsml_parser_free(g.dp);
    }
    j->usage = u;
    j->finish = fin;
    if (fail && rq->stream && fin == SRV_FINISH_ERROR) srv_fmt_error(&j->fmt, fail);
    else srv_fmt_finish(&j->fmt, fin, &u, ts.stopped ? ts.matched_stop : NULL);
    j->done = true;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);

    if (s->o.on_done) s->o.on_done(s->o.on_done_ud, j, t1 - t0, t2 - t1);
    if (s->o.metrics) {
        atomic_fetch_add(&s->o.metrics->prompt_tokens, (uint64_t)u.prompt_tokens);
        atomic_fetch_add(&s->o.metrics->cached_tokens, (uint64_t)u.cached_tokens);
        atomic_fetch_add(&s->o.metrics->generated_tokens, (uint64_t)u.completion_tokens);
        atomic_fetch_add(&s->o.metrics->prefill_us, (uint64_t)(t1 - t0) * 1000);
        atomic_fetch_add(&s->o.metrics->decode_us, (uint64_t)(t2 - t1) * 1000);
    }
    srv_ts_free(&ts);
    sl->last_used_ms = srv_now_ms();
}

static void *worker_main(void *arg) {
    srv_sched *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->stopping && s->q_len == 0) pthread_cond_wait(&s->cv, &s->mu);
        if (s->q_len == 0) { pthread_mutex_unlock(&s->mu); break; }
        srv_job *j = s->queue[s->q_head];
        s->q_head = (s->q_head + 1) % s->o.queue_max;
        s->q_len--;
        s->running = j;
        bool stopping = s->stopping;
        if (s->o.metrics) { atomic_fetch_sub(&s->o.metrics->queue_length, 1); atomic_fetch_add(&s->o.metrics->busy, 1); }
        pthread_mutex_unlock(&s->mu);
        if (stopping) job_fail(j, 503, "server shutting down");
        else if (atomic_load(&j->cancel)) job_fail(j, 503, "request cancelled");
        else run_job(s, j);
        pthread_mutex_lock(&s->mu);
        s->running = NULL;
        if (s->o.metrics) atomic_fetch_sub(&s->o.metrics->busy, 1);
        pthread_mutex_unlock(&s->mu);
        srv_job_unref(j);
    }
    return NULL;
}

ds4_status srv_sched_create(srv_sched **out, const srv_engine *eng, const srv_sched_opts *o, ds4_error *err) {
    *out = NULL;
    if (o->n_slots < 1 || o->queue_max < 1)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "scheduler: slots (%d) and queue (%d) must be >= 1", o->n_slots, o->queue_max);
    srv_sched *s = calloc(1, sizeof *s);
    if (!s) return ds4_seterr(err, DS4_ERR_NOMEM, "scheduler: out of memory");
    s->eng = *eng;
    s->o = *o;
    s->slots = calloc((size_t)o->n_slots, sizeof *s->slots);
    s->queue = calloc((size_t)o->queue_max, sizeof *s->queue);
    if (!s->slots || !s->queue) {
        free(s->slots); free(s->queue); free(s);
        return ds4_seterr(err, DS4_ERR_NOMEM, "scheduler: out of memory");
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (pthread_create(&s->worker, NULL, worker_main, s) != 0) {
        free(s->slots); free(s->queue); free(s);
        return ds4_seterr(err, DS4_ERR_INTERNAL, "scheduler: cannot start the worker thread");
    }
    *out = s;
    return DS4_OK;
}

int srv_sched_submit(srv_sched *s, srv_job *j) {
    pthread_mutex_lock(&s->mu);
    if (s->stopping || s->q_len >= s->o.queue_max) {
        pthread_mutex_unlock(&s->mu);
        return 503;
    }
    if (s->o.timeout_s > 0) j->deadline_ms = srv_now_ms() + (int64_t)s->o.timeout_s * 1000;
    atomic_fetch_add(&j->refs, 1);
    s->queue[(s->q_head + s->q_len) % s->o.queue_max] = j;
    s->q_len++;
    if (s->o.metrics) atomic_fetch_add(&s->o.metrics->queue_length, 1);
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

int srv_sched_queue_length(srv_sched *s) {
    pthread_mutex_lock(&s->mu);
    int n = s->q_len;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void srv_sched_stop(srv_sched *s) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    if (s->joined) { pthread_mutex_unlock(&s->mu); return; }
    s->stopping = true;
    atomic_store(&s->shutting_down, true);
    if (s->running) atomic_store(&s->running->cancel, true);
    for (int i = 0; i < s->q_len; i++) atomic_store(&s->queue[(s->q_head + i) % s->o.queue_max]->cancel, true);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->worker, NULL);
    s->joined = true;
}

void srv_sched_destroy(srv_sched *s) {
    if (!s) return;
    srv_sched_stop(s);
    for (int i = 0; i < s->o.n_slots; i++) {
        if (!s->slots[i].sess) continue;
        save_slot(s, s->slots[i].sess); /* shutdown checkpoint (§6.5) */
        s->eng.session_free(s->slots[i].sess);
        free(s->slots[i].ck);
    }
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->slots);
    free(s->queue);
    free(s);
}
