/*
 * cuda/forward_attn.c — the attention sub-layer of the one-token forward on the GPU
 * (MODEL_MATH §5-§8, model/attention.c attn_forward): query and kv paths, the compressors'
 * steps, the indexer's selection, attention, grouped output projection; in a captured step the
 * chains that meet only at the attention run as branches (cuda_fwd_branches, issue #7).
 *
 * Owns: the order of the attention ops. Must not: hold state outside cuda_state, or run
 * kernels of its own (forward_cuda.c calls it from eval_layer).
 */
#include <stdbool.h>
#include <stdlib.h>

#include "core/error.h"
#include "cuda/forward_impl.h"

/* A compressor step; inside a graph capture the fixed-topology variant, so that the captured
 * step keeps the same launches at every position (the graph updates in place); one launch of
 * it with fuse3. */
static ds4_status comp_push(cuda_state *s, const cuda_comp_state *c, const float *A,
                            const float *B, const cu_comp_w *cw, int64_t pos, int indexer,
                            const float *freqs, int nr, float eps, ds4_error *err) {
    if (s->graphing && (cuda_fwd_fuse3(s) & F3_CPUSH))
        return cuda_comp_push_dpos1(c, A, B, cw->ape, cw->norm, s->d_pos, s->graph_bound, indexer,
                                    freqs, nr, eps, err);
    if (s->graphing)
        return cuda_comp_push_dpos(c, A, B, cw->ape, cw->norm, s->d_pos, s->graph_bound, indexer,
                                   freqs, nr, eps, err);
    return cuda_comp_push(c, A, B, cw->ape, cw->norm, pos, indexer, freqs, nr, eps, NULL, err);
}

/* RoPE of rows at pos; in a graph the position comes from the device. */
static ds4_status rope(cuda_state *s, float *x, int64_t n_rows, int64_t stride, int64_t off,
                       int64_t per_pos, int nr, const float *freqs, int64_t pos, ds4_error *err) {
    if (s->graphing)
        return cuda_rope_tail_dpos(x, n_rows, stride, off, per_pos, nr, freqs, s->d_pos, 0, err);
    return cuda_rope_tail(x, n_rows, stride, off, per_pos, nr, freqs, pos, 0, err);
}

/* RMSNorm of n_rows rows of n (weight nullable), RoPE on their last nr values at pos, FP8 round
 * trip of their first fp8_n values (0: none) or Q8_0 records into q80 (nullable): one launch
 * (normfuse.cu), bit-identical to the ops one after the other, which rows too long for it use. */
static ds4_status norm_rope(cuda_state *s, float *x, const float *w, int64_t n_rows, int64_t n,
                            int nr, const float *freqs, int64_t pos, int64_t fp8_n, void *q80,
                            ds4_error *err) {
    float eps = s->cm->m->hp.norm_eps;
    ds4_status st;
    if (n <= 8192)
        return cuda_norm_rope_qat(x, w, n_rows, n, eps, nr, freqs, pos, s->graphing ? s->d_pos : NULL,
                                  fp8_n, 64, q80, err);
    if ((st = cuda_rmsnorm(x, x, w, n_rows, n, eps, err))) return st;
    if (nr && (st = rope(s, x, n_rows, n, n - nr, n_rows, nr, freqs, pos, err))) return st;
    if (fp8_n && (st = cuda_fp8_roundtrip(x, n_rows, n, fp8_n, 64, err))) return st;
    return q80 ? cuda_quantize_act(CUDA_ACT_Q8_0, x, q80, n_rows * n, err) : DS4_OK;
}

/* mv with x's quantized copy q made beforehand (x itself for the verification hook). */
static ds4_status mv_preq(cuda_state *s, int64_t il, const char *what, const cu_mat *w,
                          const float *x, const void *q, float *y, ds4_error *err) {
    ds4_status st;
    if ((st = cuda_matvec_preq(w->type, w->d, w->rows, w->cols, q, y, err))) return st;
    s->prof_what = what;
    if (!s->check || !w->host) return DS4_OK;
    return cuda_fwd_check_mv(s, il, what, w->host, x, y, 1, err);
}

