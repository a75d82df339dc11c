/*
 * cuda/model_cuda.c — the GPU model's weights and state (model_cuda.h).
 *
 * Weights: the GGUF data region is copied to the device once, so every matrix the CPU model
 * binds (a pointer into the mapping) has a device twin; the small f32 tables model_open
 * decoded into owned copies are uploaded one by one. The routed experts of the first layers
 * may instead live in pinned host memory mapped into the device (issue #7, cuda_model_opts):
 * the region is then cut into pieces (cu_seg), device ones packed into one allocation, host
 * ones into one pinned block, and a tensor's device address is looked up by its offset.
 * State: per layer the window ring, compressed rows and compressor streaming buffers, the
 * same arrays as model/kvstate.c; copies to and from the host state walk the same ranges
 * kvstate.c saves (whole ring, floor(pos/ratio) rows, both streaming buffers).
 * Must not: compute anything (forward_cuda.c) or define a payload format of its own.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/safemath.h"
#include "cuda/model_cuda_impl.h"
#include "cuda/synth_cuda.h"

/* ---- Weights ------------------------------------------------------------------------------ */

static ds4_status track(cuda_model *cm, void *p, ds4_error *err) {
    if (cm->n_allocs == cm->cap_allocs) {
        int cap = cm->cap_allocs ? 2 * cm->cap_allocs : 256;
        void **a = realloc(cm->allocs, (size_t)cap * sizeof *a);
        if (!a) {
            cuda_free(p);
            return ds4_seterr(err, DS4_ERR_NOMEM, "cuda model: out of host memory");
        }
        cm->allocs = a;
        cm->cap_allocs = cap;
    }
    cm->allocs[cm->n_allocs++] = p;
    return DS4_OK;
}

/* Device copy of n_bytes at h (NULL stays NULL). */
static ds4_status up_table(cuda_model *cm, const void *h, size_t n_bytes, void **out,
                           ds4_error *err) {
    *out = NULL;
    if (!h) return DS4_OK;
    void *d;
    ds4_status st = cuda_malloc(&d, n_bytes, err);
    if (st) return st;
    if ((st = track(cm, d, err))) return st;
    if ((st = cuda_upload(d, h, n_bytes, err))) return st;
    *out = d;
    return DS4_OK;
}

#define UPF(dst, h, n) \
    do { void *p_; if ((st = up_table(cm, (h), (size_t)(n) * 4, &p_, err))) return st; (dst) = p_; } while (0)

/* The piece holding bytes [off, off+n) of the data region whole, or NULL. */
static const cu_seg *seg_of(const cuda_model *cm, uint64_t off, uint64_t n) {
    for (int i = 0; i < cm->n_segs; i++) {
        const cu_seg *s = &cm->segs[i];
        if (off >= s->off && off - s->off <= s->n_bytes && n <= s->n_bytes - (off - s->off))
            return s;
    }
    return NULL;
}

/* Device address of bytes [h, h+n) of the mapping; the name goes into the error. */
static ds4_status dev_of(const cuda_model *cm, const uint8_t *h, uint64_t n, const char *name,
                         const uint8_t **out, ds4_error *err) {
    *out = NULL;
    if (!h) return DS4_OK;
    const cu_seg *s = NULL;
    if (h >= cm->h_data && (uint64_t)(h - cm->h_data) <= cm->data_bytes)
        s = seg_of(cm, (uint64_t)(h - cm->h_data), n);
    if (!s)
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED,
                          "cuda model: tensor '%s' is not in the uploaded GGUF data region",
                          name ? name : "?");
    *out = s->d + ((uint64_t)(h - cm->h_data) - s->off);
    return DS4_OK;
}

static ds4_status mat(const cuda_model *cm, const cpu_mat *c, cu_mat *out, ds4_error *err) {
    memset(out, 0, sizeof *out);
    if (!c->data) return DS4_OK;
    out->type = c->type;
    out->rows = c->n_out;
    out->cols = c->n_in;
    out->row_bytes = c->row_bytes;
    out->host = c;
    return dev_of(cm, c->data, c->row_bytes * (uint64_t)c->n_out, c->name, &out->d, err);
}

static ds4_status experts(const cuda_model *cm, const experts_mat *e, cu_experts *out,
                          ds4_error *err) {
    memset(out, 0, sizeof *out);
    if (!e->data) return DS4_OK;
    out->type = e->type;
    out->n_expert = e->n_expert;
    out->rows = e->n_out;
    out->cols = e->n_in;
    out->host = e;
    return dev_of(cm, e->data, e->expert_bytes * (uint64_t)e->n_expert, e->name, &out->d, err);
}

