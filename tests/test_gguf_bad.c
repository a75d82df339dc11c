/* tests/test_gguf_bad.c — malformed GGUF input: every defect of GGUF_LAYOUT §1 gives a clean
 * error with the right code and a message naming the problem. Files are built byte by byte so
 * each test changes exactly one field of an otherwise valid file (checked by base_file_opens). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "format/gguf.h"
#include "format/gguf_write.h"
#include "testutil.h"

typedef struct bld {
    uint8_t *p;
    size_t n, cap;
} bld;

static void b_bytes(bld *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        cr_assert_not_null(b->p);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void b_u32(bld *b, uint32_t v) { b_bytes(b, &v, 4); }
static void b_u64(bld *b, uint64_t v) { b_bytes(b, &v, 8); }
static void b_strn(bld *b, const char *s, size_t n) {
    b_u64(b, n);
    b_bytes(b, s, n);
}
static void b_str(bld *b, const char *s) { b_strn(b, s, strlen(s)); }
static void b_header(bld *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    b_bytes(b, "GGUF", 4);
    b_u32(b, version);
    b_u64(b, n_tensors);
    b_u64(b, n_kv);
}
static void b_kv_u32(bld *b, const char *key, uint32_t v) {
    b_str(b, key);
    b_u32(b, GGUF_TYPE_UINT32);
    b_u32(b, v);
}
static void b_tensor(bld *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                     uint64_t offset) {
    b_str(b, name);
    b_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++) b_u64(b, ne[i]);
    b_u32(b, type);
    b_u64(b, offset);
}
/* Pads to `align` and appends n_data bytes of tensor data. */
static void b_data(bld *b, size_t align, size_t n_data) {
    static const uint8_t z[256];
    while (b->n % align) b_bytes(b, z, 1);
    while (n_data) {
        size_t k = n_data < sizeof z ? n_data : sizeof z;
        b_bytes(b, z, k);
        n_data -= k;
    }
}

/* Opens b; expects `code` and every `want` substring (NULL-terminated list) in the message. */
static void expect_fail_v(bld *b, ds4_status code, const char *const *want) {
    gguf_ctx *g = (gguf_ctx *)1;
    ds4_error e = {0};
    ds4_status st = gguf_open_mem(&g, b->p, b->n, &e);
    cr_assert_eq(st, code, "expected %s, got %s: %s", ds4_status_str(code), ds4_status_str(st),
                 e.msg);
    cr_assert_eq(e.code, code);
    cr_assert_null(g, "no context on failure");
    for (; *want; want++) cr_assert(strstr(e.msg, *want), "message '%s' lacks '%s'", e.msg, *want);
    free(b->p);
}
#define expect_fail(b, code, ...) expect_fail_v(b, code, (const char *const[]){__VA_ARGS__, NULL})

/* The base file: one key, one F32 [4] tensor. Tests vary it. */
static void base(bld *b) {
    uint64_t ne[1] = {4};
    b_header(b, 3, 1, 1);
    b_kv_u32(b, "k", 7);
    b_tensor(b, "t", 1, ne, 0, 0);
    b_data(b, 32, 16);
}

Test(gguf_bad, base_file_opens) {
    bld b = {0};
    base(&b);
    gguf_ctx *g;
    ds4_error e;
    cr_assert_eq(gguf_open_mem(&g, b.p, b.n, &e), DS4_OK, "%s", e.msg);
    cr_assert_eq(gguf_n_tensors(g), 1);
    cr_assert_eq(gguf_find_tensor(g, "t")->n_bytes, 16);
    gguf_close(g);
    free(b.p);
}

