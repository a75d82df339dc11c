/*
 * core/mapfile.h — read-only memory mapping of a whole file (model weights are used in place,
 * GGUF_LAYOUT §1.6 #5). Knows nothing about file formats.
 */
#ifndef DS4_CORE_MAPFILE_H
#define DS4_CORE_MAPFILE_H

#include <stddef.h>
#include <stdint.h>
#include "ds4.h"

typedef struct ds4_mapfile {
    const uint8_t *data;  /* NULL for an empty file */
    uint64_t size_bytes;
} ds4_mapfile;

/* Maps `path` read-only. On success *m owns the mapping until ds4_mapfile_close. */
ds4_status ds4_mapfile_open(ds4_mapfile *m, const char *path, ds4_error *err);
void ds4_mapfile_close(ds4_mapfile *m);

/* Reads a whole (small) file into a malloc'd, NUL-terminated buffer; caller frees.
 * Refuses files larger than max_bytes with DS4_ERR_NOMEM naming the path. */
ds4_status ds4_read_file(const char *path, uint64_t max_bytes, char **out, uint64_t *out_len,
                         ds4_error *err);

#endif