static ds4_status comp_w(cuda_model *cm, const compressor_weights *c, cu_comp_w *out,
                         ds4_error *err) {
    ds4_status st;
    if ((st = mat(cm, &c->kv, &out->kv, err))) return st;
    if ((st = mat(cm, &c->gate, &out->gate, err))) return st;
    UPF(out->ape, c->ape, c->ratio * c->coff * c->dim);
    UPF(out->norm, c->norm, c->dim);
    return DS4_OK;
}

static ds4_status layer_up(cuda_model *cm, int64_t il, ds4_error *err) {
    const model_hparams *hp = &cm->m->hp;
    const layer_weights *L = &cm->m->w.layers[il];
    cu_layer *d = &cm->layers[il];
    int64_t hc = hp->n_hc, nmix = (2 + hc) * hc;
    ds4_status st;
#define M(f) do { if ((st = mat(cm, &L->f, &d->f, err))) return st; } while (0)
    M(hc_attn_fn); M(hc_ffn_fn); M(wq_a); M(wq_b); M(wkv); M(wo_a); M(wo_b);
    M(idx_wq_b); M(idx_proj); M(gate_inp); M(sh_gate); M(sh_up); M(sh_down);
#undef M
    UPF(d->hc_attn_scale, L->hc_attn_scale, 3);
    UPF(d->hc_ffn_scale, L->hc_ffn_scale, 3);
    UPF(d->hc_attn_base, L->hc_attn_base, nmix);
    UPF(d->hc_ffn_base, L->hc_ffn_base, nmix);
    UPF(d->attn_norm, L->attn_norm, hp->n_embd);
    UPF(d->ffn_norm, L->ffn_norm, hp->n_embd);
    UPF(d->q_norm, L->q_norm, hp->q_lora);
    UPF(d->kv_norm, L->kv_norm, hp->head_dim);
    UPF(d->sinks, L->sinks, hp->n_head);
    UPF(d->exp_bias, L->exp_bias, hp->n_expert);
    UPF(d->tid2eid, L->tid2eid, hp->n_vocab * hp->n_expert_used);
    d->has_comp = L->has_comp;
    d->has_indexer = L->has_indexer;
    d->has_shared = L->has_shared;
    if (L->has_comp && (st = comp_w(cm, &L->comp, &d->comp, err))) return st;
    if (L->has_indexer && (st = comp_w(cm, &L->idx_comp, &d->idx_comp, err))) return st;
    if ((st = experts(cm, &L->gate_exps, &d->gate_exps, err))) return st;
    if ((st = experts(cm, &L->up_exps, &d->up_exps, err))) return st;
    if ((st = experts(cm, &L->down_exps, &d->down_exps, err))) return st;
    return DS4_OK;
}

/* ---- Placement: device memory or pinned host memory (issue #7) --------------------------- */

typedef struct xspan {
    uint64_t off, n;
} xspan;

