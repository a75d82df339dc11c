/* tests/test_serve_fmt.c — response formatting for every API: the exact event sequences of
 * streaming responses (golden SSE text) and the non-streaming bodies (SERVER_CLI §3.3-§3.6). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "serve/fmt.h"

/* One scripted generation: thinking, text, one tool call with two argument fragments. */
static char *run(srv_api api, bool stream, bool with_tool, srv_finish fin) {
    srv_request r;
    memset(&r, 0, sizeof r);
    r.api = api;
    r.stream = stream;
    r.include_usage = true;
    r.reasoning_visible = true;
    r.model = "m";
    srv_fmt f;
    cr_assert(srv_fmt_init(&f, &r, "ID", 7));
    srv_usage u = {10, 4, 0, 0};
    srv_fmt_begin(&f, &u);
    if (api != SRV_API_COMPLETIONS) srv_fmt_reasoning(&f, "Th", 2);
    srv_fmt_content(&f, "Hi", 2);
    if (with_tool) {
        srv_fmt_tool_begin(&f, "call_X", "ls");
        srv_fmt_tool_args(&f, "{\"p\":", 5);
        srv_fmt_tool_args(&f, "\"/\"}", 4);
        srv_fmt_tool_end(&f);
    }
    u.completion_tokens = 5;
    u.reasoning_tokens = 1;
    srv_fmt_finish(&f, fin, &u, NULL);
    cr_assert(srv_buf_ok(&f.out));
    char *s = strdup(f.out.data ? f.out.data : "");
    srv_fmt_free(&f);
    return s;
}

static void expect(const char *got, const char *want) {
    if (strcmp(got, want) != 0) {
        size_t i = 0;
        while (got[i] && got[i] == want[i]) i++;
        cr_assert_fail("output differs at byte %zu\n got: %s\nwant: %s", i, got + i, want + i);
    }
}

#define CH "data: {\"id\":\"ID\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":"

Test(serve_fmt, openai_chat_stream_with_tool) {
    char *s = run(SRV_API_CHAT, true, true, SRV_FINISH_TOOL_CALLS);
    expect(s,
        CH "{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n"
        CH "{\"reasoning_content\":\"Th\"},\"finish_reason\":null}]}\n\n"
        CH "{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n"
        CH "{\"tool_calls\":[{\"index\":0,\"id\":\"call_X\",\"type\":\"function\",\"function\":{\"name\":\"ls\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n"
        CH "{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"p\\\":\"}}]},\"finish_reason\":null}]}\n\n"
        CH "{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"/\\\"}\"}}]},\"finish_reason\":null}]}\n\n"
        CH "{},\"finish_reason\":\"tool_calls\"}]}\n\n"
        "data: {\"id\":\"ID\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[],"
        "\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":5,\"total_tokens\":15,\"prompt_tokens_details\":{\"cached_tokens\":4},"
        "\"completion_tokens_details\":{\"reasoning_tokens\":1}}}\n\n"
        "data: [DONE]\n\n");
    free(s);
}

Test(serve_fmt, openai_chat_body) {
    char *s = run(SRV_API_CHAT, false, true, SRV_FINISH_TOOL_CALLS);
    expect(s,
        "{\"id\":\"ID\",\"object\":\"chat.completion\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,"
        "\"message\":{\"role\":\"assistant\",\"content\":\"Hi\",\"reasoning_content\":\"Th\",\"tool_calls\":[{\"id\":\"call_X\","
        "\"type\":\"function\",\"function\":{\"name\":\"ls\",\"arguments\":\"{\\\"p\\\":\\\"/\\\"}\"}}]},\"logprobs\":null,"
        "\"finish_reason\":\"tool_calls\"}],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":5,\"total_tokens\":15,"
        "\"prompt_tokens_details\":{\"cached_tokens\":4},\"completion_tokens_details\":{\"reasoning_tokens\":1}}}");
    free(s);
}

