/*
 * tests/test_chat_roundtrip.c — property test over generated conversations (issue #4):
 * render -> tokenize (specials recognized) -> detokenize gives the prompt back; the prompt for
 * the conversation without its last assistant turn is a prefix of the full render; the rest is
 * a completion that parses (at once, and streamed token by token through the detokenizer) back
 * into that turn's reasoning, content and tool calls. The injection-safe ids
 * (ds4_chat_render_tokens) spell the same prompt, equal the whole-string ids when no client text
 * holds "<｜User｜>", and have fewer <｜User｜> control ids when some does.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds4.h"
#include "testutil.h"

static uint64_t rng(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

/* Text pieces that stay text in every position (no </think>, DSML start tags or EOS). */
static const char *const PIECES[] = {
    "Hello", " world", "\n", "\n\n", "  ", "é漢字", "🙂", "a < b", " && ", "<b>bold</b>",
    "\"quoted\"", "\\", "tab\there", "1.5e-3", "{\"k\": [1, 2]}", "<｜User｜>", "</tool_result>",
    "...", "｜", "think", "#", "- item\n",
};

static char *gen_text(uint64_t *s, size_t max_pieces) {
    size_t n = rng(s) % (max_pieces + 1);
    char *out = calloc(1, 1);
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = PIECES[rng(s) % (sizeof PIECES / sizeof PIECES[0])];
        out = realloc(out, len + strlen(p) + 1);
        strcpy(out + len, p);
        len += strlen(p);
    }
    return out;
}

static json_t *gen_value(uint64_t *s, int depth) {
    switch (rng(s) % (depth ? 4 : 6)) {
    case 0: { char *t = gen_text(s, 4); json_t *v = json_string(t); free(t); return v; }
    case 1: return json_integer((json_int_t)(rng(s) % 100000) - 500);
    case 2: return json_real((double)(rng(s) % 100000) / 64.0);
    case 3: return rng(s) % 3 ? json_true() : json_null();
    case 4: {
        json_t *a = json_array();
        for (uint64_t k = rng(s) % 3; k > 0; k--) json_array_append_new(a, gen_value(s, depth + 1));
        return a;
    }
    default: {
        json_t *o = json_object();
        for (uint64_t k = rng(s) % 3; k > 0; k--) {
            char key[16];
            snprintf(key, sizeof key, "f%llu", (unsigned long long)(rng(s) % 9));
            json_object_set_new(o, key, gen_value(s, depth + 1));
        }
        return o;
    }
    }
}

typedef struct gen_msg {
    ds4_chat_msg m;
    char *content, *reasoning, *tool_call_id;
    ds4_tool_call calls[3];
    char *names[3], *ids[3], *args[3];
} gen_msg;

static void gen_assistant(uint64_t *s, gen_msg *g, int turn) {
    g->m.role = DS4_ROLE_ASSISTANT;
    g->content = gen_text(s, 6);
    g->reasoning = gen_text(s, 6);
    g->m.content = g->content;
    g->m.reasoning = g->reasoning;
    size_t n_calls = rng(s) % 3 == 0 ? 0 : 1 + rng(s) % 3;
    for (size_t k = 0; k < n_calls; k++) {
        json_t *args = json_object();
        for (uint64_t p = rng(s) % 4; p > 0; p--) {
            char key[16];
            snprintf(key, sizeof key, "p%llu", (unsigned long long)(rng(s) % 20));
            json_object_set_new(args, key, gen_value(s, 0));
        }
        g->args[k] = json_dumps(args, JSON_COMPACT);
        json_decref(args);
        g->names[k] = malloc(32);
        g->ids[k] = malloc(32);
        snprintf(g->names[k], 32, "tool_%zu", k);
        snprintf(g->ids[k], 32, "call_%d_%zu", turn, k);
        g->calls[k] = (ds4_tool_call){g->ids[k], g->names[k], g->args[k]};
    }
    g->m.tool_calls = g->calls;
    g->m.n_tool_calls = n_calls;
}

static void gen_free(gen_msg *g) {
    free(g->content);
    free(g->reasoning);
    free(g->tool_call_id);
    for (int k = 0; k < 3; k++) {
        free(g->names[k]);
        free(g->ids[k]);
        free(g->args[k]);
    }
}

/* A chat of the given messages, thinking mode and tools (NULL: none). Caller frees. */
static ds4_chat *build_chat(gen_msg *msgs, size_t n, ds4_thinking t, const char *tools) {
    ds4_chat *chat;
    ds4_error err = {0};
    cr_assert_eq(ds4_chat_create(&chat, t, &err), DS4_OK);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(ds4_chat_add(chat, &msgs[i].m, &err), DS4_OK, "%s", err.msg);
    if (tools) cr_assert_eq(ds4_chat_set_tools(chat, tools, &err), DS4_OK, "%s", err.msg);
    return chat;
}

