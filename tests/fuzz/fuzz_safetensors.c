/*
 * tests/fuzz/fuzz_safetensors.c — libFuzzer target for the safetensors header parser
 * (st_open_memory). Any input must either open (then every tensor is walked and its bytes
 * touched, so ASan sees an out-of-range pointer) or fail with a message; never crash.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "format/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file *f = NULL;
    ds4_error err;
    if (st_open_memory(&f, data, size, &err) != DS4_OK) {
        if (strlen(err.msg) == 0) __builtin_trap(); /* every failure says why */
        return 0;
    }
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_get(f, i);
        if (st_find(f, t->name) != t) __builtin_trap();
        if (t->n_bytes) sink ^= t->data[0] ^ t->data[t->n_bytes - 1];
    }
    (void)sink;
    st_close(f);
    return 0;
}
