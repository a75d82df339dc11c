/*
 * cuda/model_cuda_impl.h — internals shared by model_cuda.c (weights, state) and
 * forward_cuda.c (the per-token forward): device views of the weights, the device state and
 * the per-token workspace. Not for use outside model_cuda*.c/.cu and forward_cuda.c.
 */
#ifndef DS4_CUDA_MODEL_CUDA_IMPL_H
#define DS4_CUDA_MODEL_CUDA_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include "cuda/cuda_api.h"
#include "cuda/model_cuda.h"
#include "model/forward.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A matrix resident on the device: rows of `cols` values of ggml `type`, row r at
 * d + r*row_bytes (a cpu_mat with a device pointer). */
typedef struct cu_mat {
    int type;
    int64_t rows, cols;
    uint64_t row_bytes;
    const uint8_t *d;
    const cpu_mat *host;      /* the CPU view (verification hook) */
} cu_mat;

/* Rows [r0, r0 + n) of w as a matrix of their own (wo_a's output groups, MODEL_MATH §5.6); its
 * CPU view, if w has one, is *host_rows, which must outlive the result. */
static inline cu_mat cu_mat_rows(const cu_mat *w, int64_t r0, int64_t n, cpu_mat *host_rows) {
    cu_mat r = *w;
    r.d += (uint64_t)r0 * r.row_bytes;
    r.rows = n;
    if (r.host) {
        *host_rows = cpu_mat_rows(r.host, r0, n);
        r.host = host_rows;
    }
    return r;
}

/* Routed experts [cols, rows, n_expert] (GGUF_LAYOUT §3.5). */
typedef struct cu_experts {
    int type;
    int64_t n_expert, rows, cols;
    const uint8_t *d;
    const experts_mat *host;
} cu_experts;

typedef struct cu_comp_w {
    cu_mat kv, gate;
    float *ape, *norm;
} cu_comp_w;

typedef struct cu_layer {
    cu_mat hc_attn_fn, hc_ffn_fn;
    float *hc_attn_scale, *hc_attn_base, *hc_ffn_scale, *hc_ffn_base;
    float *attn_norm, *ffn_norm, *q_norm, *kv_norm, *sinks;
    cu_mat wq_a, wq_b, wkv, wo_a, wo_b;
    bool has_comp, has_indexer, has_shared;
    cu_comp_w comp, idx_comp;
    cu_mat idx_wq_b, idx_proj, gate_inp;
    float *exp_bias;          /* NULL on hash layers */
    int32_t *tid2eid;         /* NULL on biased layers */
    cu_experts gate_exps, up_exps, down_exps;
    cu_mat sh_gate, sh_up, sh_down;
} cu_layer;

/* A piece of the GGUF data region and where the device reads it (issue #7): a slice of the
 * device copy, or of pinned host memory mapped into the device (routed experts of the layers
 * kept on the host, model_cuda.h cuda_model_opts). The pieces tile [0, data_bytes) in order. */
typedef struct cu_seg {
    uint64_t off, n_bytes;    /* [off, off + n_bytes) of the data region */
    uint8_t *d;               /* device address of off */
    uint8_t *h;               /* host address of off (pinned block), NULL for device memory */
} cu_seg;

struct cuda_model {
    const model *m;
    const gguf_ctx *g;
    int dev;
    uint8_t *d_data;          /* the GGUF data region */
    const uint8_t *h_data;    /* its host address (mapping) */
    uint64_t data_bytes;
    cu_layer *layers;         /* n_layer */
    cu_mat out_hc_fn, output;
    cu_mat tok_embd;          /* device view when the table is F32/F16/BF16, else d == NULL */
    float *out_hc_scale, *out_hc_base, *out_norm;
    float *freqs_plain, *freqs_comp;
    void **allocs;            /* small device tables, freed at close */
    int n_allocs, cap_allocs;
    cu_seg *segs;             /* where each piece of the data region lives (d_data compacted) */
    int n_segs;
    void *h_pin;              /* pinned host block of the host-resident experts, NULL if none */
    int64_t n_host_layers;    /* layers [0, n_host_layers) have their experts in h_pin */
    uint64_t host_bytes;      /* bytes of h_pin in use */
};

typedef struct cu_kv_layer {
    float *raw;               /* [n_window][head_dim] */
    cuda_comp_state comp, idx;
} cu_kv_layer;

/* Call sites a profile tells apart (forward_cuda.c has ~80). */
#define CU_PROF_SITES 512

