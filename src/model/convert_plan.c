/*
 * model/convert_plan.c — the GGUF tensor table of a V4 shape (GGUF_LAYOUT §3.1-§3.4, MTP §3.8)
 * with the HF source name of each tensor (§3.6 rule 1), and the type policy: presets, family
 * overrides and block-size fallbacks (§5.3). Pure bookkeeping: reads no data.
 */
#include "model/convert.h"
#include "core/error.h"
#include "core/safemath.h"
#include "format/types.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- policy ----------------------------------------------------------------------------------- */

static const char *const fam_names[CV_FAM_COUNT] = {
    [CV_FAM_EMBED] = "embedding", [CV_FAM_OUTPUT] = "output", [CV_FAM_ATTN] = "attention",
    [CV_FAM_SHARED] = "shared",   [CV_FAM_GATE] = "gate",     [CV_FAM_UP] = "up",
    [CV_FAM_DOWN] = "down",       [CV_FAM_DENSE] = "dense",   [CV_FAM_MTP] = "mtp",
    [CV_FAM_VECTOR] = "vector",   [CV_FAM_TABLE] = "table",
};

static const char *const preset_names[CV_PRESET_COUNT] = {"f32", "f16", "bf16", "q8_0", "q2", "q4"};

const char *cv_family_name(cv_family f) {
    return (unsigned)f < CV_FAM_COUNT ? fam_names[f] : "?";
}

const char *cv_preset_name(cv_preset p) {
    return (unsigned)p < CV_PRESET_COUNT ? preset_names[p] : "?";
}

ds4_status cv_preset_from_name(const char *name, cv_preset *out, ds4_error *err) {
    for (int i = 0; i < CV_PRESET_COUNT; i++)
        if (strcmp(name, preset_names[i]) == 0) {
            *out = (cv_preset)i;
            return DS4_OK;
        }
    return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                      "convert: unknown preset '%s' (f32, f16, bf16, q8_0, q2, q4)", name);
}

void cv_policy_init(cv_policy *pol, cv_preset p) {
    uint32_t all = DS4_TYPE_F32;
    /* general.file_type: llama.cpp ftype numbers (informative, GGUF_LAYOUT §2.3). */
    switch (p) {
    case CV_PRESET_F16: all = DS4_TYPE_F16, pol->file_type = 1; break;
    case CV_PRESET_BF16: all = DS4_TYPE_BF16, pol->file_type = 32; break;
    case CV_PRESET_Q8_0: all = DS4_TYPE_Q8_0, pol->file_type = 7; break;
    case CV_PRESET_Q2: pol->file_type = 19; break;
    case CV_PRESET_Q4: pol->file_type = 15; break;
    default: pol->file_type = 0; break;
    }
    for (int f = 0; f < CV_FAM_COUNT; f++) {
        pol->fam_type[f] = all;
        pol->fam_set[f] = false;
    }
    pol->keep_f32_src = p != CV_PRESET_Q2 && p != CV_PRESET_Q4;
    if (p == CV_PRESET_Q2 || p == CV_PRESET_Q4) {
        /* The published layout (GGUF_LAYOUT §3.2-§3.3, §5.3 recipes). */
        pol->fam_type[CV_FAM_EMBED] = DS4_TYPE_F16;
        pol->fam_type[CV_FAM_DENSE] = DS4_TYPE_F16;
        pol->fam_type[CV_FAM_OUTPUT] = DS4_TYPE_Q8_0;
        pol->fam_type[CV_FAM_ATTN] = DS4_TYPE_Q8_0;
        pol->fam_type[CV_FAM_SHARED] = DS4_TYPE_Q8_0;
        pol->fam_type[CV_FAM_MTP] = DS4_TYPE_Q8_0;
        if (p == CV_PRESET_Q2) {
            pol->fam_type[CV_FAM_GATE] = DS4_TYPE_IQ2_XXS;
            pol->fam_type[CV_FAM_UP] = DS4_TYPE_IQ2_XXS;
            pol->fam_type[CV_FAM_DOWN] = DS4_TYPE_Q2_K;
        } else {
            pol->fam_type[CV_FAM_GATE] = DS4_TYPE_Q4_K;
            pol->fam_type[CV_FAM_UP] = DS4_TYPE_Q4_K;
            pol->fam_type[CV_FAM_DOWN] = DS4_TYPE_Q4_K;
        }
    }
    pol->fam_type[CV_FAM_VECTOR] = DS4_TYPE_F32;
    pol->fam_type[CV_FAM_TABLE] = DS4_TYPE_I32;
}

