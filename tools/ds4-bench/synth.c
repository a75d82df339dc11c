/*
 * tools/ds4-bench/synth.c — `ds4-bench --synthetic flash|tiny|CONFIG`: a model of the real
 * shape with random weights built in memory, never as a file (issue #7: full-size Flash does
 * not fit the device machine's disk, and quantizing 80 GB of random f32 values is far too
 * slow). The GGUF is a header (metadata + the converter's tensor plan, GGUF_LAYOUT §1) in front
 * of an anonymous mapping of the data region's size:
 *   - F32/F16/BF16/I32 tensors (norms, HC, router, compressor, embedding, tid2eid) get the
 *     converter's synthetic values (model/synthetic.h), written on the host;
 *   - quantized tensors (Q8_0, Q2_K, Q4_K, IQ2_XXS) are random valid blocks (cuda/synth_cuda.h)
 *     whose f16 scales are chosen so the dequantized weights have the converter's spread
 *     (std 1/sqrt(fan_in)): on the CPU written into the mapping, with --backend cuda made on the
 *     device by cuda_model_open_synth, so their host pages are never touched.
 * model_open binds it as any GGUF. Then the bench loop of main.c, on the model layer directly.
 * Must not: write files, or pretend the logits mean anything beyond "finite and varying".
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "core/error.h"
#include "core/safemath.h"
#include "cuda/synth_cuda.h"
#include "format/fp8.h"
#include "format/gguf.h"
#include "format/gguf_write.h"
#include "format/quant.h"
#include "model/convert.h"
#include "model/model.h"
#include "model/synthetic.h"
#ifdef DS4_CUDA
#include "cuda/cuda_api.h"
#include "cuda/model_cuda.h"
#include "cuda/sample_dev.h"
#endif

typedef struct synth_model {
    cv_shape shape;
    cv_plan plan;
    uint8_t *buf;          /* header + data region (anonymous mapping) */
    uint64_t buf_bytes, data_off;
    gguf_ctx *g;
    model *m;
    /* quantized tensors: made on the device (cuda) or already written (cpu) */
    uint64_t *q_off, *q_bytes, *q_seed;
    uint32_t *q_type;
    uint16_t *q_d;
    int64_t n_q;
} synth_model;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- Header -------------------------------------------------------------------------------- */

static void put(uint8_t **p, const void *v, size_t n) {
    memcpy(*p, v, n);
    *p += n;
}

/* The metadata records come from the converter's writer (a file without tensors); the tensor
 * directory is appended here (GGUF_LAYOUT §1.3), since the memory writer hands out its bytes
 * only once every tensor's data went through it. The layout is checked against the writer's
 * own size computation of the full directory. */
static ds4_status build_header(synth_model *sm, const cv_policy *pol, uint8_t **out,
                               uint64_t *hdr_bytes, uint64_t *data_bytes, uint64_t *offs,
                               ds4_error *err) {
    gguf_writer *w = NULL, *w2 = NULL;
    gguf_ctx *g0 = NULL;
    const uint8_t *b0;
    uint64_t n0, want;
    ds4_status st;
    if ((st = gguf_writer_create_mem(&w, err)) || (st = cv_write_metadata(w, &sm->shape, pol->file_type, err)) ||
        (st = gguf_writer_write_header(w, err)) || (st = gguf_writer_finish(w, err)) ||
        (st = gguf_writer_mem_data(w, &b0, &n0, err)) || (st = gguf_open_mem(&g0, b0, n0, err)))
        goto out;
    uint64_t align = gguf_alignment(g0), kv_end = 24;
    for (uint64_t i = 0; i < gguf_n_kv(g0); i++)
        kv_end += 8 + strlen(gguf_kv_key(g0, i)) + 4 + gguf_kv_value(g0, i)->raw_bytes;
    uint64_t dir = 0, at = 0;
    for (uint64_t i = 0; i < sm->plan.n; i++) {
        const cv_tensor *t = &sm->plan.t[i];
        dir += 8 + strlen(t->name) + 4 + 8 * (uint64_t)t->n_dims + 4 + 8;
        if (!ds4_align_up_u64(&offs[i], at, align)) {
            st = ds4_seterr(err, DS4_ERR_RANGE, "synthetic: data region overflows");
            goto out;
        }
        at = offs[i] + t->n_bytes;
    }
    uint64_t hb;
    ds4_align_up_u64(&hb, kv_end + dir, align);
    *hdr_bytes = hb;
    ds4_align_up_u64(data_bytes, at, align);
    if ((st = gguf_writer_create_mem(&w2, err)) || (st = cv_write_metadata(w2, &sm->shape, pol->file_type, err)))
        goto out;
    for (uint64_t i = 0; i < sm->plan.n; i++) {
        const cv_tensor *t = &sm->plan.t[i];
        if ((st = gguf_writer_add_tensor(w2, t->name, t->type, t->n_dims, t->ne, err))) goto out;
    }
    if ((st = gguf_writer_total_bytes(w2, &want, err))) goto out;
    if (want != hb + at) {
        st = ds4_seterr(err, DS4_ERR_INTERNAL, "synthetic: header layout %llu + %llu bytes, the writer says %llu",
                        (unsigned long long)hb, (unsigned long long)at, (unsigned long long)want);
        goto out;
    }
    uint8_t *h = calloc(1, hb), *p = h;
    if (!h) {
        st = ds4_seterr(err, DS4_ERR_NOMEM, "synthetic: out of memory");
        goto out;
    }
    memcpy(h, b0, kv_end);
    uint64_t n_t = sm->plan.n;
    memcpy(h + 8, &n_t, 8); /* GGUF_LAYOUT §1.1: magic, version, tensor count, kv count */
    p = h + kv_end;
    for (uint64_t i = 0; i < sm->plan.n; i++) {
        const cv_tensor *t = &sm->plan.t[i];
        uint64_t nl = strlen(t->name);
        put(&p, &nl, 8);
        put(&p, t->name, nl);
        put(&p, &t->n_dims, 4);
        put(&p, t->ne, 8 * (size_t)t->n_dims);
        put(&p, &t->type, 4);
        put(&p, &offs[i], 8);
    }
    *out = h;
out:
    gguf_close(g0);
    gguf_writer_free(w);
    gguf_writer_free(w2);
    return st;
}