/* A compressor's kv and gate products of a (§6.4; the attention's or, with indexer, the
 * indexer's): one pair launch (F3_CPAIR) when both are the same float type and shape, else two
 * products. */
static ds4_status comp_products(cuda_state *s, int64_t il, const cu_comp_w *cw, bool indexer,
                                float *A, float *B, ds4_error *err) {
    const cu_mat *k = &cw->kv, *g = &cw->gate;
    ds4_status st;
    if ((cuda_fwd_fuse3(s) & F3_CPAIR) && cuda_act_kind(k->type) == CUDA_ACT_F32 && g->type == k->type &&
        g->rows == k->rows && g->cols == k->cols && k->cols == s->cm->m->hp.n_embd) {
        s->prof_what = indexer ? "idx_comp.kv+gate" : "comp.kv+gate";
        CK(cuda_matvec_pair_f(k->type, k->d, g->d, k->rows, k->cols, s->ws.a, A, B, err));
        return DS4_OK;
    }
    CK(cuda_fwd_mv_a(s, il, indexer ? "idx_comp.kv" : "comp.kv", k, A, err));
    CK(cuda_fwd_mv_a(s, il, indexer ? "idx_comp.gate" : "comp.gate", g, B, err));
    return DS4_OK;
}

/* The indexer's query product reads the Q8_0 records of qr made for wq_b: the records its own
 * quantization of qr would make (normfuse.cu: bit-identical to cuda_quantize_act). */
static bool idx_reads_qr8(const cuda_state *s, const cu_layer *L) {
    return cuda_act_kind(L->idx_wq_b.type) == CUDA_ACT_Q8_0 && L->idx_wq_b.cols == s->cm->m->hp.q_lora;
}

/* wq_b's chain on a lane beside idx_wq_b: never both on ws.act with one of them writing it. */
static bool q_lane_ok(const cuda_state *s, const cu_layer *L, const void *qr8) {
    return cuda_act_kind(L->wq_b.type) == CUDA_ACT_F32 ||
           cuda_act_kind(L->idx_wq_b.type) == CUDA_ACT_F32 || (qr8 && idx_reads_qr8(s, L));
}

/* Lanes of the attention sub-layer's branches (cuda_fwd_branches): the kv chain, the
 * compressor, the indexer's compressor with its head weights, and the query's wq_b chain. */
enum { LANE_KV = 1, LANE_COMP = 2, LANE_IDX = 3, LANE_Q = 4 };

/* Whether product m of a may run on a lane: it reads f32 a, or a's quantized copy, made here on
 * the main stream (once per kind). A product that would quantize a into ws.act itself (no copy
 * for its kind) could race with another lane's ws.act: the sub-layer then stays on one stream. */
static ds4_status a_ready(cuda_state *s, const cu_mat *m, bool *ok, ds4_error *err) {
    const void *q;
    ds4_status st;
    if (cuda_act_kind(m->type) == CUDA_ACT_F32) return DS4_OK;
    CKQ(cuda_fwd_act_of_a(s, m->type, m->cols, &q, err));
    if (!q || m->cols != s->cm->m->hp.n_embd) *ok = false;
    return DS4_OK;
}

/* Whether the attention sub-layer of L runs as branches; quantizes a's copies first (main). */
static ds4_status attn_branches(cuda_state *s, const cu_layer *L, bool *on, ds4_error *err) {
    ds4_status st;
    *on = cuda_fwd_branches(s, FWD_BR_ATTN);
    if (!*on) return DS4_OK;
    const cu_mat *m[7] = {&L->wq_a, &L->wkv, &L->comp.kv, &L->comp.gate, &L->idx_comp.kv,
                          &L->idx_comp.gate, &L->idx_proj};
    int n = L->has_indexer ? 7 : L->has_comp ? 4 : 2;
    for (int i = 0; i < n; i++) CKQ(a_ready(s, m[i], on, err));
    return DS4_OK;
}