const char *cv_policy_help(void) {
    return "  presets (family types; 1-D tensors are always F32, tid2eid always I32):\n"
           "    f32   every float tensor F32 (exact; for tests)\n"
           "    f16   every matrix F16          bf16  every matrix BF16 (ds4 itself rejects BF16)\n"
           "    q8_0  every matrix Q8_0\n"
           "          (f16/bf16/q8_0 keep the matrices the checkpoint stores in F32 - HC fns,\n"
           "          compressor ape - in F32 unless their family is given with --type)\n"
           "    q2    gate/up experts IQ2_XXS, down experts Q2_K, attention/shared/output/mtp Q8_0,\n"
           "          embedding and dense (HC fns, compressor, indexer, router) F16 - the published q2\n"
           "    q4    routed experts Q4_K, the rest as q2 - the published q4\n"
           "  families for --type FAMILY=TYPE: experts (gate+up+down), gate, up, down, attention,\n"
           "    shared, output, embedding, dense, mtp; TYPE: f32 f16 bf16 q8_0 q2_k q4_k iq2_xxs\n"
           "  a row length that does not fit TYPE's block falls back: q2_k/q4_k/iq2_xxs -> q8_0 -> f16\n";
}

static bool parse_weight_type(const char *s, uint32_t *out) {
    char buf[32];
    size_t n = strlen(s);
    if (n == 0 || n >= sizeof buf) return false;
    for (size_t i = 0; i <= n; i++) buf[i] = s[i] == '-' ? '_' : (char)tolower((unsigned char)s[i]);
    ds4_type t;
    if (!ds4_type_from_name(buf, &t)) return false;
    switch (t) {
    case DS4_TYPE_F32: case DS4_TYPE_F16: case DS4_TYPE_BF16: case DS4_TYPE_Q8_0:
    case DS4_TYPE_Q2_K: case DS4_TYPE_Q4_K: case DS4_TYPE_IQ2_XXS:
        *out = (uint32_t)t;
        return true;
    default:
        return false;
    }
}

ds4_status cv_policy_override(cv_policy *pol, const char *spec, ds4_error *err) {
    const char *eq = strchr(spec, '=');
    if (!eq || eq == spec)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "convert: --type '%s': expected FAMILY=TYPE", spec);
    size_t flen = (size_t)(eq - spec);
    uint32_t type;
    if (!parse_weight_type(eq + 1, &type))
        return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                          "convert: --type '%s': unknown type '%s' (f32 f16 bf16 q8_0 q2_k q4_k "
                          "iq2_xxs)",
                          spec, eq + 1);
    if (flen == 7 && strncmp(spec, "experts", 7) == 0) {
        pol->fam_type[CV_FAM_GATE] = pol->fam_type[CV_FAM_UP] = pol->fam_type[CV_FAM_DOWN] = type;
        pol->fam_set[CV_FAM_GATE] = pol->fam_set[CV_FAM_UP] = pol->fam_set[CV_FAM_DOWN] = true;
        return DS4_OK;
    }
    for (int f = 0; f < CV_FAM_VECTOR; f++)
        if (strlen(fam_names[f]) == flen && strncmp(spec, fam_names[f], flen) == 0) {
            pol->fam_type[f] = type;
            pol->fam_set[f] = true;
            return DS4_OK;
        }
    return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                      "convert: --type '%s': unknown family '%.*s' (experts, gate, up, down, "
                      "attention, shared, output, embedding, dense, mtp)",
                      spec, (int)flen, spec);
}