/* ---- Values --------------------------------------------------------------------------------- */

/* The spread the converter's synthetic source gives a matrix (model/synthetic.h). */
static float target_std(const cv_tensor *t) {
    float fan = sqrtf((float)t->ne[0]);
    if (t->fam == CV_FAM_EMBED) return 1.0f;
    if (strstr(t->name, "hc_") && strstr(t->name, "_fn.weight")) return 0.1f / fan;
    if (strstr(t->name, "_ape.weight")) return 0.1f;
    return 1.0f / fan;
}

/* f16 scale for a quantized tensor: its first blocks generated with unit scales and decoded;
 * the scale that brings their rms to the target (both d and dmin scale the block linearly). */
static ds4_status quant_scale(const cv_tensor *t, uint64_t seed, uint16_t *d, ds4_error *err) {
    uint32_t bb = 1;
    int d_off, m_off;
    synth_block_layout(t->type, &bb, &d_off, &m_off);
    uint64_t n_blk = t->n_bytes / bb < 64 ? t->n_bytes / bb : 64;
    uint64_t n_el = n_blk * q_block_elems((int)t->type);
    uint8_t *b = malloc(n_blk * bb);
    float *v = malloc(n_el * sizeof *v);
    ds4_status st = DS4_OK;
    if (!b || !v) {
        st = ds4_seterr(err, DS4_ERR_NOMEM, "synthetic: out of memory");
        goto out;
    }
    synth_fill_host(b, 0, n_blk * bb, t->type, 0x3c00, 0x3c00, seed);
    if ((st = q_decode_row((int)t->type, b, v, n_el, err))) goto out;
    double ss = 0;
    for (uint64_t i = 0; i < n_el; i++) ss += (double)v[i] * v[i];
    double rms = sqrt(ss / (double)(n_el ? n_el : 1));
    *d = fp_f32_to_f16(rms > 0 ? (float)(target_std(t) / rms) : 1e-3f);
out:
    free(b);
    free(v);
    return st;
}

/* One unit of host work: rows [row0, row0+n) of one expert of a float tensor, a table, or a
 * whole quantized tensor (CPU backend). */
typedef struct synth_job {
    uint64_t t, expert, row0, n_rows;
} synth_job;

typedef struct synth_pool {
    synth_model *sm;
    cv_source src;
    const uint64_t *offs;
    synth_job *jobs;
    uint64_t n_jobs, cap_jobs, next;
    pthread_mutex_t mu;
    ds4_error err;
    ds4_status st;
} synth_pool;

