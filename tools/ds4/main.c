/*
 * tools/ds4/main.c — entry of the `ds4` program: picks the mode from the flags present and
 * runs it. Owns no option parsing beyond that choice (each mode parses its own flags).
 */
#include <stdio.h>
#include <string.h>

#include "ds4.h"
#include "cmds.h"

static int has_flag(int argc, char **argv, const char *const *flags) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) return 0;
        for (const char *const *f = flags; *f; f++)
            if (strcmp(argv[i], *f) == 0) return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    static const char *const version[] = {"--version", NULL};
    static const char *const text[] = {"--tokenize", "--tokenize-file", "--detokenize", NULL};
    static const char *const render[] = {"--render-chat", NULL};
    static const char *const logits[] = {"--dump-logits", "--prompt-tokens", NULL};
    if (has_flag(argc, argv, version)) {
        printf("ds4 %s\n", ds4_version());
        return 0;
    }
    if (has_flag(argc, argv, text)) return ds4_cmd_text(argc, argv);
    if (has_flag(argc, argv, render)) return ds4_cmd_render(argc, argv);
    if (has_flag(argc, argv, logits)) return ds4_cmd_logits(argc, argv);
    return ds4_cmd_chat(argc, argv);
}