static int xspan_cmp(const void *a, const void *b) {
    const xspan *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* The routed-expert tensors (gate, up, down) of layer il as spans of the data region. */
static ds4_status layer_exp_spans(const cuda_model *cm, int64_t il, xspan out[3], int *n_out,
                                  uint64_t *bytes, ds4_error *err) {
    const layer_weights *L = &cm->m->w.layers[il];
    const experts_mat *es[3] = {&L->gate_exps, &L->up_exps, &L->down_exps};
    *n_out = 0;
    *bytes = 0;
    for (int i = 0; i < 3; i++) {
        const experts_mat *e = es[i];
        if (!e->data) continue;
        uint64_t n = 0, off = e->data >= cm->h_data ? (uint64_t)(e->data - cm->h_data) : UINT64_MAX;
        if (!ds4_mul_u64(&n, e->expert_bytes, (uint64_t)e->n_expert) ||
            !ds4_range_ok(off, n, cm->data_bytes))
            return ds4_seterr(err, DS4_ERR_UNSUPPORTED,
                              "cuda model: layer %lld: tensor '%s' is not in the GGUF data region",
                              (long long)il, e->name ? e->name : "?");
        out[(*n_out)++] = (xspan){off, n};
        *bytes += n;
    }
    return DS4_OK;
}

/* MemAvailable of /proc/meminfo in bytes, 0 when unknown: pinning more than that would make the
 * kernel swap or kill the process instead of failing the allocation. */
static uint64_t host_available_bytes(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    fclose(f);
    return (uint64_t)kb * 1024;
}

/* Decides how many of the first layers keep their experts on the host (cm->n_host_layers),
 * cuts the data region into pieces and allocates both sides. */
static ds4_status place(cuda_model *cm, const cuda_model_opts *o, ds4_error *err) {
    int64_t L = cm->m->hp.n_layer;
    int want = o ? o->gpu_layers_experts : -1;
    uint64_t reserve = o ? o->reserve_bytes : 0;
    if (want < -1 || want > L)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                          "cuda model: gpu_layers_experts %d is outside [0, %lld] (the model's "
                          "layers; -1 = as many as fit)", want, (long long)L);
    xspan *sp = calloc((size_t)(3 * L) + 1, sizeof *sp);
    uint64_t *lb = calloc((size_t)L + 1, sizeof *lb); /* layer il's expert bytes */
    int *le = calloc((size_t)L + 1, sizeof *le);       /* its spans end at sp[le[il]] */
    ds4_status st = DS4_OK;
    if (!sp || !lb || !le) {
        st = ds4_seterr(err, DS4_ERR_NOMEM, "cuda model: out of host memory");
        goto out;
    }
    int n_sp = 0;
    for (int64_t il = 0; il < L; il++) {
        int n;
        if ((st = layer_exp_spans(cm, il, sp + n_sp, &n, &lb[il], err))) goto out;
        n_sp += n;
        le[il] = n_sp;
    }
    int64_t n_host = want >= 0 ? L - want : 0;
    if (want < 0) {
        size_t fr = 0, tot = 0;
        if ((st = cuda_mem_info(&fr, &tot, err))) goto out;
        /* Auto-fit: move the first layers' experts to the host until weights + reserve fit. */
        uint64_t need = cm->data_bytes + reserve + CUDA_FIT_MARGIN_BYTES, moved = 0;
        while (n_host < L && need > fr) {
            need -= lb[n_host];
            moved += lb[n_host];
            n_host++;
        }
        if (need > fr) {
            st = ds4_seterr(err, DS4_ERR_NOMEM,
                            "cuda model: does not fit on the device even with the routed experts "
                            "of all %lld layers in host memory: %.2f GiB of other weights + %.2f "
                            "GiB for state (reserve) + %.2f GiB margin, %.2f GiB free of %.2f GiB",
                            (long long)L, (double)(cm->data_bytes - moved) / (1u << 30),
                            (double)reserve / (1u << 30), (double)CUDA_FIT_MARGIN_BYTES / (1u << 30),
                            (double)fr / (1u << 30), (double)tot / (1u << 30));
            goto out;
        }
    }
    /* Spans of the host layers (the first n_host layers' spans lead sp), in data-region order:
     * they are whole tensors, so a tensor is never split between device and host. */
    int n_hs = n_host ? le[n_host - 1] : 0;
    qsort(sp, (size_t)n_hs, sizeof *sp, xspan_cmp);
    cm->segs = calloc((size_t)(2 * n_hs + 1), sizeof *cm->segs);
    if (!cm->segs) {
        st = ds4_seterr(err, DS4_ERR_NOMEM, "cuda model: out of host memory");
        goto out;
    }
    uint64_t at = 0, dev_bytes = 0, host_bytes = 0;
    for (int i = 0; i < n_hs; i++) {
        if (sp[i].off < at) {
            st = ds4_seterr(err, DS4_ERR_UNSUPPORTED, "cuda model: routed-expert tensors overlap "
                            "at data offset %llu", (unsigned long long)sp[i].off);
            goto out;
        }
        if (sp[i].off > at) {
            cm->segs[cm->n_segs++] = (cu_seg){at, sp[i].off - at, NULL, NULL};
            dev_bytes += sp[i].off - at;
        }
        cm->segs[cm->n_segs++] = (cu_seg){sp[i].off, sp[i].n, NULL, (uint8_t *)1};
        host_bytes += sp[i].n;
        at = sp[i].off + sp[i].n;
    }
    if (at < cm->data_bytes || !cm->n_segs) {
        cm->segs[cm->n_segs++] = (cu_seg){at, cm->data_bytes - at, NULL, NULL};
        dev_bytes += cm->data_bytes - at;
    }
    void *d = NULL, *hp = NULL, *hd = NULL;
    if ((st = cuda_malloc(&d, (size_t)dev_bytes, err))) {
        ds4_err_prefix(err, "cuda model: weights of %.2f GiB on the device (%.2f GiB of experts "
                       "of %lld layers on the host) do not fit", (double)dev_bytes / (1u << 30),
                       (double)host_bytes / (1u << 30), (long long)n_host);
        goto out;
    }
    cm->d_data = d;
    uint64_t avail = host_bytes ? host_available_bytes() : 0;
    if (avail && host_bytes > avail) {
        st = ds4_seterr(err, DS4_ERR_NOMEM,
                        "cuda model: the routed experts of %lld layers need %.2f GiB of pinned host "
                        "memory, %.2f GiB is available (MemAvailable): keep more layers' experts "
                        "on the GPU (gpu_layers_experts) or free host memory", (long long)n_host,
                        (double)host_bytes / (1u << 30), (double)avail / (1u << 30));
        goto out;
    }
    if (host_bytes && (st = cuda_host_alloc_mapped(&hp, &hd, (size_t)host_bytes, err))) {
        ds4_err_prefix(err, "cuda model: the routed experts of %lld layers (%.2f GiB) in host "
                       "memory", (long long)n_host, (double)host_bytes / (1u << 30));
        goto out;
    }
    cm->h_pin = hp;
    cm->n_host_layers = n_host;
    cm->host_bytes = host_bytes;
    uint64_t dat = 0, hat = 0;
    for (int i = 0; i < cm->n_segs; i++) {
        cu_seg *s = &cm->segs[i];
        if (s->h) {
            s->h = (uint8_t *)hp + hat;
            s->d = (uint8_t *)hd + hat;
            hat += s->n_bytes;
        } else {
            s->d = cm->d_data + dat;
            dat += s->n_bytes;
        }
    }
out:
    free(sp);
    free(lb);
    free(le);
    return st;
}

