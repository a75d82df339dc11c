/* tests/test_snapshot.c — the snapshot container (src/model/snapshot.c): round trip, and refusal
 * of truncated, corrupt, future-version and inconsistent snapshots with the right message. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "model/snapshot.h"

typedef struct built {
    uint8_t *buf;
    uint64_t n;
} built;

static built build(uint32_t n_tokens, uint32_t n_vocab, uint64_t payload_bytes) {
    snap_meta m;
    memset(&m, 0, sizeof m);
    for (int i = 0; i < 32; i++) m.model_id[i] = (uint8_t)(i * 7 + 1);
    m.n_ctx = n_tokens + 10;
    m.n_tokens = n_tokens;
    m.n_vocab = n_vocab;
    m.payload_version = 3;
    m.payload_bytes = payload_bytes;
    int32_t *tok = malloc(4 * (n_tokens + 1));
    float *lg = malloc(4 * (n_vocab + 1));
    for (uint32_t i = 0; i < n_tokens; i++) tok[i] = (int32_t)(i * 31 + 5);
    for (uint32_t i = 0; i < n_vocab; i++) lg[i] = (float)i * 0.25f - 3.0f;
    built b;
    ds4_error err;
    cr_assert_eq(snap_total_bytes(&m, &b.n, &err), DS4_OK);
    cr_assert_eq(b.n, 96 + 4 * n_tokens + 4 * n_vocab + payload_bytes + 32);
    b.buf = malloc(b.n);
    uint8_t *pay;
    cr_assert_eq(snap_write_head(b.buf, b.n, &m, tok, n_vocab ? lg : NULL, &pay, &err), DS4_OK, "%s",
                 err.msg);
    cr_assert_eq(pay, b.buf + 96 + 4 * n_tokens + 4 * n_vocab);
    for (uint64_t i = 0; i < payload_bytes; i++) pay[i] = (uint8_t)(i ^ 0x5a);
    snap_seal(b.buf, b.n);
    free(tok);
    free(lg);
    return b;
}

static ds4_status parse(const built *b, uint64_t n, ds4_error *err) {
    snap_view v;
    return snap_parse(&v, b->buf, n, err);
}

Test(snapshot_container, round_trip_keeps_every_field) {
    built b = build(5, 7, 13);
    snap_view v;
    ds4_error err;
    cr_assert_eq(snap_parse(&v, b.buf, b.n, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(v.meta.n_tokens, 5);
    cr_assert_eq(v.meta.n_ctx, 15);
    cr_assert_eq(v.meta.n_vocab, 7);
    cr_assert_eq(v.meta.payload_version, 3);
    cr_assert_eq(v.meta.payload_bytes, 13);
    for (int i = 0; i < 32; i++) cr_assert_eq(v.meta.model_id[i], (uint8_t)(i * 7 + 1));
    for (uint32_t i = 0; i < 5; i++) cr_assert_eq(snap_token(&v, i), (int32_t)(i * 31 + 5));
    float lg[7];
    snap_copy_logits(&v, lg);
    for (int i = 0; i < 7; i++) cr_assert_eq(lg[i], (float)i * 0.25f - 3.0f);
    for (int i = 0; i < 13; i++) cr_assert_eq(v.payload[i], (uint8_t)(i ^ 0x5a));
    cr_assert_eq(memcmp(b.buf, "DS4SNAP", 8), 0);
    free(b.buf);
    /* No logits, no tokens, no payload: still a valid (empty-session) snapshot. */
    b = build(0, 0, 0);
    cr_assert_eq(snap_parse(&v, b.buf, b.n, &err), DS4_OK, "%s", err.msg);
    cr_assert_null(v.logits);
    free(b.buf);
}

Test(snapshot_container, every_truncation_is_refused) {
    built b = build(4, 3, 20);
    ds4_error err;
    for (uint64_t n = 0; n < b.n; n++) {
        cr_assert_eq(parse(&b, n, &err), DS4_ERR_FORMAT, "prefix of %llu/%llu bytes accepted",
                     (unsigned long long)n, (unsigned long long)b.n);
        if (n >= 128) cr_assert(strstr(err.msg, "truncated"), "n=%llu: %s", (unsigned long long)n, err.msg);
    }
    /* One extra byte is refused too. */
    uint8_t *big = calloc(1, b.n + 1);
    memcpy(big, b.buf, b.n);
    snap_view v;
    cr_assert_eq(snap_parse(&v, big, b.n + 1, &err), DS4_ERR_FORMAT);
    cr_assert(strstr(err.msg, "trailing"), "%s", err.msg);
    free(big);
    free(b.buf);
}

Test(snapshot_container, every_flipped_byte_is_refused) {
    built b = build(3, 2, 9);
    ds4_error err;
    for (uint64_t i = 0; i < b.n; i++) {
        for (int bit = 0; bit < 8; bit += 3) {
            b.buf[i] ^= (uint8_t)(1u << bit);
            ds4_status st = parse(&b, b.n, &err);
            cr_assert_neq(st, DS4_OK, "flip of byte %llu bit %d accepted", (unsigned long long)i, bit);
            b.buf[i] ^= (uint8_t)(1u << bit);
        }
    }
    /* A body byte flip is caught by the checksum, by name. */
    b.buf[96 + 1] ^= 1;
    cr_assert_eq(parse(&b, b.n, &err), DS4_ERR_FORMAT);
    cr_assert(strstr(err.msg, "SHA-256"), "%s", err.msg);
    free(b.buf);
}

Test(snapshot_container, future_version_and_bad_header_have_clear_errors) {
    built b = build(2, 0, 4);
    ds4_error err;
    b.buf[8] = 2; /* version 2 */
    cr_assert_eq(parse(&b, b.n, &err), DS4_ERR_UNSUPPORTED);
    cr_assert(strstr(err.msg, "version 2 is newer"), "%s", err.msg);
    b.buf[8] = 1;
    b.buf[0] = 'X';
    cr_assert_eq(parse(&b, b.n, &err), DS4_ERR_FORMAT);
    cr_assert(strstr(err.msg, "not a ds4 snapshot"), "%s", err.msg);
    b.buf[0] = 'D';
    /* Sizes that would overflow must not pass as a small buffer. */
    memset(b.buf + 72, 0xff, 8);
    cr_assert_eq(parse(&b, b.n, &err), DS4_ERR_FORMAT);
    cr_assert(strstr(err.msg, "do not add up"), "%s", err.msg);
    free(b.buf);
}
