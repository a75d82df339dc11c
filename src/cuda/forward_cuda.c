/*
 * cuda/forward_cuda.c — the V4 forward pass on the GPU, one token at a time (MODEL_MATH §2):
 * embedding, per layer hc_pre -> attention (forward_attn.c) -> hc_post and hc_pre -> MoE
 * (forward_moe.c) -> hc_post, then hc_head, final norm and the output head (§10). Each step is
 * the op-table call (cuda/cuda_api.h) standing for the CPU step of model/forward.c,
 * attention.c, moe.c, in the same order, so the GPU result differs from the CPU only by the
 * summation order inside the ops (see their tolerances) — never by a different formula.
 *
 * Owns: the order of the ops and the per-token bookkeeping (ring slot, position).
 * Must not: hold state outside cuda_state, or run kernels of its own.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "format/types.h"
#include "cuda/forward_impl.h"
#include "cuda/model_cuda_impl.h"
#include "cuda/sample_dev.h"

/* The tag of call site (line, name): an index into the state's site table, added on first
 * use (profiling only; marks past CU_PROF_SITES sites are dropped). Also forward_chunk.c's. */
void cuda_prof_site(cuda_state *s, int line, const char *expr) {
    const char *name = s->prof_what ? s->prof_what : expr;
    s->prof_what = NULL;
    int i = 0;
    while (i < s->n_prof_site && (s->prof_line[i] != line || s->prof_name[i] != name)) i++;
    if (i == s->n_prof_site) {
        if (i == CU_PROF_SITES) return;
        s->prof_line[i] = line;
        s->prof_name[i] = name;
        s->n_prof_site++;
    }
    cuda_prof_mark(s->prof, i);
}

/* Profiling without hooks holds the stream at a gate while a layer's ops are queued, so the
 * events time the GPU running them back to back (prof.cu); hooks download mid-layer: no gate. */
static bool prof_gated(const cuda_state *s, const model_capture *cap) {
    return s->prof && !cap && !s->check;
}

const char *cuda_state_profile_site(const cuda_state *s, int tag, int *line) {
    if (!s || tag < 0 || tag >= s->n_prof_site) return NULL;
    if (line) *line = s->prof_line[tag];
    return s->prof_name[tag];
}

/* Hands the last product to the verification hook (host copies of x [n_x][cols], y). */
ds4_status cuda_fwd_check_mv(cuda_state *s, int64_t il, const char *what, const cpu_mat *w,
                           const float *x, const float *y, int n_x, ds4_error *err) {
    size_t need = (size_t)n_x * (size_t)(w->n_in > w->n_out ? w->n_in : w->n_out);
    if (need > s->h_cap) {
        float *a = realloc(s->h_x, need * sizeof(float)), *b = a ? realloc(s->h_y, need * sizeof(float)) : NULL;
        if (a) s->h_x = a;
        if (b) s->h_y = b;
        if (!a || !b) return ds4_seterr(err, DS4_ERR_NOMEM, "cuda: check buffers");
        s->h_cap = need;
    }
    ds4_status st;
    CK(cuda_download(s->h_x, x, (size_t)n_x * (size_t)w->n_in * sizeof(float), err));
    CK(cuda_download(s->h_y, y, (size_t)n_x * (size_t)w->n_out * sizeof(float), err));
    s->check(s->check_user, il, what, w, s->h_x, s->h_y);
    return DS4_OK;
}

ds4_status cuda_fwd_mv(cuda_state *s, int64_t il, const char *what, const cu_mat *w,
                     const float *x, float *y, ds4_error *err) {
    ds4_status st = cuda_matvec(w->type, w->d, w->rows, w->cols, x, s->ws.act, y, err);
    s->prof_what = what;
    if (st || !s->check || !w->host) return st;
    return cuda_fwd_check_mv(s, il, what, w->host, x, y, 1, err);
}

/* The sub-layer input a, quantized once per activation kind for all the products that read it
 * (issue #7: fewer launches); NULL for kinds that read f32. hc_pre invalidates it. */
