/*
 * tests/fuzz/fuzz_snapshot.c — fuzzes the snapshot loader (src/model/snapshot.c). The first input
 * byte picks the mode: even = the rest is a snapshot as found on disk (exercises the checksum
 * gate); odd = the rest is a snapshot without its trailing SHA-256, which the harness appends, so
 * mutations reach every field check behind the checksum. On acceptance every view is read in
 * full, so a view that points outside the input is caught by ASan.
 */
#include <openssl/sha.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/snapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int seal = data[0] & 1;
    data++;
    size--;
    uint64_t n = size + (seal ? SNAP_HASH_BYTES : 0);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    if (seal) SHA256(buf, size, buf + size);
    snap_view v;
    ds4_error err;
    if (snap_parse(&v, buf, n, &err) == DS4_OK) {
        volatile uint64_t acc = 0;
        for (uint32_t i = 0; i < v.meta.n_tokens; i++) acc += (uint32_t)snap_token(&v, i);
        if (v.meta.n_vocab) {
            float *lg = malloc((size_t)v.meta.n_vocab * sizeof *lg);
            if (lg) {
                snap_copy_logits(&v, lg);
                uint32_t bits;
                memcpy(&bits, &lg[v.meta.n_vocab - 1], 4);
                acc += bits;
                free(lg);
            }
        }
        for (uint64_t i = 0; i < v.meta.payload_bytes; i++) acc += v.payload[i];
        (void)acc;
    }
    free(buf);
    return 0;
}
