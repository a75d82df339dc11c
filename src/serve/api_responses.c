/*
 * serve/api_responses.c — parses OpenAI Responses bodies (POST /v1/responses) into a
 * srv_request (SERVER_CLI §3.6). Owns the input-item mapping (messages, reasoning, function
 * calls and their outputs) and validation; must not format responses (fmt_responses.c).
 *
 * Unknown item types are a 400: silently dropping history would desynchronise the prompt from
 * what the client believes the model saw (§3.6).
 */
#include "serve/request.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ds4_status oom(srv_reqerr *rerr) { return srv_reqerr_set(rerr, 500, NULL, "out of memory"); }

static bool append(char **dst, const char *s, size_t n, const char *sep) {
    size_t old = *dst ? strlen(*dst) : 0;
    size_t sl = old && sep ? strlen(sep) : 0;
    char *p = realloc(*dst, old + sl + n + 1);
    if (!p) return false;
    if (!*dst) p[0] = '\0';
    memcpy(p + old, sep ? sep : "", sl);
    memcpy(p + old + sl, s, n);
    p[old + sl + n] = '\0';
    *dst = p;
    return true;
}

/* Message content: string | null | array of text-like parts; anything else is a 400. */
static ds4_status item_text(json_t *c, size_t i, char **out, srv_reqerr *rerr) {
    *out = strdup("");
    if (!*out) return oom(rerr);
    if (!c || json_is_null(c)) return DS4_OK;
    if (json_is_string(c)) return append(out, json_string_value(c), json_string_length(c), NULL) ? DS4_OK : oom(rerr);
    if (!json_is_array(c)) return srv_reqerr_set(rerr, 400, "input", "'input[%zu].content' must be a string or an array", i);
    size_t j;
    json_t *p;
    json_array_foreach(c, j, p) {
        json_t *ty = json_is_object(p) ? json_object_get(p, "type") : NULL;
        const char *t = ty && json_is_string(ty) ? json_string_value(ty) : "";
        if (strcmp(t, "input_text") && strcmp(t, "output_text") && strcmp(t, "text") &&
            strcmp(t, "summary_text") && strcmp(t, "reasoning_text"))
            return srv_reqerr_set(rerr, 400, "input", "'input[%zu].content[%zu]' type '%.32s' is not supported (text parts only)", i, j, t);
        json_t *tx = json_object_get(p, "text");
        if (tx && !json_is_null(tx) && !json_is_string(tx))
            return srv_reqerr_set(rerr, 400, "input", "'input[%zu].content[%zu].text' must be a string", i, j);
        if (tx && json_is_string(tx) && !append(out, json_string_value(tx), json_string_length(tx), NULL)) return oom(rerr);
    }
    return DS4_OK;
}

typedef struct {
    srv_request *r;
    char *pending_reasoning;
} rs_state;

/* Pending reasoning becomes an assistant message of its own when no call/assistant follows. */
static ds4_status flush_reasoning(rs_state *s, srv_reqerr *rerr) {
    if (!s->pending_reasoning) return DS4_OK;
    srv_message *m = srv_request_add_msg(s->r, SRV_ROLE_ASSISTANT);
    if (!m) return oom(rerr);
    m->reasoning = s->pending_reasoning;
    s->pending_reasoning = NULL;
    return DS4_OK;
}

static srv_message *last_assistant(srv_request *r) {
    if (r->n_msgs && r->msgs[r->n_msgs - 1].role == SRV_ROLE_ASSISTANT) return &r->msgs[r->n_msgs - 1];
    return NULL;
}

/* A call joins the last assistant message, or opens one that carries the pending reasoning.
 * Takes args (NULL: out of memory). */
static ds4_status add_call(rs_state *s, const char *id, const char *name, char *args, srv_reqerr *rerr) {
    if (!args) return oom(rerr);
    srv_message *m = last_assistant(s->r);
    if (!m || s->pending_reasoning) {
        if (!(m = srv_request_add_msg(s->r, SRV_ROLE_ASSISTANT))) { free(args); return oom(rerr); }
        m->reasoning = s->pending_reasoning;
        s->pending_reasoning = NULL;
    }
    bool ok = srv_message_add_call(m, id, name, args);
    free(args);
    return ok ? DS4_OK : oom(rerr);
}

