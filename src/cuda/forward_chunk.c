/*
 * cuda/forward_chunk.c — prefill on the GPU a chunk of n tokens per layer pass (issue #7),
 * the GPU twin of the CPU chunk path (model/forward.c, attention.c, moe.c with n > 1): every
 * dense product is one cuda_matmul over the chunk's rows, attention and the indexer run on the
 * whole chunk, the compressors advance token by token, and the routed experts run grouped by
 * expert (the chunk's (token, expert) pairs gathered per expert on the host from the n·K ids,
 * one cuda_matmul per used expert, SwiGLU with the routing weights, rows scattered back and
 * combined in ascending-k order like the decode step). Same formulas as forward_cuda.c; the
 * results differ from token by token only by the summation order of matmul vs matvec.
 *
 * Off by default (cuda_state_set_batch): cuda_matmul's sum order differs from the matvec's
 * (which follows the CPU's), and the indexer's FP4 round trip and top-k turn that ULP noise
 * into a different selection at near-ties (tiny-v4 `window`, position 67: 0.07 in the logits).
 * Batched prefill needs a matmul summing in the CPU's order before it can be the default.
 *
 * Owns: the chunk workspace (cu_bws) and the order of the batched ops.
 * Must not: run kernels of its own (rows.cu moves rows), or serve the capture and check hooks
 * (forward_cuda.c runs those token by token).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "cuda/model_cuda_impl.h"

/* Tokens per layer pass: larger chunks are split (bounds the workspace, ~1 MB per token on
 * Flash; the GEMMs are already efficient at this size). */
#define CHUNK_MAX 512

typedef struct cu_bws {
    int64_t cap;              /* tokens the buffers hold */
    void *block;
    float *X, *X2, *a, *mix, *pre, *post, *comb, *qr, *q, *o, *kv, *cA, *cB, *iA, *iB, *iq, *iw,
        *oa, *f, *rl, *selw, *shg, *shu, *shy, *yexp, *xg, *pg, *pu, *yd, *pw, *y;
    int32_t *sel, *isel, *n_isel, *tok, *ptok, *pslot, *gidx;
    void *act;                /* cuda_matmul activation scratch */
    float *attn_scr, *idx_scr, *logits;
    size_t attn_bytes, idx_bytes, logits_bytes;
    /* host staging of the expert grouping */
    int32_t *h_sel, *h_ptok, *h_pslot;
    float *h_selw, *h_pw;
    int64_t *h_off;           /* [n_expert + 1] first pair of each expert */
} cu_bws;

/* With profiling on (cuda_state_set_profile) every op is followed by an event tagged with
 * this file's line, as in forward_cuda.c. */
#define CK(x)                                                                                  \
    do {                                                                                       \
        if ((st = (x)) != DS4_OK) return st;                                                   \
        if (s->prof) cuda_prof_mark(s->prof, __LINE__);                                        \
    } while (0)

void cuda_state_set_batch(cuda_state *s, bool on) { s->batch = on; }

void cuda_chunk_free(cuda_state *s) {
    cu_bws *b = s ? s->bws : NULL;
    if (!b) return;
    cuda_free(b->block);
    cuda_free(b->attn_scr);
    cuda_free(b->idx_scr);
    cuda_free(b->logits);
    free(b->h_sel);
    free(b->h_ptok);
    free(b->h_pslot);
    free(b->h_selw);
    free(b->h_pw);
    free(b->h_off);
    free(b);
    s->bws = NULL;
}

static size_t mat_act(const cu_mat *m, int64_t n) {
    return m->d ? cuda_matmul_scratch_bytes(m->type, m->cols, n) : 0;
}

/* The chunk workspace for cap tokens, carved from one allocation (sizes of model/forward.c
 * fwd_ws_reserve with n = cap, plus the expert pairs: n·K rows). */
