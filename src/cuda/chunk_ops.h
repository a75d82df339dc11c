/*
 * cuda/chunk_ops.h — the ops of a batched prefill chunk (issue #7) that have no per-token
 * counterpart in cuda_api.h: the routed experts grouped on the device (chunk_moe.cu) and the
 * compressor advanced over a whole chunk in two launches (compressor.cu), the chunk's token
 * embeddings in one launch and the row gathers / scatters (rows.cu). Every pointer is
 * device memory; every call returns ds4_status and fills ds4_error, none prints or exits.
 * Results are bit-identical to the per-token ops they replace (tests/cuda/test_cuda_chunk.c).
 */
#ifndef DS4_CUDA_CHUNK_OPS_H
#define DS4_CUDA_CHUNK_OPS_H

#include <stdint.h>

#include "cuda/cuda_api.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Groups the n_tok·n_used (token, slot) pairs of a routed chunk by expert, on the device (no
 * host round trip): sel [n_tok][n_used] expert ids (cuda_moe_route), w [n_tok][n_used] their
 * routing weights. Writes off [n_expert + 1] (pairs of expert e are rows off[e] .. off[e+1] of
 * the grouped order, experts ascending, tokens ascending within an expert), and per grouped
 * row r: ptok[r] its token, pslot[r] its pair index t·n_used + k, pw[r] its weight. An id
 * outside [0, n_expert) is counted in no expert (off[n_expert] < n_tok·n_used then). */
ds4_status cuda_moe_group(const int32_t *d_sel, const float *d_w, int64_t n_tok, int n_used,
                          int n_expert, int32_t *d_off, int32_t *d_ptok, int32_t *d_pslot,
                          float *d_pw, ds4_error *err);

/* cuda_comp_push for the n tokens at pos0 .. pos0+n-1 at once: A, B [n][ld] (ld >= coff·dim,
 * B without ape). Entries the chunk completes are pooled from the chunk's rows and the state's
 * earlier ones, finished (§6.3) one block per entry, then the streaming buffers are left as n
 * token-by-token pushes leave them. Bit-identical to n calls of cuda_comp_push. */
ds4_status cuda_comp_push_chunk(const cuda_comp_state *c, const float *d_A, const float *d_B,
                                int64_t ld, const float *d_ape, const float *d_norm,
                                int64_t pos0, int64_t n, int indexer, const float *d_freqs,
                                int n_rope, float eps, ds4_error *err);

/* The embeddings of n_tok (<= 65535) tokens (MODEL_MATH §2): X [n_tok][n_copies][D] = the
 * table row of tok[t], decoded to f32 exactly (cuda_embed_rows is the one-token case). */
ds4_status cuda_embed_tokens(const void *d_table, int type, int64_t n_vocab, int64_t D,
                             const int32_t *d_tok, int64_t n_tok, int n_copies, float *d_X,
                             ds4_error *err);

/* rows.cu: dst[dst_idx[i]] = src[src_idx[i]], n rows of D floats (NULL index = identity); rows
 * of a multiple of 4 floats at 16-byte aligned bases move 16 bytes at a time. (Also declared in
 * model_cuda_impl.h for the forward files; here for the tests.) */
ds4_status cuda_rows_copy(float *d_dst, const int32_t *d_dst_idx, const float *d_src,
                          const int32_t *d_src_idx, int64_t n, int64_t D, ds4_error *err);

/* hc_post (MODEL_MATH §4.3) of n_tok tokens (hc_chunk.cu): Xout [n_tok][hc][d] from f
 * [n_tok][d], X [n_tok][hc][d], post [n_tok][hc], comb [n_tok][hc][hc]; bit-identical to
 * cuda_hc_post (which it calls for shapes it does not take). Xout must not alias X. */
ds4_status cuda_hc_post_chunk(const float *d_f, const float *d_X, const float *d_post,
                              const float *d_comb, int64_t n_tok, int hc, int64_t d,
                              float *d_Xout, ds4_error *err);

/* RMSNorm without weight (MODEL_MATH §3.2) of n_rows rows of n values in place, then RoPE on
 * the n_rope values at tail_off of each row at position pos0 + row / rows_per_pos (§3.3), in
 * one launch (qnorm_chunk.cu): bit-identical to cuda_rmsnorm then cuda_rope_tail. */
ds4_status cuda_qnorm_rope_chunk(float *d_x, int64_t n_rows, int64_t n, float eps,
                                 int64_t tail_off, int64_t rows_per_pos, int n_rope,
                                 const float *d_freqs, int64_t pos0, ds4_error *err);

/* Resets the CUDA runtime's last error (rows.cu): after a cudaMalloc failure the caller recovers
 * from (forward_chunk.c halves its chunk), so the next launch check does not report it. */
void cuda_clear_last_error(void);

#ifdef __cplusplus
}
#endif

#endif