ds4_status cuda_fwd_act_of_a(cuda_state *s, int type, int64_t cols, const void **out,
                           ds4_error *err) {
    *out = NULL;
    int k = cuda_act_kind(type);
    if (k == CUDA_ACT_F32 || cols != s->cm->m->hp.n_embd) return DS4_OK;
    ds4_status st;
    if (!s->qa[k]) return DS4_OK; /* eval_prepare allocates it */
    if (!s->qa_ok[k]) CK(cuda_quantize_act(k, s->ws.a, s->qa[k], cols, err));
    s->qa_ok[k] = true;
    *out = s->qa[k];
    return DS4_OK;
}

/* mv with x = a, reusing a's quantized copy. */
ds4_status cuda_fwd_mv_a(cuda_state *s, int64_t il, const char *what, const cu_mat *w, float *y,
                       ds4_error *err) {
    const void *q;
    ds4_status st;
    CKQ(cuda_fwd_act_of_a(s, w->type, w->cols, &q, err));
    if (!q) return cuda_fwd_mv(s, il, what, w, s->ws.a, y, err);
    if ((st = cuda_matvec_preq(w->type, w->d, w->rows, w->cols, q, y, err))) return st;
    s->prof_what = what;
    if (!s->check || !w->host) return DS4_OK;
    return cuda_fwd_check_mv(s, il, what, w->host, s->ws.a, y, 1, err);
}

int cuda_fwd_fuse3(const cuda_state *s) {
    if (s->check) return 0;
    const char *e = getenv("DS4_CUDA_FUSE3");
    return e && e[0] ? atoi(e) : F3_DEFAULT;
}

bool cuda_fwd_branches(const cuda_state *s, int kind) {
    if (!s->graphing || s->check) return false;
    const char *e = getenv("DS4_CUDA_BRANCHES");
    return ((e && e[0] ? atoi(e) : FWD_BR_ALL) & kind) != 0;
}

static ds4_status hc_post(cuda_state *s, ds4_error *err);

/* model/forward.c fwd_hc_pre: mix = fn·X, then ρ, split, weighted sum and norm (§4.1).
 * pend: the previous sub-layer's hc_post (f, post, comb) has not run yet (fuse3): it runs
 * first, or inside the mix launch. */
static ds4_status hc_pre(cuda_state *s, int64_t il, const char *what, const cu_mat *fn,
                         const float *scale, const float *base, const float *norm, bool pend,
                         ds4_error *err) {
    const model_hparams *hp = &s->cm->m->hp;
    cu_ws *w = &s->ws;
    ds4_status st;
    int fz = cuda_fwd_fuse3(s);
    if ((fz & (F3_POST | F3_PRE)) && cuda_act_kind(fn->type) == CUDA_ACT_F32 &&
        fn->cols == hp->n_hc * hp->n_embd) {
        void *q80 = s->qa[CUDA_ACT_Q8_0], *q8k = s->qa[CUDA_ACT_Q8_K];
        s->qa_ok[0] = false;
        s->qa_ok[CUDA_ACT_Q8_0] = q80 != NULL;
        s->qa_ok[CUDA_ACT_Q8_K] = q8k != NULL;
        /* no mark here: the caller's marks this site, hc_post and hc_pre included */
        s->prof_what = what;
        st = cuda_hc_mix_fused(fn->type, fn->d, fn->rows, w->X, pend ? w->f : NULL, w->post,
                               w->comb, w->X2, (int)hp->n_hc, hp->n_embd, w->mix, scale, base,
                               norm, (int)hp->sinkhorn_iters, hp->hc_eps, hp->norm_eps, w->pre,
                               w->post, w->comb, w->a, q80, q8k, (fz & F3_PRE) != 0, err);
        if (st) return st;
        if (pend) {
            float *x = w->X;
            w->X = w->X2;
            w->X2 = x;
        }
        return DS4_OK;
    }
    if (pend) CKQ(hc_post(s, err));
    CK(cuda_fwd_mv(s, il, what, fn, w->X, w->mix, err));
    /* a is rewritten; its quantized copies come with it (issue #7: no launches of their own),
     * except under the verification hook (act_of_a then quantizes, as before). */
    void *q80 = s->check ? NULL : s->qa[CUDA_ACT_Q8_0], *q8k = s->check ? NULL : s->qa[CUDA_ACT_Q8_K];
    s->qa_ok[0] = false;
    s->qa_ok[CUDA_ACT_Q8_0] = q80 != NULL;
    s->qa_ok[CUDA_ACT_Q8_K] = q8k != NULL;
    return cuda_hc_pre_quant(w->X, w->mix, scale, base, norm, 1, (int)hp->n_hc, hp->n_embd,
                             (int)hp->sinkhorn_iters, hp->hc_eps, hp->norm_eps, w->pre, w->post,
                             w->comb, w->a, q80, q8k, err);
}

