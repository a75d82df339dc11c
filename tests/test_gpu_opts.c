/*
 * tests/test_gpu_opts.c — the options of issue #7 that the CPU build must still check: the
 * engine's gpu_layers_experts / gpu_ctx_tokens (include/ds4.h), the default backend, and the
 * --gpu-layers-experts flag of ds4, ds4-server and ds4-bench. Validation only: placing experts
 * in host memory is tested on a GPU (tests/cuda/test_cuda_model.c, host_experts_case).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds4.h"
#include "testutil.h"

static int run_tool(const char *tool, const char *args, char **out) {
    char *bin = tu_bin_path(tool), cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s", bin, args);
    free(bin);
    return tu_run(cmd, out);
}

Test(gpu_opts, init_defaults_to_auto_fit) {
    ds4_engine_options o;
    memset(&o, 0x5a, sizeof o);
    ds4_engine_options_init(&o);
    cr_assert_eq(o.gpu_layers_experts, -1, "gpu_layers_experts default %d, want -1 (as many as fit)",
                 o.gpu_layers_experts);
    cr_assert_eq(o.gpu_ctx_tokens, 0u, "gpu_ctx_tokens default %u, want 0 (32768)", o.gpu_ctx_tokens);
    cr_assert_str_eq(o.backend, "cpu");
}

Test(gpu_opts, default_backend_of_a_cpu_build_is_cpu) {
    /* This runner links the CPU library (make): no CUDA, so never "cuda". */
    cr_assert_str_eq(ds4_default_backend(), "cpu");
}

/* Checked before the file is opened: no model needed. */
static ds4_status open_with(const char *backend, int gpu_layers, ds4_error *err) {
    ds4_engine_options o;
    ds4_engine_options_init(&o);
    o.backend = backend;
    o.gpu_layers_experts = gpu_layers;
    ds4_engine *e = NULL;
    ds4_status st = ds4_engine_open(&e, "/nonexistent/model.gguf", &o, err);
    cr_assert_null(e, "engine opened");
    return st;
}

Test(gpu_opts, layer_count_with_the_cpu_backend_is_rejected) {
    int vals[] = {0, 3, -2};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        ds4_error err = {0};
        ds4_status st = open_with("cpu", vals[i], &err);
        cr_assert_eq(st, DS4_ERR_INVALID_ARG, "gpu_layers_experts %d on cpu: status %d (%s)", vals[i], (int)st,
                     err.msg);
        cr_assert(strstr(err.msg, "needs backend \"cuda\""), "message: %s", err.msg);
    }
}

Test(gpu_opts, auto_with_the_cpu_backend_reaches_the_file) {
    ds4_error err = {0};
    ds4_status st = open_with("cpu", -1, &err);
    cr_assert_neq(st, DS4_OK);
    cr_assert_neq(st, DS4_ERR_INVALID_ARG, "-1 is the default and must pass: %s", err.msg);
    cr_assert(strstr(err.msg, "/nonexistent/model.gguf"), "expected the file error, got: %s", err.msg);
}

Test(gpu_opts, cuda_in_a_cpu_build_is_unsupported) {
    ds4_error err = {0};
    ds4_status st = open_with("cuda", 40, &err);
    cr_assert_eq(st, DS4_ERR_UNSUPPORTED, "status %d: %s", (int)st, err.msg);
    cr_assert(strstr(err.msg, "this build has no CUDA"), "message: %s", err.msg);
}

Test(gpu_opts, cli_flag_errors_are_usage_errors) {
    static const struct {
        const char *tool, *args, *msg;
    } cases[] = {
        {"ds4", "--gpu-layers-experts x -p hi", "--gpu-layers-experts needs an integer in [0, 1000000], got 'x'"},
        {"ds4", "--gpu-layers-experts -1 -p hi", "--gpu-layers-experts needs an integer in [0, 1000000], got '-1'"},
        {"ds4", "--backend cpu --gpu-layers-experts 3 -p hi", "it needs --backend cuda"},
        {"ds4-server", "--gpu-layers-experts -1", "--gpu-layers-experts needs an integer in 0..1000000"},
        {"ds4-server", "--backend cpu --gpu-layers-experts 2", "it needs --backend cuda"},
        {"ds4-bench", "--synthetic tiny --gpu-layers-experts abc", "--gpu-layers-experts needs an integer >= 0"},
        {"ds4-bench", "--synthetic tiny --gpu-layers-experts 2000000", "more layers than any model has"},
        /* CPU build: the default backend is cpu, so a layer count has nothing to place */
        {"ds4-bench", "--synthetic tiny --gpu-layers-experts 2", "--gpu-layers-experts needs --backend cuda"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out = NULL;
        int rc = run_tool(cases[i].tool, cases[i].args, &out);
        cr_assert_eq(rc, 2, "%s %s: exit %d, expected 2: %s", cases[i].tool, cases[i].args, rc, out);
        cr_assert(strstr(out, cases[i].msg), "%s %s: expected \"%s\" in: %s", cases[i].tool, cases[i].args,
                  cases[i].msg, out);
        cr_assert_null(strstr(out, "backend cpu ("), "%s %s: a CPU build must not announce its backend: %s",
                       cases[i].tool, cases[i].args, out);
        free(out);
    }
}

Test(gpu_opts, help_lists_the_flag) {
    const char *tools[] = {"ds4", "ds4-server", "ds4-bench"};
    for (size_t i = 0; i < 3; i++) {
        char *out = NULL;
        int rc = run_tool(tools[i], "--help", &out);
        cr_assert_eq(rc, 0, "%s --help: exit %d: %s", tools[i], rc, out);
        cr_assert(strstr(out, "--gpu-layers-experts N"), "%s --help lacks --gpu-layers-experts: %s", tools[i], out);
        free(out);
    }
}
