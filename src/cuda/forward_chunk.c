/*
 * cuda/forward_chunk.c — prefill on the GPU a chunk of n tokens per layer pass (issue #7),
 * the GPU twin of the CPU chunk path (model/forward.c, attention.c, moe.c with n > 1): every
 * dense product is one cuda_matmul over the chunk's rows (bit-identical to cpu_matmul),
 * attention and the indexer run on the whole chunk, each compressor advances over the chunk in
 * two launches (cuda_comp_push_chunk), and the routed experts run grouped by expert without a
 * host round trip: cuda_moe_group orders the chunk's (token, expert) pairs by expert on the
 * device, one cuda_matmul_experts per expert tensor, SwiGLU with the routing weights, rows
 * scattered back and combined in ascending-k order like the decode step. Same formulas as
 * forward_cuda.c and, op for op, the CPU's chunk path.
 *
 * On by default for prompts of more than one token (cuda_state_set_batch(s, false) or
 * DS4_CUDA_BATCH=0 force the token-by-token decode path). Chunks hold at most CHUNK_MAX tokens
 * and never more than the state's context (the workspace is ~1 MB per token on Flash); when
 * the workspace does not fit, the chunk is halved (down to 64 tokens).
 *
 * Capture hooks (model.h: layer rows, routed experts, indexer rows) and the verification hook
 * (cuda_state_set_check: every product's rows, token by token, to the caller) are served per
 * chunk; the writable kv_pre_fp8 is not.
 * Owns: the chunk workspace (cu_bws) and the order of the batched ops.
 * Must not: run kernels of its own (rows.cu moves rows).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "cuda/chunk_ops.h"
#include "cuda/model_cuda_impl.h"

/* Tokens per layer pass: larger prompts are split. Each chunk reads every routed expert once,
 * so the longer the chunk the fewer passes over the 43 x 256 experts (issue #7); 2048 tokens
 * keep the workspace near 2 GB on Flash. One constant with the auto-fit's reserve (model_cuda.h). */
#define CHUNK_MAX CUDA_CHUNK_TOKENS_EST

/* Most bytes of attention partials per cuda_attn call (split path only, attn_n). */
#define ATTN_SCR_MAX ((size_t)1 << 30)

typedef struct cu_bws {
    int64_t cap;              /* tokens the buffers hold */
    void *block;
    float *X, *X2, *a, *mix, *pre, *post, *comb, *qr, *q, *o, *kv, *cA, *cB, *iA, *iB, *iq, *iw,
        *oa, *f, *rl, *selw, *shg, *shu, *shy, *yexp, *xg, *pg, *pu, *yd, *pw, *y;
    int32_t *sel, *isel, *n_isel, *tok, *ptok, *pslot;
    int32_t *off;             /* [n_expert + 1] first grouped row of each expert (device) */
    void *act;                /* cuda_matmul activation scratch */
    float *attn_scr, *idx_scr, *logits;
    size_t attn_bytes, idx_bytes, logits_bytes;
    int64_t il;               /* the layer being evaluated (verification hook) */
    bool v1;                  /* DS4_CUDA_CHUNK_V1=1: the session-2 kernels (hc_post, attention)
                               * instead of h5's, same bits; to time both in one binary */
    bool qfuse;               /* DS4_CUDA_ATTN_QNORM=1: q's norm + RoPE inside the attention
                               * (cuda_attn_qnorm); off: exact, but it saves ~25 us a layer
                               * with kernel 8 and nothing with the default kernel 64, which
                               * runs the separate launch first (BENCHMARKS, h4 session 4) */
} cu_bws;

/* With profiling on (cuda_state_set_profile) every op is followed by an event tagged with
 * its call site in the state's site table (cuda_state_profile_site: this file's line and the
 * call's text, or the product's name), as forward_cuda.c tags the decode step's. */
