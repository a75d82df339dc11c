/*
 * cuda/forward_impl.h — what the one-token forward files share (forward_cuda.c: the layer
 * order, attention, head; forward_moe.c: the MoE sub-layer): the checked-call macros that
 * mark profile call sites, and the product helpers with the verification hook. Internal to
 * src/cuda.
 */
#ifndef DS4_CUDA_FORWARD_IMPL_H
#define DS4_CUDA_FORWARD_IMPL_H

#include "cuda/model_cuda_impl.h"

/* With profiling on (cuda_state_set_profile) every op is followed by a CUDA event tagged with
 * its call site (the calling file's line and the call's text, or the product's name), so a step's
 * time breaks down per call site. */
#define CK(x)                                                                                  \
    do {                                                                                       \
        if ((st = (x)) != DS4_OK) return st;                                                   \
        if (s->prof) cuda_prof_site(s, __LINE__, #x);                                               \
    } while (0)

/* A call whose own ops are marked inside it (or that launches nothing): no mark of its own,
 * else the profile shows a row of pure event overhead (~1.5 us) for it. */
#define CKQ(x)                                                                                 \
    do {                                                                                       \
        if ((st = (x)) != DS4_OK) return st;                                                   \
    } while (0)


/* Issue #7, fewer launches around the attention sub-layer (h3, session 3), a bit mask from
 * DS4_CUDA_FUSE3 (0: none; default F3_DEFAULT): F3_POST = a sub-layer's hc_post waits and runs
 * inside the next HC mix's launch (hc.cu cuda_hc_mix_fused), F3_PRE = hc_pre joins that launch,
 * F3_CPAIR = the compressor's kv + gate as one launch, F3_CPUSH = a graph's compressor push as
 * one launch, F3_RING = the window ring store inside the kv norm chain's launch. Each fused path
 * is bit-identical to the separate ops. Off (0) under the verification hook (it checks each
 * product). */
enum { F3_POST = 1, F3_PRE = 2, F3_CPAIR = 4, F3_CPUSH = 8, F3_RING = 16 };
#define F3_DEFAULT (F3_POST | F3_PRE | F3_CPAIR | F3_CPUSH | F3_RING)
int cuda_fwd_fuse3(const cuda_state *s);

/* forward_attn.c: the attention sub-layer of layer il for the token at pos (model/attention.c
 * attn_forward), its output projection into ws.f. */
ds4_status cuda_fwd_attn(cuda_state *s, int64_t il, int64_t pos, ds4_error *err);

/* Branches of the captured decode step (issue #7, graph.cu cuda_graph_fork): independent chains
 * of a sub-layer on side streams, so the graph runs them concurrently. On while a graph is
 * captured, never under the verification hook or op by op; DS4_CUDA_BRANCHES (read at capture)
 * is a mask of the kinds on (default all, 0 none). The same kernels on the same inputs: the same
 * bits either way. */
enum {
    FWD_BR_ATTN = 1, /* attention: kv chain, compressors, the indexer's compressor + head weights */
    FWD_BR_Q = 2,    /* attention of ratio-4 layers: wq_b's chain beside the indexer's queries */
    FWD_BR_MOE = 4,  /* MoE: the shared expert beside the router and the routed experts */
    FWD_BR_ALL = 7
};
bool cuda_fwd_branches(const cuda_state *s, int kind);

/* cuda_graph_fork / cuda_graph_join when `on`, else nothing (the ops then run in program
 * order on one stream). */
static inline ds4_status cuda_fwd_fork(bool on, int lane, ds4_error *err) {
    return on ? cuda_graph_fork(lane, err) : DS4_OK;
}
static inline ds4_status cuda_fwd_join(bool on, int lane, ds4_error *err) {
    return on ? cuda_graph_join(lane, err) : DS4_OK;
}

/* Hands the last product to the verification hook (host copies of x [n_x][cols], y). */
ds4_status cuda_fwd_check_mv(cuda_state *s, int64_t il, const char *what, const cpu_mat *w,
                             const float *x, const float *y, int n_x, ds4_error *err);
/* y = w·x for one token (cuda_matvec), then the verification hook. */
ds4_status cuda_fwd_mv(cuda_state *s, int64_t il, const char *what, const cu_mat *w,
                       const float *x, float *y, ds4_error *err);
/* The sub-layer input a quantized for `type` (once per kind; NULL for kinds that read f32). */
ds4_status cuda_fwd_act_of_a(cuda_state *s, int type, int64_t cols, const void **out,
                             ds4_error *err);
/* cuda_fwd_mv with x = a, reusing a's quantized copy. */
ds4_status cuda_fwd_mv_a(cuda_state *s, int64_t il, const char *what, const cu_mat *w, float *y,
                         ds4_error *err);

/* forward_moe.c: the MoE sub-layer of layer il for the current token (router, routed and shared
 * experts, combination into ws.f), and the staging buffer of host-resident experts that
 * eval_prepare allocates before any capture. */
ds4_status cuda_fwd_moe(cuda_state *s, int64_t il, ds4_error *err);
ds4_status cuda_fwd_stage_prepare(cuda_state *s, ds4_error *err);

#endif