static ds4_status bws_alloc(cuda_state *s, int64_t cap, ds4_error *err) {
    const cuda_model *cm = s->cm;
    const model_hparams *hp = &cm->m->hp;
    int64_t D = hp->n_embd, hc = hp->n_hc, Dh = hp->head_dim, H = hp->n_head;
    int64_t nmix = (2 + hc) * hc, id = hp->idx_head_dim, ih = hp->idx_n_head;
    int64_t K = hp->n_expert_used, F = hp->n_ff_exp, E = hp->n_expert;
    int64_t topk = hp->idx_topk > 0 ? hp->idx_topk : 1;
    int64_t cw = 1, iwd = 1, Fs = 1;
    size_t act = 0;
    for (int64_t il = 0; il < hp->n_layer; il++) {
        const cu_layer *L = &cm->layers[il];
        if (L->comp.kv.d && L->comp.kv.rows > cw) cw = L->comp.kv.rows;
        if (L->idx_comp.kv.d && L->idx_comp.kv.rows > iwd) iwd = L->idx_comp.kv.rows;
        if (L->has_shared && L->sh_gate.rows > Fs) Fs = L->sh_gate.rows;
        const cu_mat *ms[] = {&L->hc_attn_fn, &L->hc_ffn_fn, &L->wq_a, &L->wq_b, &L->wkv, &L->wo_a,
                              &L->wo_b, &L->comp.kv, &L->comp.gate, &L->idx_comp.kv,
                              &L->idx_comp.gate, &L->idx_wq_b, &L->idx_proj, &L->gate_inp,
                              &L->sh_gate, &L->sh_up, &L->sh_down};
        for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
            size_t b = mat_act(ms[i], cap);
            if (b > act) act = b;
        }
        const cu_experts *es[] = {&L->gate_exps, &L->up_exps, &L->down_exps};
        for (size_t i = 0; i < 3; i++) {
            size_t b = cuda_matmul_scratch_bytes(es[i]->type, es[i]->cols, cap);
            if (b > act) act = b;
        }
    }
    size_t b0 = mat_act(&cm->out_hc_fn, cap), b1 = mat_act(&cm->output, cap);
    if (b0 > act) act = b0;
    if (b1 > act) act = b1;
    cu_bws *w = calloc(1, sizeof *w);
    if (!w) return ds4_seterr(err, DS4_ERR_NOMEM, "cuda chunk: out of host memory");
    s->bws = w;
    w->cap = cap;
    float **fp[] = {&w->X, &w->X2, &w->a, &w->mix, &w->pre, &w->post, &w->comb, &w->qr, &w->q,
                    &w->o, &w->kv, &w->cA, &w->cB, &w->iA, &w->iB, &w->iq, &w->iw, &w->oa,
                    &w->f, &w->rl, &w->selw, &w->shg, &w->shu, &w->shy, &w->yexp, &w->xg,
                    &w->pg, &w->pu, &w->yd, &w->pw, &w->y};
    int64_t fn[] = {hc * D, hc * D, D, nmix, hc, hc, hc * hc, hp->q_lora, H * Dh, H * Dh, Dh,
                    cw, cw, iwd, iwd, ih * id, ih, hp->o_groups * hp->o_lora, D, E, K, Fs, Fs, D,
                    K * D, K * D, K * F, K * F, K * D, K, D};
    int32_t **ip[] = {&w->sel, &w->isel, &w->n_isel, &w->tok, &w->ptok, &w->pslot, &w->gidx};
    int64_t in[] = {K, topk, 1, 1, K, K, hp->o_groups > 0 ? hp->o_groups : 1};
#define AL(x) (((size_t)(x) + 255) & ~(size_t)255)
    size_t total = AL(act);
    for (size_t i = 0; i < sizeof fn / sizeof fn[0]; i++) total += AL((size_t)(fn[i] * cap) * 4);
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) total += AL((size_t)(in[i] * cap) * 4);
    ds4_status st = cuda_malloc(&w->block, total, err);
    if (st) return ds4_err_prefix(err, "cuda chunk: workspace of %zu bytes", total);
    uint8_t *p = w->block;
    w->act = p;
    p += AL(act);
    for (size_t i = 0; i < sizeof fn / sizeof fn[0]; i++) {
        *fp[i] = (float *)p;
        p += AL((size_t)(fn[i] * cap) * 4);
    }
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        *ip[i] = (int32_t *)p;
        p += AL((size_t)(in[i] * cap) * 4);
    }
