/*
 * text/dsml_stream.c — the completion parser: generated text (fed in arbitrary pieces) ->
 * reasoning, content and DSML tool calls, reported as events as early as the bytes allow.
 * The at-once parser (dsml.c) is this machine fed once, so both always agree.
 *
 * Grammar (CHAT_ENCODING §8, made lenient where SERVER_CLI §5.5 says the model drifts):
 *   thinking:  ["<think>"] REASONING "</think>" CONTENT   (no "</think>": all reasoning)
 *   otherwise: CONTENT
 *   CONTENT = text [ws* BLOCK ws* [EOS]]        (BLOCK only when opts.tools)
 *   BLOCK   = "<P tool_calls>" (ws* INVOKE)* ws* "</P tool_calls>"
 *   INVOKE  = "<P invoke" ATTRS ">" (ws* PARAM)* ws* "</P invoke>"      (ATTRS: name="...")
 *   PARAM   = "<P parameter" ATTRS ">" VALUE "</P parameter>"  (name="...", string="true|false",
 *             string absent = true); P = "｜DSML｜", "DSML｜" or "" fixed by the start tag.
 * Invariants:
 *  1. Decisions depend only on bytes already seen (prefix-closed), so any split of the input
 *     gives the same result. Bytes that may still turn into a marker are held: a marker prefix,
 *     the whitespace before a possible tool block (its final "\n\n" is the separator, not
 *     content, §8 note),
 *     a complete EOS at the very end (dropped at finish; mid-text it is ordinary text).
 *  2. The result is the concatenation of the events (both are filled in deliver()).
 *  3. Nothing is lost: a block that turns out malformed (bad tag, bad attribute, duplicate
 *     key, text after the block, end of input inside it) raises CALLS_ABORT and its bytes,
 *     with the separator, become content; the rest of the text is content too.
 *  4. Reasoning keeps any DSML inside it as text (only DSML after </think> counts, §9.5).
 *  5. Arguments use the official layout {"k": "v", "n": 1} (§8.4): string values are
 *     JSON-escaped as they stream; a non-string value is buffered to its closing tag and
 *     inserted verbatim when it is valid JSON, else as a JSON string of its raw text.
 * Never renders prompts and never decodes entities (the official format has none).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "text/dsml.h"

#define TAG_MAX 4096 /* bytes of an invoke/parameter tag before it is called malformed */

enum { M_THINK_OPEN, M_REASON, M_CONTENT, M_BLOCK, M_PLAIN, M_DONE };
enum { B_INV_WS, B_INV_TAG, B_PAR_WS, B_PAR_TAG, B_VALUE, B_AFTER, B_AFTER_EOS };
enum { TAG_MORE, TAG_BAD, TAG_OPEN, TAG_CLOSE };

typedef struct pcall {
    char id[DS4_TOOL_ID_MAX];
    bool has_id;
    chat_buf name;
    chat_buf args;
} pcall;

struct ds4_dsml_parser {
    ds4_dsml_opts o;
    int mode;
    ds4_status st;        /* sticky: cancelled / out of memory / id failure */
    ds4_error st_err;
    /* text modes */
    char tail[64];        /* possible marker prefix (markers are < 64 bytes) */
    size_t n_tail;
    bool eos_held;        /* tail holds a complete EOS */
    chat_buf ws;          /* whitespace held before a possible tool block */
    /* pending delta (batched until the kind changes or the feed ends) */
    int pend_kind;
    size_t pend_call;
    chat_buf pend;
    chat_buf scratch;
    /* result */
    chat_buf reasoning, content, dsml;
    pcall *calls;
    size_t n_calls, cap_calls;
    bool malformed;
    /* block */
    int fam, bstate;
    chat_buf raw;         /* separator + block bytes as generated */
    chat_buf tag;
    bool tag_q;           /* inside a quoted attribute value */
    size_t n_params;
    bool val_string;
    chat_buf val;         /* non-string value */
    chat_buf keys;        /* NUL-terminated keys of the current invoke */
    char vtail[64];       /* possible closing-tag / EOS prefix inside the block */
    size_t n_vtail;
    char t_starts[DSML_N_FAMILIES][40]; /* "<P tool_calls>" per family */
    char t_end[40], t_inv[40], t_inv_end[40], t_par[40], t_par_end[40];
};

