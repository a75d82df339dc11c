/*
 * text/tokenizer_pretok.c — the pre-tokenizer of TOKENIZER.md §3.3: three regex Split steps
 * (behaviour Isolated) run with PCRE2 (UTF + UCP, JIT when available), each step refining the
 * pieces of the previous one. Owns only the compiled patterns; does no BPE, knows no vocabulary.
 *
 * Exactness notes:
 *  - Classes are \p{X} plus the Unicode 16 code points this PCRE2 does not know yet
 *    (tokenizer_ucd.c), because the reference classifies by Unicode 16 (§3.3).
 *  - \s is written out as the White_Space property (§3.3): PCRE2's UCP \s differs (it lacks
 *    U+0085 and has U+180E).
 *  - PCRE2's alternation is ordered and its quantifiers greedy with backtracking, like
 *    Oniguruma's, so the six alternatives of step 3 behave as the reference's.
 *  - Invalid UTF-8 (PCRE2_MATCH_INVALID_UTF): an invalid byte can be matched by nothing, so it
 *    always ends up in a gap piece (ds4.h documents this policy).
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer_impl.h"
#include "core/error.h"

#define WS_CLASS "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"

char *tok_pretok_class_text(char which) {
    const char *base, *extra;
    switch (which) {
    case 'L': base = "\\p{L}"; extra = tok_ucd_extra_L; break;
    case 'M': base = "\\p{M}"; extra = tok_ucd_extra_M; break;
    case 'N': base = "\\p{N}"; extra = tok_ucd_extra_N; break;
    case 'P': base = "\\p{P}"; extra = tok_ucd_extra_P; break;
    case 'S': base = "\\p{S}"; extra = tok_ucd_extra_S; break;
    case 'W': base = WS_CLASS; extra = ""; break;
    default: return NULL;
    }
    size_t n = strlen(base) + strlen(extra) + 1;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s%s", base, extra);
    return s;
}

/* Builds the three patterns of §3.3 with the patched classes. */
static char *build_pattern(int step) {
    char *L = tok_pretok_class_text('L'), *M = tok_pretok_class_text('M'), *N = tok_pretok_class_text('N');
    char *P = tok_pretok_class_text('P'), *S = tok_pretok_class_text('S'), *W = tok_pretok_class_text('W');
    char *out = NULL;
    if (L && M && N && P && S && W) {
        size_t n = 8 * (strlen(L) + strlen(M) + strlen(N) + strlen(P) + strlen(S) + strlen(W)) + 512;
        out = malloc(n);
        if (out) {
            if (step == 0) snprintf(out, n, "[%s]{1,3}", N);
            else if (step == 1) snprintf(out, n, "[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+");
            else
                snprintf(out, n,
                         "[!\"#$%%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+"
                         "|[^\\r\\n%s%s%s]?[%s%s]+"
                         "| ?[%s%s]+[\\r\\n]*"
                         "|[%s]*[\\r\\n]+"
                         "|[%s]+(?![^%s])"
                         "|[%s]+",
                         L, P, S, L, M, P, S, W, W, W, W);
        }
    }
    free(L); free(M); free(N); free(P); free(S); free(W);
    return out;
}

ds4_status tok_pretok_init(tok_pretok *p, ds4_error *err) {
    memset(p, 0, sizeof *p);
    uint32_t have_jit = 0;
    pcre2_config(PCRE2_CONFIG_JIT, &have_jit);
    p->jit = have_jit != 0;
    for (int i = 0; i < 3; i++) {
        char *pat = build_pattern(i);
        if (!pat) {
            tok_pretok_free(p);
            return ds4_seterr(err, DS4_ERR_NOMEM, "tokenizer: out of memory for the pre-tokenizer");
        }
        int ec;
        PCRE2_SIZE eo;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
                                       PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &ec, &eo, NULL);
        free(pat);
        if (!re) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(ec, msg, sizeof msg);
            tok_pretok_free(p);
            return ds4_seterr(err, DS4_ERR_INTERNAL, "tokenizer: pre-tokenizer step %d regex: %s at offset %zu", i + 1,
                              (const char *)msg, (size_t)eo);
        }
        if (p->jit && pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) != 0) p->jit = false;
        p->re[i] = re;
    }
    return DS4_OK;
}

void tok_pretok_free(tok_pretok *p) {
    for (int i = 0; i < 3; i++) pcre2_code_free(p->re[i]);
    memset(p, 0, sizeof *p);
}

void *tok_pretok_match_data(const tok_pretok *p) { return pcre2_match_data_create_from_pattern(p->re[2], NULL); }
void tok_pretok_match_data_free(void *md) { pcre2_match_data_free(md); }

typedef struct split_ctx {
    const tok_pretok *p;
    pcre2_match_data *md;
    tok_piece_fn fn;
    void *ctx;
} split_ctx;

/* Applies step `step` (0..2) to one piece; pieces of the last step go to fn (§3.3 Isolated:
 * every match and every non-empty gap is a piece, in order). */
static ds4_status split_step(split_ctx *c, int step, const char *text, size_t len, ds4_error *err) {
    if (step == 3) return c->fn(c->ctx, text, len, err);
    const pcre2_code *re = c->p->re[step];
    size_t pos = 0;
    ds4_status st;
    while (pos < len) {
        int rc = c->p->jit ? pcre2_jit_match(re, (PCRE2_SPTR)text, len, pos, 0, c->md, NULL)
                           : pcre2_match(re, (PCRE2_SPTR)text, len, pos, 0, c->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return ds4_seterr(err, DS4_ERR_INTERNAL, "tokenizer: pre-tokenizer step %d at byte %zu: %s", step + 1, pos,
                              (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        size_t ms = ov[0], me = ov[1];
        if (me <= ms) break;  /* cannot happen: no alternative matches empty */
        if (ms > pos && (st = split_step(c, step + 1, text + pos, ms - pos, err)) != DS4_OK) return st;
        if ((st = split_step(c, step + 1, text + ms, me - ms, err)) != DS4_OK) return st;
        pos = me;
    }
    if (pos < len) return split_step(c, step + 1, text + pos, len - pos, err);
    return DS4_OK;
}

ds4_status tok_pretok_split(const tok_pretok *p, void *match_data, const char *text, size_t len, tok_piece_fn fn,
                            void *ctx, ds4_error *err) {
    split_ctx c = {p, match_data, fn, ctx};
    return split_step(&c, 0, text, len, err);
}
