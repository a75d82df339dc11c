/*
 * tools/ds4/chat_run.c — the chat engine of the `ds4` CLI: opens model, tokenizer, session and
 * sampler; builds the token transcript (layout in chat.h); runs one turn = prefill of what is
 * new (ds4_session_sync, chunked for the progress bar and Ctrl+C, resumed from --kv-disk-dir)
 * then sampling, streaming the text through the DSML parser so reasoning and answer print in
 * different styles. Must not: read the terminal (chat_repl.c does) or know the /save format.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chat.h"
#include "serve/kvstore.h"

#define STYLE_REASONING "\033[2;3m" /* dim italic: visibly not the answer */
#define STYLE_RESET "\033[0m"
#define PREFILL_CHUNK 256u          /* tokens per sync call when the bar is shown (at least the
                                       session's own chunk: 2048 on the GPU) */

/* ---- Token buffers -------------------------------------------------------------------------- */

static int body_reserve(chat_state *st, uint32_t extra) {
    uint64_t need = (uint64_t)st->n_body + extra;
    if (need <= st->cap_body) return 0;
    if (need > UINT32_MAX / 2) return 1;
    uint32_t cap = st->cap_body ? st->cap_body : 1024;
    while (cap < need) cap *= 2;
    int32_t *p = realloc(st->body, (size_t)cap * sizeof *p);
    if (!p) return 1;
    st->body = p;
    st->cap_body = cap;
    return 0;
}

static int body_push(chat_state *st, int32_t id) {
    if (body_reserve(st, 1)) return 1;
    st->body[st->n_body++] = id;
    return 0;
}

/* Token ids of a one-message conversation rendered by libds4's official encoder
 * (ds4_chat_render_tokens): template markers are control tokens, the message text is plain BPE,
 * so a typed "<｜User｜>" stays text (issue #4). *out malloc'd; 1 on failure (message printed). */
static int render_one(chat_state *st, ds4_chat_role role, const char *text, size_t n, ds4_thinking th,
                      int32_t **out, size_t *n_out) {
    ds4_chat *c = NULL;
    ds4_error err = {0};
    if (memchr(text, 0, n)) { /* the chat API takes NUL-terminated text: say so, never truncate */
        fprintf(stderr, "ds4: the message contains a NUL byte, which a chat message cannot hold\n");
        return 1;
    }
    char *copy = strndup(text, n);
    ds4_chat_msg m = {.role = role, .content = copy};
    int rc = !copy || ds4_chat_create(&c, th, &err) || ds4_chat_add(c, &m, &err) ||
             ds4_chat_render_tokens(c, st->tok, 0, out, n_out, NULL, NULL, &err);
    if (rc) fprintf(stderr, "ds4: building the prompt: %s\n", copy ? err.msg : "out of memory");
    ds4_chat_free(c);
    free(copy);
    return rc;
}

/* Appends one user turn, SERVER_CLI §10.4 step 1: <｜User｜> text <｜Assistant｜> (<think>|
 * </think>), i.e. the official rendering of that user message without its leading BOS. */
static int body_user_turn(chat_state *st, const char *text, size_t n, bool thinking) {
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (render_one(st, DS4_ROLE_USER, text, n, thinking ? DS4_THINKING_HIGH : DS4_THINKING_NONE, &ids, &n_ids))
        return 1;
    int rc = n_ids < 2 || ids[0] != st->id_bos || n_ids > UINT32_MAX / 4 || body_reserve(st, (uint32_t)n_ids);
    if (!rc) {
        memcpy(st->body + st->n_body, ids + 1, (n_ids - 1) * sizeof *ids);
        st->n_body += (uint32_t)n_ids - 1;
    }
    free(ids);
    return rc;
}

/* header ++ body in st->scratch. */
static int build_target(chat_state *st, uint32_t *n_out) {
    uint64_t n = (uint64_t)st->n_header + st->n_body;
    if (n > UINT32_MAX / 2) return 1;
    if (n > st->cap_scratch) {
        int32_t *p = realloc(st->scratch, (size_t)n * sizeof *p);
        if (!p) return 1;
        st->scratch = p;
        st->cap_scratch = (uint32_t)n;
    }
    memcpy(st->scratch, st->header, st->n_header * sizeof *st->header);
    memcpy(st->scratch + st->n_header, st->body, st->n_body * sizeof *st->body);
    *n_out = (uint32_t)n;
    return 0;
}