static void process_byte(ds4_dsml_parser *p, unsigned char c, bool fresh);

static bool is_ws(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Length of an incomplete UTF-8 sequence at the end of s[0..n). */
static size_t utf8_partial_tail(const char *s, size_t n) {
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned char c = (unsigned char)s[n - back];
        if ((c & 0xC0) == 0x80) continue;
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > back ? back : 0;
    }
    return 0;
}

static void fail(ds4_dsml_parser *p, ds4_status st, const char *msg) {
    if (p->st != DS4_OK) return;
    p->st = ds4_seterr(&p->st_err, st, "dsml: %s", msg);
}

/* Appends to the result and tells the caller (invariant 2). */
static void deliver(ds4_dsml_parser *p, int kind, size_t call, const char *s, size_t n) {
    chat_buf *dst = kind == DS4_DSML_REASONING ? &p->reasoning
                    : kind == DS4_DSML_CONTENT ? &p->content
                                               : &p->calls[call].args;
    chat_buf_add(dst, s, n);
    if (p->o.on_event && p->st == DS4_OK) {
        ds4_dsml_event ev = {.kind = kind, .call_index = call, .text = s, .text_bytes = n};
        if (p->o.on_event(p->o.event_user, &ev)) fail(p, DS4_ERR_CANCELLED, "stopped by caller");
    }
}

static void flush(ds4_dsml_parser *p, bool hold_utf8) {
    size_t n = p->pend.len;
    if (hold_utf8) n -= utf8_partial_tail(p->pend.p, n);
    if (!n) return;
    deliver(p, p->pend_kind, p->pend_call, p->pend.p, n);
    memmove(p->pend.p, p->pend.p + n, p->pend.len - n);
    p->pend.len -= n;
}

static void emit(ds4_dsml_parser *p, int kind, size_t call, const char *s, size_t n) {
    if (!n) return;
    if (p->pend.len && (p->pend_kind != kind || p->pend_call != call)) flush(p, false);
    p->pend_kind = kind;
    p->pend_call = call;
    chat_buf_add(&p->pend, s, n);
}

static void emits(ds4_dsml_parser *p, int kind, size_t call, const char *s) {
    emit(p, kind, call, s, strlen(s));
}

static void event(ds4_dsml_parser *p, int kind, size_t call) {
    flush(p, false);
    if (!p->o.on_event || p->st != DS4_OK) return;
    ds4_dsml_event ev = {.kind = kind, .call_index = call};
    if (kind == DS4_DSML_CALL_START) {
        ev.id = p->calls[call].has_id ? p->calls[call].id : NULL;
        ev.name = p->calls[call].name.p ? p->calls[call].name.p : "";
    }
    if (p->o.on_event(p->o.event_user, &ev)) fail(p, DS4_ERR_CANCELLED, "stopped by caller");
}

static void drop_calls(ds4_dsml_parser *p) {
    for (size_t i = 0; i < p->n_calls; i++) {
        chat_buf_free(&p->calls[i].name);
        chat_buf_free(&p->calls[i].args);
    }
    p->n_calls = 0;
}

/* ---- Text modes ---------------------------------------------------------------------------- */

/* Result of matching the held tail against the markers of the current mode. */
enum { MK_NONE = -2, MK_PREFIX = -1, MK_THINK_END = 0, MK_EOS = 1, MK_START = 2 /* + family */ };

static int match_markers(const ds4_dsml_parser *p) {
    const char *marks[2 + DSML_N_FAMILIES];
    int ids[2 + DSML_N_FAMILIES], n = 0;
    marks[n] = CHAT_EOS, ids[n++] = MK_EOS;
    if (p->mode == M_REASON) marks[n] = CHAT_THINK_END, ids[n++] = MK_THINK_END;
    if (p->mode == M_CONTENT && p->o.tools)
        for (int f = 0; f < DSML_N_FAMILIES; f++) marks[n] = p->t_starts[f], ids[n++] = MK_START + f;
    bool prefix = false;
    for (int i = 0; i < n; i++) {
        size_t len = strlen(marks[i]);
        if (p->n_tail <= len && memcmp(p->tail, marks[i], p->n_tail) == 0) {
            if (p->n_tail == len) return ids[i];
            prefix = true;
        }
    }
    return prefix ? MK_PREFIX : MK_NONE;
}

