/*
 * tests/test_dsml.c — completion parsing (src/text/dsml*.c): official parse examples from the
 * gold vectors, hand-written cases for every grammar branch (malformed DSML, escapes, several
 * calls, reasoning then tools, drifted spellings, EOS), streaming == at-once for every split
 * point and random pieces, events == result, and render -> parse round trips.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds4.h"
#include "testutil.h"

#define EOS "<｜end▁of▁sentence｜>"
#define TC "<｜DSML｜tool_calls>"
#define TC_END "</｜DSML｜tool_calls>"
#define INV(n) "<｜DSML｜invoke name=\"" n "\">"
#define INV_END "</｜DSML｜invoke>"
#define PAR(k, s) "<｜DSML｜parameter name=\"" k "\" string=\"" s "\">"
#define PAR_END "</｜DSML｜parameter>"

static int make_id(void *user, size_t idx, char *id) {
    (void)user;
    snprintf(id, DS4_TOOL_ID_MAX, "call_%zu", idx);
    return 0;
}

/* ---- Event accumulation: rebuilds the result from events and checks their order. --------- */

typedef struct acc_call {
    char *name, *id, *args;
    size_t n_args;
    bool ended;
} acc_call;

typedef struct acc {
    char *reasoning, *content;
    size_t n_reasoning, n_content;
    acc_call calls[64];
    size_t n_calls;
    bool feeding; /* deltas during feed must not end inside a UTF-8 character */
    const char *what;
} acc;

static void add(char **s, size_t *n, const char *p, size_t k) {
    *s = realloc(*s, *n + k + 1);
    cr_assert_not_null(*s);
    memcpy(*s + *n, p, k);
    *n += k;
    (*s)[*n] = '\0';
}

static bool ends_in_partial_utf8(const char *s, size_t n) {
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned char c = (unsigned char)s[n - back];
        if ((c & 0xC0) == 0x80) continue;
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > back;
    }
    return false;
}

static void acc_drop_calls(acc *a) {
    for (size_t i = 0; i < a->n_calls; i++) {
        free(a->calls[i].name);
        free(a->calls[i].id);
        free(a->calls[i].args);
    }
    a->n_calls = 0;
}

static int on_event(void *user, const ds4_dsml_event *ev) {
    acc *a = user;
    bool text = ev->kind == DS4_DSML_REASONING || ev->kind == DS4_DSML_CONTENT ||
                ev->kind == DS4_DSML_CALL_ARGS;
    if (text) {
        cr_assert_gt(ev->text_bytes, 0, "%s: empty delta of kind %d", a->what, ev->kind);
        if (a->feeding)
            cr_assert_not(ends_in_partial_utf8(ev->text, ev->text_bytes),
                          "%s: delta of kind %d ends inside a UTF-8 character", a->what, ev->kind);
    }
    switch (ev->kind) {
    case DS4_DSML_REASONING: add(&a->reasoning, &a->n_reasoning, ev->text, ev->text_bytes); break;
    case DS4_DSML_CONTENT: add(&a->content, &a->n_content, ev->text, ev->text_bytes); break;
    case DS4_DSML_CALL_START:
        cr_assert_eq(ev->call_index, a->n_calls, "%s: CALL_START index %zu, expected %zu",
                     a->what, ev->call_index, a->n_calls);
        cr_assert(a->n_calls == 0 || a->calls[a->n_calls - 1].ended,
                  "%s: CALL_START before the previous call ended", a->what);
        cr_assert_lt(a->n_calls, 64);
        a->calls[a->n_calls] = (acc_call){strdup(ev->name), ev->id ? strdup(ev->id) : NULL,
                                          NULL, 0, false};
        a->n_calls++;
        break;
    case DS4_DSML_CALL_ARGS:
        cr_assert(ev->call_index + 1 == a->n_calls && !a->calls[ev->call_index].ended,
                  "%s: CALL_ARGS for call %zu that is not the open call", a->what,
                  ev->call_index);
        add(&a->calls[ev->call_index].args, &a->calls[ev->call_index].n_args, ev->text,
            ev->text_bytes);
        break;
    case DS4_DSML_CALL_END:
        cr_assert(ev->call_index + 1 == a->n_calls && !a->calls[ev->call_index].ended,
                  "%s: CALL_END for call %zu that is not open", a->what, ev->call_index);
        a->calls[ev->call_index].ended = true;
        break;
    case DS4_DSML_CALLS_ABORT:
        cr_assert_gt(a->n_calls, 0, "%s: ABORT without calls", a->what);
        acc_drop_calls(a);
        break;
    }
    return 0;
}

