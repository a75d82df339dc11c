/*
 * text/chat_json.c — growable buffer and Python json.dumps-compatible serialization
 * (CHAT_ENCODING §5: tool schemas are json.dumps(..., ensure_ascii=False); §6.1: non-string
 * DSML values are json.dumps of the parsed value). Knows nothing about chat roles or DSML.
 */
#include "text/chat_json.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

static void lit_free(chat_buf *b) {
    free(b->lit);
    b->lit = NULL;
    b->n_lit = b->cap_lit = 0;
    b->lit_depth = 0;
}

void chat_buf_free(chat_buf *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
    b->oom = false;
    lit_free(b);
}

void chat_buf_clear(chat_buf *b) {
    b->len = 0;
    if (b->p) b->p[0] = '\0';
}

static bool buf_reserve(chat_buf *b, size_t extra) {
    if (b->oom) return false;
    if (extra > SIZE_MAX / 2 - b->len - 1) { b->oom = true; return false; }
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) { b->oom = true; return false; }
    b->p = p;
    b->cap = cap;
    return true;
}

void chat_buf_add(chat_buf *b, const void *data, size_t n) {
    if (!buf_reserve(b, n)) return;
    if (n) memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void chat_buf_adds(chat_buf *b, const char *s) {
    if (s) chat_buf_add(b, s, strlen(s));
}

void chat_buf_addc(chat_buf *b, char c) {
    chat_buf_add(b, &c, 1);
}

ds4_status chat_buf_status(const chat_buf *b, const char *what, ds4_error *err) {
    if (b->oom) return ds4_seterr(err, DS4_ERR_NOMEM, "%s: out of memory", what);
    return DS4_OK;
}

char *chat_buf_take(chat_buf *b, size_t *n_bytes) {
    if (!b->p) chat_buf_add(b, "", 0);
    if (b->oom) { chat_buf_free(b); if (n_bytes) *n_bytes = 0; return NULL; }
    char *p = b->p;
    if (n_bytes) *n_bytes = b->len;
    b->p = NULL;
    b->len = b->cap = 0;
    lit_free(b);
    return p;
}

void chat_buf_lit_begin(chat_buf *b) {
    if (b->lit_depth++ == 0) b->lit_start = b->len;
}

void chat_buf_lit_end(chat_buf *b) {
    if (b->lit_depth <= 0 || --b->lit_depth > 0 || b->oom || b->len == b->lit_start) return;
    if (b->n_lit && b->lit[2 * b->n_lit - 1] == b->lit_start) {
        b->lit[2 * b->n_lit - 1] = b->len; /* adjacent: one span */
        return;
    }
    if (b->n_lit == b->cap_lit) {
        size_t cap = b->cap_lit ? b->cap_lit * 2 : 16;
        size_t *p = realloc(b->lit, 2 * cap * sizeof *p);
        if (!p) { b->oom = true; return; }
        b->lit = p;
        b->cap_lit = cap;
    }
    b->lit[2 * b->n_lit] = b->lit_start;
    b->lit[2 * b->n_lit + 1] = b->len;
    b->n_lit++;
}

void chat_buf_add_lit(chat_buf *b, const void *data, size_t n) {
    chat_buf_lit_begin(b);
    chat_buf_add(b, data, n);
    chat_buf_lit_end(b);
}

void chat_buf_adds_lit(chat_buf *b, const char *s) {
    if (s) chat_buf_add_lit(b, s, strlen(s));
}

size_t *chat_buf_take_lit(chat_buf *b, size_t *n_spans) {
    size_t *p = b->lit;
    *n_spans = b->n_lit;
    b->lit = NULL;
    b->n_lit = b->cap_lit = 0;
    return p;
}

/* Decodes one UTF-8 sequence (jansson strings are valid UTF-8); returns its length. */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned c = s[0];
    size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    if (len > n) len = 1;
    if (len == 1) { *cp = c; return 1; }
    uint32_t v = c & (0x7F >> len);
    for (size_t i = 1; i < len; i++) v = (v << 6) | (s[i] & 0x3F);
    *cp = v;
    return len;
}

void chat_json_quote(chat_buf *b, const char *s, size_t n, bool ensure_ascii) {
    chat_buf_addc(b, '"');
    chat_json_escape(b, s, n, ensure_ascii);
    chat_buf_addc(b, '"');
}