/* ---- table ------------------------------------------------------------------------------------- */

typedef struct builder {
    cv_plan *plan;
    uint64_t cap;
    const cv_policy *pol;
    ds4_status st;
    ds4_error *err;
    char gpfx[32], hpfx[32]; /* "blk.L." / "layers.L." */
    int layer;
} builder;

/* Type for a tensor of row length ne0: the family type, or the nearest one whose block fits. */
static uint32_t fit_type(uint32_t want, uint64_t ne0) {
    uint32_t t = want;
    while (ne0 % ds4_type_block_elems(t) != 0)
        t = ds4_type_block_elems(t) > 32 ? DS4_TYPE_Q8_0 : DS4_TYPE_F16;
    return t;
}

static void add(builder *b, cv_family fam, cv_src_kind src, const char *gname, const char *hname,
                uint32_t n_dims, uint64_t ne0, uint64_t ne1, uint64_t ne2, bool src_f32) {
    if (b->st) return;
    cv_plan *p = b->plan;
    if (p->n == b->cap) {
        uint64_t cap = b->cap ? b->cap * 2 : 256;
        cv_tensor *nt = realloc(p->t, cap * sizeof *nt);
        if (!nt) {
            b->st = ds4_seterr(b->err, DS4_ERR_NOMEM, "convert: out of memory");
            return;
        }
        p->t = nt;
        b->cap = cap;
    }
    cv_tensor *t = &p->t[p->n];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s%s", b->gpfx, gname);
    snprintf(t->hf, sizeof t->hf, "%s%s", b->hpfx, hname);
    t->fam = fam;
    t->src = src;
    t->layer = b->layer;
    t->n_dims = n_dims;
    t->ne[0] = ne0, t->ne[1] = ne1, t->ne[2] = ne2;
    t->src_f32 = src_f32;
    t->wanted = b->pol->fam_type[fam];
    /* cv_policy.keep_f32_src: rounding an F32 source (HC fns, ape) to f16/bf16 moves tiny-v4
     * logits by up to 0.3, while every other float source is BF16/FP8/FP4 and exact in BF16. */
    if (src_f32 && b->pol->keep_f32_src && !b->pol->fam_set[fam]) t->wanted = DS4_TYPE_F32;
    t->type = fit_type(t->wanted, ne0);
    b->st = ds4_tensor_bytes(t->type, t->ne, n_dims, &t->n_bytes, b->err);
    if (b->st) {
        ds4_err_prefix(b->err, "convert: tensor '%s'", t->name);
        return;
    }
    uint64_t padded;
    if (!ds4_align_up_u64(&padded, t->n_bytes, 32) || !ds4_add_u64(&p->data_bytes, p->data_bytes, padded)) {
        b->st = ds4_seterr(b->err, DS4_ERR_NOMEM, "convert: model size overflows");
        return;
    }
    p->n++;
}

#define V1(fam, g, h, n) add(b, fam, CV_SRC_FLOAT, g, h, 1, n, 1, 1, false) /* always F32 */
#define M2(fam, g, h, in, out) add(b, fam, CV_SRC_FLOAT, g, h, 2, in, out, 1, false)
/* A matrix the checkpoint stores in F32 (GGUF_LAYOUT §3.2-§3.3 HF dtype column). */
#define M2F(fam, g, h, in, out) add(b, fam, CV_SRC_FLOAT, g, h, 2, in, out, 1, true)

/* One transformer block (§3.3) with prefixes already set; `ratio` and `hash` select the optional
 * compressor/indexer and router tensors (§3.4). */
