/* core/mapfile.c — mmap of whole files and bounded whole-file reads. No parsing here. */
#include "core/mapfile.h"
#include "core/error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

ds4_status ds4_mapfile_open(ds4_mapfile *m, const char *path, ds4_error *err) {
    m->data = NULL;
    m->size_bytes = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ds4_seterr(err, DS4_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return ds4_seterr(err, DS4_ERR_IO, "%s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return ds4_seterr(err, DS4_ERR_IO, "%s: not a regular file", path);
    }
    if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return ds4_seterr(err, DS4_ERR_IO, "%s: mmap of %lld bytes failed: %s", path,
                              (long long)st.st_size, strerror(e));
        }
        m->data = p;
        m->size_bytes = (uint64_t)st.st_size;
    }
    close(fd);
    return DS4_OK;
}

void ds4_mapfile_close(ds4_mapfile *m) {
    if (m->data) munmap((void *)m->data, (size_t)m->size_bytes);
    m->data = NULL;
    m->size_bytes = 0;
}

ds4_status ds4_read_file(const char *path, uint64_t max_bytes, char **out, uint64_t *out_len,
                         ds4_error *err) {
    *out = NULL;
    if (out_len) *out_len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return ds4_seterr(err, DS4_ERR_IO, "%s: %s", path, strerror(errno));
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        fclose(f);
        return ds4_seterr(err, DS4_ERR_NOMEM, "%s: out of memory", path);
    }
    for (;;) {
        if (len == cap) {
            if ((uint64_t)cap >= max_bytes) {
                free(buf);
                fclose(f);
                return ds4_seterr(err, DS4_ERR_NOMEM, "%s: larger than the %llu-byte limit", path,
                                  (unsigned long long)max_bytes);
            }
            size_t ncap = cap * 2;
            if ((uint64_t)ncap > max_bytes) ncap = (size_t)max_bytes;
            char *nb = realloc(buf, ncap + 1);
            if (!nb) {
                free(buf);
                fclose(f);
                return ds4_seterr(err, DS4_ERR_NOMEM, "%s: out of memory", path);
            }
            buf = nb;
            cap = ncap;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return ds4_seterr(err, DS4_ERR_IO, "%s: read error", path);
    }
    buf[len] = '\0';
    *out = buf;
    if (out_len) *out_len = len;
    return DS4_OK;
}
