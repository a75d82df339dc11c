/* tests/test_serve_request.c — request parsing for every API (SERVER_CLI §3): field mapping,
 * thinking resolution, sampling ranges, stop lists, and the 400s for malformed input. */
#include <criterion/criterion.h>
#include <string.h>

#include "serve/request.h"

static srv_limits lim = {.max_depth = 16, .n_ctx = 32768, .default_max_tokens = 1000};

static srv_request parse_ok(srv_api api, const char *body) {
    srv_request r;
    srv_reqerr e;
    ds4_status st = srv_request_parse(api, body, strlen(body), &lim, &r, &e);
    cr_assert_eq(st, DS4_OK, "parse of %s failed: %d %s", body, e.http_status, e.message);
    return r;
}

static srv_reqerr parse_bad(srv_api api, const char *body) {
    srv_request r;
    srv_reqerr e;
    memset(&e, 0, sizeof e);
    ds4_status st = srv_request_parse(api, body, strlen(body), &lim, &r, &e);
    cr_assert_neq(st, DS4_OK, "parse of %s should fail", body);
    cr_assert_eq(e.http_status, 400, "body %s: expected 400, got %d (%s)", body, e.http_status, e.message);
    return e;
}

Test(serve_request, chat_fields_map_to_request) {
    srv_request r = parse_ok(SRV_API_CHAT,
        "{\"model\":\"m1\",\"messages\":[{\"role\":\"system\",\"content\":\"S\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"image_url\"},\"b\"]},"
        "{\"role\":\"assistant\",\"content\":null,\"reasoning_content\":\"R\",\"tool_calls\":[{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"ls\",\"arguments\":\"{\\\"p\\\":1}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"out\"}],"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"ls\",\"parameters\":{\"type\":\"object\"}}}],"
        "\"max_completion_tokens\":77,\"temperature\":0.5,\"top_p\":0.9,\"top_k\":40,\"min_p\":0.1,\"seed\":42,"
        "\"stop\":[\"X\",\"\",\"YY\"],\"stream\":true,\"stream_options\":{\"include_usage\":true},\"think\":false}");
    cr_assert_str_eq(r.model, "m1");
    cr_assert_eq(r.n_msgs, 4);
    cr_assert_eq(r.msgs[0].role, SRV_ROLE_SYSTEM);
    cr_assert_str_eq(r.msgs[1].content, "ab", "image part dropped, text parts joined");
    cr_assert_eq(r.msgs[2].role, SRV_ROLE_ASSISTANT);
    cr_assert_str_eq(r.msgs[2].reasoning, "R");
    cr_assert_eq(r.msgs[2].n_calls, 1);
    cr_assert_str_eq(r.msgs[2].calls[0].id, "call_1");
    cr_assert_str_eq(r.msgs[2].calls[0].arguments, "{\"p\":1}");
    cr_assert_str_eq(r.msgs[3].tool_call_id, "call_1");
    cr_assert_eq(r.n_tools, 1);
    cr_assert_str_eq(r.tools[0], "{\"name\":\"ls\",\"parameters\":{\"type\":\"object\"}}");
    cr_assert(r.tools_active);
    cr_assert_eq(r.max_tokens, 77);
    cr_assert_float_eq(r.temperature, 0.5, 1e-12);
    cr_assert_eq(r.top_k, 40);
    cr_assert(r.has_seed);
    cr_assert_eq(r.seed, 42);
    cr_assert_eq(r.n_stop, 2, "empty stop strings are ignored");
    cr_assert_str_eq(r.stop[1], "YY");
    cr_assert(r.stream && r.include_usage);
    cr_assert_eq(r.think, SRV_THINK_NONE);
    srv_request_free(&r);
}

