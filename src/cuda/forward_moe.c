/*
 * cuda/forward_moe.c — the MoE sub-layer of the one-token forward on the GPU (MODEL_MATH §9,
 * model/moe.c moe_forward): router, the K selected routed experts in grouped launches, clamped
 * SwiGLU with the routing weight, the shared expert, the sum in ascending expert order; fused
 * into fewer launches where the shapes allow (issue #7), and for layers whose routed experts
 * live in pinned host memory, the selected experts staged on the device first.
 *
 * Owns: the order of the MoE ops. Must not: hold state outside cuda_state, or run kernels of
 * its own (forward_cuda.c calls it from eval_layer).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "format/types.h"
#include "cuda/forward_impl.h"

/* The lane of the shared expert's branch (cuda_fwd_branches). */
enum { LANE_SHARED = 1 };

/* The K selected experts of e (ids on the device) in one launch; x shared or per expert. */
static ds4_status mv_experts(cuda_state *s, int64_t il, const char *what, const cu_experts *e,
                             const float *x, int per_expert_x, float *y, ds4_error *err) {
    int K = (int)s->cm->m->hp.n_expert_used;
    const void *q = NULL;
    ds4_status st;
    if (!per_expert_x && x == s->ws.a) CKQ(cuda_fwd_act_of_a(s, e->type, e->cols, &q, err));
    if (q)
        st = cuda_matvec_experts_preq(e->type, e->d, e->n_expert, e->rows, e->cols, s->ws.sel, K, q,
                                      y, err);
    else
        st = cuda_matvec_experts(e->type, e->d, e->n_expert, e->rows, e->cols, s->ws.sel, K, x,
                                 per_expert_x, s->ws.act, y, err);
    s->prof_what = what;
    if (st || !s->check) return st;
    int32_t ids[64];
    if (K > 64) return DS4_OK;
    CK(cuda_download(ids, s->ws.sel, (size_t)K * sizeof(int32_t), err));
    for (int k = 0; k < K; k++) {
        cpu_mat wk = experts_get(e->host, ids[k]);
        char nm[64];
        snprintf(nm, sizeof nm, "%s[%d]", what, k);
        CK(cuda_fwd_check_mv(s, il, nm, &wk, x + (per_expert_x ? k * e->cols : 0), y + k * e->rows, 1, err));
    }
    return DS4_OK;
}

/* SwiGLU can hand its rows to a product of `type` already quantized (cuda_swiglu_quant). */
static bool swiglu_quant_ok(int type, int64_t F) {
    int k = cuda_act_kind(type);
    return (k == CUDA_ACT_Q8_K && F % 256 == 0) || (k == CUDA_ACT_Q8_0 && F % 32 == 0);
}

/* Issue #7, the MoE after the router in 5 launches instead of 7 (off under the verification hook,
 * which checks each product, and with DS4_CUDA_MOE_FUSE=0): the shared expert's gate+up moves
 * before the SwiGLUs so the routed and the shared SwiGLU+quantize share one launch, the shared
 * down runs before the routed down, and the routed down also writes the combination
 * (cuda_matvec_experts_down_combine). Same kernel per product and the same operations, so the
 * same bits as moe()'s separate calls (tests/cuda/test_cuda_moe_dec.c). The shared down's
 * quantized input lives in ws.yexp's bytes: free until the routed down writes yexp, which runs
 * after the shared down has read them. Whether L allows it, with a's quantized copies (*q routed,
 * *qs shared). */
static ds4_status moe_fused_ok(cuda_state *s, const cu_layer *L, const void **q, const void **qs,
                               bool *ok, ds4_error *err) {
    const model_hparams *hp = &s->cm->m->hp;
    const int64_t D = hp->n_embd, F = hp->n_ff_exp;
    const int K = (int)hp->n_expert_used;
    const cu_experts *eg = &L->gate_exps, *eu = &L->up_exps, *ed = &L->down_exps;
    const cu_mat *sg = &L->sh_gate, *su = &L->sh_up, *sd = &L->sh_down;
    const char *env = getenv("DS4_CUDA_MOE_FUSE");
    ds4_status st;
    *ok = false;
    if (s->check || !L->has_shared || (env && strcmp(env, "0") == 0)) return DS4_OK;
    if (eu->type != eg->type || eu->rows != eg->rows || eu->cols != eg->cols ||
        eu->n_expert != eg->n_expert || su->type != sg->type || su->rows != sg->rows ||
        su->cols != sg->cols || ed->rows != D || sd->rows != D || !swiglu_quant_ok(ed->type, F) ||
        !swiglu_quant_ok(sd->type, sg->rows) || !cuda_mvx_supports(ed->type, ed->cols, K) ||
        cuda_matvec_scratch_bytes(sd->type, sd->cols) > (size_t)K * (size_t)D * sizeof(float))
        return DS4_OK;
    CKQ(cuda_fwd_act_of_a(s, eg->type, eg->cols, q, err));
    CKQ(cuda_fwd_act_of_a(s, sg->type, sg->cols, qs, err));
    *ok = *q && *qs;
    return DS4_OK;
}

