/*
 * tests/bench/bench_gguf.c — timing for format/gguf.c and format/gguf_write.c on a file with
 * the Flash file's directory shape (1328 tensors, 129280 tokens, ~128k merges): header parse
 * time, tensor lookups by name, token string access, and the writer's streaming rate.
 * Prints numbers for docs/BENCHMARKS.md; asserts nothing.
 *
 * Usage: bench_gguf DIR [STREAM_MIB]   (writes DIR/bench_dir.gguf and DIR/bench_stream.gguf,
 * removes both at the end)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "format/gguf.h"
#include "format/gguf_write.h"

#define N_TOKENS 129280
#define N_MERGES 127741
#define N_TENSORS 1328

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what, const ds4_error *e) {
    fprintf(stderr, "bench_gguf: %s: %s\n", what, e->msg);
    exit(1);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_gguf DIR [STREAM_MIB]\n");
        return 2;
    }
    uint64_t stream_mib = argc > 2 ? strtoull(argv[2], NULL, 10) : 1024;
    char path[4096], path2[4096];
    snprintf(path, sizeof path, "%s/bench_dir.gguf", argv[1]);
    snprintf(path2, sizeof path2, "%s/bench_stream.gguf", argv[1]);
    ds4_error e;
    gguf_writer *w;

    /* Directory-shaped file: tokenizer arrays plus 1328 small tensors. */
    char **toks = malloc(N_TOKENS * sizeof *toks);
    for (int i = 0; i < N_TOKENS; i++) {
        toks[i] = malloc(16);
        snprintf(toks[i], 16, "tok%d", i * 7919 % 1000003);
    }
    char (*names)[64] = malloc(N_TENSORS * sizeof *names);
    for (int i = 0; i < N_TENSORS; i++)
        snprintf(names[i], 64, "blk.%d.tensor_%d.weight", i / 31, i % 31);
    if (gguf_writer_create(&w, path, &e) || gguf_writer_add_str(w, "general.name", "bench", &e) ||
        gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)toks, N_TOKENS, &e) ||
        gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", (const char *const *)toks, N_MERGES, &e))
        die("write metadata", &e);
    uint64_t ne[2] = {64, 2};
    for (int i = 0; i < N_TENSORS; i++)
        if (gguf_writer_add_tensor(w, names[i], 0, 2, ne, &e)) die("add tensor", &e);
    if (gguf_writer_write_header(w, &e)) die("header", &e);
    static float row[128];
    for (int i = 0; i < N_TENSORS; i++)
        if (gguf_writer_write(w, row, sizeof row, &e)) die("data", &e);
    if (gguf_writer_finish(w, &e)) die("finish", &e);
    gguf_writer_free(w);

    double best_open = 1e9;
    gguf_ctx *g = NULL;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now_s();
        if (gguf_open(&g, path, &e)) die("open", &e);
        double dt = now_s() - t0;
        if (dt < best_open) best_open = dt;
        if (rep < 4) gguf_close(g);
    }
    double t0 = now_s();
    uint64_t found = 0;
    for (int rep = 0; rep < 100; rep++)
        for (int i = 0; i < N_TENSORS; i++) found += gguf_find_tensor(g, names[i]) != NULL;
    double lookup_ns = (now_s() - t0) / (100.0 * N_TENSORS) * 1e9;
    const gguf_value *arr;
    if (gguf_get_arr(g, "tokenizer.ggml.tokens", &arr, &e)) die("tokens", &e);
    t0 = now_s();
    uint64_t total_len = 0;
    for (int rep = 0; rep < 10; rep++)
        for (uint64_t i = 0; i < arr->n_elems; i++) {
            gguf_str s;
            if (gguf_arr_str(arr, i, &s, &e)) die("token", &e);
            total_len += s.len;
        }
    double tok_ns = (now_s() - t0) / (10.0 * N_TOKENS) * 1e9;
    printf("directory file: %llu bytes, %llu keys, %llu tensors\n",
           (unsigned long long)gguf_file_bytes(g), (unsigned long long)gguf_n_kv(g),
           (unsigned long long)gguf_n_tensors(g));
    printf("gguf_open (best of 5): %.2f ms\n", best_open * 1e3);
    printf("gguf_find_tensor: %.0f ns per lookup (%llu found)\n", lookup_ns,
           (unsigned long long)found);
    printf("gguf_arr_str: %.1f ns per token (%llu bytes)\n", tok_ns, (unsigned long long)total_len);
    gguf_close(g);
    remove(path);

    /* Streaming: one tensor of STREAM_MIB MiB in 4 MiB chunks, fsync and rename included. */
    size_t chunk = 4u << 20;
    uint8_t *buf = malloc(chunk);
    for (size_t i = 0; i < chunk; i++) buf[i] = (uint8_t)(i * 131);
    uint64_t ne_big[2] = {1u << 20, stream_mib};   /* I8: 1 MiB rows */
    if (gguf_writer_create(&w, path2, &e) || gguf_writer_add_tensor(w, "big", 24, 2, ne_big, &e) ||
        gguf_writer_write_header(w, &e))
        die("stream setup", &e);
    t0 = now_s();
    for (uint64_t left = stream_mib << 20; left;) {
        uint64_t k = left < chunk ? left : chunk;
        if (gguf_writer_write(w, buf, k, &e)) die("stream", &e);
        left -= k;
    }
    if (gguf_writer_finish(w, &e)) die("stream finish", &e);
    double dt = now_s() - t0;
    gguf_writer_free(w);
    printf("writer stream: %llu MiB in %.2f s = %.0f MB/s (fsync included)\n",
           (unsigned long long)stream_mib, dt, (double)(stream_mib << 20) / dt / 1e6);
    remove(path2);
    for (int i = 0; i < N_TOKENS; i++) free(toks[i]);
    free(toks);
    free(names);
    free(buf);
    return 0;
}
