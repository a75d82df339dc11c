/*
 * tools/ds4/cmds.h — the modes of the `ds4` program. main.c picks a mode from the flags and
 * hands it the whole argv; each mode parses its own flags and returns the exit status
 * (0 ok, 1 runtime failure, 2 usage error). Modes live in their own files.
 */
#ifndef DS4_TOOL_CMDS_H
#define DS4_TOOL_CMDS_H

#include <stddef.h>
#include <stdio.h>

/* --tokenize / --tokenize-file / --detokenize (cmd_text.c) */
int ds4_cmd_text(int argc, char **argv);
/* --render-chat (cmd_render.c) */
int ds4_cmd_render(int argc, char **argv);
/* --prompt-tokens / --dump-logits (cmd_logits.c) */
int ds4_cmd_logits(int argc, char **argv);
/* chat: one-shot (-p) and interactive (cmd_chat.c) */
int ds4_cmd_chat(int argc, char **argv);

/* Reads all of f (a file or stdin) into a malloc'd buffer (not NUL-terminated); NULL on a read
 * error or out of memory. Caller frees. (io.c) */
char *ds4_tool_read_all(FILE *f, size_t *n);

/* Why ds4_tool_read_upto returned NULL (or DS4_TOOL_READ_OK when it did not). */
typedef enum {
    DS4_TOOL_READ_OK,
    DS4_TOOL_READ_NOMEM,     /* the first buffer could not be allocated */
    DS4_TOOL_READ_TOO_LARGE, /* the buffer could not grow: past max_cap bytes, or out of memory */
    DS4_TOOL_READ_ERROR,     /* ferror(f) */
} ds4_tool_read_why;

/* ds4_tool_read_all with limits: the buffer doubles from 64 KiB while it is below max_cap
 * bytes, and `reserve` bytes stay free after the data (1 for a NUL the caller adds). *n is set
 * on success only. Caller frees. (io.c) */
char *ds4_tool_read_upto(FILE *f, size_t max_cap, size_t reserve, size_t *n,
                         ds4_tool_read_why *why);

#endif
