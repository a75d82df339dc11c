/*
 * model/convert.c — the conversion driver (GGUF_LAYOUT §5.4): metadata, tensor directory,
 * then every planned tensor streamed from a source through the row encoders into the GGUF
 * writer, in directory order.
 *
 * Design notes:
 *  1. Memory is bounded by slabs: a routed-expert tensor is converted one expert per slab
 *     (the importance fallback needs the whole expert matrix, §5.5); any other tensor in row
 *     slabs of about SLAB_ELEMS values. At most 2 x threads slabs are alive at once.
 *  2. Slabs of a batch are decoded and encoded in parallel (core/threadpool.h), then written
 *     in order, so the output does not depend on the thread count.
 *  3. IQ2_XXS needs importance (§5.5): the imatrix entry when there is one, else the synthetic
 *     Σ_rows w² per matrix (per expert), summed in row order. Q2_K/Q4_K use the imatrix when
 *     present, else their unweighted encoders. Other types ignore importance.
 */
#include "model/convert.h"
#include "core/error.h"
#include "core/threadpool.h"
#include "format/quant.h"
#include "format/types.h"
#include "model/convert_imatrix.h"
#include "model/convert_tokenizer.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLAB_ELEMS (1u << 20)

typedef struct slab {
    uint32_t expert;
    uint64_t row0, n_rows;
    float *f32;          /* n_rows x ne0 */
    uint8_t *out;        /* n_rows x row_bytes */
    float *imp;          /* per-expert importance scratch (ne0) */
    ds4_status st;
    ds4_error err;
} slab;

typedef struct job {
    const cv_tensor *t;
    cv_source *src;
    const cv_imatrix *im;
    const float *imp_all; /* non-expert tensors: importance shared by every row, or NULL */
    uint64_t row_bytes;
    slab *slabs;
} job;

static void log_msg(const cv_options *o, const char *fmt, ...) DS4_PRINTF(2, 3);
static void log_msg(const cv_options *o, const char *fmt, ...) {
    if (!o || !o->log) return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    o->log(o->ud, buf);
}

static ds4_status encode_rows(const job *j, slab *s, const float *imp) {
    const cv_tensor *t = j->t;
    for (uint64_t r = 0; r < s->n_rows; r++) {
        ds4_status st = q_encode_row((int)t->type, s->f32 + r * t->ne[0], s->out + r * j->row_bytes,
                                     t->ne[0], imp, &s->err);
        if (st) return ds4_err_prefix(&s->err, "convert: %s row %llu", t->name,
                                      (unsigned long long)(s->row0 + r));
    }
    return DS4_OK;
}

static void run_slab(job *j, slab *s) {
    const cv_tensor *t = j->t;
    s->st = j->src->read_rows(j->src->ctx, t, s->expert, s->row0, s->n_rows, s->f32, &s->err);
    if (s->st) return;
    const float *imp = j->imp_all;
    if (t->src == CV_SRC_EXPERTS && (t->type == DS4_TYPE_IQ2_XXS || t->type == DS4_TYPE_Q2_K ||
                                     t->type == DS4_TYPE_Q4_K)) {
        imp = NULL;
        if (j->im) {
            char hf[CV_NAME_MAX + 16];
            snprintf(hf, sizeof hf, t->hf, s->expert);
            s->st = cv_imatrix_find(j->im, t->name, hf, s->expert, t->ne[2], t->ne[0], &imp, &s->err);
            if (s->st) return;
        }
        if (!imp && t->type == DS4_TYPE_IQ2_XXS) {
            q_importance_fallback(s->f32, s->n_rows, t->ne[0], s->imp);
            imp = s->imp;
        }
    }
    s->st = encode_rows(j, s, imp);
}

static void slab_worker(void *ctx, int64_t begin, int64_t end, int thread_idx) {
    (void)thread_idx;
    job *j = ctx;
    for (int64_t i = begin; i < end; i++) run_slab(j, &j->slabs[i]);
}

/* Importance shared by all rows of a non-expert quantized tensor (design note 3). */
static ds4_status tensor_importance(const cv_tensor *t, cv_source *src, const cv_imatrix *im,
                                    float **out, ds4_error *err) {
    *out = NULL;
    bool k = t->type == DS4_TYPE_IQ2_XXS || t->type == DS4_TYPE_Q2_K || t->type == DS4_TYPE_Q4_K;
    if (!k) return DS4_OK;
    const float *found = NULL;
    if (im) {
        ds4_status st = cv_imatrix_find(im, t->name, t->hf, 0, 0, t->ne[0], &found, err);
        if (st) return st;
    }
    if (!found && t->type != DS4_TYPE_IQ2_XXS) return DS4_OK;
    float *imp = calloc(t->ne[0], sizeof *imp);
    if (!imp) return ds4_seterr(err, DS4_ERR_NOMEM, "convert: out of memory");
    if (found) {
        memcpy(imp, found, t->ne[0] * sizeof *imp);
        *out = imp;
        return DS4_OK;
    }
    uint64_t rows = t->ne[1] * t->ne[2], chunk = SLAB_ELEMS / t->ne[0] ? SLAB_ELEMS / t->ne[0] : 1;
    float *buf = malloc(chunk * t->ne[0] * sizeof *buf);
    if (!buf) {
        free(imp);
        return ds4_seterr(err, DS4_ERR_NOMEM, "convert: out of memory");
    }
    for (uint64_t r0 = 0; r0 < rows; r0 += chunk) {
        uint64_t n = rows - r0 < chunk ? rows - r0 : chunk;
        ds4_status st = src->read_rows(src->ctx, t, 0, r0, n, buf, err);
        if (st) {
            free(buf);
            free(imp);
            return st;
        }
        for (uint64_t r = 0; r < n; r++)
            for (uint64_t c = 0; c < t->ne[0]; c++) {
                float v = buf[r * t->ne[0] + c];
                imp[c] += v * v;
            }
    }
    free(buf);
    *out = imp;
    return DS4_OK;
}

