/*
 * model/convert_imatrix.c — reader for the legacy imatrix `.dat` (GGUF_LAYOUT §5.5):
 *   i32 n_entries; per entry: i32 name_len, name, i32 ncall, i32 n_values, f32 values[n_values];
 *   optional trailer: i32 chunks, i32 dataset_len, dataset bytes.
 * Every count is checked against the bytes left before anything is allocated.
 */
#include "model/convert_imatrix.h"
#include "core/error.h"
#include "core/mapfile.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct im_entry {
    char *name;
    uint64_t n_values;
    float *values;
} im_entry;

struct cv_imatrix {
    char *path;
    char *dataset;
    uint64_t chunks;
    uint64_t n;
    im_entry *e;
};

void cv_imatrix_free(cv_imatrix *im) {
    if (!im) return;
    for (uint64_t i = 0; i < im->n; i++) {
        free(im->e[i].name);
        free(im->e[i].values);
    }
    free(im->e);
    free(im->path);
    free(im->dataset);
    free(im);
}

uint64_t cv_imatrix_count(const cv_imatrix *im) { return im->n; }
const char *cv_imatrix_path(const cv_imatrix *im) { return im->path; }
const char *cv_imatrix_dataset(const cv_imatrix *im) { return im->dataset; }
uint64_t cv_imatrix_chunks(const cv_imatrix *im) { return im->chunks; }

typedef struct cursor {
    const uint8_t *p;
    uint64_t left;
} cursor;

static int rd_i32(cursor *c, int32_t *v) {
    if (c->left < 4) return 0;
    memcpy(v, c->p, 4);
    c->p += 4, c->left -= 4;
    return 1;
}

ds4_status cv_imatrix_parse(cv_imatrix **out, const uint8_t *data, uint64_t n_bytes,
                            const char *label, ds4_error *err) {
    *out = NULL;
    cursor c = {data, n_bytes};
    int32_t n;
    if (!rd_i32(&c, &n) || n < 0 || (uint64_t)n > n_bytes / 16)
        return ds4_seterr(err, DS4_ERR_FORMAT, "imatrix %s: bad entry count", label);
    cv_imatrix *im = calloc(1, sizeof *im);
    ds4_status st = DS4_OK;
    if (!im || !(im->path = strdup(label)) || !(im->e = calloc((size_t)n + 1, sizeof *im->e))) {
        cv_imatrix_free(im);
        return ds4_seterr(err, DS4_ERR_NOMEM, "imatrix: out of memory");
    }
    for (int32_t i = 0; i < n; i++) {
        int32_t len, ncall, nv;
        if (!rd_i32(&c, &len) || len <= 0 || (uint64_t)len > c.left || len > 4096) {
            st = ds4_seterr(err, DS4_ERR_FORMAT, "imatrix %s: entry %d: bad name length", label, i);
            goto out_fail;
        }
        im_entry *e = &im->e[im->n];
        e->name = strndup((const char *)c.p, (size_t)len);
        if (!e->name) {
            st = ds4_seterr(err, DS4_ERR_NOMEM, "imatrix: out of memory");
            goto out_fail;
        }
        im->n++;
        if (strlen(e->name) != (size_t)len) {
            st = ds4_seterr(err, DS4_ERR_FORMAT, "imatrix %s: entry %d: name contains NUL", label, i);
            goto out_fail;
        }
        c.p += len, c.left -= (uint64_t)len;
        if (!rd_i32(&c, &ncall) || !rd_i32(&c, &nv) || nv <= 0 || (uint64_t)nv > c.left / 4) {
            st = ds4_seterr(err, DS4_ERR_FORMAT, "imatrix %s: entry '%s': bad ncall/value count",
                            label, e->name);
            goto out_fail;
        }
        e->n_values = (uint64_t)nv;
        e->values = malloc((size_t)nv * sizeof(float));
        if (!e->values) {
            st = ds4_seterr(err, DS4_ERR_NOMEM, "imatrix: out of memory");
            goto out_fail;
        }
        memcpy(e->values, c.p, (size_t)nv * 4);
        c.p += (uint64_t)nv * 4, c.left -= (uint64_t)nv * 4;
        for (int32_t k = 0; k < nv; k++) {
            /* Divided by ncall when positive (§5.5). */
            if (ncall > 0) e->values[k] /= (float)ncall;
            if (!isfinite(e->values[k]) || e->values[k] < 0) {
                st = ds4_seterr(err, DS4_ERR_FORMAT, "imatrix %s: entry '%s': value %d is %g",
                                label, e->name, k, (double)e->values[k]);
                goto out_fail;
            }
        }
        for (uint64_t j = 0; j + 1 < im->n; j++)
            if (strcmp(im->e[j].name, e->name) == 0) {
                st = ds4_seterr(err, DS4_ERR_FORMAT, "imatrix %s: entry '%s' appears twice", label,
                                e->name);
                goto out_fail;
            }
    }
    if (c.left) {
        int32_t chunks, dlen;
        if (!rd_i32(&c, &chunks) || !rd_i32(&c, &dlen) || dlen < 0 || (uint64_t)dlen != c.left) {
            st = ds4_seterr(err, DS4_ERR_FORMAT, "imatrix %s: malformed trailer", label);
            goto out_fail;
        }
        im->chunks = chunks > 0 ? (uint64_t)chunks : 0;
        if (dlen > 0 && !(im->dataset = strndup((const char *)c.p, (size_t)dlen))) {
            st = ds4_seterr(err, DS4_ERR_NOMEM, "imatrix: out of memory");
            goto out_fail;
        }
    }
    *out = im;
    return DS4_OK;
out_fail:
    cv_imatrix_free(im);
    return st;
}