Test(serve_request, defaults_and_thinking_resolution) {
    srv_request r = parse_ok(SRV_API_CHAT, "{\"messages\":[{\"content\":\"hi\"}]}");
    cr_assert_eq(r.msgs[0].role, SRV_ROLE_USER, "role defaults to user");
    cr_assert_eq(r.think, SRV_THINK_HIGH, "thinking is the default");
    cr_assert_float_eq(r.temperature, 1.0, 0);
    cr_assert_float_eq(r.min_p, 0.05, 1e-12);
    cr_assert_eq(r.max_tokens, 1000, "server default output limit");
    srv_request_free(&r);
    r = parse_ok(SRV_API_CHAT, "{\"model\":\"deepseek-chat\",\"messages\":[{\"content\":\"hi\"}]}");
    cr_assert_eq(r.think, SRV_THINK_NONE, "deepseek-chat means non-thinking unless explicit");
    srv_request_free(&r);
    r = parse_ok(SRV_API_CHAT, "{\"model\":\"deepseek-chat\",\"thinking\":{\"type\":\"enabled\"},\"messages\":[{\"content\":\"hi\"}]}");
    cr_assert_eq(r.think, SRV_THINK_HIGH);
    srv_request_free(&r);
    r = parse_ok(SRV_API_CHAT, "{\"reasoning_effort\":\"max\",\"messages\":[{\"content\":\"hi\"}]}");
    cr_assert_eq(r.think, SRV_THINK_HIGH, "max needs a 393216-token context; 32768 downgrades to high");
    srv_request_free(&r);
    srv_limits big = lim;
    big.n_ctx = 393216;
    srv_reqerr e;
    const char *b = "{\"reasoning_effort\":\"max\",\"messages\":[{\"content\":\"hi\"}]}";
    cr_assert_eq(srv_request_parse(SRV_API_CHAT, b, strlen(b), &big, &r, &e), DS4_OK);
    cr_assert_eq(r.think, SRV_THINK_MAX);
    srv_request_free(&r);
    r = parse_ok(SRV_API_CHAT, "{\"reasoning_effort\":\"none\",\"messages\":[{\"content\":\"hi\"}]}");
    cr_assert_eq(r.think, SRV_THINK_NONE);
    srv_request_free(&r);
}

Test(serve_request, invalid_values_are_400_naming_the_field) {
    srv_reqerr e = parse_bad(SRV_API_CHAT, "{\"messages\":[{\"content\":\"x\"}],\"max_tokens\":-1}");
    cr_assert_str_eq(e.param, "max_tokens");
    e = parse_bad(SRV_API_CHAT, "{\"messages\":[{\"content\":\"x\"}],\"temperature\":null}");
    cr_assert_str_eq(e.param, "temperature");
    e = parse_bad(SRV_API_CHAT, "{\"messages\":[{\"content\":\"x\"}],\"top_k\":-5}");
    cr_assert_str_eq(e.param, "top_k");
    e = parse_bad(SRV_API_CHAT, "{\"messages\":[{\"content\":\"x\"}],\"top_p\":1.5}");
    cr_assert_str_eq(e.param, "top_p");
    e = parse_bad(SRV_API_CHAT, "{\"messages\":[{\"content\":\"x\"}],\"reasoning_effort\":\"ultra\"}");
    cr_assert_str_eq(e.param, "reasoning_effort");
    e = parse_bad(SRV_API_CHAT, "{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}");
    cr_assert(strstr(e.message, "wizard"), "message names the bad role: %s", e.message);
    e = parse_bad(SRV_API_CHAT, "{\"messages\":[]}");
    e = parse_bad(SRV_API_CHAT, "{}");
    cr_assert_str_eq(e.param, "messages");
    e = parse_bad(SRV_API_CHAT, "[1,2]");
    e = parse_bad(SRV_API_CHAT, "{\"messages\":[{\"content\":\"x\"}],");
    cr_assert(strstr(e.message, "invalid JSON"), "%s", e.message);
    e = parse_bad(SRV_API_CHAT, "{\"messages\":[{\"content\":\"x\"}],\"stream\":\"yes\"}");
    cr_assert_str_eq(e.param, "stream");
    e = parse_bad(SRV_API_CHAT, "{\"messages\":[{\"content\":\"x\"}],\"tools\":{}}");
    cr_assert_str_eq(e.param, "tools");
    e = parse_bad(SRV_API_CHAT, "{\"messages\":[{\"content\":\"x\"}],\"stop\":[1]}");
    cr_assert_str_eq(e.param, "stop");
}

Test(serve_request, json_nesting_limit) {
    char deep[200];
    memset(deep, 0, sizeof deep);
    strcpy(deep, "{\"messages\":[{\"content\":\"x\"}],\"x\":");
    size_t n = strlen(deep);
    for (int i = 0; i < 20; i++) deep[n++] = '[';
    for (int i = 0; i < 20; i++) deep[n++] = ']';
    deep[n++] = '}';
    srv_reqerr e = parse_bad(SRV_API_CHAT, deep);
    cr_assert(strstr(e.message, "nesting"), "%s", e.message);
    cr_assert_eq(srv_json_depth("{\"a\":\"[[[[\"}", 12), 1, "brackets inside strings do not count");
}

