/*
 * model/convert_source.c — the official checkpoint as a conversion source: binds every planned
 * tensor to its safetensors tensor(s), checks presence, dtype and shape up front (errors name
 * the tensor), and decodes rows to f32: F32/F16/BF16 widening, FP8 E4M3 x E8M0 128x128 block
 * scales, FP4 E2M1 x E8M0 per-32 scales, I64 tid2eid -> I32 (GGUF_LAYOUT §3.6, §4.7).
 * Must not: choose types, write files, or copy whole tensors (rows are decoded on demand).
 */
#include "model/convert.h"
#include "core/error.h"
#include "format/fp8.h"
#include "format/safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct binding {
    const st_tensor **w;     /* one per expert (1 for other tensors) */
    const st_tensor **scale; /* NULL entries when the source has no scale */
} binding;

struct cv_hf {
    st_file *st;
    const cv_plan *plan;
    binding *bind;           /* per plan tensor */
    uint64_t n_bind;         /* entries of bind (the plan may be freed before cv_hf_close) */
    uint8_t *used;           /* per checkpoint tensor */
    uint64_t bytes_read;     /* atomic */
};

ds4_status cv_hf_open(cv_hf **out, const char *dir, cv_shape *shape, ds4_error *err) {
    *out = NULL;
    cv_hf *hf = calloc(1, sizeof *hf);
    if (!hf) return ds4_seterr(err, DS4_ERR_NOMEM, "convert: out of memory");
    size_t n = strlen(dir);
    char *cfg = malloc(n + 16);
    ds4_status st;
    if (!cfg) {
        st = ds4_seterr(err, DS4_ERR_NOMEM, "convert: out of memory");
        goto out_fail;
    }
    snprintf(cfg, n + 16, "%s/config.json", dir);
    st = cv_shape_from_config(shape, cfg, err);
    free(cfg);
    if (st) goto out_fail;
    st = st_open(&hf->st, dir, err);
    if (st) goto out_fail;
    hf->used = calloc(st_count(hf->st) + 1, 1);
    if (!hf->used) {
        st = ds4_seterr(err, DS4_ERR_NOMEM, "convert: out of memory");
        goto out_fail;
    }
    *out = hf;
    return DS4_OK;
out_fail:
    cv_hf_close(hf);
    return st;
}

static void free_bindings(cv_hf *hf) {
    if (hf->bind)
        for (uint64_t i = 0; i < hf->n_bind; i++) {
            free(hf->bind[i].w);
            free(hf->bind[i].scale);
        }
    free(hf->bind);
    hf->bind = NULL;
    hf->n_bind = 0;
}

void cv_hf_close(cv_hf *hf) {
    if (!hf) return;
    free_bindings(hf);
    free(hf->used);
    st_close(hf->st);
    free(hf);
}

bool cv_hf_has_mtp(const cv_hf *hf) {
    for (size_t i = 0; i < st_count(hf->st); i++)
        if (strncmp(st_get(hf->st, i)->name, "mtp.0.", 6) == 0) return true;
    return false;
}

static void mark_used(cv_hf *hf, const st_tensor *t) {
    hf->used[t - st_get(hf->st, 0)] = 1;
}