Test(gguf_bad, every_truncation_fails_cleanly) {
    /* A writer-made file with every value kind; each strict prefix must be refused. */
    gguf_writer *w;
    ds4_error e;
    cr_assert_eq(gguf_writer_create_mem(&w, &e), DS4_OK);
    cr_assert_eq(gguf_writer_add_str(w, "general.name", "tiny", &e), DS4_OK);
    cr_assert_eq(gguf_writer_add_f64(w, "f", 2.0, &e), DS4_OK);
    const char *s[] = {"a", "", "bc"};
    cr_assert_eq(gguf_writer_add_arr_str(w, "s", s, 3, &e), DS4_OK);
    const uint8_t nested[] = {9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0,
                              7, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0};
    cr_assert_eq(gguf_writer_add_raw(w, "n", GGUF_TYPE_ARRAY, nested, sizeof nested, &e), DS4_OK);
    uint64_t ne1[2] = {32, 2}, ne2[1] = {3};
    cr_assert_eq(gguf_writer_add_tensor(w, "q", DS4_TYPE_Q8_0, 2, ne1, &e), DS4_OK);
    cr_assert_eq(gguf_writer_add_tensor(w, "h", DS4_TYPE_F16, 1, ne2, &e), DS4_OK);
    cr_assert_eq(gguf_writer_write_header(w, &e), DS4_OK);
    uint8_t data[68] = {1};
    cr_assert_eq(gguf_writer_write(w, data, 68, &e), DS4_OK);
    cr_assert_eq(gguf_writer_write(w, data, 6, &e), DS4_OK);
    cr_assert_eq(gguf_writer_finish(w, &e), DS4_OK, "%s", e.msg);
    const uint8_t *d;
    uint64_t n;
    cr_assert_eq(gguf_writer_mem_data(w, &d, &n, &e), DS4_OK);
    gguf_ctx *g;
    cr_assert_eq(gguf_open_mem(&g, d, n, &e), DS4_OK, "%s", e.msg);
    /* The last tensor's padding is not needed; its last data byte is. */
    uint64_t need = gguf_find_tensor(g, "h")->abs_offset + 6;
    gguf_close(g);
    for (uint64_t len = 0; len < need; len++) {
        uint8_t *copy = malloc(len ? len : 1);   /* exact-size buffer: ASan sees overreads */
        memcpy(copy, d, len);
        ds4_status st = gguf_open_mem(&g, copy, len, &e);
        cr_assert_eq(st, DS4_ERR_FORMAT, "prefix of %llu bytes: %s (%s)", (unsigned long long)len,
                     ds4_status_str(st), e.msg);
        cr_assert(strncmp(e.msg, "gguf: ", 6) == 0 && strlen(e.msg) > 12, "prefix %llu: '%s'",
                  (unsigned long long)len, e.msg);
        free(copy);
    }
    for (uint64_t len = need; len <= n; len++) {
        cr_assert_eq(gguf_open_mem(&g, d, len, &e), DS4_OK, "prefix %llu: %s",
                     (unsigned long long)len, e.msg);
        gguf_close(g);
    }
    gguf_writer_free(w);
}

Test(gguf_bad, short_header_and_bad_magic) {
    bld b = {0};
    b_bytes(&b, "GGUF\3\0\0\0", 8);
    expect_fail(&b, DS4_ERR_FORMAT, "8 bytes", "24-byte header");
    bld c = {0};
    base(&c);
    memcpy(c.p, "GGML", 4);
    expect_fail(&c, DS4_ERR_FORMAT, "bad magic 'GGML'");
    gguf_ctx *g;
    ds4_error e;
    cr_assert_eq(gguf_open_mem(&g, NULL, 0, &e), DS4_ERR_FORMAT);
}

Test(gguf_bad, old_versions_are_unsupported) {
    for (uint32_t v = 1; v <= 4; v += 1) {
        if (v == 3) continue;
        bld b = {0};
        base(&b);
        memcpy(b.p + 4, &v, 4);
        char want[32];
        snprintf(want, sizeof want, "version %u", v);
        expect_fail(&b, DS4_ERR_UNSUPPORTED, want, "v3");
    }
}

