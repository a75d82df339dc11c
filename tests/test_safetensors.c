/* tests/test_safetensors.c — safetensors reader: the tiny-v4 checkpoint, sharded checkpoints,
 * and malformed headers/indexes (each must fail with a message naming the problem). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/safetensors.h"
#include "testutil.h"

/* Builds a safetensors image: 8-byte little-endian length, the header text, then data_bytes
 * bytes of data (value = byte index & 0xFF). Caller frees. */
static uint8_t *make_image(const char *header, size_t data_bytes, size_t *len) {
    size_t h = strlen(header);
    *len = 8 + h + data_bytes;
    uint8_t *img = malloc(*len);
    cr_assert(img);
    for (int i = 0; i < 8; i++) img[i] = (uint8_t)((uint64_t)h >> (8 * i));
    memcpy(img + 8, header, h);
    for (size_t i = 0; i < data_bytes; i++) img[8 + h + i] = (uint8_t)i;
    return img;
}

/* Opens a header + data from memory; returns the status and leaves the message in *err. */
static ds4_status open_header(const char *header, size_t data_bytes, ds4_error *err) {
    size_t len;
    uint8_t *img = make_image(header, data_bytes, &len);
    st_file *f = NULL;
    ds4_status st = st_open_memory(&f, img, len, err);
    if (st == DS4_OK) cr_assert(f);
    st_close(f);
    free(img);
    return st;
}

#define EXPECT_FAIL(header, data_bytes, needle)                                               \
    do {                                                                                      \
        ds4_error e_;                                                                         \
        ds4_status s_ = open_header(header, data_bytes, &e_);                                 \
        cr_assert_neq(s_, DS4_OK, "header %s: expected an error mentioning '%s'", header,     \
                      needle);                                                                \
        cr_assert(strstr(e_.msg, needle), "header %s: message '%s' lacks '%s'", header,     \
                  e_.msg, needle);                                                            \
    } while (0)