static void assert_bytes_eq(const char *what, const char *field, const char *got, size_t got_n,
                            const char *want, size_t want_n) {
    cr_assert(got_n == want_n && memcmp(got ? got : "", want ? want : "", got_n) == 0,
              "%s: %s differs\n  got  (%zu): [%.*s]\n  want (%zu): [%.*s]", what, field, got_n,
              (int)got_n, got ? got : "", want_n, (int)want_n, want ? want : "");
}

static void assert_parsed_eq(const char *what, const ds4_parsed *got, const ds4_parsed *want) {
    assert_bytes_eq(what, "reasoning", got->reasoning, got->reasoning_bytes, want->reasoning,
                    want->reasoning_bytes);
    assert_bytes_eq(what, "content", got->content, got->content_bytes, want->content,
                    want->content_bytes);
    assert_bytes_eq(what, "dsml", got->dsml, got->dsml_bytes, want->dsml, want->dsml_bytes);
    cr_assert_eq(got->malformed_dsml, want->malformed_dsml, "%s: malformed flag", what);
    cr_assert_eq(got->n_calls, want->n_calls, "%s: %zu calls, want %zu", what, got->n_calls,
                 want->n_calls);
    for (size_t i = 0; i < got->n_calls; i++) {
        cr_assert_str_eq(got->calls[i].name, want->calls[i].name, "%s: call %zu name", what, i);
        cr_assert_str_eq(got->calls[i].arguments, want->calls[i].arguments, "%s: call %zu args",
                         what, i);
        cr_assert_str_eq(got->calls[i].id ? got->calls[i].id : "(null)",
                         want->calls[i].id ? want->calls[i].id : "(null)", "%s: call %zu id",
                         what, i);
    }
}

static void assert_events_match(acc *a, const ds4_parsed *r) {
    assert_bytes_eq(a->what, "events reasoning", a->reasoning, a->n_reasoning, r->reasoning,
                    r->reasoning_bytes);
    assert_bytes_eq(a->what, "events content", a->content, a->n_content, r->content,
                    r->content_bytes);
    cr_assert_eq(a->n_calls, r->n_calls, "%s: events give %zu calls, result %zu", a->what,
                 a->n_calls, r->n_calls);
    for (size_t i = 0; i < a->n_calls; i++) {
        cr_assert(a->calls[i].ended, "%s: call %zu never ended", a->what, i);
        cr_assert_str_eq(a->calls[i].name, r->calls[i].name, "%s: events call %zu name", a->what, i);
        assert_bytes_eq(a->what, "events args", a->calls[i].args, a->calls[i].n_args,
                        r->calls[i].arguments, strlen(r->calls[i].arguments));
        cr_assert_str_eq(a->calls[i].id, r->calls[i].id, "%s: events call %zu id", a->what, i);
    }
}

static void acc_free(acc *a) {
    acc_drop_calls(a);
    free(a->reasoning);
    free(a->content);
    memset(a, 0, sizeof *a);
}

/* Feeds text in the given pieces (cuts[] are increasing offsets), checks events, returns the
 * result. */