/* ---- Opening --------------------------------------------------------------------------------- */

static void missing_model(const char *path) {
    fprintf(stderr,
            "ds4: model file %s not found.\n"
            "  Download the published GGUF (about 81 GB) and link it as ./ds4flash.gguf:\n"
            "      ./download_model.sh q2          (or q2-imatrix, q4, q4-imatrix)\n"
            "  or convert the official checkpoint yourself:\n"
            "      ./ds4-convert --hf DeepSeek-V4-Flash/ --out ds4flash.gguf --preset q2\n"
            "  or point -m at a GGUF you have. To check the install without a download:\n"
            "      ./ds4 --demo\n",
            path);
}

static int special(chat_state *st, const char *text, int32_t *id) {
    ds4_error err = {0};
    if (ds4_tokenizer_special_id(st->tok, text, id, &err)) {
        fprintf(stderr, "ds4: the model's tokenizer lacks %s: %s\n", text, err.msg);
        return 1;
    }
    return 0;
}

static int open_session(chat_state *st, uint32_t n_ctx) {
    ds4_error err = {0};
    ds4_memory_estimate me;
    if (ds4_engine_memory_estimate(st->eng, n_ctx, &me, &err)) {
        fprintf(stderr, "ds4: --ctx %u: %s\n", n_ctx, err.msg);
        return 1;
    }
    ds4_session *s = NULL;
    if (ds4_session_create(&s, st->eng, n_ctx, &err)) {
        fprintf(stderr, "ds4: cannot create a session of %u tokens (%.2f GiB): %s\n", n_ctx,
                me.total_bytes / 1073741824.0, err.msg);
        return 1;
    }
    ds4_session_free(st->sess);
    st->sess = s;
    st->n_ctx = n_ctx;
    return 0;
}

