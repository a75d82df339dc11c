/*
 * tests/test_chat.c — V4 chat encoding (src/text/chat*.c): the 4 official vectors byte-exact,
 * the hand-written spec vectors in tests/data/chat/, the C API, tool schemas, canonical DSML,
 * JSON errors, and `./ds4 --render-chat`.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds4.h"
#include "testutil.h"

/* Fails with the first differing offset and some context on both sides. */
static void assert_same_bytes(const char *what, const char *got, size_t got_n, const char *want,
                              size_t want_n) {
    size_t i = 0;
    while (i < got_n && i < want_n && got[i] == want[i]) i++;
    if (i == got_n && i == want_n) return;
    size_t from = i > 40 ? i - 40 : 0;
    size_t gl = got_n - from < 80 ? got_n - from : 80, wl = want_n - from < 80 ? want_n - from : 80;
    cr_assert_fail("%s: first difference at byte %zu (got %zu bytes, want %zu)\n  got:  ...%.*s\n"
            "  want: ...%.*s", what, i, got_n, want_n, (int)gl, got + from, (int)wl, want + from);
}

static char *render_file(const char *path, const char *json, size_t n, ds4_thinking *force,
                         size_t *out_n) {
    ds4_error err = {0};
    ds4_chat *chat = NULL;
    ds4_status st = ds4_chat_from_json(&chat, json, n, &err);
    cr_assert_eq(st, DS4_OK, "%s: load failed: %s", path, err.msg);
    if (force) ds4_chat_set_thinking(chat, *force);
    char *out = NULL;
    st = ds4_chat_render(chat, &out, out_n, &err);
    cr_assert_eq(st, DS4_OK, "%s: render failed: %s", path, err.msg);
    ds4_chat_free(chat);
    return out;
}

/* CHAT_ENCODING §10: cases 1-3 run in thinking mode, case 4 in chat mode. */
static const ds4_thinking official_mode[4] = {DS4_THINKING_HIGH, DS4_THINKING_HIGH,
                                              DS4_THINKING_HIGH, DS4_THINKING_NONE};

Test(chat_render, official_vectors_byte_identical) {
    for (int i = 1; i <= 4; i++) {
        char in[64], want_path[64];
        snprintf(in, sizeof in, "testdata/encoding/test_input_%d.json", i);
        snprintf(want_path, sizeof want_path, "testdata/encoding/test_output_%d.txt", i);
        size_t n, want_n, got_n;
        char *json = tu_read_shared(in, &n);
        char *want = tu_read_shared(want_path, &want_n);
        ds4_thinking mode = official_mode[i - 1];
        char *got = render_file(in, json, n, &mode, &got_n);
        assert_same_bytes(in, got, got_n, want, want_n);
        free(got);
        free(want);
        free(json);
    }
}

/* One spec vector: tests/data/chat/X.json renders to the bytes of X.txt. */
static void check_spec_vector(const char *in, void *ctx) {
    (void)ctx;
    char want_path[512];
    snprintf(want_path, sizeof want_path, "%.*s.txt", (int)(strlen(in) - 5), in);
    size_t n, want_n, got_n;
    char *json = tu_read_file(in, &n);
    char *want = tu_read_file(want_path, &want_n);
    char *got = render_file(in, json, n, NULL, &got_n);
    assert_same_bytes(in, got, got_n, want, want_n);
    free(got);
    free(want);
    free(json);
}

Test(chat_render, spec_vectors_match_hand_written_outputs) {
    int n_cases = tu_for_each_json("tests/data/chat", check_spec_vector, NULL);
    cr_assert_geq(n_cases, 15, "expected at least 15 spec vectors, found %d", n_cases);
}

