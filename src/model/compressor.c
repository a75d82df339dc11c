/*
 * model/compressor.c — streaming compressor (MODEL_MATH §6.4) and entry finishing (§6.3).
 */
#include "model/compressor.h"

#include <math.h>
#include <string.h>

#include "cpu/ops.h"
#include "cpu/refmath.h"

/* MODEL_MATH §6.1/§6.2: per channel softmax over the candidate scores, weighted sum of A. */
static void pool(const kv_comp *c, float *out) {
    int64_t r = c->ratio, d = c->dim, w = c->coff * d;
    for (int64_t ch = 0; ch < d; ch++) {
        float mx = -INFINITY;
        /* Candidates: for overlap, rows 0..r-1 through the first half and rows r..2r-1 through
         * the second half; without overlap rows 0..r-1 (the only half). */
        for (int64_t s = 0; s < c->coff * r; s++) {
            int64_t off = (c->coff == 2 && s >= r) ? d : 0;
            float b = c->st_sc[s * w + off + ch];
            if (b > mx) mx = b;
        }
        float den = 0.0f, num = 0.0f;
        for (int64_t s = 0; s < c->coff * r; s++) {
            int64_t off = (c->coff == 2 && s >= r) ? d : 0;
            float b = c->st_sc[s * w + off + ch];
            float e = ref_expf(b - mx); /* cpu/refmath.h: the GPU's bits */
            den += e;
            num += e * c->st_kv[s * w + off + ch];
        }
        out[ch] = num / den;
    }
}

bool comp_push(kv_comp *c, const compressor_weights *wt, const float *A, const float *B,
               int64_t pos, comp_kind kind, const float *freqs, int n_rope, float eps) {
    int64_t r = c->ratio, d = c->dim, w = c->coff * d;
    int64_t in_win = pos % r;
    /* MODEL_MATH §6.4: overlapping state keeps the previous window in rows 0..r-1. */
    int64_t row = (c->coff == 2 ? r : 0) + in_win;
    const float *ape = wt->ape + in_win * w;
    for (int64_t i = 0; i < w; i++) {
        c->st_kv[row * w + i] = A[i];
        c->st_sc[row * w + i] = B[i] + ape[i];
    }
    if ((pos + 1) % r != 0) return false;
    int64_t j = (pos + 1) / r - 1;
    float *E = c->rows + j * d;
    pool(c, E);
    if (c->coff == 2) {
        memcpy(c->st_kv, c->st_kv + r * w, (size_t)(r * w) * sizeof(float));
        memcpy(c->st_sc, c->st_sc + r * w, (size_t)(r * w) * sizeof(float));
    }
    /* MODEL_MATH §6.3: norm, RoPE at the entry's first position, QAT round trip. */
    cpu_rmsnorm(E, E, wt->norm, d, eps);
    cpu_rope_tail(E + d - n_rope, n_rope, freqs, r * j, false);
    if (kind == COMP_ATTN) {
        cpu_fp8_roundtrip(E, d - n_rope, 64);
    } else {
        cpu_hadamard(E, (int)d);
        cpu_fp4_roundtrip(E, d, 32);
    }
    return true;
}