/* model/forward.c fwd_hc_post: X2 = hc_post(f, X), then swap (§4.3). */
static ds4_status hc_post(cuda_state *s, ds4_error *err) {
    const model_hparams *hp = &s->cm->m->hp;
    cu_ws *w = &s->ws;
    ds4_status st;
    CK(cuda_hc_post(w->f, w->X, w->post, w->comb, 1, (int)hp->n_hc, hp->n_embd, w->X2, err));
    float *x = w->X;
    w->X = w->X2;
    w->X2 = x;
    return DS4_OK;
}

/* model/forward.c fwd_output for the current token: hc_head, norm, head into ws.logits. */
static ds4_status head(cuda_state *s, ds4_error *err) {
    const cuda_model *cm = s->cm;
    const model_hparams *hp = &cm->m->hp;
    int64_t il = hp->n_layer;
    cu_ws *w = &s->ws;
    ds4_status st;
    CK(cuda_fwd_mv(s, il, "out_hc_fn", &cm->out_hc_fn, w->X, w->mix, err));
    CK(cuda_hc_head(w->X, w->mix, cm->out_hc_scale, cm->out_hc_base, cm->out_norm, 1,
                    (int)hp->n_hc, hp->n_embd, hp->hc_eps, hp->norm_eps, w->y, err));
    CK(cuda_fwd_mv(s, il, "output", &cm->output, w->y, w->logits, err));
    return DS4_OK;
}

/* The head of the current token with its logits downloaded to the host. */
static ds4_status output(cuda_state *s, float *logits, ds4_error *err) {
    const model_hparams *hp = &s->cm->m->hp;
    cu_ws *w = &s->ws;
    ds4_status st;
    bool gate = prof_gated(s, NULL);
    if (gate && (st = cuda_prof_gate_hold(s->prof, err))) return st;
    st = head(s, err);
    if (gate) cuda_prof_gate_release(s->prof);
    if (st) return st;
    return cuda_download(logits, w->logits, (size_t)hp->n_vocab * sizeof(float), err);
}

/* The greedy next token of the current one (model_eval_opts.token_out): head (unless the
 * logits were just computed) and argmax on the device, only the id downloaded. Without hooks
 * or profiling the head + argmax are one CUDA graph, captured once (no position in it). */
static ds4_status greedy(cuda_state *s, bool need_head, int32_t *out, ds4_error *err) {
    const model_hparams *hp = &s->cm->m->hp;
    cu_ws *w = &s->ws;
    ds4_status st;
    if (!s->d_greedy) CK(cuda_malloc((void **)&s->d_greedy, sizeof(int32_t), err));
    if (need_head && !s->check && !s->no_graph && !s->prof) {
        if (!s->graph_head) {
            CK(cuda_graph_begin(err));
            st = head(s, err);
            if (!st) st = cuda_argmax(w->logits, 1, hp->n_vocab, s->d_greedy, err);
            if (st) {
                cuda_graph_abort();
                return st;
            }
            if ((st = cuda_graph_end(&s->graph_head, err))) {
                cuda_graph_free(s->graph_head);
                s->graph_head = NULL;
                return st;
            }
        }
        CK(cuda_graph_launch(s->graph_head, err));
    } else {
        bool gate = prof_gated(s, NULL);
        if (gate && (st = cuda_prof_gate_hold(s->prof, err))) return st;
        st = need_head ? head(s, err) : DS4_OK;
        if (!st) {
            s->prof_what = "argmax";
            st = cuda_argmax(w->logits, 1, hp->n_vocab, s->d_greedy, err);
            if (!st && s->prof) cuda_prof_site(s, __LINE__, "argmax");
        }
        if (gate) cuda_prof_gate_release(s->prof);
        if (st) return st;
    }
    return cuda_download(out, s->d_greedy, sizeof(int32_t), err);
}

