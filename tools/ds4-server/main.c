/*
 * tools/ds4-server/main.c — the ds4-server program: flags, startup order (listen first so
 * /health says 503 while the model loads), signal handling and clean shutdown (SERVER_CLI §9,
 * §7.3). All serving logic lives in src/serve/.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ds4.h"
#include "model/demo.h"
#include "serve/engine.h"
#include "serve/http.h"
#include "serve/kvstore.h"
#include "serve/metrics.h"
#include "serve/scheduler.h"
#include "serve/toolids.h"

static void usage(FILE *f) {
    fprintf(f,
        "usage: ds4-server [options]\n"
        "  -m, --model FILE            GGUF model (default ds4flash.gguf)\n"
        "      --demo                  serve a small random-weight model with the real V4 tokenizer\n"
        "                              (made once and cached like ./ds4 --demo): wire up clients\n"
        "                              without the weights; its answers are noise\n"
        "      --tokenizer FILE        tokenizer.json for building the --demo model\n"
        "  -c, --ctx N                 context tokens per slot (default 32768)\n"
        "  -n, --tokens N              default output limit when the client sets none (default 393216)\n"
        "  -t, --threads N             CPU threads (default: all cores)\n"
        "      --backend cpu|cuda      where the forward pass runs (default cuda in a `make cuda`\n"
        "                              build when a GPU is present, else cpu)\n"
        "      --gpu-layers-experts N  cuda: layers whose routed experts stay in GPU memory; the\n"
        "                              first layers' are read from pinned host memory over PCIe\n"
        "                              (slower; default: as many as fit)\n"
        "      --host ADDR             IPv4 address to bind (default 127.0.0.1; 0.0.0.0 exposes it)\n"
        "      --port N                TCP port (default 8000)\n"
        "      --api-key KEY           require 'Authorization: Bearer KEY' or 'x-api-key: KEY' (env DS4_API_KEY)\n"
        "      --cors                  allow cross-origin browser requests (Access-Control-Allow-Origin: *)\n"
        "      --slots N               live sessions (default: from the memory estimate, 1..8)\n"
        "      --queue N               waiting requests before 503 (default 32)\n"
        "      --timeout S             per-request time limit in seconds (default 0 = none)\n"
        "      --max-body-mb N         request body limit (default 64)\n"
        "      --kv-disk-dir DIR       disk KV cache directory (default: disabled)\n"
        "      --kv-disk-space-mb N    disk KV cache budget (default 4096)\n"
        "      --kv-cache-min-tokens N shortest prefix saved or loaded (default 512)\n"
        "      --kv-cache-interval-tokens N\n"
        "                              new prompt tokens between two saves of a conversation (default 8192)\n"
        "      --tool-memory-max-ids N exact-DSML tool memory size (default 100000)\n"
        "      --enable-test-forced-completion\n"
        "                              TEST ONLY: honour the request field ds4_test_forced_completion,\n"
        "                              which replaces sampled tokens by the given text\n"
        "  -h, --help\n");
}

static bool parse_int(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

/* One line per finished request on stderr (SERVER_CLI §8.1 in spirit). */
static void log_done(void *ud, const srv_job *j, int64_t prefill_ms, int64_t decode_ms) {
    (void)ud;
    static const char *apis[] = {"chat", "completions", "messages", "responses"};
    static const char *fins[] = {"stop", "length", "tool_calls", "error"};
    double tps = decode_ms > 0 ? j->usage.completion_tokens * 1000.0 / (double)decode_ms : 0.0;
    fprintf(stderr, "ds4-server: %s%s prompt=%d cached=%d gen=%d finish=%s prefill=%lldms decode=%lldms (%.1f tok/s)\n",
            apis[j->req.api], j->req.stream ? " stream" : "", j->usage.prompt_tokens, j->usage.cached_tokens,
            j->usage.completion_tokens, fins[j->finish], (long long)prefill_ms, (long long)decode_ms, tps);
}

static void import_trailer(void *ud, const unsigned char *t, size_t n) { srv_toolmem_import(ud, t, n); }

static void demo_start(void *ud, const char *tok_path) {
    (void)ud;
    fprintf(stderr, "ds4-server: making the demo model once (random weights, V4 tokenizer from %s)...\n", tok_path);
}

static bool is_flag(const char *a, const char *s1, const char *s2) {
    return strcmp(a, s1) == 0 || (s2 && strcmp(a, s2) == 0);
}

