/*
 * model/convert_imatrix.h — importance-matrix files for the converter: the legacy llama.cpp
 * `.dat` format ds4 writes (GGUF_LAYOUT §5.5), read and validated, and the per-tensor /
 * per-expert lookup the encoders use. Must not: quantize, or know tensor shapes beyond the
 * column counts it is asked about.
 */
#ifndef DS4_MODEL_CONVERT_IMATRIX_H
#define DS4_MODEL_CONVERT_IMATRIX_H

#include <stdint.h>
#include "ds4.h"

typedef struct cv_imatrix cv_imatrix;

/* Reads and validates a whole file (each vector divided by its ncall; non-finite or negative
 * values are errors naming the entry). */
ds4_status cv_imatrix_load(cv_imatrix **out, const char *path, ds4_error *err);
/* The same from memory (tests); label is used in messages and as the provenance path. */
ds4_status cv_imatrix_parse(cv_imatrix **out, const uint8_t *data, uint64_t n_bytes,
                            const char *label, ds4_error *err);
void cv_imatrix_free(cv_imatrix *im);

uint64_t cv_imatrix_count(const cv_imatrix *im);
const char *cv_imatrix_path(const cv_imatrix *im);
/* Dataset trailer (NULL when absent) and chunk count (0 when absent). */
const char *cv_imatrix_dataset(const cv_imatrix *im);
uint64_t cv_imatrix_chunks(const cv_imatrix *im);

/* Importance vector (n_cols floats) for `expert` of a routed tensor (expert < n_experts), or
 * for a plain tensor (n_experts == 0). Tries "<gguf>.expert.X", "<hf>.expert.X",
 * "<gguf>.expert_X", "<hf>.expert_X", then "<gguf>", "<hf>"; an entry of n_cols values is used
 * as is, one of n_cols * n_experts is sliced at expert X. *out = NULL when nothing matches;
 * DS4_ERR_FORMAT when a matching entry has another length. hf may be NULL. */
ds4_status cv_imatrix_find(const cv_imatrix *im, const char *gguf_name, const char *hf_name,
                           uint32_t expert, uint64_t n_experts, uint64_t n_cols,
                           const float **out, ds4_error *err);

#endif