int chat_open(chat_state *st, chat_opts *o) {
    memset(st, 0, sizeof *st);
    st->o = o;
    st->out_tty = isatty(1);
    st->err_tty = isatty(2);
    st->show_reasoning = st->out_tty || o->show_reasoning;
    st->thinking = o->thinking;
    ds4_error err = {0};
    struct stat sb;
    if (stat(o->model_path, &sb) != 0) {
        if (errno == ENOENT) missing_model(o->model_path);
        else fprintf(stderr, "ds4: cannot open model %s: %s\n", o->model_path, strerror(errno));
        return 1;
    }
    chat_warm_file(o->model_path, o->warm);
    if (!o->backend) { /* issue #7: the GPU when there is one, saying so (CUDA builds) */
        o->backend = ds4_default_backend();
#ifdef DS4_CUDA
        fprintf(stderr, "ds4: backend %s (%s; --backend cpu|cuda to choose)\n", o->backend,
                strcmp(o->backend, "cuda") ? "no CUDA device found" : "a CUDA device is present");
#endif
    }
    if (o->gpu_layers_experts >= 0 && strcmp(o->backend, "cuda")) {
        fprintf(stderr, "ds4: --gpu-layers-experts needs --backend cuda (no CUDA device here)\n");
        return 1;
    }
    ds4_engine_options eo;
    ds4_engine_options_init(&eo);
    eo.n_threads = o->n_threads;
    eo.backend = o->backend;
    eo.gpu_layers_experts = o->gpu_layers_experts;
    eo.gpu_ctx_tokens = o->n_ctx;
    eo.mtp_path = o->mtp_path;
    if (ds4_engine_open(&st->eng, o->model_path, &eo, &err)) {
#ifdef DS4_CUDA
        if (err.code == DS4_ERR_UNSUPPORTED && strcmp(o->backend, "cpu") != 0)
            fprintf(stderr, "ds4: --backend %s: %s; use --backend cpu\n", o->backend, err.msg);
#else
        if (err.code == DS4_ERR_UNSUPPORTED && strcmp(o->backend, "cpu") != 0)
            fprintf(stderr, "ds4: --backend %s: not built with CUDA (%s); use --backend cpu\n", o->backend,
                    err.msg);
#endif
        else fprintf(stderr, "ds4: cannot load %s: %s\n", o->model_path, err.msg);
        return 1;
    }
    if (ds4_engine_info(st->eng, &st->info, &err) || ds4_tokenizer_open(&st->tok, o->model_path, &err)) {
        fprintf(stderr, "ds4: %s: %s\n", o->model_path, err.msg);
        return 1;
    }
    if (st->info.host_expert_bytes)
        fprintf(stderr, "ds4: routed experts of %u of %u layers in pinned host memory (%.2f GiB, read over PCIe: "
                "slower); --gpu-layers-experts N to choose\n", st->info.n_layer - st->info.gpu_layers_experts,
                st->info.n_layer, (double)st->info.host_expert_bytes / (1u << 30));
    static const char hx[] = "0123456789abcdef";
    memcpy(st->model_id, "ds4:", 4);
    for (int i = 0; i < 32; i++) {
        st->model_id[4 + 2 * i] = hx[st->info.model_id[i] >> 4];
        st->model_id[5 + 2 * i] = hx[st->info.model_id[i] & 15];
    }
    st->model_id[68] = '\0';
    if (special(st, "<｜begin▁of▁sentence｜>", &st->id_bos) || special(st, "<｜end▁of▁sentence｜>", &st->id_eos) ||
        special(st, "<｜User｜>", &st->id_user) || special(st, "<｜Assistant｜>", &st->id_assistant) ||
        special(st, "<think>", &st->id_think) || special(st, "</think>", &st->id_think_end))
        return 1;
    uint32_t n_ctx = o->n_ctx ? o->n_ctx : 32768;
    if (n_ctx > st->info.n_ctx_max) {
        if (o->n_ctx) {
            fprintf(stderr, "ds4: --ctx %u exceeds the model's context of %u tokens\n", n_ctx, st->info.n_ctx_max);
            return 1;
        }
        n_ctx = st->info.n_ctx_max;
    }
    if (open_session(st, n_ctx)) return 1;
    if (ds4_sampler_create(&st->smp, &o->sp, st->info.n_vocab, &err)) {
        fprintf(stderr, "ds4: sampling: %s\n", err.msg);
        return 1;
    }
    st->system = strdup(o->system);
    st->msgs = json_array();
    if (!st->system || !st->msgs) return 1;
    if (chat_set_header(st)) return 1;
    if (o->kv_disk_dir) {
        if (srv_kv_open(&st->kv, o->kv_disk_dir, o->kv_disk_mb << 20, st->model_id, NULL, &err)) {
            fprintf(stderr, "ds4: --kv-disk-dir %s: %s\n", o->kv_disk_dir, err.msg);
            return 1;
        }
    }
    return 0;
}

void chat_close(chat_state *st) {
    if (st->kv) srv_kv_close(st->kv);
    ds4_sampler_free(st->smp);
    ds4_session_free(st->sess);
    ds4_tokenizer_free(st->tok);
    ds4_engine_close(st->eng);
    json_decref(st->msgs);
    free(st->system);
    free(st->header);
    free(st->body);
    free(st->scratch);
    free(st->attached);
    memset(st, 0, sizeof *st);
}

/* ---- Header, context, clear ------------------------------------------------------------------ */

int chat_set_header(chat_state *st) {
    bool max = st->thinking == DS4_THINKING_MAX;
    if (max && st->n_ctx < CHAT_THINK_MAX_MIN_CTX) {
        fprintf(stderr, "ds4: warning: Think Max needs a context of at least %u tokens (this one has %u); "
                        "thinking at high effort instead\n", CHAT_THINK_MAX_MIN_CTX, st->n_ctx);
        st->thinking = DS4_THINKING_HIGH;
        max = false;
    }
    /* The official rendering of the system message alone: BOS, the Think-Max prefix (§2.2)
     * when asked for, then the system text as plain BPE. */
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (render_one(st, DS4_ROLE_SYSTEM, st->system, strlen(st->system), max ? DS4_THINKING_MAX : DS4_THINKING_HIGH,
                   &ids, &n_ids))
        return 1;
    if (n_ids == 0 || ids[0] != st->id_bos || n_ids > UINT32_MAX / 4) {
        fprintf(stderr, "ds4: the rendered system prompt does not start with BOS\n");
        free(ids);
        return 1;
    }
    free(st->header);
    st->header = ids;
    st->n_header = (uint32_t)n_ids;
    return 0;
}

