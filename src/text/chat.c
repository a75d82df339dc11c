/*
 * text/chat.c — the conversation model (ds4_chat) and rendering it byte-exactly like DeepSeek's official V4 encoder
 * (CHAT_ENCODING §3-§7): tool-message merging, result ordering, dropping of earlier
 * reasoning, role bodies and transitions. Loading from the official test-input JSON is chat_load.c,
 * tool schemas chat_tools.c, DSML dsml.c.
 * Never tokenizes and never applies ds4's server variant (§9).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "text/chat.h"

/* CHAT_ENCODING §2.2: three lines, then an empty line. */
static const char MAX_EFFORT_PREFIX[] =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to "
    "resolve the root cause, rigorously stress-testing your logic against all potential paths, "
    "edge cases, and adversarial scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate "
    "step, considered alternative, and rejected hypothesis to ensure absolutely no assumption "
    "is left unchecked.\n"
    "\n";

static const char RESPONSE_FORMAT_HEAD[] =
    "\n\n## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n";

/* §7: quick-instruction tasks and their tokens. */
static const char *const TASKS[][2] = {
    {"action", "<｜action｜>"},   {"query", "<｜query｜>"},
    {"authority", "<｜authority｜>"}, {"domain", "<｜domain｜>"},
    {"title", "<｜title｜>"},     {"read_url", "<｜read_url｜>"},
};

static const char *task_token(const char *task) {
    for (size_t i = 0; i < sizeof TASKS / sizeof TASKS[0]; i++)
        if (strcmp(task, TASKS[i][0]) == 0) return TASKS[i][1];
    return NULL;
}

static const char *role_name(ds4_chat_role r) {
    switch (r) {
    case DS4_ROLE_SYSTEM: return "system";
    case DS4_ROLE_USER: return "user";
    case DS4_ROLE_ASSISTANT: return "assistant";
    case DS4_ROLE_TOOL: return "tool";
    case DS4_ROLE_DEVELOPER: return "developer";
    case DS4_ROLE_LATEST_REMINDER: return "latest_reminder";
    }
    return "?";
}

/* Python truthiness of a JSON value (`if tools:` / `if response_format:`). */
static bool json_truthy(const json_t *v) {
    if (!v) return false;
    switch (json_typeof(v)) {
    case JSON_OBJECT: return json_object_size(v) > 0;
    case JSON_ARRAY: return json_array_size(v) > 0;
    case JSON_STRING: return json_string_length(v) > 0;
    case JSON_INTEGER: return json_integer_value(v) != 0;
    case JSON_REAL: return json_real_value(v) != 0.0;
    case JSON_TRUE: return true;
    default: return false;
    }
}

/* ---- Conversation model ------------------------------------------------------------------ */

static void msg_free(chat_msg *m) {
    free(m->content);
    free(m->reasoning);
    for (size_t i = 0; i < m->n_calls; i++) {
        free(m->calls[i].id);
        free(m->calls[i].name);
        free(m->calls[i].args);
    }
    free(m->calls);
    free(m->tool_call_id);
    free(m->task);
    free(m->dsml);
    json_decref(m->tools);
    json_decref(m->response_format);
    memset(m, 0, sizeof *m);
}

ds4_status ds4_chat_create(ds4_chat **out, ds4_thinking thinking, ds4_error *err) {
    if (!out) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "chat: NULL out");
    *out = calloc(1, sizeof **out);
    if (!*out) return ds4_seterr(err, DS4_ERR_NOMEM, "chat: out of memory");
    (*out)->thinking = thinking;
    return DS4_OK;
}

void ds4_chat_free(ds4_chat *chat) {
    if (!chat) return;
    for (size_t i = 0; i < chat->n_msgs; i++) msg_free(&chat->msgs[i]);
    free(chat->msgs);
    free(chat);
}

void ds4_chat_set_thinking(ds4_chat *chat, ds4_thinking thinking) { chat->thinking = thinking; }
ds4_thinking ds4_chat_get_thinking(const ds4_chat *chat) { return chat->thinking; }
size_t ds4_chat_n_msgs(const ds4_chat *chat) { return chat->n_msgs; }

static bool dup_str(char **dst, const char *src) {
    *dst = NULL;
    if (!src) return true;
    *dst = strdup(src);
    return *dst != NULL;
}

