/*
 * tools/ds4-bench/report.c — ds4-bench's flags, frontier schedule and outputs (CSV in ds4's
 * columns, an SVG chart). Knows nothing about the engine.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: ds4-bench --model M.gguf [--prompt-file TEXT | --prompt-tokens IDS |\n"
            "                 --chat-prompt-file TEXT [--system S]]\n"
            "                 [--ctx-start N] [--ctx-max N] [--ctx-alloc N] [--step-incr N]\n"
            "                 [--step-mul F] [--gen-tokens N] [--prefill-chunk N] [--threads N]\n"
            "                 [--out CSV] [--svg FILE] [--title T] [--seed S] [--no-membw]\n"
            "                 [--exact-activations] [--backend cpu|cuda]\n"
            "       ds4-bench --synthetic flash|tiny|CONFIG.json [--layers N] [--experts N]\n"
            "                 [--preset q2|q4|q8_0|f16|...] [--backend cpu|cuda] [--profile N]\n"
            "                 [--profile-prefill] [--sample]\n"
            "                 [options above]\n"
            "       --backend: default cuda when built with CUDA and a GPU is present, else cpu;\n"
            "       --gpu-layers-experts N (cuda): layers whose routed experts stay on the GPU, the\n"
            "                 first layers' in pinned host memory (default: as many as fit)\n"
            "Walks one token sequence to each context frontier with incremental prefill and\n"
            "measures prefill tokens/s of each interval and greedy generation tokens/s at each\n"
            "frontier (state snapshotted before and restored after the probe). Without a prompt\n"
            "the sequence is pseudo-random token ids from --seed. CSV goes to stdout unless\n"
            "--out is given; progress goes to stderr, with the decode bound (weight bytes\n"
            "read per token / measured read bandwidth) unless --no-membw.\n"
            "--synthetic builds random weights of that shape in memory (no file; quantized\n"
            "blocks made on the GPU with --backend cuda) and checks the logits stay finite.\n"
            "--profile N (with --synthetic, --backend cuda): after the last frontier, the time of\n"
            "N decode steps as one CUDA graph, then N steps op by op with CUDA events, each\n"
            "layer's ops held at a device-side gate until all are queued (GPU time back to\n"
            "back, not launch gaps); prints ms per call site, share of the step, calls per step.\n"
            "--profile-prefill (with --synthetic, --backend cuda): at the end, one prefill chunk\n"
            "(min(--prefill-chunk, --ctx-max) tokens) from position 0 again, op by op with CUDA\n"
            "events, each layer gated the same way; prints ms per call site of the chunk.\n"
            "--sample (with --synthetic): at each frontier the same decode steps again, drawn by\n"
            "the sampler at its defaults (T 1, min_p 0.05): with --backend cuda once on the\n"
            "device (only the id downloaded) and once through the logits and the host sampler.\n");
}

static int num_u32(const char *flag, const char *v, uint32_t lo, uint32_t *out) {
    char *end;
    errno = 0;
    unsigned long long x = v ? strtoull(v, &end, 10) : 0;
    if (!v || !*v || *end || errno || x < lo || x > UINT32_MAX) {
        fprintf(stderr, "ds4-bench: %s needs an integer >= %u, got '%s'\n", flag, lo, v ? v : "");
        return 2;
    }
    *out = (uint32_t)x;
    return 0;
}

int bench_parse_args(bench_opts *o, int argc, char **argv) {
    memset(o, 0, sizeof *o);
    o->ctx_start = 2048;
    o->ctx_max = 32768;
    o->step_incr = 2048;
    o->step_mul = 1.0;
    o->gen_tokens = 128;
    o->prefill_chunk = 2048;
    o->seed = 1;
    o->membw = 1;
    o->gpu_layers_experts = -1;
    uint32_t threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return -1;
        }
        if (!strcmp(a, "--no-membw")) {
            o->membw = 0;
            continue;
        }
        if (!strcmp(a, "--exact-activations")) {
            o->exact_act = 1;
            continue;
        }
        if (!strcmp(a, "--profile-prefill")) {
            o->profile_prefill = 1;
            continue;
        }
        if (!strcmp(a, "--sample")) {
            o->sample = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "ds4-bench: %s needs a value\n", a);
            usage(stderr);
            return 2;
        }
        i++;
        if (!strcmp(a, "--model") || !strcmp(a, "-m")) o->model_path = v;
        else if (!strcmp(a, "--prompt-file")) o->prompt_file = v;
        else if (!strcmp(a, "--prompt-tokens")) o->prompt_tokens = v;
        else if (!strcmp(a, "--chat-prompt-file")) o->chat_prompt_file = v;
        else if (!strcmp(a, "--backend")) o->backend = v;
        else if (!strcmp(a, "--synthetic")) o->synthetic = v;
        else if (!strcmp(a, "--preset")) o->preset = v;
        else if (!strcmp(a, "--layers")) bad = num_u32(a, v, 1, &o->syn_layers);
        else if (!strcmp(a, "--experts")) bad = num_u32(a, v, 1, &o->syn_experts);
        else if (!strcmp(a, "--gpu-layers-experts")) {
            uint32_t n = 0;
            if (!(bad = num_u32(a, v, 0, &n)) && n > 1000000) {
                fprintf(stderr, "ds4-bench: --gpu-layers-experts %u is more layers than any model has\n", n);
                bad = 2;
            }
            o->gpu_layers_experts = (int)n;
        }
        else if (!strcmp(a, "--profile")) bad = num_u32(a, v, 2, &o->profile_steps);
        else if (!strcmp(a, "--system") || !strcmp(a, "-sys")) o->system = v;
        else if (!strcmp(a, "--out") || !strcmp(a, "--csv")) o->csv_path = v;
        else if (!strcmp(a, "--svg")) o->svg_path = v;
        else if (!strcmp(a, "--title")) o->title = v;
        else if (!strcmp(a, "--ctx-start")) bad = num_u32(a, v, 1, &o->ctx_start);
        else if (!strcmp(a, "--ctx-max")) bad = num_u32(a, v, 1, &o->ctx_max);
        else if (!strcmp(a, "--ctx-alloc")) bad = num_u32(a, v, 1, &o->ctx_alloc);
        else if (!strcmp(a, "--step-incr")) bad = num_u32(a, v, 1, &o->step_incr);
        else if (!strcmp(a, "--gen-tokens") || !strcmp(a, "--tokens") || !strcmp(a, "-n"))
            bad = num_u32(a, v, 0, &o->gen_tokens);
        else if (!strcmp(a, "--prefill-chunk")) bad = num_u32(a, v, 1, &o->prefill_chunk);
        else if (!strcmp(a, "--threads") || !strcmp(a, "-t")) bad = num_u32(a, v, 1, &threads);
        else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            o->seed = strtoull(v, &end, 10);
            if (!*v || *end || errno) {
                fprintf(stderr, "ds4-bench: --seed needs an integer, got '%s'\n", v);
                bad = 2;
            }
        } else if (!strcmp(a, "--step-mul")) {
            char *end;
            o->step_mul = strtod(v, &end);
            if (!*v || *end || !(o->step_mul >= 1.0) || !isfinite(o->step_mul)) {
                fprintf(stderr, "ds4-bench: --step-mul needs a number >= 1, got '%s'\n", v);
                bad = 2;
            }
        } else {
            fprintf(stderr, "ds4-bench: unknown option '%s'\n", a);
            bad = 2;
        }
        if (bad) {
            usage(stderr);
            return 2;
        }
    }
    o->n_threads = (int)threads;
    if (!!o->model_path == !!o->synthetic) {
        fprintf(stderr, "ds4-bench: give exactly one of --model and --synthetic\n");
        return 2;
    }
    if (!!o->prompt_file + !!o->prompt_tokens + !!o->chat_prompt_file > 1) {
        fprintf(stderr, "ds4-bench: give at most one of --prompt-file, --prompt-tokens and --chat-prompt-file\n");
        return 2;
    }
    if (o->synthetic && (o->prompt_file || o->prompt_tokens || o->chat_prompt_file || o->exact_act)) {
        fprintf(stderr, "ds4-bench: --synthetic runs random token ids without a tokenizer or checking mode\n");
        return 2;
    }
    if (o->system && !o->chat_prompt_file) {
        fprintf(stderr, "ds4-bench: --system only applies to --chat-prompt-file\n");
        return 2;
    }
    if (!o->system) o->system = "You are a helpful assistant.";
    if (o->ctx_start > o->ctx_max) {
        fprintf(stderr, "ds4-bench: --ctx-start %u is larger than --ctx-max %u\n", o->ctx_start, o->ctx_max);
        return 2;
    }
    if (!o->backend) { /* issue #7: the GPU when there is one (CUDA builds), saying so */
        o->backend = ds4_default_backend();