Test(serve_fmt, completions_stream_and_body) {
    char *s = run(SRV_API_COMPLETIONS, true, false, SRV_FINISH_LENGTH);
    const char *pre = "data: {\"id\":\"ID\",\"object\":\"text_completion\",\"created\":7,\"model\":\"m\",\"choices\":";
    char want[2048];
    snprintf(want, sizeof want,
             "%s[{\"text\":\"Hi\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}]}\n\n"
             "%s[{\"text\":\"\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"length\"}]}\n\n"
             "%s[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":5,\"total_tokens\":15,\"prompt_tokens_details\":{\"cached_tokens\":4},"
             "\"completion_tokens_details\":{\"reasoning_tokens\":1}}}\n\ndata: [DONE]\n\n", pre, pre, pre);
    expect(s, want);
    free(s);
    s = run(SRV_API_COMPLETIONS, false, false, SRV_FINISH_STOP);
    cr_assert(strstr(s, "\"choices\":[{\"text\":\"Hi\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"stop\"}]"), "%s", s);
    free(s);
}

#define AE(name) "event: " name "\ndata: "

Test(serve_fmt, anthropic_stream_with_thinking_and_tool_use) {
    char *s = run(SRV_API_ANTHROPIC, true, true, SRV_FINISH_TOOL_CALLS);
    expect(s,
        AE("message_start") "{\"type\":\"message_start\",\"message\":{\"id\":\"ID\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\","
        "\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":6,\"output_tokens\":0,"
        "\"cache_read_input_tokens\":4,\"cache_creation_input_tokens\":0}}}\n\n"
        AE("ping") "{\"type\":\"ping\"}\n\n"
        AE("content_block_start") "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}\n\n"
        AE("content_block_delta") "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Th\"}}\n\n"
        AE("content_block_delta") "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"ID\"}}\n\n"
        AE("content_block_stop") "{\"type\":\"content_block_stop\",\"index\":0}\n\n"
        AE("content_block_start") "{\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
        AE("content_block_delta") "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n"
        AE("content_block_stop") "{\"type\":\"content_block_stop\",\"index\":1}\n\n"
        AE("content_block_start") "{\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"call_X\",\"name\":\"ls\",\"input\":{}}}\n\n"
        AE("content_block_delta") "{\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"p\\\":\"}}\n\n"
        AE("content_block_delta") "{\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"/\\\"}\"}}\n\n"
        AE("content_block_stop") "{\"type\":\"content_block_stop\",\"index\":2}\n\n"
        AE("message_delta") "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":6,"
        "\"output_tokens\":5,\"cache_read_input_tokens\":4,\"cache_creation_input_tokens\":0}}\n\n"
        AE("message_stop") "{\"type\":\"message_stop\"}\n\n");
    free(s);
}

Test(serve_fmt, anthropic_body) {
    char *s = run(SRV_API_ANTHROPIC, false, true, SRV_FINISH_TOOL_CALLS);
    expect(s,
        "{\"id\":\"ID\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\",\"content\":["
        "{\"type\":\"thinking\",\"thinking\":\"Th\",\"signature\":\"ID\"},{\"type\":\"text\",\"text\":\"Hi\"},"
        "{\"type\":\"tool_use\",\"id\":\"call_X\",\"name\":\"ls\",\"input\":{\"p\":\"/\"}}],\"stop_reason\":\"tool_use\","
        "\"stop_sequence\":null,\"usage\":{\"input_tokens\":6,\"output_tokens\":5,\"cache_read_input_tokens\":4,"
        "\"cache_creation_input_tokens\":0}}");
    free(s);
}

Test(serve_fmt, anthropic_thinking_only_gets_empty_text_block) {
    srv_request r;
    memset(&r, 0, sizeof r);
    r.api = SRV_API_ANTHROPIC;
    r.stream = true;
    r.model = "m";
    srv_fmt f;
    cr_assert(srv_fmt_init(&f, &r, "ID", 7));
    srv_fmt_begin(&f, NULL);
    srv_fmt_reasoning(&f, "T", 1);
    srv_fmt_finish(&f, SRV_FINISH_LENGTH, NULL, NULL);
    const char *o = f.out.data;
    cr_assert(strstr(o, "\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}"), "%s", o);
    cr_assert(strstr(o, "\"stop_reason\":\"max_tokens\""), "%s", o);
    srv_fmt_free(&f);
}

#define RE(name) "event: " name "\ndata: {\"type\":\"" name "\",\"sequence_number\":"

