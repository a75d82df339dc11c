/*
 * tools/ds4/cmd_text.c — `ds4 --tokenizer FILE` with --tokenize TEXT, --tokenize-file F or
 * --detokenize "ID ID ..." (spaces and/or commas): prints ids space-separated, or the decoded
 * text. FILE is a GGUF or a tokenizer.json (-m/--model accepted as a synonym). Owns only flag
 * parsing and printing; tokenization is libds4's. Exit 0 ok, 1 runtime failure, 2 usage.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds4.h"
#include "cmds.h"

static int usage(void) {
    fprintf(stderr,
            "usage: ds4 --tokenizer FILE (--tokenize TEXT | --tokenize-file F | --detokenize \"ID ID ...\")\n"
            "           [--special-as-text] [--skip-special]\n"
            "  FILE                a GGUF model or a Hugging Face tokenizer.json (-m/--model also accepted)\n"
            "  --tokenize TEXT     print the token ids of TEXT, space-separated (no BOS is added)\n"
            "  --tokenize-file F   the same for the bytes of file F ('-' reads stdin)\n"
            "  --detokenize IDS    print the text of the ids (separated by spaces and/or commas)\n"
            "  --special-as-text   do not recognise added/special tokens in the text (plain BPE)\n"
            "  --skip-special      drop special tokens (BOS, EOS, placeholders) when detokenizing\n");
    return 2;
}

/* Parses "1 2,3 , 4": returns 0, or 2 (usage) naming the bad item. */
static int parse_ids(const char *s, int32_t **out, size_t *n_out) {
    size_t cap = 16, n = 0;
    int32_t *v = malloc(cap * sizeof *v);
    if (!v) return 1;
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long long x = strtoll(p, &end, 10);
        if (end == p || errno || x < 0 || x > INT32_MAX || (*end && *end != ' ' && *end != ',' && *end != '\t' &&
                                                             *end != '\n')) {
            const char *e = p;
            while (*e && *e != ' ' && *e != ',') e++;
            fprintf(stderr, "ds4: --detokenize: '%.*s' is not a token id\n", (int)(e - p), p);
            free(v);
            return 2;
        }
        if (n == cap) {
            int32_t *nv = realloc(v, 2 * cap * sizeof *v);
            if (!nv) { free(v); return 1; }
            v = nv;
            cap *= 2;
        }
        v[n++] = (int32_t)x;
        p = end;
    }
    *out = v;
    *n_out = n;
    return 0;
}

int ds4_cmd_text(int argc, char **argv) {
    const char *tok_path = NULL, *text = NULL, *file = NULL, *ids_arg = NULL;
    uint32_t enc_flags = 0, dec_flags = 0;
    int modes = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if ((!strcmp(a, "--tokenizer") || !strcmp(a, "-m") || !strcmp(a, "--model")) && has) tok_path = argv[++i];
        else if (!strcmp(a, "--tokenize") && has) { text = argv[++i]; modes++; }
        else if (!strcmp(a, "--tokenize-file") && has) { file = argv[++i]; modes++; }
        else if (!strcmp(a, "--detokenize") && has) { ids_arg = argv[++i]; modes++; }
        else if (!strcmp(a, "--special-as-text")) enc_flags |= DS4_TOKENIZE_SPECIAL_AS_TEXT;
        else if (!strcmp(a, "--skip-special")) dec_flags |= DS4_DETOKENIZE_SKIP_SPECIAL;
        else {
            fprintf(stderr, "ds4: unexpected argument '%s'\n", a);
            return usage();
        }
    }
    if (!tok_path) {
        fprintf(stderr, "ds4: --tokenizer FILE is required\n");
        return usage();
    }
    if (modes != 1) {
        fprintf(stderr, "ds4: give exactly one of --tokenize, --tokenize-file, --detokenize\n");
        return usage();
    }
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (ids_arg) {
        int rc = parse_ids(ids_arg, &ids, &n_ids);
        if (rc) return rc;
    }
    char *buf = NULL;
    size_t len = 0;
    if (file) {
        FILE *f = strcmp(file, "-") == 0 ? stdin : fopen(file, "rb");
        if (!f) {
            fprintf(stderr, "ds4: %s: %s\n", file, strerror(errno));
            free(ids);
            return 1;
        }
        buf = ds4_tool_read_all(f, &len);
        if (f != stdin) fclose(f);
        if (!buf) {
            fprintf(stderr, "ds4: %s: read failed\n", file);
            free(ids);
            return 1;
        }
    } else if (text) {
        len = strlen(text);
    }

    ds4_error err = {0};
    ds4_tokenizer *tok;
    if (ds4_tokenizer_open(&tok, tok_path, &err) != DS4_OK) {
        fprintf(stderr, "ds4: %s\n", err.msg);
        free(ids);
        free(buf);
        return 1;
    }
    int rc = 0;
    if (ids_arg) {
        char *out;
        size_t ob;
        if (ds4_detokenize(tok, ids, n_ids, dec_flags, &out, &ob, &err) != DS4_OK) {
            fprintf(stderr, "ds4: %s\n", err.msg);
            rc = 1;
        } else {
            fwrite(out, 1, ob, stdout);
            putchar('\n');
            free(out);
        }
    } else {
        int32_t *out;
        size_t n;
        if (ds4_tokenize(tok, buf ? buf : text, len, enc_flags, &out, &n, &err) != DS4_OK) {
            fprintf(stderr, "ds4: %s\n", err.msg);
            rc = 1;
        } else {
            for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", out[i]);
            putchar('\n');
            free(out);
        }
    }
    if (fflush(stdout) != 0) {
        fprintf(stderr, "ds4: writing output: %s\n", strerror(errno));
        rc = 1;
    }
    ds4_tokenizer_free(tok);
    free(ids);
    free(buf);
    return rc;
}