/* The same conversation as official vector 2, built through the C API. */
Test(chat_api, messages_built_in_c_match_official_vector_2) {
    size_t n, want_n, got_n;
    char *json = tu_read_shared("testdata/encoding/test_input_2.json", &n);
    char *want = tu_read_shared("testdata/encoding/test_output_2.txt", &want_n);
    json_t *msgs = json_loadb(json, n, 0, NULL);
    cr_assert(json_is_array(msgs));
    ds4_chat *chat;
    ds4_error err = {0};
    cr_assert_eq(ds4_chat_create(&chat, DS4_THINKING_HIGH, &err), DS4_OK);
    for (size_t i = 0; i < json_array_size(msgs); i++) {
        json_t *m = json_array_get(msgs, i);
        const char *role = json_string_value(json_object_get(m, "role"));
        ds4_chat_msg msg = {
            .role = strcmp(role, "system") == 0 ? DS4_ROLE_SYSTEM
                    : strcmp(role, "user") == 0 ? DS4_ROLE_USER
                                                 : DS4_ROLE_ASSISTANT,
            .content = json_string_value(json_object_get(m, "content")),
            .reasoning = json_string_value(json_object_get(m, "reasoning_content")),
        };
        cr_assert_eq(ds4_chat_add(chat, &msg, &err), DS4_OK, "%s", err.msg);
    }
    cr_assert_eq(ds4_chat_n_msgs(chat), json_array_size(msgs));
    char *got;
    cr_assert_eq(ds4_chat_render(chat, &got, &got_n, &err), DS4_OK, "%s", err.msg);
    assert_same_bytes("C API vector 2", got, got_n, want, want_n);
    free(got);
    ds4_chat_free(chat);
    json_decref(msgs);
    free(want);
    free(json);
}

/* Official vector 1 with its tools given through ds4_chat_set_tools and its tool call through
 * ds4_tool_call: same bytes as the file. */
Test(chat_api, tools_and_calls_through_c_match_official_vector_1) {
    size_t n, want_n, got_n;
    char *json = tu_read_shared("testdata/encoding/test_input_1.json", &n);
    char *want = tu_read_shared("testdata/encoding/test_output_1.txt", &want_n);
    json_t *root = json_loadb(json, n, 0, NULL);
    json_t *msgs = json_object_get(root, "messages");
    ds4_chat *chat;
    ds4_error err = {0};
    cr_assert_eq(ds4_chat_create(&chat, DS4_THINKING_HIGH, &err), DS4_OK);
    for (size_t i = 0; i < json_array_size(msgs); i++) {
        json_t *m = json_array_get(msgs, i);
        const char *role = json_string_value(json_object_get(m, "role"));
        ds4_tool_call calls[4];
        size_t n_calls = 0;
        json_t *tc = json_object_get(m, "tool_calls");
        for (size_t k = 0; k < json_array_size(tc) && k < 4; k++, n_calls++) {
            json_t *c = json_array_get(tc, k), *fn = json_object_get(c, "function");
            calls[k] = (ds4_tool_call){json_string_value(json_object_get(c, "id")),
                                       json_string_value(json_object_get(fn, "name")),
                                       json_string_value(json_object_get(fn, "arguments"))};
        }
        ds4_chat_msg msg = {
            .role = strcmp(role, "system") == 0 ? DS4_ROLE_SYSTEM
                    : strcmp(role, "user") == 0 ? DS4_ROLE_USER
                    : strcmp(role, "tool") == 0 ? DS4_ROLE_TOOL
                                                 : DS4_ROLE_ASSISTANT,
            .content = json_string_value(json_object_get(m, "content")),
            .reasoning = json_string_value(json_object_get(m, "reasoning_content")),
            .tool_call_id = json_string_value(json_object_get(m, "tool_call_id")),
            .tool_calls = calls,
            .n_tool_calls = n_calls,
        };
        cr_assert_eq(ds4_chat_add(chat, &msg, &err), DS4_OK, "%s", err.msg);
    }
    char *tools = json_dumps(json_object_get(root, "tools"), 0);
    cr_assert_eq(ds4_chat_set_tools(chat, tools, &err), DS4_OK, "%s", err.msg);
    char *got;
    cr_assert_eq(ds4_chat_render(chat, &got, &got_n, &err), DS4_OK, "%s", err.msg);
    assert_same_bytes("C API vector 1", got, got_n, want, want_n);
    free(got);
    free(tools);
    ds4_chat_free(chat);
    json_decref(root);
    free(want);
    free(json);
}