#undef AL
    size_t np = (size_t)(K * cap);
    w->h_sel = malloc(np * sizeof(int32_t));
    w->h_ptok = malloc(np * sizeof(int32_t));
    w->h_pslot = malloc(np * sizeof(int32_t));
    w->h_selw = malloc(np * sizeof(float));
    w->h_pw = malloc(np * sizeof(float));
    w->h_off = malloc((size_t)(E + 1) * sizeof(int64_t));
    if (!w->h_sel || !w->h_ptok || !w->h_pslot || !w->h_selw || !w->h_pw || !w->h_off)
        return ds4_seterr(err, DS4_ERR_NOMEM, "cuda chunk: out of host memory");
    return DS4_OK;
}

/* Grows a lazily sized device scratch (attention, indexer, logits) to at least need bytes. */
static ds4_status grow(float **p, size_t *have, size_t need, ds4_error *err) {
    if (need <= *have && *p) return DS4_OK;
    cuda_free(*p);
    *p = NULL;
    *have = 0;
    ds4_status st = cuda_malloc((void **)p, need ? need : 1, err);
    if (!st) *have = need;
    return st;
}

/* y[t*ldy..] = W·x[t*ldx..] for the chunk's n rows. */
static ds4_status mm(cuda_state *s, const cu_mat *w, const float *x, int64_t ldx, int64_t n,
                     float *y, int64_t ldy, ds4_error *err) {
    return cuda_matmul(w->type, w->d, w->rows, w->cols, x, ldx, n, s->bws->act, y, ldy, err);
}

/* fwd_hc_pre over n tokens (§4.1). */
static ds4_status hc_pre_n(cuda_state *s, const cu_mat *fn, const float *scale, const float *base,
                           const float *norm, int64_t n, ds4_error *err) {
    const model_hparams *hp = &s->cm->m->hp;
    cu_bws *w = s->bws;
    ds4_status st;
    CK(mm(s, fn, w->X, fn->cols, n, w->mix, fn->rows, err));
    return cuda_hc_pre(w->X, w->mix, scale, base, norm, n, (int)hp->n_hc, hp->n_embd,
                       (int)hp->sinkhorn_iters, hp->hc_eps, hp->norm_eps, w->pre, w->post,
                       w->comb, w->a, err);
}

static ds4_status hc_post_n(cuda_state *s, int64_t n, ds4_error *err) {
    const model_hparams *hp = &s->cm->m->hp;
    cu_bws *w = s->bws;
    ds4_status st;
    CK(cuda_hc_post(w->f, w->X, w->post, w->comb, n, (int)hp->n_hc, hp->n_embd, w->X2, err));
    float *x = w->X;
    w->X = w->X2;
    w->X2 = x;
    return DS4_OK;
}