static void shape_str(const st_tensor *t, char *buf, size_t cap) {
    size_t o = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < t->n_dims && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%llu", i ? ", " : "", (unsigned long long)t->shape[i]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

/* Checks that t has exactly dims {d0, d1} (d1 = 0 for a vector); size-1 dims are ignored on
 * both sides (§3.6 rule 2). */
static bool shape_is(const st_tensor *t, uint64_t rows, uint64_t cols) {
    uint64_t want[2], got[ST_MAX_DIMS];
    int nw = 0, ng = 0;
    if (rows != 1) want[nw++] = rows;
    if (cols != 1) want[nw++] = cols;
    for (int i = 0; i < t->n_dims; i++)
        if (t->shape[i] != 1) got[ng++] = t->shape[i];
    if (nw != ng) return false;
    for (int i = 0; i < nw; i++)
        if (want[i] != got[i]) return false;
    return true;
}

static ds4_status shape_error(const cv_tensor *pt, const st_tensor *t, uint64_t rows,
                              uint64_t cols, ds4_error *err) {
    char got[128];
    shape_str(t, got, sizeof got);
    return ds4_seterr(err, DS4_ERR_FORMAT,
                      "checkpoint: tensor '%s' (for %s) has shape %s, config.json implies [%llu, %llu]",
                      t->name, pt->name, got, (unsigned long long)rows, (unsigned long long)cols);
}

static const st_tensor *need(cv_hf *hf, const cv_tensor *pt, const char *name, ds4_error *err,
                             ds4_status *st) {
    const st_tensor *t = st_find(hf->st, name);
    if (!t) {
        *st = ds4_seterr(err, DS4_ERR_NOT_FOUND, "checkpoint: tensor '%s' (for %s) is missing", name,
                         pt->name);
        return NULL;
    }
    mark_used(hf, t);
    return t;
}

/* "<x>.weight" -> "<x>.scale" (the FP8/FP4 sibling, §4.7). */
static void scale_name(const char *w, char *out, size_t cap) {
    size_t n = strlen(w);
    if (n > 7 && strcmp(w + n - 7, ".weight") == 0)
        snprintf(out, cap, "%.*s.scale", (int)(n - 7), w);
    else
        snprintf(out, cap, "%s.scale", w);
}

static ds4_status bind_float(cv_hf *hf, const cv_tensor *pt, binding *b, ds4_error *err) {
    ds4_status st = DS4_OK;
    uint64_t in = pt->ne[0], out = pt->n_dims >= 2 ? pt->ne[1] : 1;
    const st_tensor *t = need(hf, pt, pt->hf, err, &st);
    if (!t) return st;
    if (!shape_is(t, out, in)) return shape_error(pt, t, out, in, err);
    b->w[0] = t;
    switch (t->dtype) {
    case ST_F32: case ST_F16: case ST_BF16:
        return DS4_OK;
    case ST_F8_E4M3: {
        char sn[CV_NAME_MAX + 8];
        scale_name(pt->hf, sn, sizeof sn);
        const st_tensor *s = need(hf, pt, sn, err, &st);
        if (!s) return st;
        uint64_t sr = (out + 127) / 128, sc = (in + 127) / 128;
        if (s->dtype != ST_F8_E8M0)
            return ds4_seterr(err, DS4_ERR_FORMAT, "checkpoint: tensor '%s' has dtype %s, expected F8_E8M0",
                              sn, st_dtype_name(s->dtype));
        if (!shape_is(s, sr, sc) || s->n_elements != sr * sc) return shape_error(pt, s, sr, sc, err);
        b->scale[0] = s;
        return DS4_OK;
    }
    default:
        return ds4_seterr(err, DS4_ERR_FORMAT,
                          "checkpoint: tensor '%s' (for %s) has dtype %s; expected F32, F16, BF16 or "
                          "F8_E4M3 with a .scale",
                          t->name, pt->name, st_dtype_name(t->dtype));
    }
}

static ds4_status bind_experts(cv_hf *hf, const cv_tensor *pt, binding *b, ds4_error *err) {
    ds4_status st = DS4_OK;
    uint64_t in = pt->ne[0], out = pt->ne[1];
    if (in % 32 != 0)
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED,
                          "checkpoint: %s: FP4 experts need an input width divisible by 32, got %llu",
                          pt->name, (unsigned long long)in);
    for (uint32_t e = 0; e < pt->ne[2]; e++) {
        char wn[CV_NAME_MAX + 16], sn[CV_NAME_MAX + 24];
        snprintf(wn, sizeof wn, pt->hf, e);
        scale_name(wn, sn, sizeof sn);
        const st_tensor *w = need(hf, pt, wn, err, &st);
        if (!w) return st;
        if (w->dtype != ST_I8)
            return ds4_seterr(err, DS4_ERR_FORMAT,
                              "checkpoint: tensor '%s' has dtype %s; routed experts must be I8 "
                              "(packed FP4) with a .scale",
                              wn, st_dtype_name(w->dtype));
        if (w->n_dims != 2 || w->shape[0] != out || w->shape[1] * 2 != in)
            return shape_error(pt, w, out, in / 2, err);
        const st_tensor *s = need(hf, pt, sn, err, &st);
        if (!s) return st;
        if (s->dtype != ST_F8_E8M0)
            return ds4_seterr(err, DS4_ERR_FORMAT, "checkpoint: tensor '%s' has dtype %s, expected F8_E8M0",
                              sn, st_dtype_name(s->dtype));
        if (s->n_dims != 2 || s->shape[0] != out || s->shape[1] != in / 32)
            return shape_error(pt, s, out, in / 32, err);
        b->w[e] = w;
        b->scale[e] = s;
    }
    return DS4_OK;
}