/* CHAT_ENCODING §5: an Anthropic tool renders as the OpenAI function with the same fields. */
Test(chat_tools, anthropic_shape_renders_like_openai_function) {
    const char *openai = "[{\"type\":\"function\",\"function\":{\"name\":\"t\",\"description\":"
                         "\"d é\",\"parameters\":{\"type\":\"object\",\"required\":[\"a\"]}}}]";
    const char *anthropic = "[{\"name\":\"t\",\"input_schema\":{\"type\":\"object\","
                            "\"required\":[\"a\"]},\"description\":\"d é\","
                            "\"cache_control\":{\"type\":\"ephemeral\"}}]";
    const char *bare = "[{\"name\":\"t\",\"description\":\"d é\",\"parameters\":"
                       "{\"type\":\"object\",\"required\":[\"a\"]}}]";
    char *a, *b;
    ds4_error err = {0};
    cr_assert_eq(ds4_chat_render_tools(openai, &a, NULL, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(ds4_chat_render_tools(anthropic, &b, NULL, &err), DS4_OK, "%s", err.msg);
    cr_assert_str_eq(a, b);
    free(b);
    cr_assert_eq(ds4_chat_render_tools(bare, &b, NULL, &err), DS4_OK, "%s", err.msg);
    cr_assert_str_eq(a, b);
    const char *line = "\n\n{\"name\": \"t\", \"description\": \"d é\", \"parameters\": "
                       "{\"type\": \"object\", \"required\": [\"a\"]}}\n\nYou MUST strictly";
    cr_assert_not_null(strstr(a, line), "schema line not found in:\n%s", a);
    cr_assert(strncmp(a, "## Tools\n\n", 10) == 0);
    free(a);
    free(b);
    cr_assert_eq(ds4_chat_render_tools("[{\"type\":\"web_search\"}]", &a, NULL, &err),
                 DS4_ERR_FORMAT);
    cr_assert_not_null(strstr(err.msg, "tools[0]"), "%s", err.msg);
}

/* Python json.dumps float repr in non-string DSML values (§6.1). */
Test(chat_dsml, canonical_floats_follow_python_repr) {
    static const char *const cases[][2] = {
        {"0.1", "0.1"},      {"1.0", "1.0"},         {"100", "100"},
        {"1e15", "1000000000000000.0"}, {"1e16", "1e+16"}, {"0.0001", "0.0001"},
        {"0.00001", "1e-05"}, {"-0.0", "-0.0"},      {"123456.789e3", "123456789.0"},
        {"2.5e-300", "2.5e-300"}, {"1.7976931348623157e308", "1.7976931348623157e+308"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char args[64], want[256];
        snprintf(args, sizeof args, "{\"v\": %s}", cases[i][0]);
        ds4_tool_call c = {NULL, "f", args};
        char *out;
        ds4_error err = {0};
        cr_assert_eq(ds4_dsml_render_calls(&c, 1, &out, NULL, &err), DS4_OK, "%s", err.msg);
        snprintf(want, sizeof want, "string=\"false\">%s</", cases[i][1]);
        cr_assert_not_null(strstr(out, want), "%s: want %s in\n%s", cases[i][0], cases[i][1], out);
        free(out);
    }
}

Test(chat_dsml, no_calls_render_nothing) {
    char *out;
    size_t n = 99;
    cr_assert_eq(ds4_dsml_render_calls(NULL, 0, &out, &n, NULL), DS4_OK);
    cr_assert_eq(n, 0);
    cr_assert_str_eq(out, "");
    free(out);
}

Test(chat_json, errors_name_the_place) {
    static const char *const cases[][2] = {
        {"[{\"role\": \"user\", \"content\": \"x\"", "line 1"},
        {"[{\"role\": \"wizard\", \"content\": \"x\"}]", "messages[0].role"},
        {"[{\"content\": \"x\"}]", "messages[0].role: missing"},
        {"[{\"role\": \"user\", \"content\": 1}, {\"role\": \"user\", \"task\": \"dance\"}]",
         "messages[1]"},
        {"[{\"role\": \"assistant\", \"tool_calls\": [{\"function\": {}}]}]",
         "messages[0].tool_calls[0].function.name"},
        {"[{\"role\": \"developer\", \"content\": \"\"}]", "developer message needs content"},
        {"{\"messages\": 3}", "messages"},
        {"{\"messages\": [], \"thinking\": \"ultra\"}", "thinking"},
        {"[{\"role\": \"system\", \"content\": \"s\", \"tools\": {\"a\": 1}}]", "tools"},
        {"[{\"role\": \"system\", \"content\": \"s\", \"tools\": [{\"type\": \"x\"}]}]",
         "messages[0]: tools[0]: neither"},
        {"{\"messages\": [], \"tools\": [{\"function\": 3}]}", "tools[0].function"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ds4_chat *chat = (ds4_chat *)1;
        ds4_error err = {0};
        ds4_status st = ds4_chat_from_json(&chat, cases[i][0], strlen(cases[i][0]), &err);
        cr_assert_neq(st, DS4_OK, "case %zu accepted: %s", i, cases[i][0]);
        cr_assert_null(chat, "case %zu: out not cleared", i);
        cr_assert_not_null(strstr(err.msg, cases[i][1]), "case %zu: message '%s' lacks '%s'", i,
                           err.msg, cases[i][1]);
    }
}

Test(chat_cli, render_chat_prints_exact_bytes) {
    char *bin = tu_bin_path("ds4");
    char *in = tu_shared_path("testdata/encoding/test_input_4.json");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s --render-chat %s --thinking none", bin, in);
    char *out = NULL;
    int rc = tu_run(cmd, &out);
    cr_assert_eq(rc, 0, "%s: exit %d: %s", cmd, rc, out);
    size_t want_n;
    char *want = tu_read_shared("testdata/encoding/test_output_4.txt", &want_n);
    assert_same_bytes("ds4 --render-chat vector 4", out, strlen(out), want, want_n);
    free(out);
    free(want);
    free(in);

    /* Default thinking (high) on vector 2; no newline appended. */
    in = tu_shared_path("testdata/encoding/test_input_2.json");
    snprintf(cmd, sizeof cmd, "%s --render-chat %s", bin, in);
    rc = tu_run(cmd, &out);
    cr_assert_eq(rc, 0, "%s: exit %d: %s", cmd, rc, out);
    want = tu_read_shared("testdata/encoding/test_output_2.txt", &want_n);
    assert_same_bytes("ds4 --render-chat vector 2", out, strlen(out), want, want_n);
    free(out);
    free(want);
    free(in);

    char *dir = tu_tmpdir();
    char *bad = tu_join(dir, "bad.json");
    tu_write_file(bad, "[\n {\"role\": \"user\",\n  \"content\": }\n]", 37);
    snprintf(cmd, sizeof cmd, "%s --render-chat %s", bin, bad);
    rc = tu_run(cmd, &out);
    cr_assert_eq(rc, 1, "bad JSON: exit %d (want 1): %s", rc, out);
    cr_assert_not_null(strstr(out, "line 3 column"), "bad JSON message lacks line/column: %s", out);
    free(out);

    snprintf(cmd, sizeof cmd, "%s --render-chat %s --thinking sideways", bin, bad);
    rc = tu_run(cmd, &out);
    cr_assert_eq(rc, 2, "bad --thinking: exit %d (want 2): %s", rc, out);
    free(out);
    free(bad);
    free(dir);
    free(bin);
}

/* SERVER_CLI §5.3: a sampled block replays byte for byte; the canonical form is used without. */
Test(chat_api, sampled_dsml_replays_exactly) {
    const char *sampled = " <｜DSML｜tool_calls><｜DSML｜invoke name=\"f\">"
                          "<｜DSML｜parameter name=\"n\" string=\"false\">[1,2]</｜DSML｜parameter>"
                          "</｜DSML｜invoke></｜DSML｜tool_calls>";
    ds4_tool_call call = {"c1", "f", "{\"n\":[1,2]}"};
    ds4_chat *chat;
    ds4_error err = {0};
    cr_assert_eq(ds4_chat_create(&chat, DS4_THINKING_NONE, &err), DS4_OK);
    ds4_chat_msg u = {.role = DS4_ROLE_USER, .content = "go"};
    ds4_chat_msg a = {.role = DS4_ROLE_ASSISTANT, .content = "ok", .tool_calls = &call,
                      .n_tool_calls = 1, .tool_calls_dsml = sampled};
    ds4_chat_msg t = {.role = DS4_ROLE_TOOL, .content = "r", .tool_call_id = "c1"};
    cr_assert_eq(ds4_chat_add(chat, &u, &err), DS4_OK);
    cr_assert_eq(ds4_chat_add(chat, &a, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(ds4_chat_add(chat, &t, &err), DS4_OK);
    char *out;
    cr_assert_eq(ds4_chat_render(chat, &out, NULL, &err), DS4_OK, "%s", err.msg);
    char want[1024];
    snprintf(want, sizeof want, "<｜begin▁of▁sentence｜><｜User｜>go<｜Assistant｜></think>ok%s"
             "<｜end▁of▁sentence｜><｜User｜><tool_result>r</tool_result><｜Assistant｜></think>",
             sampled);
    cr_assert_str_eq(out, want);
    free(out);
    ds4_chat_msg bad = {.role = DS4_ROLE_USER, .content = "x", .tool_calls_dsml = sampled};
    cr_assert_eq(ds4_chat_add(chat, &bad, &err), DS4_ERR_INVALID_ARG);
    ds4_chat_free(chat);
}
