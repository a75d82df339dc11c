/* tests/test_serve_cli.c — ds4-server's command line: bad flags and the backend choice fail
 * clearly with a non-zero exit, before any request is served. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static int run_server(const char *args, char **out) {
    char *bin = tu_bin_path("ds4-server");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s", bin, args);
    free(bin);
    return tu_run(cmd, out);
}

Test(serve_cli, unknown_backend_is_a_usage_error) {
    char *out = NULL;
    int rc = run_server("--backend gpu", &out);
    cr_assert_eq(rc, 2, "exit %d, output: %s", rc, out);
    cr_assert(strstr(out, "--backend must be cpu or cuda, not 'gpu'") != NULL, "output: %s", out);
    free(out);
}

Test(serve_cli, cuda_backend_without_cuda_build_fails_naming_it) {
    /* The CPU build (make) has no CUDA: the engine refuses the backend (checked before the
     * file is read) and the server exits. */
    char *out = NULL;
    int rc = run_server("--backend cuda --port 0 -m ../shared/testdata/tiny-v4/config.json", &out);
    cr_assert_neq(rc, 0, "output: %s", out);
    cr_assert(strstr(out, "backend 'cuda': this build has no CUDA") != NULL, "output: %s", out);
    free(out);
}

Test(serve_cli, unknown_flag_is_a_usage_error) {
    char *out = NULL;
    int rc = run_server("--no-such-flag", &out);
    cr_assert_eq(rc, 2, "exit %d, output: %s", rc, out);
    cr_assert(strstr(out, "unknown or incomplete option '--no-such-flag'") != NULL, "output: %s", out);
    free(out);
}
