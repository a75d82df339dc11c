/* tests/test_model_util.c — see test_model_util.h. */
#include "test_model_util.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/convert.h"
#include "testutil.h"

char *tm_convert_tiny(const char *preset) {
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
    model_options o = {0, topk_override};
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