static void parse_pieces(const char *what, const char *text, size_t n, bool thinking, bool tools,
                         const size_t *cuts, size_t n_cuts, ds4_parsed *out) {
    acc a = {.what = what};
    ds4_dsml_opts o = {.thinking = thinking, .tools = tools, .on_event = on_event,
                       .event_user = &a, .make_id = make_id};
    ds4_dsml_parser *p;
    ds4_error err = {0};
    cr_assert_eq(ds4_dsml_parser_create(&p, &o, &err), DS4_OK, "%s", err.msg);
    size_t at = 0;
    a.feeding = true;
    for (size_t i = 0; i <= n_cuts; i++) {
        size_t to = i < n_cuts ? cuts[i] : n;
        cr_assert_eq(ds4_dsml_feed(p, text + at, to - at, &err), DS4_OK, "%s: %s", what, err.msg);
        at = to;
    }
    a.feeding = false;
    cr_assert_eq(ds4_dsml_finish(p, out, &err), DS4_OK, "%s: %s", what, err.msg);
    cr_assert_eq(ds4_dsml_feed(p, "x", 1, &err), DS4_ERR_STATE, "%s: feed after finish", what);
    ds4_dsml_parser_free(p);
    assert_events_match(&a, out);
    acc_free(&a);
}

static uint64_t rng_next(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

/* Streaming == at-once: every single split point, byte by byte, and random pieces. */
static void check_splits(const char *what, const char *text, size_t n, bool thinking, bool tools,
                         const ds4_parsed *ref) {
    char label[256];
    for (size_t k = 0; k <= n; k++) {
        ds4_parsed r;
        snprintf(label, sizeof label, "%s [split at %zu]", what, k);
        parse_pieces(label, text, n, thinking, tools, &k, 1, &r);
        assert_parsed_eq(label, &r, ref);
        ds4_parsed_clear(&r);
    }
    size_t *cuts = malloc((n + 1) * sizeof *cuts);
    cr_assert_not_null(cuts);
    for (size_t k = 0; k < n; k++) cuts[k] = k;
    ds4_parsed r;
    snprintf(label, sizeof label, "%s [byte by byte]", what);
    parse_pieces(label, text, n, thinking, tools, cuts, n, &r);
    assert_parsed_eq(label, &r, ref);
    ds4_parsed_clear(&r);
    for (uint64_t seed = 1; seed <= 8; seed++) {
        uint64_t s = seed;
        size_t n_cuts = 0, at = 0;
        for (;;) {
            at += 1 + rng_next(&s) % 9;
            if (at >= n) break;
            cuts[n_cuts++] = at;
        }
        snprintf(label, sizeof label, "%s [random pieces, seed %llu]", what,
                 (unsigned long long)seed);
        parse_pieces(label, text, n, thinking, tools, cuts, n_cuts, &r);
        assert_parsed_eq(label, &r, ref);
        ds4_parsed_clear(&r);
    }
    free(cuts);
}

/* At once, then every split. */
static void parse_checked(const char *what, const char *text, size_t n, bool thinking,
                          bool tools, ds4_parsed *out) {
    ds4_dsml_opts o = {.thinking = thinking, .tools = tools, .make_id = make_id};
    ds4_error err = {0};
    cr_assert_eq(ds4_dsml_parse(text, n, &o, out, &err), DS4_OK, "%s: %s", what, err.msg);
    check_splits(what, text, n, thinking, tools, out);
}

/* ---- Hand-written cases (CHAT_ENCODING §8, §9.5; SERVER_CLI §5.5) -------------------------- */

typedef struct pcase {
    const char *name, *text;
    bool thinking, tools;
    const char *reasoning, *content;
    const char *calls[4][2]; /* name, arguments JSON text (exact) */
    bool malformed;
} pcase;

#define BLOCK1 TC "\n" INV("x") "\n" INV_END "\n" TC_END

static const pcase CASES[] = {
    {"official_string_false_example", /* §8 step 4 / §10 last bullet */
     "\n\n" TC "\n" INV("f") "\n" PAR("n", "false") "[1, 2]" PAR_END "\n" PAR("s", "true")
     "a \"q\"" PAR_END "\n" INV_END "\n" TC_END,
     false, true, "", "", {{"f", "{\"n\": [1, 2], \"s\": \"a \\\"q\\\"\"}"}}, false},
    {"reasoning_then_two_calls",
     "Let me check.</think>Checking both.\n\n" TC "\n" INV("get") "\n" PAR("city", "true")
     "Paris" PAR_END "\n" INV_END "\n" INV("put") "\n" PAR("k", "false") "{\"a\": [true, null]}"
     PAR_END "\n" PAR("v", "true") "2 > 1 && ok" PAR_END "\n" INV_END "\n" TC_END EOS,
     true, true, "Let me check.", "Checking both.",
     {{"get", "{\"city\": \"Paris\"}"}, {"put", "{\"k\": {\"a\": [true, null]}, \"v\": \"2 > 1 && ok\"}"}},
     false},
    {"dsml_inside_reasoning_stays_reasoning",
     "I could write " BLOCK1 " here.</think>Done.", true, true,
     "I could write " BLOCK1 " here.", "Done.", {{0}}, false},
    {"no_think_end_is_all_reasoning", "still thinking " TC, true, true,
     "still thinking " TC, "", {{0}}, false},
    {"leading_think_tag_skipped", "<think>r</think>c", true, true, "r", "c", {{0}}, false},
    {"partial_think_prefix_is_reasoning", "<thin", true, false, "<thin", "", {{0}}, false},
    {"think_end_in_chat_mode_is_content", "a</think>b", false, true, "", "a</think>b", {{0}},
     false},
    {"malformed_attribute_becomes_content",
     "Hi\n\n" TC "\n<｜DSML｜invoke nam=\"x\">\n" INV_END "\n" TC_END, false, true, "",
     "Hi\n\n" TC "\n<｜DSML｜invoke nam=\"x\">\n" INV_END "\n" TC_END, {{0}}, true},
    {"unterminated_block_becomes_content",
     "A\n" TC "\n" INV("x") "\n" PAR("p", "true") "va", false, true, "",
     "A\n" TC "\n" INV("x") "\n" PAR("p", "true") "va", {{0}}, true},
    {"text_after_block_becomes_content", "r</think>" BLOCK1 "\nmore", true, true, "r",
     BLOCK1 "\nmore", {{0}}, true},
    {"eos_after_block_is_dropped", BLOCK1 "\n" EOS, false, true, "", "", {{"x", "{}"}}, false},
    {"text_after_eos_after_block_is_content", BLOCK1 EOS "z", false, true, "",
     BLOCK1 EOS "z", {{0}}, true},
    {"string_escapes",
     TC "\n" INV("w") "\n" PAR("v", "true") "l1\nl2\t\"q\" \\ b\x01/é" PAR_END "\n" INV_END
     "\n" TC_END, false, true, "", "",
     {{"w", "{\"v\": \"l1\\nl2\\t\\\"q\\\" \\\\ b\\u0001/é\"}"}}, false},
    {"non_string_value_with_tags_inside",
     TC INV("w") PAR("v", "false") "{\"html\": \"<b>x</b>\", \"n\": 1}" PAR_END INV_END TC_END,
     false, true, "", "", {{"w", "{\"v\": {\"html\": \"<b>x</b>\", \"n\": 1}}"}}, false},
    {"invalid_json_value_becomes_string",
     TC INV("w") PAR("v", "false") "not json" PAR_END PAR("e", "false") PAR_END INV_END TC_END,
     false, true, "", "", {{"w", "{\"v\": \"not json\", \"e\": \"\"}"}}, false},
    {"duplicate_key_is_malformed",
     TC INV("w") PAR("k", "true") "1" PAR_END PAR("k", "true") "2" PAR_END INV_END TC_END, false,
     true, "", TC INV("w") PAR("k", "true") "1" PAR_END PAR("k", "true") "2" PAR_END INV_END TC_END,
     {{0}}, true},
    {"bad_string_attribute_is_malformed",
     TC INV("w") PAR("k", "maybe") "1" PAR_END INV_END TC_END, false, true, "",
     TC INV("w") PAR("k", "maybe") "1" PAR_END INV_END TC_END, {{0}}, true},
    {"eos_mid_content_is_text", "a" EOS "b" EOS, false, true, "", "a" EOS "b", {{0}}, false},
    {"eos_ends_reasoning_turn", "r" EOS, true, true, "r", "", {{0}}, false},
    {"tools_off_keeps_dsml_as_content", "c\n\n" BLOCK1 EOS, false, false, "", "c\n\n" BLOCK1,
     {{0}}, false},
    {"missing_string_attribute_is_string",
     TC INV("w") "<｜DSML｜parameter name=\"p\">v</｜DSML｜parameter>" INV_END TC_END, false, true,
     "", "", {{"w", "{\"p\": \"v\"}"}}, false},
    {"drifted_family_without_first_bar",
     "c <DSML｜tool_calls>\n<DSML｜invoke name=\"a\">\n<DSML｜parameter name=\"k\" string=\"true\">"
     "v</DSML｜parameter>\n</DSML｜invoke>\n</DSML｜tool_calls>",
     false, true, "", "c", {{"a", "{\"k\": \"v\"}"}}, false},
    {"plain_xml_family",
     "<tool_calls> <invoke name=\"b\"> <parameter name=\"k\" string=\"false\">3</parameter> "
     "</invoke> </tool_calls>",
     false, true, "", "", {{"b", "{\"k\": 3}"}}, false},
    {"mixed_family_inner_tag_is_malformed",
     TC "\n<invoke name=\"b\">\n</invoke>\n" TC_END, false, true, "",
     TC "\n<invoke name=\"b\">\n</invoke>\n" TC_END, {{0}}, true},
    {"quoted_gt_in_attribute", TC INV("a>b") PAR("x y", "true") ">" PAR_END INV_END TC_END,
     false, true, "", "", {{"a>b", "{\"x y\": \">\"}"}}, false},
    {"trailing_whitespace_without_block_is_content", "x \n\t", false, true, "", "x \n\t", {{0}},
     false},
    {"lt_in_content", "a < b <<c <｜D <DSML", false, true, "", "a < b <<c <｜D <DSML", {{0}},
     false},
    {"only_final_blank_line_is_separator", "a \n\n\n\n" BLOCK1, false, true, "", "a \n\n",
     {{"x", "{}"}}, false},
    {"empty_block", "ok\n\n" TC "\n" TC_END, false, true, "", "ok", {{0}}, false},
    {"multibyte_text", "思考…</think>答案 " TC INV("搜索") PAR("查询", "true") "布洛芬" PAR_END
     INV_END TC_END, true, true, "思考…", "答案", {{"搜索", "{\"查询\": \"布洛芬\"}"}}, false},
    {"nested_quote_in_non_string",
     TC INV("q") PAR("a", "false") "[\"</x>\", \"\\\"\"]" PAR_END INV_END TC_END, false, true,
     "", "", {{"q", "{\"a\": [\"</x>\", \"\\\"\"]}"}}, false},
};

Test(dsml_parse, hand_written_cases_at_once_and_streamed) {
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        const pcase *c = &CASES[i];
        ds4_parsed r;
        parse_checked(c->name, c->text, strlen(c->text), c->thinking, c->tools, &r);
        assert_bytes_eq(c->name, "reasoning", r.reasoning, r.reasoning_bytes, c->reasoning,
                        strlen(c->reasoning));
        assert_bytes_eq(c->name, "content", r.content, r.content_bytes, c->content,
                        strlen(c->content));
        cr_assert_eq(r.malformed_dsml, c->malformed, "%s: malformed flag %d", c->name,
                     r.malformed_dsml);
        size_t n_want = 0;
        while (n_want < 4 && c->calls[n_want][0]) n_want++;
        cr_assert_eq(r.n_calls, n_want, "%s: %zu calls, want %zu", c->name, r.n_calls, n_want);
        for (size_t k = 0; k < n_want; k++) {
            char id[16];
            snprintf(id, sizeof id, "call_%zu", k);
            cr_assert_str_eq(r.calls[k].name, c->calls[k][0], "%s: call %zu name", c->name, k);
            cr_assert_str_eq(r.calls[k].arguments, c->calls[k][1], "%s: call %zu args", c->name, k);
            cr_assert_str_eq(r.calls[k].id, id, "%s: call %zu id", c->name, k);
            json_error_t je;
            json_t *v = json_loads(r.calls[k].arguments, 0, &je);
            cr_assert(json_is_object(v), "%s: call %zu args not a JSON object: %s", c->name, k,
                      je.text);
            json_decref(v);
        }
        if (n_want || (!c->malformed && strstr(c->text, "tool_calls>") && c->tools &&
                       !c->thinking))
            cr_assert(r.dsml_bytes > 0, "%s: dsml missing", c->name);
        if (n_want) { /* content + dsml are the sampled bytes after </think> (exact replay) */
            size_t both_n = r.content_bytes + r.dsml_bytes;
            char *both = malloc(both_n + 1);
            memcpy(both, r.content, r.content_bytes);
            memcpy(both + r.content_bytes, r.dsml, r.dsml_bytes);
            both[both_n] = '\0';
            const char *after = c->thinking ? strstr(c->text, "</think>") + 8 : c->text;
            cr_assert(strncmp(after, both, both_n) == 0, "%s: content+dsml [%s] is not the text",
                      c->name, both);
            free(both);
        }
        ds4_parsed_clear(&r);
    }
}