Test(serve_fmt, responses_stream_lifecycle) {
    char *s = run(SRV_API_RESPONSES, true, true, SRV_FINISH_TOOL_CALLS);
    expect(s,
        RE("response.created") "0,\"response\":{\"id\":\"ID\",\"object\":\"response\",\"created_at\":7,\"status\":\"in_progress\",\"model\":\"m\",\"output\":[]}}\n\n"
        RE("response.in_progress") "1,\"response\":{\"id\":\"ID\",\"object\":\"response\",\"created_at\":7,\"status\":\"in_progress\",\"model\":\"m\",\"output\":[]}}\n\n"
        RE("response.output_item.added") "2,\"output_index\":0,\"item\":{\"id\":\"rs_0\",\"type\":\"reasoning\",\"status\":\"in_progress\",\"summary\":[]}}\n\n"
        RE("response.reasoning_summary_part.added") "3,\"item_id\":\"rs_0\",\"output_index\":0,\"summary_index\":0,\"part\":{\"type\":\"summary_text\",\"text\":\"\"}}\n\n"
        RE("response.reasoning_summary_text.delta") "4,\"item_id\":\"rs_0\",\"output_index\":0,\"summary_index\":0,\"delta\":\"Th\"}\n\n"
        RE("response.reasoning_summary_text.done") "5,\"item_id\":\"rs_0\",\"output_index\":0,\"summary_index\":0,\"text\":\"Th\"}\n\n"
        RE("response.reasoning_summary_part.done") "6,\"item_id\":\"rs_0\",\"output_index\":0,\"summary_index\":0,\"part\":{\"type\":\"summary_text\",\"text\":\"Th\"}}\n\n"
        RE("response.output_item.done") "7,\"output_index\":0,\"item\":{\"id\":\"rs_0\",\"type\":\"reasoning\",\"status\":\"completed\",\"summary\":[{\"type\":\"summary_text\",\"text\":\"Th\"}]}}\n\n"
        RE("response.output_item.added") "8,\"output_index\":1,\"item\":{\"id\":\"msg_1\",\"type\":\"message\",\"status\":\"in_progress\",\"role\":\"assistant\",\"content\":[]}}\n\n"
        RE("response.content_part.added") "9,\"item_id\":\"msg_1\",\"output_index\":1,\"content_index\":0,\"part\":{\"type\":\"output_text\",\"text\":\"\",\"annotations\":[]}}\n\n"
        RE("response.output_text.delta") "10,\"item_id\":\"msg_1\",\"output_index\":1,\"content_index\":0,\"delta\":\"Hi\"}\n\n"
        RE("response.output_text.done") "11,\"item_id\":\"msg_1\",\"output_index\":1,\"content_index\":0,\"text\":\"Hi\"}\n\n"
        RE("response.content_part.done") "12,\"item_id\":\"msg_1\",\"output_index\":1,\"content_index\":0,\"part\":{\"type\":\"output_text\",\"text\":\"Hi\",\"annotations\":[]}}\n\n"
        RE("response.output_item.done") "13,\"output_index\":1,\"item\":{\"id\":\"msg_1\",\"type\":\"message\",\"status\":\"completed\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"Hi\",\"annotations\":[]}]}}\n\n"
        RE("response.output_item.added") "14,\"output_index\":2,\"item\":{\"id\":\"fc_2\",\"type\":\"function_call\",\"status\":\"in_progress\",\"name\":\"ls\",\"call_id\":\"call_X\",\"arguments\":\"\"}}\n\n"
        RE("response.function_call_arguments.delta") "15,\"item_id\":\"fc_2\",\"output_index\":2,\"delta\":\"{\\\"p\\\":\"}\n\n"
        RE("response.function_call_arguments.delta") "16,\"item_id\":\"fc_2\",\"output_index\":2,\"delta\":\"\\\"/\\\"}\"}\n\n"
        RE("response.function_call_arguments.done") "17,\"item_id\":\"fc_2\",\"output_index\":2,\"arguments\":\"{\\\"p\\\":\\\"/\\\"}\"}\n\n"
        RE("response.output_item.done") "18,\"output_index\":2,\"item\":{\"id\":\"fc_2\",\"type\":\"function_call\",\"status\":\"completed\",\"name\":\"ls\",\"call_id\":\"call_X\",\"arguments\":\"{\\\"p\\\":\\\"/\\\"}\"}}\n\n"
        RE("response.completed") "19,\"response\":{\"id\":\"ID\",\"object\":\"response\",\"created_at\":7,\"status\":\"completed\",\"model\":\"m\",\"output\":["
        "{\"id\":\"rs_0\",\"type\":\"reasoning\",\"status\":\"completed\",\"summary\":[{\"type\":\"summary_text\",\"text\":\"Th\"}]},"
        "{\"id\":\"msg_1\",\"type\":\"message\",\"status\":\"completed\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"Hi\",\"annotations\":[]}]},"
        "{\"id\":\"fc_2\",\"type\":\"function_call\",\"status\":\"completed\",\"name\":\"ls\",\"call_id\":\"call_X\",\"arguments\":\"{\\\"p\\\":\\\"/\\\"}\"}],"
        "\"usage\":{\"input_tokens\":10,\"input_tokens_details\":{\"cached_tokens\":4},\"output_tokens\":5,\"output_tokens_details\":{\"reasoning_tokens\":1},\"total_tokens\":15}}}\n\n");
    free(s);
}

