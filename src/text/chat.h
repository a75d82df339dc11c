/*
 * text/chat.h — internals of the V4 chat encoder shared by chat.c (conversation model, JSON
 * loading, rendering), chat_tools.c (tool schemas) and dsml*.c (tool calls): the special
 * strings of CHAT_ENCODING §2 and the stored message layout. Never tokenizes.
 */
#ifndef DS4_TEXT_CHAT_H
#define DS4_TEXT_CHAT_H

#include <jansson.h>

#include "ds4.h"
#include "text/chat_json.h"

/* CHAT_ENCODING §2.1. ｜ is U+FF5C, ▁ is U+2581. */
#define CHAT_BOS "<｜begin▁of▁sentence｜>"
#define CHAT_EOS "<｜end▁of▁sentence｜>"
#define CHAT_USER "<｜User｜>"
#define CHAT_ASSISTANT "<｜Assistant｜>"
#define CHAT_THINK "<think>"
#define CHAT_THINK_END "</think>"
#define CHAT_LATEST_REMINDER "<｜latest_reminder｜>"
#define CHAT_DSML "｜DSML｜"

/* One stored tool call: owned copies. */
typedef struct chat_call {
    char *id; /* NULL when absent */
    char *name;
    char *args;
} chat_call;

/* One stored message: owned copies; NULL = absent. */
typedef struct chat_msg {
    ds4_chat_role role;
    char *content;
    char *reasoning;
    chat_call *calls;
    size_t n_calls;
    char *tool_call_id;
    char *task;
    bool wo_eos;
    json_t *tools;           /* array, as given (OpenAI or Anthropic elements) */
    json_t *response_format;
    char *dsml;              /* exact tool block to replay, or NULL */
} chat_msg;

struct ds4_chat {
    ds4_thinking thinking;
    chat_msg *msgs;
    size_t n_msgs;
    size_t cap_msgs;
};

/* Appends the official tools block (§5.1) for an array of tools; `what` names the array in
 * errors ("messages[0].tools"). */
ds4_status chat_tools_block(chat_buf *out, const json_t *tools, const char *what,
                            ds4_error *err);

/* Checks that every element of a tools array can be described (done when tools are added, so
 * a stored conversation always renders). */
ds4_status chat_tools_check(const json_t *tools, const char *what, ds4_error *err);

/* Renders the conversation into b (BOS first), recording the client-supplied bytes as literal
 * spans (chat_buf_lit_*): message content, reasoning, tool results, tool schemas,
 * response_format and history tool-call names/arguments. */
ds4_status chat_render_buf(const ds4_chat *chat, chat_buf *b, ds4_error *err);

/* Appends the canonical DSML tool-calls part (§6.1), including the leading "\n\n". */
ds4_status dsml_render(chat_buf *out, const chat_call *calls, size_t n_calls, ds4_error *err);

#endif
