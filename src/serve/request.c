/*
 * serve/request.c — shared request parsing (SERVER_CLI §3.2): depth limit, typed field
 * readers with range checks, thinking resolution, sampling/stop/stream fields, and the
 * dispatcher srv_request_parse. Must not render prompts or call the engine.
 */
#include "serve/request.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

char *srv_strdup0(const char *s) { return strdup(s ? s : ""); }

ds4_status srv_reqerr_set(srv_reqerr *rerr, int status, const char *param, const char *fmt, ...) {
    if (rerr) {
        memset(rerr, 0, sizeof *rerr);
        rerr->http_status = status;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(rerr->message, sizeof rerr->message, fmt, ap);
        va_end(ap);
        if (param) snprintf(rerr->param, sizeof rerr->param, "%s", param);
    }
    return DS4_ERR_INVALID_ARG;
}

size_t srv_json_depth(const char *s, size_t n) {
    size_t depth = 0, max = 0;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = false;
            continue;
        }
        if (c == '"') in_str = true;
        else if (c == '[' || c == '{') { if (++depth > max) max = depth; }
        else if ((c == ']' || c == '}') && depth > 0) depth--;
    }
    return max;
}

void srv_request_free(srv_request *r) {
    if (!r) return;
    free(r->model);
    for (size_t i = 0; i < r->n_msgs; i++) {
        srv_message *m = &r->msgs[i];
        free(m->content);
        free(m->reasoning);
        free(m->tool_call_id);
        for (size_t j = 0; j < m->n_calls; j++) {
            free(m->calls[j].id);
            free(m->calls[j].name);
            free(m->calls[j].arguments);
        }
        free(m->calls);
        free(m->dsml);
    }
    free(r->msgs);
    free(r->prompt);
    free(r->response_format);
    for (size_t i = 0; i < r->n_tools; i++) free(r->tools[i]);
    free(r->tools);
    for (size_t i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->stop);
    memset(r, 0, sizeof *r);
}

srv_message *srv_request_add_msg(srv_request *r, srv_role role) {
    srv_message *p = realloc(r->msgs, (r->n_msgs + 1) * sizeof *p);
    if (!p) return NULL;
    r->msgs = p;
    srv_message *m = &p[r->n_msgs];
    memset(m, 0, sizeof *m);
    m->role = role;
    m->content = strdup("");
    if (!m->content) return NULL;
    r->n_msgs++;
    return m;
}

bool srv_message_add_call(srv_message *m, const char *id, const char *name, const char *args) {
    srv_tool_call *p = realloc(m->calls, (m->n_calls + 1) * sizeof *p);
    if (!p) return false;
    m->calls = p;
    srv_tool_call *c = &p[m->n_calls];
    c->id = srv_strdup0(id);
    c->name = srv_strdup0(name);
    c->arguments = srv_strdup0(args && *args ? args : "{}");
    m->n_calls++;
    return c->id && c->name && c->arguments;
}

bool srv_request_add_tool(srv_request *r, const char *schema) {
    char **p = realloc(r->tools, (r->n_tools + 1) * sizeof *p);
    if (!p) return false;
    r->tools = p;
    p[r->n_tools] = strdup(schema);
    if (!p[r->n_tools]) return false;
    r->n_tools++;
    return true;
}

char *srv_json_compact(json_t *v) {
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
}

ds4_status srv_get_tools(json_t *root, json_t **out, srv_reqerr *rerr) {
    json_t *tools = json_object_get(root, "tools");
    *out = NULL;
    if (!tools || json_is_null(tools)) return DS4_OK;
    if (!json_is_array(tools)) return srv_reqerr_set(rerr, 400, "tools", "'tools' must be an array");
    *out = tools;
    return DS4_OK;
}

bool srv_request_add_tool_json(srv_request *r, json_t *schema) {
    char *text = srv_json_compact(schema);
    if (!text) return false;
    bool ok = srv_request_add_tool(r, text);
    free(text);
    return ok;
}