typedef struct run_state {
    gguf_writer *w;
    ds4_pool *pool;
    int n_threads;
    const cv_options *opts;
    cv_progress prog;
    cv_source *src;
} run_state;

static void report(run_state *rs) {
    if (!rs->opts || !rs->opts->progress) return;
    rs->prog.input_bytes = rs->src->bytes_read ? rs->src->bytes_read(rs->src->ctx) : 0;
    rs->opts->progress(rs->opts->ud, &rs->prog);
}

static ds4_status write_table(run_state *rs, const cv_tensor *t, ds4_error *err) {
    uint64_t n = t->ne[0] * t->ne[1];
    int32_t *tab = malloc(n * sizeof *tab);
    if (!tab) return ds4_seterr(err, DS4_ERR_NOMEM, "convert: out of memory");
    ds4_status st = rs->src->read_table(rs->src->ctx, t, tab, err);
    if (!st) st = gguf_writer_write(rs->w, tab, n * sizeof *tab, err);
    free(tab);
    rs->prog.bytes_written += n * sizeof *tab;
    return st;
}

static ds4_status write_tensor(run_state *rs, const cv_tensor *t, ds4_error *err) {
    rs->prog.current = t->name;
    if (t->src == CV_SRC_TID2EID) return write_table(rs, t, err);
    job j = {.t = t, .src = rs->src, .im = rs->opts ? rs->opts->imatrix : NULL};
    ds4_status st = ds4_type_row_bytes(t->type, t->ne[0], &j.row_bytes, err);
    if (st) return ds4_err_prefix(err, "convert: %s", t->name);
    bool experts = t->src == CV_SRC_EXPERTS;
    float *imp_all = NULL;
    if (!experts) {
        st = tensor_importance(t, rs->src, j.im, &imp_all, err);
        if (st) return st;
        j.imp_all = imp_all;
    }
    /* Slab geometry (design note 1). */
    uint64_t rows_per_unit = experts ? t->ne[1] : t->ne[1] * t->ne[2];
    uint64_t slab_rows = experts ? t->ne[1] : (SLAB_ELEMS / t->ne[0] ? SLAB_ELEMS / t->ne[0] : 1);
    if (slab_rows > rows_per_unit) slab_rows = rows_per_unit;
    uint64_t n_units = experts ? t->ne[2] : 1;
    uint64_t slabs_per_unit = (rows_per_unit + slab_rows - 1) / slab_rows;
    uint64_t total = n_units * slabs_per_unit;
    uint64_t batch = (uint64_t)rs->n_threads * (experts ? 1 : 2);
    if (batch > total) batch = total;
    j.slabs = calloc(batch, sizeof *j.slabs);
    if (!j.slabs) {
        free(imp_all);
        return ds4_seterr(err, DS4_ERR_NOMEM, "convert: out of memory");
    }
    for (uint64_t i = 0; i < batch && !st; i++) {
        slab *s = &j.slabs[i];
        s->f32 = malloc(slab_rows * t->ne[0] * sizeof(float));
        s->out = malloc(slab_rows * j.row_bytes);
        s->imp = experts ? malloc(t->ne[0] * sizeof(float)) : NULL;
        if (!s->f32 || !s->out || (experts && !s->imp))
            st = ds4_seterr(err, DS4_ERR_NOMEM, "convert: %s: out of memory for %llu-row slabs",
                            t->name, (unsigned long long)slab_rows);
    }
    for (uint64_t next = 0; next < total && !st; next += batch) {
        uint64_t n = total - next < batch ? total - next : batch;
        for (uint64_t i = 0; i < n; i++) {
            slab *s = &j.slabs[i];
            uint64_t g = next + i;
            s->expert = (uint32_t)(g / slabs_per_unit);
            s->row0 = (g % slabs_per_unit) * slab_rows;
            s->n_rows = rows_per_unit - s->row0 < slab_rows ? rows_per_unit - s->row0 : slab_rows;
            s->st = DS4_OK;
        }
        ds4_pool_run(rs->pool, (int64_t)n, 1, slab_worker, &j);
        for (uint64_t i = 0; i < n && !st; i++) {
            slab *s = &j.slabs[i];
            if (s->st) {
                *err = s->err;
                st = s->st;
                break;
            }
            st = gguf_writer_write(rs->w, s->out, s->n_rows * j.row_bytes, err);
            rs->prog.bytes_written += s->n_rows * j.row_bytes;
        }
        report(rs);
    }
    for (uint64_t i = 0; i < batch; i++) {
        free(j.slabs[i].f32);
        free(j.slabs[i].out);
        free(j.slabs[i].imp);
    }
    free(j.slabs);
    free(imp_all);
    return st;
}