int chat_set_ctx(chat_state *st, uint32_t n_ctx) {
    if (n_ctx < 16 || n_ctx > st->info.n_ctx_max) {
        fprintf(stderr, "ds4: context must be in [16, %u]\n", st->info.n_ctx_max);
        return 1;
    }
    ds4_memory_estimate me;
    if (ds4_engine_memory_estimate(st->eng, n_ctx, &me, NULL) == DS4_OK)
        fprintf(stderr, "ds4: context %u tokens: %.2f GiB of session memory (%.1f KiB per token)\n", n_ctx,
                me.total_bytes / 1073741824.0, me.kv_bytes_per_token / 1024.0);
    if (open_session(st, n_ctx)) return 1;
    /* The Think-Max gate depends on the context (SERVER_CLI §10.4 /ctx). */
    if (st->o->thinking == DS4_THINKING_MAX) st->thinking = DS4_THINKING_MAX;
    return chat_set_header(st);
}

void chat_clear(chat_state *st) {
    st->n_body = 0;
    st->n_turns = 0;
    json_array_clear(st->msgs);
    free(st->attached);
    st->attached = NULL;
}

/* ---- Disk KV cache ------------------------------------------------------------------------ */

void chat_kv_store(chat_state *st) {
    uint32_t n = 0;
    const int32_t *toks = ds4_session_tokens(st->sess, &n);
    if (!st->kv || n == 0 || n < st->o->kv_min_tokens) return;
    uint8_t *snap = NULL;
    uint64_t bytes = 0;
    ds4_error err = {0};
    int32_t *copy = malloc((size_t)n * sizeof *copy);
    if (!copy) return;
    memcpy(copy, toks, (size_t)n * sizeof *copy);
    if (ds4_session_snapshot(st->sess, &snap, &bytes, &err) ||
        srv_kv_save(st->kv, copy, n, snap, (size_t)bytes, NULL, 0, &err))
        fprintf(stderr, "ds4: disk KV cache: not stored: %s\n", err.msg);
    free(snap);
    free(copy);
}

/* Restores the longest cached prefix of toks[0..n) that beats what the live session keeps. */
static uint32_t kv_resume(chat_state *st, const int32_t *toks, uint32_t n, uint32_t usable) {
    if (!st->kv) return 0;
    size_t min = (size_t)usable + 1 > st->o->kv_min_tokens ? (size_t)usable + 1 : st->o->kv_min_tokens;
    srv_kv_entry e;
    if (!srv_kv_lookup(st->kv, toks, n, min, &e)) return 0;
    ds4_error err = {0};
    uint32_t got = 0;
    if (ds4_session_restore(st->sess, e.payload, e.payload_bytes, &err) == DS4_OK) got = (uint32_t)e.n_tokens;
    else fprintf(stderr, "ds4: disk KV cache entry not usable: %s\n", err.msg);
    srv_kv_entry_free(&e);
    return got;
}

/* ---- Prefill ---------------------------------------------------------------------------------- */

/* Tokens of toks[0..n) the live session keeps (sync rule: its tokens must be a prefix). */
static uint32_t live_prefix(const chat_state *st, const int32_t *toks, uint32_t n) {
    uint32_t nl = 0;
    const int32_t *live = ds4_session_tokens(st->sess, &nl);
    if (nl > n) return 0;
    for (uint32_t i = 0; i < nl; i++)
        if (live[i] != toks[i]) return 0;
    return nl;
}

