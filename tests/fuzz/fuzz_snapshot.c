/*
 * tests/fuzz/fuzz_snapshot.c — fuzzes the snapshot loader: the container (src/model/snapshot.c)
 * and, when DS4_FUZZ_MODEL names a GGUF (e.g. tiny-v4 f32), the whole restore path into a live
 * session (ds4_session_restore: identity, token and logits checks, the model's own payload
 * parser), followed by one eval so a restored state that is inconsistent shows up as a crash.
 *
 * The first input byte picks the mode: bit0 = the harness appends the SHA-256 (so mutations
 * reach every check behind the checksum), else the input is a snapshot as found on disk; bit1 =
 * the harness writes the loaded model's identity into the header first (so payload mutations
 * reach the model's parser). On acceptance every container view is read in full, so a view
 * that points outside the input is caught by ASan.
 */
#include <openssl/sha.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ds4.h"
#include "model/snapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The optional live session, opened once. */
static ds4_session *live_session(uint8_t id[32]) {
    static int tried;
    static ds4_engine *eng;
    static ds4_session *s;
    static ds4_model_info info;
    if (!tried) {
        tried = 1;
        const char *path = getenv("DS4_FUZZ_MODEL");
        ds4_engine_options o;
        ds4_engine_options_init(&o);
        o.n_threads = 1;
        if (path && *path && ds4_engine_open(&eng, path, &o, NULL) == DS4_OK) {
            ds4_engine_info(eng, &info, NULL);
            if (ds4_session_create(&s, eng, 64, NULL) != DS4_OK) s = NULL;
        }
    }
    if (s) memcpy(id, info.model_id, 32);
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int seal = data[0] & 1, patch_id = data[0] & 2;
    uint8_t id[32];
    ds4_session *live = live_session(id);
    data++;
    size--;
    uint64_t n = size + (seal ? SNAP_HASH_BYTES : 0);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    if (patch_id && live && size >= 48) memcpy(buf + 16, id, 32);
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
        if (live && ds4_session_restore(live, buf, n, &err) == DS4_OK) {
            const float *l;
            if (ds4_session_logits(live, &l, &err) == DS4_OK) acc += (uint64_t)ds4_argmax(l, 1);
            if (ds4_session_eval(live, 1, &err) == DS4_OK) ds4_session_logits(live, &l, &err);
        }
    }
    free(buf);
    return 0;
}