static void add_block(builder *b, const cv_shape *s, uint32_t ratio, bool hash) {
    uint64_t D = s->dim, hd = s->head_dim, hc = s->hc_mult, mix = (2 + hc) * hc;
    M2F(CV_FAM_DENSE, "hc_attn_fn.weight", "hc_attn_fn", hc * D, mix);
    V1(CV_FAM_VECTOR, "hc_attn_scale.weight", "hc_attn_scale", 3);
    V1(CV_FAM_VECTOR, "hc_attn_base.weight", "hc_attn_base", mix);
    V1(CV_FAM_VECTOR, "attn_norm.weight", "attn_norm.weight", D);
    M2(CV_FAM_ATTN, "attn_q_a.weight", "attn.wq_a.weight", D, s->q_lora);
    V1(CV_FAM_VECTOR, "attn_q_a_norm.weight", "attn.q_norm.weight", s->q_lora);
    M2(CV_FAM_ATTN, "attn_q_b.weight", "attn.wq_b.weight", s->q_lora, (uint64_t)s->n_heads * hd);
    M2(CV_FAM_ATTN, "attn_kv.weight", "attn.wkv.weight", D, hd);
    V1(CV_FAM_VECTOR, "attn_kv_a_norm.weight", "attn.kv_norm.weight", hd);
    V1(CV_FAM_VECTOR, "attn_sinks.weight", "attn.attn_sink", s->n_heads);
    M2(CV_FAM_ATTN, "attn_output_a.weight", "attn.wo_a.weight",
       (uint64_t)s->n_heads * hd / s->o_groups, (uint64_t)s->o_groups * s->o_lora);
    M2(CV_FAM_ATTN, "attn_output_b.weight", "attn.wo_b.weight", (uint64_t)s->o_groups * s->o_lora, D);
    if (ratio) {
        uint64_t w = (ratio == 4 ? 2 : 1) * hd; /* overlapping windows double the width (§3.3) */
        M2F(CV_FAM_DENSE, "attn_compressor_ape.weight", "attn.compressor.ape", w, ratio);
        M2(CV_FAM_DENSE, "attn_compressor_kv.weight", "attn.compressor.wkv.weight", D, w);
        M2(CV_FAM_DENSE, "attn_compressor_gate.weight", "attn.compressor.wgate.weight", D, w);
        V1(CV_FAM_VECTOR, "attn_compressor_norm.weight", "attn.compressor.norm.weight", hd);
    }
    if (ratio == 4) {
        uint64_t ih = s->idx_head_dim, iw = 2 * ih;
        M2(CV_FAM_DENSE, "indexer.attn_q_b.weight", "attn.indexer.wq_b.weight", s->q_lora,
           (uint64_t)s->idx_heads * ih);
        M2(CV_FAM_DENSE, "indexer.proj.weight", "attn.indexer.weights_proj.weight", D, s->idx_heads);
        M2F(CV_FAM_DENSE, "indexer_compressor_ape.weight", "attn.indexer.compressor.ape", iw, 4);
        M2(CV_FAM_DENSE, "indexer_compressor_kv.weight", "attn.indexer.compressor.wkv.weight", D, iw);
        M2(CV_FAM_DENSE, "indexer_compressor_gate.weight", "attn.indexer.compressor.wgate.weight",
           D, iw);
        V1(CV_FAM_VECTOR, "indexer_compressor_norm.weight", "attn.indexer.compressor.norm.weight", ih);
    }
    M2F(CV_FAM_DENSE, "hc_ffn_fn.weight", "hc_ffn_fn", hc * D, mix);
    V1(CV_FAM_VECTOR, "hc_ffn_scale.weight", "hc_ffn_scale", 3);
    V1(CV_FAM_VECTOR, "hc_ffn_base.weight", "hc_ffn_base", mix);
    V1(CV_FAM_VECTOR, "ffn_norm.weight", "ffn_norm.weight", D);
    M2(CV_FAM_DENSE, "ffn_gate_inp.weight", "ffn.gate.weight", D, s->n_experts);
    if (hash)
        add(b, CV_FAM_TABLE, CV_SRC_TID2EID, "ffn_gate_tid2eid.weight", "ffn.gate.tid2eid", 2,
            s->n_used, s->vocab, 1, false);
    else
        V1(CV_FAM_VECTOR, "exp_probs_b.bias", "ffn.gate.bias", s->n_experts);
    uint64_t F = s->moe_inter, E = s->n_experts;
    add(b, CV_FAM_GATE, CV_SRC_EXPERTS, "ffn_gate_exps.weight", "ffn.experts.%u.w1.weight", 3, D, F, E, false);
    add(b, CV_FAM_UP, CV_SRC_EXPERTS, "ffn_up_exps.weight", "ffn.experts.%u.w3.weight", 3, D, F, E, false);
    add(b, CV_FAM_DOWN, CV_SRC_EXPERTS, "ffn_down_exps.weight", "ffn.experts.%u.w2.weight", 3, F, D, E, false);
    if (s->n_shared) {
        M2(CV_FAM_SHARED, "ffn_gate_shexp.weight", "ffn.shared_experts.w1.weight", D, F);
        M2(CV_FAM_SHARED, "ffn_up_shexp.weight", "ffn.shared_experts.w3.weight", D, F);
        M2(CV_FAM_SHARED, "ffn_down_shexp.weight", "ffn.shared_experts.w2.weight", F, D);
    }
}

