/*
 * serve/replay.c — canonical → sampled DSML substitution in rendered prompts (see replay.h).
 * The canonical text is what ds4_dsml_render_calls gives, the same function the chat encoder
 * uses for history (CHAT_ENCODING §6.1), so it occurs verbatim in the rendered prompt.
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

size_t srv_replay_dsml(srv_buf *text, const srv_request *req, srv_toolmem *tm) {
    if (!tm || !text->data) return 0;
    size_t pos = 0, n = 0;
    srv_buf raw;
    srv_buf_init(&raw);
    for (size_t k = 0; k < req->n_msgs; k++) {
        const srv_message *m = &req->msgs[k];
        if (m->role != SRV_ROLE_ASSISTANT || m->n_calls == 0) continue;
        ds4_tool_call *calls = calloc(m->n_calls, sizeof *calls);
        if (!calls) break;
        for (size_t i = 0; i < m->n_calls; i++) {
            calls[i].id = m->calls[i].id;
            calls[i].name = m->calls[i].name;
            calls[i].arguments = m->calls[i].arguments;
        }
        char *canon = NULL;
        size_t canon_len = 0;
        ds4_status st = ds4_dsml_render_calls(calls, m->n_calls, &canon, &canon_len, NULL);
        free(calls);
        if (st != DS4_OK || !canon_len) { free(canon); continue; }
        char *hit = memmem(text->data + pos, text->len - pos, canon, canon_len);
        if (hit && same_block(m, tm, &raw)) {
            size_t at = (size_t)(hit - text->data);
            srv_buf out;
            srv_buf_init(&out);
            srv_buf_append(&out, text->data, at);
            srv_buf_append(&out, raw.data, raw.len);
            srv_buf_append(&out, text->data + at + canon_len, text->len - at - canon_len);
            if (srv_buf_ok(&out)) {
                srv_buf_free(text);
                *text = out;
                pos = at + raw.len;
                n++;
            } else {
                srv_buf_free(&out);
            }
        } else if (hit) {
            pos = (size_t)(hit - text->data) + canon_len;
        }
        free(canon);
    }
    srv_buf_free(&raw);
    return n;
}
