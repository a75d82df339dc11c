/*
 * bench/tokenizer/diff_cmp.c TOKENIZER IN.jsonl — for every line of diff_gen.js's output, checks
 * libds4 against the Hugging Face results stored there: the ids of "text", their decode with
 * skip-special ("skip"), and the lossy decode ("rdec") of random ids ("rid").
 * Prints the first 10 differing texts; exits 1 if any differ. Built by diff.sh.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds4.h"

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: diff_cmp TOKENIZER IN.jsonl\n");
        return 2;
    }
    ds4_tokenizer *t;
    ds4_error e = {0};
    if (ds4_tokenizer_open(&t, argv[1], &e) != DS4_OK) {
        fprintf(stderr, "diff_cmp: %s\n", e.msg);
        return 1;
    }
    FILE *f = fopen(argv[2], "r");
    if (!f) { perror(argv[2]); return 1; }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int ln = 0, bad = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        ln++;
        json_error_t je;
        json_t *o = json_loadb(line, (size_t)n, JSON_ALLOW_NUL, &je);
        if (!o) { fprintf(stderr, "%s:%d: %s\n", argv[2], ln, je.text); return 1; }
        json_t *jt = json_object_get(o, "text"), *ji = json_object_get(o, "ids");
        int32_t *ids;
        size_t ni;
        if (ds4_tokenize(t, json_string_value(jt), json_string_length(jt), 0, &ids, &ni, &e) != DS4_OK) {
            fprintf(stderr, "%s:%d: %s\n", argv[2], ln, e.msg);
            return 1;
        }
        int same = ni == json_array_size(ji);
        for (size_t i = 0; same && i < ni; i++) same = ids[i] == json_integer_value(json_array_get(ji, i));
        /* decode with skip_special_tokens, and the lossy decode of random ids */
        char *dec;
        size_t db;
        json_t *sk = json_object_get(o, "skip"), *rid = json_object_get(o, "rid"), *rdec = json_object_get(o, "rdec");
        if (ds4_detokenize(t, ids, ni, DS4_DETOKENIZE_SKIP_SPECIAL, &dec, &db, &e) != DS4_OK) return 1;
        same = same && db == json_string_length(sk) && memcmp(dec, json_string_value(sk), db) == 0;
        free(dec);
        int32_t r[16];
        size_t nr = json_array_size(rid);
        for (size_t i = 0; i < nr && i < 16; i++) r[i] = (int32_t)json_integer_value(json_array_get(rid, i));
        if (ds4_detokenize(t, r, nr, 0, &dec, &db, &e) != DS4_OK) return 1;
        same = same && db == json_string_length(rdec) && memcmp(dec, json_string_value(rdec), db) == 0;
        free(dec);
        if (!same && bad++ < 10) {
            char *d = json_dumps(jt, JSON_ENSURE_ASCII | JSON_ENCODE_ANY);
            printf("line %d differs: %s\n", ln, d);
            free(d);
        }
        free(ids);
        json_decref(o);
    }
    free(line);
    fclose(f);
    ds4_tokenizer_free(t);
    printf("%d lines (encode, skip-special decode, random-id decode), %d differ from Hugging Face\n", ln, bad);
    return bad != 0;
}
