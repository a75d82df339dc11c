/*
 * tools/ds4-bench/main.c — ds4-bench: loads a model once and measures prefill and greedy
 * generation throughput at growing context frontiers (SERVER_CLI §11). Each frontier's prefill
 * timing covers only the tokens added since the previous one (the session keeps its state); the
 * generation probe runs from an in-memory snapshot that is restored afterwards, so probes never
 * leak into the next interval. Owns the measuring loop; the outputs are in report.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "ds4.h"

/* One per online core, as the engine's default. */
static int ds4_cpu_threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CPU seconds of the whole process (all threads): on a shared machine tokens / CPU seconds
 * shows what an unloaded single thread would do; printed beside the wall-clock rates. */
static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int read_ids(const char *path, uint32_t n_vocab, int32_t **out, uint32_t *n_out) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "ds4-bench: cannot open %s: %s\n", path, strerror(errno));
        return 1;
    }
    uint32_t n = 0, cap = 1024;
    int32_t *ids = malloc(cap * sizeof *ids);
    long long v;
    int c;
    while (ids) {
        while ((c = fgetc(f)) == ',' || c == ' ' || c == '\n' || c == '\t' || c == '\r') {}
        if (c == EOF) break;
        ungetc(c, f);
        if (fscanf(f, "%lld", &v) != 1 || v < 0 || v >= n_vocab) {
            fprintf(stderr, "ds4-bench: %s: token %u is not an id in [0, %u)\n", path, n, n_vocab);
            free(ids);
            fclose(f);
            return 1;
        }
        if (n == cap) {
            int32_t *p = realloc(ids, 2 * (size_t)cap * sizeof *ids);
            if (!p) {
                free(ids);
                ids = NULL;
                fprintf(stderr, "ds4-bench: out of memory reading %s\n", path);
                break;
            }
            ids = p;
            cap *= 2;
        }
        ids[n++] = (int32_t)v;
    }
    fclose(f);
    if (!ids) return 1;
    *out = ids;
    *n_out = n;
    return 0;
}

/* SERVER_CLI §11: --chat-prompt-file is one non-thinking user turn after a system message,
 * rendered by the chat encoder (BOS, system, <｜User｜>, text, <｜Assistant｜></think>). */
static char *render_chat(const char *system, const char *text, size_t *n_out) {
    ds4_error err = {0};
    ds4_chat *chat = NULL;
    char *out = NULL;
    ds4_chat_msg sys = {.role = DS4_ROLE_SYSTEM, .content = system};
    ds4_chat_msg user = {.role = DS4_ROLE_USER, .content = text};
    if (ds4_chat_create(&chat, DS4_THINKING_NONE, &err) != DS4_OK || ds4_chat_add(chat, &sys, &err) != DS4_OK ||
        ds4_chat_add(chat, &user, &err) != DS4_OK || ds4_chat_render(chat, &out, n_out, &err) != DS4_OK) {
        fprintf(stderr, "ds4-bench: rendering the chat prompt: %s\n", err.msg);
        out = NULL;
    }
    ds4_chat_free(chat);
    return out;
}

static int tokenize_file(const char *model_path, const char *path, const char *chat_system, int32_t **out,
                         uint32_t *n_out, int32_t *eos) {
    ds4_error err = {0};
    ds4_tokenizer *tok = NULL;
    char *text = NULL;
    int rc = 1;
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "ds4-bench: cannot open --prompt-file %s: %s\n", path, strerror(errno));
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    text = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!text || (n > 0 && fread(text, 1, (size_t)n, f) != (size_t)n)) {
        fprintf(stderr, "ds4-bench: cannot read %s\n", path);
        goto out;
    }
    if (ds4_tokenizer_open(&tok, model_path, &err) != DS4_OK) {
        fprintf(stderr, "ds4-bench: --prompt-file needs the model's tokenizer: %s\n", err.msg);
        goto out;
    }
    int32_t *ids = NULL;
    size_t n_ids = 0;
    uint32_t flags = DS4_TOKENIZE_SPECIAL_AS_TEXT; /* raw text: plain BPE, no control tokens */
    if (chat_system) {
        text[n] = '\0';
        size_t nr = 0;
        char *r = render_chat(chat_system, text, &nr);
        if (!r) goto out;
        free(text);
        text = r;
        n = (long)nr;
        flags = 0; /* the rendered markers are control tokens */
    }
    if (ds4_tokenize(tok, text, (size_t)n, flags, &ids, &n_ids, &err) != DS4_OK) {
        fprintf(stderr, "ds4-bench: tokenizing %s: %s\n", path, err.msg);
        goto out;
    }
    if (ds4_tokenizer_special_id(tok, "<｜end▁of▁sentence｜>", eos, NULL) != DS4_OK) *eos = -1;
    *out = ids;
    *n_out = n_ids > UINT32_MAX ? UINT32_MAX : (uint32_t)n_ids;
    rc = 0;