/* sample_dev.h: the current token's logits to the host, the head run first when need_head. */
ds4_status cuda_state_logits(cuda_state *s, bool need_head, float *logits, ds4_error *err) {
    if (!s || !logits) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_state_logits: NULL argument");
    if (need_head) return output(s, logits, err);
    return cuda_download(logits, s->ws.logits, (size_t)s->cm->m->hp.n_vocab * sizeof(float), err);
}

/* sample_dev.h: the next token drawn by smp from the current token's logits, on the device
 * (sample_dev.cu) with only the id downloaded; the host sampler when the device answers that
 * the candidate set is too large. The plan's uniform is put back whenever the device's draw
 * did not happen, so the PRNG sequence is ds4_sampler_sample's in every case. */
ds4_status cuda_state_sample(cuda_state *s, cuda_sampler **ds, ds4_sampler *smp, bool need_head,
                             float *host_logits, bool *logits_on_host, int32_t *tok, ds4_error *err) {
    if (!s || !ds || !smp || !host_logits || !logits_on_host || !tok)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_state_sample: NULL argument");
    const model_hparams *hp = &s->cm->m->hp;
    ds4_status st;
    *logits_on_host = false;
    if (!*ds && (st = cuda_sampler_create(ds, hp->n_vocab, err))) return st;
    if (need_head) {
        bool gate = prof_gated(s, NULL);
        if (gate && (st = cuda_prof_gate_hold(s->prof, err))) return st;
        st = head(s, err);
        if (gate) cuda_prof_gate_release(s->prof);
        if (st) return st;
    }
    smp_plan plan;
    smp_plan_next(smp, &plan);
    if ((int64_t)plan.n_vocab != hp->n_vocab) {
        smp_plan_undo(smp, &plan);
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_state_sample: sampler for %u tokens, model has %lld",
                          plan.n_vocab, (long long)hp->n_vocab);
    }
    s->prof_what = "sample";
    st = cuda_sample_logits(*ds, s->ws.logits, &plan, tok, err);
    if (!st && s->prof) cuda_prof_site(s, __LINE__, "sample");
    if (!st && *tok >= 0) return DS4_OK;
    smp_plan_undo(smp, &plan);
    if (st) return st;
    if (*tok != CUDA_SAMPLE_HOST) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "sample: no finite logit");
    if ((st = cuda_download(host_logits, s->ws.logits, (size_t)hp->n_vocab * sizeof(float), err))) return st;
    *logits_on_host = true;
    return ds4_sampler_sample(smp, host_logits, tok, err);
}

void cuda_forward_free(cuda_state *s) {
    if (!s) return;
    cuda_graph_free(s->graph_head);
    s->graph_head = NULL;
    cuda_free(s->d_greedy);
    s->d_greedy = NULL;
}

/* Capture hooks (model.h) for one token: the layer rows and routing decisions, downloaded. */
static ds4_status capture_rows(cuda_state *s, const model_capture *cap, int64_t il, int64_t pos,
                               const char *what, const float *d, int64_t n, ds4_error *err) {
    if (!cap || !cap->layer) return DS4_OK;
    size_t need = (size_t)n;
    if (need > s->h_cap) {
        float *a = realloc(s->h_x, need * sizeof(float)), *b = a ? realloc(s->h_y, need * sizeof(float)) : NULL;
        if (a) s->h_x = a;
        if (b) s->h_y = b;
        if (!a || !b) return ds4_seterr(err, DS4_ERR_NOMEM, "cuda: capture buffers");
        s->h_cap = need;
    }
    ds4_status st;
    CK(cuda_download(s->h_x, d, (size_t)n * sizeof(float), err));
    cap->layer(cap->user, il, what, pos, 1, s->h_x, n);
    return DS4_OK;
}