/* Copies msg into *m; the JSON fields come pre-parsed (borrowed, incref'd here). */
static ds4_status msg_copy(chat_msg *m, const ds4_chat_msg *msg, json_t *tools, json_t *rf,
                           ds4_error *err) {
    memset(m, 0, sizeof *m);
    m->role = msg->role;
    m->wo_eos = msg->wo_eos;
    bool ok = dup_str(&m->content, msg->content) && dup_str(&m->reasoning, msg->reasoning) &&
              dup_str(&m->tool_call_id, msg->tool_call_id) && dup_str(&m->task, msg->task) &&
              dup_str(&m->dsml, msg->tool_calls_dsml);
    if (ok && msg->n_tool_calls) {
        m->calls = calloc(msg->n_tool_calls, sizeof *m->calls);
        ok = m->calls != NULL;
        for (size_t i = 0; ok && i < msg->n_tool_calls; i++) {
            const ds4_tool_call *c = &msg->tool_calls[i];
            m->n_calls = i + 1;
            ok = dup_str(&m->calls[i].id, c->id) && dup_str(&m->calls[i].name, c->name) &&
                 dup_str(&m->calls[i].args, c->arguments ? c->arguments : "");
        }
    }
    if (!ok) {
        msg_free(m);
        return ds4_seterr(err, DS4_ERR_NOMEM, "chat: out of memory");
    }
    m->tools = json_incref(tools);
    m->response_format = json_incref(rf);
    return DS4_OK;
}

static ds4_status msg_check(const ds4_chat_msg *msg, ds4_error *err) {
    if ((unsigned)msg->role > DS4_ROLE_LATEST_REMINDER)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "role: unknown role %d", (int)msg->role);
    if (msg->n_tool_calls && !msg->tool_calls)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "tool_calls: NULL with n_tool_calls %zu",
                          msg->n_tool_calls);
    if (msg->n_tool_calls && msg->role != DS4_ROLE_ASSISTANT)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "tool_calls: only assistant messages carry "
                          "tool calls (role is %s)", role_name(msg->role));
    for (size_t i = 0; i < msg->n_tool_calls; i++)
        if (!msg->tool_calls[i].name)
            return ds4_seterr(err, DS4_ERR_INVALID_ARG, "tool_calls[%zu].name: missing", i);
    if (msg->task && !task_token(msg->task))
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "task: invalid task '%s' (expected action, "
                          "query, authority, domain, title or read_url)", msg->task);
    /* CHAT_ENCODING §3.2: a developer turn must have content. */
    if (msg->role == DS4_ROLE_DEVELOPER && (!msg->content || !msg->content[0]))
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "content: a developer message needs content");
    if (msg->tool_calls_dsml && msg->role != DS4_ROLE_ASSISTANT)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "tool_calls_dsml: only assistant messages "
                          "carry tool calls (role is %s)", role_name(msg->role));
    if ((msg->tools_json || msg->response_format_json) && msg->role != DS4_ROLE_SYSTEM &&
        msg->role != DS4_ROLE_DEVELOPER)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "tools/response_format: only system and "
                          "developer messages carry them (role is %s)", role_name(msg->role));
    return DS4_OK;
}

static ds4_status chat_insert(ds4_chat *chat, size_t at, const ds4_chat_msg *msg, json_t *tools,
                              json_t *rf, ds4_error *err) {
    ds4_status st = msg_check(msg, err);
    if (st != DS4_OK) return st;
    if (tools && (st = chat_tools_check(tools, "tools", err)) != DS4_OK) return st;
    if (chat->n_msgs == chat->cap_msgs) {
        size_t cap = chat->cap_msgs ? chat->cap_msgs * 2 : 8;
        chat_msg *p = realloc(chat->msgs, cap * sizeof *p);
        if (!p) return ds4_seterr(err, DS4_ERR_NOMEM, "chat: out of memory");
        chat->msgs = p;
        chat->cap_msgs = cap;
    }
    chat_msg m;
    st = msg_copy(&m, msg, tools, rf, err);
    if (st != DS4_OK) return st;
    memmove(chat->msgs + at + 1, chat->msgs + at, (chat->n_msgs - at) * sizeof *chat->msgs);
    chat->msgs[at] = m;
    chat->n_msgs++;
    return DS4_OK;
}

static json_t *load_json(const char *text, const char *what, ds4_error *err) {
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &jerr);
    if (!v)
        ds4_seterr(err, DS4_ERR_FORMAT, "%s: invalid JSON at line %d column %d: %s", what,
                   jerr.line, jerr.column, jerr.text);
    return v;
}

