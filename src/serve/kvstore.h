/*
 * serve/kvstore.h — the disk KV cache (--kv-disk-dir): session snapshots keyed by SHA-256 of
 * the token-id prefix they hold, so a request resumes from the longest cached prefix, also after
 * a restart (issue #6; ideas from GGUF_LAYOUT §6 and SERVER_CLI §6.4-§6.9, but keyed by token
 * ids instead of SHA-1 of text). Owns the directory, the file format, validation and eviction;
 * must not interpret the snapshot payload (the engine validates it on load).
 *
 * File <64 hex>.kv, all integers little-endian:
 *   0  8  magic "DS4KVC\r\n"          8  4  version (1)        12 4  flags (0)
 *   16 8  last_used (Unix s)  \ mutable, outside the checksum: updated in place on hits
 *   24 4  hits                /                                 28 4  reserved (0)
 *   32 8  created (Unix s)    40 8  n_tokens    48 8  payload_bytes    56 8  trailer_bytes
 *   64 4  model_id_len (1..1024)   68 ...  model_id, u32 tokens[n_tokens], payload, trailer
 *   end-32  SHA-256 of bytes [32, end-32)
 * Invariants:
 *  1. A file is written to "<name>.tmp.<pid>.<n>", fsynced, renamed, then the directory is
 *     fsynced: readers see whole files or none.
 *  2. A file whose size, model id, name hash or checksum disagrees is deleted, never loaded.
 *  3. After every store the sum of file sizes is <= the budget (the new file is kept unless it
 *     alone exceeds it); eviction removes the lowest (decayed hits + 1) × tokens / bytes first.
 */
#ifndef DS4_SERVE_KVSTORE_H
#define DS4_SERVE_KVSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ds4.h"
#include "serve/metrics.h"

typedef struct srv_kvstore srv_kvstore;

typedef struct srv_kv_entry {
    int32_t *tokens;
    size_t n_tokens;
    unsigned char *payload;     /* engine snapshot */
    size_t payload_bytes;
    unsigned char *trailer;     /* tool-id map (toolids.h export format) */
    size_t trailer_bytes;
} srv_kv_entry;

/* Creates dir (0700) if needed, removes stale temp files, indexes valid-looking files and
 * enforces the budget. metrics may be NULL. */
ds4_status srv_kv_open(srv_kvstore **out, const char *dir, uint64_t budget_bytes, const char *model_id,
                       srv_metrics *metrics, ds4_error *err);
void srv_kv_close(srv_kvstore *kv);

/* Stores a snapshot of tokens[0..n). Replaces an existing file for the same prefix. */
ds4_status srv_kv_save(srv_kvstore *kv, const int32_t *tokens, size_t n, const void *payload,
                       size_t payload_bytes, const void *trailer, size_t trailer_bytes, ds4_error *err);

/* Finds the longest stored prefix of tokens[0..n) with at least min_tokens tokens, verifies and
 * loads it into *out (caller frees with srv_kv_entry_free). false when none is usable. */
bool srv_kv_lookup(srv_kvstore *kv, const int32_t *tokens, size_t n, size_t min_tokens, srv_kv_entry *out);
void srv_kv_entry_free(srv_kv_entry *e);

/* Calls fn with the trailer (tool-id map) of every indexed file that has one; used at startup
 * so exact-DSML replay survives restarts. Returns the number of trailers passed. */
size_t srv_kv_each_trailer(srv_kvstore *kv, void (*fn)(void *ud, const unsigned char *t, size_t n), void *ud);

/* Number of indexed files and their total bytes. */
size_t srv_kv_count(srv_kvstore *kv);
uint64_t srv_kv_bytes(srv_kvstore *kv);

/* Hex SHA-256 of the u32-LE token ids (the file name without ".kv"); out holds 65 bytes. */
void srv_kv_key(const int32_t *tokens, size_t n, char out[65]);

#endif