static int text_kind(const ds4_dsml_parser *p) {
    return p->mode == M_REASON || p->mode == M_THINK_OPEN ? DS4_DSML_REASONING : DS4_DSML_CONTENT;
}

static void release_ws(ds4_dsml_parser *p) {
    emit(p, DS4_DSML_CONTENT, 0, p->ws.p, p->ws.len);
    chat_buf_clear(&p->ws);
}

static void start_block(ds4_dsml_parser *p, int fam) {
    const char *P = dsml_family_prefix[fam];
    p->fam = fam;
    snprintf(p->t_end, sizeof p->t_end, "</%stool_calls>", P);
    snprintf(p->t_inv, sizeof p->t_inv, "<%sinvoke", P);
    snprintf(p->t_inv_end, sizeof p->t_inv_end, "</%sinvoke>", P);
    snprintf(p->t_par, sizeof p->t_par, "<%sparameter", P);
    snprintf(p->t_par_end, sizeof p->t_par_end, "</%sparameter>", P);
    /* The separator is the final "\n\n" before the block (§8: content stops at
     * "\n\n<｜DSML｜tool_calls"), so content + dsml reproduce the sampled bytes; a whitespace
     * run not ending in "\n\n" is all separator (lenient, SERVER_CLI §4.3). */
    size_t sep = p->ws.len;
    if (sep >= 2 && memcmp(p->ws.p + sep - 2, "\n\n", 2) == 0) {
        emit(p, DS4_DSML_CONTENT, 0, p->ws.p, sep - 2);
        sep = 2;
    }
    chat_buf_clear(&p->raw);
    if (sep) chat_buf_add(&p->raw, p->ws.p + p->ws.len - sep, sep);
    chat_buf_add(&p->raw, p->tail, p->n_tail);
    chat_buf_clear(&p->ws);
    p->n_tail = 0;
    p->mode = M_BLOCK;
    p->bstate = B_INV_WS;
}

/* The held tail cannot become a marker: its first byte is text, the rest is looked at again. */
static void tail_failed(ds4_dsml_parser *p, int kind) {
    char t[sizeof p->tail];
    size_t n = p->n_tail;
    memcpy(t, p->tail, n);
    p->n_tail = 0;
    release_ws(p);
    emit(p, kind, 0, t, 1);
    for (size_t k = 1; k < n; k++) process_byte(p, (unsigned char)t[k], false);
}

static void text_byte(ds4_dsml_parser *p, unsigned char c) {
    int kind = text_kind(p);
    if (p->eos_held) { /* EOS with text after it was text (invariant 1) */
        release_ws(p);
        emit(p, kind, 0, p->tail, p->n_tail);
        p->n_tail = 0;
        p->eos_held = false;
    }
    if (p->n_tail || c == '<') {
        p->tail[p->n_tail++] = (char)c;
        int m = match_markers(p);
        if (m == MK_PREFIX) return;
        if (m == MK_NONE) { tail_failed(p, kind); return; }
        if (m == MK_EOS) { p->eos_held = true; return; }
        if (m == MK_THINK_END) { p->n_tail = 0; p->mode = M_CONTENT; return; }
        start_block(p, m - MK_START);
        return;
    }
    if (p->mode == M_CONTENT && p->o.tools && is_ws(c)) {
        chat_buf_addc(&p->ws, (char)c);
        return;
    }
    release_ws(p);
    emit(p, kind, 0, (const char *)&c, 1);
}

static void think_open_byte(ds4_dsml_parser *p, unsigned char c) {
    static const char open[] = CHAT_THINK;
    p->tail[p->n_tail++] = (char)c;
    if (p->n_tail < sizeof open && memcmp(p->tail, open, p->n_tail) == 0) {
        if (p->n_tail == sizeof open - 1) { p->n_tail = 0; p->mode = M_REASON; }
        return;
    }
    /* Not a leading <think>: look at the bytes again as reasoning. */
    char t[sizeof open];
    size_t n = p->n_tail;
    memcpy(t, p->tail, n);
    p->n_tail = 0;
    p->mode = M_REASON;
    for (size_t k = 0; k < n; k++) process_byte(p, (unsigned char)t[k], false);
}

