/*
 * tools/ds4-convert/main.c — the ds4-convert program: command line (issue #2 §3), progress bar,
 * dry-run plan listing, and dispatch to the converter library (model/convert.h) or to --info
 * (info.c). Owns flags, messages and exit codes (0 ok, 1 failure, 2 usage error); no format or
 * model logic lives here.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ds4.h"
#include "format/types.h"
#include "model/convert.h"
#include "model/convert_imatrix.h"
#include "model/synthetic.h"
#include "tool.h"

#define MAX_TYPES 32

typedef struct args {
    const char *hf, *out, *tokenizer, *preset, *imatrix, *info, *synthetic;
    const char *types[MAX_TYPES];
    int n_types;
    int threads;
    unsigned long layers, experts;
    unsigned long long seed;
    int dry_run, mtp, no_mtp;
} args;

static void usage(FILE *f) {
    fprintf(f,
            "usage:\n"
            "  ds4-convert --hf DIR --out FILE.gguf [--tokenizer tokenizer.json] [--preset P]\n"
            "              [--type FAMILY=TYPE ...] [--imatrix FILE] [--threads N] [--no-mtp]\n"
            "              [--dry-run]\n"
            "  ds4-convert --synthetic tiny|flash|pro|CONFIG.json --out FILE.gguf [--layers N]\n"
            "              [--experts N] [--preset P] [--seed S] [--mtp] [--tokenizer tokenizer.json]\n"
            "              [--type FAMILY=TYPE ...] [--threads N] [--dry-run]\n"
            "  ds4-convert --info FILE.gguf\n"
            "\n"
            "Converts the official DeepSeek V4 checkpoint (config.json + safetensors shards) to a\n"
            "GGUF with the tensor names, dims, types and deepseek4.* metadata of the published ds4\n"
            "files, or writes random weights of any V4 shape (--synthetic). --dry-run prints the\n"
            "tensor plan and the file size without writing. P defaults to q2. The checkpoint's MTP\n"
            "block is written as mtp.0.* tensors (GGUF_LAYOUT 3.8) unless --no-mtp (the published\n"
            "main files have none); --synthetic adds one only with --mtp.\n"
            "\n%s",
            cv_policy_help());
}

static int bad_usage(const char *fmt, const char *a) {
    fprintf(stderr, "ds4-convert: ");
    fprintf(stderr, fmt, a);
    fprintf(stderr, " (see --help)\n");
    return 2;
}

static int parse_ulong(const char *s, unsigned long long max, unsigned long long *out) {
    char *end;
    errno = 0;
    if (!s || !*s || *s == '-') return 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end || v > max) return 0;
    *out = v;
    return 1;
}

static int parse_args(int argc, char **argv, args *a) {
    memset(a, 0, sizeof *a);
    a->preset = "q2";
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(f, "--dry-run")) { a->dry_run = 1; continue; }
        if (!strcmp(f, "--mtp")) { a->mtp = 1; continue; }
        if (!strcmp(f, "--no-mtp")) { a->no_mtp = 1; continue; }
        static const char *const with_value[] = {"--hf", "--out", "--tokenizer", "--preset",
                                                 "--type", "--imatrix", "--threads", "--info",
                                                 "--synthetic", "--layers", "--experts", "--seed",
                                                 NULL};
        int known = 0;
        for (const char *const *w = with_value; *w; w++) known |= !strcmp(f, *w);
        if (!known) return bad_usage("unknown option '%s'", f);
        if (i + 1 >= argc) return bad_usage("option '%s' needs a value", f);
        const char *v = argv[++i];
        unsigned long long n;
        if (!strcmp(f, "--hf")) a->hf = v;
        else if (!strcmp(f, "--out")) a->out = v;
        else if (!strcmp(f, "--tokenizer")) a->tokenizer = v;
        else if (!strcmp(f, "--preset")) a->preset = v;
        else if (!strcmp(f, "--imatrix")) a->imatrix = v;
        else if (!strcmp(f, "--info")) a->info = v;
        else if (!strcmp(f, "--synthetic")) a->synthetic = v;
        else if (!strcmp(f, "--type")) {
            if (a->n_types == MAX_TYPES) return bad_usage("too many --type options%s", "");
            a->types[a->n_types++] = v;
        } else if (!strcmp(f, "--threads")) {
            if (!parse_ulong(v, 1024, &n) || n == 0) return bad_usage("--threads wants 1..1024, got '%s'", v);
            a->threads = (int)n;
        } else if (!strcmp(f, "--layers")) {
            if (!parse_ulong(v, CV_MAX_LAYERS, &n) || n == 0) return bad_usage("--layers wants 1..256, got '%s'", v);
            a->layers = (unsigned long)n;
        } else if (!strcmp(f, "--experts")) {
            if (!parse_ulong(v, 65536, &n) || n == 0) return bad_usage("--experts wants 1..65536, got '%s'", v);
            a->experts = (unsigned long)n;
        } else if (!strcmp(f, "--seed")) {
            if (!parse_ulong(v, ~0ull, &n)) return bad_usage("--seed wants a number, got '%s'", v);
            a->seed = n;
        }
    }
    int modes = !!a->hf + !!a->info + !!a->synthetic;
    if (modes != 1) return bad_usage("give exactly one of --hf, --synthetic, --info%s", "");
    if (!a->info && !a->out && !a->dry_run) return bad_usage("--out FILE.gguf is required%s", "");
    if (a->hf && (a->layers || a->experts || a->mtp || a->seed))
        return bad_usage("--layers/--experts/--seed/--mtp apply to --synthetic only%s", "");
    if (a->synthetic && a->no_mtp) return bad_usage("--no-mtp applies to --hf only%s", "");
    if (a->synthetic && a->imatrix) return bad_usage("--imatrix applies to --hf only%s", "");
    return 0;
}

/* ---- progress ---------------------------------------------------------------------------------- */

