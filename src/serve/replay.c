/*
 * serve/replay.c — which sampled DSML block each historical assistant turn replays (see
 * replay.h). Rendering the block into the prompt is the chat encoder's job (serve/prompt.c
 * passes it as ds4_chat_msg.tool_calls_dsml).
 */
#include "serve/replay.h"

#include <stdlib.h>
#include <string.h>

/* The block all of m's ids map to, or false. */
static bool same_block(const srv_message *m, srv_toolmem *tm, srv_buf *out) {
    srv_buf other;
    srv_buf_init(&other);
    bool ok = true;
    for (size_t i = 0; ok && i < m->n_calls; i++) {
        srv_buf *dst = i == 0 ? out : &other;
        srv_buf_clear(dst);
        if (!m->calls[i].id || !*m->calls[i].id || !srv_toolmem_get(tm, m->calls[i].id, dst)) ok = false;
        else if (i > 0 && (other.len != out->len || memcmp(other.data, out->data, out->len) != 0)) ok = false;
    }
    srv_buf_free(&other);
    return ok && srv_buf_ok(out) && out->len > 0;
}

size_t srv_replay_fill(srv_request *req, srv_toolmem *tm) {
    if (!tm) return 0;
    size_t n = 0;
    srv_buf raw;
    srv_buf_init(&raw);
    for (size_t k = 0; k < req->n_msgs; k++) {
        srv_message *m = &req->msgs[k];
        free(m->dsml);
        m->dsml = NULL;
        if (m->role != SRV_ROLE_ASSISTANT || m->n_calls == 0 || !same_block(m, tm, &raw)) continue;
        /* The chat API takes a NUL-terminated block: one holding a NUL byte renders canonically. */
        if (memchr(raw.data, 0, raw.len)) continue;
        m->dsml = malloc(raw.len + 1);
        if (!m->dsml) continue; /* canonical rendering still works */
        memcpy(m->dsml, raw.data, raw.len);
        m->dsml[raw.len] = '\0';
        n++;
    }
    srv_buf_free(&raw);
    return n;
}