/* Copies bytes [from, to) of the mapping to where the device reads them, piece by piece
 * (uploads in 1 GiB steps: the mapping is paged in as read). */
static ds4_status copy_range(cuda_model *cm, uint64_t from, uint64_t to, ds4_error *err) {
    for (int i = 0; i < cm->n_segs && from < to; i++) {
        const cu_seg *s = &cm->segs[i];
        uint64_t end = s->off + s->n_bytes;
        if (end <= from || s->off >= to) continue;
        uint64_t b = from, e = end < to ? end : to;
        if (s->h) {
            memcpy(s->h + (b - s->off), cm->h_data + b, (size_t)(e - b));
        } else {
            for (uint64_t off = b; off < e;) {
                uint64_t n = e - off < (1ull << 30) ? e - off : (1ull << 30);
                ds4_status st = cuda_upload(s->d + (off - s->off), cm->h_data + off, (size_t)n,
                                            err);
                if (st) return st;
                off += n;
            }
        }
        from = e;
    }
    return DS4_OK;
}

/* The data region: copied, except the spans `fills` lists (sorted, disjoint), which are made
 * by cuda_synth_fill where they live (on the device, or through the mapping of pinned host
 * memory: the kernel writes them over PCIe). */
static ds4_status data_up(cuda_model *cm, const cuda_synth_span *fills, int64_t n_fill,
                          ds4_error *err) {
    uint64_t at = 0;
    ds4_status st;
    for (int64_t i = 0; i < n_fill; i++) {
        const cuda_synth_span *f = &fills[i];
        const cu_seg *s = NULL;
        if (f->offset >= at && f->n_bytes <= cm->data_bytes - f->offset)
            s = seg_of(cm, f->offset, f->n_bytes);
        if (!s)
            return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                              "cuda model: synthetic span %lld [%llu, +%llu) is out of order, "
                              "past the %llu-byte data region or across a tensor",
                              (long long)i, (unsigned long long)f->offset,
                              (unsigned long long)f->n_bytes, (unsigned long long)cm->data_bytes);
        if ((st = copy_range(cm, at, f->offset, err))) return st;
        if ((st = cuda_synth_fill(s->d + (f->offset - s->off), f->n_bytes, f->type, f->d_f16,
                                  f->dmin_f16, f->seed, err)))
            return st;
        at = f->offset + f->n_bytes;
    }
    if ((st = copy_range(cm, at, cm->data_bytes, err))) return st;
    return n_fill ? cuda_sync(err) : DS4_OK;
}