Test(serve_request, completions_prompt) {
    srv_request r = parse_ok(SRV_API_COMPLETIONS, "{\"prompt\":[\"hello\"],\"max_tokens\":3,\"logprobs\":2}");
    cr_assert_str_eq(r.prompt, "hello");
    cr_assert_eq(r.max_tokens, 3);
    cr_assert(r.logprobs);
    cr_assert_eq(r.top_logprobs, 2);
    srv_request_free(&r);
    parse_bad(SRV_API_COMPLETIONS, "{\"prompt\":[\"a\",\"b\"]}");
    parse_bad(SRV_API_COMPLETIONS, "{\"max_tokens\":3}");
}

Test(serve_request, anthropic_blocks) {
    srv_request r = parse_ok(SRV_API_ANTHROPIC,
        "{\"model\":\"claude\",\"max_tokens\":99,\"system\":[{\"type\":\"text\",\"text\":\"x-anthropic-billing: 1\"},"
        "{\"type\":\"text\",\"text\":\"A\"},{\"type\":\"text\",\"text\":\"B\"}],"
        "\"messages\":[{\"role\":\"user\",\"content\":\"q\"},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"thinking\",\"thinking\":\"T\",\"signature\":\"s\"},"
        "{\"type\":\"text\",\"text\":\"ok\"},{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"f\",\"input\":{\"a\":[1, 2]}}]},"
        "{\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_1\",\"content\":[{\"type\":\"text\",\"text\":\"R\"}]},"
        "{\"type\":\"text\",\"text\":\"more\"}],\"role\":\"user\"}],"
        "\"tools\":[{\"name\":\"f\",\"description\":\"d\",\"input_schema\":{\"type\":\"object\"}}],"
        "\"stop_sequences\":[\"END\"],\"thinking\":{\"type\":\"disabled\"}}");
    cr_assert_eq(r.n_msgs, 5);
    cr_assert_str_eq(r.msgs[0].content, "A\nB", "x-anthropic- parts dropped, parts joined with newline");
    cr_assert_str_eq(r.msgs[2].reasoning, "T");
    cr_assert_str_eq(r.msgs[2].content, "ok");
    cr_assert_str_eq(r.msgs[2].calls[0].arguments, "{\"a\":[1,2]}");
    cr_assert_eq(r.msgs[3].role, SRV_ROLE_TOOL);
    cr_assert_str_eq(r.msgs[3].tool_call_id, "toolu_1");
    cr_assert_str_eq(r.msgs[3].content, "R");
    cr_assert_eq(r.msgs[4].role, SRV_ROLE_USER, "text after the tool result is a user message");
    cr_assert_str_eq(r.msgs[4].content, "more");
    /* Kept in the Anthropic shape; the chat encoder maps input_schema to parameters (test_serve_prompt.c). */
    cr_assert_str_eq(r.tools[0], "{\"name\":\"f\",\"description\":\"d\",\"input_schema\":{\"type\":\"object\"}}");
    cr_assert_eq(r.max_tokens, 99);
    cr_assert_eq(r.n_stop, 1);
    cr_assert_eq(r.think, SRV_THINK_NONE);
    srv_request_free(&r);
    parse_bad(SRV_API_ANTHROPIC, "{\"messages\":[{\"role\":\"system\",\"content\":\"x\"}]}");
    parse_bad(SRV_API_ANTHROPIC, "{\"messages\":[{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"a\"}]}]}");
}