Test(serve_fmt, responses_body_incomplete) {
    char *s = run(SRV_API_RESPONSES, false, false, SRV_FINISH_LENGTH);
    expect(s,
        "{\"id\":\"ID\",\"object\":\"response\",\"created_at\":7,\"status\":\"incomplete\",\"model\":\"m\",\"output\":["
        "{\"id\":\"rs_0\",\"type\":\"reasoning\",\"status\":\"incomplete\",\"summary\":[{\"type\":\"summary_text\",\"text\":\"Th\"}]},"
        "{\"id\":\"msg_1\",\"type\":\"message\",\"status\":\"incomplete\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"Hi\",\"annotations\":[]}]}],"
        "\"usage\":{\"input_tokens\":10,\"input_tokens_details\":{\"cached_tokens\":4},\"output_tokens\":5,\"output_tokens_details\":{\"reasoning_tokens\":1},\"total_tokens\":15},"
        "\"incomplete_details\":{\"reason\":\"max_output_tokens\"}}");
    free(s);
}

Test(serve_fmt, mid_stream_errors_end_the_stream) {
    srv_request r;
    memset(&r, 0, sizeof r);
    r.stream = true;
    r.model = "m";
    const srv_api apis[3] = {SRV_API_CHAT, SRV_API_ANTHROPIC, SRV_API_RESPONSES};
    const char *want[3] = {
        "event: error\ndata: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n",
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"boom\"}}\n\n",
        "event: error\ndata: {\"type\":\"error\",\"sequence_number\":2,\"code\":\"server_error\",\"message\":\"boom\",\"param\":null}\n\n"};
    for (int i = 0; i < 3; i++) {
        r.api = apis[i];
        srv_fmt f;
        cr_assert(srv_fmt_init(&f, &r, "ID", 7));
        srv_fmt_begin(&f, NULL);
        srv_buf_clear(&f.out);
        srv_fmt_error(&f, "boom");
        expect(f.out.data, want[i]);
        srv_fmt_content(&f, "late", 4);
        srv_fmt_finish(&f, SRV_FINISH_STOP, NULL, NULL);
        expect(f.out.data, want[i]); /* nothing after the error event */
        srv_fmt_free(&f);
    }
}

Test(serve_fmt, error_bodies_per_api) {
    srv_reqerr e;
    srv_reqerr_set(&e, 400, "top_k", "bad top_k");
    char *o = srv_fmt_error_body(SRV_API_CHAT, &e);
    expect(o, "{\"error\":{\"message\":\"bad top_k\",\"type\":\"invalid_request_error\",\"param\":\"top_k\",\"code\":null}}");
    free(o);
    o = srv_fmt_error_body(SRV_API_ANTHROPIC, &e);
    expect(o, "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"bad top_k\"}}");
    free(o);
    srv_reqerr_set(&e, 503, NULL, "busy");
    o = srv_fmt_error_body(SRV_API_ANTHROPIC, &e);
    expect(o, "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"busy\"}}");
    free(o);
}

