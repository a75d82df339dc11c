/*
 * tests/test_model_util.h — helpers for the model tests: converting the tiny-v4 checkpoint
 * (or a synthetic shape) with the converter library into a scratch GGUF, opening it as a
 * model, reading golden tensors from ../shared/testdata/tiny-v4 in place, and comparing.
 * Every failure fails the current test loudly.
 */
#ifndef DS4_TEST_MODEL_UTIL_H
#define DS4_TEST_MODEL_UTIL_H

#include <stdbool.h>
#include <stdint.h>

#include "format/gguf.h"
#include "format/safetensors.h"
#include "model/model.h"

/* Converts ../shared/testdata/tiny-v4 with `preset` ("f32", "bf16", "q8_0", "q2", "q4") into
 * a fresh scratch file; returns its path (caller frees). */
char *tm_convert_tiny(const char *preset);
/* Same with one converter family override ("dense=f32"), NULL for none. */
char *tm_convert_tiny_ex(const char *preset, const char *override);

typedef struct tm_model {
    gguf_ctx *g;
    model *m;
} tm_model;

/* Opens a GGUF as a model (topk_override > 0 replaces the indexer top-k). */
void tm_open(tm_model *tm, const char *path, int64_t topk_override);
void tm_close(tm_model *tm);

/* Deletes a scratch file made by the helpers above (and its directory when empty); frees
 * `path`. GGUFs are tens of MB per test, so tests clean up after themselves. */
void tm_remove(char *path);
/* Removes an (empty) scratch directory from tu_tmpdir(); frees `dir`. */
void tm_rmdir(char *dir);

/* A golden file (golden_topk16 / golden_topk512) and typed tensor access. */
st_file *tm_golden(const char *file);
const st_tensor *tm_tensor(st_file *f, const char *name, int dtype);
const float *tm_f32(st_file *f, const char *name, uint64_t *n_elems);
const int32_t *tm_i32(st_file *f, const char *name, uint64_t *n_elems);

/* Rewrites GGUF `src` into `dst`: every weight tensor decoded to F32 when to_f32 (the
 * "dequantized" twin of a quantized file), tensor `skip` (NULL: none) left out, and metadata
 * key `u32_key` (NULL: none) set to u32_val. */
void tm_rewrite_gguf(const char *src, const char *dst, bool to_f32, const char *skip,
                     const char *u32_key, uint32_t u32_val);

/* Splits `src` into a main file without mtp.* tensors and a companion holding only them
 * (the published ds4 layout, GGUF_LAYOUT §3.8). */
void tm_split_mtp(const char *src, const char *main_dst, const char *mtp_dst);

/* Converts a synthetic model (converter library, --synthetic): shape preset or config.json
 * path, preset, seed, experts count (0 = keep). Returns the scratch path (caller frees). */
char *tm_convert_synthetic(const char *shape, const char *preset, uint32_t n_layers,
                           uint32_t n_experts, uint64_t seed);

/* max |a - b| over n values; *at gets the index of the max. */
double tm_max_abs(const float *a, const float *b, int64_t n, int64_t *at);

/* Argmax of one row. */
int32_t tm_argmax(const float *row, int64_t n);

#endif
