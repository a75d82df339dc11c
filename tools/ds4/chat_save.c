/*
 * tools/ds4/chat_save.c — /save FILE and /load FILE of the REPL: FILE is the conversation as
 * JSON (OpenAI-shaped "messages", so `ds4 --render-chat FILE` reads it too, plus the token
 * transcript the session holds), FILE.kv the session snapshot (ds4_session_save_file: checksummed,
 * tied to the model). A long conversation thus resumes without prefill. Must not: interpret the
 * snapshot bytes (libds4 validates them).
 *
 * JSON keys: format "ds4-chat", version 1, model_id, thinking ("none"|"high"|"max"), n_ctx,
 * n_turns, seed, system, messages [system?, user, assistant, ...], header_tokens [...],
 * body_tokens [...], kv_file. The token arrays are authoritative; messages are for people and
 * other tools.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"

static const char *const k_thinking[] = {"none", "high", "max"};

static json_t *ids_json(const int32_t *ids, uint32_t n) {
    json_t *a = json_array();
    for (uint32_t i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_integer(ids[i]))) {
            json_decref(a);
            return NULL;
        }
    return a;
}

/* Reads a token-id array, every id in [0, n_vocab). *out malloc'd (at least 1 element). */
static int ids_from_json(const json_t *a, uint32_t n_vocab, uint32_t max_n, int32_t **out, uint32_t *n_out,
                         const char *key, const char *path) {
    if (!json_is_array(a) || json_array_size(a) > max_n) {
        fprintf(stderr, "ds4: %s: \"%s\" is not an array of at most %u token ids\n", path, key, max_n);
        return 1;
    }
    size_t n = json_array_size(a);
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) return 1;
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(a, i);
        json_int_t x = json_is_integer(v) ? json_integer_value(v) : -1;
        if (x < 0 || x >= (json_int_t)n_vocab) {
            fprintf(stderr, "ds4: %s: %s[%zu] is not a token id below %u\n", path, key, i, n_vocab);
            free(ids);
            return 1;
        }
        ids[i] = (int32_t)x;
    }
    *out = ids;
    *n_out = (uint32_t)n;
    return 0;
}

int chat_save(chat_state *st, const char *path) {
    size_t n = strlen(path);
    char *kv = malloc(n + 4);
    if (!kv) return 1;
    snprintf(kv, n + 4, "%s.kv", path);
    const char *kv_base = strrchr(kv, '/') ? strrchr(kv, '/') + 1 : kv;
    /* messages = the system text as a system message (so --render-chat shows the conversation
     * whole) + the turns. */
    json_t *msgs = json_array();
    if (msgs && st->system[0])
        json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "system", "content", st->system));
    if (msgs) json_array_extend(msgs, st->msgs);
    json_t *root = json_pack("{s:s, s:i, s:s, s:s, s:I, s:I, s:s, s:s, s:o, s:o, s:o, s:s}", "format", "ds4-chat",
                             "version", 1, "model_id", st->model_id, "thinking", k_thinking[st->thinking],
                             "n_ctx", (json_int_t)st->n_ctx, "n_turns", (json_int_t)st->n_turns, "seed",
                             "", "system", st->system, "messages", msgs, "header_tokens",
                             ids_json(st->header, st->n_header), "body_tokens", ids_json(st->body, st->n_body),
                             "kv_file", kv_base);
    int rc = 1;
    ds4_error err = {0};
    if (!root) {
        fprintf(stderr, "ds4: /save: out of memory\n");
        goto out;
    }
    /* The seed as a decimal string: JSON integers are signed 64-bit, seeds use all 64 bits. */
    char seed[24];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)st->o->sp.seed);
    json_object_set_new(root, "seed", json_string(seed));
    /* Snapshot first: a JSON file never names a .kv that was not written. */
    if (ds4_session_pos(st->sess) > 0 && ds4_session_save_file(st->sess, kv, &err)) {
        fprintf(stderr, "ds4: /save: %s\n", err.msg);
        goto out;
    }
    if (ds4_session_pos(st->sess) == 0) {
        remove(kv);
        json_object_set_new(root, "kv_file", json_null());
    }
    char *tmp = malloc(n + 8);
    if (!tmp) goto out;
    snprintf(tmp, n + 8, "%s.tmp", path);
    if (json_dump_file(root, tmp, JSON_INDENT(1)) != 0 || rename(tmp, path) != 0) {
        fprintf(stderr, "ds4: /save: cannot write %s: %s\n", path, strerror(errno));
        remove(tmp);
        free(tmp);
        goto out;
    }
    free(tmp);
    fprintf(stderr, "ds4: saved %u turns (%u tokens) to %s%s%s\n", st->n_turns, st->n_header + st->n_body, path,
            ds4_session_pos(st->sess) ? " + " : "", ds4_session_pos(st->sess) ? kv : "");
    rc = 0;
out:
    json_decref(root);
    free(kv);
    return rc;
}

