/*
 * model/indexer.c — the lightning indexer of ratio-4 layers (MODEL_MATH §8): scores every
 * compressed indexer row complete by the query's position and keeps the top-k.
 *
 * Tie-break (MODEL_MATH §8, §17 #2): larger score first, then lower row index; the selected
 * rows are returned in ascending order. Must not: touch attention rows or weights other than
 * through the precomputed queries (ws->iq, ws->iw).
 */
#include <math.h>
#include <stdlib.h>

#include "cpu/ops.h"
#include "model/forward.h"

typedef struct idx_job {
    const float *q;     /* [ih][id] for one token */
    const float *w;     /* [ih] */
    const float *rows;  /* [n_c][id] */
    int64_t ih, id;
    float *scores;
} idx_job;

static void idx_score(void *ctx, int64_t begin, int64_t end, int thread_idx) {
    (void)thread_idx;
    const idx_job *j = ctx;
    for (int64_t r = begin; r < end; r++) {
        const float *e = j->rows + r * j->id;
        float s = 0.0f;
        for (int64_t h = 0; h < j->ih; h++) {
            float d = cpu_dot_f32(j->q + h * j->id, e, j->id);
            s += j->w[h] * (d > 0.0f ? d : 0.0f); /* relu per head before the weighted sum */
        }
        j->scores[r] = s;
    }
}

/* "a ranks before b": higher score, then lower index. */
static inline int before(const float *sc, int32_t a, int32_t b) {
    return sc[a] > sc[b] || (sc[a] == sc[b] && a < b);
}

/* Min-heap on rank (root = the worst kept row). */
static void heap_down(int32_t *hp, int64_t n, int64_t i, const float *sc) {
    for (;;) {
        int64_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && before(sc, hp[w], hp[l])) w = l;
        if (r < n && before(sc, hp[w], hp[r])) w = r;
        if (w == i) return;
        int32_t t = hp[i]; hp[i] = hp[w]; hp[w] = t;
        i = w;
    }
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

void indexer_select(model *m, const layer_weights *L, const kv_comp *idx, int64_t pos0,
                    int64_t n, fwd_ws *ws) {
    (void)L;
    const model_hparams *hp = &m->hp;
    int64_t k = hp->idx_topk, ih = hp->idx_n_head, id = hp->idx_head_dim;
    float *scores = ws->idx.p;
    for (int64_t t = 0; t < n; t++) {
        int64_t p = pos0 + t;
        int64_t n_c = (p + 1) / 4; /* MODEL_MATH §5.4: rows complete by p */
        int32_t *sel = ws->isel + t * k;
        if (n_c <= k) {
            for (int64_t r = 0; r < n_c; r++) sel[r] = (int32_t)r;
            ws->n_isel[t] = (int32_t)n_c;
            continue;
        }
        idx_job j = {ws->iq + t * ih * id, ws->iw + t * ih, idx->rows, ih, id, scores};
        int64_t work = ih * id;
        ds4_pool_run(m->pool, n_c, work >= 8192 ? 1 : 8192 / work, idx_score, &j);
        /* Keep the best k: heap of the first k, then replace the worst when beaten. */
        for (int64_t r = 0; r < k; r++) sel[r] = (int32_t)r;
        for (int64_t i = k / 2 - 1; i >= 0; i--) heap_down(sel, k, i, scores);
        for (int64_t r = k; r < n_c; r++) {
            if (before(scores, (int32_t)r, sel[0])) {
                sel[0] = (int32_t)r;
                heap_down(sel, k, 0, scores);
            }
        }
        qsort(sel, (size_t)k, sizeof *sel, cmp_i32);
        ws->n_isel[t] = (int32_t)k;
    }
}