Test(serve_fmt, invalid_utf8_becomes_replacement_character) {
    srv_request r;
    memset(&r, 0, sizeof r);
    r.api = SRV_API_CHAT;
    r.model = "m";
    srv_fmt f;
    cr_assert(srv_fmt_init(&f, &r, "ID", 7));
    srv_fmt_content(&f, "a\xff\xc3(\xed\xa0\x80z\xc3\xa9", 10);
    srv_fmt_finish(&f, SRV_FINISH_STOP, NULL, NULL);
    cr_assert(srv_buf_ok(&f.out), "the body was built");
    /* 0xff, a lone lead byte, and an encoded surrogate (3 bytes) each give U+FFFD per byte. */
    cr_assert(strstr(f.out.data, "\"content\":\"a\xef\xbf\xbd\xef\xbf\xbd(\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdz\xc3\xa9\""), "%s", f.out.data);
    srv_fmt_free(&f);
}

Test(serve_fmt, logprobs_shapes) {
    srv_request r;
    memset(&r, 0, sizeof r);
    r.api = SRV_API_CHAT;
    r.model = "m";
    r.logprobs = true;
    srv_fmt f;
    cr_assert(srv_fmt_init(&f, &r, "ID", 7));
    srv_logprob_alt alts[2] = {{"A", 1, -0.5f}, {"\xe2\x82", 2, -1.0f}};
    srv_fmt_logprob(&f, "A", 1, -0.5f, alts, 2);
    srv_fmt_content(&f, "A", 1);
    srv_fmt_finish(&f, SRV_FINISH_STOP, NULL, NULL);
    cr_assert(strstr(f.out.data, "\"logprobs\":{\"content\":[{\"token\":\"A\",\"logprob\":-0.5,\"bytes\":[65],\"top_logprobs\":"
                                 "[{\"token\":\"A\",\"logprob\":-0.5,\"bytes\":[65]},{\"token\":\"\xef\xbf\xbd\xef\xbf\xbd\",\"logprob\":-1.0,\"bytes\":[226,130]}]}]}"),
              "%s", f.out.data);
    srv_fmt_free(&f);
    r.api = SRV_API_COMPLETIONS;
    cr_assert(srv_fmt_init(&f, &r, "ID", 7));
    srv_fmt_logprob(&f, "A", 1, -0.5f, alts, 1);
    srv_fmt_content(&f, "A", 1);
    srv_fmt_finish(&f, SRV_FINISH_STOP, NULL, NULL);
    cr_assert(strstr(f.out.data, "\"logprobs\":{\"tokens\":[\"A\"],\"token_logprobs\":[-0.5],\"top_logprobs\":[{\"A\":-0.5}]}"), "%s", f.out.data);
    srv_fmt_free(&f);
}

/* A tool block that turns out malformed (DS4_DSML_CALLS_ABORT): text, a started call with a
 * partial argument, the abort, then the block's text as content, finish STOP. */
static char *run_abort(srv_api api, bool stream) {
    srv_request r;
    memset(&r, 0, sizeof r);
    r.api = api;
    r.stream = stream;
    r.model = "m";
    srv_fmt f;
    cr_assert(srv_fmt_init(&f, &r, "ID", 7));
    srv_usage u = {10, 0, 0, 0};
    srv_fmt_begin(&f, &u);
    srv_fmt_content(&f, "Hi", 2);
    srv_fmt_tool_begin(&f, "call_X", "ls");
    srv_fmt_tool_args(&f, "{\"p\":", 5);
    srv_fmt_tool_abort(&f);
    cr_assert_eq(f.n_calls, 0, "calls withdrawn");
    srv_fmt_content(&f, "<B>", 3);
    u.completion_tokens = 5;
    srv_fmt_finish(&f, SRV_FINISH_STOP, &u, NULL);
    cr_assert(srv_buf_ok(&f.out));
    char *s = strdup(f.out.data ? f.out.data : "");
    srv_fmt_free(&f);
    return s;
}