typedef struct ui {
    int tty;
    double t0, last;
} ui;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void on_log(void *ud, const char *msg) {
    ui *u = ud;
    fprintf(stderr, "%s%s\n", u->tty ? "\r\033[K" : "", msg);
}

static void on_progress(void *ud, const cv_progress *p) {
    ui *u = ud;
    if (!u->tty) return;
    double t = now_s();
    if (t - u->last < 0.2 && p->tensors_done < p->n_tensors) return;
    u->last = t;
    double frac = p->bytes_total ? (double)p->bytes_written / (double)p->bytes_total : 1.0;
    char bar[31];
    int fill = (int)(frac * 30);
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = 0;
    double el = t - u->t0, eta = frac > 0.001 ? el / frac - el : 0;
    int gib = p->bytes_total >= (1ull << 30);
    double unit = gib ? 1073741824.0 : 1048576.0;
    fprintf(stderr, "\r\033[K[%s] %llu/%llu tensors  %.2f/%.2f %s  ETA %dh%02dm%02ds", bar,
            (unsigned long long)p->tensors_done, (unsigned long long)p->n_tensors,
            p->bytes_written / unit, p->bytes_total / unit, gib ? "GiB" : "MiB", (int)(eta / 3600),
            (int)eta / 60 % 60, (int)eta % 60);
    if (p->tensors_done == p->n_tensors) fputc('\n', stderr);
}

/* ---- plan listing ------------------------------------------------------------------------------ */

static void print_plan(const cv_plan *plan, uint64_t file_bytes) {
    uint64_t n_by[DS4_TYPE_ID_LIMIT] = {0}, b_by[DS4_TYPE_ID_LIMIT] = {0};
    printf("%-44s %-8s %-22s %14s\n", "tensor", "type", "dims", "bytes");
    for (uint64_t i = 0; i < plan->n; i++) {
        const cv_tensor *t = &plan->t[i];
        char dims[64];
        int o = snprintf(dims, sizeof dims, "[%llu", (unsigned long long)t->ne[0]);
        for (uint32_t d = 1; d < t->n_dims; d++)
            o += snprintf(dims + o, sizeof dims - (size_t)o, ", %llu", (unsigned long long)t->ne[d]);
        snprintf(dims + o, sizeof dims - (size_t)o, "]");
        printf("%-44s %-8s %-22s %14llu\n", t->name, ds4_type_name(t->type), dims,
               (unsigned long long)t->n_bytes);
        n_by[t->type]++;
        b_by[t->type] += t->n_bytes;
    }
    printf("\nper type:\n");
    for (int ty = 0; ty < DS4_TYPE_ID_LIMIT; ty++)
        if (n_by[ty])
            printf("  %-8s %5llu tensors %16llu bytes\n", ds4_type_name((uint32_t)ty),
                   (unsigned long long)n_by[ty], (unsigned long long)b_by[ty]);
    printf("tensors: %llu\ndata region: %llu bytes (%.2f GiB)\nfile: %llu bytes (%.2f GiB)\n",
           (unsigned long long)plan->n, (unsigned long long)plan->data_bytes,
           plan->data_bytes / 1073741824.0, (unsigned long long)file_bytes,
           file_bytes / 1073741824.0);
}

