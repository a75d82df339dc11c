/*
 * model/kvstate.c — session attention state: allocation, reset, raw payload.
 *
 * Payload (little-endian host order, all u64 then f32 arrays):
 *   magic "DS4KVST1", n_layer, n_window, head_dim, idx_dim, pos, then each layer's ratio;
 *   then per layer: the whole raw ring (n_window rows, slot order), and when compressed the
 *   floor(pos/ratio) finished rows + both streaming buffers, and for ratio 4 the same for the
 *   indexer. The MTP window is not saved (MODEL_MATH §13: drafts are verified anyway).
 */
#include "model/kvstate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/safemath.h"

static const char kv_magic[8] = {'D', 'S', '4', 'K', 'V', 'S', 'T', '1'};

static int64_t comp_state_elems(int64_t ratio, int64_t dim) {
    int64_t coff = ratio == 4 ? 2 : 1;
    return coff * ratio * coff * dim;
}

void kv_sizes(const model_hparams *hp, bool with_mtp, uint64_t *fixed_bytes,
              uint64_t *per_token_bytes) {
    /* Per-token slope is fractional (rows/ratio); report it rounded up per token, and the
     * exact allocation goes through kv_create. */
    double per_tok = 0.0;
    uint64_t fixed = 0;
    int64_t raw = hp->n_window * hp->head_dim * 4;
    for (int64_t il = 0; il < hp->n_layer; il++) {
        int64_t r = hparams_ratio(hp, il);
        fixed += (uint64_t)raw;
        if (!r) continue;
        per_tok += (double)hp->head_dim * 4.0 / (double)r;
        fixed += (uint64_t)(2 * comp_state_elems(r, hp->head_dim) * 4);
        if (r == 4) {
            per_tok += (double)hp->idx_head_dim * 4.0 / (double)r;
            fixed += (uint64_t)(2 * comp_state_elems(r, hp->idx_head_dim) * 4);
        }
    }
    if (with_mtp) fixed += (uint64_t)raw;
    *fixed_bytes = fixed;
    *per_token_bytes = (uint64_t)ceil(per_tok);
}

static ds4_status comp_alloc(kv_comp *c, int64_t ratio, int64_t dim, int64_t n_ctx,
                             ds4_error *err) {
    c->ratio = ratio;
    c->coff = ratio == 4 ? 2 : 1;
    c->dim = dim;
    c->cap = n_ctx / ratio;
    int64_t st = comp_state_elems(ratio, dim);
    c->rows = c->cap ? malloc((size_t)(c->cap * dim) * sizeof(float)) : NULL;
    c->st_kv = malloc((size_t)st * sizeof(float));
    c->st_sc = malloc((size_t)st * sizeof(float));
    if ((c->cap && !c->rows) || !c->st_kv || !c->st_sc)
        return ds4_seterr(err, DS4_ERR_NOMEM,
                          "model: out of memory for %lld compressed rows of %lld values",
                          (long long)c->cap, (long long)dim);
    return DS4_OK;
}

static void comp_free(kv_comp *c) {
    free(c->rows);
    free(c->st_kv);
    free(c->st_sc);
    memset(c, 0, sizeof *c);
}

static void comp_reset(kv_comp *c) {
    if (!c->st_kv) return;
    int64_t n = c->coff * c->ratio * c->coff * c->dim;
    for (int64_t i = 0; i < n; i++) {
        c->st_kv[i] = 0.0f;
        c->st_sc[i] = -INFINITY;
    }
}