int main(int argc, char **argv) {
    const char *model = "ds4flash.gguf", *host = "127.0.0.1", *kv_dir = NULL, *tokenizer = NULL;
    const char *backend = NULL; /* default: ds4_default_backend() below */
    char *demo_path = NULL;
    const char *api_key = getenv("DS4_API_KEY");
    long ctx = 32768, tokens = 393216, threads = 0, port = 8000, slots = 0, queue = 32, timeout = 0;
    long body_mb = 64, kv_mb = 4096, kv_min = 512, kv_interval = 8192, tool_ids = 100000;
    long gpu_layers = -1;
    bool cors = false, test_forced = false, demo = false, model_given = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define INTFLAG(s1, s2, var, lo, hi) \
        if (is_flag(a, s1, s2)) { \
            if (!v || !parse_int(v, lo, hi, &var)) { fprintf(stderr, "ds4-server: %s needs an integer in %ld..%ld\n", a, (long)(lo), (long)(hi)); usage(stderr); return 2; } \
            i++; continue; }
        INTFLAG("-c", "--ctx", ctx, 2, INT_MAX)
        INTFLAG("-n", "--tokens", tokens, 1, INT_MAX)
        INTFLAG("-t", "--threads", threads, 0, 1024)
        INTFLAG("--port", NULL, port, 0, 65535)
        INTFLAG("--slots", NULL, slots, 1, 256)
        INTFLAG("--queue", NULL, queue, 1, 100000)
        INTFLAG("--timeout", NULL, timeout, 0, 86400 * 7)
        INTFLAG("--max-body-mb", NULL, body_mb, 1, 4096)
        INTFLAG("--kv-disk-space-mb", NULL, kv_mb, 1, 1L << 30)
        INTFLAG("--kv-cache-min-tokens", NULL, kv_min, 1, INT_MAX)
        INTFLAG("--kv-cache-interval-tokens", NULL, kv_interval, 1, INT_MAX)
        INTFLAG("--tool-memory-max-ids", NULL, tool_ids, 1, 100000000)
        INTFLAG("--gpu-layers-experts", NULL, gpu_layers, 0, 1000000)
#undef INTFLAG
        if ((strcmp(a, "-m") == 0 || strcmp(a, "--model") == 0) && v) { model = v; model_given = true; i++; }
        else if (strcmp(a, "--host") == 0 && v) { host = v; i++; }
        else if (strcmp(a, "--api-key") == 0 && v) { api_key = v; i++; }
        else if (strcmp(a, "--kv-disk-dir") == 0 && v) { kv_dir = v; i++; }
        else if (strcmp(a, "--tokenizer") == 0 && v) { tokenizer = v; i++; }
        else if (strcmp(a, "--backend") == 0 && v) {
            if (strcmp(v, "cpu") != 0 && strcmp(v, "cuda") != 0) {
                fprintf(stderr, "ds4-server: --backend must be cpu or cuda, not '%s'\n", v);
                usage(stderr);
                return 2;
            }
            backend = v;
            i++;
        }
        else if (strcmp(a, "--demo") == 0) demo = true;
        else if (strcmp(a, "--cors") == 0) cors = true;
        else if (strcmp(a, "--enable-test-forced-completion") == 0) test_forced = true;
        else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) { usage(stdout); return 0; }
        else { fprintf(stderr, "ds4-server: unknown or incomplete option '%s'\n", a); usage(stderr); return 2; }
    }

    if (demo && model_given) {
        fprintf(stderr, "ds4-server: --demo makes its own model; drop -m/--model\n");
        usage(stderr);
        return 2;
    }
    if (!backend) { /* issue #7: the GPU when there is one (CUDA builds), saying so */
        backend = ds4_default_backend();
#ifdef DS4_CUDA
        fprintf(stderr, "ds4-server: backend %s (%s; --backend cpu|cuda to choose)\n", backend,
                strcmp(backend, "cuda") ? "no CUDA device found" : "a CUDA device is present");
#endif
    }
    if (gpu_layers >= 0) {
        if (strcmp(backend, "cuda") != 0) {
            fprintf(stderr, "ds4-server: --gpu-layers-experts places experts on the GPU: it needs --backend cuda\n");
            usage(stderr);
            return 2;
        }
    }
    if (tokenizer && !demo) {
        fprintf(stderr, "ds4-server: --tokenizer only builds the --demo model (a GGUF carries its tokenizer)\n");
        usage(stderr);
        return 2;
    }

    /* Signals are taken by sigwait in this thread only: block them before any thread starts. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    srv_metrics metrics;
    memset(&metrics, 0, sizeof metrics);
    ds4_error err;
    srv_http_opts ho = {.host = host, .port = (int)port, .api_key = api_key, .cors = cors,
                        .max_body_bytes = (size_t)body_mb << 20, .allow_test_forced = test_forced};
    srv_http *http = NULL;
    if (srv_http_start(&http, &ho, &metrics, &err)) { fprintf(stderr, "ds4-server: %s\n", err.msg); return 1; }
    if (demo) {
        model_demo_progress dp = {.start = demo_start};
        ds4_status st = model_demo_ensure(tokenizer, &dp, &demo_path, &err);
        if (st) {
            fprintf(stderr, "ds4-server: --demo%s: %s\n",
                    st == DS4_ERR_NOT_FOUND ? " needs the DeepSeek V4 tokenizer.json to build its model" : "", err.msg);
            srv_http_stop(http);
            return 1;
        }
        model = demo_path;
        fprintf(stderr, "ds4-server: DEMO MODE: serving %s, a model with RANDOM WEIGHTS: its answers are "
                        "noise; it exists to wire up clients without the real model\n", model);
    }
    fprintf(stderr, "ds4-server: listening on http://%s:%d (loading %s)\n", host, srv_http_port(http), model);
    if (test_forced) fprintf(stderr, "ds4-server: WARNING: test-only forced completions are enabled\n");
    if (api_key && !*api_key) api_key = NULL;
    if (!api_key && strcmp(host, "127.0.0.1") != 0 && strcmp(host, "localhost") != 0)
        fprintf(stderr, "ds4-server: WARNING: listening on %s without --api-key\n", host);

    srv_engine eng;
    bool on_gpu = strcmp(backend, "cuda") == 0;
    /* device state the GPU auto-fit leaves room for: every slot's context (one by default) */
    uint64_t gpu_ctx = (uint64_t)ctx * (uint64_t)(slots ? slots : 1);
    srv_ds4_opts eo = {.model_path = model, .n_ctx = (int)ctx, .n_threads = (int)threads,
                       .backend = backend, .gpu_layers_experts = (int)gpu_layers,
                       .gpu_ctx_tokens = gpu_ctx > UINT32_MAX ? UINT32_MAX : (uint32_t)gpu_ctx};
    if (srv_engine_ds4_open(&eng, &eo, &err)) {
        fprintf(stderr, "ds4-server: %s\n", err.msg);
        srv_http_stop(http);
        free(demo_path);
        return 1;
    }
    if (eng.host_expert_bytes)
        fprintf(stderr, "ds4-server: routed experts of %u of %u layers in host memory (%.2f GiB, read over "
                        "PCIe: slower); --gpu-layers-experts N to choose\n",
                eng.n_layer - eng.gpu_layers_experts, eng.n_layer, (double)eng.host_expert_bytes / (1u << 30));
    if (slots == 0) {
        /* Default: as many slots as half the free memory holds, 1..8 (issue #6). */
        uint64_t per = 0;
        long pages = sysconf(_SC_AVPHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
        slots = 1;
        if (srv_engine_ds4_session_bytes(&eng, (int)ctx, &per, &err) == DS4_OK && per > 0 && pages > 0 && psz > 0) {
            uint64_t avail = (uint64_t)pages * (uint64_t)psz / 2;
            slots = (long)(avail / per);
            if (slots < 1) slots = 1;
            if (slots > 8) slots = 8;
        }
    }
    int rc = 1;
    srv_kvstore *kv = NULL;
    srv_toolmem *tm = NULL;
    srv_sched *sched = NULL;
    if (kv_dir && srv_kv_open(&kv, kv_dir, (uint64_t)kv_mb << 20, eng.model_id, &metrics, &err)) {
        fprintf(stderr, "ds4-server: disk KV cache disabled: %s\n", err.msg);
        kv = NULL;
    }
    if (srv_toolmem_create(&tm, (size_t)tool_ids, (size_t)512 << 20, &err)) { fprintf(stderr, "ds4-server: %s\n", err.msg); goto out; }
    if (kv) srv_kv_each_trailer(kv, import_trailer, tm); /* exact replay survives restarts */
    srv_sched_opts so = {.n_slots = (int)slots, .queue_max = (int)queue, .timeout_s = (int)timeout, .kv = kv,
                         .kv_min_tokens = (size_t)kv_min,
                         .kv_interval_tokens = (size_t)kv_interval, .toolmem = tm, .metrics = &metrics,
                         /* GPU: batched prefill wants 2048-token chunks (ds4_session_prefill_chunk) */
                         .prefill_chunk = on_gpu ? 2048 : 512,
                         .on_done = log_done};
    if (srv_sched_create(&sched, &eng, &so, &err)) { fprintf(stderr, "ds4-server: %s\n", err.msg); goto out; }
    srv_limits lim = {.max_depth = 64, .n_ctx = (int)ctx, .default_max_tokens = (int)tokens};
    srv_http_set_toolmem(http, tm);
    srv_http_set_ready(http, &eng, sched, &lim);
    fprintf(stderr, "ds4-server: ready: ctx=%ld slots=%ld queue=%ld kv-cache=%s%s\n", ctx, slots, queue, kv ? kv_dir : "off",
            demo ? " model=DEMO (random weights)" : "");

    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "ds4-server: %s: shutting down (again to exit at once)\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    pthread_sigmask(SIG_UNBLOCK, &sigs, NULL);
    srv_http_quiesce(http);
    srv_sched_stop(sched);
    rc = 0;
out:
    srv_http_stop(http);
    srv_sched_destroy(sched);
    srv_toolmem_free(tm);
    srv_kv_close(kv);
    srv_engine_ds4_close(&eng);
    free(demo_path);
    return rc;
}
