/* tests/test_gguf.c — type table, GGUF writer -> reader round trips, typed getters, writer
 * misuse. Malformed-file tests are in test_gguf_bad.c. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "format/gguf.h"
#include "format/gguf_write.h"
#include "format/types.h"
#include "testutil.h"

#define OK(call)                                                                 \
    do {                                                                         \
        ds4_error e_ = {0};                                                      \
        ds4_error *err = &e_;                                                    \
        ds4_status st_ = (call);                                                 \
        cr_assert_eq(st_, DS4_OK, "%s failed: %s", #call, e_.msg);               \
        (void)err;                                                               \
    } while (0)

/* ---- Type table ------------------------------------------------------------------------- */

Test(gguf_types, table_matches_gguf_layout) {
    /* GGUF_LAYOUT §1.5 (ids, block elements, block bytes). */
    struct { uint32_t id; const char *name; uint32_t be, bb; } want[] = {
        {0, "F32", 1, 4}, {1, "F16", 1, 2}, {8, "Q8_0", 32, 34}, {10, "Q2_K", 256, 84},
        {12, "Q4_K", 256, 144}, {15, "Q8_K", 256, 292}, {16, "IQ2_XXS", 256, 66},
        {24, "I8", 1, 1}, {25, "I16", 1, 2}, {26, "I32", 1, 4}, {27, "I64", 1, 8},
        {28, "F64", 1, 8}, {30, "BF16", 1, 2},
    };
    int n_known = 0;
    for (uint32_t id = 0; id < 64; id++) n_known += ds4_type_known(id);
    cr_assert_eq(n_known, (int)(sizeof want / sizeof want[0]), "known ids: %d", n_known);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        cr_assert(ds4_type_known(want[i].id), "id %u", want[i].id);
        cr_assert_str_eq(ds4_type_name(want[i].id), want[i].name);
        cr_assert_eq(ds4_type_block_elems(want[i].id), want[i].be, "%s", want[i].name);
        cr_assert_eq(ds4_type_block_bytes(want[i].id), want[i].bb, "%s", want[i].name);
        ds4_type t;
        cr_assert(ds4_type_from_name(want[i].name, &t));
        cr_assert_eq((uint32_t)t, want[i].id);
    }
    ds4_type t;
    cr_assert(ds4_type_from_name("iq2_xxs", &t) && t == DS4_TYPE_IQ2_XXS);
    cr_assert_not(ds4_type_from_name("Q4_0", &t));
    cr_assert_str_eq(ds4_type_name(2), "unknown");   /* Q4_0: not in ds4's set */
    cr_assert_null(ds4_type_get(99));
}

Test(gguf_types, row_and_tensor_bytes_are_checked) {
    uint64_t out = 0;
    ds4_error e;
    cr_assert_eq(ds4_type_row_bytes(DS4_TYPE_IQ2_XXS, 4096, &out, &e), DS4_OK);
    cr_assert_eq(out, 16 * 66);   /* GGUF_LAYOUT §3.5: 16 blocks of 66 */
    cr_assert_eq(ds4_type_row_bytes(DS4_TYPE_Q8_0, 33, &out, &e), DS4_ERR_FORMAT);
    cr_assert(strstr(e.msg, "Q8_0") && strstr(e.msg, "33") && strstr(e.msg, "multiple"), "%s", e.msg);
    cr_assert_eq(ds4_type_row_bytes(77, 32, &out, &e), DS4_ERR_UNSUPPORTED);
    cr_assert(strstr(e.msg, "77"), "%s", e.msg);
    cr_assert_eq(ds4_type_row_bytes(DS4_TYPE_F64, 1ull << 62, &out, &e), DS4_ERR_FORMAT);

    uint64_t ne[3] = {2048, 4096, 256};
    cr_assert_eq(ds4_tensor_bytes(DS4_TYPE_Q2_K, ne, 3, &out, &e), DS4_OK, "%s", e.msg);
    cr_assert_eq(out, 704643072ull);   /* GGUF_LAYOUT §3.5 table */
    uint64_t big[2] = {1ull << 32, 1ull << 32};
    cr_assert_eq(ds4_tensor_bytes(DS4_TYPE_I8, big, 2, &out, &e), DS4_ERR_FORMAT);
    cr_assert(strstr(e.msg, "overflow"), "%s", e.msg);
    /* Q2_K bytes fit but the element count overflows. */
    uint64_t many[3] = {256, 1ull << 40, 1ull << 20};
    cr_assert_eq(ds4_tensor_bytes(DS4_TYPE_Q2_K, many, 3, &out, &e), DS4_ERR_FORMAT);
    uint64_t zero[2] = {32, 0};
    cr_assert_eq(ds4_tensor_bytes(DS4_TYPE_F32, zero, 2, &out, &e), DS4_ERR_FORMAT);
    cr_assert(strstr(e.msg, "ne[1]"), "%s", e.msg);
    cr_assert_eq(ds4_tensor_bytes(DS4_TYPE_F32, ne, 0, &out, &e), DS4_ERR_FORMAT);
    cr_assert_eq(ds4_tensor_bytes(DS4_TYPE_F32, ne, 9, &out, &e), DS4_ERR_FORMAT);
}

/* ---- Round trip -------------------------------------------------------------------------- */

typedef struct tdef {
    const char *name;
    uint32_t type, n_dims;
    uint64_t ne[4];
} tdef;