ds4_status ds4_chat_add(ds4_chat *chat, const ds4_chat_msg *msg, ds4_error *err) {
    if (!chat || !msg) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "chat: NULL argument");
    json_t *tools = NULL, *rf = NULL;
    if (msg->tools_json && !(tools = load_json(msg->tools_json, "tools", err)))
        return err ? err->code : DS4_ERR_FORMAT;
    if (msg->response_format_json &&
        !(rf = load_json(msg->response_format_json, "response_format", err))) {
        json_decref(tools);
        return err ? err->code : DS4_ERR_FORMAT;
    }
    ds4_status st = chat_insert(chat, chat->n_msgs, msg, tools, rf, err);
    json_decref(tools);
    json_decref(rf);
    return st;
}

static ds4_status attach_tools(ds4_chat *chat, json_t *tools, ds4_error *err) {
    ds4_status st = chat_tools_check(tools, "tools", err);
    if (st != DS4_OK) return st;
    if (chat->n_msgs == 0 || (chat->msgs[0].role != DS4_ROLE_SYSTEM &&
                              chat->msgs[0].role != DS4_ROLE_DEVELOPER)) {
        ds4_chat_msg sys = {.role = DS4_ROLE_SYSTEM, .content = ""};
        st = chat_insert(chat, 0, &sys, NULL, NULL, err);
        if (st != DS4_OK) return st;
    }
    json_decref(chat->msgs[0].tools);
    chat->msgs[0].tools = json_incref(tools);
    return DS4_OK;
}

ds4_status ds4_chat_set_tools(ds4_chat *chat, const char *tools_json, ds4_error *err) {
    if (!chat || !tools_json) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "tools: NULL argument");
    json_t *tools = load_json(tools_json, "tools", err);
    if (!tools) return err ? err->code : DS4_ERR_FORMAT;
    ds4_status st = attach_tools(chat, tools, err);
    json_decref(tools);
    return st;
}

/* ---- Rendering: preprocessing (§3.1, §4.2) ----------------------------------------------- */

enum { BLK_TEXT, BLK_RESULT };

typedef struct r_blk {
    int kind;
    const char *text;
    const char *use_id;
} r_blk;

/* One message after merging: user turns hold blocks; other roles point at their source. */
typedef struct r_msg {
    ds4_chat_role role;
    const chat_msg *src;
    r_blk *blk;
    size_t n_blk, cap_blk;
    const char *task;
    bool wo_eos;
    bool drop_reasoning;
} r_msg;

typedef struct r_list {
    r_msg *m;
    size_t n, cap;
} r_list;

static void r_list_free(r_list *l) {
    for (size_t i = 0; i < l->n; i++) free(l->m[i].blk);
    free(l->m);
}

static r_msg *r_push(r_list *l) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        r_msg *p = realloc(l->m, cap * sizeof *p);
        if (!p) return NULL;
        l->m = p;
        l->cap = cap;
    }
    r_msg *m = &l->m[l->n++];
    memset(m, 0, sizeof *m);
    return m;
}

static bool r_add_blk(r_msg *m, int kind, const char *text, const char *use_id) {
    if (m->n_blk == m->cap_blk) {
        size_t cap = m->cap_blk ? m->cap_blk * 2 : 4;
        r_blk *p = realloc(m->blk, cap * sizeof *p);
        if (!p) return false;
        m->blk = p;
        m->cap_blk = cap;
    }
    m->blk[m->n_blk++] = (r_blk){kind, text ? text : "", use_id ? use_id : ""};
    return true;
}

/* §3.1 steps 1-2: tool messages become tool_result blocks, user messages text blocks; both
 * join the previous merged user turn when allowed. */
static bool merge_messages(const ds4_chat *chat, r_list *l) {
    for (size_t i = 0; i < chat->n_msgs; i++) {
        const chat_msg *s = &chat->msgs[i];
        r_msg *last = l->n ? &l->m[l->n - 1] : NULL;
        if (s->role == DS4_ROLE_TOOL) {
            if (!last || last->role != DS4_ROLE_USER) {
                if (!(last = r_push(l))) return false;
                last->role = DS4_ROLE_USER;
            }
            if (!r_add_blk(last, BLK_RESULT, s->content, s->tool_call_id)) return false;
        } else if (s->role == DS4_ROLE_USER) {
            if (!last || last->role != DS4_ROLE_USER || last->task) {
                if (!(last = r_push(l))) return false;
                last->role = DS4_ROLE_USER;
                last->src = s;
                last->task = s->task;
                last->wo_eos = s->wo_eos;
            }
            if (!r_add_blk(last, BLK_TEXT, s->content, NULL)) return false;
        } else {
            r_msg *m = r_push(l);
            if (!m) return false;
            m->role = s->role;
            m->src = s;
            m->task = s->task;
            m->wo_eos = s->wo_eos;
        }
    }
    return true;
}

