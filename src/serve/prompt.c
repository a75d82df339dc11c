/*
 * serve/prompt.c — request → ds4_chat → prompt ids (see prompt.h). Tools are handed to the
 * chat encoder in the shape each API parser stored them (OpenAI function objects, Anthropic
 * {name, description, input_schema} objects, bare functions): ds4_chat_set_tools knows all of
 * them (CHAT_ENCODING §5), so nothing is re-wrapped here.
 */
#include "serve/prompt.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"

static ds4_thinking map_think(srv_think t) {
    return t == SRV_THINK_NONE ? DS4_THINKING_NONE : t == SRV_THINK_MAX ? DS4_THINKING_MAX : DS4_THINKING_HIGH;
}

static ds4_chat_role map_role(srv_role r) {
    switch (r) {
    case SRV_ROLE_SYSTEM: return DS4_ROLE_SYSTEM;
    case SRV_ROLE_ASSISTANT: return DS4_ROLE_ASSISTANT;
    case SRV_ROLE_TOOL: return DS4_ROLE_TOOL;
    default: return DS4_ROLE_USER;
    }
}

/* The stored tool schemas as one JSON array, each element as stored. */
static char *tools_json(const srv_request *req) {
    srv_buf b;
    srv_buf_init(&b);
    srv_buf_puts(&b, "[");
    for (size_t i = 0; i < req->n_tools; i++) {
        if (i) srv_buf_puts(&b, ",");
        srv_buf_puts(&b, req->tools[i]);
    }
    srv_buf_puts(&b, "]");
    return srv_buf_take(&b, NULL);
}

static ds4_status add_msg(ds4_chat *chat, const srv_message *sm, const char *rf, ds4_error *err) {
    ds4_tool_call *calls = NULL;
    if (sm->n_calls) {
        calls = calloc(sm->n_calls, sizeof *calls);
        if (!calls) return ds4_seterr(err, DS4_ERR_NOMEM, "render: out of memory");
        for (size_t k = 0; k < sm->n_calls; k++) {
            calls[k].id = sm->calls[k].id && *sm->calls[k].id ? sm->calls[k].id : NULL;
            calls[k].name = sm->calls[k].name;
            calls[k].arguments = sm->calls[k].arguments;
        }
    }
    ds4_chat_msg m = {.role = map_role(sm->role), .content = sm->content, .reasoning = sm->reasoning,
                      .tool_calls = calls, .n_tool_calls = sm->n_calls, .tool_call_id = sm->tool_call_id,
                      .response_format_json = rf,
                      .tool_calls_dsml = sm->role == SRV_ROLE_ASSISTANT ? sm->dsml : NULL};
    ds4_status st = ds4_chat_add(chat, &m, err);
    free(calls);
    return st;
}

ds4_status srv_prompt_chat(const srv_request *req, ds4_chat **out, ds4_error *err) {
    *out = NULL;
    ds4_chat *chat = NULL;
    ds4_status st = ds4_chat_create(&chat, map_think(req->think), err);
    if (st) return st;
    if (req->api == SRV_API_COMPLETIONS) {
        /* Completions are one user turn of the chat template (SERVER_CLI §3.4). */
        ds4_chat_msg m = {.role = DS4_ROLE_USER, .content = req->prompt ? req->prompt : ""};
        st = ds4_chat_add(chat, &m, err);
    }
    /* Structured output rides on the first system message (CHAT_ENCODING §5.2). */
    bool rf_first = req->response_format && req->n_msgs && req->msgs[0].role == SRV_ROLE_SYSTEM;
    if (!st && req->response_format && !rf_first) {
        ds4_chat_msg m = {.role = DS4_ROLE_SYSTEM, .content = "", .response_format_json = req->response_format};
        st = ds4_chat_add(chat, &m, err);
    }
    for (size_t i = 0; !st && i < req->n_msgs; i++) {
        st = add_msg(chat, &req->msgs[i], i == 0 && rf_first ? req->response_format : NULL, err);
        if (st) ds4_err_prefix(err, "messages[%zu]", i);
    }
    if (!st && req->tools_active && req->n_tools) {
        char *tj = tools_json(req);
        st = tj ? ds4_chat_set_tools(chat, tj, err) : ds4_seterr(err, DS4_ERR_NOMEM, "render: out of memory");
        free(tj);
    }
    if (st) {
        ds4_chat_free(chat);
        return st;
    }
    *out = chat;
    return DS4_OK;
}

ds4_status srv_prompt_tokens(const srv_request *req, const ds4_tokenizer *tok, int32_t **toks,
                             size_t *n, char **text, size_t *text_len, ds4_error *err) {
    ds4_chat *chat;
    ds4_status st = srv_prompt_chat(req, &chat, err);
    if (st) return st;
    st = ds4_chat_render_tokens(chat, tok, 0, toks, n, text, text_len, err);
    ds4_chat_free(chat);
    return st;
}
