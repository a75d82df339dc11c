/*
 * cuda/attention_dec.cuh — the one-token decode attention of attention_dec.cu, called by
 * attention.cu's attn() for n_tok == 1. Must not: know the model.
 */
#ifndef DS4_CUDA_ATTENTION_DEC_CUH
#define DS4_CUDA_ATTENTION_DEC_CUH

#include "common.cuh"

/* The arguments of one decode attention (see cuda_attn in cuda_api.h; one query token). */
struct attd_in {
    const float *q, *kv_chunk, *ring, *comp, *sinks, *freqs;
    const int32_t *isel, *n_isel;
    int64_t W, topk, pos0, H, Dh;
    int ratio, n_rope;
    const int64_t *dpos; /* position on the device (pos0 is then a bound) */
    int64_t max_keys;    /* bound of the attended rows */
    float *scratch, *out;
    float qn_eps;        /* > 0: q not yet normalized (only attd_cl_launch takes it; see below) */
};

/* Scratch bytes of attd_launch for H heads and max_keys rows (0 when the shape is not one it
 * takes). */
size_t attd_scratch_bytes(int64_t H, int64_t Dh, int64_t max_keys);
/* Launches the exact decode attention when the shape suits it: returns 1 with *st set, else 0
 * (the caller keeps its split/merge kernels). */
int attd_launch(const attd_in &in, ds4_status *st, ds4_error *err);
/* attn_dec_cl.cu: the same attention as one launch of thread-block clusters (sm_90+, head dim
 * 512, up to 1024 rows, DS4_CUDA_ATTD_CL); 1 = launched (*st set), 0 = not taken (never when
 * in.qn_eps > 0 and attd_cl_takes(.., 1) && attd_cl_aligned(in)). */
int attd_cl_launch(const attd_in &in, ds4_status *st, ds4_error *err);
/* Whether attd_cl_launch takes this shape (cuda_attn_dec_cluster mode 2 also: the q norm + RoPE
 * inside, in.qn_eps); with `aligned`, the pointers of in too. */
int attd_cl_takes(int64_t H, int64_t Dh, int64_t max_keys, int n_rope, int qnorm);
int attd_cl_aligned(const attd_in &in);

#endif