static size_t call_order(const chat_msg *calls_src, const char *use_id) {
    if (!calls_src) return 0;
    for (size_t i = 0; i < calls_src->n_calls; i++)
        if (calls_src->calls[i].id && strcmp(calls_src->calls[i].id, use_id) == 0) return i;
    return 0; /* unknown ids sort as index 0 */
}

/* §3.1 step 3: tool results reordered by the index of their id in the most recent assistant
 * tool calls (stable; non-result blocks keep their slots). */
static bool sort_results(r_list *l) {
    const chat_msg *order = NULL;
    for (size_t i = 0; i < l->n; i++) {
        r_msg *m = &l->m[i];
        if (m->role == DS4_ROLE_ASSISTANT && m->src->n_calls) order = m->src;
        if (m->role != DS4_ROLE_USER) continue;
        size_t n_res = 0;
        for (size_t k = 0; k < m->n_blk; k++) n_res += m->blk[k].kind == BLK_RESULT;
        if (n_res < 2) continue;
        r_blk *res = malloc(n_res * sizeof *res);
        if (!res) return false;
        size_t n = 0;
        for (size_t k = 0; k < m->n_blk; k++) {
            if (m->blk[k].kind != BLK_RESULT) continue;
            /* insertion sort: stable like Python's sorted */
            size_t key = call_order(order, m->blk[k].use_id), j = n;
            while (j > 0 && call_order(order, res[j - 1].use_id) > key) {
                res[j] = res[j - 1];
                j--;
            }
            res[j] = m->blk[k];
            n++;
        }
        n = 0;
        for (size_t k = 0; k < m->n_blk; k++)
            if (m->blk[k].kind == BLK_RESULT) m->blk[k] = res[n++];
        free(res);
    }
    return true;
}

static long last_user_index(const r_list *l) {
    for (size_t i = l->n; i-- > 0;)
        if (l->m[i].role == DS4_ROLE_USER || l->m[i].role == DS4_ROLE_DEVELOPER) return (long)i;
    return -1;
}

/* §4.2: before the last user turn, assistants lose their reasoning and roles outside
 * {user, system, tool, latest_reminder} (i.e. developer) are removed. */
static void drop_thinking(r_list *l) {
    long last = last_user_index(l);
    size_t w = 0;
    for (size_t i = 0; i < l->n; i++) {
        r_msg m = l->m[i];
        bool keep_role = m.role == DS4_ROLE_USER || m.role == DS4_ROLE_SYSTEM ||
                         m.role == DS4_ROLE_TOOL || m.role == DS4_ROLE_LATEST_REMINDER;
        if (!keep_role && (long)i < last) {
            if (m.role != DS4_ROLE_ASSISTANT) {
                free(m.blk);
                continue;
            }
            m.drop_reasoning = true;
        }
        l->m[w++] = m;
    }
    l->n = w;
}

/* ---- Rendering: bodies and transitions (§3.2, §3.3) -------------------------------------- */

static ds4_status render_extras(chat_buf *b, const chat_msg *s, size_t i, ds4_error *err) {
    if (json_truthy(s->tools)) {
        char what[48];
        snprintf(what, sizeof what, "messages[%zu].tools", i);
        chat_buf_adds(b, "\n\n");
        ds4_status st = chat_tools_block(b, s->tools, what, err);
        if (st != DS4_OK) return st;
    }
    if (json_truthy(s->response_format)) {
        chat_buf_add(b, RESPONSE_FORMAT_HEAD, sizeof RESPONSE_FORMAT_HEAD - 1);
        /* §5.2 writes json.dumps(response_format) with Python's default ensure_ascii. */
        chat_buf_lit_begin(b);
        chat_json_dumps(b, s->response_format, true);
        chat_buf_lit_end(b);
    }
    return DS4_OK;
}