static const tdef TENSORS[] = {
    {"f32.vec", DS4_TYPE_F32, 1, {7}},
    {"blk.0.f16", DS4_TYPE_F16, 2, {3, 5}},
    {"blk.0.q8", DS4_TYPE_Q8_0, 2, {64, 3}},
    {"blk.1.ffn_down_exps.weight", DS4_TYPE_Q2_K, 3, {256, 2, 2}},
    {"iq2", DS4_TYPE_IQ2_XXS, 1, {256}},
    {"q4k", DS4_TYPE_Q4_K, 2, {512, 1}},
    {"tid2eid", DS4_TYPE_I32, 2, {6, 4}},
    {"bf16.4d", DS4_TYPE_BF16, 4, {2, 1, 3, 1}},
};
#define N_TENSORS (sizeof TENSORS / sizeof TENSORS[0])

static uint8_t *pattern(uint64_t n, uint32_t seed) {
    uint8_t *p = malloc(n ? n : 1);
    uint32_t x = seed * 2654435761u + 1;
    for (uint64_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        p[i] = (uint8_t)(x >> 24);
    }
    return p;
}

static uint64_t tensor_bytes(const tdef *t) {
    uint64_t n;
    ds4_error e;
    cr_assert_eq(ds4_tensor_bytes(t->type, t->ne, t->n_dims, &n, &e), DS4_OK, "%s", e.msg);
    return n;
}

/* Nested value: ARRAY of 2 ARRAYs of UINT32 ({1,2} and {}), hand-encoded. */
static const uint8_t NESTED_U32[] = {
    9, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0,                    /* ARRAY of 2 ARRAYs */
    4, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0,   /* [1, 2] */
    4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,                    /* [] */
};

/* `depth` nested single-element arrays around one STRING "x". */
static uint8_t *nested_encoding(int depth, uint64_t *n) {
    uint8_t *p = malloc(12 * (size_t)depth + 9);
    size_t o = 0;
    for (int d = 0; d < depth; d++) {
        uint32_t et = d + 1 < depth ? GGUF_TYPE_ARRAY : GGUF_TYPE_STRING;
        uint64_t one = 1;
        memcpy(p + o, &et, 4);
        memcpy(p + o + 4, &one, 8);
        o += 12;
    }
    uint64_t len = 1;
    memcpy(p + o, &len, 8);
    p[o + 8] = 'x';
    *n = o + 9;
    return p;
}

/* Writes the reference file through `w` (metadata of every type, the tensors, alignment 64),
 * streaming the data in chunks of `chunk` bytes (0 = one write_tensor call per tensor). */
static void write_reference(gguf_writer *w, uint64_t chunk) {
    OK(gguf_writer_add_str(w, "general.architecture", "deepseek4", err));
    OK(gguf_writer_add_u32(w, "general.alignment", 64, err));
    OK(gguf_writer_add_u8(w, "t.u8", 200, err));
    OK(gguf_writer_add_i8(w, "t.i8", -100, err));
    OK(gguf_writer_add_u16(w, "t.u16", 60000, err));
    OK(gguf_writer_add_i16(w, "t.i16", -30000, err));
    OK(gguf_writer_add_u32(w, "t.u32", 4000000000u, err));
    OK(gguf_writer_add_i32(w, "t.i32", -2000000000, err));
    OK(gguf_writer_add_f32(w, "t.f32", 1e-6f, err));
    OK(gguf_writer_add_bool(w, "t.true", true, err));
    OK(gguf_writer_add_bool(w, "t.false", false, err));
    OK(gguf_writer_add_str(w, "t.empty", "", err));
    OK(gguf_writer_add_strn(w, "t.bytes", "a\0b\xff", 4, err));
    OK(gguf_writer_add_u64(w, "t.u64", 0xFEDCBA9876543210ull, err));
    OK(gguf_writer_add_i64(w, "t.i64", INT64_MIN, err));
    OK(gguf_writer_add_f64(w, "t.f64", -0.1, err));
    const uint8_t a_u8[] = {0, 255, 7};
    const int8_t a_i8[] = {-128, 127};
    const uint16_t a_u16[] = {1, 65535};
    const int16_t a_i16[] = {-32768, 5};
    const uint32_t a_u32[] = {0, 0, 4, 128, 4};
    const int32_t a_i32[] = {0, 0, 4, 128, -1};
    const float a_f32[] = {10.0f, -0.5f, INFINITY};
    const uint8_t a_bool[] = {1, 0, 1};
    const uint64_t a_u64[] = {UINT64_MAX};
    const int64_t a_i64[] = {-5, 5};
    const double a_f64[] = {10.0, 1e300};
    OK(gguf_writer_add_arr(w, "a.u8", GGUF_TYPE_UINT8, a_u8, 3, err));
    OK(gguf_writer_add_arr(w, "a.i8", GGUF_TYPE_INT8, a_i8, 2, err));
    OK(gguf_writer_add_arr(w, "a.u16", GGUF_TYPE_UINT16, a_u16, 2, err));
    OK(gguf_writer_add_arr(w, "a.i16", GGUF_TYPE_INT16, a_i16, 2, err));
    OK(gguf_writer_add_arr(w, "a.u32", GGUF_TYPE_UINT32, a_u32, 5, err));
    OK(gguf_writer_add_arr(w, "a.i32", GGUF_TYPE_INT32, a_i32, 5, err));
    OK(gguf_writer_add_arr(w, "a.f32", GGUF_TYPE_FLOAT32, a_f32, 3, err));
    OK(gguf_writer_add_arr(w, "a.bool", GGUF_TYPE_BOOL, a_bool, 3, err));
    OK(gguf_writer_add_arr(w, "a.u64", GGUF_TYPE_UINT64, a_u64, 1, err));
    OK(gguf_writer_add_arr(w, "a.i64", GGUF_TYPE_INT64, a_i64, 2, err));
    OK(gguf_writer_add_arr(w, "a.f64", GGUF_TYPE_FLOAT64, a_f64, 2, err));
    OK(gguf_writer_add_arr(w, "a.empty", GGUF_TYPE_UINT32, NULL, 0, err));
    const char *strs[] = {"<｜begin▁of▁sentence｜>", "", "Ġthe"};
    OK(gguf_writer_add_arr_str(w, "a.str", strs, 3, err));
    OK(gguf_writer_add_arr_str(w, "a.str_empty", NULL, 0, err));
    OK(gguf_writer_add_raw(w, "a.nested", GGUF_TYPE_ARRAY, NESTED_U32, sizeof NESTED_U32, err));
    uint64_t n8;
    uint8_t *deep = nested_encoding(8, &n8);
    OK(gguf_writer_add_raw(w, "a.deep8", GGUF_TYPE_ARRAY, deep, n8, err));
    free(deep);

    for (size_t i = 0; i < N_TENSORS; i++)
        OK(gguf_writer_add_tensor(w, TENSORS[i].name, TENSORS[i].type, TENSORS[i].n_dims,
                                  TENSORS[i].ne, err));
    OK(gguf_writer_write_header(w, err));
    for (size_t i = 0; i < N_TENSORS; i++) {
        uint64_t n = tensor_bytes(&TENSORS[i]);
        uint8_t *d = pattern(n, (uint32_t)i);
        cr_assert_eq(gguf_writer_current_tensor(w), i);
        cr_assert_eq(gguf_writer_current_remaining(w), n);
        if (chunk == 0) {
            OK(gguf_writer_write_tensor(w, TENSORS[i].name, d, n, err));
        } else {
            for (uint64_t o = 0; o < n; o += chunk)
                OK(gguf_writer_write(w, d + o, n - o < chunk ? n - o : chunk, err));
        }
        free(d);
    }
    cr_assert_eq(gguf_writer_current_tensor(w), N_TENSORS);
    OK(gguf_writer_finish(w, err));
}