Test(gguf_bad, absurd_counts_fail_before_allocating) {
    bld b = {0};
    b_header(&b, 3, 1, 1ull << 60);
    b_kv_u32(&b, "k", 1);
    expect_fail(&b, DS4_ERR_FORMAT, "n_kv 1152921504606846976", "bytes left");
    bld c = {0};
    b_header(&c, 3, UINT64_MAX, 0);
    b_data(&c, 1, 64);
    expect_fail(&c, DS4_ERR_FORMAT, "n_tensors 18446744073709551615", "bytes left");
    /* A count that fits the bytes but whose records are missing. */
    bld d = {0};
    b_header(&d, 3, 0, 3);
    b_kv_u32(&d, "a", 1);
    b_kv_u32(&d, "b", 1);
    b_data(&d, 1, 40);
    expect_fail(&d, DS4_ERR_FORMAT, "key #2");
}

Test(gguf_bad, string_length_past_eof_names_key) {
    bld b = {0};
    b_header(&b, 3, 0, 2);
    b_kv_u32(&b, "k", 1);
    b_str(&b, "general.name");
    b_u32(&b, GGUF_TYPE_STRING);
    b_u64(&b, 1ull << 60);
    b_bytes(&b, "abcd", 4);
    expect_fail(&b, DS4_ERR_FORMAT, "key #1 'general.name'",
                "string length 1152921504606846976 exceeds the 4 bytes left");
    bld c = {0};
    b_header(&c, 3, 0, 1);
    b_u64(&c, 1000);   /* key length */
    b_bytes(&c, "abc", 3);
    b_data(&c, 1, 17);
    expect_fail(&c, DS4_ERR_FORMAT, "key #0", "key length 1000 exceeds the 20 bytes left");
}

Test(gguf_bad, array_count_past_eof_names_key) {
    bld b = {0};
    b_header(&b, 3, 0, 1);
    b_str(&b, "tokenizer.ggml.tokens");
    b_u32(&b, GGUF_TYPE_ARRAY);
    b_u32(&b, GGUF_TYPE_STRING);
    b_u64(&b, 129280);
    b_str(&b, "a");
    expect_fail(&b, DS4_ERR_FORMAT, "'tokenizer.ggml.tokens'", "array count 129280 of STRING");
    bld c = {0};
    b_header(&c, 3, 0, 1);
    b_str(&c, "a.u32");
    b_u32(&c, GGUF_TYPE_ARRAY);
    b_u32(&c, GGUF_TYPE_UINT32);
    b_u64(&c, 1ull << 62);   /* count * 4 overflows u64 */
    b_u32(&c, 1);
    expect_fail(&c, DS4_ERR_FORMAT, "'a.u32'", "array count 4611686018427387904 of UINT32");
    /* Element string inside an array runs past the end. */
    bld d = {0};
    b_header(&d, 3, 0, 1);
    b_str(&d, "s");
    b_u32(&d, GGUF_TYPE_ARRAY);
    b_u32(&d, GGUF_TYPE_STRING);
    b_u64(&d, 2);
    b_str(&d, "ok");
    b_u64(&d, 50);
    b_bytes(&d, "short", 5);
    expect_fail(&d, DS4_ERR_FORMAT, "key #0 's'", "element 1", "string length 50");
}

static void nested_file(bld *b, int depth) {
    b_header(b, 3, 0, 1);
    b_str(b, "deep");
    b_u32(b, GGUF_TYPE_ARRAY);
    for (int d = 0; d < depth; d++) {
        b_u32(b, d + 1 < depth ? GGUF_TYPE_ARRAY : GGUF_TYPE_UINT8);
        b_u64(b, 1);
    }
    b_bytes(b, "\x2a", 1);
}

Test(gguf_bad, nesting_limit_is_eight) {
    bld b = {0};
    nested_file(&b, 8);
    gguf_ctx *g;
    ds4_error e;
    cr_assert_eq(gguf_open_mem(&g, b.p, b.n, &e), DS4_OK, "8 levels are allowed: %s", e.msg);
    gguf_close(g);
    free(b.p);
    bld c = {0};
    nested_file(&c, 9);
    expect_fail(&c, DS4_ERR_FORMAT, "'deep'", "nested more than 8 deep");
}