static ds4_status open_with(cuda_model **out, const model *m, const gguf_ctx *g, int dev,
                            const cuda_model_opts *opts, const cuda_synth_span *fills,
                            int64_t n_fill, ds4_error *err) {
    *out = NULL;
    ds4_status st = cuda_init(dev, err);
    if (st) return st;
    cuda_model *cm = calloc(1, sizeof *cm);
    if (!cm) return ds4_seterr(err, DS4_ERR_NOMEM, "cuda model: out of host memory");
    const model_hparams *hp = &m->hp;
    cm->m = m;
    cm->g = g;
    cm->dev = dev;
    cm->h_data = gguf_file_base(g) + gguf_data_offset(g);
    cm->data_bytes = gguf_file_bytes(g) - gguf_data_offset(g);
    cm->layers = calloc((size_t)hp->n_layer, sizeof *cm->layers);
    if (!cm->layers) {
        st = ds4_seterr(err, DS4_ERR_NOMEM, "cuda model: out of host memory");
        goto out_close;
    }
    if ((st = place(cm, opts, err))) goto out_close;
    if ((st = data_up(cm, fills, n_fill, err))) goto out_close;
    for (int64_t il = 0; il < hp->n_layer; il++)
        if ((st = layer_up(cm, il, err))) {
            ds4_err_prefix(err, "layer %lld", (long long)il);
            goto out_close;
        }
    const model_weights *w = &m->w;
    if ((st = mat(cm, &w->out_hc_fn, &cm->out_hc_fn, err))) goto out_close;
    if ((st = mat(cm, &w->output, &cm->output, err))) goto out_close;
    { /* device embedding lookup for graph steps (forward_cuda.c); other types: host lookup */
        ds4_error e2 = {0};
        int t = w->tok_embd.type;
        if ((t != 0 && t != 1 && t != 30) || mat(cm, &w->tok_embd, &cm->tok_embd, &e2))
            memset(&cm->tok_embd, 0, sizeof cm->tok_embd);
    }
    void *p;
#define UPG(dst, h, n) do { if ((st = up_table(cm, (h), (size_t)(n) * 4, &p, err))) goto out_close; (dst) = p; } while (0)
    UPG(cm->out_hc_scale, w->out_hc_scale, 1);
    UPG(cm->out_hc_base, w->out_hc_base, hp->n_hc);
    UPG(cm->out_norm, w->out_norm, hp->n_embd);
    UPG(cm->freqs_plain, m->freqs_plain, hp->n_rope / 2);
    UPG(cm->freqs_comp, m->freqs_comp, hp->n_rope / 2);
#undef UPG
    *out = cm;
    return DS4_OK;
out_close:
    cuda_model_close(cm);
    return st;
}

ds4_status cuda_model_open(cuda_model **out, const model *m, const gguf_ctx *g, int dev,
                           ds4_error *err) {
    return open_with(out, m, g, dev, NULL, NULL, 0, err);
}

ds4_status cuda_model_open_synth(cuda_model **out, const model *m, const gguf_ctx *g, int dev,
                                 const cuda_synth_span *fills, int64_t n_fill, ds4_error *err) {
    return open_with(out, m, g, dev, NULL, fills, n_fill, err);
}

ds4_status cuda_model_open_ex(cuda_model **out, const model *m, const gguf_ctx *g, int dev,
                              const cuda_model_opts *opts, const cuda_synth_span *fills,
                              int64_t n_fill, ds4_error *err) {
    return open_with(out, m, g, dev, opts, fills, n_fill, err);
}

int64_t cuda_model_gpu_layers_experts(const cuda_model *cm) {
    return cm ? cm->m->hp.n_layer - cm->n_host_layers : 0;
}

uint64_t cuda_model_host_expert_bytes(const cuda_model *cm) { return cm ? cm->host_bytes : 0; }

const void *cuda_model_data_addr(const cuda_model *cm, uint64_t off, uint64_t n_bytes) {
    const cu_seg *s = cm ? seg_of(cm, off, n_bytes) : NULL;
    return s ? s->d + (off - s->off) : NULL;
}

