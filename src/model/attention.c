/*
 * model/attention.c — the attention sub-layer of every layer (MODEL_MATH §5, §7.3-7.4):
 * q / kv projections with norms, RoPE and the FP8 KV round trip, compressor and indexer
 * updates, sparse attention with sinks over window + compressed rows, inverse RoPE and the
 * grouped output projection.
 *
 * Chunking (MODEL_MATH §7.4): projections run on the whole chunk; compressor state advances
 * token by token; each (token, head) then attends over exactly the rows the streaming
 * semantics gives it, in a fixed order (window by position, then compressed rows by index),
 * so the result does not depend on how the tokens were chunked.
 */
#include <math.h>
#include <string.h>

#include "core/error.h"
#include "cpu/ops.h"
#include "cpu/refmath.h"
#include "model/compressor.h"
#include "model/forward.h"

typedef struct attn_job {
    const model *m;
    const layer_weights *L;
    const kv_layer *kvl;
    const fwd_ws *ws;
    int64_t pos0, n;
    const float *freqs;
    float *scratch;          /* per thread: [n_keys_max + Dh] */
    int64_t scratch_stride;
} attn_job;

/* Key row for position s (window) during a chunk starting at pos0: rows of this chunk come
 * from ws->kv, earlier ones from the ring (not yet overwritten by this chunk). */
static inline const float *window_row(const attn_job *j, int64_t s) {
    int64_t Dh = j->m->hp.head_dim;
    if (s >= j->pos0) return j->ws->kv + (s - j->pos0) * Dh;
    return j->kvl->raw + (s % j->m->hp.n_window) * Dh;
}

static void attn_items(void *ctx, int64_t begin, int64_t end, int thread_idx) {
    const attn_job *j = ctx;
    const model_hparams *hp = &j->m->hp;
    int64_t H = hp->n_head, Dh = hp->head_dim, W = hp->n_window;
    float *z = j->scratch + (int64_t)thread_idx * j->scratch_stride;
    const float tau = (float)(1.0 / sqrt((double)Dh)); /* MODEL_MATH §5.5: 1/sqrt(head_dim) */
    for (int64_t it = begin; it < end; it++) {
        int64_t t = it / H, h = it % H, p = j->pos0 + t;
        const float *q = j->ws->q + t * H * Dh + h * Dh;
        float *o = j->ws->o + t * H * Dh + h * Dh;
        int64_t s0 = p - W + 1 < 0 ? 0 : p - W + 1;
        int64_t n_win = p - s0 + 1;
        /* Compressed rows visible to p (MODEL_MATH §5.4). */
        int64_t n_comp = 0;
        const int32_t *sel = NULL;
        if (j->kvl->ratio == 4) {
            n_comp = j->ws->n_isel[t];
            sel = j->ws->isel + t * hp->idx_topk;
        } else if (j->kvl->ratio) {
            n_comp = (p + 1) / j->kvl->ratio;
        }
        float mx = -INFINITY;
        for (int64_t i = 0; i < n_win; i++) {
            z[i] = tau * cpu_dot_f32(q, window_row(j, s0 + i), Dh);
            if (z[i] > mx) mx = z[i];
        }
        for (int64_t i = 0; i < n_comp; i++) {
            int64_t row = sel ? sel[i] : i;
            z[n_win + i] = tau * cpu_dot_f32(q, j->kvl->comp.rows + row * Dh, Dh);
            if (z[n_win + i] > mx) mx = z[n_win + i];
        }
        /* MODEL_MATH §5.5: the sink is a virtual key with zero value, not scaled by tau. */
        float den = ref_expf(j->L->sinks[h] - mx); /* the GPU's exp bits (cpu/refmath.h) */
        for (int64_t i = 0; i < n_win + n_comp; i++) {
            z[i] = ref_expf(z[i] - mx);
            den += z[i];
        }
        float *acc = z + n_win + n_comp;
        memset(acc, 0, (size_t)Dh * sizeof(float));
        for (int64_t i = 0; i < n_win + n_comp; i++) {
            const float *k;
            if (i < n_win) k = window_row(j, s0 + i);
            else k = j->kvl->comp.rows + (sel ? sel[i - n_win] : (i - n_win)) * Dh;
            float w = z[i];
            for (int64_t d = 0; d < Dh; d++) acc[d] += w * k[d];
        }
        float inv = 1.0f / den;
        for (int64_t d = 0; d < Dh; d++) o[d] = acc[d] * inv;
        /* MODEL_MATH §5.6: de-rotate the value tails at the query position. */
        cpu_rope_tail(o + Dh - hp->n_rope, (int)hp->n_rope, j->freqs, p, true);
    }
}

