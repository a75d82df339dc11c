/*
 * tools/ds4/cmd_chat.c — the chat mode of `ds4`: flags -> one-shot answer (-p / --prompt-file,
 * SERVER_CLI §10.3) or the REPL (§10.4), and --demo. Owns only that dispatch and the one-shot
 * prompt reading; the engine work is chat_run.c's. Exit status: 0 ok, 1 runtime failure
 * (missing model, load or generation error), 2 usage error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "cmds.h"

static char *read_prompt_file(const char *path, size_t *n_out) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "ds4: cannot open --prompt-file %s: %s\n", path, strerror(errno));
        return NULL;
    }
    ds4_tool_read_why why;
    char *buf = ds4_tool_read_upto(f, 1u << 30, 0, n_out, &why);
    if (!buf) fprintf(stderr, "ds4: cannot read --prompt-file %s\n", path);
    fclose(f);
    return buf;
}

int ds4_cmd_chat(int argc, char **argv) {
    chat_opts o;
    int rc = chat_args_parse(&o, argc, argv);
    if (rc) return rc;
    if (o.help) {
        chat_usage(stdout);
        return 0;
    }
    char *demo_path = NULL;
    if (o.demo) {
        demo_path = chat_demo_model(o.tokenizer);
        if (!demo_path) return 1;
        o.model_path = demo_path;
        if (!o.prompt && !o.prompt_file) o.prompt = "Hello! Who are you, and what can you do?";
        /* Noise gains nothing from length; keep the demo quick unless -n says otherwise. */
        bool n_given = false;
        for (int i = 1; i < argc; i++) n_given |= !strcmp(argv[i], "-n") || !strcmp(argv[i], "--tokens");
        if (!n_given) o.n_predict = 48;
        /* The demo exists to show the stream, so it shows the reasoning part even in a pipe. */
        o.show_reasoning = true;
        fprintf(stderr,
                "ds4: DEMO MODEL %s\n"
                "ds4: random weights: the output is noise. It shows the install works end to end\n"
                "ds4: (tokenizer, V4 chat encoding, engine, sampling, streaming); for real answers\n"
                "ds4: get a model with ./download_model.sh q2 and run ./ds4 -p \"...\"\n",
                demo_path);
    }
    size_t prompt_bytes = 0;
    char *file_prompt = NULL;
    if (o.prompt_file) {
        file_prompt = read_prompt_file(o.prompt_file, &prompt_bytes);
        if (!file_prompt) {
            free(demo_path);
            return 1;
        }
    } else if (o.prompt) {
        prompt_bytes = strlen(o.prompt);
    }
    chat_state st;
    rc = 1;
    if (chat_open(&st, &o) == 0) {
        if (o.prompt || o.prompt_file) {
            const char *p = file_prompt ? file_prompt : o.prompt;
            static const char bos[] = "<｜begin▁of▁sentence｜>";
            bool rendered = prompt_bytes >= sizeof bos - 1 && memcmp(p, bos, sizeof bos - 1) == 0;
            if ((rendered ? chat_turn_rendered(&st, p, prompt_bytes) : chat_turn(&st, p, prompt_bytes)) == 0) {
                chat_print_summary(&st);
                rc = strcmp(st.last.stop, "error") == 0;
            }
        } else {
            rc = chat_repl(&st);
        }
    }
    chat_close(&st);
    free(file_prompt);
    free(demo_path);
    return rc;
}