/* The fused MoE's shared expert on its own (a branch beside the router and the routed
 * experts, cuda_fwd_branches): gate+up, SwiGLU+quantize, down into ws.shy. The SwiGLU pair's
 * halves as two launches are bit-identical to the pair (cuda_swiglu_quant_pair). */
static ds4_status moe_shared(cuda_state *s, int64_t il, const cu_layer *L, const void *qs,
                             ds4_error *err) {
    const model_hparams *hp = &s->cm->m->hp;
    cu_ws *w = &s->ws;
    const cu_mat *sg = &L->sh_gate, *su = &L->sh_up, *sd = &L->sh_down;
    void *shq = w->yexp;
    ds4_status st;
    s->prof_what = "sh_gate+up";
    CK(cuda_matvec_pair_preq(sg->type, sg->d, su->d, sg->rows, sg->cols, qs, w->shg, w->shu, err));
    CK(cuda_swiglu_quant(cuda_act_kind(sd->type), w->shg, w->shu, NULL, 1, sg->rows,
                         hp->swiglu_clamp_shared[il], w->shg, shq, err));
    s->prof_what = "sh_down";
    CK(cuda_matvec_preq(sd->type, sd->d, sd->rows, sd->cols, shq, w->shy, err));
    return DS4_OK;
}

/* The fused MoE (moe_fused_ok) after the router; shared: its shared expert ran already on
 * lane 1 (moe_shared), joined before the routed down, which reads ws.shy. */
static ds4_status moe_fused(cuda_state *s, int64_t il, const cu_layer *L, bool shared,
                            bool *done, ds4_error *err) {
    const model_hparams *hp = &s->cm->m->hp;
    cu_ws *w = &s->ws;
    const int64_t F = hp->n_ff_exp;
    const int K = (int)hp->n_expert_used;
    const cu_experts *eg = &L->gate_exps, *eu = &L->up_exps, *ed = &L->down_exps;
    const cu_mat *sg = &L->sh_gate, *su = &L->sh_up, *sd = &L->sh_down;
    const void *q = NULL, *qs = NULL;
    ds4_status st;
    CKQ(moe_fused_ok(s, L, &q, &qs, done, err));
    if (!*done) {
        if (shared) return ds4_seterr(err, DS4_ERR_INTERNAL, "cuda moe: shared expert branch without the fused path");
        return DS4_OK;
    }
    const int64_t Fs = sg->rows;
    s->prof_what = "gate+up_exps";
    CK(cuda_matvec_experts_pair_preq(eg->type, eg->d, eu->d, eg->n_expert, eg->rows, eg->cols, w->sel,
                                     K, q, w->g, w->u, err));
    if (shared) {
        CK(cuda_swiglu_quant(cuda_act_kind(ed->type), w->g, w->u, w->selw, K, F, hp->swiglu_clamp[il],
                             w->g, w->act, err));
        CKQ(cuda_graph_join(LANE_SHARED, err));
    } else {
        s->prof_what = "sh_gate+up";
        CK(cuda_matvec_pair_preq(sg->type, sg->d, su->d, sg->rows, sg->cols, qs, w->shg, w->shu, err));
        void *shq = w->yexp;
        s->prof_what = "swiglu+quantize, experts and shared";
        CK(cuda_swiglu_quant_pair(cuda_act_kind(ed->type), w->g, w->u, w->selw, K, F, hp->swiglu_clamp[il],
                                  w->g, w->act, cuda_act_kind(sd->type), w->shg, w->shu, NULL, 1, Fs,
                                  hp->swiglu_clamp_shared[il], w->shg, shq, err));
        s->prof_what = "sh_down";
        CK(cuda_matvec_preq(sd->type, sd->d, sd->rows, sd->cols, shq, w->shy, err));
    }
    s->prof_what = "down_exps + moe_combine";
    return cuda_matvec_experts_down_combine(ed->type, ed->d, ed->n_expert, ed->rows, ed->cols, w->sel,
                                            K, w->act, w->yexp, w->shy, w->f, err);
}

/* The experts and the shared expert after the router (the K selected experts in grouped
 * launches, clamped SwiGLU with the routing weight, shared expert, sum in ascending expert
 * order), L's experts read at the ids in ws.sel. */