int chat_load(chat_state *st, const char *path) {
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    int rc = 1;
    int32_t *header = NULL, *body = NULL;
    uint32_t n_header = 0, n_body = 0;
    char *kv = NULL;
    if (!root) {
        fprintf(stderr, "ds4: /load: %s:%d:%d: %s\n", path, je.line, je.column, je.text);
        return 1;
    }
    const char *format = json_string_value(json_object_get(root, "format"));
    const char *model_id = json_string_value(json_object_get(root, "model_id"));
    const char *thinking = json_string_value(json_object_get(root, "thinking"));
    const char *system = json_string_value(json_object_get(root, "system"));
    const char *kv_file = json_string_value(json_object_get(root, "kv_file"));
    json_t *msgs = json_object_get(root, "messages");
    json_t *turns = json_object_get(root, "n_turns");
    if (!format || strcmp(format, "ds4-chat") != 0 || json_integer_value(json_object_get(root, "version")) != 1) {
        fprintf(stderr, "ds4: /load: %s is not a ds4 conversation (format \"ds4-chat\", version 1)\n", path);
        goto out;
    }
    if (!thinking || !system || !json_is_array(msgs) || !json_is_integer(turns) || json_integer_value(turns) < 0 ||
        json_integer_value(turns) > UINT32_MAX) {
        fprintf(stderr, "ds4: /load: %s lacks thinking, system, messages or n_turns\n", path);
        goto out;
    }
    int mode = -1;
    for (int i = 0; i < 3; i++)
        if (!strcmp(thinking, k_thinking[i])) mode = i;
    if (mode < 0) {
        fprintf(stderr, "ds4: /load: %s: thinking \"%s\" is not none, high or max\n", path, thinking);
        goto out;
    }
    if (ids_from_json(json_object_get(root, "header_tokens"), st->info.n_vocab, st->n_ctx + 1, &header, &n_header,
                      "header_tokens", path) ||
        ids_from_json(json_object_get(root, "body_tokens"), st->info.n_vocab, st->n_ctx + 1, &body, &n_body,
                      "body_tokens", path))
        goto out;
    if (n_header == 0 || header[0] != st->id_bos || (uint64_t)n_header + n_body > st->n_ctx + 1ull) {
        fprintf(stderr, "ds4: /load: %s: the transcript (%u tokens) does not start with BOS or exceeds the "
                        "context of %u\n", path, n_header + n_body, st->n_ctx);
        goto out;
    }
    if (!model_id || strcmp(model_id, st->model_id) != 0)
        fprintf(stderr, "ds4: /load: note: %s was saved with another model; its snapshot will not load\n", path);
    char *sys = strdup(system);
    json_t *m = json_deep_copy(msgs);
    /* The leading system message mirrors "system"; the turns follow it. */
    const char *r0 = json_string_value(json_object_get(json_array_get(m, 0), "role"));
    if (m && r0 && !strcmp(r0, "system")) json_array_remove(m, 0);
    if (!sys || !m) {
        free(sys);
        json_decref(m);
        goto out;
    }
    free(st->system);
    st->system = sys;
    json_decref(st->msgs);
    st->msgs = m;
    free(st->header);
    st->header = header;
    st->n_header = n_header;
    header = NULL;
    free(st->body);
    st->body = body;
    st->n_body = st->cap_body = n_body;
    if (!n_body) st->cap_body = 0, free(body), st->body = NULL;
    body = NULL;
    st->n_turns = (uint32_t)json_integer_value(turns);
    st->thinking = (ds4_thinking)mode;
    ds4_session_reset(st->sess);
    /* The snapshot lives beside the JSON file. */
    if (kv_file && !strchr(kv_file, '/')) {
        const char *slash = strrchr(path, '/');
        size_t dir = slash ? (size_t)(slash - path) + 1 : 0;
        kv = malloc(dir + strlen(kv_file) + 1);
        if (!kv) goto out;
        memcpy(kv, path, dir);
        strcpy(kv + dir, kv_file);
        ds4_error err = {0};
        uint32_t nl = 0;
        if (ds4_session_load_file(st->sess, kv, &err) != DS4_OK) {
            fprintf(stderr, "ds4: /load: snapshot %s not used (the next turn prefills the transcript): %s\n", kv,
                    err.msg);
            ds4_session_reset(st->sess);
        } else {
            const int32_t *live = ds4_session_tokens(st->sess, &nl);
            bool prefix = nl <= n_header + n_body;
            for (uint32_t i = 0; prefix && i < nl; i++)
                prefix = live[i] == (i < n_header ? st->header[i] : st->body[i - n_header]);
            if (!prefix) {
                fprintf(stderr, "ds4: /load: snapshot %s does not match the transcript; not used\n", kv);
                ds4_session_reset(st->sess);
                nl = 0;
            }
        }
        fprintf(stderr, "ds4: loaded %u turns (%u tokens, %u of them restored without prefill) from %s\n",
                st->n_turns, n_header + n_body, nl, path);
    } else {
        fprintf(stderr, "ds4: loaded %u turns (%u tokens; no snapshot) from %s\n", st->n_turns, n_header + n_body,
                path);
    }
    rc = 0;
out:
    free(header);
    free(body);
    free(kv);
    json_decref(root);
    return rc;
}