/* Brings the session to toks[0..n). Returns 0 ok, 1 failed (message printed), 2 interrupted. */
static int prefill(chat_state *st, const int32_t *toks, uint32_t n, chat_turn_stats *ts) {
    ds4_error err = {0};
    double t0 = chat_now_s();
    uint32_t usable = live_prefix(st, toks, n);
    ts->n_from_disk = kv_resume(st, toks, n, usable);
    uint32_t start = live_prefix(st, toks, n);
    /* A long prefill can be interrupted: keep the state before it as the rewind checkpoint, so
     * the next sync resumes from there instead of token 0. */
    uint32_t step = ds4_session_prefill_chunk(st->sess);
    if (step < PREFILL_CHUNK) step = PREFILL_CHUNK;
    bool chunked = n - start > 2 * step;
    if (chunked && start > 0 && ds4_session_checkpoint(st->sess, &err) != DS4_OK) chunked = false;
    chat_bar bar;
    chat_bar_start(&bar, "prefill", "tokens", 1);
    if (!chunked) bar.on = false;
    ts->n_reused = start;
    ts->n_prefilled = 0;
    uint32_t at = start;
    int rc = 0;
    do {
        uint32_t end = chunked && n - at > step ? at + step : n;
        ds4_sync_stats ss;
        if (ds4_session_sync(st->sess, toks, end, &ss, &err) != DS4_OK) {
            chat_bar_end(&bar);
            fprintf(stderr, "ds4: prefill failed: %s\n", err.msg);
            rc = 1;
            break;
        }
        if (at == start) ts->n_reused = ss.n_reused;
        ts->n_prefilled += ss.n_evaluated;
        at = end;
        chat_bar_update(&bar, at, n);
        if (at < n && chat_interrupted) {
            rc = 2;
            break;
        }
    } while (at < n);
    chat_bar_end(&bar);
    ts->n_prompt = n;
    ts->prefill_s = chat_now_s() - t0;
    return rc;
}

/* ---- Streaming output --------------------------------------------------------------------- */

typedef struct stream_out {
    chat_state *st;
    bool in_reasoning;    /* the reasoning style is on */
    bool any_output;
    char last;            /* last byte written to stdout */
} stream_out;

static void put(stream_out *so, const char *s, size_t n) {
    if (!n) return;
    fwrite(s, 1, n, stdout);
    so->any_output = true;
    so->last = s[n - 1];
}

static void end_reasoning(stream_out *so) {
    if (!so->in_reasoning) return;
    if (so->st->out_tty) fputs(STYLE_RESET, stdout);
    /* SERVER_CLI §10.3: a newline separates the reasoning from the answer. */
    if (so->last != '\n') put(so, "\n", 1);
    so->in_reasoning = false;
}

static int on_event(void *user, const ds4_dsml_event *ev) {
    stream_out *so = user;
    if (ev->kind == DS4_DSML_REASONING) {
        if (!so->st->show_reasoning) return 0;
        if (!so->in_reasoning) {
            if (so->st->out_tty) fputs(STYLE_REASONING, stdout);
            so->in_reasoning = true;
        }
        put(so, ev->text, ev->text_bytes);
    } else if (ev->kind == DS4_DSML_CONTENT) {
        end_reasoning(so);
        put(so, ev->text, ev->text_bytes);
    }
    fflush(stdout);
    return 0;
}

/* ---- One turn ------------------------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static int add_msgs(chat_state *st, const char *user, size_t user_bytes, const ds4_parsed *p) {
    json_t *u = json_pack("{s:s, s:s%}", "role", "user", "content", user, user_bytes);
    json_t *a = json_pack("{s:s, s:s%}", "role", "assistant", "content", p->content ? p->content : "",
                          p->content ? p->content_bytes : 0);
    if (!u || !a) goto fail;
    if (p->reasoning && p->reasoning_bytes && json_object_set_new(a, "reasoning_content", json_stringn(p->reasoning, p->reasoning_bytes)))
        goto fail;
    if (json_array_append_new(st->msgs, u)) { u = NULL; goto fail; }
    if (json_array_append_new(st->msgs, a)) { a = NULL; goto fail; }
    return 0;
fail:
    json_decref(u);
    json_decref(a);
    return 1;
}

/* The turn after its prompt tokens were appended to the body (from body0 on): prefill, sample,
 * stream, close. `thinking`: the prompt ends with <think>. */
static int run_turn(chat_state *st, uint32_t body0, bool thinking, const char *text, size_t text_bytes);

int chat_turn(chat_state *st, const char *text, size_t text_bytes) {
    memset(&st->last, 0, sizeof st->last);
    st->last.stop = "error";
    uint32_t body0 = st->n_body;
    bool thinking = st->thinking != DS4_THINKING_NONE;
    /* SERVER_CLI §10.4 step 1. */
    if (body_user_turn(st, text, text_bytes, thinking)) {
        fprintf(stderr, "ds4: cannot build the prompt\n");
        st->n_body = body0;
        return 1;
    }
    return run_turn(st, body0, thinking, text, text_bytes);
}