#define CK(x)                                                                                  \
    do {                                                                                       \
        if ((st = (x)) != DS4_OK) return st;                                                   \
        if (s->prof) cuda_prof_site(s, __LINE__, #x);                                               \
    } while (0)

void cuda_state_set_batch(cuda_state *s, bool on) { s->batch = on; }

void cuda_chunk_free(cuda_state *s) {
    cu_bws *b = s ? s->bws : NULL;
    if (!b) return;
    cuda_free(b->block);
    cuda_free(b->attn_scr);
    cuda_free(b->idx_scr);
    cuda_free(b->logits);
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
        for (size_t i = 0; i < 3; i++) { /* the grouped product quantizes all n·K rows */
            size_t b = cuda_matmul_scratch_bytes(es[i]->type, es[i]->cols, K * cap);
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
    const char *v1 = getenv("DS4_CUDA_CHUNK_V1");
    const char *qf = getenv("DS4_CUDA_ATTN_QNORM");
    w->v1 = v1 && v1[0] == '1';
    w->qfuse = qf && qf[0] == '1';
    if (w->v1) cuda_attn_chunk_set_variant(0);
    float **fp[] = {&w->X, &w->X2, &w->a, &w->mix, &w->pre, &w->post, &w->comb, &w->qr, &w->q,
                    &w->o, &w->kv, &w->cA, &w->cB, &w->iA, &w->iB, &w->iq, &w->iw, &w->oa,
                    &w->f, &w->rl, &w->selw, &w->shg, &w->shu, &w->shy, &w->yexp, &w->xg,
                    &w->pg, &w->pu, &w->yd, &w->pw, &w->y};
    int64_t fn[] = {hc * D, hc * D, D, nmix, hc, hc, hc * hc, hp->q_lora, H * Dh, H * Dh, Dh,
                    cw, cw, iwd, iwd, ih * id, ih, hp->o_groups * hp->o_lora, D, E, K, Fs, Fs, D,
                    K * D, K * D, K * F, K * F, K * D, K, D};
    int32_t **ip[] = {&w->sel, &w->isel, &w->n_isel, &w->tok, &w->ptok, &w->pslot};
    int64_t in[] = {K, topk, 1, 1, K, K};
    size_t off_bytes = (size_t)(E + 1) * sizeof(int32_t);
#define AL(x) (((size_t)(x) + 255) & ~(size_t)255)
    size_t total = AL(act) + AL(off_bytes);
    for (size_t i = 0; i < sizeof fn / sizeof fn[0]; i++) total += AL((size_t)(fn[i] * cap) * 4);
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) total += AL((size_t)(in[i] * cap) * 4);
    ds4_status st = cuda_malloc(&w->block, total, err);
    if (st) return ds4_err_prefix(err, "cuda chunk: workspace of %zu bytes", total);
    uint8_t *p = w->block;
    w->act = p;
    p += AL(act);
    w->off = (int32_t *)p;
    p += AL(off_bytes);
    for (size_t i = 0; i < sizeof fn / sizeof fn[0]; i++) {
        *fp[i] = (float *)p;
        p += AL((size_t)(fn[i] * cap) * 4);
    }
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        *ip[i] = (int32_t *)p;
        p += AL((size_t)(in[i] * cap) * 4);
    }
#undef AL
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

/* The verification hook (cuda_state_set_check) on rows [0, n) of a product of host view hw:
 * x rows ldx apart, y rows ldy apart (device), handed over one token row at a time. */
static ds4_status check_rows(cuda_state *s, const char *what, const cpu_mat *hw, const float *x,
                             int64_t ldx, int64_t n, const float *y, int64_t ldy,
                             ds4_error *err) {
    if (!s->check || !hw || n <= 0) return DS4_OK;
    float *hx = malloc((size_t)(n * ldx) * sizeof(float)), *hy = malloc((size_t)(n * ldy) * sizeof(float));
    ds4_status st = hx && hy ? DS4_OK : ds4_seterr(err, DS4_ERR_NOMEM, "cuda chunk: check buffers");
    if (!st) st = cuda_download(hx, x, (size_t)((n - 1) * ldx + hw->n_in) * sizeof(float), err);
    if (!st) st = cuda_download(hy, y, (size_t)((n - 1) * ldy + hw->n_out) * sizeof(float), err);
    for (int64_t t = 0; t < n && !st; t++)
        s->check(s->check_user, s->bws->il, what, hw, hx + t * ldx, hy + t * ldy);
    free(hx);
    free(hy);
    return st;
}

/* y[t*ldy..] = W·x[t*ldx..] for the chunk's n rows. */
static ds4_status mm(cuda_state *s, const char *what, const cu_mat *w, const float *x,
                     int64_t ldx, int64_t n, float *y, int64_t ldy, ds4_error *err) {
    ds4_status st = cuda_matmul(w->type, w->d, w->rows, w->cols, x, ldx, n, s->bws->act, y, ldy,
                                err);
    s->prof_what = what;
    if (st || !s->check) return st;
    return check_rows(s, what, w->host, x, ldx, n, y, ldy, err);
}

/* fwd_hc_pre over n tokens (§4.1). */
static ds4_status hc_pre_n(cuda_state *s, const cu_mat *fn, const float *scale, const float *base,
                           const float *norm, int64_t n, ds4_error *err) {
    const model_hparams *hp = &s->cm->m->hp;
    cu_bws *w = s->bws;
    ds4_status st;
    CK(mm(s, "hc_fn", fn, w->X, fn->cols, n, w->mix, fn->rows, err));
    return cuda_hc_pre(w->X, w->mix, scale, base, norm, n, (int)hp->n_hc, hp->n_embd,
                       (int)hp->sinkhorn_iters, hp->hc_eps, hp->norm_eps, w->pre, w->post,
                       w->comb, w->a, err);
}

static ds4_status hc_post_n(cuda_state *s, int64_t n, ds4_error *err) {
    const model_hparams *hp = &s->cm->m->hp;
    cu_bws *w = s->bws;
    ds4_status st;
    if (w->v1)
        CK(cuda_hc_post(w->f, w->X, w->post, w->comb, n, (int)hp->n_hc, hp->n_embd, w->X2, err));
    else
        CK(cuda_hc_post_chunk(w->f, w->X, w->post, w->comb, n, (int)hp->n_hc, hp->n_embd, w->X2,
                              err));
    float *x = w->X;
    w->X = w->X2;
    w->X2 = x;
    return DS4_OK;
}

/* §7.1: rows [t0, t1) of the chunk at pos0 (kv [n][Dh]) into the window ring at slot
 * pos mod W; only the last W of them can be read again (at most two runs of slots). */
static ds4_status ring_store(float *ring, const float *kv, int64_t W, int64_t Dh, int64_t pos0,
                             int64_t t0, int64_t t1, ds4_error *err) {
    ds4_status st;
    for (int64_t t = t1 - t0 > W ? t1 - W : t0; t < t1;) {
        int64_t slot = (pos0 + t) % W, run = W - slot;
        if (run > t1 - t) run = t1 - t;
        st = cuda_copy_d2d(ring + slot * Dh, kv + t * Dh, (size_t)(run * Dh) * sizeof(float), err);
        if (st) return st;
        t += run;
    }
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
    CK(mm(s, "wq_a", &L->wq_a, w->a, D, n, w->qr, ql, err));
    CK(cuda_rmsnorm(w->qr, w->qr, L->q_norm, n, ql, eps, err));
    CK(mm(s, "wq_b", &L->wq_b, w->qr, ql, n, w->q, H * Dh, err));
    /* q's per-head norm and RoPE: one launch here, a warp per head row (cuda_qnorm_rope_chunk);
     * with DS4_CUDA_ATTN_QNORM=1 inside the attention below instead (cuda_attn_qnorm, on the
     * rows it stages; head dims below 2048); DS4_CUDA_CHUNK_V1=1: the two separate ops. */
    bool qfused = !w->v1 && w->qfuse && Dh < 2048;
    if (w->v1) {
        CK(cuda_rmsnorm(w->q, w->q, NULL, n * H, Dh, eps, err));
        CK(cuda_rope_tail(w->q, n * H, Dh, Dh - nr, H, nr, freqs, pos0, 0, err));
    } else if (!qfused) {
        CK(cuda_qnorm_rope_chunk(w->q, n * H, Dh, eps, Dh - nr, H, nr, freqs, pos0, err));
    }
    /* §5.2 KV path */
    CK(mm(s, "wkv", &L->wkv, w->a, D, n, w->kv, Dh, err));
    CK(cuda_rmsnorm(w->kv, w->kv, L->kv_norm, n, Dh, eps, err));
    CK(cuda_rope_tail(w->kv, n, Dh, Dh - nr, 1, nr, freqs, pos0, 0, err));
    CK(cuda_fp8_roundtrip(w->kv, n, Dh, Dh - nr, 64, err));
    /* §7.3 steps 2-3: compressors advance token by token (§6.4) */
    if (L->has_comp) {
        int64_t cw = L->comp.kv.rows;
        CK(mm(s, "comp.kv", &L->comp.kv, w->a, D, n, w->cA, cw, err));
        CK(mm(s, "comp.gate", &L->comp.gate, w->a, D, n, w->cB, cw, err));
        CK(cuda_comp_push_chunk(&kvl->comp, w->cA, w->cB, cw, L->comp.ape, L->comp.norm, pos0, n,
                                0, freqs, nr, eps, err));
    }
    if (L->has_indexer) {
        int64_t id = hp->idx_head_dim, ih = hp->idx_n_head, iwd = L->idx_comp.kv.rows;
        CK(mm(s, "idx_comp.kv", &L->idx_comp.kv, w->a, D, n, w->iA, iwd, err));
        CK(mm(s, "idx_comp.gate", &L->idx_comp.gate, w->a, D, n, w->iB, iwd, err));
        CK(cuda_comp_push_chunk(&kvl->idx, w->iA, w->iB, iwd, L->idx_comp.ape, L->idx_comp.norm,
                                pos0, n, 1, freqs, nr, eps, err));
        /* §8 */
        CK(mm(s, "idx_wq_b", &L->idx_wq_b, w->qr, ql, n, w->iq, ih * id, err));
        CK(mm(s, "idx_proj", &L->idx_proj, w->a, D, n, w->iw, ih, err));
        /* RoPE, Hadamard, FP4 round trip and the weights' scale in one launch (bit-identical to
         * the four ops; the decode step uses the same kernel). */
        CK(cuda_indexer_qprep(w->iq, w->iw, n, ih, id, nr, freqs, pos0, NULL, 32, err));
        CK(grow(&w->idx_scr, &w->idx_bytes, cuda_indexer_scratch_bytes(n, pos0), err));
        CK(cuda_indexer_topk(w->iq, w->iw, kvl->idx.rows, n, pos0, ih, id, hp->idx_topk,
                             w->idx_scr, w->isel, w->n_isel, err));
    }
    /* §5.4-5.6. The chunk kernel needs no scratch; past ~4700 attended rows (ratio 128 beyond
     * ~590k positions) cuda_attn takes the split path, whose partials grow with tokens x rows:
     * then the queries go in slices of at most ATTN_SCR_MAX bytes of partials, the chunk's
     * earlier rows moved to the ring first (same keys, so the same results). */
    const float *comp = ratio ? kvl->comp.rows : NULL;
    const int32_t *isel = ratio == 4 ? w->isel : NULL;
    int64_t topk = hp->idx_topk, step = n;
    size_t need = cuda_attn_scratch_bytes(n, H, Dh, W, ratio, topk, ratio == 4, pos0);
    if (need > ATTN_SCR_MAX) {
        step = (int64_t)(ATTN_SCR_MAX / (need / (size_t)n + 1));
        if (step < 1) step = 1;
    }
    for (int64_t t0 = 0; t0 < n; t0 += step) {
        int64_t m = n - t0 < step ? n - t0 : step;
        if (t0 > 0) CK(ring_store(kvl->raw, w->kv, W, Dh, pos0, 0, t0, err));
        CK(grow(&w->attn_scr, &w->attn_bytes,
                cuda_attn_scratch_bytes(m, H, Dh, W, ratio, topk, ratio == 4, pos0 + t0), err));
        if (qfused)
            CK(cuda_attn_qnorm(w->q + t0 * H * Dh, w->kv + t0 * Dh, kvl->raw, W, comp, ratio,
                               isel ? isel + t0 * topk : NULL, w->n_isel + t0, topk, L->sinks, m,
                               pos0 + t0, H, Dh, nr, freqs, eps, w->attn_scr, w->o + t0 * H * Dh,
                               err));
        else
            CK(cuda_attn(w->q + t0 * H * Dh, w->kv + t0 * Dh, kvl->raw, W, comp, ratio,
                         isel ? isel + t0 * topk : NULL, w->n_isel + t0, topk, L->sinks, m,
                         pos0 + t0, H, Dh, nr, freqs, w->attn_scr, w->o + t0 * H * Dh, err));
    }
    /* §7.1: the ring keeps the last min(n, W) rows at slot pos mod W. */
    CK(ring_store(kvl->raw, w->kv, W, Dh, pos0, 0, n, err));
    /* §5.6 grouped output projection: group g reads heads [g·H/G, (g+1)·H/G), i.e. columns
     * g·H/G·Dh .. of each token's o row: x rows H·Dh apart (cuda_matmul quantizes strided rows
     * in one launch, so no regrouped copy of o is needed). */
    int64_t G = hp->o_groups, hpg = H / G, ol = hp->o_lora;
    for (int64_t g = 0; g < G; g++) {
        cpu_mat hg;
        cu_mat wg = cu_mat_rows(&L->wo_a, g * ol, ol, &hg);
        CK(mm(s, "wo_a", &wg, w->o + g * hpg * Dh, H * Dh, n, w->oa + g * ol, G * ol, err));
    }
    return mm(s, "wo_b", &L->wo_b, w->oa, G * ol, n, w->f, D, err);
}

/* One expert tensor over the np grouped rows (expert e owns rows off[e] .. off[e+1]). */
static ds4_status experts_mm(cuda_state *s, const char *what, const cu_experts *e,
                             const float *x, int64_t np, float *y, ds4_error *err) {
    ds4_status st = cuda_matmul_experts(e->type, e->d, e->n_expert, e->rows, e->cols,
                                        e->host->expert_bytes, s->bws->off, x, e->cols, np,
                                        s->bws->act, y, e->rows, err);
    s->prof_what = what;
    if (st || !s->check) return st;
    int32_t *off = malloc((size_t)(e->n_expert + 1) * sizeof(int32_t));
    if (!off) return ds4_seterr(err, DS4_ERR_NOMEM, "cuda chunk: check buffers");
    st = cuda_download(off, s->bws->off, (size_t)(e->n_expert + 1) * sizeof(int32_t), err);
    for (int64_t ex = 0; ex < e->n_expert && !st; ex++) {
        cpu_mat wk = experts_get(e->host, ex);
        st = check_rows(s, what, &wk, x + (int64_t)off[ex] * e->cols, e->cols,
                        off[ex + 1] - off[ex], y + (int64_t)off[ex] * e->rows, e->rows, err);
    }
    free(off);
    return st;
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
    CK(mm(s, "gate_inp", &L->gate_inp, w->a, D, n, w->rl, E, err));
    CK(cuda_moe_route(w->rl, L->tid2eid ? NULL : L->exp_bias, L->tid2eid, w->tok, n, E, K,
                      hp->route_scale, hp->expert_weights_norm, w->sel, w->selw, err));
    /* The n·K (token, slot) pairs grouped by expert on the device, tokens ascending within an
     * expert (no download of the ids, no sync). */
    int64_t np = n * K;
    CK(cuda_moe_group(w->sel, w->selw, n, K, E, w->off, w->ptok, w->pslot, w->pw, err));
    CK(cuda_rows_copy(w->xg, NULL, w->a, w->ptok, np, D, err));
    CK(experts_mm(s, "gate_exps", &L->gate_exps, w->xg, np, w->pg, err));
    CK(experts_mm(s, "up_exps", &L->up_exps, w->xg, np, w->pu, err));
    CK(cuda_swiglu(w->pg, w->pu, w->pw, np, F, hp->swiglu_clamp[il], w->pg, err));
    CK(experts_mm(s, "down_exps", &L->down_exps, w->pg, np, w->yd, err));
    CK(cuda_rows_copy(w->yexp, w->pslot, w->yd, NULL, np, D, err));
    if (L->has_shared) {
        int64_t Fs = L->sh_gate.rows;
        CK(mm(s, "sh_gate", &L->sh_gate, w->a, D, n, w->shg, Fs, err));
        CK(mm(s, "sh_up", &L->sh_up, w->a, D, n, w->shu, Fs, err));
        CK(cuda_swiglu(w->shg, w->shu, NULL, n, Fs, hp->swiglu_clamp_shared[il], w->shg, err));
        CK(mm(s, "sh_down", &L->sh_down, w->shg, Fs, n, w->shy, D, err));
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
    w->il = hp->n_layer; /* the output head, as the verification hook names it */
    CK(mm(s, "out_hc_fn", &cm->out_hc_fn, w->X + r0 * hcD, hcD, nr, w->mix, hc, err));
    CK(cuda_hc_head(w->X + r0 * hcD, w->mix, cm->out_hc_scale, cm->out_hc_base, cm->out_norm, nr,
                    (int)hc, hp->n_embd, hp->hc_eps, hp->norm_eps, w->y, err));
    CK(mm(s, "output", &cm->output, w->y, hp->n_embd, nr, w->logits, V, err));
    return cuda_download(logits, w->logits, (size_t)(nr * V) * sizeof(float), err);
}

/* Capture hooks (model.h) for the chunk's n tokens at pos0: rows [n][len] of a device buffer,
 * or the per-token routing decisions (ids [n][stride], counts from d_cnt or `fixed`). */
static ds4_status cap_rows(const model_capture *cap, int64_t il, const char *what, int64_t pos0,
                           int64_t n, const float *d, int64_t len, ds4_error *err) {
    if (!cap || !cap->layer) return DS4_OK;
    float *h = malloc((size_t)(n * len) * sizeof(float));
    if (!h) return ds4_seterr(err, DS4_ERR_NOMEM, "cuda chunk: capture buffers");
    ds4_status st = cuda_download(h, d, (size_t)(n * len) * sizeof(float), err);
    if (!st) cap->layer(cap->user, il, what, pos0, n, h, len);
    free(h);
    return st;
}

static ds4_status cap_ids(const model_capture *cap, int64_t il, int indexer, int64_t pos0,
                          int64_t n, const int32_t *d, int64_t stride, const int32_t *d_cnt,
                          ds4_error *err) {
    void (*fn)(void *, int64_t, int64_t, const int32_t *, int) = indexer ? cap->indexer
                                                                          : cap->experts;
    if (!fn) return DS4_OK;
    int32_t *h = malloc((size_t)(n * stride + n) * sizeof(int32_t));
    if (!h) return ds4_seterr(err, DS4_ERR_NOMEM, "cuda chunk: capture buffers");
    ds4_status st = cuda_download(h, d, (size_t)(n * stride) * sizeof(int32_t), err);
    if (!st && d_cnt) st = cuda_download(h + n * stride, d_cnt, (size_t)n * sizeof(int32_t), err);
    for (int64_t t = 0; t < n && !st; t++) {
        int64_t c = d_cnt ? h[n * stride + t] : stride;
        if (c < 0 || c > stride) {
            st = ds4_seterr(err, DS4_ERR_INTERNAL, "cuda chunk: %lld ids at position %lld",
                            (long long)c, (long long)(pos0 + t));
            break;
        }
        fn(cap->user, il, pos0 + t, h + t * stride, (int)c);
    }
    free(h);
    return st;
}

/* Layer il over the chunk's n tokens at pos0 (model/forward.c's layer order). */
static ds4_status layer_n(cuda_state *s, int64_t il, int64_t pos0, int64_t n,
                          const model_capture *cap, ds4_error *err) {
    const model_hparams *hp = &s->cm->m->hp;
    const cu_layer *L = &s->cm->layers[il];
    cu_bws *w = s->bws;
    int64_t D = hp->n_embd, hcD = hp->n_hc * D;
    ds4_status st;
    w->il = il;
    CK(hc_pre_n(s, &L->hc_attn_fn, L->hc_attn_scale, L->hc_attn_base, L->attn_norm, n, err));
    CK(attn_n(s, il, pos0, n, err));
    if (cap && L->has_indexer)
        CK(cap_ids(cap, il, 1, pos0, n, w->isel, hp->idx_topk, w->n_isel, err));
    CK(hc_post_n(s, n, err));
    CK(cap_rows(cap, il, "attn_out", pos0, n, w->f, D, err));
    CK(cap_rows(cap, il, "h_attn", pos0, n, w->X, hcD, err));
    CK(hc_pre_n(s, &L->hc_ffn_fn, L->hc_ffn_scale, L->hc_ffn_base, L->ffn_norm, n, err));
    CK(moe_n(s, il, n, err));
    if (cap) CK(cap_ids(cap, il, 0, pos0, n, w->sel, hp->n_expert_used, NULL, err));
    CK(hc_post_n(s, n, err));
    CK(cap_rows(cap, il, "ffn_out", pos0, n, w->f, D, err));
    CK(cap_rows(cap, il, "h_out", pos0, n, w->X, hcD, err));
    return DS4_OK;
}

/* n (<= cap) tokens at the state's position. */
static ds4_status chunk(cuda_state *s, const int32_t *tokens, int64_t n, float *logits_all,
                        float *logits_last, float *hc_out, const model_capture *cap,
                        ds4_error *err) {
    cuda_model *cm = s->cm;
    const model_hparams *hp = &cm->m->hp;
    cu_bws *w = s->bws;
    int64_t D = hp->n_embd, hc = hp->n_hc, hcD = hc * D, pos0 = s->host->kv.pos;
    ds4_status st;
    CK(cuda_upload(w->tok, tokens, (size_t)n * sizeof(int32_t), err));
    /* §2: X = [e, ..., e] per token */
    if (cm->tok_embd.d) {
        CK(cuda_embed_tokens(cm->tok_embd.d, cm->tok_embd.type, cm->tok_embd.rows, D, w->tok, n,
                             (int)hc, w->X, err));
    } else {
        for (int64_t t = 0; t < n; t++) {
            float *h = s->ws.h_row;
            CK(cpu_mat_row_f32(&cm->m->w.tok_embd, tokens[t], h, err));
            for (int64_t k = 1; k < hc; k++) memcpy(h + k * D, h, (size_t)D * sizeof(float));
            CK(cuda_upload(w->X + t * hcD, h, (size_t)hcD * sizeof(float), err));
        }
    }
    /* Profiling without hooks (they download mid-layer): each layer's ops are queued behind a
     * device-side gate (prof.cu), so the events time the GPU back to back, not launch gaps. */
    bool gate = s->prof && !cap && !s->check;
    for (int64_t il = 0; il < hp->n_layer; il++) {
        if (gate && (st = cuda_prof_gate_hold(s->prof, err))) return st;
        st = layer_n(s, il, pos0, n, cap, err);
        if (gate) cuda_prof_gate_release(s->prof);
        if (st) return st;
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
    int64_t cap = n_tokens < CHUNK_MAX ? n_tokens : CHUNK_MAX, n_ctx = s->host->kv.n_ctx;
    if (n_ctx > 0 && cap > n_ctx) cap = n_ctx; /* the workspace never exceeds the context */
    ds4_status st;
    if (s->bws && s->bws->cap < cap) cuda_chunk_free(s);
    /* A card nearly full (experts resident, long context) gets fewer tokens per pass rather
     * than no batched prefill: halve the chunk while the workspace does not fit. */
    while (!s->bws && (st = bws_alloc(s, cap, err))) {
        cuda_chunk_free(s);
        if (st != DS4_ERR_NOMEM || cap <= 64) return st;
        cuda_clear_last_error(); /* the failed cudaMalloc must not fail the next launch check */
        cap /= 2;
    }
    int64_t V = hp->n_vocab, hcD = hp->n_hc * hp->n_embd;
    int mode = o ? (int)o->logits_mode : (int)MODEL_LOGITS_NONE;
    for (int64_t t = 0; t < n_tokens; t += s->bws->cap) {
        int64_t n = n_tokens - t < s->bws->cap ? n_tokens - t : s->bws->cap;
        float *all = mode == MODEL_LOGITS_ALL ? o->logits + t * V : NULL;
        float *last = mode == MODEL_LOGITS_LAST && t + n == n_tokens ? o->logits : NULL;
        float *hco = o && o->hc_out ? o->hc_out + t * hcD : NULL;
        if ((st = chunk(s, tokens + t, n, all, last, hco, o ? o->capture : NULL, err)))
            return ds4_err_prefix(err, "cuda: chunk of %lld tokens at position %lld",
                                  (long long)n, (long long)s->host->kv.pos);
    }
    s->qa_ok[0] = s->qa_ok[1] = s->qa_ok[2] = false;
    return DS4_OK;
}