static void check_reference(const gguf_ctx *g) {
    ds4_error e;
    cr_assert_eq(gguf_version(g), 3);
    cr_assert_eq(gguf_alignment(g), 64);
    cr_assert_eq(gguf_data_offset(g) % 64, 0);
    cr_assert_eq(gguf_n_kv(g), 32);
    cr_assert_str_eq(gguf_kv_key(g, 0), "general.architecture");
    cr_assert_str_eq(gguf_kv_key(g, 31), "a.deep8");
    cr_assert_null(gguf_kv_key(g, 32));
    cr_assert_eq(gguf_find_key(g, "t.u8"), 2);
    cr_assert_eq(gguf_find_key(g, "t.U8"), -1);

    gguf_str s;
    OK(gguf_get_str(g, "general.architecture", &s, err));
    cr_assert(gguf_str_eq(s, "deepseek4"));
    const gguf_value *v = gguf_find_value(g, "t.u8");
    cr_assert_eq(v->type, GGUF_TYPE_UINT8);
    cr_assert_eq(v->raw[0], 200);
    cr_assert_eq((int8_t)gguf_find_value(g, "t.i8")->raw[0], -100);
    uint16_t u16;
    memcpy(&u16, gguf_find_value(g, "t.u16")->raw, 2);
    cr_assert_eq(u16, 60000);
    int16_t i16;
    memcpy(&i16, gguf_find_value(g, "t.i16")->raw, 2);
    cr_assert_eq(i16, -30000);
    uint32_t u32;
    OK(gguf_get_u32(g, "t.u32", &u32, err));
    cr_assert_eq(u32, 4000000000u);
    int32_t i32;
    OK(gguf_get_i32(g, "t.i32", &i32, err));
    cr_assert_eq(i32, -2000000000);
    float f32;
    OK(gguf_get_f32(g, "t.f32", &f32, err));
    cr_assert(tu_f32_bits_equal(f32, 1e-6f));
    bool b;
    OK(gguf_get_bool(g, "t.true", &b, err));
    cr_assert(b);
    OK(gguf_get_bool(g, "t.false", &b, err));
    cr_assert_not(b);
    OK(gguf_get_str(g, "t.empty", &s, err));
    cr_assert_eq(s.len, 0);
    OK(gguf_get_str(g, "t.bytes", &s, err));
    cr_assert(s.len == 4 && memcmp(s.ptr, "a\0b\xff", 4) == 0);
    char *dup;
    cr_assert_eq(gguf_str_dup(s, &dup, &e), DS4_ERR_FORMAT, "embedded NUL must not be copied");
    uint64_t u64;
    OK(gguf_get_u64(g, "t.u64", &u64, err));
    cr_assert_eq(u64, 0xFEDCBA9876543210ull);
    int64_t i64;
    OK(gguf_get_i64(g, "t.i64", &i64, err));
    cr_assert_eq(i64, INT64_MIN);
    double f64;
    OK(gguf_get_f64(g, "t.f64", &f64, err));
    cr_assert_eq(f64, -0.1);

    const gguf_value *a;
    const void *raw;
    uint64_t raw_bytes;
    OK(gguf_get_arr(g, "a.u8", &a, err));
    cr_assert(a->elem_type == GGUF_TYPE_UINT8 && a->n_elems == 3);
    OK(gguf_arr_raw(a, &raw, &raw_bytes, err));
    cr_assert(raw_bytes == 3 && memcmp(raw, (uint8_t[]){0, 255, 7}, 3) == 0);
    OK(gguf_get_arr(g, "a.i8", &a, err));
    OK(gguf_arr_raw(a, &raw, &raw_bytes, err));
    cr_assert(raw_bytes == 2 && memcmp(raw, (int8_t[]){-128, 127}, 2) == 0);
    OK(gguf_get_arr(g, "a.u16", &a, err));
    OK(gguf_arr_raw(a, &raw, &raw_bytes, err));
    cr_assert(raw_bytes == 4 && memcmp(raw, (uint16_t[]){1, 65535}, 4) == 0);
    OK(gguf_get_arr(g, "a.i16", &a, err));
    OK(gguf_arr_raw(a, &raw, &raw_bytes, err));
    cr_assert(raw_bytes == 4 && memcmp(raw, (int16_t[]){-32768, 5}, 4) == 0);
    OK(gguf_get_arr(g, "a.u32", &a, err));
    const uint32_t want_u32[] = {0, 0, 4, 128, 4};
    for (uint64_t i = 0; i < 5; i++) {
        OK(gguf_arr_u32(a, i, &u32, err));
        cr_assert_eq(u32, want_u32[i], "a.u32[%llu]", (unsigned long long)i);
    }
    cr_assert_eq(gguf_arr_u32(a, 5, &u32, &e), DS4_ERR_RANGE);
    cr_assert(strstr(e.msg, "a.u32") && strstr(e.msg, "index 5"), "%s", e.msg);
    OK(gguf_get_arr(g, "a.i32", &a, err));
    const int32_t want_i32[] = {0, 0, 4, 128, -1};
    for (uint64_t i = 0; i < 5; i++) {
        OK(gguf_arr_i32(a, i, &i32, err));
        cr_assert_eq(i32, want_i32[i]);
    }
    OK(gguf_arr_u32(a, 3, &u32, err));   /* INT32 >= 0 reads as u32 (GGUF_LAYOUT §2.1) */
    cr_assert_eq(u32, 128);
    cr_assert_eq(gguf_arr_u32(a, 4, &u32, &e), DS4_ERR_FORMAT);
    cr_assert(strstr(e.msg, "a.i32") && strstr(e.msg, "negative"), "%s", e.msg);
    OK(gguf_get_arr(g, "a.f32", &a, err));
    OK(gguf_arr_f32(a, 1, &f32, err));
    cr_assert(tu_f32_bits_equal(f32, -0.5f));
    OK(gguf_arr_f32(a, 2, &f32, err));
    cr_assert(isinf(f32) && f32 > 0);
    OK(gguf_get_arr(g, "a.bool", &a, err));
    OK(gguf_arr_raw(a, &raw, &raw_bytes, err));
    cr_assert(raw_bytes == 3 && memcmp(raw, (uint8_t[]){1, 0, 1}, 3) == 0);
    OK(gguf_get_arr(g, "a.u64", &a, err));
    OK(gguf_arr_raw(a, &raw, &raw_bytes, err));
    cr_assert(raw_bytes == 8 && memcmp(raw, &(uint64_t){UINT64_MAX}, 8) == 0);
    OK(gguf_get_arr(g, "a.i64", &a, err));
    OK(gguf_arr_raw(a, &raw, &raw_bytes, err));
    cr_assert(raw_bytes == 16 && memcmp(raw, (int64_t[]){-5, 5}, 16) == 0);
    OK(gguf_get_arr(g, "a.f64", &a, err));
    OK(gguf_arr_f64(a, 1, &f64, err));
    cr_assert_eq(f64, 1e300);
    OK(gguf_arr_f32(a, 0, &f32, err));
    cr_assert(tu_f32_bits_equal(f32, 10.0f));
    OK(gguf_get_arr(g, "a.empty", &a, err));
    cr_assert(a->n_elems == 0 && a->elem_type == GGUF_TYPE_UINT32);
    cr_assert_eq(gguf_arr_u32(a, 0, &u32, &e), DS4_ERR_RANGE);

    OK(gguf_get_arr(g, "a.str", &a, err));
    cr_assert_eq(a->n_elems, 3);
    cr_assert_not_null(a->elem_off, "top-level string arrays are indexed");
    const char *want_s[] = {"<｜begin▁of▁sentence｜>", "", "Ġthe"};
    for (uint64_t i = 3; i-- > 0;) {   /* backwards: access is random, not sequential */
        OK(gguf_arr_str(a, i, &s, err));
        cr_assert(gguf_str_eq(s, want_s[i]), "a.str[%llu] = '%.*s'", (unsigned long long)i,
                  (int)s.len, s.ptr);
    }
    OK(gguf_arr_str(a, 0, &s, err));
    OK(gguf_str_dup(s, &dup, err));
    cr_assert_str_eq(dup, want_s[0]);
    free(dup);
    cr_assert_eq(gguf_arr_raw(a, &raw, &raw_bytes, &e), DS4_ERR_FORMAT);
    OK(gguf_get_arr(g, "a.str_empty", &a, err));
    cr_assert(a->n_elems == 0 && a->elem_type == GGUF_TYPE_STRING);

    OK(gguf_get_arr(g, "a.nested", &a, err));
    cr_assert(a->elem_type == GGUF_TYPE_ARRAY && a->n_elems == 2);
    cr_assert_eq(a->raw_bytes, sizeof NESTED_U32);
    cr_assert_eq(memcmp(a->raw, NESTED_U32, sizeof NESTED_U32), 0);
    gguf_value in0, in1;
    OK(gguf_arr_elem(a, 1, &in1, err));
    cr_assert(in1.type == GGUF_TYPE_ARRAY && in1.n_elems == 0 && in1.elem_type == GGUF_TYPE_UINT32);
    OK(gguf_arr_elem(a, 0, &in0, err));
    cr_assert(in0.type == GGUF_TYPE_ARRAY && in0.n_elems == 2);
    OK(gguf_arr_u32(&in0, 0, &u32, err));
    cr_assert_eq(u32, 1);
    OK(gguf_arr_u32(&in0, 1, &u32, err));
    cr_assert_eq(u32, 2);

    OK(gguf_get_arr(g, "a.deep8", &a, err));
    gguf_value cur = *a, next;
    for (int d = 1; d < 8; d++) {
        OK(gguf_arr_elem(&cur, 0, &next, err));
        cr_assert_eq(next.type, GGUF_TYPE_ARRAY, "level %d", d + 1);
        cur = next;
    }
    OK(gguf_arr_str(&cur, 0, &s, err));
    cr_assert(gguf_str_eq(s, "x"));

    cr_assert_eq(gguf_n_tensors(g), N_TENSORS);
    uint64_t prev_end = 0;
    for (size_t i = 0; i < N_TENSORS; i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        const tdef *d = &TENSORS[i];
        cr_assert_str_eq(t->name, d->name);
        cr_assert_eq(gguf_find_tensor(g, d->name), t);
        cr_assert_eq(t->index, i);
        cr_assert_eq(t->type, d->type, "%s", d->name);
        cr_assert_eq(t->n_dims, d->n_dims, "%s", d->name);
        uint64_t n_el = 1;
        for (uint32_t k = 0; k < DS4_MAX_DIMS; k++) {
            cr_assert_eq(t->ne[k], k < d->n_dims ? d->ne[k] : 1, "%s ne[%u]", d->name, k);
            n_el *= t->ne[k];
        }
        cr_assert_eq(t->n_elements, n_el);
        uint64_t n = tensor_bytes(d);
        cr_assert_eq(t->n_bytes, n, "%s", d->name);
        cr_assert_eq(t->offset % 64, 0, "%s offset %llu", d->name, (unsigned long long)t->offset);
        cr_assert_geq(t->offset, prev_end);
        cr_assert_lt(t->offset, prev_end + 64, "tensors are packed to the next alignment");
        prev_end = t->offset + n;
        cr_assert_eq(t->abs_offset, gguf_data_offset(g) + t->offset);
        cr_assert_eq((const uint8_t *)t->data, gguf_file_base(g) + t->abs_offset);
        uint8_t *want = pattern(n, (uint32_t)i);
        for (uint64_t k = 0; k < n; k++)
            cr_assert_eq(((const uint8_t *)t->data)[k], want[k], "%s byte %llu", d->name,
                         (unsigned long long)k);
        free(want);
    }
    uint64_t padded = (prev_end + 63) / 64 * 64;
    cr_assert_eq(gguf_file_bytes(g), gguf_data_offset(g) + padded, "last tensor padded too");
    cr_assert_null(gguf_tensor_at(g, N_TENSORS));
    cr_assert_null(gguf_find_tensor(g, "missing"));
    const gguf_tensor *t;
    cr_assert_eq(gguf_get_tensor(g, "missing", &t, &e), DS4_ERR_NOT_FOUND);
    cr_assert(strstr(e.msg, "'missing'"), "%s", e.msg);
}