ds4_status attn_forward(model *m, const layer_weights *L, int64_t il, kv_layer *kvl,
                        int64_t pos0, int64_t n, fwd_ws *ws, const model_capture *cap,
                        ds4_error *err) {
    const model_hparams *hp = &m->hp;
    int64_t D = hp->n_embd, H = hp->n_head, Dh = hp->head_dim, nr = hp->n_rope;
    int64_t W = hp->n_window;
    uint32_t ratio = hparams_ratio(hp, il);
    const float *freqs = ratio ? m->freqs_comp : m->freqs_plain;
    float eps = hp->norm_eps;
    ds4_status st;
#define CK(x) do { if ((st = (x))) return st; } while (0)
    /* MODEL_MATH §5.1: query path. */
    CK(cpu_matmul(m->pool, &L->wq_a, ws->a, D, n, ws->qr, hp->q_lora, &ws->act, err));
    for (int64_t t = 0; t < n; t++)
        cpu_rmsnorm(ws->qr + t * hp->q_lora, ws->qr + t * hp->q_lora, L->q_norm, hp->q_lora, eps);
    CK(cpu_matmul(m->pool, &L->wq_b, ws->qr, hp->q_lora, n, ws->q, H * Dh, &ws->act, err));
    for (int64_t t = 0; t < n; t++) {
        for (int64_t h = 0; h < H; h++) {
            float *qh = ws->q + (t * H + h) * Dh;
            cpu_rmsnorm(qh, qh, NULL, Dh, eps); /* §3.2 per-head, no weight */
            cpu_rope_tail(qh + Dh - nr, (int)nr, freqs, pos0 + t, false);
        }
    }
    /* §5.2: KV path, FP8 round trip of the non-RoPE dims (§12 #1). */
    CK(cpu_matmul(m->pool, &L->wkv, ws->a, D, n, ws->kv, Dh, &ws->act, err));
    for (int64_t t = 0; t < n; t++) {
        float *kv = ws->kv + t * Dh;
        cpu_rmsnorm(kv, kv, L->kv_norm, Dh, eps);
        cpu_rope_tail(kv + Dh - nr, (int)nr, freqs, pos0 + t, false);
        if (cap && cap->kv_pre_fp8) cap->kv_pre_fp8(cap->user, il, pos0 + t, kv, Dh - nr);
        cpu_fp8_roundtrip(kv, Dh - nr, 64);
    }
    /* §7.3 step 2-3: compressors advance token by token (§6.4). */
    if (L->has_comp) {
        int64_t cw = L->comp.coff * Dh;
        CK(cpu_matmul(m->pool, &L->comp.kv, ws->a, D, n, ws->cA, cw, &ws->act, err));
        CK(cpu_matmul(m->pool, &L->comp.gate, ws->a, D, n, ws->cB, cw, &ws->act, err));
        for (int64_t t = 0; t < n; t++)
            comp_push(&kvl->comp, &L->comp, ws->cA + t * cw, ws->cB + t * cw, pos0 + t,
                      COMP_ATTN, freqs, (int)nr, eps);
    }
    if (L->has_indexer) {
        int64_t id = hp->idx_head_dim, ih = hp->idx_n_head, iw = L->idx_comp.coff * id;
        CK(cpu_matmul(m->pool, &L->idx_comp.kv, ws->a, D, n, ws->iA, iw, &ws->act, err));
        CK(cpu_matmul(m->pool, &L->idx_comp.gate, ws->a, D, n, ws->iB, iw, &ws->act, err));
        for (int64_t t = 0; t < n; t++)
            comp_push(&kvl->idx, &L->idx_comp, ws->iA + t * iw, ws->iB + t * iw, pos0 + t,
                      COMP_INDEXER, freqs, (int)nr, eps);
        /* §8: indexer queries from qr, weights from x. */
        CK(cpu_matmul(m->pool, &L->idx_wq_b, ws->qr, hp->q_lora, n, ws->iq, ih * id, &ws->act, err));
        CK(cpu_matmul(m->pool, &L->idx_proj, ws->a, D, n, ws->iw, ih, &ws->act, err));
        float wscale = (float)(1.0 / sqrt((double)(id * ih)));
        for (int64_t t = 0; t < n; t++) {
            for (int64_t h = 0; h < ih; h++) {
                float *qh = ws->iq + (t * ih + h) * id;
                cpu_rope_tail(qh + id - nr, (int)nr, freqs, pos0 + t, false);
                cpu_hadamard(qh, (int)id);
                cpu_fp4_roundtrip(qh, id, 32); /* §12 #3 */
                ws->iw[t * ih + h] *= wscale;
            }
        }
        indexer_select(m, L, &kvl->idx, pos0, n, ws);
        if (cap && cap->indexer)
            for (int64_t t = 0; t < n; t++)
                cap->indexer(cap->user, il, pos0 + t, ws->isel + t * hp->idx_topk, ws->n_isel[t]);
    }
    /* §5.4-5.5: sparse attention with sinks, parallel over (token, head). */
    int64_t max_comp = 0;
    if (ratio == 4) max_comp = hp->idx_topk;
    else if (ratio) max_comp = (pos0 + n) / ratio;
    int nt = ds4_pool_size(m->pool);
    int64_t stride = W + max_comp + Dh + 16;
    CK(cpu_buf_reserve(&ws->attn, (size_t)(stride * nt) * sizeof(float), err));
    attn_job job = {m, L, kvl, ws, pos0, n, freqs, ws->attn.p, stride};
    ds4_pool_run(m->pool, n * H, 1, attn_items, &job);
    /* Window ring: keep the last min(n, W) rows of the chunk at slot pos mod W (§7.1). */
    for (int64_t t = n > W ? n - W : 0; t < n; t++)
        memcpy(kvl->raw + ((pos0 + t) % W) * Dh, ws->kv + t * Dh, (size_t)Dh * sizeof(float));
    /* §5.6: grouped output projection. */
    int64_t G = hp->o_groups, hpg = H / G, ol = hp->o_lora;
    for (int64_t g = 0; g < G; g++) {
        cpu_mat wg = cpu_mat_rows(&L->wo_a, g * ol, ol);
        CK(cpu_matmul(m->pool, &wg, ws->o + g * hpg * Dh, H * Dh, n, ws->oa + g * ol, G * ol,
                      &ws->act, err));
    }
    CK(cpu_matmul(m->pool, &L->wo_b, ws->oa, G * ol, n, ws->f, D, &ws->act, err));
#undef CK
    return DS4_OK;
}