out:
    if (tok) ds4_tokenizer_free(tok);
    free(text);
    fclose(f);
    return rc;
}

/* Greedy argmax skipping eos (so every probe decodes the same count, as ds4 does). */
static int32_t argmax_no_eos(const float *l, uint32_t n, int32_t eos) {
    int32_t best = -1;
    for (uint32_t i = 0; i < n; i++)
        if ((int32_t)i != eos && (best < 0 || l[i] > l[best])) best = (int32_t)i;
    return best;
}

int32_t *bench_random_tokens(uint64_t seed, uint32_t n, uint32_t n_vocab) {
    int32_t *tokens = malloc((size_t)(n ? n : 1) * sizeof *tokens);
    if (!tokens) return NULL;
    uint64_t x = seed;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t z = (x += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        tokens[i] = (int32_t)((z ^ (z >> 31)) % n_vocab);
    }
    return tokens;
}

int main(int argc, char **argv) {
    bench_opts o;
    int pr = bench_parse_args(&o, argc, argv);
    if (pr) return pr < 0 ? 0 : pr;
    if (o.synthetic) return bench_synthetic(&o);
    int rc = 1;
    ds4_error err = {0};
    ds4_engine *eng = NULL;
    ds4_session *s = NULL;
    int32_t *tokens = NULL, eos = -1;
    uint32_t n_tokens = 0, *front = NULL, n_front = 0;
    bench_row *rows = NULL;
    FILE *csv = stdout;
    ds4_engine_options eo;
    ds4_engine_options_init(&eo);
    eo.n_threads = o.n_threads;
    eo.exact_activations = o.exact_act != 0; /* checking mode: measures its cost */
    if (o.backend) eo.backend = o.backend;
    eo.gpu_layers_experts = o.gpu_layers_experts; /* issue #7: experts in host memory */
    eo.gpu_ctx_tokens = o.ctx_alloc;
    double t0 = now_s();
    if (ds4_engine_open(&eng, o.model_path, &eo, &err) != DS4_OK) goto out_err;
    ds4_model_info info;
    ds4_engine_info(eng, &info, NULL);
    fprintf(stderr, "ds4-bench: loaded %s in %.2f s (%u layers, vocab %u, %.2f GiB weights)\n", o.model_path,
            now_s() - t0, info.n_layer, info.n_vocab, (double)info.weight_bytes / (1u << 30));
    if (info.host_expert_bytes)
        fprintf(stderr, "ds4-bench: routed experts of %u of %u layers in pinned host memory (%.2f GiB, read over PCIe)\n",
                info.n_layer - info.gpu_layers_experts, info.n_layer, (double)info.host_expert_bytes / (1u << 30));
    uint64_t wpt = bench_weight_bytes_per_token(eng);
    double bound = 0;
    if (o.membw) {
        int nt = o.n_threads > 0 ? o.n_threads : ds4_cpu_threads();
        double cbw = 0, bw = bench_read_bandwidth(nt, (size_t)512 << 20, &cbw);
        bound = bw > 0 ? bw / (double)wpt : 0;
        fprintf(stderr,
                "ds4-bench: weights read per decoded token %.2f MB; read bandwidth %.2f GB/s wall, %.2f GB/s "
                "per cpu-s (%d threads, 512 MiB); decode bound %.2f tok/s wall, %.2f per cpu-s\n",
                (double)wpt / 1e6, bw / 1e9, cbw / 1e9, nt, bound, cbw / (double)wpt);
    } else {
        fprintf(stderr, "ds4-bench: weights read per decoded token %.2f MB\n", (double)wpt / 1e6);
    }
    if (o.prompt_file || o.chat_prompt_file) {
        if (tokenize_file(o.model_path, o.prompt_file ? o.prompt_file : o.chat_prompt_file,
                          o.chat_prompt_file ? o.system : NULL, &tokens, &n_tokens, &eos))
            goto out;
    } else if (o.prompt_tokens) {
        if (read_ids(o.prompt_tokens, info.n_vocab, &tokens, &n_tokens)) goto out;
    } else {
        /* A fixed pseudo-random sequence (splitmix64 of --seed): same tokens on every run. */
        n_tokens = o.ctx_max;
        tokens = bench_random_tokens(o.seed, n_tokens, info.n_vocab);
        if (!tokens) goto out_nomem;
    }
    if (n_tokens < o.ctx_max) {
        fprintf(stderr, "ds4-bench: the prompt has %u tokens, --ctx-max needs %u\n", n_tokens, o.ctx_max);
        goto out;
    }
    if (o.ctx_alloc > info.n_ctx_max) {
        fprintf(stderr, "ds4-bench: context %u exceeds the model's %u\n", o.ctx_alloc, info.n_ctx_max);
        goto out;
    }
    ds4_memory_estimate me;
    if (ds4_engine_memory_estimate(eng, o.ctx_alloc, &me, &err) != DS4_OK) goto out_err;
    fprintf(stderr, "ds4-bench: session of %u tokens: %.1f MiB (%.1f fixed + %llu B/token)\n", o.ctx_alloc,
            (double)me.total_bytes / (1 << 20), (double)me.fixed_bytes / (1 << 20),
            (unsigned long long)me.kv_bytes_per_token);
    if (ds4_session_create(&s, eng, o.ctx_alloc, &err) != DS4_OK) goto out_err;
    if (ds4_session_set_prefill_chunk(s, o.prefill_chunk, &err) != DS4_OK) goto out_err;
    n_front = bench_frontiers(&o, &front);
    rows = calloc(n_front ? n_front : 1, sizeof *rows);
    if (!front || !rows) goto out_nomem;
    if (o.csv_path) {
        csv = fopen(o.csv_path, "w");
        if (!csv) {
            fprintf(stderr, "ds4-bench: cannot create %s: %s\n", o.csv_path, strerror(errno));
            csv = stdout;
            goto out;
        }
    }
    bench_csv_header(csv);
    uint32_t prev = 0;
    for (uint32_t fi = 0; fi < n_front; fi++) {
        bench_row *r = &rows[fi];
        r->ctx_tokens = front[fi];
        r->prefill_tokens = front[fi] - prev;
        ds4_sync_stats ss;
        double a = now_s(), ca = cpu_s();
        if (ds4_session_sync(s, tokens, front[fi], &ss, &err) != DS4_OK) goto out_err;
        double dt = now_s() - a, pcpu = cpu_s() - ca;
        if (ss.n_evaluated != r->prefill_tokens) {
            fprintf(stderr, "ds4-bench: sync evaluated %u tokens, expected %u (state not kept?)\n", ss.n_evaluated,
                    r->prefill_tokens);
            goto out;
        }
        r->prefill_tps = dt > 0 ? r->prefill_tokens / dt : 0;
        uint8_t *snap = NULL;
        uint64_t snap_bytes = 0;
        if (ds4_session_snapshot(s, &snap, &snap_bytes, &err) != DS4_OK) goto out_err;
        r->kvcache_bytes = snap_bytes;
        r->gen_tokens = o.gen_tokens;
        a = now_s();
        ca = cpu_s();
        for (uint32_t g = 0; g < o.gen_tokens; g++) {
            const float *l;
            if (ds4_session_logits(s, &l, &err) != DS4_OK ||
                ds4_session_eval(s, argmax_no_eos(l, info.n_vocab, eos), &err) != DS4_OK) {
                free(snap);
                goto out_err;
            }
        }
        dt = now_s() - a;
        double gcpu = cpu_s() - ca;
        r->gen_tps = dt > 0 && o.gen_tokens ? o.gen_tokens / dt : 0;
        ds4_status st = ds4_session_restore(s, snap, snap_bytes, &err);
        free(snap);
        if (st != DS4_OK) goto out_err;
        bench_csv_row(csv, r);
        fprintf(stderr, "ds4-bench: ctx %6u  prefill %6u tok %9.2f tok/s  gen %4u tok %8.2f tok/s",
                r->ctx_tokens, r->prefill_tokens, r->prefill_tps, r->gen_tokens, r->gen_tps);
        if (bound > 0) fprintf(stderr, " (%.0f%% of bound)", 100.0 * r->gen_tps / bound);
        fprintf(stderr, "  kv %.1f MiB  [per cpu-s: prefill %.2f, gen %.2f]\n", (double)r->kvcache_bytes / (1 << 20),
                pcpu > 0 ? r->prefill_tokens / pcpu : 0, gcpu > 0 && o.gen_tokens ? o.gen_tokens / gcpu : 0);
        prev = front[fi];
    }
    if (o.svg_path && bench_write_svg(o.svg_path, o.title ? o.title : o.model_path, rows, n_front)) goto out;
    rc = 0;
    goto out;
out_nomem:
    fprintf(stderr, "ds4-bench: out of memory\n");
    goto out;
out_err:
    fprintf(stderr, "ds4-bench: %s\n", err.msg);
out:
    if (csv != stdout && fclose(csv) != 0) rc = 1;
    free(rows);
    free(front);
    free(tokens);
    ds4_session_free(s);
    ds4_engine_close(eng);
    return rc;
}