Test(gguf_bad, unknown_value_types) {
    bld b = {0};
    b_header(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, 13);
    b_u32(&b, 0);
    expect_fail(&b, DS4_ERR_FORMAT, "key #0 'k'", "unknown value type 13");
    bld c = {0};
    b_header(&c, 3, 0, 1);
    b_str(&c, "arr");
    b_u32(&c, GGUF_TYPE_ARRAY);
    b_u32(&c, 0xFFFFFFFFu);
    b_u64(&c, 0);
    expect_fail(&c, DS4_ERR_FORMAT, "'arr'", "unknown element type 4294967295");
}

Test(gguf_bad, bad_keys) {
    const char *bad[] = {"bad\xff", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "trunc\xe2\x82"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bld b = {0};
        b_header(&b, 3, 0, 1);
        b_kv_u32(&b, bad[i], 1);
        expect_fail(&b, DS4_ERR_FORMAT, "key #0", "not valid UTF-8");
    }
    bld c = {0};
    b_header(&c, 3, 0, 1);
    b_strn(&c, "a\0b", 3);
    b_u32(&c, GGUF_TYPE_UINT8);
    b_bytes(&c, "\1", 1);
    expect_fail(&c, DS4_ERR_FORMAT, "key #0", "'a\\x00b'", "NUL");
    bld d = {0};
    b_header(&d, 3, 0, 1);
    b_kv_u32(&d, "", 1);
    expect_fail(&d, DS4_ERR_FORMAT, "key #0", "empty key");
    bld e = {0};   /* a valid multi-byte key is fine */
    b_header(&e, 3, 0, 1);
    b_kv_u32(&e, "ключ.🔑", 5);
    gguf_ctx *g;
    ds4_error err;
    cr_assert_eq(gguf_open_mem(&g, e.p, e.n, &err), DS4_OK, "%s", err.msg);
    uint32_t v;
    cr_assert_eq(gguf_get_u32(g, "ключ.🔑", &v, &err), DS4_OK);
    cr_assert_eq(v, 5);
    gguf_close(g);
    free(e.p);
}

Test(gguf_bad, duplicate_key) {
    bld b = {0};
    b_header(&b, 3, 0, 3);
    b_kv_u32(&b, "a", 1);
    b_kv_u32(&b, "b", 1);
    b_kv_u32(&b, "a", 2);
    expect_fail(&b, DS4_ERR_FORMAT, "key #2 'a' duplicates key #0");
}

Test(gguf_tensor, unknown_type_is_unsupported) {
    bld b = {0};
    uint64_t ne[1] = {4};
    b_header(&b, 3, 1, 0);
    b_tensor(&b, "blk.0.x", 1, ne, 99, 0);
    b_data(&b, 32, 64);
    expect_fail(&b, DS4_ERR_UNSUPPORTED, "tensor 'blk.0.x'", "unknown type id 99");
}