Test(gguf_roundtrip, file_writer_every_type_reads_back) {
    char *dir = tu_tmpdir();
    char *path = tu_join(dir, "ref.gguf");
    gguf_writer *w;
    OK(gguf_writer_create(&w, path, err));
    write_reference(w, 0);
    uint64_t total;
    OK(gguf_writer_total_bytes(w, &total, err));
    gguf_writer_free(w);
    gguf_ctx *g;
    OK(gguf_open(&g, path, err));
    cr_assert_eq(gguf_file_bytes(g), total, "total_bytes predicted the file size");
    check_reference(g);
    gguf_close(g);
    /* No temp file is left beside the result. */
    char *cmd = malloc(strlen(dir) + 32);
    sprintf(cmd, "ls %s | wc -l", dir);
    char *out;
    cr_assert_eq(tu_run(cmd, &out), 0);
    cr_assert_eq(atoi(out), 1, "files in the directory: %s", out);
    free(out);
    free(cmd);
    unlink(path);
    rmdir(dir);
    free(path);
    free(dir);
}

Test(gguf_roundtrip, memory_writer_chunked_equals_whole) {
    const uint8_t *d1, *d2;
    uint64_t n1, n2;
    gguf_writer *w1, *w2;
    OK(gguf_writer_create_mem(&w1, err));
    write_reference(w1, 0);
    OK(gguf_writer_mem_data(w1, &d1, &n1, err));
    OK(gguf_writer_create_mem(&w2, err));
    write_reference(w2, 7);   /* odd chunks that straddle blocks */
    OK(gguf_writer_mem_data(w2, &d2, &n2, err));
    cr_assert_eq(n1, n2);
    cr_assert_eq(memcmp(d1, d2, n1), 0, "chunked and whole writes must give the same bytes");
    gguf_ctx *g;
    OK(gguf_open_mem(&g, d2, n2, err));
    check_reference(g);
    gguf_close(g);
    gguf_writer_free(w1);
    gguf_writer_free(w2);
}

