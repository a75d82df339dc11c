/*
 * tests/session_fixture.h — shared by test_session*.c: the tiny-v4 model converted to an f32
 * GGUF once per build tree (by ./ds4-convert, into DS4_TMP, atomically renamed so parallel test
 * jobs never see half a file), and the golden tensors of testdata/tiny-v4.
 */
#ifndef DS4_TEST_SESSION_FIXTURE_H
#define DS4_TEST_SESSION_FIXTURE_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ds4.h"
#include "format/safetensors.h"
#include "testutil.h"

/* Path of tiny-v4 converted with `preset` (caller frees); converts it on first use. */
static inline char *sf_tiny_gguf_preset(const char *preset) {
    const char *base = getenv("DS4_TMP");
    if (!base || !*base) base = "/tmp";
    mkdir(base, 0777);
    char name[64];
    snprintf(name, sizeof name, "session-tiny-v4-%s.gguf", preset);
    char *path = tu_join(base, name);
    char *conv = tu_bin_path("ds4-convert"), *hf = tu_shared_path("testdata/tiny-v4");
    struct stat sb, sc;
    /* Reuse the cached file unless the converter was rebuilt after it was written. */
    if (stat(path, &sb) == 0 && sb.st_size > 0 && (stat(conv, &sc) != 0 || sc.st_mtime <= sb.st_mtime)) {
        free(conv);
        free(hf);
        return path;
    }
    char cmd[4096], *out = NULL;
    snprintf(cmd, sizeof cmd, "%s --hf %s --out %s.%ld.tmp --preset %s && mv %s.%ld.tmp %s", conv, hf, path,
             (long)getpid(), preset, path, (long)getpid(), path);
    int rc = tu_run(cmd, &out);
    cr_assert_eq(rc, 0, "converting tiny-v4 failed (%s): %s", cmd, out ? out : "");
    free(out);
    free(conv);
    free(hf);
    return path;
}

/* The tiny f32 GGUF, the reference conversion (caller frees). */
static inline char *sf_tiny_gguf(void) { return sf_tiny_gguf_preset("f32"); }

static inline ds4_engine *sf_open_engine(void) {
    char *p = sf_tiny_gguf();
    ds4_engine *e = NULL;
    ds4_error err = {0};
    ds4_engine_options o;
    ds4_engine_options_init(&o);
    o.n_threads = 1;
    cr_assert_eq(ds4_engine_open(&e, p, &o, &err), DS4_OK, "open %s: %s", p, err.msg);
    free(p);
    return e;
}

/* The golden file (golden_topk16.safetensors), opened with the converter engineer's reader. */
static inline st_file *sf_golden(void) {
    char *p = tu_shared_path("testdata/tiny-v4/golden_topk16.safetensors");
    st_file *f = NULL;
    ds4_error err = {0};
    cr_assert_eq(st_open(&f, p, &err), DS4_OK, "open %s: %s", p, err.msg);
    free(p);
    return f;
}

/* A golden tensor by name with the expected dtype; fails the test when absent. */
static inline const st_tensor *sf_tensor(st_file *f, const char *name, st_dtype dt) {
    const st_tensor *t = st_find(f, name);
    cr_assert_not_null(t, "golden tensor %s missing", name);
    cr_assert_eq(t->dtype, dt, "golden tensor %s: dtype %s", name, st_dtype_name(t->dtype));
    return t;
}

/* Copies golden I32 tokens (caller frees). */
static inline int32_t *sf_tokens(st_file *f, const char *name, uint32_t *n) {
    const st_tensor *t = sf_tensor(f, name, ST_I32);
    int32_t *v = malloc(t->n_bytes ? t->n_bytes : 4);
    memcpy(v, t->data, t->n_bytes);
    *n = (uint32_t)t->n_elements;
    return v;
}

#endif
