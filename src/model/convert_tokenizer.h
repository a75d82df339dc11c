/*
 * model/convert_tokenizer.h — tokenizer metadata for converted GGUFs (GGUF_LAYOUT §7.1).
 * Must not: tokenize, or read anything but the tokenizer.json it is given.
 */
#ifndef DS4_MODEL_CONVERT_TOKENIZER_H
#define DS4_MODEL_CONVERT_TOKENIZER_H

#include <stdint.h>
#include "ds4.h"
#include "format/gguf_write.h"

/* Adds tokenizer.ggml.{model, pre, tokens, token_type, merges, bos/eos/padding ids,
 * add_bos/add_eos} and ds4's special/normalized id lists from `path`. *n_tokens (nullable)
 * receives the token count so the caller can compare it with the model's vocab_size. */
ds4_status cv_tokenizer_write(gguf_writer *w, const char *path, uint32_t *n_tokens,
                              ds4_error *err);

#endif
