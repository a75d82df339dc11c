/*
 * tests/test_cli_download.c — download_model.sh against a local file:// "repository"
 * (DS4_DOWNLOAD_BASE): a truncated partial download is resumed, not restarted (its bytes are
 * kept), the size is checked, ./ds4flash.gguf is linked; bad targets and bad files fail.
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#define Q2_FILE "DeepSeek-V4-Flash-IQ2XXS-w2Q2K-AProjQ8-SExpQ8-OutQ8-chat-v2.gguf"

static char *script_path(void) {
    char *p = realpath("download_model.sh", NULL);
    cr_assert_not_null(p, "download_model.sh not found from %s (tests run in the repository root)",
                       getcwd(NULL, 0));
    return p;
}

/* A fake published file: GGUF magic then deterministic bytes. */
static unsigned char *fake_model(size_t n) {
    unsigned char *b = malloc(n);
    cr_assert_not_null(b);
    memcpy(b, "GGUF", 4);
    uint32_t x = 12345;
    for (size_t i = 4; i < n; i++) {
        x = x * 1103515245u + 12345u;
        b[i] = (unsigned char)(x >> 16);
    }
    return b;
}

static int run_script(const char *work, const char *src, const char *target, char **out) {
    char *sh = script_path(), cmd[PATH_MAX * 3];
    snprintf(cmd, sizeof cmd, "cd %s && DS4_DOWNLOAD_BASE=file://%s bash %s %s", work, src, sh, target);
    free(sh);
    return tu_run(cmd, out);
}

static void dirs(char **src, char **work) {
    char *d = tu_tmpdir(), *ad = realpath(d, NULL);
    cr_assert_not_null(ad);
    *src = tu_join(ad, "repo");
    *work = tu_join(ad, "work");
    cr_assert_eq(mkdir(*src, 0755), 0);
    cr_assert_eq(mkdir(*work, 0755), 0);
    free(d);
    free(ad);
}

Test(cli_download, resumes_a_truncated_partial_and_links) {
    char *src, *work;
    dirs(&src, &work);
    const size_t size = 300000, have = 100000;
    unsigned char *model = fake_model(size);
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", src, Q2_FILE);
    tu_write_file(p, model, size);
    /* An interrupted earlier run left the first `have` bytes; make them differ from the source
     * (zeros after the magic) so the result shows whether curl resumed or started over. */
    unsigned char *part = calloc(1, have);
    memcpy(part, "GGUF", 4);
    snprintf(p, sizeof p, "%s/gguf", work);
    cr_assert_eq(mkdir(p, 0755), 0);
    snprintf(p, sizeof p, "%s/gguf/%s.part", work, Q2_FILE);
    tu_write_file(p, part, have);

    char *out = NULL;
    int rc = run_script(work, src, "q2", &out);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
    cr_assert(strstr(out, "resuming"), "no resume message: %s", out);
    free(out);
    snprintf(p, sizeof p, "%s/gguf/%s", work, Q2_FILE);
    size_t got_n = 0;
    unsigned char *got = tu_read_file(p, &got_n);
    cr_assert_eq(got_n, size, "downloaded %zu bytes, expected %zu", got_n, size);
    cr_assert(memcmp(got, part, have) == 0, "the partial bytes were not kept: the download restarted");
    cr_assert(memcmp(got + have, model + have, size - have) == 0, "the resumed tail differs from the source");
    snprintf(p, sizeof p, "%s/gguf/%s.part", work, Q2_FILE);
    cr_assert_neq(access(p, F_OK), 0, "%s left behind", p);
    char link[PATH_MAX], target[PATH_MAX];
    snprintf(link, sizeof link, "%s/ds4flash.gguf", work);
    ssize_t tl = readlink(link, target, sizeof target - 1);
    cr_assert_gt(tl, 0, "%s is not a link", link);
    target[tl] = '\0';
    cr_assert_str_eq(target, "./gguf/" Q2_FILE);

    /* A second run finds the file complete (size equal) and only re-links. */
    rc = run_script(work, src, "q2", &out);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
    cr_assert(strstr(out, "is complete"), "%s", out);
    free(out);
    free(got);
    free(part);
    free(model);
    free(src);
    free(work);
}

Test(cli_download, oversized_partial_restarts_and_bad_inputs_fail) {
    char *src, *work;
    dirs(&src, &work);
    const size_t size = 50000;
    unsigned char *model = fake_model(size);
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", src, Q2_FILE);
    tu_write_file(p, model, size);
    snprintf(p, sizeof p, "%s/gguf", work);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/gguf/%s.part", work, Q2_FILE);
    unsigned char *big = fake_model(size + 10);
    tu_write_file(p, big, size + 10);
    char *out = NULL;
    int rc = run_script(work, src, "q2", &out);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
    cr_assert(strstr(out, "starting over"), "%s", out);
    free(out);
    snprintf(p, sizeof p, "%s/gguf/%s", work, Q2_FILE);
    size_t n = 0;
    unsigned char *got = tu_read_file(p, &n);
    cr_assert(n == size && memcmp(got, model, size) == 0, "restarted download differs from the source");
    free(got);

    rc = run_script(work, src, "q3", &out);
    cr_assert_eq(rc, 2, "unknown target: exit %d: %s", rc, out);
    cr_assert(strstr(out, "unknown target 'q3'"), "%s", out);
    free(out);

    /* Not a GGUF (the server sent an error page, say): refused, nothing linked. */
    snprintf(p, sizeof p, "%s/DeepSeek-V4-Flash-MTP-Q4K-Q8_0-F32.gguf", src);
    tu_write_file(p, "<html>not found</html>", 22);
    rc = run_script(work, src, "mtp", &out);
    cr_assert_eq(rc, 1, "non-GGUF: exit %d: %s", rc, out);
    cr_assert(strstr(out, "not a GGUF"), "%s", out);
    free(out);

    /* Missing in the repository. */
    rc = run_script(work, src, "q4", &out);
    cr_assert_eq(rc, 1, "missing file: exit %d: %s", rc, out);
    cr_assert(strstr(out, "cannot reach"), "%s", out);
    free(out);
    free(big);
    free(model);
    free(src);
    free(work);
}
