/*
 * tests/test_tokenizer_cli.c — `ds4 --tokenizer FILE --tokenize/--tokenize-file/--detokenize`
 * run as a program (DS4_BIN_DIR): ids against reference vectors, exit codes 1 (runtime) and
 * 2 (usage) with their messages.
 */
#include "test_tokenizer_vec.h"

static char *run(const char *args, int *rc) {
    char *bin = tu_bin_path("ds4"), *json = tu_shared_path(TV_JSON), *out = NULL;
    size_t n = strlen(bin) + strlen(json) + strlen(args) + 64;
    char *cmd = malloc(n);
    snprintf(cmd, n, "%s --tokenizer %s %s", bin, json, args);
    *rc = tu_run(cmd, &out);
    free(cmd);
    free(bin);
    free(json);
    return out;
}

Test(tokenizer_cli, tokenize_detokenize_and_file) {
    int rc;
    /* TOKENIZER.md §5.5 probe */
    char *out = run("--tokenize \"$(printf 'Hello, world! 123\\nsecond line')\"", &rc);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert_str_eq(out, "19923 14 2058 3 223 6895 201 10930 2562\n");
    free(out);
    out = run("--detokenize '19923, 14 2058,3'", &rc);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert_str_eq(out, "Hello, world!\n");
    free(out);
    /* A file: the first encode vector's text, compared with its ids. */
    char *dir = tu_tmpdir(), *path = tu_join(dir, "in.txt");
    const char *txt = "    int x = 12345;\n\n  foo's  bar\r\n";  /* TOKENIZER.md §3.3 worked example */
    tu_write_file(path, txt, strlen(txt));
    char args[512];
    snprintf(args, sizeof args, "--tokenize-file %s", path);
    out = run(args, &rc);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert_str_eq(out, "361 688 1527 438 223 6895 1883 1048 223 52735 734 223 4758 204 201\n");
    free(out);
    /* special-as-text and skip-special */
    out = run("--tokenize '<｜User｜>' --special-as-text", &rc);
    cr_assert_eq(rc, 0);
    cr_assert(strcmp(out, "128803\n") != 0 && strchr(out, ' '), "special-as-text gave %s", out);
    free(out);
    out = run("--detokenize '0 19923 1' --skip-special", &rc);
    cr_assert_eq(rc, 0);
    cr_assert_str_eq(out, "Hello\n");
    free(out);
    free(path);
    free(dir);
}

Test(tokenizer_cli, errors_exit_1_runtime_2_usage) {
    int rc;
    char *out = run("--detokenize '1 2 x'", &rc);
    cr_assert_eq(rc, 2, "bad id text: rc %d: %s", rc, out);
    cr_assert(strstr(out, "'x' is not a token id"), "%s", out);
    free(out);
    out = run("--detokenize 129280", &rc);
    cr_assert_eq(rc, 1, "id out of range: rc %d", rc);
    cr_assert(strstr(out, "129280") && strstr(out, "outside"), "%s", out);
    free(out);
    out = run("--tokenize-file /nonexistent/file.txt", &rc);
    cr_assert_eq(rc, 1);
    cr_assert(strstr(out, "/nonexistent/file.txt"), "%s", out);
    free(out);
    out = run("--tokenize a --detokenize 1", &rc);
    cr_assert_eq(rc, 2, "two modes: rc %d", rc);
    free(out);
    char *bin = tu_bin_path("ds4"), cmd[512];
    snprintf(cmd, sizeof cmd, "%s --tokenizer /nonexistent/tok.json --tokenize a", bin);
    cr_assert_eq(tu_run(cmd, &out), 1);
    cr_assert(strstr(out, "/nonexistent/tok.json") && strstr(out, "No such file"), "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "%s --tokenize a", bin);
    cr_assert_eq(tu_run(cmd, &out), 2, "missing --tokenizer is a usage error");
    cr_assert(strstr(out, "--tokenizer FILE is required"), "%s", out);
    free(out);
    free(bin);
}
