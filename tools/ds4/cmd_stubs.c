/*
 * tools/ds4/cmd_stubs.c — modes whose implementation has not landed yet report so clearly
 * (exit 2) instead of failing to link. Each definition here is deleted when its real
 * cmd_*.c file is added.
 */
#include <stdio.h>

#include "cmds.h"

static int not_built(const char *what) {
    fprintf(stderr, "ds4: %s is not available in this build yet\n", what);
    return 2;
}

int ds4_cmd_chat(int argc, char **argv) { (void)argc; (void)argv; return not_built("chat"); }