/* model/attention.c attn_forward for n tokens at pos0. */
static ds4_status attn_n(cuda_state *s, int64_t il, int64_t pos0, int64_t n, ds4_error *err) {
    const cuda_model *cm = s->cm;
    const model_hparams *hp = &cm->m->hp;
    const cu_layer *L = &cm->layers[il];
    cu_kv_layer *kvl = &s->layers[il];
    cu_bws *w = s->bws;
    int64_t D = hp->n_embd, H = hp->n_head, Dh = hp->head_dim, W = hp->n_window, ql = hp->q_lora;
    int nr = (int)hp->n_rope;
    int ratio = (int)hparams_ratio(hp, il);
    const float *freqs = ratio ? cm->freqs_comp : cm->freqs_plain;
    float eps = hp->norm_eps;
    ds4_status st;
    /* §5.1 query path */
    CK(mm(s, &L->wq_a, w->a, D, n, w->qr, ql, err));
    CK(cuda_rmsnorm(w->qr, w->qr, L->q_norm, n, ql, eps, err));
    CK(mm(s, &L->wq_b, w->qr, ql, n, w->q, H * Dh, err));
    CK(cuda_rmsnorm(w->q, w->q, NULL, n * H, Dh, eps, err));
    CK(cuda_rope_tail(w->q, n * H, Dh, Dh - nr, H, nr, freqs, pos0, 0, err));
    /* §5.2 KV path */
    CK(mm(s, &L->wkv, w->a, D, n, w->kv, Dh, err));
    CK(cuda_rmsnorm(w->kv, w->kv, L->kv_norm, n, Dh, eps, err));
    CK(cuda_rope_tail(w->kv, n, Dh, Dh - nr, 1, nr, freqs, pos0, 0, err));
    CK(cuda_fp8_roundtrip(w->kv, n, Dh, Dh - nr, 64, err));
    /* §7.3 steps 2-3: compressors advance token by token (§6.4) */
    if (L->has_comp) {
        int64_t cw = L->comp.kv.rows;
        CK(mm(s, &L->comp.kv, w->a, D, n, w->cA, cw, err));
        CK(mm(s, &L->comp.gate, w->a, D, n, w->cB, cw, err));
        for (int64_t t = 0; t < n; t++)
            CK(cuda_comp_push(&kvl->comp, w->cA + t * cw, w->cB + t * cw, L->comp.ape,
                              L->comp.norm, pos0 + t, 0, freqs, nr, eps, NULL, err));
    }
    if (L->has_indexer) {
        int64_t id = hp->idx_head_dim, ih = hp->idx_n_head, iwd = L->idx_comp.kv.rows;
        CK(mm(s, &L->idx_comp.kv, w->a, D, n, w->iA, iwd, err));
        CK(mm(s, &L->idx_comp.gate, w->a, D, n, w->iB, iwd, err));
        for (int64_t t = 0; t < n; t++)
            CK(cuda_comp_push(&kvl->idx, w->iA + t * iwd, w->iB + t * iwd, L->idx_comp.ape,
                              L->idx_comp.norm, pos0 + t, 1, freqs, nr, eps, NULL, err));
        /* §8 */
        CK(mm(s, &L->idx_wq_b, w->qr, ql, n, w->iq, ih * id, err));
        CK(mm(s, &L->idx_proj, w->a, D, n, w->iw, ih, err));
        CK(cuda_rope_tail(w->iq, n * ih, id, id - nr, ih, nr, freqs, pos0, 0, err));
        CK(cuda_hadamard(w->iq, n * ih, id, (int)id, err));
        CK(cuda_fp4_roundtrip(w->iq, n * ih, id, id, 32, err));
        CK(cuda_scale(w->iw, n * ih, (float)(1.0 / sqrt((double)(id * ih))), err));
        CK(grow(&w->idx_scr, &w->idx_bytes, cuda_indexer_scratch_bytes(n, pos0), err));
        CK(cuda_indexer_topk(w->iq, w->iw, kvl->idx.rows, n, pos0, ih, id, hp->idx_topk,
                             w->idx_scr, w->isel, w->n_isel, err));
    }
    /* §5.4-5.6 */
    const float *comp = ratio ? kvl->comp.rows : NULL;
    const int32_t *isel = ratio == 4 ? w->isel : NULL;
    CK(grow(&w->attn_scr, &w->attn_bytes,
            cuda_attn_scratch_bytes(n, H, Dh, W, ratio, hp->idx_topk, ratio == 4, pos0), err));
    CK(cuda_attn(w->q, w->kv, kvl->raw, W, comp, ratio, isel, w->n_isel, hp->idx_topk, L->sinks,
                 n, pos0, H, Dh, nr, freqs, w->attn_scr, w->o, err));
    /* §7.1: the ring keeps the last min(n, W) rows at slot pos mod W (at most two runs). */
    for (int64_t t = n > W ? n - W : 0; t < n;) {
        int64_t slot = (pos0 + t) % W, run = W - slot;
        if (run > n - t) run = n - t;
        CK(cuda_copy_d2d(kvl->raw + slot * Dh, w->kv + t * Dh, (size_t)(run * Dh) * sizeof(float),
                         err));
        t += run;
    }
    /* §5.6 grouped output projection: group g reads heads [g·H/G, (g+1)·H/G). */
    /* o is first regrouped [G][n][H/G·Dh] into q's buffer (free now) so that each group's
     * product reads contiguous rows (one activation quantization per group, not per token). */
    int64_t G = hp->o_groups, hpg = H / G, ol = hp->o_lora;
    CK(cuda_rows_copy(w->q, w->gidx, w->o, NULL, n * G, hpg * Dh, err));
    for (int64_t g = 0; g < G; g++) {
        cu_mat wg = L->wo_a;
        wg.d += (uint64_t)(g * ol) * wg.row_bytes;
        wg.rows = ol;
        CK(mm(s, &wg, w->q + g * n * hpg * Dh, hpg * Dh, n, w->oa + g * ol, G * ol, err));
    }
    return mm(s, &L->wo_b, w->oa, G * ol, n, w->f, D, err);
}