/* ---- Official vectors: completions cut from the gold prompts ------------------------------- */

/* The assistant turns of a gold output: the text after each "<｜Assistant｜><think>" through
 * its EOS, matched with the input's assistant messages in order. */
static void check_official(const char *in_rel, const char *out_rel) {
    size_t n_in, n_out;
    char *in = tu_read_shared(in_rel, &n_in);
    char *out = tu_read_shared(out_rel, &n_out);
    json_t *root = json_loadb(in, n_in, 0, NULL);
    json_t *msgs = json_is_array(root) ? root : json_object_get(root, "messages");
    const char *opener = "<｜Assistant｜><think>";
    const char *at = out;
    size_t n_checked = 0;
    for (size_t i = 0; i < json_array_size(msgs); i++) {
        json_t *m = json_array_get(msgs, i);
        if (strcmp(json_string_value(json_object_get(m, "role")), "assistant") != 0) continue;
        const char *reasoning = json_string_value(json_object_get(m, "reasoning_content"));
        /* A turn whose reasoning was dropped (§4.2) has no <think> opener: not a completion. */
        char *head = malloc(strlen(opener) + strlen(reasoning) + 1);
        strcpy(head, opener);
        strcat(head, reasoning);
        const char *start = strstr(at, head);
        free(head);
        if (!start) continue;
        start += strlen(opener);
        const char *end = strstr(start, EOS);
        cr_assert_not_null(end);
        end += strlen(EOS);
        char what[128];
        snprintf(what, sizeof what, "%s message %zu", in_rel, i);
        ds4_parsed r;
        parse_checked(what, start, (size_t)(end - start), true, true, &r);
        const char *content = json_string_value(json_object_get(m, "content"));
        if (!content) content = "";
        assert_bytes_eq(what, "reasoning", r.reasoning, r.reasoning_bytes, reasoning,
                        strlen(reasoning));
        assert_bytes_eq(what, "content", r.content, r.content_bytes, content, strlen(content));
        json_t *calls = json_object_get(m, "tool_calls");
        cr_assert_eq(r.n_calls, json_array_size(calls), "%s: calls", what);
        ds4_tool_call tc[8];
        for (size_t k = 0; k < r.n_calls && k < 8; k++) {
            json_t *fn = json_object_get(json_array_get(calls, k), "function");
            cr_assert_str_eq(r.calls[k].name, json_string_value(json_object_get(fn, "name")));
            json_t *want = json_loads(json_string_value(json_object_get(fn, "arguments")), 0, NULL);
            json_t *got = json_loads(r.calls[k].arguments, 0, NULL);
            cr_assert(want && got && json_equal(want, got), "%s: call %zu arguments %s", what, k,
                      r.calls[k].arguments);
            json_decref(want);
            json_decref(got);
            tc[k] = (ds4_tool_call){r.calls[k].id, r.calls[k].name, r.calls[k].arguments};
        }
        /* Canonical re-render of the parsed calls gives back the exact block (§6.1). */
        char *dsml;
        size_t dsml_n;
        ds4_error err = {0};
        cr_assert_eq(ds4_dsml_render_calls(tc, r.n_calls, &dsml, &dsml_n, &err), DS4_OK, "%s",
                     err.msg);
        assert_bytes_eq(what, "re-rendered DSML", dsml, dsml_n, r.dsml, r.dsml_bytes);
        const char *block = strstr(start, "\n\n" TC);
        if (r.n_calls) {
            cr_assert_not_null(block);
            assert_bytes_eq(what, "dsml vs gold bytes", r.dsml, r.dsml_bytes, block,
                            (size_t)(end - strlen(EOS) - block));
        }
        free(dsml);
        ds4_parsed_clear(&r);
        at = end;
        n_checked++;
    }
    cr_assert_gt(n_checked, 0, "%s: no assistant turn checked", in_rel);
    json_decref(root);
    free(in);
    free(out);
}