static bool push_job(synth_pool *pl, synth_job j) {
    if (pl->n_jobs == pl->cap_jobs) {
        uint64_t cap = pl->cap_jobs ? 2 * pl->cap_jobs : 4096;
        synth_job *n = realloc(pl->jobs, cap * sizeof *n);
        if (!n) return false;
        pl->jobs = n;
        pl->cap_jobs = cap;
    }
    pl->jobs[pl->n_jobs++] = j;
    return true;
}

static ds4_status run_job(synth_pool *pl, const synth_job *j, float *row, ds4_error *err) {
    synth_model *sm = pl->sm;
    const cv_tensor *t = &sm->plan.t[j->t];
    uint8_t *dst = sm->buf + sm->data_off + pl->offs[j->t];
    uint32_t bb;
    int d_off, m_off;
    if (synth_block_layout(t->type, &bb, &d_off, &m_off)) {
        for (int64_t i = 0; i < sm->n_q; i++)
            if (sm->q_off[i] == pl->offs[j->t])
                synth_fill_host(dst, 0, t->n_bytes, t->type, sm->q_d[i], sm->q_d[i], sm->q_seed[i]);
        return DS4_OK;
    }
    if (t->type == DS4_TYPE_I32) return pl->src.read_table(pl->src.ctx, t, (int32_t *)dst, err);
    uint64_t ne0 = t->ne[0], rows_per_exp = t->n_dims >= 2 ? t->ne[1] : 1;
    for (uint64_t r = 0; r < j->n_rows; r++) {
        ds4_status st = pl->src.read_rows(pl->src.ctx, t, (uint32_t)j->expert, j->row0 + r, 1, row, err);
        if (st) return st;
        uint64_t idx = (j->expert * rows_per_exp + j->row0 + r) * ne0;
        if (t->type == DS4_TYPE_F32) memcpy((float *)dst + idx, row, ne0 * 4);
        else if (t->type == DS4_TYPE_F16) fp_f32_to_f16_row(row, (uint16_t *)dst + idx, ne0);
        else if (t->type == DS4_TYPE_BF16)
            for (uint64_t c = 0; c < ne0; c++) ((uint16_t *)dst)[idx + c] = fp_f32_to_bf16(row[c]);
        else
            return ds4_seterr(err, DS4_ERR_UNSUPPORTED, "synthetic: tensor '%s' has type %u", t->name, t->type);
    }
    return DS4_OK;
}

static void *worker(void *arg) {
    synth_pool *pl = arg;
    uint64_t max_ne0 = 1;
    for (uint64_t i = 0; i < pl->sm->plan.n; i++)
        if (pl->sm->plan.t[i].ne[0] > max_ne0) max_ne0 = pl->sm->plan.t[i].ne[0];
    float *row = malloc(max_ne0 * sizeof *row);
    for (;;) {
        pthread_mutex_lock(&pl->mu);
        uint64_t k = pl->st || !row ? pl->n_jobs : pl->next++;
        if (!row && !pl->st) pl->st = ds4_seterr(&pl->err, DS4_ERR_NOMEM, "synthetic: out of memory");
        pthread_mutex_unlock(&pl->mu);
        if (k >= pl->n_jobs) break;
        ds4_error e = {0};
        ds4_status st = run_job(pl, &pl->jobs[k], row, &e);
        if (st) {
            pthread_mutex_lock(&pl->mu);
            if (!pl->st) {
                pl->st = st;
                pl->err = e;
            }
            pthread_mutex_unlock(&pl->mu);
        }
    }
    free(row);
    return NULL;
}

static void synth_close(synth_model *sm) {
    model_close(sm->m);
    gguf_close(sm->g);
    if (sm->buf) munmap(sm->buf, sm->buf_bytes);
    cv_plan_free(&sm->plan);
    free(sm->q_off);
    free(sm->q_bytes);
    free(sm->q_seed);
    free(sm->q_type);
    free(sm->q_d);
    memset(sm, 0, sizeof *sm);
}

