/*
 * format/quant_iq2.c — the IQ2_XXS encoder (GGUF_LAYOUT §4.5, §5.6) and its search tables.
 *
 * The quantizer works on levels {1, 3, 5} (2-bit l = 0..2, value 2l+1) even though the decoder
 * uses magnitudes {8, 25, 43}/8: a GGML design detail that ds4 keeps (§5.6). Tables built once
 * from the decode grid (q_iq2xxs_grid, generated from the shared data), under pthread_once:
 *   - levels[256][8]: each grid entry as 2l+1;
 *   - map[u]: for a 16-bit code u of eight 2-bit levels (all l <= 2), the grid index when u is
 *     a grid code, else -(k+1) for the k-th off-grid code;
 *   - per off-grid code k: the grid indices of its two nearest distance shells, sorted by
 *     (distance², index) — the order ties are broken in — and their levels as floats stored
 *     level-major ([i][j], j padded to 8) so the distance loop runs over 8 neighbours at once
 *     (each lane still evaluates ds4's expression in ds4's order, so results are unchanged).
 * Like quant_encode.c, every f32 expression keeps ds4's operand order (byte compatibility).
 */
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "format/fp8.h"
#include "format/quant_impl.h"

#define MAP_SIZE 43691   /* largest code with all levels <= 2 is 0xAAAA = 43690 */
#define GROUP_MAX_EPS 1e-15f

#define NB_CODES 6305      /* 3^8 level tuples minus the 256 grid codes */
#define NB_MAX 256         /* bound on a padded neighbour list (largest is 150) */

static struct {
    int8_t levels[256][8];
    int32_t map[MAP_SIZE];
    uint32_t nb_off[NB_CODES];   /* start in nb_idx (and 8·start in nb_lev), a multiple of 8 */
    uint16_t nb_count[NB_CODES];
    uint16_t *nb_idx;            /* grid indices, per code padded to a multiple of 8 */
    float *nb_lev;               /* per code: lev[i·npad + j] = level i of neighbour j */
    bool ok;
} g_iq2;

static pthread_once_t g_iq2_once = PTHREAD_ONCE_INIT;

/* Grid magnitude byte (8, 25, 43) -> 2-bit level. */
static int grid_level(unsigned mag) { return mag == 8 ? 0 : mag == 25 ? 1 : mag == 43 ? 2 : -1; }

static bool code_ok(uint32_t u) {
    for (int i = 0; i < 8; i++)
        if (((u >> (2 * i)) & 3u) == 3u) return false;
    return true;
}

static int dist2(const int8_t *g, uint32_t u) {
    int d = 0;
    for (int i = 0; i < 8; i++) {
        int p = 2 * (int)((u >> (2 * i)) & 3u) + 1;
        d += (g[i] - p) * (g[i] - p);
    }
    return d;
}

static void iq2_init(void) {
    for (int i = 0; i < MAP_SIZE; i++) g_iq2.map[i] = INT32_MIN;
    for (int n = 0; n < 256; n++) {
        uint32_t u = 0;
        for (int i = 0; i < 8; i++) {
            int l = grid_level((unsigned)((q_iq2xxs_grid[n] >> (8 * i)) & 255u));
            if (l < 0) return;   /* corrupt table: leave ok = false */
            g_iq2.levels[n][i] = (int8_t)(2 * l + 1);
            u |= (uint32_t)l << (2 * i);
        }
        g_iq2.map[u] = n;
    }
    /* Two passes over the off-grid codes: count, then fill. */
    size_t total = 0;
    for (int pass = 0; pass < 2; pass++) {
        size_t at = 0;
        int32_t k = 0;
        for (uint32_t u = 0; u < MAP_SIZE; u++) {
            if (!code_ok(u) || g_iq2.map[u] >= 0) continue;
            if (k >= NB_CODES) return;
            int d[256], first = INT32_MAX, second = INT32_MAX;
            for (int n = 0; n < 256; n++) {
                d[n] = dist2(g_iq2.levels[n], u);
                if (d[n] < first) {
                    second = first;
                    first = d[n];
                } else if (d[n] > first && d[n] < second) {
                    second = d[n];
                }
            }
            size_t count = 0;
            for (int n = 0; n < 256; n++) count += d[n] == first || d[n] == second;
            size_t npad = (count + 7) & ~(size_t)7;
            if (pass == 1) {
                g_iq2.map[u] = -(k + 1);
                g_iq2.nb_off[k] = (uint32_t)at;
                g_iq2.nb_count[k] = (uint16_t)count;
                uint16_t *idx = g_iq2.nb_idx + at;
                size_t j = 0;
                for (int n = 0; n < 256; n++) if (d[n] == first) idx[j++] = (uint16_t)n;
                for (int n = 0; n < 256; n++) if (d[n] == second) idx[j++] = (uint16_t)n;
                for (; j < npad; j++) idx[j] = idx[0];   /* padding lanes are never chosen */
                float *lev = g_iq2.nb_lev + 8 * at;
                for (int i = 0; i < 8; i++)
                    for (j = 0; j < npad; j++) lev[i * npad + j] = (float)g_iq2.levels[idx[j]][i];
            }
            at += npad;
            k++;
            if (count == 0 || npad > NB_MAX) return;
        }
        if (pass == 0) {
            total = at;
            g_iq2.nb_idx = malloc(total * sizeof *g_iq2.nb_idx);
            g_iq2.nb_lev = malloc(8 * total * sizeof *g_iq2.nb_lev);
            if (!g_iq2.nb_idx || !g_iq2.nb_lev) {
                free(g_iq2.nb_idx);
                free(g_iq2.nb_lev);
                return;
            }
        }
    }
    g_iq2.ok = true;
}