Test(gguf_roundtrip, copy_values_between_files) {
    gguf_writer *w1, *w2;
    const uint8_t *d1, *d2;
    uint64_t n1, n2;
    OK(gguf_writer_create_mem(&w1, err));
    write_reference(w1, 0);
    OK(gguf_writer_mem_data(w1, &d1, &n1, err));
    gguf_ctx *g1, *g2;
    OK(gguf_open_mem(&g1, d1, n1, err));
    /* Template copy, as the converter does: every record verbatim, then the same tensors. */
    OK(gguf_writer_create_mem(&w2, err));
    for (uint64_t i = 0; i < gguf_n_kv(g1); i++)
        OK(gguf_writer_add_value(w2, gguf_kv_key(g1, i), gguf_kv_value(g1, i), err));
    for (uint64_t i = 0; i < gguf_n_tensors(g1); i++) {
        const gguf_tensor *t = gguf_tensor_at(g1, i);
        OK(gguf_writer_add_tensor(w2, t->name, t->type, t->n_dims, t->ne, err));
    }
    OK(gguf_writer_write_header(w2, err));
    for (uint64_t i = 0; i < gguf_n_tensors(g1); i++) {
        const gguf_tensor *t = gguf_tensor_at(g1, i);
        OK(gguf_writer_write_tensor(w2, t->name, t->data, t->n_bytes, err));
    }
    OK(gguf_writer_finish(w2, err));
    OK(gguf_writer_mem_data(w2, &d2, &n2, err));
    cr_assert(n1 == n2 && memcmp(d1, d2, n1) == 0, "a verbatim copy is byte-identical");
    OK(gguf_open_mem(&g2, d2, n2, err));
    check_reference(g2);
    gguf_close(g1);
    gguf_close(g2);
    gguf_writer_free(w1);
    gguf_writer_free(w2);
}