static ds4_status moe_experts(cuda_state *s, int64_t il, const cu_layer *L, bool shared,
                              ds4_error *err) {
    const model_hparams *hp = &s->cm->m->hp;
    cu_ws *w = &s->ws;
    int64_t F = hp->n_ff_exp;
    int K = (int)hp->n_expert_used;
    ds4_status st;
    bool fused;
    CKQ(moe_fused(s, il, L, shared, &fused, err));
    if (fused) return DS4_OK;
    const cu_experts *eg = &L->gate_exps, *eu = &L->up_exps, *ed = &L->down_exps;
    const void *q = NULL;
    /* Issue #7 (fewer launches; off under the verification hook, which checks each product):
     * gate and up of the K experts in one launch, SwiGLU fused with the quantizer of down's
     * input, the same per-row kernels and rounding as the separate calls. */
    if (!s->check) CKQ(cuda_fwd_act_of_a(s, eg->type, eg->cols, &q, err));
    if (q && eu->type == eg->type && eu->rows == eg->rows && eu->cols == eg->cols &&
        eu->n_expert == eg->n_expert) {
        s->prof_what = "gate+up_exps";
        CK(cuda_matvec_experts_pair_preq(eg->type, eg->d, eu->d, eg->n_expert, eg->rows, eg->cols,
                                         w->sel, K, q, w->g, w->u, err));
    } else {
        CK(mv_experts(s, il, "gate_exps", eg, w->a, 0, w->g, err));
        CK(mv_experts(s, il, "up_exps", eu, w->a, 0, w->u, err));
    }
    if (!s->check && swiglu_quant_ok(ed->type, F)) {
        CK(cuda_swiglu_quant(cuda_act_kind(ed->type), w->g, w->u, w->selw, K, F,
                             hp->swiglu_clamp[il], w->g, w->act, err));
        s->prof_what = "down_exps";
        CK(cuda_matvec_experts_preq_x(ed->type, ed->d, ed->n_expert, ed->rows, ed->cols, w->sel,
                                      K, w->act, w->yexp, err));
    } else {
        CK(cuda_swiglu(w->g, w->u, w->selw, K, F, hp->swiglu_clamp[il], w->g, err));
        CK(mv_experts(s, il, "down_exps", ed, w->g, 1, w->yexp, err));
    }
    if (L->has_shared) {
        int64_t Fs = L->sh_gate.rows;
        const cu_mat *sg = &L->sh_gate, *su = &L->sh_up, *sd = &L->sh_down;
        q = NULL;
        if (!s->check) CKQ(cuda_fwd_act_of_a(s, sg->type, sg->cols, &q, err));
        if (q && su->type == sg->type && su->rows == sg->rows && su->cols == sg->cols) {
            s->prof_what = "sh_gate+up";
            CK(cuda_matvec_pair_preq(sg->type, sg->d, su->d, sg->rows, sg->cols, q, w->shg, w->shu,
                                     err));
        } else {
            CK(cuda_fwd_mv_a(s, il, "sh_gate", sg, w->shg, err));
            CK(cuda_fwd_mv_a(s, il, "sh_up", su, w->shu, err));
        }
        if (!s->check && swiglu_quant_ok(sd->type, Fs)) {
            CK(cuda_swiglu_quant(cuda_act_kind(sd->type), w->shg, w->shu, NULL, 1, Fs,
                                 hp->swiglu_clamp_shared[il], w->shg, w->act, err));
            s->prof_what = "sh_down";
            CK(cuda_matvec_preq(sd->type, sd->d, sd->rows, sd->cols, w->act, w->shy, err));
        } else {
            CK(cuda_swiglu(w->shg, w->shu, NULL, 1, Fs, hp->swiglu_clamp_shared[il], w->shg, err));
            CK(cuda_fwd_mv(s, il, "sh_down", sd, w->shg, w->shy, err));
        }
    }
    s->prof_what = "moe_combine"; /* marked by the caller's CK */
    return cuda_moe_combine(w->yexp, L->has_shared ? w->shy : NULL, 1, K, hp->n_embd, w->f, err);
}

static ds4_status stage_layer(cuda_state *s, const cu_layer *L, cu_layer *Ls, ds4_error *err);

/* model/moe.c moe_forward for one token: router, then moe_experts. A layer whose experts live
 * in host memory (issue #7) has the K selected ones staged on the device first, so that its
 * products are the device layers' kernels on the same bytes (not under the verification
 * hook, which checks each product against the host experts by their real ids). */
