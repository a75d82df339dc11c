/*
 * serve/api_openai.c — parses OpenAI Chat Completions and legacy Completions bodies into a
 * srv_request (SERVER_CLI §3.3, §3.4). Owns field mapping and validation for those two APIs;
 * must not format responses (fmt_openai.c) or render prompts (text/chat).
 *
 * Fixes relative to ds4 (SERVER_CLI quirks): unknown roles and malformed tool calls are 400s
 * instead of being dropped silently, so a client bug never turns into a wrong prompt.
 */
#include "serve/request.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

static ds4_status oom(srv_reqerr *rerr) { return srv_reqerr_set(rerr, 500, NULL, "out of memory"); }

/* Shared by chat and completions: thinking controls (§3.2.2). */
static ds4_status parse_think_fields(json_t *root, srv_think_ctl *t, srv_reqerr *rerr) {
    ds4_status st;
    json_t *v = json_object_get(root, "thinking");
    if (v && (st = srv_think_thinking(t, v, rerr))) return st;
    v = json_object_get(root, "think");
    if (v) {
        if (!json_is_boolean(v)) return srv_reqerr_set(rerr, 400, "think", "'think' must be a boolean");
        t->enabled = json_is_true(v);
        t->explicit_ = true;
    }
    return srv_think_effort(t, json_object_get(root, "reasoning_effort"), "reasoning_effort", rerr);
}

static ds4_status parse_limit(json_t *root, const char *key, srv_request *r, srv_reqerr *rerr) {
    long long v = 0;
    bool present = false;
    json_t *j = json_object_get(root, key);
    if (j && json_is_null(j)) return DS4_OK;
    ds4_status st = srv_get_int(root, key, 0, INT_MAX, &v, &present, rerr);
    if (st) return st;
    if (present) r->max_tokens = (int)v;
    return DS4_OK;
}

static ds4_status parse_tools(json_t *root, srv_request *r, srv_reqerr *rerr) {
    json_t *tools;
    ds4_status st = srv_get_tools(root, &tools, rerr);
    if (st || !tools) return st;
    size_t i;
    json_t *tool;
    json_array_foreach(tools, i, tool) {
        if (!json_is_object(tool))
            return srv_reqerr_set(rerr, 400, "tools", "'tools[%zu]' must be an object", i);
        json_t *fn = json_object_get(tool, "function");
        json_t *schema = fn && json_is_object(fn) ? fn : tool;
        json_t *name = json_object_get(schema, "name");
        if (!name || !json_is_string(name) || json_string_length(name) == 0)
            return srv_reqerr_set(rerr, 400, "tools", "'tools[%zu]' has no function name", i);
        if (!srv_request_add_tool_json(r, schema)) return oom(rerr);
    }
    json_t *choice = json_object_get(root, "tool_choice");
    /* "none" disables tools; "auto", "required" and named functions all mean auto (§3.3). */
    bool none = choice && json_is_string(choice) && strcmp(json_string_value(choice), "none") == 0;
    if (choice && !json_is_null(choice) && !json_is_string(choice) && !json_is_object(choice))
        return srv_reqerr_set(rerr, 400, "tool_choice", "'tool_choice' must be a string or an object");
    r->tools_active = r->n_tools > 0 && !none;
    return DS4_OK;
}

static ds4_status parse_role(json_t *m, size_t i, srv_role *out, srv_reqerr *rerr) {
    json_t *role = json_object_get(m, "role");
    if (!role) { *out = SRV_ROLE_USER; return DS4_OK; }
    if (!json_is_string(role))
        return srv_reqerr_set(rerr, 400, "messages", "'messages[%zu].role' must be a string", i);
    const char *s = json_string_value(role);
    if (!strcmp(s, "system") || !strcmp(s, "developer")) *out = SRV_ROLE_SYSTEM;
    else if (!strcmp(s, "user")) *out = SRV_ROLE_USER;
    else if (!strcmp(s, "assistant")) *out = SRV_ROLE_ASSISTANT;
    else if (!strcmp(s, "tool") || !strcmp(s, "function")) *out = SRV_ROLE_TOOL;
    else
        return srv_reqerr_set(rerr, 400, "messages", "'messages[%zu].role' '%.32s' is not one of system, developer, user, assistant, tool", i, s);
    return DS4_OK;
}

static ds4_status parse_calls(json_t *calls, size_t i, srv_message *msg, srv_reqerr *rerr) {
    if (!calls || json_is_null(calls)) return DS4_OK;
    if (!json_is_array(calls))
        return srv_reqerr_set(rerr, 400, "messages", "'messages[%zu].tool_calls' must be an array", i);
    size_t j;
    json_t *c;
    json_array_foreach(calls, j, c) {
        json_t *fn = json_is_object(c) ? json_object_get(c, "function") : NULL;
        json_t *name = fn ? json_object_get(fn, "name") : NULL;
        json_t *args = fn ? json_object_get(fn, "arguments") : NULL;
        json_t *id = json_is_object(c) ? json_object_get(c, "id") : NULL;
        if (!name || !json_is_string(name))
            return srv_reqerr_set(rerr, 400, "messages", "'messages[%zu].tool_calls[%zu].function.name' must be a string", i, j);
        if (id && !json_is_string(id))
            return srv_reqerr_set(rerr, 400, "messages", "'messages[%zu].tool_calls[%zu].id' must be a string", i, j);
        char *argtext = NULL;
        if (!args || json_is_null(args)) argtext = strdup("{}");
        else if (json_is_string(args)) argtext = strdup(json_string_value(args));
        else argtext = srv_json_compact(args);
        if (!argtext) return oom(rerr);
        bool ok = srv_message_add_call(msg, id ? json_string_value(id) : "", json_string_value(name), argtext);
        free(argtext);
        if (!ok) return oom(rerr);
    }
    return DS4_OK;
}