Test(gguf_roundtrip, no_tensors_and_default_alignment) {
    gguf_writer *w;
    const uint8_t *d;
    uint64_t n;
    OK(gguf_writer_create_mem(&w, err));
    OK(gguf_writer_add_str(w, "general.name", "x", err));
    OK(gguf_writer_write_header(w, err));
    OK(gguf_writer_finish(w, err));
    OK(gguf_writer_mem_data(w, &d, &n, err));
    cr_assert_eq(n % 32, 0, "header padded to the default alignment 32");
    gguf_ctx *g;
    OK(gguf_open_mem(&g, d, n, err));
    cr_assert_eq(gguf_alignment(g), 32);
    cr_assert_eq(gguf_n_tensors(g), 0);
    cr_assert_eq(gguf_data_offset(g), n);
    gguf_close(g);
    gguf_writer_free(w);
}

/* ---- Typed getters ------------------------------------------------------------------------ */

static gguf_ctx *getter_file(gguf_writer **w_out) {
    gguf_writer *w;
    OK(gguf_writer_create_mem(&w, err));
    OK(gguf_writer_add_i32(w, "deepseek4.block_count", 43, err));
    OK(gguf_writer_add_u32(w, "deepseek4.rope.freq_base", 10000, err));
    OK(gguf_writer_add_i32(w, "neg", -3, err));
    OK(gguf_writer_add_f64(w, "deepseek4.expert_weights_scale", 1.5, err));
    OK(gguf_writer_add_u32(w, "deepseek4.rope.scaling.original_context_length", 65536, err));
    OK(gguf_writer_add_str(w, "s", "hello", err));
    OK(gguf_writer_add_u8(w, "deepseek4.expert_weights_norm", 1, err));
    const float f[] = {10.0f};
    OK(gguf_writer_add_arr(w, "arrf", GGUF_TYPE_FLOAT32, f, 1, err));
    OK(gguf_writer_write_header(w, err));
    OK(gguf_writer_finish(w, err));
    const uint8_t *d;
    uint64_t n;
    OK(gguf_writer_mem_data(w, &d, &n, err));
    gguf_ctx *g;
    OK(gguf_open_mem(&g, d, n, err));
    *w_out = w;
    return g;
}

Test(gguf_getters, accepted_type_sets_follow_gguf_layout) {
    gguf_writer *w;
    gguf_ctx *g = getter_file(&w);
    float f;
    double d;
    uint64_t u64;
    int64_t i64;
    OK(gguf_get_f32(g, "deepseek4.rope.freq_base", &f, err));   /* UINT32 as float */
    cr_assert(tu_f32_bits_equal(f, 10000.0f));
    OK(gguf_get_f32(g, "neg", &f, err));                        /* INT32 as float */
    cr_assert(tu_f32_bits_equal(f, -3.0f));
    OK(gguf_get_f32(g, "deepseek4.expert_weights_scale", &f, err));   /* FLOAT64 */
    cr_assert(tu_f32_bits_equal(f, 1.5f));
    OK(gguf_get_f64(g, "deepseek4.expert_weights_scale", &d, err));
    cr_assert_eq(d, 1.5);
    OK(gguf_get_u64(g, "deepseek4.rope.scaling.original_context_length", &u64, err));
    cr_assert_eq(u64, 65536);
    OK(gguf_get_i64(g, "neg", &i64, err));
    cr_assert_eq(i64, -3);
    gguf_close(g);
    gguf_writer_free(w);
}

Test(gguf_getters, mismatches_name_key_and_types) {
    gguf_writer *w;
    gguf_ctx *g = getter_file(&w);
    ds4_error e;
    uint32_t u32;
    bool b;
    float f;
    gguf_str s;
    const gguf_value *a;
    /* GGUF_LAYOUT §8 #4: an INT32 block_count is rejected. */
    cr_assert_eq(gguf_get_u32(g, "deepseek4.block_count", &u32, &e), DS4_ERR_FORMAT);
    cr_assert_str_eq(e.msg, "gguf: key 'deepseek4.block_count': expected UINT32, got INT32");
    cr_assert_eq(gguf_get_bool(g, "deepseek4.expert_weights_norm", &b, &e), DS4_ERR_FORMAT);
    cr_assert_str_eq(e.msg, "gguf: key 'deepseek4.expert_weights_norm': expected BOOL, got UINT8");
    cr_assert_eq(gguf_get_f32(g, "s", &f, &e), DS4_ERR_FORMAT);
    cr_assert_str_eq(e.msg, "gguf: key 's': expected FLOAT32, FLOAT64, UINT32 or INT32, got STRING");
    cr_assert_eq(gguf_get_u64(g, "neg", &(uint64_t){0}, &e), DS4_ERR_FORMAT);
    cr_assert_str_eq(e.msg, "gguf: key 'neg': expected UINT64 or UINT32, got INT32");
    cr_assert_eq(gguf_get_str(g, "neg", &s, &e), DS4_ERR_FORMAT);
    cr_assert(strstr(e.msg, "'neg'") && strstr(e.msg, "STRING"), "%s", e.msg);
    cr_assert_eq(gguf_get_arr(g, "s", &a, &e), DS4_ERR_FORMAT);
    cr_assert_str_eq(e.msg, "gguf: key 's': expected ARRAY, got STRING");
    cr_assert_eq(gguf_get_u32(g, "nope", &u32, &e), DS4_ERR_NOT_FOUND);
    cr_assert_str_eq(e.msg, "gguf: key 'nope' not found");
    OK(gguf_get_arr(g, "arrf", &a, err));
    cr_assert_eq(gguf_arr_u32(a, 0, &u32, &e), DS4_ERR_FORMAT);
    cr_assert_str_eq(e.msg, "gguf: key 'arrf': expected array of UINT32 or INT32, got ARRAY of FLOAT32");
    cr_assert_eq(gguf_arr_str(a, 0, &s, &e), DS4_ERR_FORMAT);
    cr_assert(strstr(e.msg, "'arrf'") && strstr(e.msg, "STRING"), "%s", e.msg);
    gguf_close(g);
    gguf_writer_free(w);
}

