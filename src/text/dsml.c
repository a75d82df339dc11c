/*
 * text/dsml.c — canonical DSML tool-call rendering for history (CHAT_ENCODING §6.1, the
 * official layout), the at-once completion parser (a thin wrapper over dsml_stream.c, so the
 * two can never disagree), and freeing parse results. Does not decide when a turn renders its
 * calls (chat.c does).
 */
#include "text/dsml.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"

const char *const dsml_family_prefix[DSML_N_FAMILIES] = {CHAT_DSML, "DSML｜", ""};

/* One parameter: string values raw, everything else json.dumps'ed (§6.1). */
static void render_param(chat_buf *b, const char *key, const json_t *v, const char *raw) {
    chat_buf_adds(b, "<" CHAT_DSML "parameter name=\"");
    chat_buf_adds_lit(b, key);
    chat_buf_adds(b, raw || json_is_string(v) ? "\" string=\"true\">" : "\" string=\"false\">");
    /* Names and values of history calls come from the client: literal text (chat_buf_lit_*). */
    chat_buf_lit_begin(b);
    if (raw)
        chat_buf_adds(b, raw);
    else if (json_is_string(v))
        chat_buf_add(b, json_string_value(v), json_string_length(v));
    else
        chat_json_dumps(b, v, false);
    chat_buf_lit_end(b);
    chat_buf_adds(b, "</" CHAT_DSML "parameter>");
}

ds4_status dsml_render(chat_buf *b, const chat_call *calls, size_t n_calls, ds4_error *err) {
    if (!n_calls) return DS4_OK;
    chat_buf_adds(b, "\n\n<" CHAT_DSML "tool_calls>\n");
    for (size_t i = 0; i < n_calls; i++) {
        if (i) chat_buf_addc(b, '\n');
        chat_buf_adds(b, "<" CHAT_DSML "invoke name=\"");
        chat_buf_adds_lit(b, calls[i].name);
        chat_buf_adds(b, "\">\n");
        const char *args = calls[i].args ? calls[i].args : "";
        json_t *obj = json_loads(args, JSON_DECODE_ANY, NULL);
        if (json_is_object(obj)) {
            const char *key;
            json_t *v;
            bool first = true;
            json_object_foreach(obj, key, v) {
                if (!first) chat_buf_addc(b, '\n');
                first = false;
                render_param(b, key, v, NULL);
            }
        } else {
            /* §6.1: arguments that are not a JSON object -> one raw "arguments" string. */
            render_param(b, "arguments", NULL, args);
        }
        json_decref(obj);
        chat_buf_adds(b, "\n</" CHAT_DSML "invoke>");
    }
    chat_buf_adds(b, "\n</" CHAT_DSML "tool_calls>");
    return chat_buf_status(b, "dsml render", err);
}

ds4_status ds4_dsml_render_calls(const ds4_tool_call *calls, size_t n_calls, char **out,
                                 size_t *out_bytes, ds4_error *err) {
    if (!out || (n_calls && !calls))
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "dsml render: NULL argument");
    *out = NULL;
    chat_call *cc = n_calls ? calloc(n_calls, sizeof *cc) : NULL;
    if (n_calls && !cc) return ds4_seterr(err, DS4_ERR_NOMEM, "dsml render: out of memory");
    for (size_t i = 0; i < n_calls; i++) {
        if (!calls[i].name) {
            free(cc);
            return ds4_seterr(err, DS4_ERR_INVALID_ARG, "dsml render: calls[%zu].name is NULL", i);
        }
        /* Borrowed: dsml_render only reads them. */
        cc[i].id = (char *)calls[i].id;
        cc[i].name = (char *)calls[i].name;
        cc[i].args = (char *)calls[i].arguments;
    }
    chat_buf b = {0};
    ds4_status st = dsml_render(&b, cc, n_calls, err);
    free(cc);
    if (st != DS4_OK) { chat_buf_free(&b); return st; }
    *out = chat_buf_take(&b, out_bytes);
    return *out ? DS4_OK : ds4_seterr(err, DS4_ERR_NOMEM, "dsml render: out of memory");
}

void ds4_parsed_clear(ds4_parsed *p) {
    if (!p) return;
    free(p->reasoning);
    free(p->content);
    free(p->dsml);
    for (size_t i = 0; i < p->n_calls; i++) {
        free(p->calls[i].id);
        free(p->calls[i].name);
        free(p->calls[i].arguments);
    }
    free(p->calls);
    memset(p, 0, sizeof *p);
}

ds4_status ds4_dsml_parse(const char *text, size_t text_bytes, const ds4_dsml_opts *opts,
                          ds4_parsed *out, ds4_error *err) {
    if (!out || (text_bytes && !text))
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "dsml parse: NULL argument");
    memset(out, 0, sizeof *out);
    ds4_dsml_parser *p;
    ds4_status st = ds4_dsml_parser_create(&p, opts, err);
    if (st != DS4_OK) return st;
    st = ds4_dsml_feed(p, text, text_bytes, err);
    if (st == DS4_OK) st = ds4_dsml_finish(p, out, err);
    ds4_dsml_parser_free(p);
    return st;
}