ds4_status cuda_fwd_moe(cuda_state *s, int64_t il, ds4_error *err) {
    const cuda_model *cm = s->cm;
    const model_hparams *hp = &cm->m->hp;
    const cu_layer *L = &cm->layers[il];
    cu_ws *w = &s->ws;
    int E = (int)hp->n_expert, K = (int)hp->n_expert_used;
    ds4_status st;
    bool shared = false; /* the shared expert runs as a branch beside the router (lane 1) */
    if (cuda_fwd_branches(s, FWD_BR_MOE)) {
        const void *q, *qs;
        CKQ(moe_fused_ok(s, L, &q, &qs, &shared, err));
        if (shared) {
            CKQ(cuda_graph_fork(LANE_SHARED, err));
            CKQ(moe_shared(s, il, L, qs, err));
            cuda_graph_main();
        }
    }
    CK(cuda_fwd_mv_a(s, il, "gate_inp", &L->gate_inp, w->rl, err));
    CK(cuda_moe_route(w->rl, L->tid2eid ? NULL : L->exp_bias, L->tid2eid, w->tok, 1, E, K,
                      hp->route_scale, hp->expert_weights_norm, w->sel, w->selw, err));
    if (s->check || il >= cm->n_host_layers || !s->d_stage) return moe_experts(s, il, L, shared, err);
    cu_layer Ls;
    CK(stage_layer(s, L, &Ls, err));
    int32_t *sel = w->sel;
    w->sel = s->stage_ids;
    st = moe_experts(s, il, &Ls, shared, err);
    w->sel = sel;
    return st;
}

/* Bytes of one expert of e (rows of its type), 0 when the type is unknown. */
static int64_t expert_bytes(const cu_experts *e) {
    uint64_t rb = 0;
    if (ds4_type_row_bytes((uint32_t)e->type, (uint64_t)e->cols, &rb, NULL) != DS4_OK) return 0;
    return (int64_t)rb * e->rows;
}

/* Experts in host memory (issue #7): the staging buffer of the selected experts of a
 * host-resident layer (K experts of gate, up and down) and the ids 0..K-1 they then have. */
ds4_status cuda_fwd_stage_prepare(cuda_state *s, ds4_error *err) {
    const int K = (int)s->cm->m->hp.n_expert_used;
    ds4_status st;
    int64_t total = 0;
    for (int64_t il = 0; il < s->cm->n_host_layers; il++) {
        const cu_layer *L = &s->cm->layers[il];
        const cu_experts *e[3] = {&L->gate_exps, &L->up_exps, &L->down_exps};
        for (int i = 0; i < 3; i++) {
            int64_t b = (expert_bytes(e[i]) + 255) & ~(int64_t)255;
            if (b > s->stage_each[i]) s->stage_each[i] = b;
        }
    }
    for (int i = 0; i < 3; i++) total += s->stage_each[i] * K;
    if (total <= 0 || K <= 0) return DS4_OK;
    int32_t *ids = malloc((size_t)K * sizeof(int32_t));
    if (!ids) return ds4_seterr(err, DS4_ERR_NOMEM, "cuda: staged expert ids");
    for (int k = 0; k < K; k++) ids[k] = k;
    st = cuda_malloc((void **)&s->d_stage, (size_t)total, err);
    if (!st) st = cuda_malloc((void **)&s->stage_ids, (size_t)K * sizeof(int32_t), err);
    if (!st) st = cuda_upload(s->stage_ids, ids, (size_t)K * sizeof(int32_t), err);
    free(ids);
    if (st) {
        cuda_free(s->d_stage);
        cuda_free(s->stage_ids);
        s->d_stage = NULL;
        s->stage_ids = NULL;
        return ds4_err_prefix(err, "cuda: staging for the host-resident experts (%lld bytes)",
                              (long long)total);
    }
    return DS4_OK;
}

/* Ls = L with its routed experts replaced by the staged copies of the K selected ones
 * (ws.sel), copied from host memory now (cuda_expert_stage). */
static ds4_status stage_layer(cuda_state *s, const cu_layer *L, cu_layer *Ls, ds4_error *err) {
    const int K = (int)s->cm->m->hp.n_expert_used;
    ds4_status st;
    *Ls = *L;
    cu_experts *e[3] = {&Ls->gate_exps, &Ls->up_exps, &Ls->down_exps};
    uint8_t *p = s->d_stage;
    for (int i = 0; i < 3; i++) {
        int64_t b = expert_bytes(e[i]);
        if (b <= 0 || b > s->stage_each[i])
            return ds4_seterr(err, DS4_ERR_INTERNAL, "cuda: staged expert of %lld bytes", (long long)b);
        s->prof_what = "stage host experts";
        CK(cuda_expert_stage(p, e[i]->d, b, e[i]->n_expert, s->ws.sel, K, err));
        e[i]->d = p;
        e[i]->n_expert = K;
        p += s->stage_each[i] * K;
    }
    return DS4_OK;
}
