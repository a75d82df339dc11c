/* tests/test_model_util.c — see test_model_util.h. */
#include "test_model_util.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "format/gguf_write.h"
#include "format/quant.h"
#include "model/convert.h"
#include "model/synthetic.h"
#include "testutil.h"

char *tm_convert_tiny(const char *preset) { return tm_convert_tiny_ex(preset, NULL); }

char *tm_convert_tiny_ex(const char *preset, const char *override) {
    ds4_error err = {0};
    cv_shape s;
    cv_hf *hf;
    cv_preset pr;
    cv_policy pol;
    cv_plan plan;
    char *dir = tu_shared_path("testdata/tiny-v4");
    cr_assert_eq(cv_hf_open(&hf, dir, &s, &err), DS4_OK, "open tiny-v4: %s", err.msg);
    cr_assert_eq(cv_preset_from_name(preset, &pr, &err), DS4_OK, "%s", err.msg);
    cv_policy_init(&pol, pr);
    if (override)
        cr_assert_eq(cv_policy_override(&pol, override, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(cv_plan_build(&plan, &s, &pol, cv_hf_has_mtp(hf), &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(cv_hf_check_plan(hf, &plan, &err), DS4_OK, "%s", err.msg);
    cv_source src;
    cv_hf_source(hf, &src);
    cv_options o = {0};
    o.n_threads = 2;
    char *tmp = tu_tmpdir();
    char name[64];
    snprintf(name, sizeof name, "tiny-%s.gguf", preset);
    char *out = tu_join(tmp, name);
    cr_assert_eq(cv_convert(out, &s, &plan, &pol, &src, &o, &err), DS4_OK, "convert %s: %s",
                 preset, err.msg);
    cv_plan_free(&plan);
    cv_hf_close(hf);
    free(tmp);
    free(dir);
    return out;
}

void tm_open(tm_model *tm, const char *path, int64_t topk_override) {
    ds4_error err = {0};
    cr_assert_eq(gguf_open(&tm->g, path, &err), DS4_OK, "gguf_open %s: %s", path, err.msg);
    model_options o = {.idx_topk_override = topk_override};
    cr_assert_eq(model_open(&tm->m, tm->g, &o, &err), DS4_OK, "model_open %s: %s", path, err.msg);
}

void tm_close(tm_model *tm) {
    model_close(tm->m);
    gguf_close(tm->g);
    tm->m = NULL;
    tm->g = NULL;
}

st_file *tm_golden(const char *file) {
    char rel[128];
    snprintf(rel, sizeof rel, "testdata/tiny-v4/%s", file);
    char *p = tu_shared_path(rel);
    st_file *f = NULL;
    ds4_error err = {0};
    cr_assert_eq(st_open(&f, p, &err), DS4_OK, "open %s: %s", p, err.msg);
    free(p);
    return f;
}

const st_tensor *tm_tensor(st_file *f, const char *name, int dtype) {
    const st_tensor *t = st_find(f, name);
    cr_assert(t != NULL, "golden tensor '%s' missing", name);
    cr_assert_eq((int)t->dtype, dtype, "golden tensor '%s': dtype %s", name, st_dtype_name(t->dtype));
    return t;
}

const float *tm_f32(st_file *f, const char *name, uint64_t *n) {
    const st_tensor *t = tm_tensor(f, name, ST_F32);
    if (n) *n = t->n_elements;
    return (const float *)t->data;
}

const int32_t *tm_i32(st_file *f, const char *name, uint64_t *n) {
    const st_tensor *t = tm_tensor(f, name, ST_I32);
    if (n) *n = t->n_elements;
    return (const int32_t *)t->data;
}

double tm_max_abs(const float *a, const float *b, int64_t n, int64_t *at) {
    double mx = 0;
    int64_t w = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= mx)) { mx = d; w = i; } /* NaN counts as worst */
    }
    if (at) *at = w;
    return mx;
}

int32_t tm_argmax(const float *row, int64_t n) {
    int32_t b = 0;
    for (int64_t i = 1; i < n; i++) if (row[i] > row[b]) b = (int32_t)i;
    return b;
}

/* keep(name): 1 keep, 0 drop. mode 0: drop `skip`; 1: drop mtp.*; 2: keep only mtp.*. */
static bool keep_tensor(const char *name, const char *skip, int mode) {
    bool mtp = strncmp(name, "mtp.", 4) == 0;
    if (mode == 1) return !mtp;
    if (mode == 2) return mtp;
    return !(skip && !strcmp(name, skip));
}

static void rewrite(const char *src, const char *dst, bool to_f32, const char *skip, int mode,
                    const char *u32_key, uint32_t u32_val);

void tm_rewrite_gguf(const char *src, const char *dst, bool to_f32, const char *skip,
                     const char *u32_key, uint32_t u32_val) {
    rewrite(src, dst, to_f32, skip, 0, u32_key, u32_val);
}

void tm_split_mtp(const char *src, const char *main_dst, const char *mtp_dst) {
    rewrite(src, main_dst, false, NULL, 1, NULL, 0);
    rewrite(src, mtp_dst, false, NULL, 2, NULL, 0);
}

static void rewrite(const char *src, const char *dst, bool to_f32, const char *skip, int mode,
                    const char *u32_key, uint32_t u32_val) {
    ds4_error err = {0};
    gguf_ctx *g;
    cr_assert_eq(gguf_open(&g, src, &err), DS4_OK, "%s", err.msg);
    gguf_writer *w;
    cr_assert_eq(gguf_writer_create(&w, dst, &err), DS4_OK, "%s", err.msg);
    for (uint64_t i = 0; i < gguf_n_kv(g); i++) {
        const char *k = gguf_kv_key(g, i);
        if (u32_key && !strcmp(k, u32_key))
            cr_assert_eq(gguf_writer_add_u32(w, k, u32_val, &err), DS4_OK, "%s", err.msg);
        else
            cr_assert_eq(gguf_writer_add_value(w, k, gguf_kv_value(g, i), &err), DS4_OK, "%s", err.msg);
    }
    for (uint64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        if (!keep_tensor(t->name, skip, mode)) continue;
        uint32_t ty = to_f32 && q_type_is_weight((int)t->type) ? DS4_TYPE_F32 : t->type;
        cr_assert_eq(gguf_writer_add_tensor(w, t->name, ty, t->n_dims, t->ne, &err), DS4_OK, "%s",
                     err.msg);
    }
    cr_assert_eq(gguf_writer_write_header(w, &err), DS4_OK, "%s", err.msg);
    for (uint64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        if (!keep_tensor(t->name, skip, mode)) continue;
        if (to_f32 && q_type_is_weight((int)t->type)) {
            /* Decode row by row (rows of ne0 values, GGUF_LAYOUT §1.3). */
            uint64_t rows = t->n_elements / t->ne[0], rb = t->n_bytes / rows;
            float *buf = malloc(t->ne[0] * sizeof(float));
            for (uint64_t r = 0; r < rows; r++) {
                cr_assert_eq(q_decode_row((int)t->type, (const uint8_t *)t->data + r * rb, buf,
                                          t->ne[0], &err), DS4_OK, "%s", err.msg);
                cr_assert_eq(gguf_writer_write(w, buf, t->ne[0] * sizeof(float), &err), DS4_OK,
                             "%s", err.msg);
            }
            free(buf);
        } else {
            cr_assert_eq(gguf_writer_write(w, t->data, t->n_bytes, &err), DS4_OK, "%s", err.msg);
        }
    }
    cr_assert_eq(gguf_writer_finish(w, &err), DS4_OK, "%s", err.msg);
    gguf_writer_free(w);
    gguf_close(g);
}

char *tm_convert_synthetic(const char *shape_name, const char *preset, uint32_t n_layers,
                           uint32_t n_experts, uint64_t seed) {
    ds4_error err = {0};
    cv_shape s;
    size_t n = strlen(shape_name);
    if (n > 5 && !strcmp(shape_name + n - 5, ".json"))
        cr_assert_eq(cv_shape_from_config(&s, shape_name, &err), DS4_OK, "%s", err.msg);
    else
        cr_assert_eq(cv_shape_preset(&s, shape_name, &err), DS4_OK, "%s", err.msg);
    s.n_mtp = 0;
    cr_assert_eq(cv_shape_shrink(&s, n_layers, n_experts, &err), DS4_OK, "%s", err.msg);
    cv_preset pr;
    cv_policy pol;
    cv_plan plan;
    cr_assert_eq(cv_preset_from_name(preset, &pr, &err), DS4_OK, "%s", err.msg);
    cv_policy_init(&pol, pr);
    cr_assert_eq(cv_plan_build(&plan, &s, &pol, false, &err), DS4_OK, "%s", err.msg);
    cv_synth *sy;
    cr_assert_eq(cv_synth_create(&sy, &plan, seed, &err), DS4_OK, "%s", err.msg);
    cv_source src;
    cv_synth_source(sy, &src);
    cv_options o = {0};
    o.n_threads = 2;
    char *tmp = tu_tmpdir();
    char name[64];
    snprintf(name, sizeof name, "synth-%s.gguf", preset);
    char *out = tu_join(tmp, name);
    cr_assert_eq(cv_convert(out, &s, &plan, &pol, &src, &o, &err), DS4_OK, "convert: %s", err.msg);
    cv_synth_free(sy);
    cv_plan_free(&plan);
    free(tmp);
    return out;
}

void tm_remove(char *path) {
    if (!path) return;
    unlink(path);
    char *slash = strrchr(path, '/');
    if (slash) {
        *slash = 0;
        rmdir(path); /* only succeeds when empty */
    }
    free(path);
}

void tm_rmdir(char *dir) {
    if (!dir) return;
    rmdir(dir);
    free(dir);
}