/* Builds and opens the model. on_device: quantized tensors are left for cuda_model_open_synth. */
static ds4_status synth_open(synth_model *sm, const bench_opts *o, bool on_device, ds4_error *err) {
    memset(sm, 0, sizeof *sm);
    cv_preset pr;
    cv_policy pol;
    ds4_status st;
    uint8_t *hdr = NULL;
    uint64_t *offs = NULL, hb = 0, db = 0;
    synth_pool pl;
    memset(&pl, 0, sizeof pl);
    cv_synth *sy = NULL;
    if (cv_shape_preset(&sm->shape, o->synthetic, NULL) != DS4_OK &&
        (st = cv_shape_from_config(&sm->shape, o->synthetic, err)))
        return st;
    if ((st = cv_shape_shrink(&sm->shape, o->syn_layers, o->syn_experts, err))) return st;
    if ((st = cv_preset_from_name(o->preset ? o->preset : "q2", &pr, err))) return st;
    cv_policy_init(&pol, pr);
    if ((st = cv_plan_build(&sm->plan, &sm->shape, &pol, false, err))) return st;
    offs = calloc(sm->plan.n, sizeof *offs);
    sm->q_off = calloc(sm->plan.n, 8);
    sm->q_bytes = calloc(sm->plan.n, 8);
    sm->q_seed = calloc(sm->plan.n, 8);
    sm->q_type = calloc(sm->plan.n, 4);
    sm->q_d = calloc(sm->plan.n, 2);
    if (!offs || !sm->q_off || !sm->q_bytes || !sm->q_seed || !sm->q_type || !sm->q_d) {
        st = ds4_seterr(err, DS4_ERR_NOMEM, "synthetic: out of memory");
        goto out;
    }
    if ((st = build_header(sm, &pol, &hdr, &hb, &db, offs, err))) goto out;
    sm->data_off = hb;
    sm->buf_bytes = hb + db;
    /* Untouched pages of an anonymous mapping cost nothing: the quantized spans stay that way
     * on the GPU path. */
    void *p = mmap(NULL, sm->buf_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        st = ds4_seterr(err, DS4_ERR_NOMEM, "synthetic: cannot map %.2f GiB", (double)sm->buf_bytes / (1u << 30));
        goto out;
    }
    sm->buf = p;
    memcpy(sm->buf, hdr, hb);
    if ((st = cv_synth_create(&sy, &sm->plan, o->seed, err))) goto out;
    cv_synth_source(sy, &pl.src);
    pl.sm = sm;
    pl.offs = offs;
    for (uint64_t i = 0; i < sm->plan.n; i++) {
        const cv_tensor *t = &sm->plan.t[i];
        uint32_t bb;
        int d_off, m_off;
        if (synth_block_layout(t->type, &bb, &d_off, &m_off)) {
            int64_t q = sm->n_q++;
            sm->q_off[q] = offs[i];
            sm->q_bytes[q] = t->n_bytes;
            sm->q_type[q] = t->type;
            sm->q_seed[q] = synth_mix64(o->seed * 0x100000001b3ull + i + 1);
            if ((st = quant_scale(t, sm->q_seed[q], &sm->q_d[q], err))) goto out;
            if (!on_device && !push_job(&pl, (synth_job){i, 0, 0, 0})) goto out_nomem;
            continue;
        }
        if (t->type == DS4_TYPE_I32) {
            if (!push_job(&pl, (synth_job){i, 0, 0, 0})) goto out_nomem;
            continue;
        }
        uint64_t rows = t->n_dims >= 2 ? t->ne[1] : 1, n_exp = t->n_dims >= 3 ? t->ne[2] : 1;
        uint64_t step = n_exp > 1 ? rows : rows / 32 > 1 ? (rows + 31) / 32 : rows;
        for (uint64_t e = 0; e < n_exp; e++)
            for (uint64_t r = 0; r < rows; r += step)
                if (!push_job(&pl, (synth_job){i, e, r, rows - r < step ? rows - r : step})) goto out_nomem;
    }
    int nt = o->n_threads > 0 ? o->n_threads : 1;
    if (o->n_threads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        nt = c < 1 ? 1 : (int)c;
    }
    pthread_mutex_init(&pl.mu, NULL);
    pthread_t th[256];
    int n_th = 0;
    for (; n_th < nt && n_th < 256; n_th++)
        if (pthread_create(&th[n_th], NULL, worker, &pl)) break;
    if (!n_th) worker(&pl);
    for (int i = 0; i < n_th; i++) pthread_join(th[i], NULL);
    pthread_mutex_destroy(&pl.mu);
    if ((st = pl.st)) {
        if (err) *err = pl.err;
        goto out;
    }
    model_options mo = {.n_threads = o->n_threads};
    if ((st = gguf_open_mem(&sm->g, sm->buf, sm->buf_bytes, err))) goto out;
    st = model_open(&sm->m, sm->g, &mo, err);
    goto out;
out_nomem:
    st = ds4_seterr(err, DS4_ERR_NOMEM, "synthetic: out of memory");
out:
    cv_synth_free(sy);
    free(pl.jobs);
    free(offs);
    free(hdr);
    if (st) synth_close(sm);
    return st;
}