/* ---- Writer misuse ----------------------------------------------------------------------- */

Test(gguf_writer, invalid_records_and_tensors_are_refused) {
    gguf_writer *w;
    ds4_error e;
    OK(gguf_writer_create_mem(&w, err));
    OK(gguf_writer_add_u32(w, "k", 1, err));
    cr_assert_eq(gguf_writer_add_u32(w, "k", 2, &e), DS4_ERR_INVALID_ARG);
    cr_assert(strstr(e.msg, "duplicate key 'k'"), "%s", e.msg);
    cr_assert_eq(gguf_writer_add_u32(w, "", 2, &e), DS4_ERR_INVALID_ARG);
    cr_assert_eq(gguf_writer_add_u32(w, "bad\xff", 2, &e), DS4_ERR_INVALID_ARG);
    cr_assert(strstr(e.msg, "UTF-8"), "%s", e.msg);
    cr_assert_eq(gguf_writer_add_u32(w, "general.alignment", 48, &e), DS4_ERR_INVALID_ARG);
    cr_assert_eq(gguf_writer_add_i32(w, "general.alignment", 64, &e), DS4_ERR_INVALID_ARG);
    cr_assert(strstr(e.msg, "general.alignment"), "%s", e.msg);
    cr_assert_eq(gguf_writer_add_arr(w, "x", GGUF_TYPE_STRING, "", 0, &e), DS4_ERR_INVALID_ARG);
    const uint8_t bad_nested[] = {9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0,     /* ARRAY of 1 ARRAY */
                                  77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};  /* of type 77, empty */
    cr_assert_eq(gguf_writer_add_raw(w, "raw", GGUF_TYPE_ARRAY, bad_nested, sizeof bad_nested, &e),
                 DS4_ERR_FORMAT);
    cr_assert(strstr(e.msg, "'raw'") && strstr(e.msg, "unknown element type 77"), "%s", e.msg);
    uint64_t n9;
    uint8_t *deep = nested_encoding(9, &n9);
    cr_assert_eq(gguf_writer_add_raw(w, "deep9", GGUF_TYPE_ARRAY, deep, n9, &e), DS4_ERR_FORMAT);
    cr_assert(strstr(e.msg, "nested"), "%s", e.msg);
    free(deep);
    cr_assert_eq(gguf_writer_add_raw(w, "short", GGUF_TYPE_UINT32, "\1\0\0\0\0", 5, &e),
                 DS4_ERR_FORMAT);

    uint64_t ne[2] = {33, 2};
    cr_assert_eq(gguf_writer_add_tensor(w, "q", DS4_TYPE_Q8_0, 2, ne, &e), DS4_ERR_INVALID_ARG);
    cr_assert(strstr(e.msg, "tensor 'q'") && strstr(e.msg, "multiple"), "%s", e.msg);
    cr_assert_eq(gguf_writer_add_tensor(w, "u", 99, 2, ne, &e), DS4_ERR_UNSUPPORTED);
    cr_assert_eq(gguf_writer_add_tensor(w, "z", DS4_TYPE_F32, 0, ne, &e), DS4_ERR_INVALID_ARG);
    cr_assert_eq(gguf_writer_add_tensor(w, "z", DS4_TYPE_F32, 9, ne, &e), DS4_ERR_INVALID_ARG);
    OK(gguf_writer_add_tensor(w, "t", DS4_TYPE_F32, 2, ne, err));
    cr_assert_eq(gguf_writer_add_tensor(w, "t", DS4_TYPE_F32, 2, ne, &e), DS4_ERR_INVALID_ARG);
    cr_assert(strstr(e.msg, "duplicate tensor 't'"), "%s", e.msg);
    cr_assert_eq(gguf_writer_add_u32(w, "general.alignment", 64, &e), DS4_ERR_STATE);
    cr_assert_eq(gguf_writer_write(w, "x", 1, &e), DS4_ERR_STATE);
    cr_assert(strstr(e.msg, "before the header"), "%s", e.msg);
    gguf_writer_free(w);
}