/* Per-token workspace (decode: one token at a time). */
typedef struct cu_ws {
    float *X, *X2, *a, *mix, *pre, *post, *comb, *qr, *q, *o, *kv, *cA, *cB, *iA, *iB, *iq,
        *iw, *oa, *f, *rl, *selw, *g, *u, *yexp, *shg, *shu, *shy, *y, *logits;
    int32_t *sel, *isel, *n_isel, *tok;
    void *act;                /* quantized activations */
    float *attn_scr, *idx_scr;
    float *h_row;             /* host [hc*D]: embedding row staging */
} cu_ws;

struct cuda_state {
    cuda_model *cm;
    model_state *host;
    cu_kv_layer *layers;
    cu_ws ws;
    void *block;              /* one device allocation holding the workspace */
    bool dev_newer;           /* host KV buffers stale (an eval ran since the last sync) */
    bool host_newer;          /* device stale (host reset or restored) */
    cuda_check_fn check;      /* verification hook, NULL = off */
    void *check_user;
    float *h_x, *h_y;         /* host buffers of the hook */
    size_t h_cap;             /* floats in each */
    cuda_graph *graph;        /* the captured decode step (forward_cuda.c), NULL until first use */
    int64_t graph_bound;      /* the position bound it was captured for */
    int64_t *d_pos;           /* device copy of the token's position (graph steps) */
    void *qa[3];              /* a quantized per CUDA_ACT_* kind (forward_cuda.c act_of_a) */
    bool qa_ok[3];            /* qa[k] holds the current a */
    void *qo;                 /* o quantized for the grouped output projection */
    int32_t *grp_ids;         /* device 0..o_groups-1: wo_a's groups as one grouped launch */
    uint8_t *d_stage;         /* the selected experts of a host-resident layer, staged (decode) */
    int32_t *stage_ids;       /* device 0..n_expert_used-1: the staged experts' ids */
    int64_t stage_each[3];    /* bytes of one expert of gate, up, down (the host layers' max) */
    cuda_prof *prof;          /* cuda_state_set_profile: events after every op, NULL = off */
    bool no_graph;            /* cuda_state_set_graph(s, false): launch op by op */
    bool graphing;            /* a capture is open: ops read the position from d_pos */
    struct cu_bws *bws;       /* forward_chunk.c: workspace of a prefill chunk, NULL until used */
    bool batch;               /* prefill chunks batched (forward_chunk.c; on by default,
                               * cuda_state_set_batch(s, false) / DS4_CUDA_BATCH=0: off) */
    /* Profile call sites (cuda_prof_site): tag i = (prof_line[i], prof_name[i]);
     * prof_what names the product the next mark closes (set by the mv helpers). */
    int prof_line[CU_PROF_SITES];
    const char *prof_name[CU_PROF_SITES];
    int n_prof_site;
    const char *prof_what;
    cuda_graph *graph_head;   /* forward_cuda.c: output head + argmax of the current token */
    int32_t *d_greedy;        /* device: the argmax the head graph writes */
    bool fuse_norm;           /* forward_cuda.c: attention's norm chains as normfuse.cu launches */
};

/* forward_cuda.c: frees what the forward allocated in the state (graph_head, d_greedy). */
void cuda_forward_free(cuda_state *s);
/* Marks the end of the op at (line, expr) of forward_cuda.c / forward_chunk.c with a CUDA event
 * tagged by its call site (profiling on; s->prof_what names a product instead of expr). */
void cuda_prof_site(cuda_state *s, int line, const char *expr);

/* Uploads the host state when it changed since the last upload (model_cuda.c). */
ds4_status cuda_state_sync_device(cuda_state *s, ds4_error *err);

/* model_cuda_dev.cu: device-to-device copy and fill on the default stream. */
ds4_status cuda_copy_d2d(void *d_dst, const void *d_src, size_t n_bytes, ds4_error *err);

/* rows.cu: dst[dst_idx[i]] = src[src_idx[i]], n rows of D floats (NULL index = identity). */
ds4_status cuda_rows_copy(float *d_dst, const int32_t *d_dst_idx, const float *d_src,
                          const int32_t *d_src_idx, int64_t n, int64_t D, ds4_error *err);

/* forward_chunk.c: n_tokens (> 1) at the state's position through the layers with the batched
 * ops (cuda_matmul, chunk attention, grouped experts); hc_out / logits as cuda_model_eval.
 * Capture hooks (o->capture) and the verification hook (cuda_state_set_check) per chunk. */
ds4_status cuda_eval_chunk(cuda_state *s, const int32_t *tokens, int64_t n_tokens,
                           const model_eval_opts *o, ds4_error *err);
void cuda_chunk_free(cuda_state *s);
/* Batched prefill on (the default), or off (token by token, the decode path). */
void cuda_state_set_batch(cuda_state *s, bool on);

#ifdef __cplusplus
}
#endif

#endif