/* Offsets of the needles, which must all occur in this order. */
static void expect_in_order(const char *what, const char *s, const char *const *needles, size_t n) {
    const char *at = s;
    for (size_t i = 0; i < n; i++) {
        const char *hit = strstr(at, needles[i]);
        cr_assert_not_null(hit, "%s: '%s' missing after offset %zu in:\n%s", what, needles[i],
                           (size_t)(at - s), s);
        at = hit + strlen(needles[i]);
    }
}

Test(serve_fmt, tool_abort_bodies_carry_no_calls) {
    static const srv_api apis[] = {SRV_API_CHAT, SRV_API_ANTHROPIC, SRV_API_RESPONSES};
    for (size_t k = 0; k < 3; k++) {
        char *s = run_abort(apis[k], false);
        cr_assert_null(strstr(s, "call_X"), "api %zu: withdrawn call in body: %s", k, s);
        cr_assert_not_null(strstr(s, "Hi<B>"), "api %zu: text missing: %s", k, s);
        free(s);
    }
    char *chat = run_abort(SRV_API_CHAT, false);
    cr_assert_not_null(strstr(chat, "\"finish_reason\":\"stop\""), "%s", chat);
    free(chat);
    char *a = run_abort(SRV_API_ANTHROPIC, false);
    cr_assert_not_null(strstr(a, "\"stop_reason\":\"end_turn\""), "%s", a);
    free(a);
}

Test(serve_fmt, tool_abort_streams_end_coherently) {
    char *a = run_abort(SRV_API_ANTHROPIC, true);
    static const char *const an[] = {
        "\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"call_X\"",
        "\"partial_json\":\"{\\\"p\\\":\"",
        "{\"type\":\"content_block_stop\",\"index\":1}",
        "\"index\":2,\"content_block\":{\"type\":\"text\"",
        "\"text\":\"<B>\"",
        "{\"type\":\"content_block_stop\",\"index\":2}",
        "\"stop_reason\":\"end_turn\"",
        "message_stop"};
    expect_in_order("anthropic", a, an, sizeof an / sizeof *an);
    free(a);

    char *r = run_abort(SRV_API_RESPONSES, true);
    static const char *const rn[] = {
        "event: response.output_item.added", "\"type\":\"function_call\"",
        "event: response.function_call_arguments.done",
        "event: response.output_item.done", "\"status\":\"incomplete\"",
        "event: response.output_item.added", "\"type\":\"message\"",
        "\"delta\":\"<B>\"",
        "event: response.completed"};
    expect_in_order("responses", r, rn, sizeof rn / sizeof *rn);
    /* The final response object: the text before the block, the call incomplete, then the
     * block's text — each message item with only its own text. */
    const char *data = strstr(strstr(r, "event: response.completed"), "data: ");
    json_t *ev = json_loads(data + 6, JSON_DISABLE_EOF_CHECK, NULL);
    json_t *out = json_object_get(json_object_get(ev, "response"), "output");
    cr_assert_eq(json_array_size(out), 3, "output items: %s", data);
    static const char *const types[] = {"message", "function_call", "message"};
    static const char *const status[] = {"completed", "incomplete", "completed"};
    for (size_t i = 0; i < 3; i++) {
        json_t *it = json_array_get(out, i);
        cr_assert_str_eq(json_string_value(json_object_get(it, "type")), types[i], "item %zu", i);
        cr_assert_str_eq(json_string_value(json_object_get(it, "status")), status[i], "item %zu", i);
    }
    json_t *c0 = json_array_get(json_object_get(json_array_get(out, 0), "content"), 0);
    json_t *c2 = json_array_get(json_object_get(json_array_get(out, 2), "content"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(c0, "text")), "Hi");
    cr_assert_str_eq(json_string_value(json_object_get(c2, "text")), "<B>");
    json_decref(ev);
    free(r);

    char *c = run_abort(SRV_API_CHAT, true);
    static const char *const cn[] = {"\"tool_calls\":[{\"index\":0,\"id\":\"call_X\"",
                                     "\"content\":\"<B>\"", "\"finish_reason\":\"stop\"",
                                     "data: [DONE]"};
    expect_in_order("chat", c, cn, sizeof cn / sizeof *cn);
    cr_assert_null(strstr(c, "\"finish_reason\":\"tool_calls\""));
    free(c);
}
