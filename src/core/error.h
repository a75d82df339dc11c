/*
 * core/error.h — filling a ds4_error. Library code reports every failure through these and
 * returns the status; it never prints, exits or aborts (STYLE.md §3).
 */
#ifndef DS4_CORE_ERROR_H
#define DS4_CORE_ERROR_H

#include "ds4.h"

#if defined(__GNUC__)
#define DS4_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define DS4_PRINTF(a, b)
#endif

/* Sets err (if non-NULL) to code + formatted message; returns code so callers can
 * `return ds4_seterr(err, DS4_ERR_FORMAT, "gguf: ...")`. */
ds4_status ds4_seterr(ds4_error *err, ds4_status code, const char *fmt, ...) DS4_PRINTF(3, 4);

/* Prepends "prefix: " to an existing message (adds context on the way up); returns err->code. */
ds4_status ds4_err_prefix(ds4_error *err, const char *fmt, ...) DS4_PRINTF(2, 3);

/* Clears err to DS4_OK / "". */
void ds4_err_clear(ds4_error *err);

#endif