Test(dsml_parse, official_vector_1_turns) {
    check_official("testdata/encoding/test_input_1.json", "testdata/encoding/test_output_1.txt");
}
Test(dsml_parse, official_vector_2_last_turn) {
    check_official("testdata/encoding/test_input_2.json", "testdata/encoding/test_output_2.txt");
}
Test(dsml_parse, official_vector_3_turns) {
    check_official("testdata/encoding/test_input_3.json", "testdata/encoding/test_output_3.txt");
}

/* ---- Round trip: JSON arguments -> canonical DSML -> parse -> same JSON ------------------- */

static json_t *random_value(uint64_t *s, int depth) {
    static const char *const strs[] = {"", "plain", "with \"quotes\" and \\ slash", "line\nbreak\t",
                                       "é漢字🙂", "<b>tag</b> & &amp;", "  spaced  ", "a</x>b",
                                       "{\"json\": 1}", "\x01\x1f ctl"};
    switch (rng_next(s) % (depth > 2 ? 5 : 7)) {
    case 0: return json_string(strs[rng_next(s) % 10]);
    case 1: return json_integer((json_int_t)(rng_next(s) % 2000000) - 1000000);
    case 2: return json_real(((double)(int64_t)rng_next(s) - 1e9) / (double)(1 + rng_next(s) % 1000));
    case 3: return rng_next(s) % 2 ? json_true() : json_false();
    case 4: return json_null();
    case 5: {
        json_t *a = json_array();
        for (uint64_t k = rng_next(s) % 4; k > 0; k--) json_array_append_new(a, random_value(s, depth + 1));
        return a;
    }
    default: {
        json_t *o = json_object();
        for (uint64_t k = rng_next(s) % 4; k > 0; k--) {
            char key[16];
            snprintf(key, sizeof key, "k%llu", (unsigned long long)(rng_next(s) % 100));
            json_object_set_new(o, key, random_value(s, depth + 1));
        }
        return o;
    }
    }
}

