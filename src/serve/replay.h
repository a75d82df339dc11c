/*
 * serve/replay.h — exact-DSML replay (SERVER_CLI §5.3): in a rendered prompt, the canonical
 * DSML of a historical assistant turn is swapped for the block the model actually sampled,
 * found by tool-call id in the tool memory, so the prompt reproduces the KV prefix byte for
 * byte even when the client re-serialised the arguments. Owns the substitution only; the
 * encoder still renders, the memory still stores.
 */
#ifndef DS4_SERVE_REPLAY_H
#define DS4_SERVE_REPLAY_H

#include <stddef.h>

#include "serve/buf.h"
#include "serve/request.h"
#include "serve/toolids.h"

/* Rewrites text in place; a message is replayed only when every one of its call ids maps to
 * the same remembered block. Returns the number of messages replayed. */
size_t srv_replay_dsml(srv_buf *text, const srv_request *req, srv_toolmem *tm);

#endif