static ds4_status render_list(const ds4_chat *chat, const r_list *l, bool drop, chat_buf *b,
                              ds4_error *err) {
    bool thinking = chat->thinking != DS4_THINKING_NONE;
    long last_user = last_user_index(l);
    chat_buf_adds(b, CHAT_BOS);
    for (size_t i = 0; i < l->n; i++) {
        const r_msg *m = &l->m[i];
        const chat_msg *s = m->src;
        if (i == 0 && chat->thinking == DS4_THINKING_MAX)
            chat_buf_add(b, MAX_EFFORT_PREFIX, sizeof MAX_EFFORT_PREFIX - 1);
        ds4_status st = DS4_OK;
        switch (m->role) {
        case DS4_ROLE_SYSTEM:
            chat_buf_adds_lit(b, s->content);
            st = render_extras(b, s, i, err);
            break;
        case DS4_ROLE_DEVELOPER:
            chat_buf_adds(b, CHAT_USER);
            chat_buf_adds_lit(b, s->content);
            st = render_extras(b, s, i, err);
            break;
        case DS4_ROLE_USER:
            chat_buf_adds(b, CHAT_USER);
            for (size_t k = 0; k < m->n_blk; k++) {
                if (k) chat_buf_adds(b, "\n\n");
                if (m->blk[k].kind == BLK_RESULT) chat_buf_adds(b, "<tool_result>");
                chat_buf_adds_lit(b, m->blk[k].text);
                if (m->blk[k].kind == BLK_RESULT) chat_buf_adds(b, "</tool_result>");
            }
            break;
        case DS4_ROLE_LATEST_REMINDER:
            chat_buf_adds(b, CHAT_LATEST_REMINDER);
            chat_buf_adds_lit(b, s->content);
            break;
        case DS4_ROLE_ASSISTANT: {
            bool prev_task = i > 0 && l->m[i - 1].task;
            /* §3.2: the reasoning part; its <think> opener belongs to the previous turn. */
            if (thinking && !prev_task && (!drop || (long)i > last_user)) {
                if (!m->drop_reasoning) chat_buf_adds_lit(b, s->reasoning);
                chat_buf_adds(b, CHAT_THINK_END);
            }
            chat_buf_adds_lit(b, s->content);
            /* The replayed block is the model's own sampled output, kept by the caller (the
             * server's tool-id memory), not client text: its markers stay control tokens so the
             * prompt reproduces the sampled ids (SERVER_CLI §5.3). */
            if (s->dsml) chat_buf_adds(b, s->dsml);
            else if (s->n_calls) st = dsml_render(b, s->calls, s->n_calls, err);
            if (!m->wo_eos) chat_buf_adds(b, CHAT_EOS);
            break;
        }
        case DS4_ROLE_TOOL:
            return ds4_seterr(err, DS4_ERR_INTERNAL, "chat: tool message survived merging");
        }
        if (st != DS4_OK) return ds4_err_prefix(err, "messages[%zu]", i);
        /* §3.3 transitions */
        if (i + 1 < l->n && l->m[i + 1].role != DS4_ROLE_ASSISTANT &&
            l->m[i + 1].role != DS4_ROLE_LATEST_REMINDER)
            continue;
        if (m->task) {
            if (strcmp(m->task, "action") == 0) {
                chat_buf_adds(b, CHAT_ASSISTANT);
                chat_buf_adds(b, thinking ? CHAT_THINK : CHAT_THINK_END);
            }
            chat_buf_adds(b, task_token(m->task));
        } else if (m->role == DS4_ROLE_USER || m->role == DS4_ROLE_DEVELOPER) {
            chat_buf_adds(b, CHAT_ASSISTANT);
            chat_buf_adds(b, thinking && (!drop || (long)i >= last_user) ? CHAT_THINK
                                                                          : CHAT_THINK_END);
        }
    }
    return chat_buf_status(b, "chat render", err);
}

ds4_status chat_render_buf(const ds4_chat *chat, chat_buf *b, ds4_error *err) {
    r_list l = {0};
    ds4_status st;
    if (!merge_messages(chat, &l) || !sort_results(&l)) {
        st = ds4_seterr(err, DS4_ERR_NOMEM, "chat render: out of memory");
        goto out_free_list;
    }
    /* §4.3: any tools disable dropping; §4.2 applies to thinking mode only. */
    bool drop = chat->thinking != DS4_THINKING_NONE;
    for (size_t i = 0; i < chat->n_msgs; i++)
        if (json_truthy(chat->msgs[i].tools)) drop = false;
    if (drop) drop_thinking(&l);
    st = render_list(chat, &l, drop, b, err);
out_free_list:
    r_list_free(&l);
    return st;
}

ds4_status ds4_chat_render(const ds4_chat *chat, char **out, size_t *out_bytes, ds4_error *err) {
    if (!chat || !out) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "chat render: NULL argument");
    *out = NULL;
    chat_buf b = {0};
    ds4_status st = chat_render_buf(chat, &b, err);
    if (st == DS4_OK) {
        *out = chat_buf_take(&b, out_bytes);
        if (!*out) st = ds4_seterr(err, DS4_ERR_NOMEM, "chat render: out of memory");
    }
    chat_buf_free(&b);
    return st;
}
