/*
 * bench/tokenizer/bench_ds4.c TOKENIZER TEXT IDS_OUT [REPEATS [docs]] — encodes TEXT with libds4
 * (default mode: added tokens recognised, no BOS), prints MB/s per run (wall and process CPU) (load excluded; run 1
 * starts with an empty word cache, later runs reuse the same tokenizer) and writes the ids
 * one per line. Built by run.sh against build/libds4.a; not part of `make`.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <time.h>

#include "ds4.h"

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}
static double now(void) { return clock_s(CLOCK_MONOTONIC); }
/* CPU time of the whole process: on a shared, loaded machine wall time mostly measures the
 * other jobs, so both are printed. */
static double cpu(void) { return clock_s(CLOCK_PROCESS_CPUTIME_ID); }

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: bench_ds4 TOKENIZER TEXT IDS_OUT [REPEATS [docs]]\n");
        return 2;
    }
    int rep = argc > 4 ? atoi(argv[4]) : 3;
    ds4_error err = {0};
    ds4_tokenizer *tok;
    double t0 = now();
    if (ds4_tokenizer_open(&tok, argv[1], &err) != DS4_OK) {
        fprintf(stderr, "bench_ds4: %s\n", err.msg);
        return 1;
    }
    printf("ds4 load: %.3f s\n", now() - t0);
    FILE *f = fopen(argv[2], "rb");
    if (!f) { perror(argv[2]); return 1; }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *text = malloc((size_t)n);
    if (!text || fread(text, 1, (size_t)n, f) != (size_t)n) { fprintf(stderr, "read failed\n"); return 1; }
    fclose(f);
    /* "docs" mode: the text cut after every blank line ("\n\n"), each piece encoded alone
     * (a server sees many short texts rather than one 10 MB string). */
    bool docs = argc > 5 && strcmp(argv[5], "docs") == 0;
    int32_t *ids = NULL;
    size_t n_ids = 0, n_docs = 0;
    for (int r = 0; r < rep; r++) {
        free(ids);
        ids = NULL;
        n_ids = n_docs = 0;
        t0 = now();
        double c0 = cpu();
        size_t cap = 0;
        for (long at = 0; at < n || (at == 0 && n == 0);) {
            long end = n;
            if (docs) {
                /* cut after every position preceded by "\n\n", as JS split(/(?<=\n\n)/) */
                long from = at > 0 ? at - 1 : 0;
                char *bl = memmem(text + from, (size_t)(n - from), "\n\n", 2);
                if (bl) end = bl - text + 2;
            }
            int32_t *part;
            size_t np;
            if (ds4_tokenize(tok, text + at, (size_t)(end - at), 0, &part, &np, &err) != DS4_OK) {
                fprintf(stderr, "bench_ds4: %s\n", err.msg);
                return 1;
            }
            if (n_ids + np > cap) {
                cap = (n_ids + np) * 2;
                ids = realloc(ids, cap * sizeof *ids);
                if (!ids) { fprintf(stderr, "bench_ds4: out of memory\n"); return 1; }
            }
            memcpy(ids + n_ids, part, np * sizeof *part);
            n_ids += np;
            n_docs++;
            free(part);
            at = end;
            if (n == 0) break;
        }
        double s = now() - t0, c = cpu() - c0;
        printf("ds4 run %d (%zu text%s): %ld bytes, %zu tokens, wall %.3f s = %.2f MB/s, cpu %.3f s = %.2f MB/s\n", r + 1, n_docs, n_docs == 1 ? "" : "s", n,
               n_ids, s, n / 1e6 / s, c, n / 1e6 / c);
    }
    FILE *o = fopen(argv[3], "w");
    if (!o) { perror(argv[3]); return 1; }
    for (size_t i = 0; i < n_ids; i++) fprintf(o, "%d\n", ids[i]);
    fclose(o);
    free(ids);
    free(text);
    ds4_tokenizer_free(tok);
    return 0;
}
