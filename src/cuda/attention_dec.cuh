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
};

/* Scratch bytes of attd_launch for H heads and max_keys rows (0 when the shape is not one it
 * takes). */
size_t attd_scratch_bytes(int64_t H, int64_t Dh, int64_t max_keys);
/* Launches the exact decode attention when the shape suits it: returns 1 with *st set, else 0
 * (the caller keeps its split/merge kernels). */
int attd_launch(const attd_in &in, ds4_status *st, ds4_error *err);

#endif
