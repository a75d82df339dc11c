/*
 * tools/ds4/demo.c — `ds4 --demo`: a small DeepSeek V4 model with random weights and the real
 * V4 tokenizer, made once through the converter library (model/convert.h + model/synthetic.h,
 * not by running ds4-convert) and cached as $XDG_CACHE_HOME/ds4/demo-<version>.gguf (else
 * ~/.cache/ds4/), so a newcomer sees tokenizer, chat encoding, engine and sampling work without
 * the 81 GB download. Must not: pretend the output means anything (the caller labels it).
 *
 * Shape: the "tiny" preset of the converter (5 layers, dim 256, 16 experts: every attention
 * kind, the compressors, the hash-routed layers) with the vocabulary widened to the tokenizer's,
 * Q8_0 matrices, F16 dense ones (about 100 MB, a few seconds to make).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chat.h"
#include "model/convert.h"
#include "model/synthetic.h"

#define DEMO_SEED 20260425u
#define TOKENIZER_REL "shared/testdata/tokenizer/deepseek_v4_tokenizer_reconstructed.json"

static bool is_file(const char *p) {
    struct stat sb;
    return p && stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* --tokenizer, $DS4_TOKENIZER, ../shared/... from the working directory, then from the
 * directory of the ds4 binary. malloc'd or NULL. */
static char *find_tokenizer(const char *flag) {
    if (flag) return is_file(flag) ? strdup(flag) : NULL;
    const char *env = getenv("DS4_TOKENIZER");
    if (env && *env) return is_file(env) ? strdup(env) : NULL;
    char buf[4096];
    snprintf(buf, sizeof buf, "../%s", TOKENIZER_REL);
    if (is_file(buf)) return strdup(buf);
    char exe[2048];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) *slash = '\0';
        snprintf(buf, sizeof buf, "%s/../%s", exe, TOKENIZER_REL);
        if (is_file(buf)) return strdup(buf);
    }
    return NULL;
}

static int mkdirs(const char *dir) {
    char p[4096];
    snprintf(p, sizeof p, "%s", dir);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST) return 1;
        *s = '/';
    }
    return mkdir(p, 0755) != 0 && errno != EEXIST;
}

static void on_progress(void *ud, const cv_progress *p) {
    chat_bar_update(ud, p->bytes_written, p->bytes_total);
}

static int make_demo(const char *path, const char *tok_path) {
    ds4_error err = {0};
    ds4_tokenizer *tok = NULL;
    cv_shape shape;
    cv_policy pol;
    cv_plan plan = {0};
    cv_synth *sy = NULL;
    cv_source src;
    int rc = 1;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if (ds4_tokenizer_open(&tok, tok_path, &err)) goto out_fail;
    if (cv_shape_preset(&shape, "tiny", &err)) goto out_fail;
    snprintf(shape.name, sizeof shape.name, "ds4 demo (random weights)");
    shape.vocab = ds4_tokenizer_n_vocab(tok);
    shape.n_mtp = 0;
    if (shape.n_ratios < shape.n_layers) shape.n_ratios = shape.n_layers;
    if (cv_shape_check(&shape, &err)) goto out_fail;
    /* Q8_0 matrices; HC, compressor, indexer and router stay F16 as in the published files
     * (the engine reads those as floats). */
    cv_policy_init(&pol, CV_PRESET_Q8_0);
    if (cv_policy_override(&pol, "dense=f16", &err)) goto out_fail;
    if (cv_plan_build(&plan, &shape, &pol, false, &err)) goto out_fail;
    if (cv_synth_create(&sy, &plan, DEMO_SEED, &err)) goto out_fail;
    cv_synth_source(sy, &src);
    chat_bar bar;
    chat_bar_start(&bar, "making the demo model", "MiB", 1024.0 * 1024);
    cv_options opts = {.n_threads = 0, .tokenizer_json = tok_path, .progress = on_progress, .ud = &bar};
    fprintf(stderr, "ds4: making the demo model once (random weights, V4 tokenizer from %s)...\n", tok_path);
    ds4_status st = cv_convert(tmp, &shape, &plan, &pol, &src, &opts, &err);
    chat_bar_end(&bar);
    if (st) goto out_fail;
    /* Atomic: a concurrent ds4 --demo sees the whole file or none. */
    if (rename(tmp, path) != 0) {
        fprintf(stderr, "ds4: cannot create %s: %s\n", path, strerror(errno));
        goto out_free;
    }
    rc = 0;
    goto out_free;
out_fail:
    fprintf(stderr, "ds4: --demo: %s\n", err.msg);
out_free:
    remove(tmp);
    cv_synth_free(sy);
    cv_plan_free(&plan);
    ds4_tokenizer_free(tok);
    return rc;
}

char *chat_demo_model(const char *tokenizer_flag) {
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    char dir[4096];
    if (xdg && *xdg) snprintf(dir, sizeof dir, "%s/ds4", xdg);
    else if (home && *home) snprintf(dir, sizeof dir, "%s/.cache/ds4", home);
    else snprintf(dir, sizeof dir, ".ds4-cache");
    size_t n = strlen(dir) + 64;
    char *path = malloc(n);
    if (!path) return NULL;
    snprintf(path, n, "%s/demo-%s.gguf", dir, ds4_version());
    if (is_file(path)) return path;
    char *tok = find_tokenizer(tokenizer_flag);
    if (!tok) {
        fprintf(stderr,
                "ds4: --demo needs the DeepSeek V4 tokenizer.json to build its model: pass\n"
                "  --tokenizer PATH or set DS4_TOKENIZER (tried %s, $DS4_TOKENIZER, ../%s)\n",
                tokenizer_flag ? tokenizer_flag : "no --tokenizer", TOKENIZER_REL);
        free(path);
        return NULL;
    }
    if (mkdirs(dir)) {
        fprintf(stderr, "ds4: cannot create the cache directory %s: %s\n", dir, strerror(errno));
        free(tok);
        free(path);
        return NULL;
    }
    int rc = make_demo(path, tok);
    free(tok);
    if (rc) {
        free(path);
        return NULL;
    }
    return path;
}