/* Weight bytes one decoded token reads (bench_weight_bytes_per_token's rule): every tensor once,
 * routed experts n_used / n_expert of their bytes, one embedding row. */
static uint64_t plan_bytes_per_token(const synth_model *sm) {
    double b = 0;
    for (uint64_t i = 0; i < sm->plan.n; i++) {
        const cv_tensor *t = &sm->plan.t[i];
        if (t->fam == CV_FAM_GATE || t->fam == CV_FAM_UP || t->fam == CV_FAM_DOWN)
            b += (double)t->n_bytes * sm->shape.n_used / (t->ne[2] ? (double)t->ne[2] : 1.0);
        else if (t->fam == CV_FAM_EMBED)
            b += (double)t->n_bytes / (double)t->ne[1];
        else
            b += (double)t->n_bytes;
    }
    return (uint64_t)b;
}

/* ---- The measuring loop ----------------------------------------------------------------- */

typedef struct synth_eng {
    synth_model sm;
    model_state *st;
#ifdef DS4_CUDA
    cuda_model *cm;
    cuda_state *cs;
#endif
    bool cuda;
} synth_eng;

static ds4_status eng_eval(synth_eng *e, const int32_t *tok, int64_t n, float *logits, ds4_error *err) {
    model_eval_opts eo = {.logits_mode = logits ? MODEL_LOGITS_LAST : MODEL_LOGITS_NONE, .logits = logits};
#ifdef DS4_CUDA
    if (e->cuda) {
        ds4_status st = cuda_model_eval(e->cm, e->cs, tok, n, &eo, err);
        return st ? st : cuda_sync(err);
    }
#endif
    return model_eval(e->sm.m, e->st, tok, n, &eo, err);
}

/* One decode step and its greedy next token. On the GPU only the token id is downloaded
 * (model_eval_opts.token_out: head and argmax on the device, issue #7); on the CPU the
 * argmax of the logits (first largest). */
static ds4_status eng_greedy(synth_eng *e, int32_t tok, float *logits, uint32_t n_vocab, int32_t *next,
                             ds4_error *err) {
#ifdef DS4_CUDA
    if (e->cuda) {
        model_eval_opts eo = {.logits_mode = MODEL_LOGITS_NONE, .token_out = next};
        return cuda_model_eval(e->cm, e->cs, &tok, 1, &eo, err);
    }
#endif
    ds4_status st = eng_eval(e, &tok, 1, logits, err);
    if (st) return st;
    *next = 0;
    for (uint32_t i = 1; i < n_vocab; i++)
        if (logits[i] > logits[*next]) *next = (int32_t)i;
    return DS4_OK;
}

static ds4_status eng_save(synth_eng *e, uint8_t **buf, size_t *n, ds4_error *err) {
#ifdef DS4_CUDA
    ds4_status st;
    if (e->cuda && (st = cuda_state_sync_host(e->cs, err))) return st;
#endif
    *n = model_state_serialized_bytes(e->st);
    *buf = malloc(*n ? *n : 1);
    if (!*buf) return ds4_seterr(err, DS4_ERR_NOMEM, "synthetic: out of memory");
    return model_state_serialize(e->st, *buf, *n, err);
}

static ds4_status eng_load(synth_eng *e, const uint8_t *buf, size_t n, ds4_error *err) {
    ds4_status st = model_state_deserialize(e->st, buf, n, err);
#ifdef DS4_CUDA
    if (!st && e->cuda) cuda_state_host_changed(e->cs);
#endif
    return st;
}

/* Logits must be finite and not all equal: the scales keep 43 random layers sane. */
static int logits_sane(const float *l, uint32_t n, int32_t *argmax) {
    double s = 0, s2 = 0;
    float lo = INFINITY, hi = -INFINITY;
    uint32_t bad = 0;
    *argmax = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (!isfinite(l[i])) {
            bad++;
            continue;
        }
        s += l[i];
        s2 += (double)l[i] * l[i];
        if (l[i] < lo) lo = l[i];
        if (l[i] > hi) {
            hi = l[i];
            *argmax = (int32_t)i;
        }
    }
    double mean = s / n, sd = sqrt(fmax(0, s2 / n - mean * mean));
    fprintf(stderr, "ds4-bench: logits: %u of %u not finite, min %.4g max %.4g mean %.4g std %.4g, argmax %d\n", bad, n,
            lo, hi, mean, sd, *argmax);
    return bad == 0 && hi > lo;
}