#ifdef DS4_CUDA
        fprintf(stderr, "ds4-bench: backend %s (%s; --backend cpu|cuda to choose)\n", o->backend,
                strcmp(o->backend, "cuda") ? "no CUDA device found" : "a CUDA device is present");
#endif
    }
    if (o->gpu_layers_experts >= 0 && strcmp(o->backend, "cuda")) {
        fprintf(stderr, "ds4-bench: --gpu-layers-experts needs --backend cuda\n");
        return 2;
    }
    if ((o->profile_steps || o->profile_prefill) && !(o->synthetic && o->backend && !strcmp(o->backend, "cuda"))) {
        fprintf(stderr, "ds4-bench: --profile and --profile-prefill need --synthetic and --backend cuda\n");
        return 2;
    }
    /* --profile decodes 4 x N tokens after the last frontier (3 graph timings, op by op) */
    uint64_t need = (uint64_t)o->ctx_max + o->gen_tokens + 4ull * o->profile_steps;
    if (o->ctx_alloc == 0) o->ctx_alloc = need > UINT32_MAX ? UINT32_MAX : (uint32_t)need;
    if (o->ctx_alloc < need) {
        fprintf(stderr, "ds4-bench: --ctx-alloc %u must be at least ctx-max + gen-tokens = %llu\n", o->ctx_alloc,
                (unsigned long long)need);
        return 2;
    }
    return 0;
}