ds4_status kv_create(kv_state *kv, const model_hparams *hp, bool with_mtp, int64_t n_ctx,
                     ds4_error *err) {
    memset(kv, 0, sizeof *kv);
    if (n_ctx < 1)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "model: context size %lld must be >= 1",
                          (long long)n_ctx);
    uint64_t fixed, per_tok, total;
    kv_sizes(hp, with_mtp, &fixed, &per_tok);
    /* Refuse sizes that cannot be addressed before trying to allocate them. */
    if (!ds4_mul_u64(&total, per_tok, (uint64_t)n_ctx) || !ds4_add_u64(&total, total, fixed) ||
        total > (uint64_t)PTRDIFF_MAX)
        return ds4_seterr(err, DS4_ERR_NOMEM, "model: context of %lld tokens is too large",
                          (long long)n_ctx);
    kv->n_ctx = n_ctx;
    kv->n_layer = hp->n_layer;
    kv->n_window = hp->n_window;
    kv->head_dim = hp->head_dim;
    kv->idx_dim = hp->idx_head_dim;
    kv->layers = calloc((size_t)hp->n_layer, sizeof *kv->layers);
    ds4_status st = DS4_OK;
    if (!kv->layers) {
        st = ds4_seterr(err, DS4_ERR_NOMEM, "model: out of memory");
        goto fail;
    }
    size_t raw_bytes = (size_t)(hp->n_window * hp->head_dim) * sizeof(float);
    for (int64_t il = 0; il < hp->n_layer; il++) {
        kv_layer *L = &kv->layers[il];
        L->ratio = hparams_ratio(hp, il);
        L->raw = malloc(raw_bytes);
        if (!L->raw) {
            st = ds4_seterr(err, DS4_ERR_NOMEM, "model: out of memory for the window of layer %lld",
                            (long long)il);
            goto fail;
        }
        if (L->ratio && (st = comp_alloc(&L->comp, L->ratio, hp->head_dim, n_ctx, err))) goto fail;
        if (L->ratio == 4 && (st = comp_alloc(&L->idx, L->ratio, hp->idx_head_dim, n_ctx, err)))
            goto fail;
    }
    if (with_mtp) {
        kv->mtp.raw = malloc(raw_bytes);
        if (!kv->mtp.raw) {
            st = ds4_seterr(err, DS4_ERR_NOMEM, "model: out of memory for the MTP window");
            goto fail;
        }
    }
    kv_reset(kv);
    return DS4_OK;
fail:
    kv_free(kv);
    return st;
}

void kv_free(kv_state *kv) {
    if (!kv) return;
    if (kv->layers) {
        for (int64_t il = 0; il < kv->n_layer; il++) {
            free(kv->layers[il].raw);
            comp_free(&kv->layers[il].comp);
            comp_free(&kv->layers[il].idx);
        }
    }
    free(kv->layers);
    free(kv->mtp.raw);
    memset(kv, 0, sizeof *kv);
}

void kv_reset(kv_state *kv) {
    kv->pos = 0;
    for (int64_t il = 0; il < kv->n_layer; il++) {
        kv_layer *L = &kv->layers[il];
        /* Zeroed ring rows are never read before being written (window of t is [t-W+1, t]);
         * clearing keeps saved payloads deterministic. */
        memset(L->raw, 0, (size_t)(kv->n_window * kv->head_dim) * sizeof(float));
        comp_reset(&L->comp);
        comp_reset(&L->idx);
    }
    kv_reset_mtp(kv);
}

void kv_reset_mtp(kv_state *kv) {
    kv->mtp_pos = 0;
    if (kv->mtp.raw) memset(kv->mtp.raw, 0, (size_t)(kv->n_window * kv->head_dim) * sizeof(float));
}

/* Walks the payload layout once; with `out` NULL only counts bytes. dir: 0 = save, 1 = load. */
typedef struct walker {
    uint8_t *p;
    size_t off, cap;
    int dir;
} walker;

static void walk(walker *w, void *data, size_t n) {
    if (n == 0) return; /* data may be NULL for an empty array; memcpy(NULL, .., 0) is UB */
    if (w->p && w->off + n <= w->cap) {
        if (w->dir == 0) memcpy(w->p + w->off, data, n);
        else memcpy(data, w->p + w->off, n);
    }
    w->off += n;
}

static void walk_comp(walker *w, kv_comp *c, int64_t pos) {
    int64_t n_rows = pos / c->ratio;
    int64_t st = c->coff * c->ratio * c->coff * c->dim;
    walk(w, c->rows, (size_t)(n_rows * c->dim) * sizeof(float));
    walk(w, c->st_kv, (size_t)st * sizeof(float));
    walk(w, c->st_sc, (size_t)st * sizeof(float));
}