/* §5.2: the KV path, FP8 round trip of the non-RoPE dims in blocks of 64 (§12 #1), and with
 * fuse3 §7.1's ring store in the same launch (*ring_done). */
static ds4_status kv_chain(cuda_state *s, int64_t il, int64_t pos, bool *ring_done, ds4_error *err) {
    const model_hparams *hp = &s->cm->m->hp;
    const cu_layer *L = &s->cm->layers[il];
    cu_ws *w = &s->ws;
    int64_t Dh = hp->head_dim;
    int nr = (int)hp->n_rope;
    const float *freqs = hparams_ratio(hp, il) ? s->cm->freqs_comp : s->cm->freqs_plain;
    float eps = hp->norm_eps;
    ds4_status st;
    *ring_done = false;
    CK(cuda_fwd_mv_a(s, il, "wkv", &L->wkv, w->kv, err));
    if (!s->fuse_norm) {
        CK(cuda_rmsnorm(w->kv, w->kv, L->kv_norm, 1, Dh, eps, err));
        CK(rope(s, w->kv, 1, Dh, Dh - nr, 1, nr, freqs, pos, err));
        CK(cuda_fp8_roundtrip(w->kv, 1, Dh, Dh - nr, 64, err));
    } else if ((cuda_fwd_fuse3(s) & F3_RING) && Dh <= 8192) {
        CK(cuda_norm_rope_qat_ring(w->kv, L->kv_norm, 1, Dh, eps, nr, freqs, pos,
                                   s->graphing ? s->d_pos : NULL, Dh - nr, 64, NULL,
                                   s->layers[il].raw, hp->n_window, err));
        *ring_done = true;
    } else {
        CK(norm_rope(s, w->kv, L->kv_norm, 1, Dh, nr, freqs, pos, Dh - nr, NULL, err));
    }
    return DS4_OK;
}

/* §5.1: the query path up to the normalised qr; *qr8: qr's Q8_0 records in ws.act, made by the
 * fused norm when wq_b reads them (NULL otherwise). */
static ds4_status q_chain_a(cuda_state *s, int64_t il, int64_t pos, void **qr8, ds4_error *err) {
    const model_hparams *hp = &s->cm->m->hp;
    const cu_layer *L = &s->cm->layers[il];
    cu_ws *w = &s->ws;
    ds4_status st;
    *qr8 = NULL;
    CK(cuda_fwd_mv_a(s, il, "wq_a", &L->wq_a, w->qr, err));
    if (!s->fuse_norm) {
        CK(cuda_rmsnorm(w->qr, w->qr, L->q_norm, 1, hp->q_lora, hp->norm_eps, err));
        return DS4_OK;
    }
    /* normfuse.cu: the row chain in one launch; the norm hands wq_b its input already
     * quantized when wq_b reads Q8_0 records. */
    if (cuda_act_kind(L->wq_b.type) == CUDA_ACT_Q8_0 && hp->q_lora % 32 == 0) *qr8 = w->act;
    CK(norm_rope(s, w->qr, L->q_norm, 1, hp->q_lora, 0, NULL, pos, 0, *qr8, err));
    return DS4_OK;
}

/* §5.1 continued: q = wq_b·qr, per-head norm without weight (§3.2), RoPE on the tail. */
static ds4_status q_chain_b(cuda_state *s, int64_t il, int64_t pos, const void *qr8,
                            ds4_error *err) {
    const model_hparams *hp = &s->cm->m->hp;
    const cu_layer *L = &s->cm->layers[il];
    cu_ws *w = &s->ws;
    int64_t H = hp->n_head, Dh = hp->head_dim;
    int nr = (int)hp->n_rope;
    const float *freqs = hparams_ratio(hp, il) ? s->cm->freqs_comp : s->cm->freqs_plain;
    ds4_status st;
    if (qr8) {
        CK(mv_preq(s, il, "wq_b", &L->wq_b, w->qr, qr8, w->q, err));
    } else {
        CK(cuda_fwd_mv(s, il, "wq_b", &L->wq_b, w->qr, w->q, err));
    }
    if (s->fuse_norm) {
        CK(norm_rope(s, w->q, NULL, H, Dh, nr, freqs, pos, 0, NULL, err));
    } else {
        CK(cuda_rmsnorm(w->q, w->q, NULL, H, Dh, hp->norm_eps, err));
        CK(rope(s, w->q, H, Dh, Dh - nr, H, nr, freqs, pos, err));
    }
    return DS4_OK;
}

