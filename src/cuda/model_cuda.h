/*
 * cuda/model_cuda.h — the V4 model on the GPU (issue #7): device copies of every weight of an
 * opened CPU model (model/model.h), a device attention state laid out like model/kvstate.c,
 * and the per-token forward pass built from the op table (cuda/cuda_api.h), doing the steps
 * of model/forward.c, attention.c, moe.c in the same order (MODEL_MATH.md is the contract).
 *
 * Owns: weight upload (once, from the GGUF mapping), device state, the GPU forward.
 * Must not: parse files or validate weights (model_open did that), or define its own payload:
 * a device state is saved by copying it into its host model_state and serializing that, so a
 * CPU snapshot resumes on the GPU and back (kvstate.c format).
 *
 * Built only by `make cuda` (C calling the extern "C" op table; nvcc for the .cu helpers).
 * Every call returns ds4_status and fills ds4_error; nothing prints or exits.
 */
#ifndef DS4_CUDA_MODEL_CUDA_H
#define DS4_CUDA_MODEL_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ds4.h"
#include "format/gguf.h"
#include "cpu/matmul.h"
#include "model/model.h"

typedef struct cuda_model cuda_model;
typedef struct cuda_state cuda_state;

/* Uploads every tensor the forward pass reads: the GGUF data region in one copy (matrices are
 * addressed in place, as on the CPU) and the small f32 tables model_open decoded (norms, HC
 * scale/base, sinks, router bias, compressor ape, tid2eid). `m` and `g` must outlive the result.
 * dev: CUDA device index. DS4_ERR_UNSUPPORTED without a GPU, DS4_ERR_NOMEM when it does not
 * fit (the message names the size). MTP from a companion GGUF is not uploaded (see eval). */
ds4_status cuda_model_open(cuda_model **out, const model *m, const gguf_ctx *g, int dev,
                           ds4_error *err);

/* A span of the data region made on the device instead of uploaded (issue #7: full-size
 * synthetic models, tools/ds4-bench/synth.c): random valid blocks of `type` with every block's
 * f16 scales set to d_f16 / dmin_f16 (cuda/synth_cuda.h; the same bytes as synth_fill_host).
 * offset is relative to the data region (gguf_tensor.offset). */
typedef struct cuda_synth_span {
    uint64_t offset, n_bytes, seed;
    uint32_t type;
    uint16_t d_f16, dmin_f16;
} cuda_synth_span;

/* cuda_model_open for a GGUF whose quantized tensors were never written on the host: the
 * spans `fills` lists (sorted by offset, disjoint) are filled on the device; the rest of the
 * data region (small tables, F16/F32 tensors) is uploaded from g's buffer as usual, so the
 * host pages of the spans are never read (an anonymous mapping stays unallocated). */
ds4_status cuda_model_open_synth(cuda_model **out, const model *m, const gguf_ctx *g, int dev,
                                 const cuda_synth_span *fills, int64_t n_fill, ds4_error *err);
/* What the auto-fit keeps free beyond the weights and the caller's reserve: small f32 tables,
 * the decode graph, library workspaces (the CUDA context already exists when free memory is
 * read; the batched-prefill chunk is in cuda_state_device_bytes). */
#define CUDA_FIT_MARGIN_BYTES (1ull << 30)
/* Most tokens of a batched-prefill chunk: forward_chunk.c's CHUNK_MAX is this constant, and
 * cuda_state_device_bytes sizes the chunk workspace the auto-fit reserves for it. */
#define CUDA_CHUNK_TOKENS_EST 2048

/* Where the routed experts live (issue #7: q2 Flash, 80.76 GiB, on one 80 GB card). The
 * ffn_{gate,up,down}_exps tensors of the FIRST n_layer - gpu_layers_experts layers are kept in
 * pinned host memory mapped into the device, so the same kernels read a token's 6 selected
 * experts over PCIe; everything else is in device memory. Why the first layers: Flash's first
 * layers route by token id (hash layers, MODEL_MATH §9: tid2eid), so their experts are known
 * when a step starts and could be prefetched ahead of use; and a layer's experts are the same
 * bytes at any depth, so the choice costs nothing now (llama.cpp's --n-cpu-moe also counts
 * from the first layer). */
typedef struct cuda_model_opts {
    /* Layers whose experts stay on the device: -1 = as many as fit (auto-fit: device free
     * memory, from cudaMemGetInfo, must hold the weights + reserve_bytes); 0..n_layer = that
     * many (the rest on the host, no fit check beyond the allocations themselves). */
    int gpu_layers_experts;
    /* Device bytes the auto-fit leaves free for states and workspaces (cuda_state_device_bytes
     * of the contexts to come); a fixed margin for the CUDA context, small tables and libraries
     * is added on top. */
    uint64_t reserve_bytes;
} cuda_model_opts;