#ifdef DS4_CUDA
/* The device kernel must write the host reference's bytes (cuda/synth_cuda.h): the first and
 * last 4 KiB of every quantized tensor are read back and compared. */
static ds4_status device_blocks_check(const synth_model *sm, const cuda_model *cm, ds4_error *err) {
    enum { N = 4096 };
    uint8_t got[N], want[N];
    uint64_t checked = 0;
    for (int64_t i = 0; i < sm->n_q; i++) {
        uint64_t n = sm->q_bytes[i] < N ? sm->q_bytes[i] : N;
        uint32_t bb = 1;
        int d_off, m_off;
        synth_block_layout(sm->q_type[i], &bb, &d_off, &m_off);
        uint64_t tail = (sm->q_bytes[i] - n) / bb * bb; /* last whole blocks of <= N bytes */
        uint64_t from[2] = {0, tail};
        for (int k = 0; k < 2; k++) {
            uint64_t m = k ? sm->q_bytes[i] - tail : n;
            if (m > N) m = N;
            /* device memory or, for experts kept on the host, the pinned block */
            const void *src = cuda_model_data_addr(cm, sm->q_off[i] + from[k], m);
            if (!src)
                return ds4_seterr(err, DS4_ERR_INTERNAL, "synthetic: quantized tensor %lld is not in the model's data",
                                  (long long)i);
            ds4_status st = cuda_copy(got, src, m, err);
            if (st) return st;

            m = m / bb * bb;
            if (!synth_fill_host(want, from[k], m, sm->q_type[i], sm->q_d[i], sm->q_d[i], sm->q_seed[i]) ||
                memcmp(got, want, m))
                return ds4_seterr(err, DS4_ERR_INTERNAL,
                                  "synthetic: device blocks of quantized tensor %lld (type %u) differ from the host "
                                  "reference at bytes [%llu, +%llu)", (long long)i, sm->q_type[i],
                                  (unsigned long long)from[k], (unsigned long long)m);
            checked += m;
        }
    }
    fprintf(stderr, "ds4-bench: device blocks equal the host reference (%lld tensors, first and last 4 KiB, %llu bytes)\n",
            (long long)sm->n_q, (unsigned long long)checked);
    return DS4_OK;
}
#endif

/* --sample (issue #7, sampling on the device): o->gen_tokens decode steps from the snapshot,
 * each next token drawn by a sampler at the defaults (T 1, min_p 0.05, seed --seed): on the GPU
 * first by cuda_state_sample (head and draw on the device, only the id downloaded), then
 * through the downloaded logits and ds4_sampler_sample; one rate line each. */
static ds4_status gen_sampled(synth_eng *e, const bench_opts *o, uint32_t ctx, const uint8_t *snap,
                              size_t snap_bytes, int32_t first, float *logits, uint32_t n_vocab, ds4_error *err) {
    ds4_sampling_params p;
    ds4_sampling_params_init(&p);
    p.seed = o->seed;
    int dev = 0;
#ifdef DS4_CUDA
    dev = e->cuda ? 1 : 0;
#endif
    for (; dev >= 0; dev--) {
        ds4_sampler *smp = NULL;
        ds4_status st = ds4_sampler_create(&smp, &p, n_vocab, err);
        if (!st) st = eng_load(e, snap, snap_bytes, err);
        int32_t tok = first, next = -1;
        uint32_t changes = 0, n_host = 0;
        double a = now_s();
#ifdef DS4_CUDA
        cuda_sampler *ds = NULL;
        model_eval_opts eo = {.logits_mode = MODEL_LOGITS_NONE};
        for (uint32_t g = 0; g < o->gen_tokens && !st && dev; g++) {
            bool on_host = false;
            st = cuda_model_eval(e->cm, e->cs, &tok, 1, &eo, err);
            if (!st) st = cuda_state_sample(e->cs, &ds, smp, true, logits, &on_host, &next, err);
            n_host += on_host;
            changes += next != tok;
            tok = next;
        }
        cuda_sampler_free(ds);
#endif
        for (uint32_t g = 0; g < o->gen_tokens && !st && !dev; g++) {
            st = eng_eval(e, &tok, 1, logits, err);
            if (!st) st = ds4_sampler_sample(smp, logits, &next, err);
            changes += next != tok;
            tok = next;
        }
        double dt = now_s() - a;
        ds4_sampler_free(smp);
        if (st) return st;
        fprintf(stderr, "ds4-bench: ctx %6u  gen %4u tok %8.2f tok/s sampled (T 1, min_p 0.05) %s (%u token changes, "
                "%u drawn on the host)\n", ctx, o->gen_tokens, dt > 0 ? o->gen_tokens / dt : 0,
                dev ? "on the device" : "from the logits on the host", changes, n_host);
    }
    return DS4_OK;
}

