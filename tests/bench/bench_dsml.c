/*
 * tests/bench/bench_dsml.c — throughput of the chat renderer and the DSML completion parser
 * (src/text/chat*.c, dsml*.c), one thread, thread CPU time (the dev box is shared), best of 3.
 * Results go to docs/BENCHMARKS.md; nothing here is asserted.
 *   cc -O2 -std=c11 -D_GNU_SOURCE -Iinclude -Isrc tests/bench/bench_dsml.c build/libds4.a \
 *      -ljansson -o build/bench_dsml && build/bench_dsml
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ds4.h"

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Parses text at once or in `piece`-byte feeds; returns the best MB/s of 3 runs. */
static double parse_rate(const char *text, size_t n, bool thinking, bool tools, size_t piece) {
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        ds4_dsml_opts o = {.thinking = thinking, .tools = tools};
        ds4_parsed r;
        double t0 = cpu_now();
        if (!piece) {
            if (ds4_dsml_parse(text, n, &o, &r, NULL) != DS4_OK) exit(1);
        } else {
            ds4_dsml_parser *p;
            if (ds4_dsml_parser_create(&p, &o, NULL) != DS4_OK) exit(1);
            for (size_t i = 0; i < n; i += piece)
                if (ds4_dsml_feed(p, text + i, n - i < piece ? n - i : piece, NULL) != DS4_OK) exit(1);
            if (ds4_dsml_finish(p, &r, NULL) != DS4_OK) exit(1);
            ds4_dsml_parser_free(p);
        }
        double dt = cpu_now() - t0;
        ds4_parsed_clear(&r);
        double rate = (double)n / 1e6 / dt;
        if (rate > best) best = rate;
    }
    return best;
}

int main(void) {
    static const char piece[] = "The quick brown fox <b>jumps</b> over the lazy dog; "
                                "if (a < b && c > d) { x = 1; }\n\n  ";
    const size_t n = 10u << 20, lp = sizeof piece - 1;
    char *prose = malloc(n);
    for (size_t i = 0; i < n; i++) prose[i] = piece[i % lp];

    /* The same bytes as one string parameter value ('<' replaced so the value never closes). */
    static const char head[] = "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"write\">\n"
                               "<｜DSML｜parameter name=\"text\" string=\"true\">";
    static const char tail[] = "</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
    size_t vn = sizeof head - 1 + n + sizeof tail - 1;
    char *value = malloc(vn);
    memcpy(value, head, sizeof head - 1);
    for (size_t i = 0; i < n; i++) value[sizeof head - 1 + i] = prose[i] == '<' ? '[' : prose[i];
    memcpy(value + sizeof head - 1 + n, tail, sizeof tail - 1);

    printf("%-34s %12s %16s\n", "parser input (10 MiB)", "at once MB/s", "4-byte feeds MB/s");
    struct { const char *name; const char *text; size_t n; bool thinking, tools; } cases[] = {
        {"reasoning", prose, n, true, true},
        {"content, tools off", prose, n, false, false},
        {"content, tools on", prose, n, false, true},
        {"string argument value", value, vn, false, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        printf("%-34s %12.1f %16.1f\n", cases[i].name,
               parse_rate(cases[i].text, cases[i].n, cases[i].thinking, cases[i].tools, 0),
               parse_rate(cases[i].text, cases[i].n, cases[i].thinking, cases[i].tools, 4));

    /* Render: 400 turns of ~2.5 KB (user text, assistant reasoning + content + a tool call). */
    ds4_chat *chat;
    ds4_chat_create(&chat, DS4_THINKING_HIGH, NULL);
    ds4_chat_set_tools(chat, "[{\"type\":\"function\",\"function\":{\"name\":\"bash\",\"description\":"
                             "\"Run\",\"parameters\":{\"type\":\"object\"}}}]", NULL);
    char *blob = malloc(1025);
    memcpy(blob, prose, 1024);
    blob[1024] = '\0';
    ds4_tool_call call = {"c1", "bash", "{\"command\": \"ls -la\", \"timeout\": 30}"};
    for (int t = 0; t < 200; t++) {
        ds4_chat_msg u = {.role = DS4_ROLE_USER, .content = blob};
        ds4_chat_msg a = {.role = DS4_ROLE_ASSISTANT, .content = blob, .reasoning = blob,
                          .tool_calls = &call, .n_tool_calls = 1};
        ds4_chat_add(chat, &u, NULL);
        ds4_chat_add(chat, &a, NULL);
    }
    double best = 0;
    size_t out_n = 0;
    for (int rep = 0; rep < 3; rep++) {
        char *out;
        double t0 = cpu_now();
        if (ds4_chat_render(chat, &out, &out_n, NULL) != DS4_OK) return 1;
        double rate = (double)out_n / 1e6 / (cpu_now() - t0);
        if (rate > best) best = rate;
        free(out);
    }
    printf("render 400 messages (%.2f MB prompt): %.1f MB/s\n", (double)out_n / 1e6, best);
    ds4_chat_free(chat);
    free(blob);
    free(prose);
    free(value);
    return 0;
}
