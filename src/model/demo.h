/*
 * model/demo.h — the demo model of `ds4 --demo` and `ds4-server --demo`: a small DeepSeek V4
 * with random weights and the real V4 tokenizer, made once through the converter library
 * (model/convert.h + model/synthetic.h) and cached as $XDG_CACHE_HOME/ds4/demo-<version>.gguf
 * (else ~/.cache/ds4/, else ./.ds4-cache/), so clients and newcomers can be wired up without the
 * 81 GB download. Must not: print (callers report progress and label the output as noise).
 *
 * Shape: the converter's "tiny" preset (5 layers, dim 256, 16 experts: every attention kind,
 * the compressors, the hash-routed layers) with the vocabulary widened to the tokenizer's, Q8_0
 * matrices, F16 dense ones (about 100 MB, a few seconds to make). Fixed seed: every build of one
 * version gives the same weights.
 */
#ifndef DS4_MODEL_DEMO_H
#define DS4_MODEL_DEMO_H

#include <stdint.h>

#include "ds4.h"

/* Where the tokenizer is looked for when no path is given, relative to the working directory
 * and to the directory above the running binary. */
#define MODEL_DEMO_TOKENIZER_REL "shared/testdata/tokenizer/deepseek_v4_tokenizer_reconstructed.json"

typedef struct model_demo_progress {
    /* About to build the model from this tokenizer (nullable). */
    void (*start)(void *ud, const char *tokenizer_path);
    /* Output bytes written so far (nullable). */
    void (*update)(void *ud, uint64_t done_bytes, uint64_t total_bytes);
    /* The build ended, successfully or not (nullable). */
    void (*end)(void *ud);
    void *ud;
} model_demo_progress;

/* The cache path of the demo model (malloc'd, caller frees). */
ds4_status model_demo_path(char **out, ds4_error *err);

/* The tokenizer.json to build from: `flag` when given, else $DS4_TOKENIZER, else
 * ../MODEL_DEMO_TOKENIZER_REL from the working directory, else from the binary's directory.
 * DS4_ERR_NOT_FOUND naming what was tried (model_demo_ensure passes it on unchanged, so callers
 * can say the demo needs a tokenizer). *out malloc'd. */
ds4_status model_demo_find_tokenizer(const char *flag, char **out, ds4_error *err);

/* Writes the demo model to path (through path.tmp.PID + rename, so a concurrent reader sees the
 * whole file or none), creating missing directories. progress nullable. */
ds4_status model_demo_build(const char *path, const char *tokenizer_path,
                            const model_demo_progress *progress, ds4_error *err);

/* The cached demo model's path, building it first when it is not there yet. tokenizer_flag as in
 * model_demo_find_tokenizer (only used for a build). *out_path malloc'd. */
ds4_status model_demo_ensure(const char *tokenizer_flag, const model_demo_progress *progress,
                             char **out_path, ds4_error *err);

#endif