Test(dsml_roundtrip, generated_calls_survive_render_and_parse) {
    uint64_t s = 42;
    for (int iter = 0; iter < 300; iter++) {
        size_t n_calls = 1 + rng_next(&s) % 3;
        ds4_tool_call calls[3];
        char *args[3];
        json_t *objs[3];
        char names[3][16];
        for (size_t k = 0; k < n_calls; k++) {
            objs[k] = json_object();
            for (uint64_t p = rng_next(&s) % 5; p > 0; p--) {
                char key[16];
                snprintf(key, sizeof key, "p_%llu", (unsigned long long)(rng_next(&s) % 50));
                json_object_set_new(objs[k], key, random_value(&s, 0));
            }
            args[k] = json_dumps(objs[k], JSON_COMPACT);
            snprintf(names[k], sizeof names[k], "tool_%d_%zu", iter, k);
            calls[k] = (ds4_tool_call){NULL, names[k], args[k]};
        }
        char *dsml;
        size_t n;
        ds4_error err = {0};
        cr_assert_eq(ds4_dsml_render_calls(calls, n_calls, &dsml, &n, &err), DS4_OK, "%s", err.msg);
        /* As a completion: reasoning, content, the block, EOS. */
        size_t text_n = n + 64;
        char *text = malloc(text_n);
        snprintf(text, text_n, "why</think>answer%s" EOS, dsml);
        ds4_parsed r;
        ds4_dsml_opts o = {.thinking = true, .tools = true, .make_id = make_id};
        cr_assert_eq(ds4_dsml_parse(text, strlen(text), &o, &r, &err), DS4_OK, "%s", err.msg);
        cr_assert_eq(r.n_calls, n_calls, "iter %d: %zu calls parsed from\n%s", iter, r.n_calls, text);
        assert_bytes_eq("roundtrip", "content", r.content, r.content_bytes, "answer", 6);
        assert_bytes_eq("roundtrip", "dsml", r.dsml, r.dsml_bytes, dsml, n);
        ds4_tool_call back[3];
        for (size_t k = 0; k < n_calls; k++) {
            json_error_t je;
            json_t *got = json_loads(r.calls[k].arguments, 0, &je);
            cr_assert(got, "iter %d call %zu: parsed args not JSON (%s): %s", iter, k, je.text,
                      r.calls[k].arguments);
            cr_assert(json_equal(got, objs[k]), "iter %d call %zu: args %s, want %s", iter, k,
                      r.calls[k].arguments, args[k]);
            cr_assert_str_eq(r.calls[k].name, names[k]);
            json_decref(got);
            back[k] = (ds4_tool_call){NULL, r.calls[k].name, r.calls[k].arguments};
        }
        /* Parsed calls re-render to the same bytes (canonical form is a fixed point). */
        char *again;
        size_t again_n;
        cr_assert_eq(ds4_dsml_render_calls(back, n_calls, &again, &again_n, &err), DS4_OK);
        assert_bytes_eq("roundtrip", "re-render", again, again_n, dsml, n);
        if (iter < 20) check_splits("roundtrip", text, strlen(text), true, true, &r);
        free(again);
        ds4_parsed_clear(&r);
        free(text);
        free(dsml);
        for (size_t k = 0; k < n_calls; k++) {
            free(args[k]);
            json_decref(objs[k]);
        }
    }
}

static int stop_at_call(void *user, const ds4_dsml_event *ev) {
    (void)user;
    return ev->kind == DS4_DSML_CALL_START;
}

Test(dsml_parse, callback_can_stop_and_feed_checks_arguments) {
    ds4_dsml_opts o = {.tools = true, .on_event = stop_at_call};
    ds4_parsed r;
    ds4_error err = {0};
    const char *text = BLOCK1;
    cr_assert_eq(ds4_dsml_parse(text, strlen(text), &o, &r, &err), DS4_ERR_CANCELLED);
    cr_assert_null(r.content);
    cr_assert_eq(ds4_dsml_parse(NULL, 3, &o, &r, &err), DS4_ERR_INVALID_ARG);
    cr_assert_eq(ds4_dsml_parse("", 0, &o, &r, &err), DS4_OK);
    cr_assert_eq(r.content_bytes, 0);
    ds4_parsed_clear(&r);
}