/* ---- Block mode ---------------------------------------------------------------------------- */

/* Invariant 3: the block becomes content, and so does everything after it. */
static void malformed(ds4_dsml_parser *p) {
    flush(p, false);
    if (p->n_calls) event(p, DS4_DSML_CALLS_ABORT, 0);
    drop_calls(p);
    p->malformed = true;
    chat_buf_clear(&p->dsml);
    /* Bytes from the last '<' on are looked at again as plain text, so an EOS there is still
     * recognized; everything before it is content as is. */
    size_t cut = p->raw.len;
    while (cut > 0 && p->raw.p[cut - 1] != '<') cut--;
    cut = cut ? cut - 1 : p->raw.len;
    emit(p, DS4_DSML_CONTENT, 0, p->raw.p, cut);
    p->mode = M_PLAIN;
    p->n_tail = 0;
    p->n_vtail = 0;
    for (size_t k = cut; k < p->raw.len; k++) process_byte(p, (unsigned char)p->raw.p[k], false);
    chat_buf_clear(&p->raw);
}

/* Attributes of a complete tag: ( ws+ NAME="VALUE" )* ws* — only name and string matter. */
static bool parse_attrs(const char *s, size_t n, const char **name, size_t *name_len,
                        const char **str, size_t *str_len) {
    *name = *str = NULL;
    size_t i = 0;
    while (i < n) {
        size_t ws = i;
        while (i < n && is_ws((unsigned char)s[i])) i++;
        if (i == n) break;
        if (i == ws) return false; /* attributes are separated by whitespace */
        size_t k = i;
        while (i < n && s[i] != '=' && !is_ws((unsigned char)s[i]) && s[i] != '"') i++;
        if (i == k || i + 1 >= n || s[i] != '=' || s[i + 1] != '"') return false;
        const char *key = s + k;
        size_t key_len = i - k;
        i += 2;
        size_t v = i;
        while (i < n && s[i] != '"') i++;
        if (i == n) return false;
        if (key_len == 4 && memcmp(key, "name", 4) == 0) *name = s + v, *name_len = i - v;
        if (key_len == 6 && memcmp(key, "string", 6) == 0) *str = s + v, *str_len = i - v;
        i++;
    }
    return true;
}

static int tag_state(ds4_dsml_parser *p, const char *open, const char *close) {
    const char *s = p->tag.p;
    size_t n = p->tag.len, lc = strlen(close), lo = strlen(open);
    if (n <= lc && memcmp(s, close, n) == 0) return n == lc ? TAG_CLOSE : TAG_MORE;
    if (n <= lo) return memcmp(s, open, n) == 0 ? TAG_MORE : TAG_BAD;
    if (memcmp(s, open, lo) != 0) return TAG_BAD;
    if (n == lo + 1) return is_ws((unsigned char)s[lo]) ? TAG_MORE : TAG_BAD;
    char c = s[n - 1];
    if (c == '"') p->tag_q = !p->tag_q;
    if (c == '>' && !p->tag_q) return TAG_OPEN;
    return n > TAG_MAX ? TAG_BAD : TAG_MORE;
}

static void start_call(ds4_dsml_parser *p, const char *name, size_t name_len) {
    if (p->n_calls == p->cap_calls) {
        size_t cap = p->cap_calls ? p->cap_calls * 2 : 4;
        pcall *c = realloc(p->calls, cap * sizeof *c);
        if (!c) { fail(p, DS4_ERR_NOMEM, "out of memory"); return; }
        p->calls = c;
        p->cap_calls = cap;
    }
    size_t idx = p->n_calls++;
    pcall *c = &p->calls[idx];
    memset(c, 0, sizeof *c);
    chat_buf_add(&c->name, name, name_len);
    if (p->o.make_id) {
        if (p->o.make_id(p->o.id_user, idx, c->id) != 0) fail(p, DS4_ERR_INTERNAL, "make_id failed");
        c->id[DS4_TOOL_ID_MAX - 1] = '\0';
        c->has_id = true;
    }
    p->n_params = 0;
    chat_buf_clear(&p->keys);
    event(p, DS4_DSML_CALL_START, idx);
    emits(p, DS4_DSML_CALL_ARGS, idx, "{");
}