ds4_status cv_plan_build(cv_plan *plan, const cv_shape *s, const cv_policy *pol, bool with_mtp,
                         ds4_error *err) {
    memset(plan, 0, sizeof *plan);
    builder bb = {.plan = plan, .pol = pol, .err = err, .layer = -1}, *b = &bb;
    uint64_t D = s->dim, hc = s->hc_mult;
    /* Globals (§3.2). */
    M2(CV_FAM_EMBED, "token_embd.weight", "embed.weight", D, s->vocab);
    V1(CV_FAM_VECTOR, "output_hc_base.weight", "hc_head_base", hc);
    M2F(CV_FAM_DENSE, "output_hc_fn.weight", "hc_head_fn", hc * D, hc);
    V1(CV_FAM_VECTOR, "output_hc_scale.weight", "hc_head_scale", 1);
    V1(CV_FAM_VECTOR, "output_norm.weight", "norm.weight", D);
    M2(CV_FAM_OUTPUT, "output.weight", "head.weight", D, s->vocab);
    for (uint32_t l = 0; l < s->n_layers && !b->st; l++) {
        snprintf(b->gpfx, sizeof b->gpfx, "blk.%u.", l);
        snprintf(b->hpfx, sizeof b->hpfx, "layers.%u.", l);
        b->layer = (int)l;
        add_block(b, s, s->ratios[l], l < s->n_hash);
    }
    if (with_mtp && !b->st) {
        /* §3.8: the MTP block's own head/projection tensors, then a ratio-0, non-hash block. */
        snprintf(b->gpfx, sizeof b->gpfx, "mtp.0.");
        snprintf(b->hpfx, sizeof b->hpfx, "mtp.0.");
        b->layer = (int)s->n_layers;
        V1(CV_FAM_VECTOR, "hc_head_base.weight", "hc_head_base", hc);
        M2F(CV_FAM_DENSE, "hc_head_fn.weight", "hc_head_fn", hc * D, hc);
        V1(CV_FAM_VECTOR, "hc_head_scale.weight", "hc_head_scale", 1);
        M2(CV_FAM_MTP, "e_proj.weight", "e_proj.weight", D, D);
        M2(CV_FAM_MTP, "h_proj.weight", "h_proj.weight", D, D);
        V1(CV_FAM_VECTOR, "enorm.weight", "enorm.weight", D);
        V1(CV_FAM_VECTOR, "hnorm.weight", "hnorm.weight", D);
        V1(CV_FAM_VECTOR, "norm.weight", "norm.weight", D);
        add_block(b, s, s->ratios[s->n_layers], false);
        plan->has_mtp = true;
    }
    if (b->st) cv_plan_free(plan);
    return b->st;
}

void cv_plan_free(cv_plan *plan) {
    free(plan->t);
    memset(plan, 0, sizeof *plan);
}

const cv_tensor *cv_plan_find(const cv_plan *plan, const char *name) {
    for (uint64_t i = 0; i < plan->n; i++)
        if (strcmp(plan->t[i].name, name) == 0) return &plan->t[i];
    return NULL;
}
