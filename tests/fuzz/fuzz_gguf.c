/*
 * tests/fuzz/fuzz_gguf.c — libFuzzer target for format/gguf.c (and, for inputs that parse,
 * format/gguf_write.c): opens the input from memory, walks every key, value (through nested
 * arrays) and tensor, checks the reader's invariants, then copies the file through the memory
 * writer and checks the copy reads back the same. Any broken invariant aborts (a finding).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "format/gguf.h"
#include "format/gguf_write.h"

#define CHECK(c) do { if (!(c)) abort(); } while (0)

static volatile uint64_t sink;

static void walk_value(const gguf_value *v, int depth) {
    ds4_error e;
    CHECK(depth <= GGUF_MAX_ARRAY_DEPTH);
    uint32_t u32;
    int32_t i32;
    uint64_t u64;
    int64_t i64;
    float f;
    double d;
    bool b;
    gguf_str s;
    /* Every conversion either succeeds or fails cleanly; none may read out of bounds. */
    if (gguf_value_u32(v, &u32, &e) == DS4_OK) sink += u32;
    if (gguf_value_i32(v, &i32, &e) == DS4_OK) sink += (uint64_t)i32;
    if (gguf_value_u64(v, &u64, &e) == DS4_OK) sink += u64;
    if (gguf_value_i64(v, &i64, &e) == DS4_OK) sink += (uint64_t)i64;
    if (gguf_value_f32(v, &f, &e) == DS4_OK) sink += (uint64_t)(f == f);
    if (gguf_value_f64(v, &d, &e) == DS4_OK) sink += (uint64_t)(d == d);
    if (gguf_value_bool(v, &b, &e) == DS4_OK) sink += b;
    if (gguf_value_str(v, &s, &e) == DS4_OK) {
        CHECK(s.len <= v->raw_bytes);
        if (s.len) sink += (uint8_t)s.ptr[s.len - 1];
        char *dup;
        if (gguf_str_dup(s, &dup, &e) == DS4_OK) {
            CHECK(strlen(dup) == s.len);
            free(dup);
        }
    }
    CHECK(gguf_value_check(v->type, v->raw, v->raw_bytes, &e) == DS4_OK);
    if (v->type != GGUF_TYPE_ARRAY) return;
    const void *raw;
    uint64_t raw_bytes;
    if (gguf_arr_raw(v, &raw, &raw_bytes, &e) == DS4_OK) {
        CHECK(raw_bytes == v->n_elems * gguf_vtype_size(v->elem_type));
        if (raw_bytes) sink += ((const uint8_t *)raw)[raw_bytes - 1];
    }
    /* Cap the walk: nested arrays are O(i) per element access. */
    uint64_t n = v->n_elems < 512 ? v->n_elems : 512;
    for (uint64_t i = 0; i < n; i++) {
        gguf_value el;
        CHECK(gguf_arr_elem(v, i, &el, &e) == DS4_OK);
        CHECK(el.type == v->elem_type);
        CHECK(el.raw >= v->elems && el.raw + el.raw_bytes <= v->raw + v->raw_bytes);
        if (gguf_arr_u32(v, i, &u32, &e) == DS4_OK) sink += u32;
        if (gguf_arr_i32(v, i, &i32, &e) == DS4_OK) sink += (uint64_t)i32;
        if (gguf_arr_f32(v, i, &f, &e) == DS4_OK) sink += (uint64_t)(f == f);
        if (gguf_arr_f64(v, i, &d, &e) == DS4_OK) sink += (uint64_t)(d == d);
        if (gguf_arr_str(v, i, &s, &e) == DS4_OK) sink += s.len;
        walk_value(&el, depth + 1);
    }
    CHECK(gguf_arr_elem(v, v->n_elems, &(gguf_value){0}, &e) == DS4_ERR_RANGE);
}

/* Copies every record and tensor through the memory writer and checks the copy. */
static void copy_check(const gguf_ctx *g) {
    ds4_error e;
    uint64_t data_bytes = 0;
    for (uint64_t i = 0; i < gguf_n_tensors(g); i++) data_bytes += gguf_tensor_at(g, i)->n_bytes;
    /* Padding is up to one alignment per tensor: keep the copy small. */
    if (gguf_alignment(g) > 4096 || data_bytes > (1u << 20) || gguf_n_tensors(g) > 4096) return;
    gguf_writer *w;
    CHECK(gguf_writer_create_mem(&w, &e) == DS4_OK);
    for (uint64_t i = 0; i < gguf_n_kv(g); i++)
        CHECK(gguf_writer_add_value(w, gguf_kv_key(g, i), gguf_kv_value(g, i), &e) == DS4_OK);
    for (uint64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        CHECK(gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, &e) == DS4_OK);
    }
    CHECK(gguf_writer_write_header(w, &e) == DS4_OK);
    for (uint64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        CHECK(gguf_writer_write_tensor(w, t->name, t->data, t->n_bytes, &e) == DS4_OK);
    }
    CHECK(gguf_writer_finish(w, &e) == DS4_OK);
    const uint8_t *d;
    uint64_t n;
    CHECK(gguf_writer_mem_data(w, &d, &n, &e) == DS4_OK);
    gguf_ctx *c;
    CHECK(gguf_open_mem(&c, d, n, &e) == DS4_OK);
    CHECK(gguf_n_kv(c) == gguf_n_kv(g) && gguf_n_tensors(c) == gguf_n_tensors(g));
    CHECK(gguf_alignment(c) == gguf_alignment(g));
    for (uint64_t i = 0; i < gguf_n_kv(g); i++) {
        const gguf_value *a = gguf_kv_value(g, i), *b = gguf_kv_value(c, i);
        CHECK(strcmp(gguf_kv_key(g, i), gguf_kv_key(c, i)) == 0);
        CHECK(a->type == b->type && a->raw_bytes == b->raw_bytes);
        CHECK(memcmp(a->raw, b->raw, a->raw_bytes) == 0);
    }
    for (uint64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *a = gguf_tensor_at(g, i), *b = gguf_tensor_at(c, i);
        CHECK(strcmp(a->name, b->name) == 0 && a->n_bytes == b->n_bytes && a->type == b->type);
        CHECK(memcmp(a->data, b->data, a->n_bytes) == 0);
    }
    gguf_close(c);
    gguf_writer_free(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gguf_ctx *g;
    ds4_error e;
    if (gguf_open_mem(&g, data, size, &e) != DS4_OK) {
        CHECK(e.code != DS4_OK && e.msg[0] != '\0');
        return 0;
    }
    uint32_t a = gguf_alignment(g);
    CHECK(a && (a & (a - 1)) == 0);
    CHECK(gguf_data_offset(g) % a == 0);
    for (uint64_t i = 0; i < gguf_n_kv(g); i++) {
        const char *key = gguf_kv_key(g, i);
        CHECK(key && *key);
        CHECK(gguf_find_key(g, key) == (int64_t)i);
        const gguf_value *v = gguf_kv_value(g, i);
        CHECK(v->key == key);
        CHECK(v->raw >= data && v->raw + v->raw_bytes <= data + size);
        walk_value(v, 0);
    }
    for (uint64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        CHECK(gguf_find_tensor(g, t->name) == t);
        CHECK(t->n_dims >= 1 && t->n_dims <= DS4_MAX_DIMS && t->n_bytes > 0);
        CHECK(t->abs_offset + t->n_bytes <= size);
        const uint8_t *p = t->data;
        CHECK(p == data + t->abs_offset);
        sink += p[0] + p[t->n_bytes - 1];
    }
    copy_check(g);
    gguf_close(g);
    return 0;
}