Test(st_tiny, opens_and_lists_every_tensor) {
    char *path = tu_shared_path("testdata/tiny-v4/model.safetensors");
    st_file *f;
    ds4_error err;
    cr_assert_eq(st_open(&f, path, &err), DS4_OK, "%s", err.msg);
    /* Reference: the header's own key count minus __metadata__, computed independently here. */
    size_t len;
    uint8_t *raw = tu_read_file(path, &len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | raw[i];
    size_t n_keys = 0;
    for (uint64_t i = 8; i + 8 < 8 + hlen; i++)
        if (memcmp(raw + i, "\"dtype\"", 7) == 0) n_keys++;
    cr_assert_eq(st_count(f), n_keys, "tensor count: expected %zu got %zu", n_keys, st_count(f));
    /* Tensors tile the data region exactly (the official writer packs them). */
    uint64_t total = 0;
    for (size_t i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_get(f, i);
        cr_assert_eq(st_find(f, t->name), t, "lookup of '%s'", t->name);
        total += t->n_bytes;
    }
    cr_assert_eq(total + 8 + hlen, len, "data bytes %llu + header %llu != file %zu",
                 (unsigned long long)total, (unsigned long long)hlen, len);

    const st_tensor *t = st_find(f, "layers.0.ffn.gate.tid2eid");
    cr_assert(t);
    cr_assert_eq(t->dtype, ST_I64);
    cr_assert_eq(t->n_dims, 2);
    cr_assert_eq(t->shape[0], 1024);
    cr_assert_eq(t->shape[1], 6);
    cr_assert_eq(t->n_bytes, 1024 * 6 * 8);
    t = st_find(f, "layers.2.attn.wq_b.scale");
    cr_assert(t);
    cr_assert_str_eq(st_dtype_name(t->dtype), "F8_E8M0");
    cr_assert_eq(t->shape[0], 8);
    cr_assert_eq(t->shape[1], 1);
    t = st_find(f, "embed.weight");
    cr_assert(t && t->dtype == ST_BF16 && t->n_elements == 1024 * 256);
    cr_assert_null(st_find(f, "layers.5.attn_norm.weight"));
    cr_assert_null(st_find(f, "__metadata__"));
    /* Data pointers address the file's bytes: compare one tensor with the raw image. */
    t = st_find(f, "norm.weight");
    const uint8_t *ref = NULL;
    {
        char *key = strstr((char *)raw + 8, "\"norm.weight\"");
        cr_assert(key);
        char *off = strstr(key, "data_offsets");
        unsigned long long b = 0;
        cr_assert(sscanf(strchr(off, '[') + 1, "%llu", &b) == 1);
        ref = raw + 8 + hlen + b;
    }
    cr_assert_eq(memcmp(t->data, ref, t->n_bytes), 0, "norm.weight bytes differ from the file");
    free(raw);
    st_close(f);
    free(path);
}

Test(st_memory, minimal_file_parses) {
    const char *h = "{\"__metadata__\":{\"format\":\"pt\"},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[8,24]},"
                    "\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
                    "\"z\":{\"dtype\":\"I32\",\"shape\":[0],\"data_offsets\":[24,24]},"
                    "\"s\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[24,32]}}";
    size_t len;
    uint8_t *img = make_image(h, 32, &len);
    st_file *f;
    ds4_error err;
    cr_assert_eq(st_open_memory(&f, img, len, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(st_count(f), 4);
    const st_tensor *a = st_find(f, "a"), *b = st_find(f, "b"), *s = st_find(f, "s");
    cr_assert(a && b && s);
    cr_assert_eq(a->data[3], 3);
    cr_assert_eq(b->data[0], 8);
    cr_assert_eq(b->n_elements, 4);
    cr_assert_eq(s->n_dims, 0);
    cr_assert_eq(s->n_elements, 1);
    cr_assert_eq(st_get(f, 0), a, "file order starts with the lowest offset");
    cr_assert_null(st_get(f, 4));
    st_close(f);
    free(img);
}

Test(st_memory, bad_headers_are_rejected_with_reasons) {
    EXPECT_FAIL("{\"x\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, "F64");
    EXPECT_FAIL("{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "'x'");
    EXPECT_FAIL("{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, "outside");
    EXPECT_FAIL("{\"x\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 8, "shape[0]");
    EXPECT_FAIL("{\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,0]}}", 8, "reversed");
    EXPECT_FAIL("{\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                "\"y\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}",
                8, "overlap");
    EXPECT_FAIL("{\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                "\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}",
                8, "duplicate");
    EXPECT_FAIL("{\"x\":{\"dtype\":\"U8\",\"shape\":[4]}}", 8, "data_offsets");
    EXPECT_FAIL("{\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0]}}", 8, "data_offsets");
    EXPECT_FAIL("{\"x\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 8,
                "dims");
    EXPECT_FAIL("{\"x\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
                "\"data_offsets\":[0,8]}}",
                8, "overflow");
    EXPECT_FAIL("[1,2]", 0, "not an object");
    EXPECT_FAIL("{\"x\":", 0, "JSON");
    EXPECT_FAIL("{\"__metadata__\":[1]}", 0, "__metadata__");
    EXPECT_FAIL("{\"x\":7}", 0, "not an object");
}

Test(st_memory, header_length_is_checked) {
    ds4_error err;
    st_file *f = NULL;
    uint8_t tiny[5] = {1, 0, 0, 0, 0};
    cr_assert_eq(st_open_memory(&f, tiny, sizeof tiny, &err), DS4_ERR_FORMAT);
    cr_assert(strstr(err.msg, "too short"), "%s", err.msg);
    size_t len;
    uint8_t *img = make_image("{}", 0, &len);
    img[0] = 200; /* claims more header than the file holds */
    cr_assert_eq(st_open_memory(&f, img, len, &err), DS4_ERR_FORMAT);
    cr_assert(strstr(err.msg, "does not fit"), "%s", err.msg);
    memset(img, 0xFF, 8); /* absurd length */
    cr_assert_eq(st_open_memory(&f, img, len, &err), DS4_ERR_FORMAT);
    cr_assert(strstr(err.msg, "limit"), "%s", err.msg);
    cr_assert_null(f);
    free(img);
}

/* ---- sharded checkpoints ------------------------------------------------------------------ */

static void write_shard(const char *dir, const char *name, const char *header, size_t data_bytes) {
    size_t len;
    uint8_t *img = make_image(header, data_bytes, &len);
    char *p = tu_join(dir, name);
    tu_write_file(p, img, len);
    free(p);
    free(img);
}

static void write_text(const char *dir, const char *name, const char *text) {
    char *p = tu_join(dir, name);
    tu_write_file(p, text, strlen(text));
    free(p);
}

static const char *SHARD1 = "{\"a\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}";
static const char *SHARD2 = "{\"b\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]},"
                            "\"c\":{\"dtype\":\"F8_E4M3\",\"shape\":[2,2],\"data_offsets\":[8,12]}}";
static const char *INDEX_OK = "{\"metadata\":{},\"weight_map\":{\"a\":\"m-1.safetensors\","
                              "\"b\":\"m-2.safetensors\",\"c\":\"m-2.safetensors\"}}";

static char *sharded_dir(const char *index) {
    char *dir = tu_tmpdir();
    write_shard(dir, "m-1.safetensors", SHARD1, 4);
    write_shard(dir, "m-2.safetensors", SHARD2, 12);
    write_text(dir, "model.safetensors.index.json", index);
    return dir;
}

static void expect_dir_fails(const char *dir, const char *needle) {
    st_file *f = NULL;
    ds4_error err;
    ds4_status st = st_open(&f, dir, &err);
    cr_assert_neq(st, DS4_OK, "expected failure mentioning '%s'", needle);
    cr_assert_null(f);
    cr_assert(strstr(err.msg, needle), "message '%s' lacks '%s'", err.msg, needle);
}

Test(st_sharded, directory_with_index_opens_all_shards) {
    char *dir = sharded_dir(INDEX_OK);
    st_file *f;
    ds4_error err;
    cr_assert_eq(st_open(&f, dir, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(st_count(f), 3);
    cr_assert_eq(st_shard_count(f), 2);
    const st_tensor *c = st_find(f, "c");
    cr_assert(c && c->shard == 1 && c->dtype == ST_F8_E4M3 && c->n_bytes == 4);
    cr_assert_eq(c->data[0], 8, "c starts at byte 8 of shard 2's data");
    cr_assert(strstr(st_shard_path(f, c->shard), "m-2.safetensors"));
    st_close(f);
    /* The index file itself is also accepted. */
    char *idx = tu_join(dir, "model.safetensors.index.json");
    cr_assert_eq(st_open(&f, idx, &err), DS4_OK, "%s", err.msg);
    st_close(f);
    free(idx);
    free(dir);
}

Test(st_sharded, index_tensor_missing_from_shard_is_named) {
    char *dir = sharded_dir("{\"weight_map\":{\"a\":\"m-1.safetensors\",\"b\":\"m-2.safetensors\","
                            "\"c\":\"m-2.safetensors\",\"ghost\":\"m-1.safetensors\"}}");
    expect_dir_fails(dir, "'ghost'");
    free(dir);
}

Test(st_sharded, shard_tensor_missing_from_index_is_named) {
    char *dir = sharded_dir("{\"weight_map\":{\"a\":\"m-1.safetensors\",\"b\":\"m-2.safetensors\"}}");
    expect_dir_fails(dir, "'c'");
    free(dir);
}

Test(st_sharded, tensor_in_wrong_shard_is_named) {
    char *dir = sharded_dir("{\"weight_map\":{\"a\":\"m-1.safetensors\",\"b\":\"m-1.safetensors\","
                            "\"c\":\"m-2.safetensors\"}}");
    expect_dir_fails(dir, "'b'");
    free(dir);
}

Test(st_sharded, bad_index_and_missing_or_truncated_shard) {
    char *dir = sharded_dir("{\"weight_map\":{\"a\":\"m-1.safetensors\"");
    expect_dir_fails(dir, "JSON");
    free(dir);
    dir = sharded_dir("{\"weight_map\":{\"a\":\"../m-1.safetensors\"}}");
    expect_dir_fails(dir, "shard file name");
    free(dir);
    dir = sharded_dir("{\"weight_map\":{\"a\":\"m-1.safetensors\",\"b\":\"m-3.safetensors\"}}");
    expect_dir_fails(dir, "m-3.safetensors");
    free(dir);
    dir = sharded_dir("{\"weight_map\":{}}");
    expect_dir_fails(dir, "weight_map");
    free(dir);
    /* Shard 2 loses its last bytes: tensor 'c' no longer fits. */
    dir = sharded_dir(INDEX_OK);
    write_shard(dir, "m-2.safetensors", SHARD2, 10);
    expect_dir_fails(dir, "'c'");
    free(dir);
    /* Same tensor in two shards. */
    dir = tu_tmpdir();
    write_shard(dir, "m-1.safetensors", SHARD1, 4);
    write_shard(dir, "m-2.safetensors", SHARD1, 4);
    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\":{\"a\":\"m-1.safetensors\",\"x\":\"m-2.safetensors\"}}");
    expect_dir_fails(dir, "'a'");
    free(dir);
    /* Empty directory. */
    dir = tu_tmpdir();
    expect_dir_fails(dir, "model.safetensors");
    free(dir);
}