/* Best grid entry among the neighbours of off-grid code k, by sqrt(w)-weighted squared error
 * at `scale` (ds4: d2 += w·diff·diff over i in order, from 0); ties keep the first. Writes its
 * levels to L, returns its grid index. */
static int best_neighbour(int32_t k, const float *xval, const float *wsq, float scale,
                          uint8_t *L) {
    int count = g_iq2.nb_count[k];
    int npad = (count + 7) & ~7;
    const float *lev = g_iq2.nb_lev + 8 * (size_t)g_iq2.nb_off[k];
    const uint16_t *idx = g_iq2.nb_idx + g_iq2.nb_off[k];
    float best = FLT_MAX;
    int best_j = 0;
    for (int jb = 0; jb < npad; jb += 8) {
        float d2[8] = {0};
        for (int i = 0; i < 8; i++) {
            const float *li = lev + i * npad + jb;
            for (int jj = 0; jj < 8; jj++) {
                float diff = scale * li[jj] - xval[i];
                d2[jj] += wsq[i] * diff * diff;
            }
        }
        int nj = count - jb < 8 ? count - jb : 8;
        for (int jj = 0; jj < nj; jj++)
            if (d2[jj] < best) {
                best = d2[jj];
                best_j = jb + jj;
            }
    }
    int n = idx[best_j];
    for (int i = 0; i < 8; i++) L[i] = (uint8_t)((g_iq2.levels[n][i] - 1) / 2);
    return n;
}

/* Quantizes the four 8-groups of xval at inverse scale id into L (levels 0..2 on the grid);
 * returns the grid indices in idx. */
static void group_codes(const float *xval, const float *wsq, float id, float nb_scale,
                        uint8_t *L, int *idx) {
    for (int k = 0; k < 4; k++) {
        uint32_t u = 0;
        for (int i = 0; i < 8; i++) {
            int l = q_nearest_int(0.5f * (id * xval[8 * k + i] - 1));
            l = l < 0 ? 0 : l > 2 ? 2 : l;
            L[8 * k + i] = (uint8_t)l;
            u |= (uint32_t)l << (2 * i);
        }
        int32_t m = g_iq2.map[u];
        if (m >= 0) idx[k] = m;
        else idx[k] = best_neighbour(-m - 1, xval + 8 * k, wsq + 8 * k, nb_scale, L + 8 * k);
    }
}

