/*
 * tools/ds4/chat_args.c — the flags of `ds4` chat (SERVER_CLI §10.2, issue #5) and --help.
 * Owns parsing and range checks only: argument errors print the reason and exit status 2;
 * nothing here opens files or the model.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chat.h"

void chat_usage(FILE *f) {
    fprintf(f,
            "usage: ds4 [-m MODEL.gguf] [-p PROMPT | --prompt-file FILE] [options]\n"
            "       ds4 --demo                 try the pipeline on a small random-weight model\n"
            "\n"
            "Without -p, ds4 starts an interactive chat (type /help there).\n"
            "\n"
            "model and engine:\n"
            "  -m, --model FILE        GGUF model (default ./ds4flash.gguf)\n"
            "  -c, --ctx N             context tokens (default 32768, at most the model's)\n"
            "  -t, --threads N         CPU threads (default: one per core)\n"
            "  --backend cpu|cuda      compute backend (--cpu, --cuda alike; default cuda when\n"
            "                          built with CUDA and a GPU is present, else cpu)\n"
            "  --gpu-layers-experts N  cuda: layers whose routed experts stay in GPU memory; the\n"
            "                          first layers' are read from pinned host memory over PCIe\n"
            "                          (slower; default: as many as fit)\n"
            "  --mtp FILE              companion MTP GGUF\n"
            "  --warm-weights          read the whole model into the page cache first (with a\n"
            "                          progress bar); default when it fits in RAM on a terminal\n"
            "  --no-warm-weights       never do that\n"
            "  --kv-disk-dir DIR       resume the longest cached prompt prefix from DIR (the\n"
            "                          server's disk KV cache) and store new ones there\n"
            "  --kv-disk-space-mb N    disk budget of that cache (default 4096)\n"
            "  --kv-cache-min-tokens N shortest prefix worth caching (default 512)\n"
            "prompt:\n"
            "  -p, --prompt TEXT       one-shot: answer TEXT and exit\n"
            "  --prompt-file FILE      one-shot with the whole file as the prompt\n"
            "  -sys, --system TEXT     system text (default \"" CHAT_DEFAULT_SYSTEM "\"; \"\" = none)\n"
            "  --think                 thinking, high effort (default, as DeepSeek's API)\n"
            "  --think-max             Think Max (needs --ctx >= %u, else high)\n"
            "  --nothink               answer without thinking\n"
            "  --show-reasoning        print the reasoning even when stdout is not a terminal\n"
            "sampling:\n"
            "  -n, --tokens N          max new tokens per answer (default 50000)\n"
            "  --temp F                temperature 0..100 (default 1; 0 = greedy)\n"
            "  --top-p F               0..1 (default 1)\n"
            "  --top-k N               0 = whole vocabulary (default 0)\n"
            "  --min-p F               0..1 (default 0.05)\n"
            "  --seed N                > 0 (default from time and pid)\n"
            "other modes:\n"
            "  --demo [--tokenizer tokenizer.json]   random-weight demo (output is noise)\n"
            "  --tokenize TEXT, --detokenize IDS, --render-chat CONV.json,\n"
            "  --prompt-tokens FILE --dump-logits OUT   (see docs/CLI.md)\n"
            "  --version, -h, --help\n",
            CHAT_THINK_MAX_MIN_CTX);
}

static int bad(const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "ds4: ");
    fprintf(stderr, fmt, a, b ? b : "");
    fprintf(stderr, "\n(see ds4 --help)\n");
    return 2;
}

static int parse_u64(const char *flag, const char *v, uint64_t lo, uint64_t hi, uint64_t *out) {
    char *end;
    errno = 0;
    if (!v) return bad("%s needs a value", flag, NULL);
    unsigned long long x = strtoull(v, &end, 10);
    if (!*v || *end || errno || v[0] == '-' || x < lo || x > hi) {
        char range[96];
        snprintf(range, sizeof range, "an integer in [%llu, %llu], got '%s'", (unsigned long long)lo,
                 (unsigned long long)hi, v);
        return bad("%s needs %s", flag, range);
    }
    *out = x;
    return 0;
}

static int parse_f(const char *flag, const char *v, double lo, double hi, float *out) {
    char *end;
    errno = 0;
    if (!v) return bad("%s needs a value", flag, NULL);
    double x = strtod(v, &end);
    if (!*v || *end || errno || !isfinite(x) || x < lo || x > hi) {
        char range[96];
        snprintf(range, sizeof range, "a number in [%g, %g], got '%s'", lo, hi, v);
        return bad("%s needs %s", flag, range);
    }
    *out = (float)x;
    return 0;
}

static bool is(const char *a, const char *x, const char *y) {
    return !strcmp(a, x) || (y && !strcmp(a, y));
}

int chat_args_parse(chat_opts *o, int argc, char **argv) {
    memset(o, 0, sizeof *o);
    o->model_path = "./ds4flash.gguf";
    o->system = CHAT_DEFAULT_SYSTEM;
    o->n_predict = 50000;
    o->thinking = DS4_THINKING_HIGH;
    o->backend = NULL; /* chat_open: the GPU when there is one (CUDA builds) */
    o->gpu_layers_experts = -1;
    o->kv_disk_mb = 4096;
    o->kv_min_tokens = 512;
    o->warm = -1;
    ds4_sampling_params_init(&o->sp);
    bool model_given = false;
    int n_think = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t u = 0;
        int rc = 0;
        if (is(a, "-h", "--help")) o->help = true;
        else if (is(a, "-m", "--model")) { if (!v) return bad("%s needs a value", a, NULL); o->model_path = v; model_given = true; i++; }
        else if (is(a, "-p", "--prompt")) { if (!v) return bad("%s needs a value", a, NULL); o->prompt = v; i++; }
        else if (is(a, "--prompt-file", NULL)) { if (!v) return bad("%s needs a value", a, NULL); o->prompt_file = v; i++; }
        else if (is(a, "-sys", "--system")) { if (!v) return bad("%s needs a value", a, NULL); o->system = v; i++; }
        else if (is(a, "-c", "--ctx")) { rc = parse_u64(a, v, 16, UINT32_MAX, &u); o->n_ctx = (uint32_t)u; i++; }
        else if (is(a, "-n", "--tokens")) { rc = parse_u64(a, v, 1, UINT32_MAX, &u); o->n_predict = (uint32_t)u; i++; }
        else if (is(a, "-t", "--threads")) { rc = parse_u64(a, v, 1, 4096, &u); o->n_threads = (int)u; i++; }
        else if (is(a, "--temp", "--temperature")) { rc = parse_f(a, v, 0, 100, &o->sp.temperature); i++; }
        else if (is(a, "--top-p", NULL)) {
            rc = parse_f(a, v, 0, 1, &o->sp.top_p);
            if (!rc && o->sp.top_p <= 0) return bad("--top-p must be above 0 (1 = off), got '%s'", v, NULL);
            i++;
        }
        else if (is(a, "--min-p", NULL)) { rc = parse_f(a, v, 0, 1, &o->sp.min_p); i++; }
        else if (is(a, "--top-k", NULL)) { rc = parse_u64(a, v, 0, INT32_MAX, &u); o->sp.top_k = (int32_t)u; i++; }
        else if (is(a, "--seed", NULL)) { rc = parse_u64(a, v, 1, UINT64_MAX, &u); o->sp.seed = u; o->seed_given = true; i++; }
        else if (is(a, "--think", NULL)) { o->thinking = DS4_THINKING_HIGH; n_think++; }
        else if (is(a, "--think-max", NULL)) { o->thinking = DS4_THINKING_MAX; n_think++; }
        else if (is(a, "--nothink", "--no-think")) { o->thinking = DS4_THINKING_NONE; n_think++; }
        else if (is(a, "--show-reasoning", NULL)) o->show_reasoning = true;
        else if (is(a, "--backend", NULL)) {
            if (!v) return bad("%s needs a value", a, NULL);
            if (strcmp(v, "cpu") && strcmp(v, "cuda")) return bad("--backend is cpu or cuda, got '%s'", v, NULL);
            o->backend = v;
            i++;
        }
        else if (is(a, "--cpu", NULL)) o->backend = "cpu";
        else if (is(a, "--cuda", NULL)) o->backend = "cuda";
        else if (is(a, "--metal", NULL)) return bad("--metal: ds4 has no Metal backend; use --backend cpu or cuda", NULL, NULL);
        else if (is(a, "--gpu-layers-experts", NULL)) { rc = parse_u64(a, v, 0, 1000000, &u); o->gpu_layers_experts = (int)u; i++; }
        else if (is(a, "--mtp", NULL)) { if (!v) return bad("%s needs a value", a, NULL); o->mtp_path = v; i++; }
        else if (is(a, "--kv-disk-dir", NULL)) { if (!v) return bad("%s needs a value", a, NULL); o->kv_disk_dir = v; i++; }
        else if (is(a, "--kv-disk-space-mb", NULL)) { rc = parse_u64(a, v, 1, 1u << 30, &o->kv_disk_mb); i++; }
        else if (is(a, "--kv-cache-min-tokens", NULL)) { rc = parse_u64(a, v, 1, UINT32_MAX, &u); o->kv_min_tokens = (uint32_t)u; i++; }
        else if (is(a, "--warm-weights", NULL)) o->warm = 1;
        else if (is(a, "--no-warm-weights", NULL)) o->warm = 0;
        else if (is(a, "--demo", NULL)) o->demo = true;
        else if (is(a, "--tokenizer", NULL)) { if (!v) return bad("%s needs a value", a, NULL); o->tokenizer = v; i++; }
        else if (is(a, "--server", NULL)) return bad("--server: use ds4-server for the HTTP server", NULL, NULL);
        else return bad("unknown option '%s'", a, NULL);
        if (rc) return rc;
    }
    if (o->help) return 0;
    if (o->prompt && o->prompt_file) return bad("specify only one prompt source (-p or --prompt-file)", NULL, NULL);
    if (n_think > 1) return bad("give at most one of --think, --think-max, --nothink", NULL, NULL);
    if (o->demo && model_given) return bad("--demo makes its own model; drop -m", NULL, NULL);
    if (o->gpu_layers_experts >= 0 && o->backend && strcmp(o->backend, "cuda"))
        return bad("--gpu-layers-experts places experts on the GPU: it needs --backend cuda", NULL, NULL);
    if (o->tokenizer && !o->demo) return bad("--tokenizer is only for --demo (a GGUF carries its tokenizer)", NULL, NULL);
    if (!o->seed_given) {
        /* SERVER_CLI §10.2: time/pid based, never 0. */
        uint64_t s = (uint64_t)time(NULL) * 6364136223846793005ull ^ (uint64_t)getpid();
        o->sp.seed = s ? s : 1;
    }
    return 0;
}