static ds4_status bind_table(cv_hf *hf, const cv_tensor *pt, binding *b, ds4_error *err) {
    ds4_status st = DS4_OK;
    const st_tensor *t = need(hf, pt, pt->hf, err, &st);
    if (!t) return st;
    if (t->dtype != ST_I64 && t->dtype != ST_I32)
        return ds4_seterr(err, DS4_ERR_FORMAT, "checkpoint: tensor '%s' has dtype %s, expected I64",
                          t->name, st_dtype_name(t->dtype));
    /* HF [vocab, n_used] -> GGUF [n_used, vocab]: same bytes order (§3.5). */
    if (t->n_dims != 2 || t->shape[0] != pt->ne[1] || t->shape[1] != pt->ne[0])
        return shape_error(pt, t, pt->ne[1], pt->ne[0], err);
    b->w[0] = t;
    return DS4_OK;
}

ds4_status cv_hf_check_plan(cv_hf *hf, const cv_plan *plan, ds4_error *err) {
    free_bindings(hf);
    memset(hf->used, 0, st_count(hf->st) + 1);
    hf->plan = plan;
    hf->bind = calloc(plan->n ? plan->n : 1, sizeof *hf->bind);
    if (!hf->bind) return ds4_seterr(err, DS4_ERR_NOMEM, "convert: out of memory");
    hf->n_bind = plan->n;
    for (uint64_t i = 0; i < plan->n; i++) {
        const cv_tensor *pt = &plan->t[i];
        uint64_t n = pt->src == CV_SRC_EXPERTS ? pt->ne[2] : 1;
        binding *b = &hf->bind[i];
        b->w = calloc(n, sizeof *b->w);
        b->scale = calloc(n, sizeof *b->scale);
        if (!b->w || !b->scale) return ds4_seterr(err, DS4_ERR_NOMEM, "convert: out of memory");
        ds4_status st = pt->src == CV_SRC_EXPERTS ? bind_experts(hf, pt, b, err)
                        : pt->src == CV_SRC_TID2EID ? bind_table(hf, pt, b, err)
                                                    : bind_float(hf, pt, b, err);
        if (st) return st;
    }
    return DS4_OK;
}

uint64_t cv_hf_unused(const cv_hf *hf, const cv_plan *plan, const char **first) {
    (void)plan;
    uint64_t n = 0;
    *first = NULL;
    for (size_t i = 0; i < st_count(hf->st); i++)
        if (!hf->used[i]) {
            if (!n) *first = st_get(hf->st, i)->name;
            n++;
        }
    return n;
}

/* ---- decoding ---------------------------------------------------------------------------------- */

static float load_f32(const uint8_t *p) {
    float f;
    memcpy(&f, p, 4);
    return f;
}

static uint16_t load_u16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return h;
}

/* E4M3 NaN (magnitude 0x7F) decodes to 0 in the converter (§4.7). */
static float e4m3(uint8_t b) {
    return (b & 0x7F) == 0x7F ? 0.0f : fp_e4m3_to_f32(b);
}

