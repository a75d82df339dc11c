/*
 * model/snapshot.h — the session snapshot container: a versioned, checksummed envelope around
 * the engine's raw state payload (the arrays of MODEL_MATH §13). Owns the byte layout, its
 * validation and the checksum; must not interpret the payload (model/ does) nor touch files
 * (model/session.c does).
 *
 * Layout v1 (all little-endian; ds4's KVC/DSV4 pair, GGUF_LAYOUT §6, folded into one
 * self-describing record with an identity and a checksum):
 *
 *   off  size  field
 *     0     8  magic "DS4SNAP\0"
 *     8     4  version (1)
 *    12     4  header_bytes (SNAP_HEADER_BYTES = 96; a reader refuses any other value)
 *    16    32  model_id: SHA-256 identity of the model (ds4_model_info.model_id)
 *    48     4  n_ctx: context size of the session that wrote it
 *    52     4  n_tokens: T, tokens in the stream
 *    56     4  n_vocab: logits row length, 0 when flags.bit0 is clear
 *    60     4  flags: bit0 = logits present; every other bit must be 0
 *    64     4  payload_version: the engine payload's own version (checked by model/)
 *    68     4  reserved, 0
 *    72     8  payload_bytes
 *    80     8  total_bytes: the whole snapshot, checksum included
 *    88     8  reserved, 0
 *    96  4*T   token ids (i32)
 *     …  4*V   logits after the last token (f32), when flags.bit0
 *     …     P  engine payload
 *   end-32 32  SHA-256 of every byte before it
 *
 * Validation order (first failure wins, each with its own message): length >= minimal size,
 * magic, version (0 = corrupt, > 1 = "future version"), header_bytes, reserved/flags, sizes add
 * up to total_bytes (overflow-checked), total_bytes == buffer length (truncated / trailing bytes),
 * checksum, then — by the caller — model identity, context and payload.
 */
#ifndef DS4_MODEL_SNAPSHOT_H
#define DS4_MODEL_SNAPSHOT_H

#include <stdbool.h>
#include <stdint.h>

#include "ds4.h"

#define SNAP_MAGIC "DS4SNAP"     /* 7 chars + NUL = 8 bytes */
#define SNAP_VERSION 1u
#define SNAP_HEADER_BYTES 96u
#define SNAP_HASH_BYTES 32u
#define SNAP_FLAG_LOGITS 1u

/* Everything but the arrays. */
typedef struct snap_meta {
    uint8_t model_id[32];
    uint32_t n_ctx;
    uint32_t n_tokens;
    uint32_t n_vocab;          /* 0 = no logits */
    uint32_t payload_version;
    uint64_t payload_bytes;
} snap_meta;

/* A parsed snapshot: views into the caller's buffer (tokens and logits may be unaligned; read
 * them with snap_token / snap_copy_logits). */
typedef struct snap_view {
    snap_meta meta;
    const uint8_t *tokens;     /* n_tokens * 4 bytes */
    const uint8_t *logits;     /* n_vocab * 4 bytes, NULL when absent */
    const uint8_t *payload;    /* payload_bytes */
} snap_view;

/* Total bytes of a snapshot with these sizes; DS4_ERR_NOMEM if it overflows 64 bits. */
ds4_status snap_total_bytes(const snap_meta *m, uint64_t *out, ds4_error *err);

/* Writes header, tokens and logits (NULL when m->n_vocab == 0) into buf[total], where total is
 * snap_total_bytes(m); returns in *payload_at where the caller writes m->payload_bytes bytes,
 * after which snap_seal computes the checksum. */
ds4_status snap_write_head(uint8_t *buf, uint64_t total, const snap_meta *m, const int32_t *tokens,
                           const float *logits, uint8_t **payload_at, ds4_error *err);
void snap_seal(uint8_t *buf, uint64_t total);

/* Validates buf[n_bytes] (everything in the order above except identity, which the caller
 * compares) and fills *v with views into buf. */
ds4_status snap_parse(snap_view *v, const uint8_t *buf, uint64_t n_bytes, ds4_error *err);

/* Token i of a parsed snapshot. */
int32_t snap_token(const snap_view *v, uint32_t i);
/* Copies the logits row into dst[n_vocab]. */
void snap_copy_logits(const snap_view *v, float *dst);

/* Lowercase hex of the first n bytes of id into out (2n+1 bytes), for messages. */
void snap_id_hex(const uint8_t *id, unsigned n, char *out);

#endif
