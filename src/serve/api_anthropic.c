/*
 * serve/api_anthropic.c — parses Anthropic Messages bodies (POST /v1/messages and
 * /v1/messages/count_tokens) into a srv_request (SERVER_CLI §3.5). Owns block mapping and
 * validation; must not format responses (fmt_anthropic.c) or render prompts.
 *
 * tool_result blocks become SRV_ROLE_TOOL messages (the renderer folds consecutive tool
 * messages into one user turn, CHAT_ENCODING §6.2) instead of being pasted into user text
 * here, so escaping stays the renderer's single job.
 */
#include "serve/request.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

static ds4_status oom(srv_reqerr *rerr) { return srv_reqerr_set(rerr, 500, NULL, "out of memory"); }

static bool append_text(char **dst, const char *s, size_t n, bool newline_sep) {
    size_t old = strlen(*dst);
    bool sep = newline_sep && old > 0 && (*dst)[old - 1] != '\n';
    char *p = realloc(*dst, old + n + (sep ? 1 : 0) + 1);
    if (!p) return false;
    if (sep) p[old++] = '\n';
    memcpy(p + old, s, n);
    p[old + n] = '\0';
    *dst = p;
    return true;
}

/* system: string | array of strings / {"text": ...}; parts starting with x-anthropic- are client
 * billing headers and dropped (§3.5). */
static ds4_status parse_system(json_t *sys, srv_request *r, srv_reqerr *rerr) {
    if (!sys || json_is_null(sys)) return DS4_OK;
    char *text = strdup("");
    if (!text) return oom(rerr);
    if (json_is_string(sys)) {
        if (!append_text(&text, json_string_value(sys), json_string_length(sys), false)) goto out_oom;
    } else if (json_is_array(sys)) {
        size_t i;
        json_t *p;
        json_array_foreach(sys, i, p) {
            json_t *t = json_is_object(p) ? json_object_get(p, "text") : p;
            if (!t || !json_is_string(t)) {
                free(text);
                return srv_reqerr_set(rerr, 400, "system", "'system[%zu]' must be a string or a text block", i);
            }
            const char *s = json_string_value(t);
            if (strncmp(s, "x-anthropic-", 12) == 0) continue;
            if (!append_text(&text, s, json_string_length(t), true)) goto out_oom;
        }
    } else {
        free(text);
        return srv_reqerr_set(rerr, 400, "system", "'system' must be a string or an array");
    }
    if (*text) {
        srv_message *m = srv_request_add_msg(r, SRV_ROLE_SYSTEM);
        if (!m) goto out_oom;
        free(m->content);
        m->content = text;
        return DS4_OK;
    }
    free(text);
    return DS4_OK;
out_oom:
    free(text);
    return oom(rerr);
}

static ds4_status parse_tools(json_t *root, srv_request *r, srv_reqerr *rerr) {
    json_t *tools;
    ds4_status st = srv_get_tools(root, &tools, rerr);
    if (st || !tools) return st;
    size_t i;
    json_t *tool;
    json_array_foreach(tools, i, tool) {
        json_t *name = json_is_object(tool) ? json_object_get(tool, "name") : NULL;
        if (!name || !json_is_string(name) || json_string_length(name) == 0)
            return srv_reqerr_set(rerr, 400, "tools", "'tools[%zu]' must be an object with a name", i);
        /* Kept in its own {name, description, input_schema} shape: the chat encoder turns it into
         * the function object of the official template (CHAT_ENCODING §5) and drops the rest
         * (cache_control, type). A tool without input_schema becomes a bare {name, description}
         * function, so Anthropic-only keys never reach the prompt. */
        json_t *o;
        if (json_object_get(tool, "input_schema")) {
            o = json_deep_copy(tool);
        } else if ((o = json_object())) {
            json_object_set(o, "name", name);
            json_t *d = json_object_get(tool, "description");
            if (d) json_object_set(o, "description", d);
        }
        if (!o) return oom(rerr);
        bool ok = srv_request_add_tool_json(r, o);
        json_decref(o);
        if (!ok) return oom(rerr);
    }
    json_t *choice = json_object_get(root, "tool_choice");
    bool none = false;
    if (choice && !json_is_null(choice)) {
        json_t *ty = json_is_object(choice) ? json_object_get(choice, "type") : NULL;
        if (!ty || !json_is_string(ty))
            return srv_reqerr_set(rerr, 400, "tool_choice", "'tool_choice' must be an object with a type");
        none = strcmp(json_string_value(ty), "none") == 0;
    }
    r->tools_active = r->n_tools > 0 && !none;
    return DS4_OK;
}

static ds4_status parse_result_text(json_t *c, char **out, srv_reqerr *rerr, size_t i, size_t j) {
    bool bad = false;
    *out = srv_content_text(c, &bad);
    if (bad) return srv_reqerr_set(rerr, 400, "messages", "'messages[%zu].content[%zu].content' must be a string or an array of blocks", i, j);
    return *out ? DS4_OK : oom(rerr);
}

