/* tools/ds4/io.c — small I/O helpers shared by the modes of the ds4 program. */
#include <stdint.h>
#include <stdlib.h>

#include "cmds.h"

char *ds4_tool_read_upto(FILE *f, size_t max_cap, size_t reserve, size_t *n,
                         ds4_tool_read_why *why) {
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        *why = DS4_TOOL_READ_NOMEM;
        return NULL;
    }
    for (;;) {
        len += fread(buf + len, 1, cap - len - reserve, f);
        if (len < cap - reserve) break;
        char *p = cap < max_cap ? realloc(buf, cap * 2) : NULL;
        if (!p) {
            free(buf);
            *why = DS4_TOOL_READ_TOO_LARGE;
            return NULL;
        }
        buf = p;
        cap *= 2;
    }
    if (ferror(f)) {
        free(buf);
        *why = DS4_TOOL_READ_ERROR;
        return NULL;
    }
    *why = DS4_TOOL_READ_OK;
    *n = len;
    return buf;
}

char *ds4_tool_read_all(FILE *f, size_t *n) {
    ds4_tool_read_why why;
    return ds4_tool_read_upto(f, SIZE_MAX, 0, n, &why);
}