static bool key_seen(const ds4_dsml_parser *p, const char *key, size_t n) {
    for (size_t i = 0; i < p->keys.len;) {
        size_t len = strlen(p->keys.p + i);
        if (len == n && memcmp(p->keys.p + i, key, n) == 0) return true;
        i += len + 1;
    }
    return false;
}

/* A complete <…parameter ATTRS> tag: its key goes out at once. */
static bool start_param(ds4_dsml_parser *p) {
    const char *name, *str;
    size_t name_len = 0, str_len = 0, lo = strlen(p->t_par);
    if (!parse_attrs(p->tag.p + lo, p->tag.len - lo - 1, &name, &name_len, &str, &str_len) ||
        !name || !name_len || memchr(name, '\0', name_len) || key_seen(p, name, name_len))
        return false;
    if (str && !(str_len == 4 && memcmp(str, "true", 4) == 0) &&
        !(str_len == 5 && memcmp(str, "false", 5) == 0))
        return false;
    p->val_string = !str || str_len == 4;
    chat_buf_add(&p->keys, name, name_len);
    chat_buf_addc(&p->keys, '\0');
    size_t call = p->n_calls - 1;
    chat_buf_clear(&p->scratch);
    if (p->n_params++) chat_buf_adds(&p->scratch, ", ");
    chat_json_quote(&p->scratch, name, name_len, false);
    chat_buf_adds(&p->scratch, p->val_string ? ": \"" : ": ");
    emit(p, DS4_DSML_CALL_ARGS, call, p->scratch.p, p->scratch.len);
    chat_buf_clear(&p->val);
    p->n_vtail = 0;
    p->bstate = B_VALUE;
    return true;
}

static void value_bytes(ds4_dsml_parser *p, const char *s, size_t n) {
    if (!p->val_string) { chat_buf_add(&p->val, s, n); return; }
    chat_buf_clear(&p->scratch);
    chat_json_escape(&p->scratch, s, n, false);
    emit(p, DS4_DSML_CALL_ARGS, p->n_calls - 1, p->scratch.p, p->scratch.len);
}

static void end_value(ds4_dsml_parser *p) {
    size_t call = p->n_calls - 1;
    if (p->val_string) {
        emits(p, DS4_DSML_CALL_ARGS, call, "\"");
    } else {
        json_t *v = json_loadb(p->val.p ? p->val.p : "", p->val.len, JSON_DECODE_ANY, NULL);
        chat_buf_clear(&p->scratch);
        if (v) chat_buf_add(&p->scratch, p->val.p, p->val.len);
        else chat_json_quote(&p->scratch, p->val.p ? p->val.p : "", p->val.len, false);
        json_decref(v);
        emit(p, DS4_DSML_CALL_ARGS, call, p->scratch.p, p->scratch.len);
    }
    p->bstate = B_PAR_WS;
}

