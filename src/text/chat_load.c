/*
 * text/chat_load.c — builds a ds4_chat from JSON in the official test-input shape
 * (CHAT_ENCODING §10: a message list, or an object with "messages" and top-level "tools").
 * Only maps JSON onto ds4_chat_add; every rendering rule lives in chat.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "text/chat.h"

/* A content value as text: strings as is; a list of parts is flattened like the official
 * tool-result rendering (text parts joined with "\n\n", others "[Unsupported <type>]");
 * other values are json.dumps'ed. *tmp receives an allocation the caller frees. */
static ds4_status content_text(const json_t *v, const char *what, const char **text, char **tmp,
                               ds4_error *err) {
    *text = NULL;
    *tmp = NULL;
    if (!v || json_is_null(v)) return DS4_OK;
    if (json_is_string(v)) {
        *text = json_string_value(v);
        return DS4_OK;
    }
    chat_buf b = {0};
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            const json_t *part = json_array_get(v, i);
            const json_t *type = json_object_get(part, "type");
            const char *t = json_is_string(type) ? json_string_value(type) : "block";
            if (i) chat_buf_adds(&b, "\n\n");
            if (strcmp(t, "text") == 0) {
                const json_t *tx = json_object_get(part, "text");
                if (!json_is_string(tx)) {
                    chat_buf_free(&b);
                    return ds4_seterr(err, DS4_ERR_FORMAT, "%s[%zu].text: expected a string",
                                      what, i);
                }
                chat_buf_adds(&b, json_string_value(tx));
            } else {
                chat_buf_adds(&b, "[Unsupported ");
                chat_buf_adds(&b, t);
                chat_buf_adds(&b, "]");
            }
        }
    } else {
        chat_json_dumps(&b, v, false);
    }
    ds4_status st = chat_buf_status(&b, what, err);
    if (st != DS4_OK) { chat_buf_free(&b); return st; }
    *tmp = chat_buf_take(&b, NULL);
    *text = *tmp;
    return *tmp ? DS4_OK : ds4_seterr(err, DS4_ERR_NOMEM, "%s: out of memory", what);
}

static ds4_status opt_string(const json_t *obj, const char *key, const char *what,
                             const char **out, ds4_error *err) {
    const json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v || json_is_null(v)) return DS4_OK;
    if (!json_is_string(v))
        return ds4_seterr(err, DS4_ERR_FORMAT, "%s.%s: expected a string", what, key);
    *out = json_string_value(v);
    return DS4_OK;
}

static bool parse_role(const char *s, ds4_chat_role *r) {
    static const struct { const char *name; ds4_chat_role role; } roles[] = {
        {"system", DS4_ROLE_SYSTEM}, {"user", DS4_ROLE_USER},
        {"assistant", DS4_ROLE_ASSISTANT}, {"tool", DS4_ROLE_TOOL},
        {"developer", DS4_ROLE_DEVELOPER}, {"latest_reminder", DS4_ROLE_LATEST_REMINDER},
    };
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
        if (strcmp(s, roles[i].name) == 0) { *r = roles[i].role; return true; }
    return false;
}

/* Tool calls: OpenAI {id, type, function:{name, arguments}} or flat {id?, name, arguments};
 * arguments given as a JSON value instead of text are serialized compactly. */