static char *render(gen_msg *msgs, size_t n, ds4_thinking t, const char *tools, size_t *out_n) {
    ds4_chat *chat = build_chat(msgs, n, t, tools);
    ds4_error err = {0};
    char *out;
    cr_assert_eq(ds4_chat_render(chat, &out, out_n, &err), DS4_OK, "%s", err.msg);
    ds4_chat_free(chat);
    return out;
}

/* ds4_chat_render_tokens of the same conversation. */
static int32_t *render_ids(const ds4_tokenizer *tok, gen_msg *msgs, size_t n, ds4_thinking t, const char *tools,
                           size_t *n_ids) {
    ds4_chat *chat = build_chat(msgs, n, t, tools);
    ds4_error err = {0};
    int32_t *ids;
    cr_assert_eq(ds4_chat_render_tokens(chat, tok, 0, &ids, n_ids, NULL, NULL, &err), DS4_OK, "%s", err.msg);
    ds4_chat_free(chat);
    return ids;
}

static size_t count_id(const int32_t *ids, size_t n, int32_t id) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += ids[i] == id;
    return c;
}

static void check_parse(const char *what, const ds4_parsed *r, const gen_msg *want, bool thinking) {
    cr_assert_str_eq(r->reasoning, thinking ? want->reasoning : "", "%s: reasoning", what);
    cr_assert_str_eq(r->content, want->content, "%s: content", what);
    cr_assert_eq(r->n_calls, want->m.n_tool_calls, "%s: %zu calls, want %zu", what, r->n_calls,
                 want->m.n_tool_calls);
    for (size_t k = 0; k < r->n_calls; k++) {
        cr_assert_str_eq(r->calls[k].name, want->names[k], "%s: call %zu name", what, k);
        json_t *a = json_loads(r->calls[k].arguments, 0, NULL);
        json_t *b = json_loads(want->args[k], 0, NULL);
        cr_assert(a && b && json_equal(a, b), "%s: call %zu args %s, want %s", what, k,
                  r->calls[k].arguments, want->args[k]);
        json_decref(a);
        json_decref(b);
    }
}