static void block_byte(ds4_dsml_parser *p, unsigned char c) {
    switch (p->bstate) {
    case B_INV_WS:
    case B_PAR_WS:
        if (is_ws(c)) return;
        if (c != '<') { malformed(p); return; }
        chat_buf_clear(&p->tag);
        chat_buf_addc(&p->tag, (char)c);
        p->tag_q = false;
        p->bstate = p->bstate == B_INV_WS ? B_INV_TAG : B_PAR_TAG;
        return;
    case B_INV_TAG: {
        chat_buf_addc(&p->tag, (char)c);
        int t = tag_state(p, p->t_inv, p->t_end);
        if (t == TAG_MORE) return;
        if (t == TAG_CLOSE) {
            chat_buf_clear(&p->dsml);
            chat_buf_add(&p->dsml, p->raw.p, p->raw.len);
            p->bstate = B_AFTER;
            p->n_vtail = 0;
            return;
        }
        const char *name, *str;
        size_t name_len = 0, str_len = 0, lo = strlen(p->t_inv);
        if (t == TAG_BAD ||
            !parse_attrs(p->tag.p + lo, p->tag.len - lo - 1, &name, &name_len, &str, &str_len) ||
            !name || !name_len) {
            malformed(p);
            return;
        }
        start_call(p, name, name_len);
        p->bstate = B_PAR_WS;
        return;
    }
    case B_PAR_TAG: {
        chat_buf_addc(&p->tag, (char)c);
        int t = tag_state(p, p->t_par, p->t_inv_end);
        if (t == TAG_MORE) return;
        if (t == TAG_CLOSE) {
            emits(p, DS4_DSML_CALL_ARGS, p->n_calls - 1, "}");
            event(p, DS4_DSML_CALL_END, p->n_calls - 1);
            p->bstate = B_INV_WS;
            return;
        }
        if (t == TAG_BAD || !start_param(p)) malformed(p);
        return;
    }
    case B_VALUE: {
        if (!p->n_vtail && c != '<') { value_bytes(p, (const char *)&c, 1); return; }
        p->vtail[p->n_vtail++] = (char)c;
        size_t len = strlen(p->t_par_end);
        if (p->n_vtail <= len && memcmp(p->vtail, p->t_par_end, p->n_vtail) == 0) {
            if (p->n_vtail == len) { p->n_vtail = 0; end_value(p); }
            return;
        }
        char t[sizeof p->vtail];
        size_t n = p->n_vtail;
        memcpy(t, p->vtail, n);
        p->n_vtail = 0;
        value_bytes(p, t, 1);
        for (size_t k = 1; k < n; k++) process_byte(p, (unsigned char)t[k], false);
        return;
    }
    case B_AFTER: {
        if (!p->n_vtail && is_ws(c)) return;
        p->vtail[p->n_vtail++] = (char)c;
        size_t len = strlen(CHAT_EOS);
        if (p->n_vtail <= len && memcmp(p->vtail, CHAT_EOS, p->n_vtail) == 0) {
            if (p->n_vtail == len) p->bstate = B_AFTER_EOS;
            return;
        }
        malformed(p);
        return;
    }
    case B_AFTER_EOS:
        malformed(p);
        return;
    }
}

static void process_byte(ds4_dsml_parser *p, unsigned char c, bool fresh) {
    switch (p->mode) {
    case M_THINK_OPEN: think_open_byte(p, c); return;
    case M_REASON:
    case M_CONTENT:
    case M_PLAIN: text_byte(p, c); return;
    case M_BLOCK:
        if (fresh) chat_buf_addc(&p->raw, (char)c);
        block_byte(p, c);
        return;
    default: return;
    }
}

/* ---- Public API ---------------------------------------------------------------------------- */

ds4_status ds4_dsml_parser_create(ds4_dsml_parser **out, const ds4_dsml_opts *opts,
                                  ds4_error *err) {
    if (!out || !opts) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "dsml: NULL argument");
    ds4_dsml_parser *p = calloc(1, sizeof *p);
    if (!p) return ds4_seterr(err, DS4_ERR_NOMEM, "dsml: out of memory");
    p->o = *opts;
    p->mode = opts->thinking ? M_THINK_OPEN : M_CONTENT;
    for (int f = 0; f < DSML_N_FAMILIES; f++)
        snprintf(p->t_starts[f], sizeof p->t_starts[f], "<%stool_calls>", dsml_family_prefix[f]);
    *out = p;
    return DS4_OK;
}

void ds4_dsml_parser_free(ds4_dsml_parser *p) {
    if (!p) return;
    drop_calls(p);
    free(p->calls);
    chat_buf *bufs[] = {&p->ws, &p->pend, &p->scratch, &p->reasoning, &p->content, &p->dsml,
                        &p->raw, &p->tag, &p->val, &p->keys};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) chat_buf_free(bufs[i]);
    free(p);
}

static bool any_oom(const ds4_dsml_parser *p) {
    bool oom = p->ws.oom || p->pend.oom || p->scratch.oom || p->reasoning.oom ||
               p->content.oom || p->dsml.oom || p->raw.oom || p->tag.oom || p->val.oom ||
               p->keys.oom;
    for (size_t i = 0; i < p->n_calls; i++) oom |= p->calls[i].name.oom || p->calls[i].args.oom;
    return oom;
}

static ds4_status sticky(ds4_dsml_parser *p, ds4_error *err) {
    if (p->st == DS4_OK && any_oom(p)) fail(p, DS4_ERR_NOMEM, "out of memory");
    if (p->st == DS4_OK) return DS4_OK;
    if (err) *err = p->st_err;
    return p->st;
}