int chat_turn_rendered(chat_state *st, const char *text, size_t text_bytes) {
    memset(&st->last, 0, sizeof st->last);
    st->last.stop = "error";
    int32_t *ids = NULL;
    size_t n_ids = 0;
    ds4_error err = {0};
    /* SERVER_CLI §10.3: special tokens recognized, no template added (the text has its BOS). */
    if (ds4_tokenize(st->tok, text, text_bytes, 0, &ids, &n_ids, &err)) {
        fprintf(stderr, "ds4: %s\n", err.msg);
        return 1;
    }
    st->n_header = 0;
    st->n_body = 0;
    int rc = 1;
    if (n_ids == 0 || n_ids > UINT32_MAX / 4 || body_reserve(st, (uint32_t)n_ids)) {
        fprintf(stderr, "ds4: cannot hold the prompt's %zu tokens\n", n_ids);
    } else {
        memcpy(st->body, ids, n_ids * sizeof *ids);
        st->n_body = (uint32_t)n_ids;
        rc = run_turn(st, 0, ids[n_ids - 1] == st->id_think, text, text_bytes);
    }
    free(ids);
    return rc;
}

static int run_turn(chat_state *st, uint32_t body0, bool thinking, const char *text, size_t text_bytes) {
    chat_turn_stats *ts = &st->last;
    ds4_error err = {0};
    int rc = 1;
    ds4_detok_stream *ds = NULL;
    ds4_dsml_parser *dp = NULL;
    ds4_parsed parsed = {0};
    stream_out so = {.st = st, .last = '\n'};
    uint32_t n = 0;
    if (build_target(st, &n)) {
        fprintf(stderr, "ds4: out of memory building the prompt\n");
        goto out_rollback;
    }
    if (n >= st->n_ctx) {
        fprintf(stderr, "ds4: the conversation (%u tokens) does not fit the context of %u tokens; "
                        "/clear it or raise it with /ctx N (--ctx)\n", n, st->n_ctx);
        goto out_rollback;
    }
    int pr = prefill(st, st->scratch, n, ts);
    if (pr == 2) {
        fprintf(stderr, "\nds4: interrupted during prefill; the message was dropped\n");
        ts->stop = "interrupted";
        rc = 0;
        goto out_rollback;
    }
    if (pr) goto out_rollback;
    if (st->kv && ts->n_prefilled >= st->o->kv_min_tokens) chat_kv_store(st);

    ds4_dsml_opts dopt = {.thinking = thinking, .tools = false, .on_event = on_event, .event_user = &so};
    if (ds4_detok_stream_create(&ds, st->tok, 0, &err) || ds4_dsml_parser_create(&dp, &dopt, &err)) {
        fprintf(stderr, "ds4: %s\n", err.msg);
        goto out_rollback;
    }
    /* A per-turn seed makes a turn's tokens depend only on --seed, the turn number and the
     * transcript, so /load + the same next message reproduces the answer. */
    ds4_sampler_reset(st->smp, splitmix64(st->o->sp.seed + st->n_turns));
    /* SERVER_CLI §10.2: -n is also clamped to the context room. */
    uint32_t room = st->n_ctx - n;
    uint32_t limit = st->o->n_predict < room ? st->o->n_predict : room;
    double t0 = chat_now_s();
    ts->stop = "limit";
    for (;;) {
        int32_t t;
        /* on the GPU only the token id crosses the bus (issue #7) */
        if (ds4_session_sample(st->sess, st->smp, &t, &err)) {
            fprintf(stderr, "\nds4: sampling failed: %s\n", err.msg);
            ts->stop = "error";
            break;
        }
        ds4_sampler_accept(st->smp, t);
        if (body_push(st, t)) {
            ts->stop = "error";
            break;
        }
        ts->n_generated++;
        if (t == st->id_eos) {
            ts->stop = "eos";
            break;
        }
        const char *piece;
        size_t piece_bytes;
        if (ds4_detok_stream_push(ds, t, &piece, &piece_bytes, &err) ||
            ds4_dsml_feed(dp, piece, piece_bytes, &err)) {
            fprintf(stderr, "\nds4: decoding failed: %s\n", err.msg);
            ts->stop = "error";
            break;
        }
        if (chat_interrupted) {
            ts->stop = "interrupted";
            break;
        }
        if (ts->n_generated >= limit) {
            ts->stop = ts->n_generated < st->o->n_predict ? "context" : "limit";
            break;
        }
        if (ds4_session_eval(st->sess, t, &err)) {
            fprintf(stderr, "\nds4: decoding failed: %s\n", err.msg);
            ts->stop = "error";
            break;
        }
    }
    ts->gen_s = chat_now_s() - t0;
    const char *piece;
    size_t piece_bytes;
    if (ds4_detok_stream_flush(ds, &piece, &piece_bytes, &err) == DS4_OK) ds4_dsml_feed(dp, piece, piece_bytes, &err);
    if (ds4_dsml_finish(dp, &parsed, &err)) memset(&parsed, 0, sizeof parsed);
    end_reasoning(&so);
    if (so.any_output && so.last != '\n') put(&so, "\n", 1);
    fflush(stdout);
    if (!strcmp(ts->stop, "interrupted")) fprintf(stderr, "ds4: [interrupted]\n");
    if (ts->n_generated == 0) {
        /* SERVER_CLI §10.4: nothing generated -> the turn is rolled back. */
        rc = !strcmp(ts->stop, "interrupted") ? 0 : 1;
        goto out_rollback;
    }
    /* Close the answer with EOS (evaluated as part of the next turn's prefix). */
    if (st->body[st->n_body - 1] != st->id_eos && body_push(st, st->id_eos)) goto out_rollback;
    if (add_msgs(st, text, text_bytes, &parsed)) {
        fprintf(stderr, "ds4: out of memory\n");
        goto out_rollback;
    }
    st->n_turns++;
    rc = 0;
    goto out_free;
out_rollback:
    st->n_body = body0;
out_free:
    ds4_parsed_clear(&parsed);
    ds4_dsml_parser_free(dp);
    ds4_detok_stream_free(ds);
    return rc;
}