ds4_status cv_imatrix_load(cv_imatrix **out, const char *path, ds4_error *err) {
    char *buf = NULL;
    uint64_t len = 0;
    ds4_status st = ds4_read_file(path, 1ull << 32, &buf, &len, err);
    if (st) return st;
    st = cv_imatrix_parse(out, (const uint8_t *)buf, len, path, err);
    free(buf);
    return st;
}

static const im_entry *lookup(const cv_imatrix *im, const char *name) {
    for (uint64_t i = 0; i < im->n; i++)
        if (strcmp(im->e[i].name, name) == 0) return &im->e[i];
    return NULL;
}

ds4_status cv_imatrix_find(const cv_imatrix *im, const char *gguf_name, const char *hf_name,
                           uint32_t expert, uint64_t n_experts, uint64_t n_cols,
                           const float **out, ds4_error *err) {
    *out = NULL;
    char names[6][192];
    int nn = 0;
    const char *bases[2] = {gguf_name, hf_name};
    if (n_experts) {
        for (int b = 0; b < 2; b++)
            if (bases[b]) snprintf(names[nn++], sizeof names[0], "%s.expert.%u", bases[b], expert);
        for (int b = 0; b < 2; b++)
            if (bases[b]) snprintf(names[nn++], sizeof names[0], "%s.expert_%u", bases[b], expert);
    }
    for (int b = 0; b < 2; b++)
        if (bases[b]) snprintf(names[nn++], sizeof names[0], "%s", bases[b]);
    for (int i = 0; i < nn; i++) {
        const im_entry *e = lookup(im, names[i]);
        if (!e) continue;
        if (e->n_values == n_cols) {
            *out = e->values;
            return DS4_OK;
        }
        if (n_experts && e->n_values == n_cols * n_experts) {
            *out = e->values + (uint64_t)expert * n_cols;
            return DS4_OK;
        }
        return ds4_seterr(err, DS4_ERR_FORMAT,
                          "imatrix %s: entry '%s' has %llu values, tensor %s needs %llu%s", im->path,
                          e->name, (unsigned long long)e->n_values, gguf_name,
                          (unsigned long long)n_cols, n_experts ? " (or x experts)" : "");
    }
    return DS4_OK;
}