ds4_status srv_parse_chat(json_t *root, srv_request *r, srv_think_ctl *t, srv_reqerr *rerr) {
    ds4_status st;
    json_t *msgs = json_object_get(root, "messages");
    if (!msgs) return srv_reqerr_set(rerr, 400, "messages", "missing 'messages'");
    if (!json_is_array(msgs)) return srv_reqerr_set(rerr, 400, "messages", "'messages' must be an array");
    if (json_array_size(msgs) == 0) return srv_reqerr_set(rerr, 400, "messages", "'messages' is empty");
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        if (!json_is_object(m))
            return srv_reqerr_set(rerr, 400, "messages", "'messages[%zu]' must be an object", i);
        srv_role role = SRV_ROLE_USER;
        if ((st = parse_role(m, i, &role, rerr))) return st;
        srv_message *msg = srv_request_add_msg(r, role);
        if (!msg) return oom(rerr);
        bool bad = false;
        char *content = srv_content_text(json_object_get(m, "content"), &bad);
        if (bad) return srv_reqerr_set(rerr, 400, "messages", "'messages[%zu].content' must be a string, null or an array of parts", i);
        if (!content) return oom(rerr);
        free(msg->content);
        msg->content = content;
        json_t *rc = json_object_get(m, "reasoning_content");
        if (rc && !json_is_null(rc)) {
            msg->reasoning = srv_content_text(rc, &bad);
            if (bad) return srv_reqerr_set(rerr, 400, "messages", "'messages[%zu].reasoning_content' must be a string", i);
            if (!msg->reasoning) return oom(rerr);
        }
        json_t *tcid = json_object_get(m, "tool_call_id");
        if (tcid && !json_is_null(tcid)) {
            if (!json_is_string(tcid))
                return srv_reqerr_set(rerr, 400, "messages", "'messages[%zu].tool_call_id' must be a string", i);
            if (!(msg->tool_call_id = strdup(json_string_value(tcid)))) return oom(rerr);
        }
        if (role == SRV_ROLE_ASSISTANT && (st = parse_calls(json_object_get(m, "tool_calls"), i, msg, rerr)))
            return st;
    }
    if ((st = parse_tools(root, r, rerr))) return st;
    if ((st = parse_limit(root, "max_tokens", r, rerr))) return st;
    if ((st = parse_limit(root, "max_completion_tokens", r, rerr))) return st;
    if ((st = srv_get_stop(json_object_get(root, "stop"), "stop", r, rerr))) return st;
    if ((st = srv_get_stream(root, r, rerr))) return st;
    if ((st = srv_get_bool(root, "logprobs", &r->logprobs, rerr))) return st;
    if ((st = srv_get_response_format(json_object_get(root, "response_format"), "response_format", r, rerr))) return st;
    long long nch = 1;
    json_t *nv = json_object_get(root, "n");
    if (nv && !json_is_null(nv) && (st = srv_get_int(root, "n", 1, 1, &nch, NULL, rerr)))
        return srv_reqerr_set(rerr, 400, "n", "'n' must be 1: one completion per request is supported");
    long long tl = 0;
    json_t *tlv = json_object_get(root, "top_logprobs");
    if (tlv && !json_is_null(tlv)) {
        if ((st = srv_get_int(root, "top_logprobs", 0, 20, &tl, NULL, rerr))) return st;
        r->top_logprobs = (int)tl;
    }
    return parse_think_fields(root, t, rerr);
}

ds4_status srv_parse_completions(json_t *root, srv_request *r, srv_think_ctl *t, srv_reqerr *rerr) {
    ds4_status st;
    json_t *p = json_object_get(root, "prompt");
    if (!p) return srv_reqerr_set(rerr, 400, "prompt", "missing 'prompt'");
    if (json_is_array(p)) {
        if (json_array_size(p) != 1 || !json_is_string(json_array_get(p, 0)))
            return srv_reqerr_set(rerr, 400, "prompt", "'prompt' array must hold exactly one string (batched prompts are not supported)");
        p = json_array_get(p, 0);
    }
    if (!json_is_string(p)) return srv_reqerr_set(rerr, 400, "prompt", "'prompt' must be a string");
    if (!(r->prompt = strndup(json_string_value(p), json_string_length(p)))) return oom(rerr);
    if ((st = parse_limit(root, "max_tokens", r, rerr))) return st;
    if ((st = srv_get_stop(json_object_get(root, "stop"), "stop", r, rerr))) return st;
    if ((st = srv_get_stream(root, r, rerr))) return st;
    json_t *lp = json_object_get(root, "logprobs");
    if (lp && !json_is_null(lp)) {
        long long n = 0;
        if ((st = srv_get_int(root, "logprobs", 0, 20, &n, NULL, rerr))) return st;
        r->logprobs = n > 0;
        r->top_logprobs = (int)n;
    }
    return parse_think_fields(root, t, rerr);
}
