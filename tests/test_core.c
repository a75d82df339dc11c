/* tests/test_core.c — core utilities: errors, checked size math, thread pool, file reads. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/mapfile.h"
#include "core/safemath.h"
#include "core/threadpool.h"
#include "testutil.h"

Test(core_error, seterr_formats_and_returns_code) {
    ds4_error e;
    ds4_status st = ds4_seterr(&e, DS4_ERR_FORMAT, "gguf: tensor '%s' ends at %d", "x", 7);
    cr_assert_eq(st, DS4_ERR_FORMAT);
    cr_assert_eq(e.code, DS4_ERR_FORMAT);
    cr_assert_str_eq(e.msg, "gguf: tensor 'x' ends at 7");
    ds4_err_prefix(&e, "open %s", "m.gguf");
    cr_assert_str_eq(e.msg, "open m.gguf: gguf: tensor 'x' ends at 7");
    cr_assert_eq(ds4_seterr(NULL, DS4_ERR_IO, "ignored"), DS4_ERR_IO);
    cr_assert_str_eq(ds4_status_str(DS4_ERR_RANGE), "out of range");
}

Test(core_safemath, overflow_is_detected) {
    uint64_t r;
    cr_assert(ds4_mul_u64(&r, 1ull << 31, 1ull << 31));
    cr_assert_eq(r, 1ull << 62);
    cr_assert_not(ds4_mul_u64(&r, 1ull << 32, 1ull << 32));
    cr_assert_not(ds4_add_u64(&r, UINT64_MAX, 1));
    cr_assert(ds4_range_ok(10, 5, 15));
    cr_assert_not(ds4_range_ok(10, 6, 15));
    cr_assert_not(ds4_range_ok(UINT64_MAX, 2, UINT64_MAX));
    cr_assert(ds4_align_up_u64(&r, 33, 32));
    cr_assert_eq(r, 64);
    cr_assert_not(ds4_align_up_u64(&r, UINT64_MAX - 3, 32));
}

typedef struct {
    int64_t *out;
} square_ctx;

static void square_chunk(void *ctx, int64_t b, int64_t e, int idx) {
    (void)idx;
    square_ctx *c = ctx;
    for (int64_t i = b; i < e; i++) c->out[i] += i * i;
}

Test(core_threadpool, every_item_runs_exactly_once) {
    ds4_pool *pool;
    ds4_error err;
    cr_assert_eq(ds4_pool_create(&pool, 3, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(ds4_pool_size(pool), 3);
    for (int64_t n = 0; n < 200; n += 37) {
        int64_t *out = calloc((size_t)n + 1, sizeof *out);
        square_ctx c = {out};
        for (int rep = 0; rep < 5; rep++) ds4_pool_run(pool, n, 1, square_chunk, &c);
        for (int64_t i = 0; i < n; i++) cr_assert_eq(out[i], 5 * i * i, "item %lld", (long long)i);
        free(out);
    }
    ds4_pool_free(pool);
    /* NULL pool runs inline */
    int64_t out[10] = {0};
    square_ctx c = {out};
    ds4_pool_run(NULL, 10, 1, square_chunk, &c);
    cr_assert_eq(out[9], 81);
}

Test(core_mapfile, maps_and_reports_missing_files) {
    char *dir = tu_tmpdir();
    char *p = tu_join(dir, "f.bin");
    tu_write_file(p, "hello", 5);
    ds4_mapfile m;
    ds4_error err;
    cr_assert_eq(ds4_mapfile_open(&m, p, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(m.size_bytes, 5);
    cr_assert(memcmp(m.data, "hello", 5) == 0);
    ds4_mapfile_close(&m);
    char *buf;
    uint64_t len;
    cr_assert_eq(ds4_read_file(p, 100, &buf, &len, &err), DS4_OK);
    cr_assert_str_eq(buf, "hello");
    free(buf);
    cr_assert_eq(ds4_read_file(p, 3, &buf, &len, &err), DS4_OK, "small limit still reads 5 < 64K cap");
    free(buf);
    char *missing = tu_join(dir, "nope");
    cr_assert_eq(ds4_mapfile_open(&m, missing, &err), DS4_ERR_IO);
    cr_assert(strstr(err.msg, "nope") != NULL, "message names the path: %s", err.msg);
    free(missing);
    free(p);
    free(dir);
}