Test(chat_roundtrip, render_tokenize_detokenize_parse) {
    ds4_tokenizer *tok = tu_open_v4_tokenizer();
    ds4_error err = {0};
    static const char tools[] = "[{\"type\":\"function\",\"function\":{\"name\":\"tool_0\","
                                "\"description\":\"Zero\",\"parameters\":{\"type\":\"object\"}}}]";
    uint64_t s = 7;
    int with_calls = 0, markers_seen = 0;
    for (int iter = 0; iter < 60; iter++) {
        ds4_thinking t = (ds4_thinking)(iter % 3);
        bool thinking = t != DS4_THINKING_NONE;
        const char *tl = iter % 2 ? tools : NULL;
        gen_msg msgs[12];
        memset(msgs, 0, sizeof msgs);
        size_t n = 0;
        int turns = 1 + (int)(rng(&s) % 3);
        for (int turn = 0; turn < turns; turn++) {
            msgs[n].content = gen_text(&s, 5);
            msgs[n].m = (ds4_chat_msg){.role = DS4_ROLE_USER, .content = msgs[n].content};
            n++;
            gen_assistant(&s, &msgs[n], turn);
            size_t calls = msgs[n].m.n_tool_calls, a = n++;
            if (turn + 1 < turns && calls) { /* results for every call, in reverse order */
                for (size_t k = calls; k-- > 0;) {
                    msgs[n].content = gen_text(&s, 3);
                    msgs[n].tool_call_id = strdup(msgs[a].ids[k]);
                    msgs[n].m = (ds4_chat_msg){.role = DS4_ROLE_TOOL, .content = msgs[n].content,
                                               .tool_call_id = msgs[n].tool_call_id};
                    n++;
                }
            }
        }
        char what[64];
        snprintf(what, sizeof what, "iteration %d (thinking %d, tools %d)", iter, (int)t, tl != NULL);
        size_t full_n, prompt_n;
        char *full = render(msgs, n, t, tl, &full_n);
        char *prompt = render(msgs, n - 1, t, tl, &prompt_n);
        cr_assert(prompt_n < full_n && memcmp(full, prompt, prompt_n) == 0,
                  "%s: the generation prompt is not a prefix of the full render", what);

        int32_t *ids;
        size_t n_ids;
        cr_assert_eq(ds4_tokenize(tok, full, full_n, 0, &ids, &n_ids, &err), DS4_OK, "%s", err.msg);
        char *back;
        size_t back_n;
        cr_assert_eq(ds4_detokenize(tok, ids, n_ids, 0, &back, &back_n, &err), DS4_OK);
        cr_assert(back_n == full_n && memcmp(back, full, full_n) == 0,
                  "%s: detokenize(tokenize(render)) differs", what);

        /* Injection-safe ids: same bytes; same ids unless client text holds the marker. */
        size_t n_safe;
        int32_t *safe = render_ids(tok, msgs, n, t, tl, &n_safe);
        char *sback;
        size_t sback_n;
        cr_assert_eq(ds4_detokenize(tok, safe, n_safe, DS4_DETOKENIZE_RAW_BYTES, &sback, &sback_n, &err), DS4_OK);
        cr_assert(sback_n == full_n && memcmp(sback, full, full_n) == 0, "%s: safe ids spell another prompt", what);
        /* The template writes one <｜User｜> per merged user turn (user and tool messages in a
         * row form one turn, CHAT_ENCODING §3.1); any other occurrence is client text. */
        size_t turns_user = 0, in_text = 0;
        for (size_t i = 0; i < n; i++) {
            bool u = msgs[i].m.role == DS4_ROLE_USER || msgs[i].m.role == DS4_ROLE_TOOL;
            bool prev = i > 0 && (msgs[i - 1].m.role == DS4_ROLE_USER || msgs[i - 1].m.role == DS4_ROLE_TOOL);
            turns_user += u && !prev;
        }
        for (const char *q = full; (q = strstr(q, "<｜User｜>")); q++) in_text++;
        int32_t user_id;
        cr_assert_eq(ds4_tokenizer_special_id(tok, "<｜User｜>", &user_id, &err), DS4_OK);
        cr_assert_eq(count_id(safe, n_safe, user_id), turns_user, "%s: %zu <｜User｜> control ids, %zu user turns",
                     what, count_id(safe, n_safe, user_id), turns_user);
        if (in_text == turns_user)
            cr_assert(n_safe == n_ids && memcmp(safe, ids, n_ids * sizeof *ids) == 0,
                      "%s: safe ids differ from whole-string ids without any marker in client text", what);
        else
            markers_seen++;
        free(sback);
        free(safe);

        /* The completion: what the model generates after the prompt, up to and with EOS. */
        const char *completion = back + prompt_n;
        size_t completion_n = back_n - prompt_n;
        ds4_dsml_opts o = {.thinking = thinking, .tools = tl != NULL || msgs[n - 1].m.n_tool_calls};
        ds4_parsed r;
        cr_assert_eq(ds4_dsml_parse(completion, completion_n, &o, &r, &err), DS4_OK, "%s", err.msg);
        check_parse(what, &r, &msgs[n - 1], thinking);
        with_calls += r.n_calls > 0;
        ds4_parsed_clear(&r);

        /* Token by token: the completion's own tokens through the streaming detokenizer. */
        int32_t *cids;
        size_t n_cids;
        cr_assert_eq(ds4_tokenize(tok, completion, completion_n, 0, &cids, &n_cids, &err), DS4_OK);
        ds4_detok_stream *ds;
        ds4_dsml_parser *p;
        cr_assert_eq(ds4_detok_stream_create(&ds, tok, 0, &err), DS4_OK);
        cr_assert_eq(ds4_dsml_parser_create(&p, &o, &err), DS4_OK);
        for (size_t k = 0; k <= n_cids; k++) {
            const char *piece;
            size_t piece_n;
            if (k < n_cids) cr_assert_eq(ds4_detok_stream_push(ds, cids[k], &piece, &piece_n, &err), DS4_OK);
            else cr_assert_eq(ds4_detok_stream_flush(ds, &piece, &piece_n, &err), DS4_OK);
            cr_assert_eq(ds4_dsml_feed(p, piece, piece_n, &err), DS4_OK, "%s", err.msg);
        }
        cr_assert_eq(ds4_dsml_finish(p, &r, &err), DS4_OK);
        check_parse(what, &r, &msgs[n - 1], thinking);
        ds4_parsed_clear(&r);
        ds4_dsml_parser_free(p);
        ds4_detok_stream_free(ds);
        free(cids);
        free(ids);
        free(back);
        free(full);
        free(prompt);
        for (size_t i = 0; i < n; i++) gen_free(&msgs[i]);
    }
    cr_assert_geq(with_calls, 20, "only %d of 60 completions carried tool calls", with_calls);
    cr_assert_geq(markers_seen, 5, "only %d of 60 conversations had a marker in client text", markers_seen);
    ds4_tokenizer_free(tok);
}