/* cuda_model_open / cuda_model_open_synth with placement options (NULL = all experts that
 * fit on the device). DS4_ERR_NOMEM, naming the sizes, when even every layer's experts on the
 * host does not fit the device, or the host memory cannot be pinned; DS4_ERR_INVALID_ARG for
 * gpu_layers_experts outside [-1, n_layer]. Synthetic spans on the host are written by the
 * device through the mapping (their host pages of g's buffer are never read either). */
ds4_status cuda_model_open_ex(cuda_model **out, const model *m, const gguf_ctx *g, int dev,
                              const cuda_model_opts *opts, const cuda_synth_span *fills,
                              int64_t n_fill, ds4_error *err);
/* Layers whose experts are on the device, and the bytes of experts in pinned host memory. */
int64_t cuda_model_gpu_layers_experts(const cuda_model *cm);
uint64_t cuda_model_host_expert_bytes(const cuda_model *cm);
/* Address the device reads bytes [off, off + n_bytes) of the data region at (device memory or
 * mapped host memory; copy with cuda_copy), NULL when out of range. */
const void *cuda_model_data_addr(const cuda_model *cm, uint64_t off, uint64_t n_bytes);
/* Estimated device bytes of cuda_state_create for a host state of n_ctx tokens of model m:
 * the KV state (model_memory_estimate's, an upper bound of the device copy), the attention
 * and indexer scratch at the last position, and the batched-prefill chunk workspace of
 * min(n_ctx, CUDA_CHUNK_TOKENS_EST) tokens. For the auto-fit's reserve. */
uint64_t cuda_state_device_bytes(const model *m, int64_t n_ctx);

/* Device address of the data region (offset 0 = gguf_tensor.offset 0), e.g. to read back what
 * cuda_model_open_synth made. With experts on the host the device copy is compacted (host
 * spans cut out): use cuda_model_data_addr. */
const void *cuda_model_device_data(const cuda_model *cm);
void cuda_model_close(cuda_model *cm);
/* Device bytes the weights occupy (the data region minus the experts kept on the host). */
uint64_t cuda_model_weight_bytes(const cuda_model *cm);

/* A device state mirroring `host` (same model and n_ctx): the host state stays the owner of
 * the position and is the staging area of snapshots. Starts equal to host (uploaded). */
ds4_status cuda_state_create(cuda_state **out, cuda_model *cm, model_state *host,
                             ds4_error *err);
void cuda_state_free(cuda_state *s);

/* Which copy is current: after cuda_model_eval the device is, and the host KV buffers are
 * stale until cuda_state_sync_host (call it before model_state_serialize). After the caller
 * changes the host state (model_state_reset, model_state_deserialize) it calls
 * cuda_state_host_changed; the next eval uploads it first. */
ds4_status cuda_state_sync_host(cuda_state *s, ds4_error *err);
void cuda_state_host_changed(cuda_state *s);

/* Verification hook (tests, debugging): after every matrix-vector product of the forward pass
 * fn gets the layer (n_layer for the output head), a name ("attn.wq_a", "moe.down[k]", ...), the
 * host weight view and host copies of the input and of the GPU's output (valid during the
 * call), so the caller can recompute it on the CPU. NULL turns it off. Slow: every vector is
 * downloaded. */
typedef void (*cuda_check_fn)(void *user, int64_t layer, const char *what, const cpu_mat *w,
                              const float *x, const float *y);
void cuda_state_set_check(cuda_state *s, cuda_check_fn fn, void *user);

/* CUDA graph for the per-token step (default on): the layers of a token are captured and
 * launched as one graph, updated in place for the next position. Off: op by op (the
 * verification hook and capture hooks always run op by op). Results are the same either way. */
void cuda_state_set_graph(cuda_state *s, bool on);

/* Per-op timing (tests, benchmarks): while on, the forward runs op by op with a CUDA event
 * after every op; collect waits for the device and calls fn once per op since the last collect
 * with the op's call site (a line of cuda/forward_cuda.c) and its milliseconds. */
ds4_status cuda_state_set_profile(cuda_state *s, bool on, ds4_error *err);
ds4_status cuda_state_profile_collect(cuda_state *s, void (*fn)(void *user, int line, float ms),
                                      void *user, ds4_error *err);
/* The call site behind a tag that collect passed as `line` (tags index the state's table of
 * sites): the call's source text or the product's name ("wq_a"), and its line in
 * cuda/forward_cuda.c; NULL for an unknown tag. Without hooks each layer's ops run behind a
 * gate (prof.cu), so the times are GPU time back to back, not launch gaps. */
const char *cuda_state_profile_site(const cuda_state *s, int tag, int *line);

/* model_eval on the GPU: same arguments, checks and results (logits within the tolerances of
 * tests/cuda/test_cuda_model.c). Tokens are evaluated one at a time; the host state's
 * position advances, its KV buffers are left stale (see above). Capture hooks (model.h) are
 * called like the CPU's, one token at a time (each downloads its rows: slow). */
ds4_status cuda_model_eval(cuda_model *cm, cuda_state *s, const int32_t *tokens,
                           int64_t n_tokens, const model_eval_opts *opts, ds4_error *err);

#endif
