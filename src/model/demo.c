/*
 * model/demo.c — building and caching the random-weight demo model (see demo.h). Owns the demo
 * shape, seed, cache location and the atomic write; the conversion itself is convert.c's and the
 * weights synthetic.c's. Never prints.
 */
#include "model/demo.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "model/convert.h"
#include "model/synthetic.h"

#define DEMO_SEED 20260425u

static bool is_file(const char *p) {
    struct stat sb;
    return p && stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

ds4_status model_demo_path(char **out, ds4_error *err) {
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    char dir[4096];
    if (xdg && *xdg) snprintf(dir, sizeof dir, "%s/ds4", xdg);
    else if (home && *home) snprintf(dir, sizeof dir, "%s/.cache/ds4", home);
    else snprintf(dir, sizeof dir, ".ds4-cache");
    size_t n = strlen(dir) + 64;
    *out = malloc(n);
    if (!*out) return ds4_seterr(err, DS4_ERR_NOMEM, "demo: out of memory");
    snprintf(*out, n, "%s/demo-%s.gguf", dir, ds4_version());
    return DS4_OK;
}

ds4_status model_demo_find_tokenizer(const char *flag, char **out, ds4_error *err) {
    *out = NULL;
    if (flag) {
        if (is_file(flag) && (*out = strdup(flag))) return DS4_OK;
        return ds4_seterr(err, DS4_ERR_NOT_FOUND, "tokenizer %s: no such file", flag);
    }
    const char *env = getenv("DS4_TOKENIZER");
    if (env && *env) {
        if (is_file(env) && (*out = strdup(env))) return DS4_OK;
        return ds4_seterr(err, DS4_ERR_NOT_FOUND, "$DS4_TOKENIZER %s: no such file (pass --tokenizer PATH "
                          "or set DS4_TOKENIZER to the tokenizer.json)", env);
    }
    char buf[4200];
    snprintf(buf, sizeof buf, "../%s", MODEL_DEMO_TOKENIZER_REL);
    if (is_file(buf)) goto found;
    char exe[2048];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) *slash = '\0';
        snprintf(buf, sizeof buf, "%s/../%s", exe, MODEL_DEMO_TOKENIZER_REL);
        if (is_file(buf)) goto found;
    }
    return ds4_seterr(err, DS4_ERR_NOT_FOUND,
                      "no tokenizer.json found: pass --tokenizer PATH or set DS4_TOKENIZER (tried "
                      "../%s from here and from the binary's directory)", MODEL_DEMO_TOKENIZER_REL);
found:
    if (!(*out = strdup(buf))) return ds4_seterr(err, DS4_ERR_NOMEM, "demo: out of memory");
    return DS4_OK;
}

/* mkdir -p of the directory part of path. */
static ds4_status mkdirs_for(const char *path, ds4_error *err) {
    char p[4096];
    if (snprintf(p, sizeof p, "%s", path) >= (int)sizeof p)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "demo: path too long: %s", path);
    char *last = strrchr(p, '/');
    if (!last || last == p) return DS4_OK;
    *last = '\0';
    for (char *s = p + 1;; s++) {
        bool end = *s == '\0';
        if (*s != '/' && !end) continue;
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST)
            return ds4_seterr(err, DS4_ERR_IO, "demo: cannot create directory %s: %s", p, strerror(errno));
        if (end) break;
        *s = '/';
    }
    return DS4_OK;
}

static void on_progress(void *ud, const cv_progress *p) {
    const model_demo_progress *mp = ud;
    mp->update(mp->ud, p->bytes_written, p->bytes_total);
}

ds4_status model_demo_build(const char *path, const char *tokenizer_path,
                            const model_demo_progress *progress, ds4_error *err) {
    if (!path || !tokenizer_path) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "demo: NULL path");
    ds4_tokenizer *tok = NULL;
    cv_shape shape;
    cv_policy pol;
    cv_plan plan = {0};
    cv_synth *sy = NULL;
    cv_source src;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    ds4_status st = mkdirs_for(path, err);
    if (st) return st;
    if ((st = ds4_tokenizer_open(&tok, tokenizer_path, err))) goto out_free;
    if ((st = cv_shape_preset(&shape, "tiny", err))) goto out_free;
    snprintf(shape.name, sizeof shape.name, "ds4 demo (random weights)");
    shape.vocab = ds4_tokenizer_n_vocab(tok);
    shape.n_mtp = 0;
    if (shape.n_ratios < shape.n_layers) shape.n_ratios = shape.n_layers;
    if ((st = cv_shape_check(&shape, err))) goto out_free;
    /* Q8_0 matrices; HC, compressor, indexer and router stay F16 as in the published files
     * (the engine reads those as floats). */
    cv_policy_init(&pol, CV_PRESET_Q8_0);
    if ((st = cv_policy_override(&pol, "dense=f16", err))) goto out_free;
    if ((st = cv_plan_build(&plan, &shape, &pol, false, err))) goto out_free;
    if ((st = cv_synth_create(&sy, &plan, DEMO_SEED, err))) goto out_free;
    cv_synth_source(sy, &src);
    cv_options opts = {.n_threads = 0, .tokenizer_json = tokenizer_path};
    if (progress && progress->update) {
        opts.progress = on_progress;
        opts.ud = (void *)progress;
    }
    if (progress && progress->start) progress->start(progress->ud, tokenizer_path);
    st = cv_convert(tmp, &shape, &plan, &pol, &src, &opts, err);
    if (progress && progress->end) progress->end(progress->ud);
    if (st) goto out_free;
    if (rename(tmp, path) != 0)
        st = ds4_seterr(err, DS4_ERR_IO, "demo: cannot create %s: %s", path, strerror(errno));
out_free:
    remove(tmp);
    cv_synth_free(sy);
    cv_plan_free(&plan);
    ds4_tokenizer_free(tok);
    if (st && err) ds4_err_prefix(err, "demo model %s", path);
    return st;
}

ds4_status model_demo_ensure(const char *tokenizer_flag, const model_demo_progress *progress,
                             char **out_path, ds4_error *err) {
    *out_path = NULL;
    char *path = NULL, *tok = NULL;
    ds4_status st = model_demo_path(&path, err);
    if (st) return st;
    if (is_file(path)) {
        *out_path = path;
        return DS4_OK;
    }
    if (!(st = model_demo_find_tokenizer(tokenizer_flag, &tok, err)))
        st = model_demo_build(path, tok, progress, err);
    free(tok);
    if (st) {
        free(path);
        return st;
    }
    *out_path = path;
    return DS4_OK;
}