static ds4_status capture_choices(cuda_state *s, const model_capture *cap, int64_t il,
                                  int64_t pos, ds4_error *err) {
    if (!cap) return DS4_OK;
    const model_hparams *hp = &s->cm->m->hp;
    ds4_status st;
    if (cap->experts) {
        int32_t ids[64];
        int K = (int)hp->n_expert_used;
        if (K <= 64) {
            CK(cuda_download(ids, s->ws.sel, (size_t)K * sizeof(int32_t), err));
            cap->experts(cap->user, il, pos, ids, K);
        }
    }
    return DS4_OK;
}

static ds4_status capture_indexer(cuda_state *s, const model_capture *cap, int64_t il,
                                  int64_t pos, ds4_error *err) {
    const model_hparams *hp = &s->cm->m->hp;
    if (!cap || !cap->indexer || hparams_ratio(hp, il) != 4) return DS4_OK;
    int32_t n = 0;
    ds4_status st;
    CK(cuda_download(&n, s->ws.n_isel, sizeof n, err));
    if (n < 0 || n > hp->idx_topk) return ds4_seterr(err, DS4_ERR_INTERNAL, "cuda: indexer count %d", n);
    int32_t *rows = malloc((size_t)(n ? n : 1) * sizeof(int32_t));
    if (!rows) return ds4_seterr(err, DS4_ERR_NOMEM, "cuda: capture buffers");
    st = cuda_download(rows, s->ws.isel, (size_t)n * sizeof(int32_t), err);
    if (!st) cap->indexer(cap->user, il, pos, rows, n);
    free(rows);
    return st;
}

/* Layer il of one token at pos (§2): attention and MoE sub-layers with their HC steps. */
static ds4_status eval_layer(cuda_model *cm, cuda_state *s, int64_t il, int64_t pos,
                             const model_capture *cap, ds4_error *err) {
    const model_hparams *hp = &cm->m->hp;
    cu_ws *w = &s->ws;
    int64_t D = hp->n_embd, hc = hp->n_hc;
    ds4_status st;
    /* fuse3: each sub-layer's hc_post runs inside the next hc_pre's launch, except the last
     * layer's (hc_out and the head read X); never with hooks, which read X in between. */
    bool defer = (cuda_fwd_fuse3(s) & F3_POST) && !cap;
    {
        const cu_layer *L = &cm->layers[il];
        CK(hc_pre(s, il, "hc_attn_fn", &L->hc_attn_fn, L->hc_attn_scale, L->hc_attn_base,
                  L->attn_norm, defer && il > 0, err));
        CK(cuda_fwd_attn(s, il, pos, err));
        CKQ(capture_indexer(s, cap, il, pos, err));
        if (!defer) CKQ(hc_post(s, err));
        CKQ(capture_rows(s, cap, il, pos, "attn_out", w->f, D, err));
        CKQ(capture_rows(s, cap, il, pos, "h_attn", w->X, hc * D, err));
        CK(hc_pre(s, il, "hc_ffn_fn", &L->hc_ffn_fn, L->hc_ffn_scale, L->hc_ffn_base, L->ffn_norm,
                  defer, err));
        CK(cuda_fwd_moe(s, il, err));
        CKQ(capture_choices(s, cap, il, pos, err));
        if (!defer || il + 1 == hp->n_layer) CKQ(hc_post(s, err));
        CKQ(capture_rows(s, cap, il, pos, "ffn_out", w->f, D, err));
        CKQ(capture_rows(s, cap, il, pos, "h_out", w->X, hc * D, err));
    }
    return DS4_OK;
}

/* The layers of one token at pos. */
static ds4_status eval_layers(cuda_model *cm, cuda_state *s, int64_t pos, const model_capture *cap,
                              ds4_error *err) {
    ds4_status st;
    for (int64_t il = 0; il < cm->m->hp.n_layer; il++) {
        bool gate = prof_gated(s, cap);
        if (gate && (st = cuda_prof_gate_hold(s->prof, err))) return st;
        st = eval_layer(cm, s, il, pos, cap, err);
        if (gate) cuda_prof_gate_release(s->prof);
        if (st) return st;
    }
    return DS4_OK;
}