static void walk_body(walker *w, kv_state *kv, int64_t pos) {
    for (int64_t il = 0; il < kv->n_layer; il++) {
        kv_layer *L = &kv->layers[il];
        walk(w, L->raw, (size_t)(kv->n_window * kv->head_dim) * sizeof(float));
        if (L->ratio) walk_comp(w, &L->comp, pos);
        if (L->ratio == 4) walk_comp(w, &L->idx, pos);
    }
}

static size_t header_bytes(const kv_state *kv) {
    return 8 + 5 * 8 + (size_t)kv->n_layer * 8;
}

size_t kv_payload_bytes(const kv_state *kv) {
    walker w = {NULL, header_bytes(kv), 0, 0};
    walk_body(&w, (kv_state *)kv, kv->pos);
    return w.off;
}

static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint64_t get_u64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

ds4_status kv_save(const kv_state *kv, void *buf, size_t n_bytes, ds4_error *err) {
    size_t need = kv_payload_bytes(kv);
    if (n_bytes < need)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "model: state payload needs %zu bytes, got %zu",
                          need, n_bytes);
    uint8_t *p = buf;
    memcpy(p, kv_magic, 8);
    uint64_t h[5] = {(uint64_t)kv->n_layer, (uint64_t)kv->n_window, (uint64_t)kv->head_dim,
                     (uint64_t)kv->idx_dim, (uint64_t)kv->pos};
    for (int i = 0; i < 5; i++) put_u64(p + 8 + 8 * i, h[i]);
    for (int64_t il = 0; il < kv->n_layer; il++)
        put_u64(p + 48 + 8 * il, (uint64_t)kv->layers[il].ratio);
    walker w = {p, header_bytes(kv), need, 0};
    walk_body(&w, (kv_state *)kv, kv->pos);
    return DS4_OK;
}

ds4_status kv_load(kv_state *kv, const void *buf, size_t n_bytes, ds4_error *err) {
    const uint8_t *p = buf;
    size_t hb = header_bytes(kv);
    if (n_bytes < hb || memcmp(p, kv_magic, 8) != 0)
        return ds4_seterr(err, DS4_ERR_FORMAT, "model: state payload: bad magic or truncated header "
                          "(%zu bytes)", n_bytes);
    uint64_t want[4] = {(uint64_t)kv->n_layer, (uint64_t)kv->n_window, (uint64_t)kv->head_dim,
                        (uint64_t)kv->idx_dim};
    static const char *names[4] = {"layers", "window", "head dim", "indexer dim"};
    for (int i = 0; i < 4; i++) {
        uint64_t got = get_u64(p + 8 + 8 * i);
        if (got != want[i])
            return ds4_seterr(err, DS4_ERR_FORMAT,
                              "model: state payload: %s is %llu, this model has %llu", names[i],
                              (unsigned long long)got, (unsigned long long)want[i]);
    }
    for (int64_t il = 0; il < kv->n_layer; il++) {
        uint64_t r = get_u64(p + 48 + 8 * il);
        if (r != (uint64_t)kv->layers[il].ratio)
            return ds4_seterr(err, DS4_ERR_FORMAT,
                              "model: state payload: layer %lld ratio %llu, this model has %lld",
                              (long long)il, (unsigned long long)r, (long long)kv->layers[il].ratio);
    }
    uint64_t pos = get_u64(p + 40);
    if (pos > (uint64_t)kv->n_ctx)
        return ds4_seterr(err, DS4_ERR_RANGE,
                          "model: state payload: position %llu exceeds this state's context %lld",
                          (unsigned long long)pos, (long long)kv->n_ctx);
    walker w = {NULL, hb, 0, 0};
    walk_body(&w, kv, (int64_t)pos);
    if (w.off != n_bytes)
        return ds4_seterr(err, DS4_ERR_FORMAT,
                          "model: state payload: %zu bytes, expected %zu for position %llu",
                          n_bytes, w.off, (unsigned long long)pos);
    walker r = {(uint8_t *)p, hb, n_bytes, 1};
    walk_body(&r, kv, (int64_t)pos);
    kv->pos = (int64_t)pos;
    kv_reset_mtp(kv);
    return DS4_OK;
}
