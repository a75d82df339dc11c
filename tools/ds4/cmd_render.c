/*
 * tools/ds4/cmd_render.c — `ds4 --render-chat CONV.json [--thinking none|high|max]`: prints the
 * prompt the official V4 encoder renders for a conversation in the official test-input JSON
 * shape (CHAT_ENCODING §10), byte for byte, with nothing appended. Owns only flag parsing and
 * file reading; the rendering is libds4's.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds4.h"
#include "cmds.h"

static int usage(void) {
    fprintf(stderr, "usage: ds4 --render-chat CONV.json [--thinking none|high|max]\n"
                    "  CONV.json: a message array or {\"messages\": [...], \"tools\": [...]};"
                    " '-' reads stdin\n");
    return 2;
}

int ds4_cmd_render(int argc, char **argv) {
    const char *path = NULL, *thinking = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--render-chat") == 0 && i + 1 < argc) path = argv[++i];
        else if (strcmp(argv[i], "--thinking") == 0 && i + 1 < argc) thinking = argv[++i];
        else if (strcmp(argv[i], "--render-chat") == 0 || strcmp(argv[i], "--thinking") == 0) {
            fprintf(stderr, "ds4: %s needs a value\n", argv[i]);
            return usage();
        } else {
            fprintf(stderr, "ds4: unexpected argument '%s'\n", argv[i]);
            return usage();
        }
    }
    if (!path) return usage();
    ds4_thinking mode = DS4_THINKING_HIGH;
    if (thinking) {
        if (strcmp(thinking, "none") == 0) mode = DS4_THINKING_NONE;
        else if (strcmp(thinking, "high") == 0) mode = DS4_THINKING_HIGH;
        else if (strcmp(thinking, "max") == 0) mode = DS4_THINKING_MAX;
        else {
            fprintf(stderr, "ds4: --thinking: expected none, high or max, got '%s'\n", thinking);
            return usage();
        }
    }
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "ds4: %s: %s\n", path, strerror(errno));
        return 1;
    }
    size_t n = 0;
    char *json = ds4_tool_read_all(f, &n);
    if (f != stdin) fclose(f);
    if (!json) {
        fprintf(stderr, "ds4: %s: read failed\n", path);
        return 1;
    }
    ds4_error err = {0};
    ds4_chat *chat = NULL;
    char *out = NULL;
    size_t out_bytes = 0;
    int rc = 1;
    if (ds4_chat_from_json(&chat, json, n, &err) != DS4_OK) goto out_error;
    if (thinking) ds4_chat_set_thinking(chat, mode);
    if (ds4_chat_render(chat, &out, &out_bytes, &err) != DS4_OK) goto out_error;
    rc = fwrite(out, 1, out_bytes, stdout) == out_bytes && fflush(stdout) == 0 ? 0 : 1;
    if (rc) fprintf(stderr, "ds4: writing the prompt failed\n");
    goto out_free;
out_error:
    fprintf(stderr, "ds4: %s: %s\n", path, err.msg);
out_free:
    free(out);
    ds4_chat_free(chat);
    free(json);
    return rc;
}
