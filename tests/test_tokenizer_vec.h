/*
 * tests/test_tokenizer_vec.h — helpers shared by the tokenizer tests: the reference tokenizer
 * (../shared/testdata/tokenizer, TOKENIZER.md §7) opened once per test process, and a JSON
 * Lines reader that hands each vector with its 1-based line number.
 */
#ifndef DS4_TEST_TOKENIZER_VEC_H
#define DS4_TEST_TOKENIZER_VEC_H

#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds4.h"
#include "testutil.h"

#define TV_DIR "testdata/tokenizer/"
#define TV_JSON TV_DIR "deepseek_v4_tokenizer_reconstructed.json"

static inline ds4_tokenizer *tv_open_json(void) {
    char *path = tu_shared_path(TV_JSON);
    ds4_tokenizer *tok = NULL;
    ds4_error err = {0};
    ds4_status st = ds4_tokenizer_open(&tok, path, &err);
    cr_assert_eq(st, DS4_OK, "open %s: %s", path, err.msg);
    free(path);
    return tok;
}

/* Calls fn(line_no, obj, ctx) for every line of a .jsonl file under ../shared. */
typedef void (*tv_line_fn)(int line, json_t *obj, void *ctx);
static inline int tv_each_line(const char *rel, tv_line_fn fn, void *ctx) {
    size_t len;
    char *text = tu_read_shared(rel, &len);
    int line = 0, n = 0;
    char *p = text, *end = text + len;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t ll = nl ? (size_t)(nl - p) : (size_t)(end - p);
        line++;
        if (ll) {
            json_error_t je;
            json_t *obj = json_loadb(p, ll, JSON_ALLOW_NUL, &je);
            cr_assert(obj, "%s:%d: bad JSON: %s", rel, line, je.text);
            fn(line, obj, ctx);
            json_decref(obj);
            n++;
        }
        p += ll + 1;
    }
    free(text);
    return n;
}

/* ids array of a vector into a malloc'd int32 array. */
static inline int32_t *tv_ids(json_t *arr, size_t *n) {
    *n = json_array_size(arr);
    int32_t *v = malloc((*n ? *n : 1) * sizeof *v);
    for (size_t i = 0; i < *n; i++) v[i] = (int32_t)json_integer_value(json_array_get(arr, i));
    return v;
}

/* First index where two id arrays differ (or the shorter length). */
static inline size_t tv_first_diff(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    size_t i = 0;
    while (i < na && i < nb && a[i] == b[i]) i++;
    return i;
}

#endif