/* ---- Reports ---------------------------------------------------------------------------------- */

void chat_print_summary(const chat_state *st) {
    const chat_turn_stats *t = &st->last;
    double pf = t->prefill_s > 0 ? t->n_prefilled / t->prefill_s : 0;
    double gr = t->gen_s > 0 ? t->n_generated / t->gen_s : 0;
    char disk[48] = "";
    if (t->n_from_disk) snprintf(disk, sizeof disk, ", %u from disk cache", t->n_from_disk);
    fprintf(stderr,
            "ds4: prompt %u tokens (reused %u%s, prefilled %u at %.1f t/s) | generated %u tokens at %.1f t/s"
            " | stop: %s | context %u/%u\n",
            t->n_prompt, t->n_reused, disk, t->n_prefilled, pf, t->n_generated, gr, t->stop,
            st->n_header + st->n_body, st->n_ctx);
}

void chat_print_stats(const chat_state *st) {
    ds4_memory_estimate me = {0};
    ds4_engine_memory_estimate(st->eng, st->n_ctx, &me, NULL);
    static const char *const modes[] = {"off (/nothink)", "high (/think)", "max (/think-max)"};
    fprintf(stderr,
            "model:      %u layers, dim %u, %u experts (%u used), vocab %u, %.2f GiB weights\n"
            "context:    %u / %u tokens in the transcript (header %u), session holds %u; max %u\n"
            "memory:     %.2f GiB for this context (%.1f KiB per token)\n"
            "turns:      %u   thinking: %s   seed: %llu   temp %.2f top-p %.2f top-k %d min-p %.3f\n",
            st->info.n_layer, st->info.n_embd, st->info.n_expert, st->info.n_expert_used, st->info.n_vocab,
            st->info.weight_bytes / 1073741824.0, st->n_header + st->n_body, st->n_ctx, st->n_header,
            ds4_session_pos(st->sess), st->info.n_ctx_max, me.total_bytes / 1073741824.0,
            me.kv_bytes_per_token / 1024.0, st->n_turns, modes[st->thinking],
            (unsigned long long)st->o->sp.seed, st->o->sp.temperature, st->o->sp.top_p, st->o->sp.top_k,
            st->o->sp.min_p);
    if (st->last.stop) {
        fprintf(stderr, "last turn:  ");
        chat_print_summary(st);
    }
}