/* One expert tensor over the grouped pairs: rows [off_e, off_e + cnt_e) of x through expert e. */
static ds4_status experts_mm(cuda_state *s, const cu_experts *e, const float *x, float *y,
                             ds4_error *err) {
    cu_bws *w = s->bws;
    uint64_t eb = e->host->expert_bytes;
    ds4_status st;
    for (int64_t ex = 0; ex < e->n_expert; ex++) {
        int64_t off = w->h_off[ex], cnt = w->h_off[ex + 1] - off;
        if (!cnt) continue;
        /* no per-expert profile mark: the caller's line stands for the whole tensor */
        st = cuda_matmul(e->type, e->d + (uint64_t)ex * eb, e->rows, e->cols, x + off * e->cols,
                         e->cols, cnt, w->act, y + off * e->rows, e->rows, err);
        if (st) return st;
    }
    return DS4_OK;
}

/* model/moe.c moe_forward for n tokens. */
static ds4_status moe_n(cuda_state *s, int64_t il, int64_t n, ds4_error *err) {
    const cuda_model *cm = s->cm;
    const model_hparams *hp = &cm->m->hp;
    const cu_layer *L = &cm->layers[il];
    cu_bws *w = s->bws;
    int64_t D = hp->n_embd, F = hp->n_ff_exp;
    int E = (int)hp->n_expert, K = (int)hp->n_expert_used;
    ds4_status st;
    CK(mm(s, &L->gate_inp, w->a, D, n, w->rl, E, err));
    CK(cuda_moe_route(w->rl, L->tid2eid ? NULL : L->exp_bias, L->tid2eid, w->tok, n, E, K,
                      hp->route_scale, hp->expert_weights_norm, w->sel, w->selw, err));
    /* Group the n·K (token, slot) pairs by expert, tokens ascending within an expert. */
    int64_t np = n * K;
    CK(cuda_download(w->h_sel, w->sel, (size_t)np * sizeof(int32_t), err));
    CK(cuda_download(w->h_selw, w->selw, (size_t)np * sizeof(float), err));
    memset(w->h_off, 0, (size_t)(E + 1) * sizeof(int64_t));
    for (int64_t i = 0; i < np; i++) {
        int32_t e = w->h_sel[i];
        if (e < 0 || e >= E)
            return ds4_seterr(err, DS4_ERR_INTERNAL, "cuda chunk: layer %lld routed to expert %d",
                              (long long)il, e);
        w->h_off[e + 1]++;
    }
    for (int e = 0; e < E; e++) w->h_off[e + 1] += w->h_off[e];
    for (int64_t i = 0; i < np; i++) {
        int64_t j = w->h_off[w->h_sel[i]]++;
        w->h_ptok[j] = (int32_t)(i / K);
        w->h_pslot[j] = (int32_t)i;
        w->h_pw[j] = w->h_selw[i];
    }
    for (int e = E; e > 0; e--) w->h_off[e] = w->h_off[e - 1]; /* back to the starts */
    w->h_off[0] = 0;
    CK(cuda_upload(w->ptok, w->h_ptok, (size_t)np * sizeof(int32_t), err));
    CK(cuda_upload(w->pslot, w->h_pslot, (size_t)np * sizeof(int32_t), err));
    CK(cuda_upload(w->pw, w->h_pw, (size_t)np * sizeof(float), err));
    CK(cuda_rows_copy(w->xg, NULL, w->a, w->ptok, np, D, err));
    CK(experts_mm(s, &L->gate_exps, w->xg, w->pg, err));
    CK(experts_mm(s, &L->up_exps, w->xg, w->pu, err));
    CK(cuda_swiglu(w->pg, w->pu, w->pw, np, F, hp->swiglu_clamp[il], w->pg, err));
    CK(experts_mm(s, &L->down_exps, w->pg, w->yd, err));
    CK(cuda_rows_copy(w->yexp, w->pslot, w->yd, NULL, np, D, err));
    if (L->has_shared) {
        int64_t Fs = L->sh_gate.rows;
        CK(mm(s, &L->sh_gate, w->a, D, n, w->shg, Fs, err));
        CK(mm(s, &L->sh_up, w->a, D, n, w->shu, Fs, err));
        CK(cuda_swiglu(w->shg, w->shu, NULL, n, Fs, hp->swiglu_clamp_shared[il], w->shg, err));
        CK(mm(s, &L->sh_down, w->shg, Fs, n, w->shy, D, err));
    }
    return cuda_moe_combine(w->yexp, L->has_shared ? w->shy : NULL, n, K, D, w->f, err);
}

