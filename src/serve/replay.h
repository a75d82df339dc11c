/*
 * serve/replay.h — exact-DSML replay (SERVER_CLI §5.3): a historical assistant turn's tool
 * calls are rendered as the block the model actually sampled, found by tool-call id in the tool
 * memory, instead of the canonical DSML, so the prompt reproduces the KV prefix token for token
 * even when the client re-serialised the arguments. Owns the lookup only; the chat encoder
 * renders the block (ds4_chat_msg.tool_calls_dsml), the memory stores it.
 */
#ifndef DS4_SERVE_REPLAY_H
#define DS4_SERVE_REPLAY_H

#include <stddef.h>

#include "serve/buf.h"
#include "serve/request.h"
#include "serve/toolids.h"

/* Sets msgs[k].dsml for every assistant message whose call ids all map to the same remembered
 * block (a message with an unknown id, or ids from different blocks, keeps the canonical
 * rendering). Returns the number of messages that will replay; tm may be NULL (none). */
size_t srv_replay_fill(srv_request *req, srv_toolmem *tm);

#endif
