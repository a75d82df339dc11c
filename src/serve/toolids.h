/*
 * serve/toolids.h — unguessable ids (tool calls, responses) and the exact-DSML tool memory:
 * id → the DSML block the model actually sampled, so the next turn re-renders identical bytes
 * and keeps the KV prefix (SERVER_CLI §5.3, §5.7). Owns id generation and the bounded LRU map;
 * must not parse or render DSML. Thread-safe (one mutex).
 */
#ifndef DS4_SERVE_TOOLIDS_H
#define DS4_SERVE_TOOLIDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ds4.h"
#include "serve/buf.h"

/* Writes prefix + 32 lowercase hex chars from 16 bytes of OpenSSL RAND_bytes (§3.2.8); out must
 * hold strlen(prefix) + 33 bytes. Returns false if the CSPRNG fails (never falls back to time). */
bool srv_random_id(char *out, size_t out_len, const char *prefix);

/* 64 random bits from the CSPRNG (sampling seeds when the client gives none). */
bool srv_random_u64(uint64_t *out);

typedef struct srv_toolmem srv_toolmem;

/* max_ids > 0, max_bytes > 0: least recently used entries are dropped beyond either. */
ds4_status srv_toolmem_create(srv_toolmem **out, size_t max_ids, size_t max_bytes, ds4_error *err);
void srv_toolmem_free(srv_toolmem *m);
/* Maps id → dsml (copied). Re-putting refreshes recency; a different block replaces it. */
bool srv_toolmem_put(srv_toolmem *m, const char *id, const char *dsml, size_t dsml_len);
/* Copies the block for id into out (appends); false when unknown. Touches recency. */
bool srv_toolmem_get(srv_toolmem *m, const char *id, srv_buf *out);
size_t srv_toolmem_count(srv_toolmem *m);
size_t srv_toolmem_bytes(srv_toolmem *m);
/* Serializes entries whose DSML occurs in `text` (for disk-cache trailers): u32 count, then
 * per entry u32 id_len, u32 dsml_len, id, dsml. */
void srv_toolmem_export(srv_toolmem *m, const char *text, size_t text_len, srv_buf *out);
/* Loads entries written by srv_toolmem_export; stops at the first malformed entry. Returns the
 * number loaded. */
size_t srv_toolmem_import(srv_toolmem *m, const unsigned char *data, size_t len);

#endif