/* fwd_output for rows [r0, r0 + nr) of the chunk: hc_head, norm, head; logits to host. */
static ds4_status output_n(cuda_state *s, int64_t r0, int64_t nr, float *logits, ds4_error *err) {
    const cuda_model *cm = s->cm;
    const model_hparams *hp = &cm->m->hp;
    cu_bws *w = s->bws;
    int64_t hcD = hp->n_hc * hp->n_embd, V = hp->n_vocab, hc = hp->n_hc;
    ds4_status st;
    CK(grow(&w->logits, &w->logits_bytes, (size_t)(nr * V) * sizeof(float), err));
    CK(mm(s, &cm->out_hc_fn, w->X + r0 * hcD, hcD, nr, w->mix, hc, err));
    CK(cuda_hc_head(w->X + r0 * hcD, w->mix, cm->out_hc_scale, cm->out_hc_base, cm->out_norm, nr,
                    (int)hc, hp->n_embd, hp->hc_eps, hp->norm_eps, w->y, err));
    CK(mm(s, &cm->output, w->y, hp->n_embd, nr, w->logits, V, err));
    return cuda_download(logits, w->logits, (size_t)(nr * V) * sizeof(float), err);
}

/* n (<= cap) tokens at the state's position. */
static ds4_status chunk(cuda_state *s, const int32_t *tokens, int64_t n, float *logits_all,
                        float *logits_last, float *hc_out, ds4_error *err) {
    cuda_model *cm = s->cm;
    const model_hparams *hp = &cm->m->hp;
    cu_bws *w = s->bws;
    int64_t D = hp->n_embd, hc = hp->n_hc, hcD = hc * D, pos0 = s->host->kv.pos;
    ds4_status st;
    CK(cuda_upload(w->tok, tokens, (size_t)n * sizeof(int32_t), err));
    /* row (t, g) of o goes to row g·n + t of the regrouped copy (attn_n) */
    int64_t G = hp->o_groups;
    int32_t *gi = malloc((size_t)(n * G) * sizeof(int32_t));
    if (!gi) return ds4_seterr(err, DS4_ERR_NOMEM, "cuda chunk: out of host memory");
    for (int64_t t = 0; t < n; t++)
        for (int64_t g = 0; g < G; g++) gi[t * G + g] = (int32_t)(g * n + t);
    st = cuda_upload(w->gidx, gi, (size_t)(n * G) * sizeof(int32_t), err);
    free(gi);
    if (st) return st;
    /* §2: X = [e, ..., e] per token */
    for (int64_t t = 0; t < n; t++) {
        if (cm->tok_embd.d) {
            CK(cuda_embed_rows(cm->tok_embd.d, cm->tok_embd.type, cm->tok_embd.rows, D,
                               w->tok + t, (int)hc, w->X + t * hcD, err));
        } else {
            float *h = s->ws.h_row;
            CK(cpu_mat_row_f32(&cm->m->w.tok_embd, tokens[t], h, err));
            for (int64_t k = 1; k < hc; k++) memcpy(h + k * D, h, (size_t)D * sizeof(float));
            CK(cuda_upload(w->X + t * hcD, h, (size_t)hcD * sizeof(float), err));
        }
    }
    for (int64_t il = 0; il < hp->n_layer; il++) {
        const cu_layer *L = &cm->layers[il];
        CK(hc_pre_n(s, &L->hc_attn_fn, L->hc_attn_scale, L->hc_attn_base, L->attn_norm, n, err));
        CK(attn_n(s, il, pos0, n, err));
        CK(hc_post_n(s, n, err));
        CK(hc_pre_n(s, &L->hc_ffn_fn, L->hc_ffn_scale, L->hc_ffn_base, L->ffn_norm, n, err));
        CK(moe_n(s, il, n, err));
        CK(hc_post_n(s, n, err));
    }
    s->host->kv.pos = pos0 + n;
    if (hc_out) CK(cuda_download(hc_out, w->X, (size_t)(n * hcD) * sizeof(float), err));
    if (logits_all) CK(output_n(s, 0, n, logits_all, err));
    if (logits_last) CK(output_n(s, n - 1, 1, logits_last, err));
    return DS4_OK;
}