static int fail(const ds4_error *e) {
    fprintf(stderr, "ds4-convert: %s\n", e->msg);
    return 1;
}

static int run_convert(const args *a) {
    ds4_error err;
    cv_shape shape;
    cv_preset preset;
    cv_policy pol;
    cv_plan plan = {0};
    cv_hf *hf = NULL;
    cv_synth *sy = NULL;
    cv_imatrix *im = NULL;
    cv_source src;
    int rc = 1;
    if (cv_preset_from_name(a->preset, &preset, &err)) {
        fprintf(stderr, "ds4-convert: %s (see --help)\n", err.msg);
        return 2;
    }
    cv_policy_init(&pol, preset);
    for (int i = 0; i < a->n_types; i++)
        if (cv_policy_override(&pol, a->types[i], &err)) {
            fprintf(stderr, "ds4-convert: %s (see --help)\n", err.msg);
            return 2;
        }
    bool with_mtp = false;
    if (a->hf) {
        if (cv_hf_open(&hf, a->hf, &shape, &err)) goto out_fail;
        with_mtp = shape.n_mtp > 0 && cv_hf_has_mtp(hf) && !a->no_mtp;
        if (shape.n_mtp > 0 && !cv_hf_has_mtp(hf))
            fprintf(stderr, "ds4-convert: note: config.json declares an MTP block but the checkpoint "
                            "has no mtp.0 tensors; converting the main model only\n");
    } else {
        size_t n = strlen(a->synthetic);
        ds4_status st = n > 5 && !strcmp(a->synthetic + n - 5, ".json")
                            ? cv_shape_from_config(&shape, a->synthetic, &err)
                            : cv_shape_preset(&shape, a->synthetic, &err);
        if (st) goto out_fail;
        if (!a->mtp) shape.n_mtp = 0;
        else shape.n_mtp = 1;
        if (shape.n_ratios < shape.n_layers + shape.n_mtp) shape.n_ratios = shape.n_layers + shape.n_mtp;
        if (cv_shape_shrink(&shape, (uint32_t)a->layers, (uint32_t)a->experts, &err)) goto out_fail;
        with_mtp = a->mtp;
    }
    if (a->imatrix && cv_imatrix_load(&im, a->imatrix, &err)) goto out_fail;
    if (cv_plan_build(&plan, &shape, &pol, with_mtp, &err)) goto out_fail;
    if (hf) {
        if (cv_hf_check_plan(hf, &plan, &err)) goto out_fail;
        const char *first;
        uint64_t unused = cv_hf_unused(hf, &plan, &first);
        if (unused)
            fprintf(stderr, "ds4-convert: note: %llu checkpoint tensors are not converted (first: %s)\n",
                    (unsigned long long)unused, first);
    }
    ui u = {.tty = isatty(2), .t0 = now_s()};
    cv_options opts = {.n_threads = a->threads, .imatrix = im, .tokenizer_json = a->tokenizer,
                       .log = on_log, .progress = on_progress, .ud = &u};
    if (a->dry_run) {
        uint64_t fb;
        if (cv_plan_file_bytes(&shape, &plan, &pol, &opts, &fb, &err)) goto out_fail;
        print_plan(&plan, fb);
        rc = 0;
        goto out_free;
    }
    if (hf) cv_hf_source(hf, &src);
    else {
        if (cv_synth_create(&sy, &plan, a->seed, &err)) goto out_fail;
        cv_synth_source(sy, &src);
    }
    if (cv_convert(a->out, &shape, &plan, &pol, &src, &opts, &err)) goto out_fail;
    double el = now_s() - u.t0;
    uint64_t in = src.bytes_read ? src.bytes_read(src.ctx) : 0;
    uint64_t outb = 0;
    for (uint64_t i = 0; i < plan.n; i++) outb += plan.t[i].n_bytes;
    fprintf(stderr,
            "ds4-convert: wrote %s: %llu tensors, %.1f MB tensor data in %.2f s "
            "(output %.1f MB/s, input %.1f MB/s)\n",
            a->out, (unsigned long long)plan.n, outb / 1e6, el, outb / 1e6 / el, in / 1e6 / el);
    rc = 0;
    goto out_free;
out_fail:
    rc = fail(&err);
out_free:
    cv_plan_free(&plan);
    cv_synth_free(sy);
    cv_hf_close(hf);
    cv_imatrix_free(im);
    return rc;
}

int main(int argc, char **argv) {
    args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc;
    if (a.info) return cvt_info(a.info);
    return run_convert(&a);
}
