/* core/error.c — ds4_error formatting and status names. Owns no state. */
#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *ds4_status_str(ds4_status st) {
    switch (st) {
    case DS4_OK: return "ok";
    case DS4_ERR_INVALID_ARG: return "invalid argument";
    case DS4_ERR_IO: return "I/O error";
    case DS4_ERR_FORMAT: return "format error";
    case DS4_ERR_UNSUPPORTED: return "unsupported";
    case DS4_ERR_NOMEM: return "out of memory";
    case DS4_ERR_RANGE: return "out of range";
    case DS4_ERR_STATE: return "invalid state";
    case DS4_ERR_NOT_FOUND: return "not found";
    case DS4_ERR_CANCELLED: return "cancelled";
    case DS4_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

const char *ds4_version(void) { return DS4_VERSION_STRING; }

ds4_status ds4_seterr(ds4_error *err, ds4_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

ds4_status ds4_err_prefix(ds4_error *err, const char *fmt, ...) {
    if (!err) return DS4_ERR_INTERNAL;
    char prefix[256], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    /* Truncation is fine: the most specific part is already at the end of `old`. */
    size_t n = strlen(prefix);
    if (n > sizeof err->msg - 3) n = sizeof err->msg - 3;
    memcpy(err->msg, prefix, n);
    err->msg[n] = ':';
    err->msg[n + 1] = ' ';
    size_t room = sizeof err->msg - (n + 2) - 1, olen = strlen(old);
    if (olen > room) olen = room;
    memcpy(err->msg + n + 2, old, olen);
    err->msg[n + 2 + olen] = '\0';
    return err->code;
}

void ds4_err_clear(ds4_error *err) {
    if (err) {
        err->code = DS4_OK;
        err->msg[0] = '\0';
    }
}