char *srv_content_text(json_t *v, bool *bad) {
    if (!v || json_is_null(v)) return strdup("");
    if (json_is_string(v)) return strndup(json_string_value(v), json_string_length(v));
    if (!json_is_array(v)) { *bad = true; return NULL; }
    srv_buf b;
    srv_buf_init(&b);
    size_t i;
    json_t *part;
    json_array_foreach(v, i, part) {
        if (json_is_string(part)) {
            srv_buf_append(&b, json_string_value(part), json_string_length(part));
        } else if (json_is_object(part)) {
            json_t *t = json_object_get(part, "text");
            if (t && json_is_string(t)) srv_buf_append(&b, json_string_value(t), json_string_length(t));
            /* images, audio and other parts carry no text (§3.3) */
        } else {
            *bad = true;
            srv_buf_free(&b);
            return NULL;
        }
    }
    srv_buf_append(&b, "", 0);
    return srv_buf_take(&b, NULL);
}

ds4_status srv_get_number(json_t *obj, const char *key, double lo, double hi, double *out,
                          srv_reqerr *rerr) {
    json_t *v = json_object_get(obj, key);
    if (!v) return DS4_OK;
    if (!json_is_number(v))
        return srv_reqerr_set(rerr, 400, key, "'%s' must be a number", key);
    double d = json_number_value(v);
    if (!isfinite(d) || d < lo || d > hi)
        return srv_reqerr_set(rerr, 400, key, "'%s' must be between %g and %g, got %g", key, lo, hi, d);
    *out = d;
    return DS4_OK;
}

ds4_status srv_get_int(json_t *obj, const char *key, long long lo, long long hi, long long *out,
                       bool *present, srv_reqerr *rerr) {
    json_t *v = json_object_get(obj, key);
    if (present) *present = false;
    if (!v) return DS4_OK;
    long long x;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
               fabs(json_real_value(v)) < 9.0e18) {
        x = (long long)json_real_value(v);
    } else {
        return srv_reqerr_set(rerr, 400, key, "'%s' must be an integer", key);
    }
    if (x < lo || x > hi)
        return srv_reqerr_set(rerr, 400, key, "'%s' must be between %lld and %lld, got %lld", key, lo,
                              hi, x);
    *out = x;
    if (present) *present = true;
    return DS4_OK;
}

ds4_status srv_get_bool(json_t *obj, const char *key, bool *out, srv_reqerr *rerr) {
    json_t *v = json_object_get(obj, key);
    if (!v) return DS4_OK;
    if (!json_is_boolean(v)) return srv_reqerr_set(rerr, 400, key, "'%s' must be a boolean", key);
    *out = json_is_true(v);
    return DS4_OK;
}

void srv_think_init(srv_think_ctl *t) {
    t->enabled = true;
    t->explicit_ = false;
    t->effort = 1;
}

ds4_status srv_think_effort(srv_think_ctl *t, json_t *v, const char *field, srv_reqerr *rerr) {
    if (!v || json_is_null(v)) return DS4_OK;
    if (!json_is_string(v))
        return srv_reqerr_set(rerr, 400, field, "'%s' must be a string", field);
    const char *s = json_string_value(v);
    if (strcmp(s, "max") == 0) t->effort = 2;
    else if (!strcmp(s, "xhigh") || !strcmp(s, "high") || !strcmp(s, "medium") ||
             !strcmp(s, "low") || !strcmp(s, "minimal")) t->effort = 1;
    else if (strcmp(s, "none") == 0) t->effort = 0;
    else
        return srv_reqerr_set(rerr, 400, field,
                              "'%s' must be one of none, minimal, low, medium, high, xhigh, max; got '%.64s'",
                              field, s);
    return DS4_OK;
}