uint64_t cuda_state_device_bytes(const model *m, int64_t n_ctx) {
    const model_hparams *hp = &m->hp;
    if (n_ctx < 1) n_ctx = 1;
    model_mem_estimate me;
    model_memory_estimate(m, n_ctx, &me);
    size_t attn = 0;
    for (int64_t il = 0; il < hp->n_layer; il++) {
        int ratio = (int)hparams_ratio(hp, il);
        size_t a = cuda_attn_scratch_bytes(1, hp->n_head, hp->head_dim, hp->n_window, ratio,
                                           hp->idx_topk, ratio == 4, n_ctx - 1);
        if (a > attn) attn = a;
    }
    /* The batched-prefill chunk workspace (forward_chunk.c bws_alloc, allocated at the first
     * prompt): per token of a chunk of min(n_ctx, CUDA_CHUNK_TOKENS_EST) tokens the rows of
     * model/forward.c fwd_ws_reserve plus the routed pairs (K rows of D and of F), ~1 MB at
     * Flash width. An estimate of another file's sizes: kept high rather than exact. */
    int64_t D = hp->n_embd, hc = hp->n_hc, K = hp->n_expert_used, F = hp->n_ff_exp;
    int64_t per = 2 * hc * D + 2 * hp->n_head * hp->head_dim + 5 * K * D + 3 * K * F + 5 * D +
                  hp->q_lora + hp->o_groups * hp->o_lora + hp->idx_n_head * (hp->idx_head_dim + 1) +
                  hp->n_expert + 4 * hp->head_dim + (2 + hc) * hc + hc * hc + 64;
    int64_t chunk = n_ctx < CUDA_CHUNK_TOKENS_EST ? n_ctx : CUDA_CHUNK_TOKENS_EST;
    uint64_t bws = (uint64_t)(per * chunk) * 4 + (uint64_t)(K * chunk * D) * 2;
    return me.total_bytes + attn + cuda_indexer_scratch_bytes(1, n_ctx - 1) + bws;
}

const void *cuda_model_device_data(const cuda_model *cm) { return cm ? cm->d_data : NULL; }

void cuda_model_close(cuda_model *cm) {
    if (!cm) return;
    for (int i = 0; i < cm->n_allocs; i++) cuda_free(cm->allocs[i]);
    free(cm->allocs);
    cuda_free(cm->d_data);
    cuda_host_free(cm->h_pin);
    free(cm->segs);
    free(cm->layers);
    free(cm);
}

uint64_t cuda_model_weight_bytes(const cuda_model *cm) {
    return cm ? cm->data_bytes - cm->host_bytes : 0;
}

/* ---- State -------------------------------------------------------------------------------- */

static ds4_status comp_alloc(cuda_comp_state *c, const kv_comp *h, ds4_error *err) {
    c->ratio = h->ratio;
    c->coff = h->coff;
    c->dim = h->dim;
    c->cap = h->cap;
    ds4_status st;
    size_t se = (size_t)(h->coff * h->ratio * h->coff * h->dim) * sizeof(float);
    void *p;
    if ((st = cuda_malloc(&p, (size_t)(h->cap * h->dim) * sizeof(float), err))) return st;
    c->rows = p;
    if ((st = cuda_malloc(&p, se, err))) return st;
    c->st_kv = p;
    if ((st = cuda_malloc(&p, se, err))) return st;
    c->st_sc = p;
    return DS4_OK;
}

static void comp_free(cuda_comp_state *c) {
    cuda_free(c->rows);
    cuda_free(c->st_kv);
    cuda_free(c->st_sc);
}

/* Workspace sizes of one token (model/forward.c fwd_ws_reserve, n = 1), carved from one
 * allocation in 256-byte aligned pieces. */
