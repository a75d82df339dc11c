/*
 * tools/ds4/demo.c — `ds4 --demo`: finds or makes the random-weight demo model through the
 * library (model/demo.h) and shows a progress bar while it is made. Must not: pretend the output
 * means anything (the caller labels it).
 */
#include <stdio.h>
#include <stdlib.h>

#include "chat.h"
#include "model/demo.h"

static void on_start(void *ud, const char *tok_path) {
    fprintf(stderr, "ds4: making the demo model once (random weights, V4 tokenizer from %s)...\n", tok_path);
    chat_bar_start(ud, "making the demo model", "MiB", 1024.0 * 1024);
}

static void on_update(void *ud, uint64_t done, uint64_t total) { chat_bar_update(ud, done, total); }

static void on_end(void *ud) { chat_bar_end(ud); }

char *chat_demo_model(const char *tokenizer_flag) {
    chat_bar bar;
    model_demo_progress p = {.start = on_start, .update = on_update, .end = on_end, .ud = &bar};
    ds4_error err = {0};
    char *path = NULL;
    ds4_status st = model_demo_ensure(tokenizer_flag, &p, &path, &err);
    if (st == DS4_ERR_NOT_FOUND) {
        fprintf(stderr, "ds4: --demo needs the DeepSeek V4 tokenizer.json to build its model: %s\n", err.msg);
        return NULL;
    }
    if (st != DS4_OK) {
        fprintf(stderr, "ds4: --demo: %s\n", err.msg);
        return NULL;
    }
    return path;
}
