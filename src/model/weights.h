/*
 * model/weights.h — every tensor of GGUF_LAYOUT §3 bound by name, checked for type and dims
 * against the hyper-parameters, and exposed as pointers into the mapping (matrices) or small
 * owned f32 copies (norm weights, HC base/scale, sinks, router bias, compressor ape, hash table).
 *
 * Owns: names, presence rules (§3.4), shape/type validation, the tid2eid range check.
 * Must not: compute anything of the forward pass, or copy large weights.
 */
#ifndef DS4_MODEL_WEIGHTS_H
#define DS4_MODEL_WEIGHTS_H

#include <stdbool.h>
#include <stdint.h>

#include "cpu/matmul.h"
#include "format/gguf.h"
#include "model/hparams.h"

/* Routed experts: one 3-D tensor [n_in, n_out, n_expert] (GGUF_LAYOUT §3.5). */
typedef struct experts_mat {
    const char *name;
    int type;
    int64_t n_in, n_out, n_expert;
    uint64_t row_bytes, expert_bytes;
    const uint8_t *data;
} experts_mat;

static inline cpu_mat experts_get(const experts_mat *e, int64_t id) {
    cpu_mat m = {e->name, e->type, e->n_in, e->n_out, e->row_bytes,
                 e->data + (uint64_t)id * e->expert_bytes};
    return m;
}

typedef struct compressor_weights {
    int64_t ratio, coff, dim;      /* coff = 2 when overlapping (ratio 4), dim = head dim */
    cpu_mat kv, gate;              /* [coff*dim][D] */
    float *ape;                    /* [ratio][coff*dim] */
    float *norm;                   /* [dim] */
} compressor_weights;

typedef struct layer_weights {
    cpu_mat hc_attn_fn, hc_ffn_fn;           /* [(2+hc)*hc][hc*D] */
    float *hc_attn_scale, *hc_attn_base;     /* [3], [(2+hc)*hc] */
    float *hc_ffn_scale, *hc_ffn_base;
    float *attn_norm, *ffn_norm;             /* [D] */
    cpu_mat wq_a;                            /* [q_lora][D] */
    float *q_norm;                           /* [q_lora] */
    cpu_mat wq_b;                            /* [H*Dh][q_lora] */
    cpu_mat wkv;                             /* [Dh][D] */
    float *kv_norm;                          /* [Dh] */
    float *sinks;                            /* [H] */
    cpu_mat wo_a;                            /* [G*o_lora][(H/G)*Dh] */
    cpu_mat wo_b;                            /* [D][G*o_lora] */
    bool has_comp, has_indexer;
    compressor_weights comp;                 /* ratio != 0 */
    compressor_weights idx_comp;             /* ratio 4 */
    cpu_mat idx_wq_b;                        /* [idx_heads*idx_dim][q_lora] */
    cpu_mat idx_proj;                        /* [idx_heads][D] */
    cpu_mat gate_inp;                        /* [n_expert][D] */
    float *exp_bias;                         /* [n_expert] or NULL (hash layers) */
    int32_t *tid2eid;                        /* [vocab][n_used] or NULL */
    experts_mat gate_exps, up_exps, down_exps;
    bool has_shared;
    cpu_mat sh_gate, sh_up, sh_down;
    /* MTP block only (MODEL_MATH §11). */
    cpu_mat e_proj, h_proj;                  /* [D][D] */
    float *enorm, *hnorm, *out_norm;         /* [D] */
    cpu_mat hc_head_fn;                      /* [hc][hc*D] */
    float *hc_head_scale, *hc_head_base;     /* [1], [hc] */
} layer_weights;

typedef struct model_weights {
    cpu_mat tok_embd;                        /* [vocab][D] */
    cpu_mat out_hc_fn;                       /* [hc][hc*D] */
    float *out_hc_scale, *out_hc_base;       /* [1], [hc] */
    float *out_norm;                         /* [D] */
    cpu_mat output;                          /* [vocab][D] */
    layer_weights *layers;                   /* n_layer entries */
    bool has_mtp;
    layer_weights mtp;                       /* valid when has_mtp */
} model_weights;

/* Binds and validates everything; errors name the tensor, expected and found type/dims.
 * The MTP block comes from mtp_g when non-NULL (required there), else from g if present. */
ds4_status weights_bind(model_weights *w, const gguf_ctx *g, const gguf_ctx *mtp_g,
                        const model_hparams *hp, ds4_error *err);
void weights_free(model_weights *w, const model_hparams *hp);

#endif