uint32_t bench_frontiers(const bench_opts *o, uint32_t **out) {
    uint32_t n = 0, cap = 16;
    uint32_t *f = malloc(cap * sizeof *f);
    uint64_t cur = o->ctx_start;
    while (f) {
        if (n == cap) {
            uint32_t *p = realloc(f, 2 * cap * sizeof *f);
            if (!p) {
                free(f);
                f = NULL;
                break;
            }
            f = p;
            cap *= 2;
        }
        f[n++] = (uint32_t)cur;
        if (cur >= o->ctx_max) break;
        uint64_t next = o->step_mul > 1.0 ? (uint64_t)ceil((double)cur * o->step_mul) : cur + o->step_incr;
        if (next <= cur) next = cur + 1;
        cur = next > o->ctx_max ? o->ctx_max : next;
    }
    *out = f;
    return f ? n : 0;
}

void bench_csv_header(FILE *f) {
    fprintf(f, "ctx_tokens,prefill_tokens,prefill_tps,gen_tokens,gen_tps,kvcache_bytes\n");
    fflush(f);
}

void bench_csv_row(FILE *f, const bench_row *r) {
    fprintf(f, "%u,%u,%.2f,%u,%.2f,%llu\n", r->ctx_tokens, r->prefill_tokens, r->prefill_tps, r->gen_tokens,
            r->gen_tps, (unsigned long long)r->kvcache_bytes);
    fflush(f);
}