/* §2: e = embed[u]; X = [e, ..., e], decoded on the host from the mapping as on the CPU. */
static ds4_status embed_host(cuda_model *cm, cuda_state *s, int32_t tok, ds4_error *err) {
    const model_hparams *hp = &cm->m->hp;
    cu_ws *w = &s->ws;
    int64_t D = hp->n_embd, hc = hp->n_hc;
    ds4_status st;
    CK(cpu_mat_row_f32(&cm->m->w.tok_embd, tok, w->h_row, err));
    for (int64_t k = 1; k < hc; k++) memcpy(w->h_row + k * D, w->h_row, (size_t)D * sizeof(float));
    return cuda_upload(w->X, w->h_row, (size_t)(hc * D) * sizeof(float), err);
}

/* Device buffers the graph steps and the shared-input products use, allocated before any
 * capture (no allocation may happen inside one): position, a's quantized copies, o's
 * quantized copy and the group ids 0..G-1 of the grouped output projection. */
static ds4_status eval_prepare(cuda_state *s, ds4_error *err) {
    const model_hparams *hp = &s->cm->m->hp;
    const cu_mat *wa = &s->cm->layers[0].wo_a;
    ds4_status st;
    if (!s->d_pos) {
        CK(cuda_malloc((void **)&s->d_pos, sizeof(int64_t), err));
        /* The fused norm chains (normfuse.cu), on since their op tests (norm_rope_qat) and the
         * model tests passed with them on an H200 and an H100 (2026-11-26); DS4_CUDA_FUSE_NORM=0
         * turns them off (one launch per op, for comparisons). */
        const char *e = getenv("DS4_CUDA_FUSE_NORM");
        s->fuse_norm = !(e && e[0] == '0');
    }
    /* ggml ids 8 = Q8_0 (Q8_0 records), 10 = Q2_K (Q8_K blocks): any type of each kind */
    if (!s->qa[CUDA_ACT_Q8_0] && hp->n_embd % 32 == 0)
        CK(cuda_malloc(&s->qa[CUDA_ACT_Q8_0], cuda_matvec_scratch_bytes(8, hp->n_embd), err));
    if (!s->qa[CUDA_ACT_Q8_K] && hp->n_embd % 256 == 0)
        CK(cuda_malloc(&s->qa[CUDA_ACT_Q8_K], cuda_matvec_scratch_bytes(10, hp->n_embd), err));
    int64_t G = hp->o_groups, HD = hp->n_head * hp->head_dim;
    int same = 1; /* one grouped launch needs every layer's wo_a of one type and shape */
    for (int64_t il = 0; il < hp->n_layer; il++) {
        const cu_mat *m = &s->cm->layers[il].wo_a;
        same &= m->type == wa->type && m->rows == G * hp->o_lora && m->cols == HD / G;
    }
    if (!s->d_stage && s->cm->n_host_layers > 0) CK(cuda_fwd_stage_prepare(s, err));
    if (!s->grp_ids && same && G > 0 && G <= 65535 && HD % G == 0) {
        int32_t *ids = malloc((size_t)G * sizeof(int32_t));
        if (!ids) return ds4_seterr(err, DS4_ERR_NOMEM, "cuda: group ids");
        for (int64_t g = 0; g < G; g++) ids[g] = (int32_t)g;
        size_t qb = (size_t)G * cuda_matvec_scratch_bytes(wa->type, HD / G);
        st = cuda_malloc(&s->qo, qb ? qb : 1, err);
        if (!st) st = cuda_malloc((void **)&s->grp_ids, (size_t)G * sizeof(int32_t), err);
        if (!st) st = cuda_upload(s->grp_ids, ids, (size_t)G * sizeof(int32_t), err);
        free(ids);
        if (st) {
            cuda_free(s->grp_ids);
            s->grp_ids = NULL;
            return st;
        }
    }
    return DS4_OK;
}