Test(serve_request, responses_items) {
    srv_request r = parse_ok(SRV_API_RESPONSES,
        "{\"instructions\":\"I\",\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_text\",\"text\":\"q\"}]},"
        "{\"type\":\"reasoning\",\"summary\":[{\"type\":\"summary_text\",\"text\":\"r1\"}]},"
        "{\"type\":\"function_call\",\"call_id\":\"call_9\",\"name\":\"sh\",\"arguments\":\"{}\"},"
        "{\"type\":\"function_call_output\",\"call_id\":\"call_9\",\"output\":\"done\"}],"
        "\"tools\":[{\"type\":\"function\",\"name\":\"sh\",\"parameters\":{\"type\":\"object\"}}],"
        "\"max_output_tokens\":12,\"reasoning\":{\"effort\":\"high\",\"summary\":\"auto\"},\"stream\":true}");
    cr_assert_eq(r.n_msgs, 4);
    cr_assert_eq(r.msgs[0].role, SRV_ROLE_SYSTEM);
    cr_assert_str_eq(r.msgs[2].reasoning, "r1", "pending reasoning attaches to the call's assistant message");
    cr_assert_str_eq(r.msgs[2].calls[0].id, "call_9");
    cr_assert_eq(r.msgs[3].role, SRV_ROLE_TOOL);
    cr_assert_str_eq(r.msgs[3].content, "done");
    cr_assert_eq(r.max_tokens, 12);
    cr_assert(r.reasoning_visible);
    cr_assert(r.tools_active);
    srv_request_free(&r);
    srv_reqerr e = parse_bad(SRV_API_RESPONSES, "{\"input\":\"x\",\"previous_response_id\":\"resp_1\"}");
    cr_assert_str_eq(e.param, "previous_response_id");
    parse_bad(SRV_API_RESPONSES, "{\"input\":[{\"type\":\"mystery_item\"}]}");
    parse_bad(SRV_API_RESPONSES, "{\"input\":[{\"role\":\"user\",\"content\":\"x\",\"status\":\"in_progress\"}]}");
    parse_bad(SRV_API_RESPONSES, "{\"input\":\"x\",\"tool_choice\":{\"type\":\"function\",\"name\":\"f\"}}");
}

Test(serve_request, responses_hosted_tools_and_items) {
    srv_request r = parse_ok(SRV_API_RESPONSES,
        "{\"input\":[{\"role\":\"user\",\"content\":\"run ls\"},"
        "{\"type\":\"local_shell_call\",\"call_id\":\"ls1\",\"action\":{\"command\":[\"ls\"]}},"
        "{\"type\":\"local_shell_call_output\",\"call_id\":\"ls1\",\"output\":\"a.txt\"}],"
        "\"tools\":[{\"type\":\"web_search\"},{\"type\":\"function\",\"name\":\"f\"}]}");
    cr_assert_eq(r.n_tools, 1, "hosted web_search skipped, function kept");
    cr_assert_eq(r.n_msgs, 3);
    cr_assert_eq(r.msgs[1].n_calls, 1);
    cr_assert_str_eq(r.msgs[1].calls[0].name, "local_shell");
    cr_assert_str_eq(r.msgs[1].calls[0].arguments, "{\"command\":[\"ls\"]}");
    cr_assert_eq(r.msgs[2].role, SRV_ROLE_TOOL);
    cr_assert_str_eq(r.msgs[2].tool_call_id, "ls1");
    cr_assert_str_eq(r.msgs[2].content, "a.txt");
    srv_request_free(&r);
}

Test(serve_request, response_format_and_n) {
    srv_request r = parse_ok(SRV_API_CHAT, "{\"messages\":[{\"content\":\"x\"}],\"n\":1,"
                             "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"a\",\"schema\":{\"type\":\"object\"}}}}");
    cr_assert_str_eq(r.response_format, "{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"a\",\"schema\":{\"type\":\"object\"}}}");
    srv_request_free(&r);
    r = parse_ok(SRV_API_CHAT, "{\"messages\":[{\"content\":\"x\"}],\"response_format\":{\"type\":\"text\"}}");
    cr_assert_null(r.response_format);
    srv_request_free(&r);
    r = parse_ok(SRV_API_RESPONSES, "{\"input\":\"x\",\"text\":{\"format\":{\"type\":\"json_object\"}}}");
    cr_assert_str_eq(r.response_format, "{\"type\":\"json_object\"}");
    srv_request_free(&r);
    srv_reqerr e = parse_bad(SRV_API_CHAT, "{\"messages\":[{\"content\":\"x\"}],\"n\":3}");
    cr_assert_str_eq(e.param, "n");
    e = parse_bad(SRV_API_CHAT, "{\"messages\":[{\"content\":\"x\"}],\"response_format\":{\"type\":\"yaml\"}}");
    cr_assert_str_eq(e.param, "response_format");
}