Test(gguf_tensor, n_dims_outside_1_to_8) {
    uint64_t ne[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    for (uint32_t nd = 0; nd <= 9; nd += 9) {
        bld b = {0};
        b_header(&b, 3, 1, 0);
        b_tensor(&b, "t", nd, ne, 0, 0);
        b_data(&b, 32, 64);
        char want[32];
        snprintf(want, sizeof want, "n_dims %u outside 1..8", nd);
        expect_fail(&b, DS4_ERR_FORMAT, "tensor #0 't'", want);
    }
    bld c = {0};   /* 8 dims are accepted */
    b_header(&c, 3, 1, 0);
    b_tensor(&c, "t", 8, ne, 0, 0);
    b_data(&c, 32, 4);
    gguf_ctx *g;
    ds4_error e;
    cr_assert_eq(gguf_open_mem(&g, c.p, c.n, &e), DS4_OK, "%s", e.msg);
    cr_assert_eq(gguf_find_tensor(g, "t")->n_dims, 8);
    gguf_close(g);
    free(c.p);
}

Test(gguf_tensor, zero_dim_overflow_and_partial_block) {
    bld b = {0};
    uint64_t ne0[2] = {4, 0};
    b_header(&b, 3, 1, 0);
    b_tensor(&b, "z", 2, ne0, 0, 0);
    b_data(&b, 32, 64);
    expect_fail(&b, DS4_ERR_FORMAT, "tensor 'z'", "ne[1] is 0");
    bld c = {0};
    uint64_t big[3] = {1ull << 20, 1ull << 30, 1ull << 20};
    b_header(&c, 3, 1, 0);
    b_tensor(&c, "big", 3, big, 0, 0);
    b_data(&c, 32, 64);
    expect_fail(&c, DS4_ERR_FORMAT, "tensor 'big'", "overflow");
    bld d = {0};
    uint64_t odd[1] = {33};
    b_header(&d, 3, 1, 0);
    b_tensor(&d, "q", 1, odd, DS4_TYPE_Q8_0, 0);
    b_data(&d, 32, 64);
    expect_fail(&d, DS4_ERR_FORMAT, "tensor 'q'", "Q8_0", "not a multiple of the block size 32");
}

Test(gguf_tensor, data_past_eof) {
    bld b = {0};
    uint64_t ne[1] = {4};
    b_header(&b, 3, 1, 0);
    b_tensor(&b, "blk.7.ffn_down_exps.weight", 1, ne, 0, 0);
    b_data(&b, 32, 15);   /* one byte short */
    expect_fail(&b, DS4_ERR_FORMAT, "tensor 'blk.7.ffn_down_exps.weight'", "16 bytes",
                "past the end");
    bld c = {0};
    b_header(&c, 3, 1, 0);
    b_tensor(&c, "t", 1, ne, 0, UINT64_MAX - 8);   /* offset + data_start overflows */
    b_data(&c, 32, 16);
    expect_fail(&c, DS4_ERR_FORMAT, "tensor 't'", "past the end");
    bld d = {0};   /* header ends where the padding should be */
    b_header(&d, 3, 1, 0);
    b_tensor(&d, "t", 1, ne, 0, 0);
    expect_fail(&d, DS4_ERR_FORMAT, "data region starts at");
}

Test(gguf_tensor, overlap_and_duplicates) {
    uint64_t ne[1] = {8};
    bld b = {0};
    b_header(&b, 3, 2, 0);
    b_tensor(&b, "a", 1, ne, 0, 0);
    b_tensor(&b, "b", 1, ne, 0, 16);   /* a is [0, 32) */
    b_data(&b, 32, 64);
    expect_fail(&b, DS4_ERR_FORMAT, "tensor 'b' [16, 48) overlaps tensor 'a' [0, 32)");
    bld c = {0};
    b_header(&c, 3, 2, 0);
    b_tensor(&c, "a", 1, ne, 0, 32);
    b_tensor(&c, "a", 1, ne, 0, 0);
    b_data(&c, 32, 64);
    expect_fail(&c, DS4_ERR_FORMAT, "tensor #1 'a' duplicates tensor #0");
    bld d = {0};   /* adjacent, out of order, unaligned: fine (GGUF_LAYOUT §1.4) */
    b_header(&d, 3, 2, 0);
    b_tensor(&d, "a", 1, ne, 0, 36);
    b_tensor(&d, "b", 1, ne, 0, 4);
    b_data(&d, 32, 68);
    gguf_ctx *g;
    ds4_error e;
    cr_assert_eq(gguf_open_mem(&g, d.p, d.n, &e), DS4_OK, "%s", e.msg);
    gguf_close(g);
    free(d.p);
    bld f = {0};
    b_header(&f, 3, 1, 0);
    b_tensor(&f, "", 1, ne, 0, 0);
    b_data(&f, 32, 32);
    expect_fail(&f, DS4_ERR_FORMAT, "tensor #0", "empty tensor name");
    bld h = {0};
    b_header(&h, 3, 1, 0);
    b_tensor(&h, "x\xff", 1, ne, 0, 0);
    b_data(&h, 32, 32);
    expect_fail(&h, DS4_ERR_FORMAT, "tensor #0", "'x\\xff'", "UTF-8");
}

static void align_file(bld *b, uint32_t type, uint64_t value) {
    uint64_t ne[1] = {4};
    b_header(b, 3, 1, 1);
    b_str(b, "general.alignment");
    b_u32(b, type);
    b_bytes(b, &value, gguf_vtype_size(type));
    b_tensor(b, "t", 1, ne, 0, 0);
    b_data(b, 64, 16);
}

Test(gguf_bad, alignment_must_be_uint32_power_of_two) {
    bld b = {0};
    align_file(&b, GGUF_TYPE_UINT32, 64);
    gguf_ctx *g;
    ds4_error e;
    cr_assert_eq(gguf_open_mem(&g, b.p, b.n, &e), DS4_OK, "%s", e.msg);
    cr_assert_eq(gguf_alignment(g), 64);
    cr_assert_eq(gguf_data_offset(g) % 64, 0);
    cr_assert_eq(gguf_data_offset(g), b.n - 16);
    gguf_close(g);
    free(b.p);
    bld c = {0};
    align_file(&c, GGUF_TYPE_UINT32, 0);
    expect_fail(&c, DS4_ERR_FORMAT, "'general.alignment'", "0 is not a non-zero power of two");
    bld d = {0};
    align_file(&d, GGUF_TYPE_UINT32, 3);
    expect_fail(&d, DS4_ERR_FORMAT, "'general.alignment'", "3 is not");
    bld f = {0};
    align_file(&f, GGUF_TYPE_INT32, 64);
    expect_fail(&f, DS4_ERR_FORMAT, "key 'general.alignment': expected UINT32, got INT32");
    bld h = {0};
    align_file(&h, GGUF_TYPE_UINT64, 64);
    expect_fail(&h, DS4_ERR_FORMAT, "key 'general.alignment': expected UINT32, got UINT64");
}

Test(gguf_bad, file_on_disk_error_names_path) {
    char *dir = tu_tmpdir();
    char *path = tu_join(dir, "bad.gguf");
    bld b = {0};
    base(&b);
    b.p[4] = 2;
    tu_write_file(path, b.p, b.n);
    gguf_ctx *g;
    ds4_error e;
    cr_assert_eq(gguf_open(&g, path, &e), DS4_ERR_UNSUPPORTED);
    cr_assert(strstr(e.msg, path) && strstr(e.msg, "version 2"), "%s", e.msg);
    remove(path);
    rmdir(dir);
    free(b.p);
    free(path);
    free(dir);
}

/* 64-bit offsets through gguf_open (mmap): a sparse file whose second tensor starts at 5 GiB. */
Test(gguf_tensor, offsets_past_4_gib) {
    uint64_t big[2] = {1u << 20, 5 * 1024}, small[1] = {8};
    bld b = {0};
    b_header(&b, 3, 2, 0);
    b_tensor(&b, "big", 2, big, DS4_TYPE_I8, 0);
    b_tensor(&b, "after", 1, small, DS4_TYPE_F32, 5ull << 30);
    b_data(&b, 32, 0);
    uint64_t data_start = b.n;
    char *dir = tu_tmpdir();
    char *path = tu_join(dir, "sparse.gguf");
    tu_write_file(path, b.p, b.n);
    cr_assert_eq(truncate(path, (off_t)(data_start + (5ull << 30) + 31)), 0);
    gguf_ctx *g;
    ds4_error e;
    cr_assert_eq(gguf_open(&g, path, &e), DS4_ERR_FORMAT, "one byte short must fail");
    cr_assert(strstr(e.msg, "tensor 'after'") && strstr(e.msg, "5368709120"), "%s", e.msg);
    cr_assert_eq(truncate(path, (off_t)(data_start + (5ull << 30) + 32)), 0);
    cr_assert_eq(gguf_open(&g, path, &e), DS4_OK, "%s", e.msg);
    const gguf_tensor *t = gguf_find_tensor(g, "after");
    cr_assert_eq(t->abs_offset, data_start + (5ull << 30));
    cr_assert_eq(gguf_file_bytes(g), data_start + (5ull << 30) + 32);
    cr_assert_eq(((const uint8_t *)t->data)[31], 0);   /* last byte is mapped */
    cr_assert_eq(gguf_find_tensor(g, "big")->n_bytes, 5ull << 30);
    gguf_close(g);
    remove(path);
    rmdir(dir);
    free(b.p);
    free(path);
    free(dir);
}