Test(gguf_writer, byte_counts_are_enforced) {
    gguf_writer *w;
    ds4_error e;
    uint64_t ne_a[1] = {4}, ne_b[1] = {2};
    OK(gguf_writer_create_mem(&w, err));
    OK(gguf_writer_add_tensor(w, "a", DS4_TYPE_F32, 1, ne_a, err));
    OK(gguf_writer_add_tensor(w, "b", DS4_TYPE_F16, 1, ne_b, err));
    OK(gguf_writer_write_header(w, err));
    cr_assert_eq(gguf_writer_add_u32(w, "late", 1, &e), DS4_ERR_STATE);
    uint8_t buf[32] = {0};
    cr_assert_eq(gguf_writer_write_tensor(w, "b", buf, 4, &e), DS4_ERR_STATE);
    cr_assert(strstr(e.msg, "next tensor is 'a'"), "%s", e.msg);
    OK(gguf_writer_write(w, buf, 10, err));
    cr_assert_eq(gguf_writer_write(w, buf, 7, &e), DS4_ERR_RANGE);
    cr_assert(strstr(e.msg, "tensor 'a'") && strstr(e.msg, "6 of 16"), "%s", e.msg);
    OK(gguf_writer_write(w, buf, 6, err));
    cr_assert_eq(gguf_writer_write_tensor(w, "b", buf, 5, &e), DS4_ERR_RANGE);
    cr_assert(strstr(e.msg, "tensor 'b'") && strstr(e.msg, "5 bytes given"), "%s", e.msg);
    OK(gguf_writer_write(w, buf, 1, err));
    cr_assert_eq(gguf_writer_finish(w, &e), DS4_ERR_STATE);
    cr_assert(strstr(e.msg, "tensor 'b'") && strstr(e.msg, "1 of its 4 bytes"), "%s", e.msg);
    cr_assert_eq(gguf_writer_write(w, buf, 3, &e), DS4_ERR_STATE, "a failed writer stays failed");
    gguf_writer_free(w);

    OK(gguf_writer_create_mem(&w, err));
    OK(gguf_writer_add_tensor(w, "a", DS4_TYPE_F32, 1, ne_a, err));
    OK(gguf_writer_write_header(w, err));
    OK(gguf_writer_write(w, buf, 16, err));
    cr_assert_eq(gguf_writer_write(w, buf, 1, &e), DS4_ERR_RANGE);
    cr_assert(strstr(e.msg, "after all 1 tensors"), "%s", e.msg);
    OK(gguf_writer_finish(w, err));
    cr_assert_eq(gguf_writer_finish(w, &e), DS4_ERR_STATE);
    gguf_writer_free(w);
}

Test(gguf_writer, failed_or_abandoned_file_leaves_nothing) {
    char *dir = tu_tmpdir();
    char *path = tu_join(dir, "out.gguf");
    uint64_t ne[1] = {8};
    uint8_t buf[32] = {0};
    ds4_error e;
    char *cmd = malloc(strlen(dir) + 32), *out;
    sprintf(cmd, "ls -A %s | wc -l", dir);

    gguf_writer *w;
    OK(gguf_writer_create(&w, path, err));
    OK(gguf_writer_add_tensor(w, "t", DS4_TYPE_F32, 1, ne, err));
    OK(gguf_writer_write_header(w, err));
    OK(gguf_writer_write(w, buf, 12, err));
    cr_assert_eq(tu_run(cmd, &out), 0);
    cr_assert_eq(atoi(out), 1, "the temp file exists while writing");
    free(out);
    cr_assert_eq(access(path, F_OK), -1, "final name absent before finish");
    cr_assert_eq(gguf_writer_finish(w, &e), DS4_ERR_STATE);
    cr_assert(strstr(e.msg, "out.gguf") && strstr(e.msg, "tensor 't'"), "%s", e.msg);
    gguf_writer_free(w);
    cr_assert_eq(tu_run(cmd, &out), 0);
    cr_assert_eq(atoi(out), 0, "nothing left after a failed finish: %s", out);
    free(out);

    OK(gguf_writer_create(&w, path, err));   /* abandoned midway */
    OK(gguf_writer_add_u32(w, "k", 1, err));
    gguf_writer_free(w);
    cr_assert_eq(tu_run(cmd, &out), 0);
    cr_assert_eq(atoi(out), 0, "nothing left after free without finish: %s", out);
    free(out);

    char *nodir = tu_join(dir, "missing/out.gguf");
    cr_assert_eq(gguf_writer_create(&w, nodir, &e), DS4_ERR_IO);
    cr_assert(strstr(e.msg, "missing/out.gguf"), "%s", e.msg);
    free(nodir);
    free(cmd);
    rmdir(dir);
    free(path);
    free(dir);
}

Test(gguf_open, missing_file_names_path) {
    gguf_ctx *g;
    ds4_error e;
    cr_assert_eq(gguf_open(&g, "/nonexistent/x.gguf", &e), DS4_ERR_IO);
    cr_assert(strstr(e.msg, "/nonexistent/x.gguf"), "%s", e.msg);
    cr_assert_null(g);
}

/* 64-bit layout in the writer: a second tensor past 4 GiB (the reader side is in
 * test_gguf_bad.c, gguf_tensor/offsets_past_4_gib). */
Test(gguf_writer, offsets_past_4_gib) {
    gguf_writer *w;
    uint64_t big[2] = {1u << 20, 5 * 1024}, small[1] = {8};
    OK(gguf_writer_create_mem(&w, err));
    OK(gguf_writer_add_tensor(w, "big", DS4_TYPE_I8, 2, big, err));   /* 5 GiB */
    OK(gguf_writer_add_tensor(w, "after", DS4_TYPE_F32, 1, small, err));
    uint64_t n_bytes, offset, total;
    OK(gguf_writer_tensor_layout(w, 0, &n_bytes, &offset, err));
    cr_assert_eq(n_bytes, 5ull << 30);
    OK(gguf_writer_tensor_layout(w, 1, &n_bytes, &offset, err));
    cr_assert_eq(offset, 5ull << 30);
    cr_assert_eq(n_bytes, 32);
    OK(gguf_writer_total_bytes(w, &total, err));
    /* header 24 + two infos (8+3+4+16+4+8 = 43, 8+5+4+8+4+8 = 37) = 104 -> 128, then data */
    cr_assert_eq(total, 128 + (5ull << 30) + 32);
    ds4_error e;
    cr_assert_eq(gguf_writer_tensor_layout(w, 2, &n_bytes, &offset, &e), DS4_ERR_RANGE);
    gguf_writer_free(w);
}