void chat_json_escape(chat_buf *b, const char *s, size_t n, bool ensure_ascii) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t run = 0; /* bytes copied verbatim are batched */
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        const char *esc = NULL;
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default: break;
        }
        if (!esc && c >= 0x20 && (c < 0x80 || !ensure_ascii)) {
            run++;
            i++;
            continue;
        }
        chat_buf_add(b, s + i - run, run);
        run = 0;
        if (esc) {
            chat_buf_adds(b, esc);
            i++;
        } else if (c < 0x20) {
            char e[7] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15], 0};
            chat_buf_adds(b, e);
            i++;
        } else {
            uint32_t cp;
            i += utf8_decode(u + i, n - i, &cp);
            uint32_t units[2];
            int n_units = 1;
            units[0] = cp;
            if (cp >= 0x10000) {
                cp -= 0x10000;
                units[0] = 0xD800 | (cp >> 10);
                units[1] = 0xDC00 | (cp & 0x3FF);
                n_units = 2;
            }
            for (int k = 0; k < n_units; k++) {
                char e[7] = {'\\', 'u', hex[(units[k] >> 12) & 15], hex[(units[k] >> 8) & 15],
                             hex[(units[k] >> 4) & 15], hex[units[k] & 15], 0};
                chat_buf_adds(b, e);
            }
        }
    }
    chat_buf_add(b, s + n - run, run);
}

/* Python float repr: shortest digits that round-trip, exponent form when the decimal point
 * position is <= -4 or > 16 (CPython format_float_short, mode 'r'). */
void chat_json_float(chat_buf *b, double d) {
    if (isnan(d)) { chat_buf_adds(b, "NaN"); return; }
    if (isinf(d)) { chat_buf_adds(b, d < 0 ? "-Infinity" : "Infinity"); return; }
    if (signbit(d)) { chat_buf_addc(b, '-'); d = -d; }
    char tmp[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, d);
        if (strtod(tmp, NULL) == d) break;
    }
    char digits[24];
    size_t nd = 0;
    const char *p = tmp;
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9' && nd < sizeof digits - 1) digits[nd++] = *p;
    int exp10 = *p == 'e' ? atoi(p + 1) : 0;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = '\0';
    int decpt = exp10 + 1;
    if (d == 0.0) decpt = 1;
    if (decpt <= -4 || decpt > 16) {
        chat_buf_addc(b, digits[0]);
        if (nd > 1) { chat_buf_addc(b, '.'); chat_buf_add(b, digits + 1, nd - 1); }
        snprintf(tmp, sizeof tmp, "e%c%02d", decpt - 1 < 0 ? '-' : '+', abs(decpt - 1));
        chat_buf_adds(b, tmp);
    } else if (decpt <= 0) {
        chat_buf_adds(b, "0.");
        for (int i = 0; i < -decpt; i++) chat_buf_addc(b, '0');
        chat_buf_add(b, digits, nd);
    } else if ((size_t)decpt >= nd) {
        chat_buf_add(b, digits, nd);
        for (size_t i = nd; i < (size_t)decpt; i++) chat_buf_addc(b, '0');
        chat_buf_adds(b, ".0");
    } else {
        chat_buf_add(b, digits, (size_t)decpt);
        chat_buf_addc(b, '.');
        chat_buf_add(b, digits + decpt, nd - (size_t)decpt);
    }
}

void chat_json_dumps(chat_buf *b, const json_t *v, bool ensure_ascii) {
    char tmp[32];
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *key;
        json_t *val;
        bool first = true;
        chat_buf_addc(b, '{');
        /* jansson keeps insertion order (a duplicate key keeps its first position, last value),
         * which is what Python's dict does for json.loads. */
        json_object_foreach((json_t *)v, key, val) {
            if (!first) chat_buf_adds(b, ", ");
            first = false;
            chat_json_quote(b, key, strlen(key), ensure_ascii);
            chat_buf_adds(b, ": ");
            chat_json_dumps(b, val, ensure_ascii);
        }
        chat_buf_addc(b, '}');
        break;
    }
    case JSON_ARRAY: {
        chat_buf_addc(b, '[');
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i) chat_buf_adds(b, ", ");
            chat_json_dumps(b, json_array_get(v, i), ensure_ascii);
        }
        chat_buf_addc(b, ']');
        break;
    }
    case JSON_STRING:
        chat_json_quote(b, json_string_value(v), json_string_length(v), ensure_ascii);
        break;
    case JSON_INTEGER:
        snprintf(tmp, sizeof tmp, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        chat_buf_adds(b, tmp);
        break;
    case JSON_REAL: chat_json_float(b, json_real_value(v)); break;
    case JSON_TRUE: chat_buf_adds(b, "true"); break;
    case JSON_FALSE: chat_buf_adds(b, "false"); break;
    case JSON_NULL: chat_buf_adds(b, "null"); break;
    }
}
