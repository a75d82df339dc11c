/*
 * tests/fuzz/fuzz_dsml.c — fuzz target for the completion parser (src/text/dsml*.c).
 * Input: byte 0 = flags (bit 0 thinking, bit 1 tools), byte 1 = seed of the piece sizes,
 * rest = generated text. Checks, aborting on violation: no crash or leak; the streamed result
 * (pieces of 1..16 bytes) equals the at-once result; the events add up to the result; when the
 * text is valid UTF-8 every call's arguments are a JSON object.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds4.h"

typedef struct sink {
    char *text[2]; /* reasoning, content */
    size_t n[2];
    char *args[256];
    size_t n_args[256];
    size_t n_calls;
} sink;

static void die(const char *what) {
    fprintf(stderr, "fuzz_dsml: %s\n", what);
    abort();
}

static void grow(char **s, size_t *n, const char *p, size_t k) {
    char *q = realloc(*s, *n + k + 1);
    if (!q) die("out of memory");
    memcpy(q + *n, p, k);
    *s = q;
    *n += k;
}

static int on_event(void *user, const ds4_dsml_event *ev) {
    sink *s = user;
    switch (ev->kind) {
    case DS4_DSML_REASONING: grow(&s->text[0], &s->n[0], ev->text, ev->text_bytes); break;
    case DS4_DSML_CONTENT: grow(&s->text[1], &s->n[1], ev->text, ev->text_bytes); break;
    case DS4_DSML_CALL_START:
        if (ev->call_index != s->n_calls || s->n_calls >= 256) die("call index out of order");
        s->n_calls++;
        break;
    case DS4_DSML_CALL_ARGS:
        if (ev->call_index + 1 != s->n_calls) die("args for a call that is not open");
        grow(&s->args[ev->call_index], &s->n_args[ev->call_index], ev->text, ev->text_bytes);
        break;
    case DS4_DSML_CALL_END: break;
    case DS4_DSML_CALLS_ABORT:
        for (size_t i = 0; i < s->n_calls; i++) {
            free(s->args[i]);
            s->args[i] = NULL;
            s->n_args[i] = 0;
        }
        s->n_calls = 0;
        break;
    }
    return 0;
}

static int make_id(void *user, size_t idx, char *id) {
    (void)user;
    snprintf(id, DS4_TOOL_ID_MAX, "id%zu", idx);
    return 0;
}

static bool same(const char *a, size_t na, const char *b, size_t nb) {
    return na == nb && (na == 0 || memcmp(a, b, na) == 0);
}

static bool valid_utf8(const uint8_t *s, size_t n) {
    json_t *v = json_stringn((const char *)s, n); /* jansson validates UTF-8 */
    bool ok = v != NULL || memchr(s, 0, n) != NULL;
    json_decref(v);
    return ok && v != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    ds4_dsml_opts o = {.thinking = data[0] & 1, .tools = (data[0] & 2) != 0, .make_id = make_id};
    uint64_t seed = data[1] + 1;
    const char *text = (const char *)data + 2;
    size_t n = size - 2;

    ds4_parsed once, streamed;
    if (ds4_dsml_parse(text, n, &o, &once, NULL) != DS4_OK) die("at-once parse failed");

    sink s = {0};
    o.on_event = on_event;
    o.event_user = &s;
    ds4_dsml_parser *p;
    if (ds4_dsml_parser_create(&p, &o, NULL) != DS4_OK) die("create failed");
    for (size_t at = 0; at < n;) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        size_t k = 1 + (seed >> 40) % 16;
        if (k > n - at) k = n - at;
        if (ds4_dsml_feed(p, text + at, k, NULL) != DS4_OK) die("feed failed");
        at += k;
    }
    if (ds4_dsml_finish(p, &streamed, NULL) != DS4_OK) die("finish failed");
    ds4_dsml_parser_free(p);

    if (!same(once.reasoning, once.reasoning_bytes, streamed.reasoning, streamed.reasoning_bytes))
        die("reasoning differs between at-once and streamed");
    if (!same(once.content, once.content_bytes, streamed.content, streamed.content_bytes))
        die("content differs between at-once and streamed");
    if (!same(once.dsml, once.dsml_bytes, streamed.dsml, streamed.dsml_bytes))
        die("dsml differs between at-once and streamed");
    if (once.n_calls != streamed.n_calls || once.malformed_dsml != streamed.malformed_dsml)
        die("calls differ between at-once and streamed");
    if (!same(s.text[0], s.n[0], once.reasoning, once.reasoning_bytes) ||
        !same(s.text[1], s.n[1], once.content, once.content_bytes) || s.n_calls != once.n_calls)
        die("events do not add up to the result");
    bool utf8 = valid_utf8(data + 2, n);
    for (size_t i = 0; i < once.n_calls; i++) {
        if (strcmp(once.calls[i].name, streamed.calls[i].name) != 0 ||
            strcmp(once.calls[i].arguments, streamed.calls[i].arguments) != 0)
            die("a call differs between at-once and streamed");
        if (!same(s.args[i], s.n_args[i], once.calls[i].arguments, strlen(once.calls[i].arguments)))
            die("argument events do not add up");
        if (utf8) {
            json_t *v = json_loads(once.calls[i].arguments, JSON_ALLOW_NUL, NULL);
            if (!json_is_object(v)) die("arguments are not a JSON object");
            json_decref(v);
        }
    }
    ds4_parsed_clear(&once);
    ds4_parsed_clear(&streamed);
    free(s.text[0]);
    free(s.text[1]);
    for (size_t i = 0; i < 256; i++) free(s.args[i]);
    return 0;
}
