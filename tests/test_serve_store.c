/* tests/test_serve_store.c — the text stream (think split, stop sequences, UTF-8 and tool-marker
 * holds), the exact-DSML tool memory and the disk KV cache (format, validation, lookup, eviction,
 * restart) with fake payload bytes. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "serve/kvstore.h"
#include "serve/textstream.h"
#include "serve/toolids.h"
#include "testutil.h"

/* ---- text stream ---- */

typedef struct { srv_fmt f; srv_textstream ts; srv_request r; } tsfix;

static void ts_setup(tsfix *x, srv_api api, srv_think think, bool tools, char **stop, size_t n_stop) {
    memset(x, 0, sizeof *x);
    x->r.api = api;
    x->r.think = think;
    x->r.tools_active = tools;
    x->r.model = "m";
    x->r.stop = stop;
    x->r.n_stop = n_stop;
    cr_assert(srv_fmt_init(&x->f, &x->r, "ID", 1));
    srv_ts_init(&x->ts, &x->f, &x->r);
}

/* Feeds text one byte at a time (the hardest split), then flushes. */
static bool feed_bytes(tsfix *x, const char *s) {
    for (size_t i = 0; s[i]; i++)
        if (!srv_ts_push(&x->ts, s + i, 1)) return false;
    return true;
}

static void ts_done(tsfix *x) {
    srv_ts_free(&x->ts);
    srv_fmt_free(&x->f);
}

Test(serve_textstream, think_split_bytewise) {
    tsfix x;
    ts_setup(&x, SRV_API_CHAT, SRV_THINK_HIGH, false, NULL, 0);
    cr_assert(feed_bytes(&x, "<think>plan \xc3\xa9</think>answer"));
    srv_ts_flush(&x.ts);
    cr_assert_str_eq(x.f.reasoning.data, "plan \xc3\xa9");
    cr_assert_str_eq(x.f.content.data, "answer");
    ts_done(&x);
}

Test(serve_textstream, never_emits_partial_utf8_or_tag) {
    tsfix x;
    ts_setup(&x, SRV_API_CHAT, SRV_THINK_HIGH, false, NULL, 0);
    srv_ts_push(&x.ts, "ab\xe2\x82", 4); /* € cut after two bytes */
    cr_assert_eq(x.f.reasoning.len, 2, "held the partial character, got %zu bytes", x.f.reasoning.len);
    srv_ts_push(&x.ts, "\xac</thi", 6);
    cr_assert_str_eq(x.f.reasoning.data, "ab\xe2\x82\xac", "partial </think> held");
    srv_ts_push(&x.ts, "nk>x", 4);
    cr_assert_str_eq(x.f.content.data, "x");
    cr_assert(x.ts.saw_think_end);
    ts_done(&x);
}

Test(serve_textstream, stop_sequence_truncates_and_holds) {
    char *stop[] = {"STOP", "XY"};
    tsfix x;
    ts_setup(&x, SRV_API_CHAT, SRV_THINK_NONE, false, stop, 2);
    cr_assert(srv_ts_push(&x.ts, "hello S", 7));
    cr_assert_str_eq(x.f.content.data, "hell", "the last max_len-1 bytes wait");
    cr_assert(srv_ts_push(&x.ts, "TO", 2));
    cr_assert_not(srv_ts_push(&x.ts, "Pmore", 5), "stop matched");
    cr_assert_str_eq(x.f.content.data, "hello ");
    cr_assert_str_eq(x.ts.matched_stop, "STOP");
    cr_assert_not(srv_ts_push(&x.ts, "z", 1), "nothing after a stop");
    ts_done(&x);
}

Test(serve_textstream, tool_block_is_held_back) {
    tsfix x;
    ts_setup(&x, SRV_API_CHAT, SRV_THINK_NONE, true, NULL, 0);
    const char *t = "Let me look.\n\n<\xef\xbd\x9c" "DSML\xef\xbd\x9c" "tool_calls>\n<x>";
    cr_assert(feed_bytes(&x, t));
    srv_ts_flush(&x.ts);
    cr_assert_str_eq(x.f.content.data, "Let me look.", "separator whitespace and the block are not content");
    cr_assert(x.ts.in_tools);
    cr_assert_eq(x.ts.tool_start, strlen("Let me look."));
    ts_done(&x);
    ts_setup(&x, SRV_API_CHAT, SRV_THINK_NONE, true, NULL, 0);
    cr_assert(feed_bytes(&x, "a < b\n"));
    cr_assert_str_eq(x.f.content.data, "a", "a lone '<' and trailing whitespace wait");
    srv_ts_flush(&x.ts);
    cr_assert_str_eq(x.f.content.data, "a < b\n");
    ts_done(&x);
}