/* §8: the indexer's queries from the normalised qr (its Q8_0 records qr8 when the types allow:
 * the same records its own quantization would make), then, once lane `idx` (head weights and
 * the indexer's compressor) has joined, RoPE, Hadamard, FP4, scale, and the top-k. */
static ds4_status idx_select(cuda_state *s, int64_t il, int64_t pos, const void *qr8, bool br,
                             ds4_error *err) {
    const model_hparams *hp = &s->cm->m->hp;
    const cu_layer *L = &s->cm->layers[il];
    cu_kv_layer *kvl = &s->layers[il];
    cu_ws *w = &s->ws;
    int64_t id = hp->idx_head_dim, ih = hp->idx_n_head;
    int nr = (int)hp->n_rope;
    const float *freqs = hparams_ratio(hp, il) ? s->cm->freqs_comp : s->cm->freqs_plain;
    ds4_status st;
    if (qr8 && idx_reads_qr8(s, L)) {
        CK(mv_preq(s, il, "idx_wq_b", &L->idx_wq_b, w->qr, qr8, w->iq, err));
    } else {
        CK(cuda_fwd_mv(s, il, "idx_wq_b", &L->idx_wq_b, w->qr, w->iq, err));
    }
    CKQ(cuda_fwd_join(br, LANE_IDX, err));
    /* RoPE, Hadamard, FP4 (§12 #3, blocks of 32) and the weight scale in one launch. */
    CK(cuda_indexer_qprep(w->iq, w->iw, 1, ih, id, nr, freqs, pos, s->graphing ? s->d_pos : NULL,
                          32, err));
    if (s->graphing)
        CK(cuda_indexer_topk_dpos(w->iq, w->iw, kvl->idx.rows, 1, s->d_pos, s->graph_bound,
                                  ih, id, hp->idx_topk, w->idx_scr, w->isel, w->n_isel, err));
    else
        CK(cuda_indexer_topk(w->iq, w->iw, kvl->idx.rows, 1, pos, ih, id, hp->idx_topk,
                             w->idx_scr, w->isel, w->n_isel, err));
    return DS4_OK;
}

/* model/attention.c attn_forward for one token at pos. The chains that meet only at the
 * attention (§7.3) — kv, compressor, the indexer's compressor and head weights, the query —
 * run as branches of a captured step (cuda_fwd_branches); op by op in this order. */