static ds4_status ws_carve(cuda_state *s, ds4_error *err) {
    const cuda_model *cm = s->cm;
    const model_hparams *hp = &cm->m->hp;
    int64_t D = hp->n_embd, hc = hp->n_hc, Dh = hp->head_dim, H = hp->n_head;
    int64_t nmix = (2 + hc) * hc, id = hp->idx_head_dim, ih = hp->idx_n_head;
    int64_t K = hp->n_expert_used, F = hp->n_ff_exp, E = hp->n_expert;
    int64_t n_ctx = s->host->kv.n_ctx, topk = hp->idx_topk;
    cu_ws *w = &s->ws;
    float **fp[] = {&w->X, &w->X2, &w->a, &w->mix, &w->pre, &w->post, &w->comb, &w->qr, &w->q,
                    &w->o, &w->kv, &w->cA, &w->cB, &w->iA, &w->iB, &w->iq, &w->iw, &w->oa,
                    &w->f, &w->rl, &w->selw, &w->g, &w->u, &w->yexp, &w->shg, &w->shu, &w->shy,
                    &w->y, &w->logits};
    int64_t fn[] = {hc * D, hc * D, D, nmix, hc, hc, hc * hc, hp->q_lora, H * Dh, H * Dh, Dh,
                    2 * Dh, 2 * Dh, 2 * id, 2 * id, ih * id, ih, hp->o_groups * hp->o_lora, D, E,
                    K, K * F, K * F, K * D, F, F, D, D, hp->n_vocab};
    int32_t **ip[] = {&w->sel, &w->isel, &w->n_isel, &w->tok};
    int64_t in[] = {K, topk > 0 ? topk : 1, 1, 1};
    /* Activation scratch: the largest quantized input of any matvec (experts: K of them). */
    size_t act = 0;
    for (int64_t il = 0; il < hp->n_layer; il++) {
        const cu_layer *L = &cm->layers[il];
        const cu_mat *ms[] = {&L->hc_attn_fn, &L->hc_ffn_fn, &L->wq_a, &L->wq_b, &L->wkv, &L->wo_a,
                              &L->wo_b, &L->comp.kv, &L->comp.gate, &L->idx_comp.kv,
                              &L->idx_comp.gate, &L->idx_wq_b, &L->idx_proj, &L->gate_inp,
                              &L->sh_gate, &L->sh_up, &L->sh_down};
        for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
            if (!ms[i]->d) continue;
            size_t b = cuda_matvec_scratch_bytes(ms[i]->type, ms[i]->cols);
            if (b > act) act = b;
        }
        const cu_experts *es[] = {&L->gate_exps, &L->up_exps, &L->down_exps};
        for (size_t i = 0; i < 3; i++) {
            size_t b = (size_t)K * cuda_matvec_scratch_bytes(es[i]->type, es[i]->cols);
            if (b > act) act = b;
        }
    }
    size_t b = cuda_matvec_scratch_bytes(cm->out_hc_fn.type, cm->out_hc_fn.cols);
    if (b > act) act = b;
    b = cuda_matvec_scratch_bytes(cm->output.type, cm->output.cols);
    if (b > act) act = b;
    /* Attention and indexer scratch at the last position of the context (their maximum). */
    size_t attn = 0;
    for (int64_t il = 0; il < hp->n_layer; il++) {
        int ratio = (int)hparams_ratio(hp, il);
        size_t a = cuda_attn_scratch_bytes(1, H, Dh, hp->n_window, ratio, topk, ratio == 4,
                                           n_ctx - 1);
        if (a > attn) attn = a;
    }
    size_t idx = cuda_indexer_scratch_bytes(1, n_ctx - 1);
    size_t total = 0;
#define AL(x) (((size_t)(x) + 255) & ~(size_t)255)
    for (size_t i = 0; i < sizeof fn / sizeof fn[0]; i++) total += AL((size_t)fn[i] * 4);
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) total += AL((size_t)in[i] * 4);
    total += AL(act) + AL(attn) + AL(idx);
    ds4_status st = cuda_malloc(&s->block, total, err);
    if (st) return ds4_err_prefix(err, "cuda state: workspace of %zu bytes", total);
    uint8_t *p = s->block;
    for (size_t i = 0; i < sizeof fn / sizeof fn[0]; i++) {
        *fp[i] = (float *)p;
        p += AL((size_t)fn[i] * 4);
    }
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        *ip[i] = (int32_t *)p;
        p += AL((size_t)in[i] * 4);
    }
    w->act = p;
    p += AL(act);
    w->attn_scr = (float *)p;
    p += AL(attn);
    w->idx_scr = (float *)p;
#undef AL
    w->h_row = malloc((size_t)(hc * D) * sizeof(float));
    if (!w->h_row) return ds4_seterr(err, DS4_ERR_NOMEM, "cuda state: out of host memory");
    return DS4_OK;
}

ds4_status cuda_state_create(cuda_state **out, cuda_model *cm, model_state *host,
                             ds4_error *err) {
    *out = NULL;
    if (!cm || !host || host->m != cm->m)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda state: host state of another model");
    cuda_state *s = calloc(1, sizeof *s);
    if (!s) return ds4_seterr(err, DS4_ERR_NOMEM, "cuda state: out of host memory");
    s->cm = cm;
    s->host = host;
    const kv_state *kv = &host->kv;
    ds4_status st;
    s->layers = calloc((size_t)kv->n_layer, sizeof *s->layers);
    if (!s->layers) {
        st = ds4_seterr(err, DS4_ERR_NOMEM, "cuda state: out of host memory");
        goto out_free;
    }
    for (int64_t il = 0; il < kv->n_layer; il++) {
        const kv_layer *h = &kv->layers[il];
        cu_kv_layer *d = &s->layers[il];
        void *p;
        if ((st = cuda_malloc(&p, (size_t)(kv->n_window * kv->head_dim) * sizeof(float), err)))
            goto out_free;
        d->raw = p;
        if (h->ratio && (st = comp_alloc(&d->comp, &h->comp, err))) goto out_free;
        if (h->ratio == 4 && (st = comp_alloc(&d->idx, &h->idx, err))) goto out_free;
    }
    if ((st = ws_carve(s, err))) goto out_free;
    /* Batched prefill (forward_chunk.c) is the default for prompts; DS4_CUDA_BATCH=0 forces
     * token by token (the decode path), e.g. to compare the two. */
    const char *batch = getenv("DS4_CUDA_BATCH");
    s->batch = !(batch && strcmp(batch, "0") == 0);
    s->host_newer = true;
    if ((st = cuda_state_sync_device(s, err))) goto out_free;
    *out = s;
    return DS4_OK;
out_free:
    cuda_state_free(s);
    return st;
}