Test(serve_textstream, completions_stream_raw_text) {
    tsfix x;
    ts_setup(&x, SRV_API_COMPLETIONS, SRV_THINK_HIGH, false, NULL, 0);
    cr_assert(feed_bytes(&x, "r</think>c"));
    srv_ts_flush(&x.ts);
    cr_assert_str_eq(x.f.content.data, "r</think>c");
    ts_done(&x);
}

/* ---- tool memory and ids ---- */

Test(serve_toolids, random_ids_are_distinct_hex) {
    char a[48], b[48];
    cr_assert(srv_random_id(a, sizeof a, "call_"));
    cr_assert(srv_random_id(b, sizeof b, "call_"));
    cr_assert_eq(strlen(a), 5 + 32);
    cr_assert_str_neq(a, b);
    for (size_t i = 5; i < strlen(a); i++) cr_assert(strchr("0123456789abcdef", a[i]), "char %zu of %s", i, a);
    cr_assert_not(srv_random_id(a, 10, "call_"), "too small a buffer is refused");
}

Test(serve_toolids, lru_limits_and_roundtrip) {
    srv_toolmem *m;
    cr_assert_eq(srv_toolmem_create(&m, 2, 1 << 20, NULL), DS4_OK);
    cr_assert(srv_toolmem_put(m, "a", "DA", 2));
    cr_assert(srv_toolmem_put(m, "b", "DB", 2));
    srv_buf o;
    srv_buf_init(&o);
    cr_assert(srv_toolmem_get(m, "a", &o)); /* a is now most recent */
    cr_assert(srv_toolmem_put(m, "c", "DC", 2));
    cr_assert_eq(srv_toolmem_count(m), 2);
    cr_assert_not(srv_toolmem_get(m, "b", &o), "least recently used id evicted");
    cr_assert(srv_toolmem_get(m, "c", &o));
    cr_assert_str_eq(o.data, "DADC");
    srv_buf_clear(&o);
    srv_toolmem_export(m, "xxDCxx", 6, &o);
    srv_toolmem *m2;
    cr_assert_eq(srv_toolmem_create(&m2, 10, 1 << 20, NULL), DS4_OK);
    cr_assert_eq(srv_toolmem_import(m2, (unsigned char *)o.data, o.len), 1, "only blocks in the text are exported");
    srv_buf got;
    srv_buf_init(&got);
    cr_assert(srv_toolmem_get(m2, "c", &got));
    cr_assert_str_eq(got.data, "DC");
    /* Truncated or lying trailers stop loading, never overread. */
    for (size_t cut = 0; cut < o.len; cut++) srv_toolmem_import(m2, (unsigned char *)o.data, cut);
    unsigned char bad[] = {1, 0, 0, 0, 200, 0, 0, 0, 255, 255, 255, 255, 'x'};
    cr_assert_eq(srv_toolmem_import(m2, bad, sizeof bad), 0);
    srv_buf_free(&o);
    srv_buf_free(&got);
    srv_toolmem_free(m);
    srv_toolmem_free(m2);
}

/* ---- disk KV cache ---- */

static int32_t toks[4096];

static void fill_tokens(void) {
    for (int i = 0; i < 4096; i++) toks[i] = (i * 7919) % 129280;
}

static size_t dir_files(const char *dir, const char *suffix) {
    DIR *d = opendir(dir);
    size_t n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strlen(e->d_name) > strlen(suffix) && strcmp(e->d_name + strlen(e->d_name) - strlen(suffix), suffix) == 0) n++;
    if (d) closedir(d);
    return n;
}