ds4_status cuda_fwd_attn(cuda_state *s, int64_t il, int64_t pos, ds4_error *err) {
    const cuda_model *cm = s->cm;
    const model_hparams *hp = &cm->m->hp;
    const cu_layer *L = &cm->layers[il];
    cu_kv_layer *kvl = &s->layers[il];
    cu_ws *w = &s->ws;
    int64_t H = hp->n_head, Dh = hp->head_dim, W = hp->n_window;
    int nr = (int)hp->n_rope;
    int ratio = (int)hparams_ratio(hp, il);
    const float *freqs = ratio ? cm->freqs_comp : cm->freqs_plain;
    float eps = hp->norm_eps;
    bool ring_done = false, br; /* ring_done: the kv chain also stored the window ring's row */
    void *qr8;
    ds4_status st;
    CKQ(attn_branches(s, L, &br, err));
    CKQ(cuda_fwd_fork(br, LANE_KV, err));
    CKQ(kv_chain(s, il, pos, &ring_done, err));
    /* §7.3 steps 2-3: the compressors advance (§6.4). */
    if (L->has_comp) {
        CKQ(cuda_fwd_fork(br, LANE_COMP, err));
        CKQ(comp_products(s, il, &L->comp, false, w->cA, w->cB, err));
        CK(comp_push(s, &kvl->comp, w->cA, w->cB, &L->comp, pos, 0, freqs, nr, eps, err));
    }
    if (L->has_indexer) {
        CKQ(cuda_fwd_fork(br, LANE_IDX, err));
        CKQ(comp_products(s, il, &L->idx_comp, true, w->iA, w->iB, err));
        CK(comp_push(s, &kvl->idx, w->iA, w->iB, &L->idx_comp, pos, 1, freqs, nr, eps, err));
        /* §8: head weights from a */
        CK(cuda_fwd_mv_a(s, il, "idx_proj", &L->idx_proj, w->iw, err));
    }
    if (br) cuda_graph_main();
    CKQ(q_chain_a(s, il, pos, &qr8, err));
    /* The indexer's queries and top-k on the main stream, wq_b's chain beside them unless both
     * would use ws.act with one of them writing it. */
    bool qb = br && L->has_indexer && cuda_fwd_branches(s, FWD_BR_Q) && q_lane_ok(s, L, qr8);
    if (L->has_indexer) {
        CKQ(cuda_fwd_fork(qb, LANE_Q, err));
        CKQ(q_chain_b(s, il, pos, qr8, err));
        if (qb) cuda_graph_main();
        CKQ(idx_select(s, il, pos, qr8, br, err));
    } else {
        CKQ(q_chain_b(s, il, pos, qr8, err));
    }
    CKQ(cuda_fwd_join(br, LANE_KV, err));
    CKQ(cuda_fwd_join(br && L->has_comp, LANE_COMP, err));
    CKQ(cuda_fwd_join(qb, LANE_Q, err));
    /* §5.4-5.6: window + compressed rows with sinks; value tails de-rotated. */
    const float *comp = ratio ? kvl->comp.rows : NULL;
    const int32_t *isel = ratio == 4 ? w->isel : NULL;
    if (s->graphing)
        CK(cuda_attn_dpos(w->q, w->kv, kvl->raw, W, comp, ratio, isel, w->n_isel, hp->idx_topk,
                          L->sinks, 1, s->d_pos, s->graph_bound, H, Dh, nr, freqs, w->attn_scr,
                          w->o, err));
    else
        CK(cuda_attn(w->q, w->kv, kvl->raw, W, comp, ratio, isel, w->n_isel, hp->idx_topk,
                     L->sinks, 1, pos, H, Dh, nr, freqs, w->attn_scr, w->o, err));
    /* §7.1: the window ring keeps position pos at slot pos mod W. */
    if (!ring_done && s->graphing)
        CK(cuda_ring_store_dpos(kvl->raw, w->kv, W, Dh, s->d_pos, err));
    else if (!ring_done)
        CK(cuda_copy_d2d(kvl->raw + (pos % W) * Dh, w->kv, (size_t)Dh * sizeof(float), err));
    /* §5.6: grouped output projection, group g reads heads [g·H/G, (g+1)·H/G). Without the
     * verification hook: the G groups as G "experts" of one launch (rows g·ol.. of wo_a read
     * the contiguous slice g of o; the same per-row products as G separate calls). */
    int64_t G = hp->o_groups, hpg = H / G, ol = hp->o_lora;
    if (!s->check && s->grp_ids) {
        const cu_mat *wa = &L->wo_a;
        s->prof_what = "wo_a (groups)";
        CK(cuda_matvec_experts(wa->type, wa->d, G, ol, hpg * Dh, s->grp_ids, (int)G, w->o, 1,
                               s->qo, w->oa, err));
        return cuda_fwd_mv(s, il, "wo_b", &L->wo_b, w->oa, w->f, err);
    }
    for (int64_t g = 0; g < G; g++) {
        cpu_mat hg;
        cu_mat wg = cu_mat_rows(&L->wo_a, g * ol, ol, &hg);
        CK(cuda_fwd_mv(s, il, "wo_a", &wg, w->o + g * hpg * Dh, w->oa + g * ol, err));
    }
    return cuda_fwd_mv(s, il, "wo_b", &L->wo_b, w->oa, w->f, err);
}
