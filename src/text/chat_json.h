/*
 * text/chat_json.h — a growable byte buffer and Python-compatible JSON text for the chat
 * encoder and DSML code: json.dumps(v, ensure_ascii=...) with the default separators
 * (", " and ": "), keys in stored order, floats in Python's shortest repr
 * (CHAT_ENCODING §5, §6.1, §8.4). Owns no chat or DSML rules and never prints.
 */
#ifndef DS4_TEXT_CHAT_JSON_H
#define DS4_TEXT_CHAT_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "ds4.h"

/* Growable buffer. Always NUL-terminated after the first append. An allocation failure is
 * sticky (`oom`), so callers append freely and check once (chat_buf_status). */
typedef struct chat_buf {
    char *p;
    size_t len;
    size_t cap;
    bool oom;
    /* Literal spans: byte ranges [lit[2k], lit[2k+1]) appended between chat_buf_lit_begin and
     * chat_buf_lit_end, i.e. client-supplied text that must never become a control token
     * (ds4_chat_render_tokens). Sorted, disjoint, adjacent ones merged. */
    size_t *lit;
    size_t n_lit;             /* number of spans */
    size_t cap_lit;
    int lit_depth;            /* begin/end nest; only the outermost pair records a span */
    size_t lit_start;
} chat_buf;

void chat_buf_free(chat_buf *b);
void chat_buf_clear(chat_buf *b);          /* len = 0, keeps memory */
void chat_buf_add(chat_buf *b, const void *data, size_t n);
void chat_buf_adds(chat_buf *b, const char *s);   /* NUL-terminated; NULL adds nothing */
void chat_buf_addc(chat_buf *b, char c);
/* DS4_ERR_NOMEM (filled into err, naming `what`) when an append failed, else DS4_OK. */
ds4_status chat_buf_status(const chat_buf *b, const char *what, ds4_error *err);
/* Marks everything appended until the matching chat_buf_lit_end as literal client text. */
void chat_buf_lit_begin(chat_buf *b);
void chat_buf_lit_end(chat_buf *b);
/* Appends s (NULL adds nothing) as literal client text. */
void chat_buf_adds_lit(chat_buf *b, const char *s);
void chat_buf_add_lit(chat_buf *b, const void *data, size_t n);
/* Hands the bytes to the caller (malloc'd, NUL-terminated, "" when empty) and resets b. */
char *chat_buf_take(chat_buf *b, size_t *n_bytes);
/* Hands the literal spans to the caller (malloc'd pairs, NULL when none) and forgets them;
 * chat_buf_take and chat_buf_free drop spans not taken. */
size_t *chat_buf_take_lit(chat_buf *b, size_t *n_spans);

/* Appends the JSON string literal of s[0..n) as Python's json.dumps writes it: `"`, `\`, and
 * the controls \b \f \n \r \t escaped by name, other bytes < 0x20 as \u00xx; bytes >= 0x80 kept
 * raw unless ensure_ascii (then \uXXXX, surrogate pairs above U+FFFF). */
void chat_json_quote(chat_buf *b, const char *s, size_t n, bool ensure_ascii);

/* The same escaping without the quotes; bytes of an incomplete UTF-8 sequence pass through
 * unchanged when !ensure_ascii, so a string may be escaped piece by piece. */
void chat_json_escape(chat_buf *b, const char *s, size_t n, bool ensure_ascii);

/* Appends json.dumps(v, ensure_ascii=ensure_ascii) for a jansson value. */
void chat_json_dumps(chat_buf *b, const json_t *v, bool ensure_ascii);

/* Appends Python repr() of a finite double ("1.0", "1e+16", "1.5e-05", "-0.0"). */
void chat_json_float(chat_buf *b, double d);

#endif