/* A tool result message for call_id, after any pending reasoning. Takes text (NULL: out of
 * memory). */
static ds4_status add_tool_result(rs_state *s, char *text, const char *call_id, srv_reqerr *rerr) {
    ds4_status st;
    if (!text) return oom(rerr);
    if ((st = flush_reasoning(s, rerr))) { free(text); return st; }
    srv_message *m = srv_request_add_msg(s->r, SRV_ROLE_TOOL);
    if (!m) { free(text); return oom(rerr); }
    free(m->content);
    m->content = text;
    return (m->tool_call_id = strdup(call_id)) ? DS4_OK : oom(rerr);
}

static ds4_status parse_item(rs_state *s, json_t *it, size_t i, srv_reqerr *rerr) {
    srv_request *r = s->r;
    ds4_status st;
    if (!json_is_object(it)) return srv_reqerr_set(rerr, 400, "input", "'input[%zu]' must be an object", i);
    json_t *status = json_object_get(it, "status");
    if (status && !json_is_null(status) && (!json_is_string(status) || strcmp(json_string_value(status), "completed")))
        return srv_reqerr_set(rerr, 400, "input", "'input[%zu].status' must be \"completed\"", i);
    json_t *ty = json_object_get(it, "type");
    if (ty && !json_is_string(ty)) return srv_reqerr_set(rerr, 400, "input", "'input[%zu].type' must be a string", i);
    const char *type = ty ? json_string_value(ty) : "message";
    if (!strcmp(type, "message")) {
        json_t *role = json_object_get(it, "role");
        const char *rs = role && json_is_string(role) ? json_string_value(role) : "user";
        srv_role rl;
        if (!strcmp(rs, "user")) rl = SRV_ROLE_USER;
        else if (!strcmp(rs, "assistant")) rl = SRV_ROLE_ASSISTANT;
        else if (!strcmp(rs, "system") || !strcmp(rs, "developer")) rl = SRV_ROLE_SYSTEM;
        else return srv_reqerr_set(rerr, 400, "input", "'input[%zu].role' '%.32s' is not supported", i, rs);
        char *text;
        if ((st = item_text(json_object_get(it, "content"), i, &text, rerr))) { free(text); return st; }
        if (rl != SRV_ROLE_ASSISTANT && (st = flush_reasoning(s, rerr))) { free(text); return st; }
        srv_message *m = srv_request_add_msg(r, rl);
        if (!m) { free(text); return oom(rerr); }
        free(m->content);
        m->content = text;
        if (rl == SRV_ROLE_ASSISTANT) { m->reasoning = s->pending_reasoning; s->pending_reasoning = NULL; }
        return DS4_OK;
    }
    if (!strcmp(type, "reasoning")) {
        const char *keys[2] = {"summary", "content"};
        for (int k = 0; k < 2; k++) {
            json_t *arr = json_object_get(it, keys[k]);
            if (!arr || json_is_null(arr)) continue;
            if (!json_is_array(arr)) return srv_reqerr_set(rerr, 400, "input", "'input[%zu].%s' must be an array", i, keys[k]);
            size_t j;
            json_t *p;
            json_array_foreach(arr, j, p) {
                json_t *tx = json_is_object(p) ? json_object_get(p, "text") : NULL;
                if (!tx || !json_is_string(tx)) return srv_reqerr_set(rerr, 400, "input", "'input[%zu].%s[%zu].text' must be a string", i, keys[k], j);
                if (!append(&s->pending_reasoning, json_string_value(tx), json_string_length(tx), "\n")) return oom(rerr);
            }
        }
        if (!s->pending_reasoning && !(s->pending_reasoning = strdup(""))) return oom(rerr);
        return DS4_OK;
    }
    if (!strcmp(type, "function_call") || !strcmp(type, "custom_tool_call")) {
        json_t *id = json_object_get(it, "call_id");
        if (!id) id = json_object_get(it, "id");
        json_t *name = json_object_get(it, "name");
        if (!id || !json_is_string(id) || !name || !json_is_string(name))
            return srv_reqerr_set(rerr, 400, "input", "'input[%zu]' %s needs string call_id and name", i, type);
        json_t *args = json_object_get(it, "arguments");
        if (!args) args = json_object_get(it, "input");
        char *a = !args ? strdup("{}") : json_is_string(args) ? strdup(json_string_value(args)) : srv_json_compact(args);
        return add_call(s, json_string_value(id), json_string_value(name), a, rerr);
    }
    if (!strcmp(type, "function_call_output") || !strcmp(type, "custom_tool_call_output")) {
        json_t *id = json_object_get(it, "call_id");
        if (!id || !json_is_string(id)) return srv_reqerr_set(rerr, 400, "input", "'input[%zu].call_id' must be a string", i);
        json_t *out = json_object_get(it, "output");
        char *text;
        if (out && json_is_array(out)) {
            if ((st = item_text(out, i, &text, rerr))) { free(text); return st; }
        } else if (!out || json_is_null(out)) text = strdup("");
        else if (json_is_string(out)) text = strdup(json_string_value(out));
        else text = srv_json_compact(out);
        return add_tool_result(s, text, json_string_value(id), rerr);
    }
    if (!strcmp(type, "compaction") || !strcmp(type, "context_compaction")) return DS4_OK;
    /* Hosted-tool history (§3.6): a call named after its type, then its output as a tool
     * result, so the model sees what happened instead of a hole in the transcript. */
    static const char *const hosted[] = {"local_shell_call", "web_search_call", "tool_search_call",
                                         "image_generation_call"};
    for (size_t k = 0; k < sizeof hosted / sizeof *hosted; k++) {
        size_t hl = strlen(hosted[k]);
        if (strncmp(type, hosted[k], hl) != 0) continue;
        json_t *id = json_object_get(it, "call_id");
        if (!id) id = json_object_get(it, "id");
        if (id && !json_is_string(id)) return srv_reqerr_set(rerr, 400, "input", "'input[%zu].call_id' must be a string", i);
        const char *ids = id ? json_string_value(id) : "";
        if (type[hl] == '\0') {
            json_t *a = json_object_get(it, "action");
            if (!a) a = json_object_get(it, "arguments");
            if (!a) a = json_object_get(it, "input");
            char *args = !a ? strdup("{}") : json_is_string(a) ? strdup(json_string_value(a)) : srv_json_compact(a);
            char name[32];
            snprintf(name, sizeof name, "%.*s", (int)(hl - 5), hosted[k]); /* drop "_call" */
            return add_call(s, ids, name, args, rerr);
        }
        if (strcmp(type + hl, "_output") == 0) {
            json_t *o = json_object_get(it, "output");
            if (!o) o = json_object_get(it, "result");
            if (!o) o = json_object_get(it, "tools");
            char *text = !o || json_is_null(o) ? strdup("") : json_is_string(o) ? strdup(json_string_value(o)) : srv_json_compact(o);
            return add_tool_result(s, text, ids, rerr);
        }
    }
    return srv_reqerr_set(rerr, 400, "input", "'input[%zu].type' '%.48s' is not supported", i, type);
}