/* The position bound a captured step is built for: grids and scratch of attention and the
 * indexer are sized for positions below it, so the graph is re-captured only when the
 * position crosses it (256, 512, 1024, ... capped at the context). */
static int64_t graph_bound(int64_t pos, int64_t n_ctx) {
    int64_t b = 256;
    while (b < pos + 1 && b < n_ctx) b *= 2;
    return b < n_ctx ? b : n_ctx;
}

/* One token through the layers as a CUDA graph (graph.cu): token id and position are
 * uploaded to the device, the embedding is looked up there, and the captured step is launched
 * as it is; it is captured again (updated in place, or instantiated) only when the position
 * bound changes. */
static ds4_status eval_token_graph(cuda_model *cm, cuda_state *s, int32_t tok, ds4_error *err) {
    const model_hparams *hp = &cm->m->hp;
    cu_ws *w = &s->ws;
    int64_t pos = s->host->kv.pos, bound = graph_bound(pos, s->host->kv.n_ctx);
    ds4_status st;
    CK(cuda_upload(s->d_pos, &pos, sizeof pos, err));
    CK(cuda_upload(w->tok, &tok, sizeof tok, err));
    int dev_embed = cm->tok_embd.d != NULL;
    if (!dev_embed) CK(embed_host(cm, s, tok, err));
    if (!s->graph || s->graph_bound != bound) {
        s->graph_bound = bound;
        s->graphing = true;
        CK(cuda_graph_begin(err));
        st = dev_embed ? cuda_embed_rows(cm->tok_embd.d, cm->tok_embd.type, cm->tok_embd.rows,
                                         hp->n_embd, w->tok, (int)hp->n_hc, w->X, err)
                       : DS4_OK;
        if (!st) st = eval_layers(cm, s, pos, NULL, err);
        s->graphing = false;
        if (st) {
            cuda_graph_abort();
            cuda_graph_free(s->graph); /* its pointers may be half swapped: capture anew */
            s->graph = NULL;
            return st;
        }
        if ((st = cuda_graph_end(&s->graph, err))) {
            cuda_graph_free(s->graph);
            s->graph = NULL;
            return st;
        }
    }
    CK(cuda_graph_launch(s->graph, err));
    s->host->kv.pos = pos + 1;
    return DS4_OK;
}

static ds4_status eval_token(cuda_model *cm, cuda_state *s, int32_t tok, const model_capture *cap,
                             ds4_error *err) {
    int64_t pos = s->host->kv.pos;
    ds4_status st;
    /* Without hooks: one graph launch. Hooks download rows mid-step: op by op. */
    if (!cap && !s->check && !s->no_graph && !s->prof) return eval_token_graph(cm, s, tok, err);
    CK(embed_host(cm, s, tok, err));
    CK(cuda_upload(s->ws.tok, &tok, sizeof tok, err));
    CK(eval_layers(cm, s, pos, cap, err));
    s->host->kv.pos = pos + 1;
    return DS4_OK;
}

