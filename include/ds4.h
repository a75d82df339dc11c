/*
 * ds4.h — the one public header of libds4, an inference engine for DeepSeek V4 Flash.
 *
 * Conventions (STYLE.md §2):
 *  - Opaque handles with paired lifetimes (open/close, create/free); out-param first.
 *  - Every fallible call returns ds4_status and fills a caller-owned ds4_error
 *    (nullable). There is no hidden last-error state: server threads share one engine.
 *  - Every returned pointer says who frees it and how long it lives.
 *  - Sizes carry their unit in the name: _bytes, n_ (elements), n_tokens, pos (0-based).
 */
#ifndef DS4_H
#define DS4_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DS4_VERSION_STRING "0.1.0"

/* ---- Errors ------------------------------------------------------------------------------ */

typedef enum ds4_status {
    DS4_OK = 0,
    DS4_ERR_INVALID_ARG,   /* caller passed something out of contract */
    DS4_ERR_IO,            /* open/read/write/mmap failed (errno text in the message) */
    DS4_ERR_FORMAT,        /* a file or payload is malformed, truncated or inconsistent */
    DS4_ERR_UNSUPPORTED,   /* well-formed but not something ds4 handles (type, version, shape) */
    DS4_ERR_NOMEM,         /* allocation failed or a requested size is out of bounds */
    DS4_ERR_RANGE,         /* a position/count exceeds a limit (e.g. context overflow) */
    DS4_ERR_STATE,         /* call not valid in the object's current state */
    DS4_ERR_NOT_FOUND,     /* a named key, tensor or file does not exist */
    DS4_ERR_CANCELLED,     /* stopped on request */
    DS4_ERR_INTERNAL       /* a bug: an invariant did not hold */
} ds4_status;

/* Caller-owned error record. `msg` says what, where, expected and got. */
typedef struct ds4_error {
    ds4_status code;
    char msg[512];
} ds4_error;

/* Static English name of a status ("format error", ...). Never NULL. */
const char *ds4_status_str(ds4_status st);

/* ---- Library ----------------------------------------------------------------------------- */

/* Version string of the library; static. */
const char *ds4_version(void);

/* ---- Tokenizer (src/text/tokenizer.c) ---------------------------------------------------- */

/* ---- Chat encoding and DSML (src/text/chat.c, src/text/dsml.c) --------------------------- */

/* ---- Engine and sessions (src/model/) ------------------------------------------------------ */

/* ---- Sampling (src/model/sampling.c) ------------------------------------------------------- */

#ifdef __cplusplus
}
#endif

#endif /* DS4_H */