ds4_status cuda_eval_chunk(cuda_state *s, const int32_t *tokens, int64_t n_tokens,
                           const model_eval_opts *o, ds4_error *err) {
    const model_hparams *hp = &s->cm->m->hp;
    int64_t cap = n_tokens < CHUNK_MAX ? n_tokens : CHUNK_MAX;
    ds4_status st;
    if (s->bws && s->bws->cap < cap) cuda_chunk_free(s);
    if (!s->bws && (st = bws_alloc(s, cap, err))) {
        cuda_chunk_free(s);
        return st;
    }
    int64_t V = hp->n_vocab, hcD = hp->n_hc * hp->n_embd;
    int mode = o ? (int)o->logits_mode : (int)MODEL_LOGITS_NONE;
    for (int64_t t = 0; t < n_tokens; t += s->bws->cap) {
        int64_t n = n_tokens - t < s->bws->cap ? n_tokens - t : s->bws->cap;
        float *all = mode == MODEL_LOGITS_ALL ? o->logits + t * V : NULL;
        float *last = mode == MODEL_LOGITS_LAST && t + n == n_tokens ? o->logits : NULL;
        float *hco = o && o->hc_out ? o->hc_out + t * hcD : NULL;
        if ((st = chunk(s, tokens + t, n, all, last, hco, err)))
            return ds4_err_prefix(err, "cuda: chunk of %lld tokens at position %lld",
                                  (long long)n, (long long)s->host->kv.pos);
    }
    s->qa_ok[0] = s->qa_ok[1] = s->qa_ok[2] = false;
    return DS4_OK;
}