ds4_status ds4_dsml_feed(ds4_dsml_parser *p, const char *text, size_t text_bytes,
                         ds4_error *err) {
    if (!p || (text_bytes && !text)) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "dsml: NULL argument");
    if (p->st != DS4_OK) return sticky(p, err);
    if (p->mode == M_DONE) return ds4_seterr(err, DS4_ERR_STATE, "dsml: feed after finish");
    const unsigned char *u = (const unsigned char *)text;
    for (size_t i = 0; i < text_bytes && p->st == DS4_OK;) {
        /* Fast paths over runs that cannot hold a marker; same effect as byte by byte. */
        const unsigned char *lt = memchr(u + i, '<', text_bytes - i);
        size_t j = lt ? (size_t)(lt - u) : text_bytes;
        if (j > i && p->mode == M_BLOCK && p->bstate == B_VALUE && !p->n_vtail) {
            chat_buf_add(&p->raw, text + i, j - i);
            value_bytes(p, text + i, j - i);
            i = j;
            continue;
        }
        if (j > i && (p->mode == M_REASON || p->mode == M_PLAIN ||
                      (p->mode == M_CONTENT && !p->o.tools)) &&
            !p->n_tail && !p->eos_held) {
            emit(p, text_kind(p), 0, text + i, j - i);
            i = j;
            continue;
        }
        if (j > i && p->mode == M_CONTENT && !p->n_tail && !p->eos_held) {
            /* Content that may precede a tool block: trailing whitespace stays held. */
            size_t k = j;
            while (k > i && is_ws(u[k - 1])) k--;
            if (k > i) {
                release_ws(p);
                emit(p, DS4_DSML_CONTENT, 0, text + i, k - i);
            }
            chat_buf_add(&p->ws, text + k, j - k);
            i = j;
            continue;
        }
        process_byte(p, u[i], true);
        i++;
    }
    flush(p, true);
    return sticky(p, err);
}

static char *take_or_empty(chat_buf *b, size_t *n) {
    return chat_buf_take(b, n);
}

ds4_status ds4_dsml_finish(ds4_dsml_parser *p, ds4_parsed *out, ds4_error *err) {
    if (!p || !out) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "dsml: NULL argument");
    memset(out, 0, sizeof *out);
    if (p->st != DS4_OK) return sticky(p, err);
    if (p->mode == M_DONE) return ds4_seterr(err, DS4_ERR_STATE, "dsml: finish called twice");
    if (p->mode == M_BLOCK && !(p->bstate == B_AFTER && !p->n_vtail) && p->bstate != B_AFTER_EOS)
        malformed(p); /* end of text inside the block (or a partial EOS after it) */
    if (p->mode != M_BLOCK) {
        int kind = text_kind(p);
        if (p->eos_held) p->n_tail = 0; /* a final EOS ends the turn (§8 step 2) */
        release_ws(p);
        emit(p, kind, 0, p->tail, p->n_tail);
        p->n_tail = 0;
        p->eos_held = false;
    }
    flush(p, false);
    p->mode = M_DONE;
    ds4_status st = sticky(p, err);
    if (st != DS4_OK) return st;
    out->reasoning = take_or_empty(&p->reasoning, &out->reasoning_bytes);
    out->content = take_or_empty(&p->content, &out->content_bytes);
    out->dsml = take_or_empty(&p->dsml, &out->dsml_bytes);
    out->malformed_dsml = p->malformed;
    if (p->n_calls) {
        out->calls = calloc(p->n_calls, sizeof *out->calls);
        if (!out->calls) goto out_nomem;
        out->n_calls = p->n_calls;
        for (size_t i = 0; i < p->n_calls; i++) {
            pcall *c = &p->calls[i];
            out->calls[i].name = chat_buf_take(&c->name, NULL);
            out->calls[i].arguments = chat_buf_take(&c->args, NULL);
            out->calls[i].id = c->has_id ? strdup(c->id) : NULL;
            if (!out->calls[i].name || !out->calls[i].arguments || (c->has_id && !out->calls[i].id))
                goto out_nomem;
        }
    }
    if (!out->reasoning || !out->content || !out->dsml) goto out_nomem;
    return DS4_OK;
out_nomem:
    ds4_parsed_clear(out);
    return ds4_seterr(err, DS4_ERR_NOMEM, "dsml: out of memory");
}