ds4_status srv_think_thinking(srv_think_ctl *t, json_t *v, srv_reqerr *rerr) {
    /* The key's presence alone makes the choice explicit (§3.2.2). */
    t->explicit_ = true;
    if (json_is_boolean(v)) {
        t->enabled = json_is_true(v);
    } else if (json_is_object(v)) {
        json_t *ty = json_object_get(v, "type");
        if (ty && !json_is_string(ty))
            return srv_reqerr_set(rerr, 400, "thinking", "'thinking.type' must be a string");
        const char *s = ty ? json_string_value(ty) : "";
        if (strcmp(s, "enabled") == 0 || strcmp(s, "adaptive") == 0) t->enabled = true;
        else if (strcmp(s, "disabled") == 0) t->enabled = false;
    } else if (!json_is_null(v)) {
        return srv_reqerr_set(rerr, 400, "thinking", "'thinking' must be a boolean or an object");
    }
    return DS4_OK;
}

srv_think srv_think_resolve(const srv_think_ctl *t, const char *model, int n_ctx) {
    bool enabled = t->enabled;
    if (!t->explicit_ && model) {
        if (strcmp(model, "deepseek-chat") == 0) enabled = false;
        else if (strcmp(model, "deepseek-reasoner") == 0) enabled = true;
    }
    if (!enabled || t->effort == 0) return SRV_THINK_NONE;
    /* Think Max only with a context that can hold it (§3.2.2, model card). */
    if (t->effort == 2 && n_ctx >= SRV_THINK_MAX_MIN_CTX) return SRV_THINK_MAX;
    return SRV_THINK_HIGH;
}

ds4_status srv_get_sampling(json_t *root, srv_api api, srv_request *r, srv_reqerr *rerr) {
    ds4_status st;
    if ((st = srv_get_number(root, "temperature", 0.0, 100.0, &r->temperature, rerr))) return st;
    if ((st = srv_get_number(root, "top_p", 0.0, 1.0, &r->top_p, rerr))) return st;
    if (api != SRV_API_RESPONSES) {
        long long k = r->top_k;
        if ((st = srv_get_int(root, "top_k", 0, 1024, &k, NULL, rerr))) return st;
        r->top_k = (int)k;
    }
    if (api == SRV_API_CHAT || api == SRV_API_COMPLETIONS) {
        if ((st = srv_get_number(root, "min_p", 0.0, 1.0, &r->min_p, rerr))) return st;
        long long seed = 0;
        bool has = false;
        json_t *sv = json_object_get(root, "seed");
        if (sv && !json_is_null(sv)) {
            if ((st = srv_get_int(root, "seed", 0, INT64_MAX, &seed, &has, rerr))) return st;
            r->has_seed = has && seed > 0;
            r->seed = (uint64_t)seed;
        }
    }
    return DS4_OK;
}

ds4_status srv_get_stop(json_t *v, const char *field, srv_request *r, srv_reqerr *rerr) {
    if (!v || json_is_null(v)) return DS4_OK;
    json_t *one = NULL;
    if (json_is_string(v)) {
        one = v;
    } else if (!json_is_array(v)) {
        return srv_reqerr_set(rerr, 400, field, "'%s' must be a string or an array of strings", field);
    }
    size_t n = one ? 1 : json_array_size(v);
    if (n > 16) return srv_reqerr_set(rerr, 400, field, "'%s' has %zu entries, at most 16 allowed", field, n);
    for (size_t i = 0; i < n; i++) {
        json_t *s = one ? one : json_array_get(v, i);
        if (!json_is_string(s))
            return srv_reqerr_set(rerr, 400, field, "'%s[%zu]' must be a string", field, i);
        size_t len = json_string_length(s);
        if (len == 0) continue;
        if (len > 1024)
            return srv_reqerr_set(rerr, 400, field, "'%s[%zu]' is %zu bytes, at most 1024 allowed", field, i, len);
        char **p = realloc(r->stop, (r->n_stop + 1) * sizeof *p);
        if (!p) return srv_reqerr_set(rerr, 500, NULL, "out of memory");
        r->stop = p;
        if (!(p[r->n_stop] = strndup(json_string_value(s), len)))
            return srv_reqerr_set(rerr, 500, NULL, "out of memory");
        r->n_stop++;
    }
    return DS4_OK;
}

