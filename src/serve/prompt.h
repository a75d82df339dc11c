/*
 * serve/prompt.h — a parsed request to its prompt: the ds4_chat conversation (roles, tool
 * calls with their replayed sampled DSML, request tools in their own shape, response_format)
 * and its injection-safe token ids (ds4_chat_render_tokens). Owns the request → chat mapping
 * only; no server policy, no engine.
 */
#ifndef DS4_SERVE_PROMPT_H
#define DS4_SERVE_PROMPT_H

#include <stddef.h>
#include <stdint.h>

#include "ds4.h"
#include "serve/request.h"

/* Builds the conversation for req (completions: one user turn, SERVER_CLI §3.4). Assistant
 * messages replay msgs[k].dsml when set (srv_replay_fill). *out freed with ds4_chat_free. */
ds4_status srv_prompt_chat(const srv_request *req, ds4_chat **out, ds4_error *err);

/* The prompt's token ids: template markers are control tokens, client text is plain text.
 * *toks malloc'd (caller frees). text/text_len nullable: the rendered prompt (malloc'd). */
ds4_status srv_prompt_tokens(const srv_request *req, const ds4_tokenizer *tok, int32_t **toks,
                             size_t *n, char **text, size_t *text_len, ds4_error *err);

#endif