void cuda_state_free(cuda_state *s) {
    if (!s) return;
    if (s->layers) {
        for (int64_t il = 0; il < s->host->kv.n_layer; il++) {
            cuda_free(s->layers[il].raw);
            comp_free(&s->layers[il].comp);
            comp_free(&s->layers[il].idx);
        }
    }
    free(s->layers);
    cuda_graph_free(s->graph);
    cuda_forward_free(s); /* the head + argmax graph of token_out */
    cuda_free(s->d_pos);
    for (int k = 0; k < 3; k++) cuda_free(s->qa[k]);
    cuda_free(s->qo);
    cuda_free(s->grp_ids);
    cuda_free(s->d_stage);
    cuda_free(s->stage_ids);
    cuda_prof_free(s->prof);
    cuda_chunk_free(s);
    cuda_free(s->block);
    free(s->ws.h_row);
    free(s->h_x);
    free(s->h_y);
    free(s);
}

void cuda_state_set_graph(cuda_state *s, bool on) { s->no_graph = !on; }

void cuda_state_set_check(cuda_state *s, cuda_check_fn fn, void *user) {
    s->check = fn;
    s->check_user = user;
}

/* The ranges kvstate.c's payload holds (walk_comp): finished rows up to pos, both buffers. */
static ds4_status comp_copy(cuda_comp_state *d, kv_comp *h, int64_t pos, int to_host,
                            ds4_error *err) {
    size_t rows = (size_t)(pos / h->ratio * h->dim) * sizeof(float);
    size_t se = (size_t)(h->coff * h->ratio * h->coff * h->dim) * sizeof(float);
    ds4_status st;
    if (to_host) {
        if (rows && (st = cuda_download(h->rows, d->rows, rows, err))) return st;
        if ((st = cuda_download(h->st_kv, d->st_kv, se, err))) return st;
        return cuda_download(h->st_sc, d->st_sc, se, err);
    }
    if (rows && (st = cuda_upload(d->rows, h->rows, rows, err))) return st;
    if ((st = cuda_upload(d->st_kv, h->st_kv, se, err))) return st;
    return cuda_upload(d->st_sc, h->st_sc, se, err);
}

static ds4_status state_copy(cuda_state *s, int to_host, ds4_error *err) {
    kv_state *kv = &s->host->kv;
    size_t raw = (size_t)(kv->n_window * kv->head_dim) * sizeof(float);
    ds4_status st;
    for (int64_t il = 0; il < kv->n_layer; il++) {
        kv_layer *h = &kv->layers[il];
        cu_kv_layer *d = &s->layers[il];
        st = to_host ? cuda_download(h->raw, d->raw, raw, err) : cuda_upload(d->raw, h->raw, raw, err);
        if (st) return st;
        if (h->ratio && (st = comp_copy(&d->comp, &h->comp, kv->pos, to_host, err))) return st;
        if (h->ratio == 4 && (st = comp_copy(&d->idx, &h->idx, kv->pos, to_host, err))) return st;
    }
    return DS4_OK;
}

ds4_status cuda_state_sync_host(cuda_state *s, ds4_error *err) {
    if (!s->dev_newer) return DS4_OK;
    ds4_status st = state_copy(s, 1, err);
    if (st) return ds4_err_prefix(err, "cuda state to host");
    s->dev_newer = false;
    return DS4_OK;
}

void cuda_state_host_changed(cuda_state *s) {
    s->host_newer = true;
    s->dev_newer = false;
}

ds4_status cuda_state_sync_device(cuda_state *s, ds4_error *err) {
    if (!s->host_newer) return DS4_OK;
    ds4_status st = state_copy(s, 0, err);
    if (st) return ds4_err_prefix(err, "cuda state from host");
    s->host_newer = false;
    return DS4_OK;
}
