/* tests/testutil.c — see testutil.h. */
#include "testutil.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

char *tu_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    cr_assert_not_null(p);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

char *tu_shared_path(const char *rel) {
    const char *d = getenv("DS4_SHARED");
    return tu_join(d && *d ? d : "../shared", rel);
}

char *tu_bin_path(const char *prog) {
    const char *d = getenv("DS4_BIN_DIR");
    return tu_join(d && *d ? d : ".", prog);
}

void *tu_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) cr_assert_fail("cannot open %s: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0) cr_assert_fail("cannot seek %s", path);
    long n = ftell(f);
    if (n < 0) cr_assert_fail("cannot tell %s", path);
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    cr_assert_not_null(buf);
    if (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) cr_assert_fail("short read on %s", path);
    fclose(f);
    buf[n] = '\0';
    if (len) *len = (size_t)n;
    return buf;
}

void *tu_read_shared(const char *rel, size_t *len) {
    char *p = tu_shared_path(rel);
    void *d = tu_read_file(p, len);
    free(p);
    return d;
}

char *tu_tmpdir(void) {
    const char *base = getenv("DS4_TMP");
    if (!base || !*base) base = "/tmp";
    mkdir(base, 0777); /* may exist */
    char *tmpl = tu_join(base, "ds4test-XXXXXX");
    if (!mkdtemp(tmpl)) cr_assert_fail("mkdtemp %s: %s", tmpl, strerror(errno));
    return tmpl;
}

void tu_write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) cr_assert_fail("cannot create %s: %s", path, strerror(errno));
    if (len && fwrite(data, 1, len, f) != len) cr_assert_fail("short write on %s", path);
    if (fclose(f) != 0) cr_assert_fail("close %s failed", path);
}

int tu_run(const char *cmd, char **out) {
    size_t n = strlen(cmd) + 16;
    char *full = malloc(n);
    cr_assert_not_null(full);
    snprintf(full, n, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    free(full);
    if (!p) return -1;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    cr_assert_not_null(buf);
    size_t got;
    while ((got = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += got;
        if (cap - len < 2) {
            cap *= 2;
            buf = realloc(buf, cap);
            cr_assert_not_null(buf);
        }
    }
    buf[len] = '\0';
    int st = pclose(p);
    if (out) *out = buf;
    else free(buf);
    if (st == -1) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

ds4_tokenizer *tu_open_v4_tokenizer(void) {
    char *path = tu_shared_path("testdata/tokenizer/deepseek_v4_tokenizer_reconstructed.json");
    ds4_tokenizer *tok = NULL;
    ds4_error err = {0};
    cr_assert_eq(ds4_tokenizer_open(&tok, path, &err), DS4_OK, "%s", err.msg);
    free(path);
    return tok;
}

int tu_for_each_json(const char *dir, void (*fn)(const char *path, void *ctx), void *ctx) {
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "%s: cannot open (run from the repository root)", dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".json") != 0) continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        fn(path, ctx);
        n++;
    }
    closedir(d);
    return n;
}

int tu_f32_bits_equal(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }
