/*
 * model/weights.c — tensor binding and validation (GGUF_LAYOUT §3, MTP block §3.8).
 */
#include "model/weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "format/quant.h"

typedef struct binder {
    const gguf_ctx *g;
    char prefix[32];   /* "", "blk.7.", "mtp.0." */
    char name[160];
} binder;

static const char *full_name(binder *b, const char *suffix) {
    snprintf(b->name, sizeof b->name, "%s%s", b->prefix, suffix);
    return b->name;
}

/* Finds the tensor and checks its dims: exactly `nd` leading dims, the rest 1. */
static ds4_status find_dims(binder *b, const char *suffix, int nd, const int64_t *dims,
                            const gguf_tensor **out, ds4_error *err) {
    const char *nm = full_name(b, suffix);
    const gguf_tensor *t = gguf_find_tensor(b->g, nm);
    if (!t) return ds4_seterr(err, DS4_ERR_NOT_FOUND, "model: tensor '%s' not found", nm);
    bool ok = t->n_dims >= 1;
    for (uint32_t i = 0; i < DS4_MAX_DIMS && ok; i++) {
        uint64_t want = (int)i < nd ? (uint64_t)dims[i] : 1;
        if (t->ne[i] != want) ok = false;
    }
    if (!ok) {
        char want_s[96] = "", got_s[96] = "";
        size_t wl = 0, gl = 0;
        for (int i = 0; i < nd; i++)
            wl += (size_t)snprintf(want_s + wl, sizeof want_s - wl, "%s%lld", i ? ", " : "",
                                   (long long)dims[i]);
        for (uint32_t i = 0; i < t->n_dims && gl < sizeof got_s; i++)
            gl += (size_t)snprintf(got_s + gl, sizeof got_s - gl, "%s%llu", i ? ", " : "",
                                   (unsigned long long)t->ne[i]);
        return ds4_seterr(err, DS4_ERR_FORMAT, "model: tensor '%s': expected dims [%s], got [%s]",
                          nm, want_s, got_s);
    }
    *out = t;
    return DS4_OK;
}

/* find_dims for a matrix the matmul kernels read: its type must be a weight type. */
static ds4_status find_weight(binder *b, const char *suffix, int nd, const int64_t *dims,
                              const gguf_tensor **out, ds4_error *err) {
    ds4_status st = find_dims(b, suffix, nd, dims, out, err);
    if (st) return st;
    const gguf_tensor *t = *out;
    if (!q_type_is_weight((int)t->type))
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED,
                          "model: tensor '%s': type %s is not a supported weight type", t->name,
                          ds4_type_name(t->type));
    return DS4_OK;
}

static ds4_status bind_mat(binder *b, const char *suffix, int64_t n_in, int64_t n_out,
                           cpu_mat *m, ds4_error *err) {
    const gguf_tensor *t;
    int64_t dims[2] = {n_in, n_out};
    ds4_status st = find_weight(b, suffix, 2, dims, &t, err);
    if (st) return st;
    m->name = t->name;
    m->type = (int)t->type;
    m->n_in = n_in;
    m->n_out = n_out;
    m->row_bytes = t->n_bytes / (uint64_t)n_out;
    m->data = t->data;
    return DS4_OK;
}

/* Small parameter tensors are decoded once to owned f32, row by row (any weight type: the
 * converter may store e.g. the compressor ape as Q8_0 under a quantized preset). */
static ds4_status bind_f32(binder *b, const char *suffix, int nd, const int64_t *dims,
                           float **out, ds4_error *err) {
    const gguf_tensor *t;
    ds4_status st = find_dims(b, suffix, nd, dims, &t, err);
    if (st) return st;
    if (!q_type_is_weight((int)t->type))
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED,
                          "model: tensor '%s': type %s is not a float or weight type", t->name,
                          ds4_type_name(t->type));
    float *v = malloc((size_t)t->n_elements * sizeof(float));
    if (!v) return ds4_seterr(err, DS4_ERR_NOMEM, "model: tensor '%s': out of memory", t->name);
    uint64_t rows = t->n_elements / t->ne[0], rb = t->n_bytes / rows;
    for (uint64_t r = 0; r < rows; r++) {
        st = q_decode_row((int)t->type, (const uint8_t *)t->data + r * rb, v + r * t->ne[0],
                          t->ne[0], err);
        if (st) {
            free(v);
            return ds4_err_prefix(err, "model: tensor '%s'", t->name);
        }
    }
    *out = v;
    return DS4_OK;
}

static ds4_status bind_vec(binder *b, const char *suffix, int64_t n, float **out, ds4_error *err) {
    return bind_f32(b, suffix, 1, &n, out, err);
}

static ds4_status bind_experts(binder *b, const char *suffix, int64_t n_in, int64_t n_out,
                               int64_t n_exp, experts_mat *e, ds4_error *err) {
    const gguf_tensor *t;
    int64_t dims[3] = {n_in, n_out, n_exp};
    ds4_status st = find_weight(b, suffix, 3, dims, &t, err);
    if (st) return st;
    e->name = t->name;
    e->type = (int)t->type;
    e->n_in = n_in;
    e->n_out = n_out;
    e->n_expert = n_exp;
    e->expert_bytes = t->n_bytes / (uint64_t)n_exp;
    e->row_bytes = e->expert_bytes / (uint64_t)n_out;
    e->data = t->data;
    return DS4_OK;
}

static ds4_status bind_tid2eid(binder *b, const model_hparams *hp, int32_t **out,
                               ds4_error *err) {
    const gguf_tensor *t;
    int64_t dims[2] = {hp->n_expert_used, hp->n_vocab};
    ds4_status st = find_dims(b, "ffn_gate_tid2eid.weight", 2, dims, &t, err);
    if (st) return st;
    if (t->type != DS4_TYPE_I32)
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED, "model: tensor '%s': expected I32, got %s",
                          t->name, ds4_type_name(t->type));
    int32_t *v = malloc((size_t)t->n_elements * sizeof(int32_t));
    if (!v) return ds4_seterr(err, DS4_ERR_NOMEM, "model: tensor '%s': out of memory", t->name);
    memcpy(v, t->data, (size_t)t->n_elements * sizeof(int32_t));
    /* GGUF_LAYOUT §3.5: every id must name an expert. */
    for (uint64_t i = 0; i < t->n_elements; i++) {
        if (v[i] < 0 || v[i] >= hp->n_expert) {
            ds4_status r = ds4_seterr(err, DS4_ERR_FORMAT,
                                      "model: tensor '%s': token %llu maps to expert %d, expected "
                                      "0..%lld", t->name, (unsigned long long)(i / (uint64_t)hp->n_expert_used),
                                      v[i], (long long)hp->n_expert - 1);
            free(v);
            return r;
        }
    }
    *out = v;
    return DS4_OK;
}

static ds4_status bind_compressor(binder *b, const model_hparams *hp, const char *pfx,
                                  int64_t ratio, int64_t dim, compressor_weights *c,
                                  ds4_error *err) {
    char nm[96];
    ds4_status st;
    int64_t D = hp->n_embd;
    c->ratio = ratio;
    c->coff = ratio == 4 ? 2 : 1; /* MODEL_MATH §6: overlap only for ratio 4 */
    c->dim = dim;
    int64_t w = c->coff * dim;
    snprintf(nm, sizeof nm, "%s_kv.weight", pfx);
    if ((st = bind_mat(b, nm, D, w, &c->kv, err))) return st;
    snprintf(nm, sizeof nm, "%s_gate.weight", pfx);
    if ((st = bind_mat(b, nm, D, w, &c->gate, err))) return st;
    snprintf(nm, sizeof nm, "%s_ape.weight", pfx);
    int64_t ad[2] = {w, ratio};
    if ((st = bind_f32(b, nm, 2, ad, &c->ape, err))) return st;
    snprintf(nm, sizeof nm, "%s_norm.weight", pfx);
    return bind_vec(b, nm, dim, &c->norm, err);
}

static ds4_status bind_layer(binder *b, const model_hparams *hp, int64_t il, bool mtp,
                             layer_weights *L, ds4_error *err) {
    ds4_status st;
    int64_t D = hp->n_embd, hc = hp->n_hc, nmix = (2 + hc) * hc, H = hp->n_head;
    int64_t Dh = hp->head_dim, G = hp->o_groups;
    int64_t hcD = hc * D, three = 3;
#define CK(x) do { if ((st = (x))) return st; } while (0)
    CK(bind_mat(b, "hc_attn_fn.weight", hcD, nmix, &L->hc_attn_fn, err));
    CK(bind_vec(b, "hc_attn_scale.weight", three, &L->hc_attn_scale, err));
    CK(bind_vec(b, "hc_attn_base.weight", nmix, &L->hc_attn_base, err));
    CK(bind_mat(b, "hc_ffn_fn.weight", hcD, nmix, &L->hc_ffn_fn, err));
    CK(bind_vec(b, "hc_ffn_scale.weight", three, &L->hc_ffn_scale, err));
    CK(bind_vec(b, "hc_ffn_base.weight", nmix, &L->hc_ffn_base, err));
    CK(bind_vec(b, "attn_norm.weight", D, &L->attn_norm, err));
    CK(bind_vec(b, "ffn_norm.weight", D, &L->ffn_norm, err));
    CK(bind_mat(b, "attn_q_a.weight", D, hp->q_lora, &L->wq_a, err));
    CK(bind_vec(b, "attn_q_a_norm.weight", hp->q_lora, &L->q_norm, err));
    CK(bind_mat(b, "attn_q_b.weight", hp->q_lora, H * Dh, &L->wq_b, err));
    CK(bind_mat(b, "attn_kv.weight", D, Dh, &L->wkv, err));
    CK(bind_vec(b, "attn_kv_a_norm.weight", Dh, &L->kv_norm, err));
    CK(bind_vec(b, "attn_sinks.weight", H, &L->sinks, err));
    CK(bind_mat(b, "attn_output_a.weight", (H / G) * Dh, G * hp->o_lora, &L->wo_a, err));
    CK(bind_mat(b, "attn_output_b.weight", G * hp->o_lora, D, &L->wo_b, err));
    int64_t ratio = hparams_ratio(hp, il);
    L->has_comp = ratio != 0;
    L->has_indexer = ratio == 4;
    if (L->has_comp) CK(bind_compressor(b, hp, "attn_compressor", ratio, Dh, &L->comp, err));
    if (L->has_indexer) {
        CK(bind_compressor(b, hp, "indexer_compressor", ratio, hp->idx_head_dim, &L->idx_comp, err));
        CK(bind_mat(b, "indexer.attn_q_b.weight", hp->q_lora, hp->idx_n_head * hp->idx_head_dim,
                    &L->idx_wq_b, err));
        CK(bind_mat(b, "indexer.proj.weight", D, hp->idx_n_head, &L->idx_proj, err));
    }
    CK(bind_mat(b, "ffn_gate_inp.weight", D, hp->n_expert, &L->gate_inp, err));
    if (!mtp && hparams_is_hash(hp, il)) {
        CK(bind_tid2eid(b, hp, &L->tid2eid, err));
    } else {
        CK(bind_vec(b, "exp_probs_b.bias", hp->n_expert, &L->exp_bias, err));
    }
    CK(bind_experts(b, "ffn_gate_exps.weight", D, hp->n_ff_exp, hp->n_expert, &L->gate_exps, err));
    CK(bind_experts(b, "ffn_up_exps.weight", D, hp->n_ff_exp, hp->n_expert, &L->up_exps, err));
    CK(bind_experts(b, "ffn_down_exps.weight", hp->n_ff_exp, D, hp->n_expert, &L->down_exps, err));
    if (L->gate_exps.type != L->up_exps.type)
        return ds4_seterr(err, DS4_ERR_FORMAT,
                          "model: tensors '%s' (%s) and '%s' (%s) must have the same type",
                          L->gate_exps.name, q_type_name(L->gate_exps.type), L->up_exps.name,
                          q_type_name(L->up_exps.type));
    L->has_shared = hp->n_expert_shared > 0;
    if (L->has_shared) {
        CK(bind_mat(b, "ffn_gate_shexp.weight", D, hp->n_ff_exp, &L->sh_gate, err));
        CK(bind_mat(b, "ffn_up_shexp.weight", D, hp->n_ff_exp, &L->sh_up, err));
        CK(bind_mat(b, "ffn_down_shexp.weight", hp->n_ff_exp, D, &L->sh_down, err));
    }
    if (mtp) {
        CK(bind_mat(b, "e_proj.weight", D, D, &L->e_proj, err));
        CK(bind_mat(b, "h_proj.weight", D, D, &L->h_proj, err));
        CK(bind_vec(b, "enorm.weight", D, &L->enorm, err));
        CK(bind_vec(b, "hnorm.weight", D, &L->hnorm, err));
        CK(bind_vec(b, "norm.weight", D, &L->out_norm, err));
        CK(bind_mat(b, "hc_head_fn.weight", hcD, hc, &L->hc_head_fn, err));
        int64_t one = 1;
        CK(bind_vec(b, "hc_head_scale.weight", one, &L->hc_head_scale, err));
        CK(bind_vec(b, "hc_head_base.weight", hc, &L->hc_head_base, err));
    }
#undef CK
    return DS4_OK;
}

static void free_layer(layer_weights *L) {
    float *owned[] = {L->hc_attn_scale, L->hc_attn_base, L->hc_ffn_scale, L->hc_ffn_base,
                      L->attn_norm, L->ffn_norm, L->q_norm, L->kv_norm, L->sinks,
                      L->comp.ape, L->comp.norm, L->idx_comp.ape, L->idx_comp.norm,
                      L->exp_bias, L->enorm, L->hnorm, L->out_norm, L->hc_head_scale,
                      L->hc_head_base};
    for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++) free(owned[i]);
    free(L->tid2eid);
    memset(L, 0, sizeof *L);
}

void weights_free(model_weights *w, const model_hparams *hp) {
    if (!w) return;
    if (w->layers)
        for (int64_t il = 0; il < hp->n_layer; il++) free_layer(&w->layers[il]);
    free(w->layers);
    free_layer(&w->mtp);
    free(w->out_hc_scale);
    free(w->out_hc_base);
    free(w->out_norm);
    memset(w, 0, sizeof *w);
}

ds4_status weights_bind(model_weights *w, const gguf_ctx *g, const gguf_ctx *mtp_g,
                        const model_hparams *hp, ds4_error *err) {
    memset(w, 0, sizeof *w);
    binder b = {.g = g};
    ds4_status st;
    int64_t D = hp->n_embd, hc = hp->n_hc, one = 1;
    w->layers = calloc((size_t)hp->n_layer, sizeof *w->layers);
    if (!w->layers) return ds4_seterr(err, DS4_ERR_NOMEM, "model: out of memory");
    if ((st = bind_mat(&b, "token_embd.weight", D, hp->n_vocab, &w->tok_embd, err))) goto fail;
    if ((st = bind_mat(&b, "output_hc_fn.weight", hc * D, hc, &w->out_hc_fn, err))) goto fail;
    if ((st = bind_vec(&b, "output_hc_scale.weight", one, &w->out_hc_scale, err))) goto fail;
    if ((st = bind_vec(&b, "output_hc_base.weight", hc, &w->out_hc_base, err))) goto fail;
    if ((st = bind_vec(&b, "output_norm.weight", D, &w->out_norm, err))) goto fail;
    if ((st = bind_mat(&b, "output.weight", D, hp->n_vocab, &w->output, err))) goto fail;
    for (int64_t il = 0; il < hp->n_layer; il++) {
        snprintf(b.prefix, sizeof b.prefix, "blk.%lld.", (long long)il);
        if ((st = bind_layer(&b, hp, il, false, &w->layers[il], err))) goto fail;
    }
    /* MODEL_MATH §11 / GGUF_LAYOUT §3.8: the MTP block is optional; bound when present. */
    snprintf(b.prefix, sizeof b.prefix, "mtp.0.");
    if (mtp_g) b.g = mtp_g;
    if (mtp_g || gguf_find_tensor(g, "mtp.0.e_proj.weight")) {
        if ((st = bind_layer(&b, hp, hp->n_layer, true, &w->mtp, err))) goto fail;
        w->has_mtp = true;
    }
    return DS4_OK;
fail:
    weights_free(w, hp);
    return st;
}