static ds4_status parse_blocks(json_t *content, size_t i, srv_role role, srv_request *r, srv_reqerr *rerr) {
    srv_message *cur = NULL; /* the open user/assistant message that text goes to */
    size_t j;
    json_t *b;
    json_array_foreach(content, j, b) {
        if (json_is_string(b)) b = NULL; /* treated below as a text block */
        json_t *raw = json_array_get(content, j);
        const char *type = "text";
        if (b) {
            if (!json_is_object(b))
                return srv_reqerr_set(rerr, 400, "messages", "'messages[%zu].content[%zu]' must be an object", i, j);
            json_t *ty = json_object_get(b, "type");
            if (!ty || !json_is_string(ty))
                return srv_reqerr_set(rerr, 400, "messages", "'messages[%zu].content[%zu].type' must be a string", i, j);
            type = json_string_value(ty);
        }
        if (!strcmp(type, "tool_result")) {
            if (role != SRV_ROLE_USER)
                return srv_reqerr_set(rerr, 400, "messages", "'messages[%zu]': tool_result only in user messages", i);
            json_t *id = json_object_get(b, "tool_use_id");
            if (!id || !json_is_string(id))
                return srv_reqerr_set(rerr, 400, "messages", "'messages[%zu].content[%zu].tool_use_id' must be a string", i, j);
            srv_message *m = srv_request_add_msg(r, SRV_ROLE_TOOL);
            if (!m) return oom(rerr);
            free(m->content);
            m->content = NULL;
            ds4_status st = parse_result_text(json_object_get(b, "content"), &m->content, rerr, i, j);
            if (st) return st;
            if (!(m->tool_call_id = strdup(json_string_value(id)))) return oom(rerr);
            cur = NULL; /* text after results starts a new user message */
            continue;
        }
        if (!cur) {
            if (!(cur = srv_request_add_msg(r, role))) return oom(rerr);
        }
        if (!strcmp(type, "text")) {
            json_t *t = b ? json_object_get(b, "text") : raw;
            if (!t || !json_is_string(t))
                return srv_reqerr_set(rerr, 400, "messages", "'messages[%zu].content[%zu].text' must be a string", i, j);
            if (!append_text(&cur->content, json_string_value(t), json_string_length(t), false)) return oom(rerr);
        } else if (!strcmp(type, "thinking")) {
            json_t *t = json_object_get(b, "thinking");
            if (!t || !json_is_string(t))
                return srv_reqerr_set(rerr, 400, "messages", "'messages[%zu].content[%zu].thinking' must be a string", i, j);
            if (!cur->reasoning && !(cur->reasoning = strdup(""))) return oom(rerr);
            if (!append_text(&cur->reasoning, json_string_value(t), json_string_length(t), false)) return oom(rerr);
        } else if (!strcmp(type, "tool_use")) {
            if (role != SRV_ROLE_ASSISTANT)
                return srv_reqerr_set(rerr, 400, "messages", "'messages[%zu]': tool_use only in assistant messages", i);
            json_t *id = json_object_get(b, "id"), *name = json_object_get(b, "name");
            if (!id || !json_is_string(id) || !name || !json_is_string(name))
                return srv_reqerr_set(rerr, 400, "messages", "'messages[%zu].content[%zu]' tool_use needs string id and name", i, j);
            json_t *input = json_object_get(b, "input");
            char *args = input ? srv_json_compact(input) : strdup("{}");
            if (!args) return oom(rerr);
            bool ok = srv_message_add_call(cur, json_string_value(id), json_string_value(name), args);
            free(args);
            if (!ok) return oom(rerr);
        }
        /* redacted_thinking, image, document, ...: no text to render (§3.5) */
    }
    return DS4_OK;
}

ds4_status srv_parse_anthropic(json_t *root, srv_request *r, srv_think_ctl *t, srv_reqerr *rerr) {
    ds4_status st;
    if ((st = parse_system(json_object_get(root, "system"), r, rerr))) return st;
    json_t *msgs = json_object_get(root, "messages");
    if (!msgs) return srv_reqerr_set(rerr, 400, "messages", "missing 'messages'");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return srv_reqerr_set(rerr, 400, "messages", "'messages' must be a non-empty array");
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        if (!json_is_object(m)) return srv_reqerr_set(rerr, 400, "messages", "'messages[%zu]' must be an object", i);
        json_t *role = json_object_get(m, "role");
        srv_role rl;
        const char *rs = role && json_is_string(role) ? json_string_value(role) : "";
        if (!strcmp(rs, "user")) rl = SRV_ROLE_USER;
        else if (!strcmp(rs, "assistant")) rl = SRV_ROLE_ASSISTANT;
        else return srv_reqerr_set(rerr, 400, "messages", "'messages[%zu].role' must be \"user\" or \"assistant\"", i);
        json_t *c = json_object_get(m, "content");
        if (!c || json_is_null(c) || json_is_string(c)) {
            srv_message *msg = srv_request_add_msg(r, rl);
            if (!msg) return oom(rerr);
            if (c && json_is_string(c)) {
                free(msg->content);
                if (!(msg->content = strndup(json_string_value(c), json_string_length(c)))) return oom(rerr);
            }
        } else if (json_is_array(c)) {
            if ((st = parse_blocks(c, i, rl, r, rerr))) return st;
        } else {
            return srv_reqerr_set(rerr, 400, "messages", "'messages[%zu].content' must be a string or an array", i);
        }
    }
    if ((st = parse_tools(root, r, rerr))) return st;
    json_t *mt = json_object_get(root, "max_tokens");
    if (mt) {
        long long v = 0;
        if ((st = srv_get_int(root, "max_tokens", 0, INT_MAX, &v, NULL, rerr))) return st;
        r->max_tokens = (int)v;
    }
    if ((st = srv_get_stop(json_object_get(root, "stop_sequences"), "stop_sequences", r, rerr))) return st;
    if ((st = srv_get_bool(root, "stream", &r->stream, rerr))) return st;
    json_t *v = json_object_get(root, "thinking");
    if (v && (st = srv_think_thinking(t, v, rerr))) return st;
    json_t *oc = json_object_get(root, "output_config");
    if (oc && json_is_object(oc) && (st = srv_think_effort(t, json_object_get(oc, "effort"), "output_config.effort", rerr)))
        return st;
    return srv_think_effort(t, json_object_get(root, "reasoning_effort"), "reasoning_effort", rerr);
}
