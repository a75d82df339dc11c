/*
 * serve/buf.h — growable byte buffer used by every server module to build response bodies,
 * SSE events and disk-cache files. Owns only memory growth; knows nothing about HTTP or JSON.
 * Appends never fail silently: on allocation failure the buffer is marked `oom` and later
 * appends are no-ops, so callers check once at the end (srv_buf_ok).
 */
#ifndef DS4_SERVE_BUF_H
#define DS4_SERVE_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct srv_buf {
    char *data;      /* NUL-terminated when len > 0 or after any append */
    size_t len;
    size_t cap;
    bool oom;
} srv_buf;

void srv_buf_init(srv_buf *b);
void srv_buf_free(srv_buf *b);
void srv_buf_clear(srv_buf *b);
void srv_buf_append(srv_buf *b, const void *data, size_t n);
void srv_buf_puts(srv_buf *b, const char *s);
void srv_buf_printf(srv_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Removes the first n bytes (n <= len). */
void srv_buf_consume(srv_buf *b, size_t n);
/* Hands the bytes to the caller (who frees them) and resets the buffer. NULL on oom. */
char *srv_buf_take(srv_buf *b, size_t *len);
static inline bool srv_buf_ok(const srv_buf *b) { return !b->oom; }

/* Little-endian writers for file formats. */
void srv_buf_u32(srv_buf *b, uint32_t v);
void srv_buf_u64(srv_buf *b, uint64_t v);

#endif