static ds4_status load_calls(const json_t *arr, const char *what, ds4_tool_call **calls,
                             char ***args_tmp, size_t *n, ds4_error *err) {
    *calls = NULL;
    *args_tmp = NULL;
    *n = 0;
    if (!arr || json_is_null(arr)) return DS4_OK;
    if (!json_is_array(arr))
        return ds4_seterr(err, DS4_ERR_FORMAT, "%s.tool_calls: expected an array", what);
    size_t count = json_array_size(arr);
    if (!count) return DS4_OK;
    *calls = calloc(count, sizeof **calls);
    *args_tmp = calloc(count, sizeof **args_tmp);
    if (!*calls || !*args_tmp)
        return ds4_seterr(err, DS4_ERR_NOMEM, "%s.tool_calls: out of memory", what);
    *n = count;
    for (size_t i = 0; i < count; i++) {
        const json_t *c = json_array_get(arr, i);
        const json_t *fn = json_object_get(c, "function");
        if (!json_is_object(c))
            return ds4_seterr(err, DS4_ERR_FORMAT, "%s.tool_calls[%zu]: expected an object",
                              what, i);
        if (!fn) fn = c;
        const json_t *id = json_object_get(c, "id");
        const json_t *name = json_object_get(fn, "name");
        const json_t *args = json_object_get(fn, "arguments");
        if (!json_is_string(name))
            return ds4_seterr(err, DS4_ERR_FORMAT, "%s.tool_calls[%zu].function.name: expected "
                              "a string", what, i);
        if (id && !json_is_null(id) && !json_is_string(id))
            return ds4_seterr(err, DS4_ERR_FORMAT, "%s.tool_calls[%zu].id: expected a string",
                              what, i);
        (*calls)[i].id = json_is_string(id) ? json_string_value(id) : NULL;
        (*calls)[i].name = json_string_value(name);
        if (json_is_string(args)) {
            (*calls)[i].arguments = json_string_value(args);
        } else {
            (*args_tmp)[i] = args ? json_dumps(args, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("{}");
            if (!(*args_tmp)[i])
                return ds4_seterr(err, DS4_ERR_NOMEM, "%s.tool_calls: out of memory", what);
            (*calls)[i].arguments = (*args_tmp)[i];
        }
    }
    return DS4_OK;
}

static ds4_status load_message(ds4_chat *chat, const json_t *jm, size_t idx, ds4_error *err) {
    char what[40];
    snprintf(what, sizeof what, "messages[%zu]", idx);
    if (!json_is_object(jm))
        return ds4_seterr(err, DS4_ERR_FORMAT, "%s: expected an object", what);
    ds4_chat_msg m = {0};
    const char *role = NULL;
    char *content_tmp = NULL, *reasoning_tmp = NULL, *tools_tmp = NULL, *rf_tmp = NULL;
    char **args_tmp = NULL;
    ds4_tool_call *calls = NULL;
    size_t n_calls = 0;
    ds4_status st = opt_string(jm, "role", what, &role, err);
    if (st != DS4_OK) goto out;
    if (!role) { st = ds4_seterr(err, DS4_ERR_FORMAT, "%s.role: missing", what); goto out; }
    if (!parse_role(role, &m.role)) {
        st = ds4_seterr(err, DS4_ERR_FORMAT, "%s.role: unsupported role '%s'", what, role);
        goto out;
    }
    char sub[64];
    snprintf(sub, sizeof sub, "%s.content", what);
    if ((st = content_text(json_object_get(jm, "content"), sub, &m.content, &content_tmp, err)))
        goto out;
    snprintf(sub, sizeof sub, "%s.reasoning_content", what);
    if ((st = content_text(json_object_get(jm, "reasoning_content"), sub, &m.reasoning,
                           &reasoning_tmp, err)))
        goto out;
    if ((st = opt_string(jm, "tool_call_id", what, &m.tool_call_id, err))) goto out;
    if ((st = opt_string(jm, "task", what, &m.task, err))) goto out;
    const json_t *wo = json_object_get(jm, "wo_eos");
    m.wo_eos = json_is_true(wo) || (json_is_integer(wo) && json_integer_value(wo) != 0);
    if ((st = load_calls(json_object_get(jm, "tool_calls"), what, &calls, &args_tmp, &n_calls,
                         err)))
        goto out;
    m.tool_calls = calls;
    m.n_tool_calls = n_calls;
    const json_t *tools = json_object_get(jm, "tools");
    const json_t *rf = json_object_get(jm, "response_format");
    if (tools && !json_is_null(tools)) {
        if (!(tools_tmp = json_dumps(tools, JSON_ENCODE_ANY))) {
            st = ds4_seterr(err, DS4_ERR_NOMEM, "%s.tools: out of memory", what);
            goto out;
        }
        m.tools_json = tools_tmp;
    }
    if (rf && !json_is_null(rf)) {
        if (!(rf_tmp = json_dumps(rf, JSON_ENCODE_ANY))) {
            st = ds4_seterr(err, DS4_ERR_NOMEM, "%s.response_format: out of memory", what);
            goto out;
        }
        m.response_format_json = rf_tmp;
    }
    st = ds4_chat_add(chat, &m, err);
    if (st != DS4_OK) ds4_err_prefix(err, "%s", what);
out:
    for (size_t i = 0; args_tmp && i < n_calls; i++) free(args_tmp[i]);
    free(args_tmp);
    free(calls);
    free(content_tmp);
    free(reasoning_tmp);
    free(tools_tmp);
    free(rf_tmp);
    return st;
}

static ds4_status load_thinking(const json_t *root, ds4_thinking *t, ds4_error *err) {
    const char *mode = NULL, *effort = NULL, *thinking = NULL;
    ds4_status st;
    if ((st = opt_string(root, "thinking_mode", "conversation", &mode, err))) return st;
    if ((st = opt_string(root, "reasoning_effort", "conversation", &effort, err))) return st;
    if ((st = opt_string(root, "thinking", "conversation", &thinking, err))) return st;
    if (mode) {
        if (strcmp(mode, "chat") == 0) *t = DS4_THINKING_NONE;
        else if (strcmp(mode, "thinking") == 0) *t = DS4_THINKING_HIGH;
        else return ds4_seterr(err, DS4_ERR_FORMAT, "thinking_mode: expected \"thinking\" or "
                               "\"chat\", got \"%s\"", mode);
    }
    if (effort && *t != DS4_THINKING_NONE) {
        if (strcmp(effort, "max") == 0) *t = DS4_THINKING_MAX;
        else if (strcmp(effort, "high") != 0)
            return ds4_seterr(err, DS4_ERR_FORMAT, "reasoning_effort: expected \"max\", \"high\" "
                              "or null, got \"%s\"", effort);
    }
    if (thinking) {
        if (strcmp(thinking, "none") == 0) *t = DS4_THINKING_NONE;
        else if (strcmp(thinking, "high") == 0) *t = DS4_THINKING_HIGH;
        else if (strcmp(thinking, "max") == 0) *t = DS4_THINKING_MAX;
        else return ds4_seterr(err, DS4_ERR_FORMAT, "thinking: expected none, high or max, got "
                               "\"%s\"", thinking);
    }
    return DS4_OK;
}

ds4_status ds4_chat_from_json(ds4_chat **out, const char *json, size_t json_bytes,
                              ds4_error *err) {
    if (!out || !json) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "chat json: NULL argument");
    *out = NULL;
    json_error_t jerr;
    json_t *root = json_loadb(json, json_bytes, JSON_DECODE_ANY, &jerr);
    if (!root)
        return ds4_seterr(err, DS4_ERR_FORMAT, "chat json: line %d column %d: %s", jerr.line,
                          jerr.column, jerr.text);
    ds4_chat *chat = NULL;
    ds4_thinking thinking = DS4_THINKING_HIGH;
    const json_t *msgs = root, *tools = NULL;
    ds4_status st = DS4_OK;
    if (json_is_object(root)) {
        msgs = json_object_get(root, "messages");
        tools = json_object_get(root, "tools");
        if ((st = load_thinking(root, &thinking, err))) goto out_free_root;
    }
    if (!json_is_array(msgs)) {
        st = ds4_seterr(err, DS4_ERR_FORMAT, "chat json: expected an array of messages or an "
                        "object with a \"messages\" array");
        goto out_free_root;
    }
    if ((st = ds4_chat_create(&chat, thinking, err))) goto out_free_root;
    for (size_t i = 0; i < json_array_size(msgs); i++)
        if ((st = load_message(chat, json_array_get(msgs, i), i, err))) goto out_free_chat;
    if (tools && !json_is_null(tools)) {
        char *t = json_dumps(tools, JSON_ENCODE_ANY);
        st = t ? ds4_chat_set_tools(chat, t, err)
               : ds4_seterr(err, DS4_ERR_NOMEM, "tools: out of memory");
        free(t);
        if (st != DS4_OK) goto out_free_chat;
    }
    *out = chat;
    json_decref(root);
    return DS4_OK;
out_free_chat:
    ds4_chat_free(chat);
out_free_root:
    json_decref(root);
    return st;
}