static ds4_status parse_tools(json_t *root, srv_request *r, srv_reqerr *rerr) {
    json_t *tools;
    ds4_status st = srv_get_tools(root, &tools, rerr);
    if (st) return st;
    if (tools) {
        size_t i;
        json_t *t;
        json_array_foreach(tools, i, t) {
            json_t *ty = json_is_object(t) ? json_object_get(t, "type") : NULL;
            const char *type = ty && json_is_string(ty) ? json_string_value(ty) : "function";
            json_t *name = json_is_object(t) ? json_object_get(t, "name") : NULL;
            /* Hosted tools (web_search, file_search, ...) run at OpenAI, not here: skip them
             * rather than fail a client that always sends its whole tool list. */
            if (strcmp(type, "function") && strcmp(type, "custom")) continue;
            if (!name || !json_is_string(name))
                return srv_reqerr_set(rerr, 400, "tools", "'tools[%zu].name' must be a string", i);
            json_t *o = json_object();
            if (!o) return oom(rerr);
            json_object_set(o, "name", name);
            json_t *d = json_object_get(t, "description");
            if (d && json_is_string(d)) json_object_set(o, "description", d);
            json_t *p = json_object_get(t, "parameters");
            if (p && !json_is_null(p)) json_object_set(o, "parameters", p);
            bool ok = srv_request_add_tool_json(r, o);
            json_decref(o);
            if (!ok) return oom(rerr);
        }
    }
    json_t *choice = json_object_get(root, "tool_choice");
    bool none = false;
    if (choice && !json_is_null(choice)) {
        if (!json_is_string(choice))
            return srv_reqerr_set(rerr, 400, "tool_choice", "forced tool_choice not supported");
        const char *c = json_string_value(choice);
        none = strcmp(c, "none") == 0;
        if (!none && strcmp(c, "auto") && strcmp(c, "required"))
            return srv_reqerr_set(rerr, 400, "tool_choice", "tool_choice=%.32s not supported", c);
    }
    r->tools_active = r->n_tools > 0 && !none;
    return DS4_OK;
}