ds4_status srv_get_response_format(json_t *v, const char *field, srv_request *r, srv_reqerr *rerr) {
    if (!v || json_is_null(v)) return DS4_OK;
    json_t *ty = json_is_object(v) ? json_object_get(v, "type") : NULL;
    if (!ty || !json_is_string(ty))
        return srv_reqerr_set(rerr, 400, field, "'%s' must be an object with a string type", field);
    const char *t = json_string_value(ty);
    if (strcmp(t, "text") == 0) return DS4_OK;
    if (strcmp(t, "json_object") && strcmp(t, "json_schema"))
        return srv_reqerr_set(rerr, 400, field, "'%s.type' must be text, json_object or json_schema, got '%.32s'", field, t);
    free(r->response_format);
    if (!(r->response_format = srv_json_compact(v))) return srv_reqerr_set(rerr, 500, NULL, "out of memory");
    return DS4_OK;
}

ds4_status srv_get_stream(json_t *root, srv_request *r, srv_reqerr *rerr) {
    ds4_status st;
    if ((st = srv_get_bool(root, "stream", &r->stream, rerr))) return st;
    json_t *so = json_object_get(root, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so))
            return srv_reqerr_set(rerr, 400, "stream_options", "'stream_options' must be an object");
        if ((st = srv_get_bool(so, "include_usage", &r->include_usage, rerr))) return st;
    }
    return DS4_OK;
}

ds4_status srv_request_parse(srv_api api, const char *body, size_t len, const srv_limits *lim,
                             srv_request *out, srv_reqerr *rerr) {
    memset(out, 0, sizeof *out);
    size_t max_depth = lim && lim->max_depth ? lim->max_depth : 64;
    int n_ctx = lim ? lim->n_ctx : 0;
    /* Depth first: jansson recurses, so a deep body is refused before it is parsed. */
    if (srv_json_depth(body, len) > max_depth)
        return srv_reqerr_set(rerr, 400, NULL, "JSON nesting deeper than %zu levels", max_depth);
    json_error_t jerr;
    json_t *root = json_loadb(body, len, 0 /* duplicate keys: last one wins (§3.2.1) */, &jerr);
    if (!root)
        return srv_reqerr_set(rerr, 400, NULL, "invalid JSON at line %d column %d: %s", jerr.line,
                              jerr.column, jerr.text);
    ds4_status st = DS4_OK;
    if (!json_is_object(root)) {
        st = srv_reqerr_set(rerr, 400, NULL, "request body must be a JSON object");
        goto out_root;
    }
    out->api = api;
    out->temperature = 1.0;
    out->top_p = 1.0;
    out->min_p = 0.05;
    out->top_k = 0;
    out->max_tokens = lim && lim->default_max_tokens > 0 ? lim->default_max_tokens : 393216;
    json_t *model = json_object_get(root, "model");
    if (model && !json_is_null(model) && (!json_is_string(model) || json_string_length(model) > 256)) {
        /* Echoed in every streamed chunk: keep it a short string. */
        st = srv_reqerr_set(rerr, 400, "model", "'model' must be a string of at most 256 bytes");
        goto out_root;
    }
    out->model = srv_strdup0(model && json_is_string(model) ? json_string_value(model) : "deepseek-v4-flash");
    if (!out->model) { st = srv_reqerr_set(rerr, 500, NULL, "out of memory"); goto out_root; }
    srv_think_ctl t;
    srv_think_init(&t);
    if ((st = srv_get_sampling(root, api, out, rerr))) goto out_root;
    switch (api) {
    case SRV_API_CHAT: st = srv_parse_chat(root, out, &t, rerr); break;
    case SRV_API_COMPLETIONS: st = srv_parse_completions(root, out, &t, rerr); break;
    case SRV_API_ANTHROPIC: st = srv_parse_anthropic(root, out, &t, rerr); break;
    case SRV_API_RESPONSES: st = srv_parse_responses(root, out, &t, rerr); break;
    default: st = srv_reqerr_set(rerr, 500, NULL, "unknown API");
    }
    if (st) goto out_root;
    out->think = srv_think_resolve(&t, out->model, n_ctx);
out_root:
    json_decref(root);
    if (st) srv_request_free(out);
    return st;
}
