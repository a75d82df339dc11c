/*
 * model/engine.h — what session.c and the tools need from an open engine beyond the public
 * API: the GGUF context, the model and its identity. Internal; the public face is the "Engine
 * and sessions" section of include/ds4.h.
 */
#ifndef DS4_MODEL_ENGINE_H
#define DS4_MODEL_ENGINE_H

#include <pthread.h>
#include <stdint.h>

#include "ds4.h"
#include "format/gguf.h"
#include "model/model.h"

struct ds4_engine {
    gguf_ctx *gguf;          /* owns the mapping the model points into */
    model *model;
    ds4_model_info info;
    /* model_eval must not run concurrently on one model (model.h, "Threading"): sessions of
     * one engine driven from different threads take turns through this lock. */
    pthread_mutex_t eval_mu;
    /* Backend "cuda" (builds with -DDS4_CUDA, cuda/model_cuda.h): the model on the GPU;
     * NULL for the CPU backend. Sessions then evaluate there (session.c). */
    struct cuda_model *cuda;
};

/* The model behind an engine (for tools that need capture hooks, e.g. --dump-layers). */
static inline model *ds4_engine_model(ds4_engine *e) { return e->model; }

/* Opens with an explicit indexer top-k override (> 0), for golden comparisons run with a
 * different index_topk than the file's (tiny-v4 golden_topk512). */
ds4_status ds4_engine_open_ex(ds4_engine **out, const char *gguf_path, const ds4_engine_options *opt,
                              int64_t idx_topk_override, ds4_error *err);

/* Routes the model's capture hooks (model_capture, model.h) for every later eval of s; NULL
 * turns them off. cap must outlive its use. For --dump-layers and golden tests. */
void ds4_session_set_capture(ds4_session *s, const model_capture *cap);

/* ds4_session_eval_tokens that also returns the final hyper-connection state of every token,
 * hc_out [n_tokens][n_hc * n_embd] (the MTP block's input, MODEL_MATH §11). */
ds4_status ds4_session_eval_tokens_hc(ds4_session *s, const int32_t *tokens, uint32_t n_tokens,
                                      float *logits_out, float *hc_out, ds4_error *err);

/* Runs the session's MTP block (model_eval_mtp) on n rows: hc_in[i] with tokens[i], at MTP
 * positions continuing from the last call (0 after create/reset/restore). logits [n][vocab]. */
ds4_status ds4_session_eval_mtp(ds4_session *s, const float *hc_in, const int32_t *tokens, uint32_t n,
                                float *logits, ds4_error *err);

/* Identity hash of an open GGUF (see engine.c for what it covers). */
void engine_model_id(const gguf_ctx *g, uint8_t out[32]);

#endif