ds4_status srv_parse_responses(json_t *root, srv_request *r, srv_think_ctl *t, srv_reqerr *rerr) {
    ds4_status st;
    const char *nostate[2] = {"previous_response_id", "conversation"};
    for (int k = 0; k < 2; k++) {
        json_t *v = json_object_get(root, nostate[k]);
        if (v && !json_is_null(v))
            return srv_reqerr_set(rerr, 400, nostate[k], "%s is not supported; replay full input instead", nostate[k]);
    }
    json_t *ins = json_object_get(root, "instructions");
    if (ins && !json_is_null(ins)) {
        if (!json_is_string(ins)) return srv_reqerr_set(rerr, 400, "instructions", "'instructions' must be a string");
        if (json_string_length(ins)) {
            srv_message *m = srv_request_add_msg(r, SRV_ROLE_SYSTEM);
            if (!m) return oom(rerr);
            free(m->content);
            if (!(m->content = strdup(json_string_value(ins)))) return oom(rerr);
        }
    }
    json_t *input = json_object_get(root, "input");
    if (!input) return srv_reqerr_set(rerr, 400, "input", "missing 'input'");
    if (json_is_string(input)) {
        srv_message *m = srv_request_add_msg(r, SRV_ROLE_USER);
        if (!m) return oom(rerr);
        free(m->content);
        if (!(m->content = strdup(json_string_value(input)))) return oom(rerr);
    } else if (json_is_array(input)) {
        rs_state s = {r, NULL};
        size_t i;
        json_t *it;
        json_array_foreach(input, i, it) {
            if ((st = parse_item(&s, it, i, rerr))) { free(s.pending_reasoning); return st; }
        }
        if ((st = flush_reasoning(&s, rerr))) { free(s.pending_reasoning); return st; }
    } else {
        return srv_reqerr_set(rerr, 400, "input", "'input' must be a string or an array of items");
    }
    if (r->n_msgs == 0) return srv_reqerr_set(rerr, 400, "input", "'input' is empty");
    if ((st = parse_tools(root, r, rerr))) return st;
    const char *limits[2] = {"max_output_tokens", "max_tokens"};
    for (int k = 0; k < 2; k++) {
        json_t *v = json_object_get(root, limits[k]);
        if (!v || json_is_null(v)) continue;
        long long n = 0;
        if ((st = srv_get_int(root, limits[k], 0, INT_MAX, &n, NULL, rerr))) return st;
        r->max_tokens = (int)n;
    }
    if ((st = srv_get_bool(root, "stream", &r->stream, rerr))) return st;
    json_t *text = json_object_get(root, "text");
    if (text && json_is_object(text) &&
        (st = srv_get_response_format(json_object_get(text, "format"), "text.format", r, rerr)))
        return st;
    r->include_usage = true; /* usage rides on the terminal event */
    json_t *rs = json_object_get(root, "reasoning");
    if (rs && !json_is_null(rs)) {
        if (!json_is_object(rs)) return srv_reqerr_set(rerr, 400, "reasoning", "'reasoning' must be an object");
        json_t *e = json_object_get(rs, "effort");
        if (e && !json_is_null(e)) {
            if ((st = srv_think_effort(t, e, "reasoning.effort", rerr))) return st;
            t->explicit_ = true;
            if (t->effort == 0) t->enabled = false;
        }
        json_t *sum = json_object_get(rs, "summary");
        if (sum && json_is_string(sum)) {
            const char *v = json_string_value(sum);
            r->reasoning_visible = !strcmp(v, "auto") || !strcmp(v, "concise") || !strcmp(v, "detailed");
        }
    }
    return DS4_OK;
}