static ds4_status eval_tokens(cuda_model *cm, cuda_state *s, const int32_t *tokens,
                              int64_t n_tokens, const model_eval_opts *o, ds4_error *err) {
    if (!cm || !s || s->cm != cm)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_model_eval: state does not belong to this model");
    if (n_tokens <= 0) return DS4_OK;
    if (!tokens) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_model_eval: tokens is NULL");
    if (o && o->logits_mode != MODEL_LOGITS_NONE && !o->logits)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_model_eval: logits requested but NULL");
    const model_hparams *hp = &cm->m->hp;
    kv_state *kv = &s->host->kv;
    if (n_tokens > kv->n_ctx - kv->pos)
        return ds4_seterr(err, DS4_ERR_RANGE,
                          "cuda_model_eval: context overflow: position %lld + %lld tokens > context %lld",
                          (long long)kv->pos, (long long)n_tokens, (long long)kv->n_ctx);
    for (int64_t t = 0; t < n_tokens; t++)
        if (tokens[t] < 0 || tokens[t] >= hp->n_vocab)
            return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                              "cuda_model_eval: token %lld is %d, vocabulary is 0..%lld",
                              (long long)t, tokens[t], (long long)hp->n_vocab - 1);
    int64_t hcD = hp->n_hc * hp->n_embd;
    ds4_status st;
    CK(cuda_state_sync_device(s, err));
    CK(eval_prepare(s, err));
    s->dev_newer = true;
    /* A prompt goes through the batched ops (forward_chunk.c, hooks included; the default,
     * cuda_state_set_batch / DS4_CUDA_BATCH=0 turn it off); single tokens run the decode step. */
    if (n_tokens > 1 && s->batch)
        return cuda_eval_chunk(s, tokens, n_tokens, o, err);
    for (int64_t t = 0; t < n_tokens; t++) {
        if ((st = eval_token(cm, s, tokens[t], o ? o->capture : NULL, err)))
            return ds4_err_prefix(err, "cuda: token %lld at position %lld", (long long)t,
                                  (long long)kv->pos);
        if (o && o->hc_out)
            CK(cuda_download(o->hc_out + t * hcD, s->ws.X, (size_t)hcD * sizeof(float), err));
        if (!o || o->logits_mode == MODEL_LOGITS_NONE) continue;
        if (o->logits_mode == MODEL_LOGITS_ALL)
            CK(output(s, o->logits + t * hp->n_vocab, err));
        else if (t == n_tokens - 1)
            CK(output(s, o->logits, err));
    }
    return DS4_OK;
}

/* model_eval_opts.token_out (issue #7, greedy decode without the logits): with logits_mode
 * NONE the last token runs as a decode step followed by head + argmax on the device (greedy),
 * so only its id crosses the bus; with logits asked for, the argmax of the host copy. */
ds4_status cuda_model_eval(cuda_model *cm, cuda_state *s, const int32_t *tokens,
                           int64_t n_tokens, const model_eval_opts *o, ds4_error *err) {
    if (!o || !o->token_out || n_tokens <= 0 || !cm || !s || s->cm != cm || !tokens)
        return eval_tokens(cm, s, tokens, n_tokens, o, err);
    const model_hparams *hp = &cm->m->hp;
    ds4_status st;
    if (o->logits_mode != MODEL_LOGITS_NONE) {
        if ((st = eval_tokens(cm, s, tokens, n_tokens, o, err))) return st;
        int64_t last = o->logits_mode == MODEL_LOGITS_ALL ? n_tokens - 1 : 0;
        *o->token_out = ds4_argmax(o->logits + last * hp->n_vocab, (uint32_t)hp->n_vocab);
        return DS4_OK;
    }
    /* checked before the state changes, as eval_tokens does for one call */
    const kv_state *kv = &s->host->kv;
    int32_t lt = tokens[n_tokens - 1];
    if (n_tokens > kv->n_ctx - kv->pos || lt < 0 || lt >= hp->n_vocab)
        return eval_tokens(cm, s, tokens, n_tokens, o, err); /* reports the error */
    model_eval_opts o1 = *o;
    o1.token_out = NULL;
    if (n_tokens > 1) {
        if ((st = eval_tokens(cm, s, tokens, n_tokens - 1, &o1, err))) return st;
        if (o1.hc_out) o1.hc_out += (n_tokens - 1) * hp->n_hc * hp->n_embd;
    }
    if ((st = eval_tokens(cm, s, tokens + n_tokens - 1, 1, &o1, err))) return st;
    return greedy(s, true, o->token_out, err);
}

ds4_status cuda_state_set_profile(cuda_state *s, bool on, ds4_error *err) {
    if (!on) {
        cuda_prof_free(s->prof);
        s->prof = NULL;
        return DS4_OK;
    }
    if (s->prof) return DS4_OK;
    return cuda_prof_create(&s->prof, 1 << 16, err);
}

ds4_status cuda_state_profile_collect(cuda_state *s, void (*fn)(void *user, int line, float ms),
                                      void *user, ds4_error *err) {
    if (!s->prof) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda profile: not on");
    return cuda_prof_collect(s->prof, fn, user, err);
}