/* ---- SVG ------------------------------------------------------------------------------------- */

/* A "nice" step (1, 2 or 5 × 10^k) giving about n_ticks ticks over [0, hi]. */
static double nice_step(double hi, int n_ticks) {
    double raw = hi / n_ticks, p = pow(10.0, floor(log10(raw)));
    double m = raw / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

static void xml_text(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else if (*s == '"') fputs("&quot;", f);
        else fputc(*s, f);
    }
}

/* One panel: y = value(row) against x = ctx_tokens, in the box (x0, y0, w, h). */
static void panel(FILE *f, const bench_row *rows, uint32_t n, int which, double x0, double y0, double w,
                  double h, const char *label, const char *color) {
    double xmax = 1, ymax = 0;
    for (uint32_t i = 0; i < n; i++) {
        double y = which ? rows[i].gen_tps : rows[i].prefill_tps;
        if (rows[i].ctx_tokens > xmax) xmax = rows[i].ctx_tokens;
        if (y > ymax) ymax = y;
    }
    if (!(ymax > 0)) ymax = 1;
    double ys = nice_step(ymax, 5), xs = nice_step(xmax, 8);
    ymax = ceil(ymax / ys) * ys;
    xmax = ceil(xmax / xs) * xs;
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#888\"/>\n", x0,
            y0, w, h);
    for (double v = 0; v <= ymax + ys / 2; v += ys) {
        double y = y0 + h - v / ymax * h;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", x0, y, x0 + w, y);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">%g</text>\n", x0 - 4,
                y + 4, v);
    }
    for (double v = 0; v <= xmax + xs / 2; v += xs) {
        double x = x0 + v / xmax * w;
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"middle\">%g</text>\n", x,
                y0 + h + 14, v);
    }
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"13\">", x0, y0 - 6);
    xml_text(f, label);
    fprintf(f, "</text>\n<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", color);
    for (uint32_t i = 0; i < n; i++) {
        double y = which ? rows[i].gen_tps : rows[i].prefill_tps;
        fprintf(f, "%s%.1f,%.1f", i ? " " : "", x0 + rows[i].ctx_tokens / xmax * w, y0 + h - y / ymax * h);
    }
    fprintf(f, "\"/>\n");
    for (uint32_t i = 0; i < n; i++) {
        double y = which ? rows[i].gen_tps : rows[i].prefill_tps;
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"><title>ctx %u: %.2f tok/s</title></circle>\n",
                x0 + rows[i].ctx_tokens / xmax * w, y0 + h - y / ymax * h, color, rows[i].ctx_tokens, y);
    }
}

int bench_write_svg(const char *path, const char *title, const bench_row *rows, uint32_t n_rows) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "ds4-bench: cannot create %s: %s\n", path, strerror(errno));
        return 1;
    }
    const double W = 760, H = 560, L = 70, PW = 660, PH = 190;
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\">\n"
               "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
               "<text x=\"%.0f\" y=\"24\" font-size=\"15\" text-anchor=\"middle\">",
            W, H, W, H, W / 2);
    xml_text(f, title ? title : "ds4-bench");
    fprintf(f, "</text>\n");
    panel(f, rows, n_rows, 0, L, 60, PW, PH, "prefill tokens/s (interval since the previous frontier)", "#1f77b4");
    panel(f, rows, n_rows, 1, L, 60 + PH + 70, PW, PH, "generation tokens/s (greedy, at the frontier)", "#d62728");
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" font-size=\"12\" text-anchor=\"middle\">context tokens</text>\n</svg>\n",
            L + PW / 2, H - 8);
    int bad = ferror(f);
    bad |= fclose(f) != 0;
    if (bad) fprintf(stderr, "ds4-bench: writing %s failed\n", path);
    return bad;
}