int bench_synthetic(const bench_opts *o) {
    synth_eng e;
    memset(&e, 0, sizeof e);
    e.cuda = o->backend && !strcmp(o->backend, "cuda");
    ds4_error err = {0};
    int rc = 1;
    uint32_t *front = NULL, n_front = 0;
    int32_t *tokens = NULL;
    float *logits = NULL;
    bench_row *rows = NULL;
    uint8_t *snap0 = NULL; /* --profile-prefill: the state at position 0 */
    size_t snap0_bytes = 0;
    FILE *csv = stdout;
    uint32_t distinct = 0;
#ifndef DS4_CUDA
    if (e.cuda) {
        fprintf(stderr, "ds4-bench: --backend cuda needs a CUDA build (make cuda)\n");
        return 2;
    }
#endif
    if (o->backend && !e.cuda && strcmp(o->backend, "cpu")) {
        fprintf(stderr, "ds4-bench: unknown backend '%s'\n", o->backend);
        return 2;
    }
    double t0 = now_s();
    if (synth_open(&e.sm, o, e.cuda, &err)) goto out_err;
    double t1 = now_s();
    const model_hparams *hp = model_get_hparams(e.sm.m);
    uint32_t n_vocab = (uint32_t)hp->n_vocab;
    fprintf(stderr, "ds4-bench: synthetic %s (%u layers, %u experts, preset %s): %llu tensors, %.2f GiB, host part "
            "built in %.2f s\n", o->synthetic, e.sm.shape.n_layers, e.sm.shape.n_experts, o->preset ? o->preset : "q2",
            (unsigned long long)e.sm.plan.n, (double)(e.sm.buf_bytes - e.sm.data_off) / (1u << 30), t1 - t0);
    if ((model_state_create(&e.st, e.sm.m, o->ctx_alloc, &err))) goto out_err;
#ifdef DS4_CUDA
    if (e.cuda) {
        cuda_synth_span *sp = calloc((size_t)e.sm.n_q + 1, sizeof *sp);
        if (!sp) goto out_err;
        for (int64_t i = 0; i < e.sm.n_q; i++)
            sp[i] = (cuda_synth_span){.offset = e.sm.q_off[i], .n_bytes = e.sm.q_bytes[i], .seed = e.sm.q_seed[i],
                                      .type = e.sm.q_type[i], .d_f16 = e.sm.q_d[i], .dmin_f16 = e.sm.q_d[i]};
        /* Issue #7: the first layers' routed experts in pinned host memory when the model does
         * not fit (auto-fit, room left for this state) or as --gpu-layers-experts says. */
        cuda_model_opts co = {.gpu_layers_experts = o->gpu_layers_experts,
                              .reserve_bytes = cuda_state_device_bytes(e.sm.m, o->ctx_alloc)};
        ds4_status st = cuda_model_open_ex(&e.cm, e.sm.m, e.sm.g, 0, &co, sp, e.sm.n_q, &err);
        free(sp);
        if (st || cuda_state_create(&e.cs, e.cm, e.st, &err)) goto out_err;
        if (cuda_model_host_expert_bytes(e.cm))
            fprintf(stderr, "ds4-bench: routed experts of %lld of %u layers in pinned host memory (%.2f GiB, read "
                    "over PCIe); %.2f GiB of weights on the device\n",
                    (long long)(e.sm.shape.n_layers - cuda_model_gpu_layers_experts(e.cm)), e.sm.shape.n_layers,
                    (double)cuda_model_host_expert_bytes(e.cm) / (1u << 30),
                    (double)cuda_model_weight_bytes(e.cm) / (1u << 30));
        if (device_blocks_check(&e.sm, e.cm, &err)) goto out_err;
        fprintf(stderr, "ds4-bench: on the GPU in %.2f s (%lld quantized tensors made on the device)\n", now_s() - t1,
                (long long)e.sm.n_q);
    }
#endif
    uint64_t wpt = plan_bytes_per_token(&e.sm);
    fprintf(stderr, "ds4-bench: weights read per decoded token %.2f MB\n", (double)wpt / 1e6);
    tokens = bench_random_tokens(o->seed, o->ctx_max, n_vocab);
    logits = malloc((size_t)n_vocab * sizeof *logits);
    n_front = bench_frontiers(o, &front);
    rows = calloc(n_front ? n_front : 1, sizeof *rows);
    if (!tokens || !logits || !front || !rows) goto out_err;
    if (o->csv_path && !(csv = fopen(o->csv_path, "w"))) {
        fprintf(stderr, "ds4-bench: cannot create %s\n", o->csv_path);
        csv = stdout;
        goto out;
    }
    bench_csv_header(csv);
    if (o->profile_prefill && e.cuda && eng_save(&e, &snap0, &snap0_bytes, &err)) goto out_err;
    uint32_t prev = 0;
    for (uint32_t fi = 0; fi < n_front; fi++) {
        bench_row *r = &rows[fi];
        r->ctx_tokens = front[fi];
        r->prefill_tokens = front[fi] - prev;
        double a = now_s();
        for (uint32_t at = prev; at < front[fi];) {
            uint32_t n = front[fi] - at < o->prefill_chunk ? front[fi] - at : o->prefill_chunk;
            if (eng_eval(&e, tokens + at, n, at + n == front[fi] ? logits : NULL, &err)) goto out_err;
            at += n;
        }
        double dt = now_s() - a;
        r->prefill_tps = dt > 0 ? r->prefill_tokens / dt : 0;
        int32_t next;
        if (!logits_sane(logits, n_vocab, &next)) {
            fprintf(stderr, "ds4-bench: the synthetic model's logits are not finite or all equal\n");
            goto out;
        }
        uint8_t *snap = NULL;
        size_t snap_bytes = 0;
        if (eng_save(&e, &snap, &snap_bytes, &err)) {
            free(snap);
            goto out_err;
        }
        r->kvcache_bytes = snap_bytes;
        r->gen_tokens = o->gen_tokens;
        int32_t last = -1, first = next;
        distinct = 0;
        a = now_s();
        for (uint32_t g = 0; g < o->gen_tokens; g++) {
            int32_t tok = next;
            if (eng_greedy(&e, tok, logits, n_vocab, &next, &err)) {
                free(snap);
                goto out_err;
            }
            distinct += tok != last;
            last = tok;
        }
        dt = now_s() - a;
        r->gen_tps = dt > 0 && o->gen_tokens ? o->gen_tokens / dt : 0;
        if (o->sample && gen_sampled(&e, o, r->ctx_tokens, snap, snap_bytes, first, logits, n_vocab, &err)) {
            free(snap);
            goto out_err;
        }
        ds4_status st = eng_load(&e, snap, snap_bytes, &err);
        free(snap);
        if (st) goto out_err;
        bench_csv_row(csv, r);
        fprintf(stderr, "ds4-bench: ctx %6u  prefill %6u tok %9.2f tok/s  gen %4u tok %8.2f tok/s (%u token changes)  "
                "%.1f GB/s of weights\n", r->ctx_tokens, r->prefill_tokens, r->prefill_tps, r->gen_tokens, r->gen_tps,
                distinct, r->gen_tps * (double)wpt / 1e9);
        prev = front[fi];
    }
    if (o->svg_path && bench_write_svg(o->svg_path, o->title ? o->title : o->synthetic, rows, n_front)) goto out;
#ifdef DS4_CUDA
    if (o->profile_steps && e.cuda) { /* profile.c: decode steps after the last frontier */
        int32_t *pt = bench_random_tokens(o->seed + 1, 4 * o->profile_steps, n_vocab);
        int bad = !pt || bench_profile_cuda(e.cm, e.cs, pt, o->profile_steps, n_vocab, (double)wpt);
        free(pt);
        if (bad) goto out;
    }
    if (o->profile_prefill && e.cuda && snap0) { /* profile.c: the first chunk again, from position 0 */
        uint32_t n = o->prefill_chunk < o->ctx_max ? o->prefill_chunk : o->ctx_max;
        if (eng_load(&e, snap0, snap0_bytes, &err)) goto out_err;
        if (bench_profile_prefill_cuda(e.cm, e.cs, tokens, n)) goto out;
    }
#endif
    rc = 0;
    goto out;
out_err:
    fprintf(stderr, "ds4-bench: %s\n", err.msg[0] ? err.msg : "out of memory");
out:
    if (csv != stdout && fclose(csv) != 0) rc = 1;
    free(rows);
    free(snap0);
    free(front);
    free(tokens);
    free(logits);
#ifdef DS4_CUDA
    cuda_state_free(e.cs);
    cuda_model_close(e.cm);
#endif
    model_state_free(e.st);
    synth_close(&e.sm);
    return rc;
}