static void iq2_block(const float *x, uint8_t *blk, const float *imp) {
    uint32_t q2[16] = {0};
    float scales[8];
    float w[32], wsq[32], xval[32];
    uint8_t L[32], Laux[32], signs[4];
    int idx[4];

    float sumx2 = 0;
    for (int i = 0; i < Q_QK_K; i++) sumx2 += x[i] * x[i];
    float sigma2 = sumx2 / (float)Q_QK_K;
    float max_scale = 0;

    for (int ib = 0; ib < 8; ib++) {
        const float *xb = x + 32 * ib;
        const float *qw = imp + 32 * ib;
        for (int i = 0; i < 32; i++) {
            w[i] = qw[i] * sqrtf(sigma2 + xb[i] * xb[i]);
            wsq[i] = sqrtf(w[i]);
        }
        /* Magnitudes plus sign masks; an odd count of negatives flips the cheapest element
         * (smallest w·x²) so that the 8th sign bit is implied by parity (§4.5.2). */
        for (int k = 0; k < 4; k++) {
            int nneg = 0;
            uint8_t s = 0;
            for (int i = 0; i < 8; i++) {
                float v = xb[8 * k + i];
                xval[8 * k + i] = v >= 0 ? v : -v;
                if (!(v >= 0)) {
                    nneg++;
                    s |= (uint8_t)(1u << i);
                }
            }
            if (nneg % 2) {
                int imin = 0;
                float min = w[8 * k] * xb[8 * k] * xb[8 * k];
                for (int i = 1; i < 8; i++) {
                    float a = w[8 * k + i] * xb[8 * k + i] * xb[8 * k + i];
                    if (a < min) {
                        min = a;
                        imin = i;
                    }
                }
                xval[8 * k + imin] = -xval[8 * k + imin];
                s ^= (uint8_t)(1u << imin);
            }
            signs[k] = s & 127u;
        }

        float max = xval[0];
        for (int i = 1; i < 32; i++) max = max > xval[i] ? max : xval[i];
        if (max < GROUP_MAX_EPS) {
            scales[ib] = 0;
            continue;
        }
        float scale = q_make_qp_quants(32, 4, xval, L, w);
        float eff_max = scale * 3;
        if (eff_max <= 0) {
            scales[ib] = 0;
            continue;
        }
        /* 13 candidate inverse scales; keep the one maximizing (Σw·x·q)²/Σw·q². */
        float best = 0;
        for (int is = -6; is <= 6; is++) {
            float id = (5 + (float)is * 0.1f) / eff_max;
            group_codes(xval, wsq, id, 1 / id, Laux, idx);
            float sumqx = 0, sumq2 = 0;
            for (int i = 0; i < 32; i++) {
                float q = (float)(2 * Laux[i] + 1);
                sumqx += w[i] * xval[i] * q;
                sumq2 += w[i] * q * q;
            }
            if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
                scale = sumqx / sumq2;
                best = scale * sumqx;
                memcpy(L, Laux, sizeof L);
            }
        }
        if (scale > 0) {
            group_codes(xval, wsq, 1 / scale, scale, L, idx);
            for (int k = 0; k < 4; k++)
                for (int i = 0; i < 8; i++)
                    L[8 * k + i] = (uint8_t)((g_iq2.levels[idx[k]][i] - 1) / 2);
            float sumqx = 0, sumq2 = 0;
            for (int i = 0; i < 32; i++) {
                float q = (float)(2 * L[i] + 1);
                sumqx += w[i] * xval[i] * q;
                sumq2 += w[i] * q * q;
            }
            if (sumq2 > 0) scale = sumqx / sumq2;
        }
        if (scale < 0) {
            scale = -scale;
            for (int k = 0; k < 4; k++) signs[k] = (uint8_t)(~signs[k] & 127u);
        }
        for (int k = 0; k < 4; k++) {
            uint32_t u = 0;
            for (int i = 0; i < 8; i++) u |= (uint32_t)L[8 * k + i] << (2 * i);
            int32_t gi = u < MAP_SIZE ? g_iq2.map[u] : -1;
            if (gi < 0) gi = 0;   /* unreachable: L always comes from a grid entry here */
            q2[2 * ib] |= (uint32_t)gi << (8 * k);
            q2[2 * ib + 1] |= (uint32_t)signs[k] << (7 * k);
        }
        scales[ib] = scale;
        max_scale = max_scale > scale ? max_scale : scale;
    }

    memset(blk, 0, Q_IQ2_XXS_BYTES);
    if (max_scale == 0) return;
    float d = max_scale / 31;
    uint16_t hd = fp_f32_to_f16(d);
    blk[0] = (uint8_t)hd;
    blk[1] = (uint8_t)(hd >> 8);
    float id = 1 / d;
    for (int ib = 0; ib < 8; ib++) {
        int l = q_nearest_int(0.5f * (id * scales[ib] - 1));
        l = l < 0 ? 0 : l > 15 ? 15 : l;
        q2[2 * ib + 1] |= (uint32_t)l << 28;
    }
    for (int i = 0; i < 16; i++)
        for (int b = 0; b < 4; b++) blk[2 + 4 * i + b] = (uint8_t)(q2[i] >> (8 * b));
}

ds4_status q_encode_iq2_xxs(const float *x, uint8_t *dst, uint64_t n, const float *imp,
                            ds4_error *err) {
    pthread_once(&g_iq2_once, iq2_init);
    if (!g_iq2.ok)
        return ds4_seterr(err, DS4_ERR_NOMEM,
                          "quant: IQ2_XXS encoder tables could not be built (out of memory "
                          "or a corrupt grid)");
    static const float ones[Q_QK_K] = {
#define ONE8 1, 1, 1, 1, 1, 1, 1, 1
#define ONE64 ONE8, ONE8, ONE8, ONE8, ONE8, ONE8, ONE8, ONE8
        ONE64, ONE64, ONE64, ONE64
#undef ONE64
#undef ONE8
    };
    for (uint64_t b = 0; b < n / Q_QK_K; b++)
        iq2_block(x + Q_QK_K * b, dst + Q_IQ2_XXS_BYTES * b, imp ? imp + Q_QK_K * b : ones);
    return DS4_OK;
}
