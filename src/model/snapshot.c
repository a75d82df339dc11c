/*
 * model/snapshot.c — builds and validates the snapshot container described in snapshot.h.
 * Never allocates from a size read out of a snapshot: parsing only produces views into the
 * caller's buffer after every size has been checked against its length.
 */
#include "model/snapshot.h"

#include <openssl/sha.h>
#include <string.h>

#include "core/error.h"
#include "core/safemath.h"

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get_u64(const uint8_t *p) {
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

void snap_id_hex(const uint8_t *id, unsigned n, char *out) {
    static const char hx[] = "0123456789abcdef";
    for (unsigned i = 0; i < n; i++) {
        out[2 * i] = hx[id[i] >> 4];
        out[2 * i + 1] = hx[id[i] & 15];
    }
    out[2 * n] = '\0';
}

/* header + 4T + 4V + P + hash, each step overflow-checked. */
static bool total_of(uint32_t n_tokens, uint32_t n_vocab, uint64_t payload_bytes, uint64_t *out) {
    uint64_t t = SNAP_HEADER_BYTES + SNAP_HASH_BYTES;
    return ds4_add_u64(&t, t, 4ull * n_tokens) && ds4_add_u64(&t, t, 4ull * n_vocab) &&
           ds4_add_u64(&t, t, payload_bytes) && (*out = t, true);
}

ds4_status snap_total_bytes(const snap_meta *m, uint64_t *out, ds4_error *err) {
    if (!total_of(m->n_tokens, m->n_vocab, m->payload_bytes, out))
        return ds4_seterr(err, DS4_ERR_NOMEM, "snapshot: size of %u tokens + %llu payload bytes overflows",
                          m->n_tokens, (unsigned long long)m->payload_bytes);
    return DS4_OK;
}

ds4_status snap_write_head(uint8_t *buf, uint64_t total, const snap_meta *m, const int32_t *tokens,
                           const float *logits, uint8_t **payload_at, ds4_error *err) {
    uint64_t want;
    ds4_status st = snap_total_bytes(m, &want, err);
    if (st != DS4_OK) return st;
    if (want != total || (m->n_vocab && !logits) || (m->n_tokens && !tokens))
        return ds4_seterr(err, DS4_ERR_INTERNAL, "snapshot: buffer of %llu bytes for a %llu-byte snapshot",
                          (unsigned long long)total, (unsigned long long)want);
    memset(buf, 0, SNAP_HEADER_BYTES);
    memcpy(buf, SNAP_MAGIC, 8);
    put_u32(buf + 8, SNAP_VERSION);
    put_u32(buf + 12, SNAP_HEADER_BYTES);
    memcpy(buf + 16, m->model_id, 32);
    put_u32(buf + 48, m->n_ctx);
    put_u32(buf + 52, m->n_tokens);
    put_u32(buf + 56, m->n_vocab);
    put_u32(buf + 60, m->n_vocab ? SNAP_FLAG_LOGITS : 0);
    put_u32(buf + 64, m->payload_version);
    put_u64(buf + 72, m->payload_bytes);
    put_u64(buf + 80, total);
    uint8_t *p = buf + SNAP_HEADER_BYTES;
    for (uint32_t i = 0; i < m->n_tokens; i++, p += 4) put_u32(p, (uint32_t)tokens[i]);
    for (uint32_t i = 0; i < m->n_vocab; i++, p += 4) {
        uint32_t bits;
        memcpy(&bits, &logits[i], 4);
        put_u32(p, bits);
    }
    *payload_at = p;
    return DS4_OK;
}

void snap_seal(uint8_t *buf, uint64_t total) {
    SHA256(buf, (size_t)(total - SNAP_HASH_BYTES), buf + total - SNAP_HASH_BYTES);
}

ds4_status snap_parse(snap_view *v, const uint8_t *buf, uint64_t n, ds4_error *err) {
    if (!v || (!buf && n)) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "snapshot: NULL argument");
    memset(v, 0, sizeof *v);
    if (n < 8 || memcmp(buf, SNAP_MAGIC, 8) != 0)
        return ds4_seterr(err, DS4_ERR_FORMAT, "snapshot: not a ds4 snapshot (%s)",
                          n < 8 ? "shorter than its magic" : "magic is not \"DS4SNAP\"");
    if (n < 16)
        return ds4_seterr(err, DS4_ERR_FORMAT, "snapshot: truncated: %llu bytes, a header needs %u",
                          (unsigned long long)n, SNAP_HEADER_BYTES + SNAP_HASH_BYTES);
    uint32_t version = get_u32(buf + 8);
    if (version > SNAP_VERSION)
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED,
                          "snapshot: format version %u is newer than this build reads (%u)", version,
                          SNAP_VERSION);
    if (version == 0)
        return ds4_seterr(err, DS4_ERR_FORMAT, "snapshot: format version 0 is invalid");
    if (n < (uint64_t)SNAP_HEADER_BYTES + SNAP_HASH_BYTES)
        return ds4_seterr(err, DS4_ERR_FORMAT, "snapshot: truncated: %llu bytes, a header alone needs %u",
                          (unsigned long long)n, SNAP_HEADER_BYTES + SNAP_HASH_BYTES);
    uint32_t header_bytes = get_u32(buf + 12);
    if (header_bytes != SNAP_HEADER_BYTES)
        return ds4_seterr(err, DS4_ERR_FORMAT, "snapshot: header_bytes is %u, expected %u", header_bytes,
                          SNAP_HEADER_BYTES);
    snap_meta *m = &v->meta;
    memcpy(m->model_id, buf + 16, 32);
    m->n_ctx = get_u32(buf + 48);
    m->n_tokens = get_u32(buf + 52);
    m->n_vocab = get_u32(buf + 56);
    uint32_t flags = get_u32(buf + 60);
    m->payload_version = get_u32(buf + 64);
    m->payload_bytes = get_u64(buf + 72);
    uint64_t total = get_u64(buf + 80);
    if (flags & ~SNAP_FLAG_LOGITS)
        return ds4_seterr(err, DS4_ERR_FORMAT, "snapshot: unknown flag bits 0x%x", flags & ~SNAP_FLAG_LOGITS);
    if (get_u32(buf + 68) != 0 || get_u64(buf + 88) != 0)
        return ds4_seterr(err, DS4_ERR_FORMAT, "snapshot: reserved header fields are not zero");
    if (((flags & SNAP_FLAG_LOGITS) != 0) != (m->n_vocab != 0))
        return ds4_seterr(err, DS4_ERR_FORMAT, "snapshot: logits flag %u disagrees with n_vocab %u",
                          flags & SNAP_FLAG_LOGITS, m->n_vocab);
    if (m->n_tokens > m->n_ctx)
        return ds4_seterr(err, DS4_ERR_FORMAT, "snapshot: %u tokens exceed its own context %u", m->n_tokens,
                          m->n_ctx);
    uint64_t want;
    if (!total_of(m->n_tokens, m->n_vocab, m->payload_bytes, &want) || want != total)
        return ds4_seterr(err, DS4_ERR_FORMAT,
                          "snapshot: sizes (%u tokens, %u logits, %llu payload bytes) do not add up to "
                          "total_bytes %llu",
                          m->n_tokens, m->n_vocab, (unsigned long long)m->payload_bytes,
                          (unsigned long long)total);
    if (n < total)
        return ds4_seterr(err, DS4_ERR_FORMAT, "snapshot: truncated: header says %llu bytes, got %llu",
                          (unsigned long long)total, (unsigned long long)n);
    if (n > total)
        return ds4_seterr(err, DS4_ERR_FORMAT, "snapshot: %llu trailing bytes after the %llu-byte snapshot",
                          (unsigned long long)(n - total), (unsigned long long)total);
    uint8_t hash[SNAP_HASH_BYTES];
    SHA256(buf, (size_t)(total - SNAP_HASH_BYTES), hash);
    if (memcmp(hash, buf + total - SNAP_HASH_BYTES, SNAP_HASH_BYTES) != 0)
        return ds4_seterr(err, DS4_ERR_FORMAT, "snapshot: SHA-256 checksum mismatch (corrupt data)");
    v->tokens = buf + SNAP_HEADER_BYTES;
    v->logits = m->n_vocab ? v->tokens + 4ull * m->n_tokens : NULL;
    v->payload = v->tokens + 4ull * m->n_tokens + 4ull * m->n_vocab;
    return DS4_OK;
}

int32_t snap_token(const snap_view *v, uint32_t i) { return (int32_t)get_u32(v->tokens + 4ull * i); }

void snap_copy_logits(const snap_view *v, float *dst) {
    for (uint32_t i = 0; i < v->meta.n_vocab; i++) {
        uint32_t bits = get_u32(v->logits + 4ull * i);
        memcpy(&dst[i], &bits, 4);
    }
}