static ds4_status hf_read_rows(void *ctx, const cv_tensor *t, uint32_t expert, uint64_t row0,
                               uint64_t n_rows, float *dst, ds4_error *err) {
    cv_hf *hf = ctx;
    const binding *b = &hf->bind[t - hf->plan->t];
    uint64_t in = t->ne[0];
    if (t->src == CV_SRC_EXPERTS) {
        if (expert >= t->ne[2])
            return ds4_seterr(err, DS4_ERR_INTERNAL, "convert: %s: expert %u out of range", t->name, expert);
        const st_tensor *w = b->w[expert], *s = b->scale[expert];
        for (uint64_t r = row0; r < row0 + n_rows; r++) {
            const uint8_t *wr = w->data + r * (in / 2), *sr = s->data + r * (in / 32);
            float *d = dst + (r - row0) * in;
            for (uint64_t c = 0; c < in; c += 2) {
                float sc = fp_e8m0_to_f32(sr[c / 32]);
                /* Low nibble = even column, high nibble = odd column (§4.7, §8 #12). */
                d[c] = fp_e2m1_to_f32(wr[c / 2] & 0x0F) * sc;
                d[c + 1] = fp_e2m1_to_f32(wr[c / 2] >> 4) * sc;
            }
        }
        __atomic_fetch_add(&hf->bytes_read, n_rows * (in / 2 + in / 32), __ATOMIC_RELAXED);
        return DS4_OK;
    }
    const st_tensor *w = b->w[0];
    uint64_t n = n_rows * in, first = row0 * in;
    switch (w->dtype) {
    case ST_F32:
        for (uint64_t i = 0; i < n; i++) dst[i] = load_f32(w->data + 4 * (first + i));
        break;
    case ST_F16:
        for (uint64_t i = 0; i < n; i++) dst[i] = fp_f16_to_f32(load_u16(w->data + 2 * (first + i)));
        break;
    case ST_BF16:
        for (uint64_t i = 0; i < n; i++) dst[i] = fp_bf16_to_f32(load_u16(w->data + 2 * (first + i)));
        break;
    case ST_F8_E4M3: {
        const st_tensor *s = b->scale[0];
        uint64_t sc_cols = (in + 127) / 128;
        for (uint64_t r = row0; r < row0 + n_rows; r++) {
            const uint8_t *wr = w->data + r * in, *sr = s->data + (r / 128) * sc_cols;
            float *d = dst + (r - row0) * in;
            for (uint64_t c = 0; c < in; c++) d[c] = e4m3(wr[c]) * fp_e8m0_to_f32(sr[c / 128]);
        }
        break;
    }
    default:
        return ds4_seterr(err, DS4_ERR_INTERNAL, "convert: %s: unexpected dtype", t->name);
    }
    __atomic_fetch_add(&hf->bytes_read, n * st_dtype_size(w->dtype), __ATOMIC_RELAXED);
    return DS4_OK;
}

static ds4_status hf_read_table(void *ctx, const cv_tensor *t, int32_t *dst, ds4_error *err) {
    cv_hf *hf = ctx;
    const st_tensor *w = hf->bind[t - hf->plan->t].w[0];
    uint64_t n = t->ne[0] * t->ne[1];
    /* Entries are expert ids of this layer (§3.5): the routed tensors' ne[2]. */
    int64_t n_experts = INT32_MAX;
    for (uint64_t i = 0; i < hf->plan->n; i++)
        if (hf->plan->t[i].layer == t->layer && hf->plan->t[i].fam == CV_FAM_GATE)
            n_experts = (int64_t)hf->plan->t[i].ne[2];
    for (uint64_t i = 0; i < n; i++) {
        int64_t v;
        if (w->dtype == ST_I64) {
            memcpy(&v, w->data + 8 * i, 8);
        } else {
            int32_t v32;
            memcpy(&v32, w->data + 4 * i, 4);
            v = v32;
        }
        /* Stronger than "fits int32" (§3.6 rule 6): a bad id would index past the experts. */
        if (v < 0 || v >= n_experts)
            return ds4_seterr(err, DS4_ERR_FORMAT,
                              "checkpoint: tensor '%s': entry %llu = %lld is not an expert id "
                              "(0..%lld)",
                              w->name, (unsigned long long)i, (long long)v, (long long)n_experts - 1);
        dst[i] = (int32_t)v;
    }
    __atomic_fetch_add(&hf->bytes_read, w->n_bytes, __ATOMIC_RELAXED);
    return DS4_OK;
}

static uint64_t hf_bytes_read(void *ctx) {
    cv_hf *hf = ctx;
    return __atomic_load_n(&hf->bytes_read, __ATOMIC_RELAXED);
}

void cv_hf_source(cv_hf *hf, cv_source *src) {
    memset(src, 0, sizeof *src);
    src->ctx = hf;
    src->read_rows = hf_read_rows;
    src->read_table = hf_read_table;
    src->bytes_read = hf_bytes_read;
}
