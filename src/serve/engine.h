/*
 * serve/engine.h — the narrow interface the server drives the model through. The scheduler
 * only sees this table, so it can be tested with a scripted engine and is wired to libds4
 * (tokenizer, chat encoder, engine/session API of include/ds4.h) by engine_ds4.c. Owns no
 * implementation; must not grow server policy.
 *
 * Threading: prompt/tokenize/token_bytes may be called from connection threads concurrently;
 * session_* calls come only from the scheduler's worker thread.
 */
#ifndef DS4_SERVE_ENGINE_H
#define DS4_SERVE_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ds4.h"
#include "serve/buf.h"
#include "serve/request.h"

typedef struct srv_engine {
    void *ctx;
    int n_ctx;              /* tokens per session */
    uint32_t n_vocab;
    int32_t eos;            /* end-of-sentence token id */
    int32_t user_tok;       /* user-turn marker id (cold-anchor saves), -1 if none */
    char model_id[80];      /* identity written into disk-cache files */
    /* Backend "cuda": layers whose routed experts are in device memory, of n_layer; the rest
     * (host_expert_bytes) in pinned host memory (ds4_model_info). */
    uint32_t n_layer, gpu_layers_experts;
    uint64_t host_expert_bytes;

    /* The prompt ids for req (CHAT_ENCODING §3-§6; completions: §3.4 wrapper): template
     * markers are control tokens, client text never is (serve/prompt.c). *toks malloc'd. */
    ds4_status (*prompt)(void *ctx, const srv_request *req, int32_t **toks, size_t *n, ds4_error *err);
    /* Tokenizes text (/tokenize, the test-only forced completion, which stands for sampled model
     * output); flags as ds4_tokenize: 0 recognises special tokens, DS4_TOKENIZE_SPECIAL_AS_TEXT
     * does not. *toks malloc'd (caller frees). */
    ds4_status (*tokenize)(void *ctx, const char *text, size_t len, uint32_t flags, int32_t **toks, size_t *n,
                           ds4_error *err);
    /* Bytes of one token (points into the engine; lives as long as it). */
    ds4_status (*token_bytes)(void *ctx, int32_t tok, const char **p, size_t *n, ds4_error *err);

    ds4_status (*session_create)(void *ctx, void **sess, ds4_error *err);
    void (*session_free)(void *sess);
    /* Makes the session hold exactly toks[0..n): keeps the live state when it is a prefix of
     * the target, else restores the checkpoint when that is, else starts over. *reused gets the
     * number of tokens not recomputed. */
    ds4_status (*session_sync)(void *sess, const int32_t *toks, size_t n, size_t *reused, ds4_error *err);
    /* Remembers the current state as the one rewind point (replaces the previous one). */
    ds4_status (*session_checkpoint)(void *sess, ds4_error *err);
    const int32_t *(*session_tokens)(void *sess, size_t *n);
    ds4_status (*session_eval)(void *sess, int32_t tok, ds4_error *err);
    ds4_status (*session_logits)(void *sess, const float **logits, ds4_error *err);
    /* Optional (NULL: the scheduler samples session_logits itself): the next token drawn by smp
     * where the logits are, ds4_session_sample (on the GPU only the id is downloaded, issue #7);
     * the same token and PRNG advance as ds4_sampler_sample on session_logits. */
    ds4_status (*session_sample)(void *sess, ds4_sampler *smp, int32_t *tok, ds4_error *err);
    void (*session_reset)(void *sess);
    /* Whole-state snapshot (malloc'd, caller frees) and restore. */
    ds4_status (*session_snapshot)(void *sess, uint8_t **out, uint64_t *n, ds4_error *err);
    ds4_status (*session_restore)(void *sess, const uint8_t *buf, uint64_t n, ds4_error *err);
} srv_engine;

/* libds4-backed engine (engine_ds4.c): opens the GGUF and its tokenizer. */
typedef struct srv_ds4_opts {
    const char *model_path;
    int n_ctx;
    int n_threads;
    const char *backend;  /* "cpu" or "cuda" (ds4_engine_options.backend); NULL = cpu */
    int gpu_layers_experts;      /* ds4_engine_options.gpu_layers_experts: -1 = as many as fit */
    uint32_t gpu_ctx_tokens;     /* device state the auto-fit leaves room for (ctx x slots) */
} srv_ds4_opts;
ds4_status srv_engine_ds4_open(srv_engine *out, const srv_ds4_opts *o, ds4_error *err);
void srv_engine_ds4_close(srv_engine *e);
/* Session memory estimate for n_ctx tokens (for the default --slots). */
ds4_status srv_engine_ds4_session_bytes(const srv_engine *e, int n_ctx, uint64_t *bytes, ds4_error *err);

#endif