/* Metadata + directory on a writer (shared by cv_convert and cv_plan_file_bytes). */
static ds4_status add_header(gguf_writer *w, const cv_shape *s, const cv_plan *plan,
                             const cv_policy *pol, const cv_options *opts, ds4_error *err) {
    ds4_status st = cv_write_metadata(w, s, pol->file_type, err);
    if (st) return st;
    if (opts && opts->tokenizer_json) {
        uint32_t n_tok = 0;
        st = cv_tokenizer_write(w, opts->tokenizer_json, &n_tok, err);
        if (st) return st;
        if (n_tok != s->vocab)
            log_msg(opts, "note: tokenizer has %u tokens, the model's vocab_size is %u", n_tok,
                    s->vocab);
    }
    if (opts && opts->imatrix) {
        /* Provenance (GGUF_LAYOUT §2.4). */
        const cv_imatrix *im = opts->imatrix;
        if ((st = gguf_writer_add_str(w, "quantize.imatrix.file", cv_imatrix_path(im), err)) ||
            (st = gguf_writer_add_u64(w, "quantize.imatrix.entries_count", cv_imatrix_count(im), err)))
            return st;
        if (cv_imatrix_dataset(im) &&
            (st = gguf_writer_add_str(w, "quantize.imatrix.dataset", cv_imatrix_dataset(im), err)))
            return st;
        if (cv_imatrix_chunks(im) &&
            (st = gguf_writer_add_u64(w, "quantize.imatrix.chunks_count", cv_imatrix_chunks(im), err)))
            return st;
    }
    for (uint64_t i = 0; i < plan->n; i++) {
        const cv_tensor *t = &plan->t[i];
        st = gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, err);
        if (st) return st;
        uint64_t nb, off;
        st = gguf_writer_tensor_layout(w, i, &nb, &off, err);
        if (st) return st;
        if (nb != t->n_bytes)
            return ds4_seterr(err, DS4_ERR_INTERNAL, "convert: %s: planned %llu bytes, writer says %llu",
                              t->name, (unsigned long long)t->n_bytes, (unsigned long long)nb);
    }
    return DS4_OK;
}

ds4_status cv_plan_file_bytes(const cv_shape *s, const cv_plan *plan, const cv_policy *pol,
                              const cv_options *opts, uint64_t *out, ds4_error *err) {
    gguf_writer *w;
    ds4_status st = gguf_writer_create_mem(&w, err);
    if (st) return st;
    cv_options quiet = opts ? *opts : (cv_options){0};
    quiet.log = NULL;
    st = add_header(w, s, plan, pol, &quiet, err);
    if (!st) st = gguf_writer_total_bytes(w, out, err);
    gguf_writer_free(w);
    return st;
}

ds4_status cv_convert(const char *out_path, const cv_shape *s, const cv_plan *plan,
                      const cv_policy *pol, cv_source *src, const cv_options *opts,
                      ds4_error *err) {
    run_state rs = {.opts = opts, .src = src};
    rs.n_threads = opts && opts->n_threads > 0 ? opts->n_threads : ds4_cpu_count();
    for (uint64_t i = 0; i < plan->n; i++) {
        const cv_tensor *t = &plan->t[i];
        if (t->type != t->wanted)
            log_msg(opts, "note: %s: row length %llu does not fit %s blocks of %u; using %s", t->name,
                    (unsigned long long)t->ne[0], ds4_type_name(t->wanted),
                    ds4_type_block_elems(t->wanted), ds4_type_name(t->type));
    }
    ds4_status st = ds4_pool_create(&rs.pool, rs.n_threads, err);
    if (st) return st;
    st = gguf_writer_create(&rs.w, out_path, err);
    if (st) goto out_pool;
    st = add_header(rs.w, s, plan, pol, opts, err);
    if (!st) st = gguf_writer_write_header(rs.w, err);
    rs.prog.n_tensors = plan->n;
    for (uint64_t i = 0; i < plan->n; i++) rs.prog.bytes_total += plan->t[i].n_bytes;
    for (uint64_t i = 0; i < plan->n && !st; i++) {
        st = write_tensor(&rs, &plan->t[i], err);
        rs.prog.tensors_done = i + 1;
        report(&rs);
    }
    if (!st) st = gguf_writer_finish(rs.w, err);
    gguf_writer_free(rs.w);
out_pool:
    ds4_pool_free(rs.pool);
    return st;
}
