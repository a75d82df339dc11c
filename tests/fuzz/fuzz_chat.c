/*
 * tests/fuzz/fuzz_chat.c — fuzz target for conversation loading and rendering
 * (src/text/chat*.c, dsml.c): input = conversation JSON in the official test-input shape.
 * Checks no crash/leak, that a loaded conversation always renders (in its own thinking mode and
 * in Think Max), starting with BOS, and that rendering is deterministic.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds4.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ds4_chat *chat;
    ds4_error err;
    if (ds4_chat_from_json(&chat, (const char *)data, size, &err) != DS4_OK) return 0;
    char *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    ds4_thinking chat_thinking = ds4_chat_get_thinking(chat);
    ds4_status sa = ds4_chat_render(chat, &a, &na, &err);
    ds4_chat_set_thinking(chat, DS4_THINKING_MAX);
    ds4_status sb = ds4_chat_render(chat, &b, &nb, &err);
    if (sa != DS4_OK || sb != DS4_OK) {
        fprintf(stderr, "fuzz_chat: render failed: %s\n", err.msg);
        abort();
    }
    static const char bos[] = "<｜begin▁of▁sentence｜>";
    if (na < sizeof bos - 1 || memcmp(a, bos, sizeof bos - 1) != 0) abort();
    free(b);
    ds4_chat_set_thinking(chat, chat_thinking);
    if (ds4_chat_render(chat, &b, &nb, &err) != DS4_OK || nb != na || memcmp(a, b, na) != 0)
        abort();
    ds4_chat_free(chat);
    free(a);
    free(b);
    return 0;
}
