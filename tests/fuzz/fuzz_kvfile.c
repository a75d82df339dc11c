/*
 * tests/fuzz/fuzz_kvfile.c — libFuzzer target for disk KV cache files: the input becomes the
 * file <sha256 of tokens 1,2,3,4>.kv in a fresh scratch directory (removed afterwards), which is then indexed (header and
 * size checks), looked up (checksum, token and payload checks) and its trailer listed, as a
 * restarted server would. Nothing may crash, overread or allocate beyond the file's size.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "serve/kvstore.h"
#include "serve/toolids.h"


static void import(void *ud, const unsigned char *t, size_t n) { srv_toolmem_import(ud, t, n); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/ds4-fuzz-kv-XXXXXX");
    if (!mkdtemp(dir)) abort();
    static const int32_t toks[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    char key[65], path[160];
    srv_kv_key(toks, 4, key);
    snprintf(path, sizeof path, "%s/%s.kv", dir, key);
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    srv_kvstore *kv = NULL;
    if (srv_kv_open(&kv, dir, 1u << 20, "fuzz-model", NULL, NULL) == DS4_OK) {
        srv_toolmem *tm = NULL;
        if (srv_toolmem_create(&tm, 64, 1u << 16, NULL) == DS4_OK) {
            srv_kv_each_trailer(kv, import, tm);
            srv_toolmem_free(tm);
        }
        srv_kv_entry e;
        if (srv_kv_lookup(kv, toks, 8, 1, &e)) srv_kv_entry_free(&e);
        srv_kv_close(kv);
    }
    unlink(path);
    rmdir(dir);
    return 0;
}