Test(serve_kvstore, save_lookup_longest_prefix_and_restart) {
    fill_tokens();
    char *dir = tu_tmpdir();
    char *sub = tu_join(dir, "a/b");
    srv_kvstore *kv;
    ds4_error err;
    cr_assert_eq(srv_kv_open(&kv, sub, 1 << 20, "model-A", NULL, &err), DS4_OK, "%s", err.msg);
    unsigned char payload[1000];
    for (int i = 0; i < 1000; i++) payload[i] = (unsigned char)(i * 31);
    cr_assert_eq(srv_kv_save(kv, toks, 100, payload, 500, "TR", 2, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(srv_kv_save(kv, toks, 300, payload, 1000, NULL, 0, &err), DS4_OK, "%s", err.msg);
    srv_kv_entry e;
    cr_assert(srv_kv_lookup(kv, toks, 1000, 1, &e));
    cr_assert_eq(e.n_tokens, 300, "longest stored prefix wins");
    cr_assert_eq(e.payload_bytes, 1000);
    cr_assert_eq(memcmp(e.payload, payload, 1000), 0);
    srv_kv_entry_free(&e);
    cr_assert(srv_kv_lookup(kv, toks, 299, 1, &e), "a shorter request finds the 100-token prefix");
    cr_assert_eq(e.n_tokens, 100);
    cr_assert_eq(e.trailer_bytes, 2);
    cr_assert_eq(memcmp(e.trailer, "TR", 2), 0);
    srv_kv_entry_free(&e);
    int32_t other[200];
    memcpy(other, toks, sizeof other);
    other[50] ^= 1;
    cr_assert_not(srv_kv_lookup(kv, other, 200, 1, &e), "a diverging prefix does not match");
    cr_assert_not(srv_kv_lookup(kv, toks, 1000, 301, &e), "min_tokens above every file");
    srv_kv_close(kv);
    /* Restart: same files, same answers. A different model id treats them as foreign. */
    cr_assert_eq(srv_kv_open(&kv, sub, 1 << 20, "model-A", NULL, &err), DS4_OK);
    cr_assert_eq(srv_kv_count(kv), 2);
    cr_assert(srv_kv_lookup(kv, toks, 1000, 1, &e));
    cr_assert_eq(e.n_tokens, 300);
    srv_kv_entry_free(&e);
    srv_kv_close(kv);
    cr_assert_eq(srv_kv_open(&kv, sub, 1 << 20, "model-B", NULL, &err), DS4_OK);
    cr_assert_eq(srv_kv_count(kv), 0, "foreign files are not indexed");
    cr_assert_eq(dir_files(sub, ".kv"), 0, "and are removed");
    srv_kv_close(kv);
    free(sub);
    free(dir);
}

Test(serve_kvstore, corrupt_truncated_and_temp_files_are_removed) {
    fill_tokens();
    char *dir = tu_tmpdir();
    srv_kvstore *kv;
    ds4_error err;
    cr_assert_eq(srv_kv_open(&kv, dir, 1 << 20, "m", NULL, &err), DS4_OK);
    unsigned char payload[256] = {1, 2, 3};
    cr_assert_eq(srv_kv_save(kv, toks, 64, payload, sizeof payload, NULL, 0, &err), DS4_OK);
    cr_assert_eq(srv_kv_save(kv, toks, 128, payload, sizeof payload, NULL, 0, &err), DS4_OK);
    char name[65], path[4200];
    /* Flip one payload byte of the 128-token file: checksum must catch it at lookup. */
    srv_kv_key(toks, 128, name);
    snprintf(path, sizeof path, "%s/%s.kv", dir, name);
    FILE *f = fopen(path, "r+b");
    cr_assert(f);
    fseek(f, 68 + 1 + 128 * 4 + 10, SEEK_SET);
    fputc(0x5a, f);
    fclose(f);
    srv_kv_entry e;
    cr_assert(srv_kv_lookup(kv, toks, 200, 1, &e), "falls back to the intact 64-token file");
    cr_assert_eq(e.n_tokens, 64);
    srv_kv_entry_free(&e);
    cr_assert_eq(access(path, F_OK), -1, "the corrupt file was deleted");
    /* Truncate the other one and drop a stale temp file; reopening cleans both. */
    srv_kv_key(toks, 64, name);
    snprintf(path, sizeof path, "%s/%s.kv", dir, name);
    cr_assert_eq(truncate(path, 100), 0);
    char *tmp = tu_join(dir, "0000.kv.tmp.1.0");
    tu_write_file(tmp, "x", 1);
    srv_kv_close(kv);
    cr_assert_eq(srv_kv_open(&kv, dir, 1 << 20, "m", NULL, &err), DS4_OK);
    cr_assert_eq(srv_kv_count(kv), 0);
    cr_assert_eq(access(path, F_OK), -1, "truncated file removed");
    cr_assert_eq(access(tmp, F_OK), -1, "stale temp file removed");
    srv_kv_close(kv);
    free(tmp);
    free(dir);
}

Test(serve_kvstore, budget_evicts_lowest_score_and_keeps_new_file) {
    fill_tokens();
    char *dir = tu_tmpdir();
    srv_kvstore *kv;
    srv_metrics m;
    memset(&m, 0, sizeof m);
    ds4_error err;
    /* Each file: 68 + 1 + 4n + 4000 + 32 bytes; the budget holds two of them. */
    cr_assert_eq(srv_kv_open(&kv, dir, 10000, "m", &m, &err), DS4_OK);
    static unsigned char payload[4000];
    cr_assert_eq(srv_kv_save(kv, toks, 10, payload, sizeof payload, NULL, 0, &err), DS4_OK);
    cr_assert_eq(srv_kv_save(kv, toks, 20, payload, sizeof payload, NULL, 0, &err), DS4_OK);
    srv_kv_entry e;
    cr_assert(srv_kv_lookup(kv, toks, 10, 1, &e)); /* a hit raises the 10-token file's score */
    srv_kv_entry_free(&e);
    cr_assert_eq(srv_kv_save(kv, toks, 30, payload, sizeof payload, NULL, 0, &err), DS4_OK);
    cr_assert_eq(srv_kv_count(kv), 2);
    cr_assert_leq(srv_kv_bytes(kv), 10000);
    cr_assert(srv_kv_lookup(kv, toks, 30, 30, &e), "the new file is kept");
    srv_kv_entry_free(&e);
    cr_assert(srv_kv_lookup(kv, toks, 10, 10, &e), "the hit file survives");
    srv_kv_entry_free(&e);
    cr_assert_not(srv_kv_lookup(kv, toks, 20, 20, &e), "the unused one was evicted");
    cr_assert_eq(atomic_load(&m.disk_evictions), 1);
    cr_assert_eq(atomic_load(&m.disk_writes), 3);
    cr_assert_eq((uint64_t)atomic_load(&m.disk_bytes), srv_kv_bytes(kv));
    cr_assert_neq(srv_kv_save(kv, toks, 40, payload, 20000, NULL, 0, &err), DS4_OK, "larger than the budget");
    srv_kv_close(kv);
    free(dir);
}

Test(serve_kvstore, key_is_sha256_of_u32le_ids) {
    /* SHA-256 of the 8 bytes 01 00 00 00 02 00 00 00, computed independently with sha256sum. */
    int32_t t[2] = {1, 2};
    char k[65];
    srv_kv_key(t, 2, k);
    char *out = NULL;
    cr_assert_eq(tu_run("printf '\\001\\000\\000\\000\\002\\000\\000\\000' | sha256sum | cut -c1-64", &out), 0);
    out[64] = '\0';
    cr_assert_str_eq(k, out);
    free(out);
}

static void collect_trailer(void *ud, const unsigned char *t, size_t n) { srv_buf_append(ud, t, n); }

Test(serve_kvstore, trailers_are_listed_after_restart) {
    fill_tokens();
    char *dir = tu_tmpdir();
    srv_kvstore *kv;
    cr_assert_eq(srv_kv_open(&kv, dir, 1 << 20, "m", NULL, NULL), DS4_OK);
    unsigned char payload[64] = {0};
    cr_assert_eq(srv_kv_save(kv, toks, 40, payload, sizeof payload, "MAP1", 4, NULL), DS4_OK);
    cr_assert_eq(srv_kv_save(kv, toks, 50, payload, sizeof payload, NULL, 0, NULL), DS4_OK);
    srv_kv_close(kv);
    cr_assert_eq(srv_kv_open(&kv, dir, 1 << 20, "m", NULL, NULL), DS4_OK);
    srv_buf got;
    srv_buf_init(&got);
    cr_assert_eq(srv_kv_each_trailer(kv, collect_trailer, &got), 1, "only the file with a trailer");
    cr_assert_eq(got.len, 4);
    cr_assert_eq(memcmp(got.data, "MAP1", 4), 0);
    srv_buf_free(&got);
    srv_kv_close(kv);
    free(dir);
}
