/*
 * cuda/cuda_api.h — the C interface of the CUDA backend: device discovery, device memory, and
 * the op table (activation quantizers, quantized matvec, and the forward-pass ops of the files
 * listed in src/cuda/README.md), each tested against the CPU reference in tests/cuda/.
 * Built only by `make cuda` (nvcc). Every call returns ds4_status and fills ds4_error; no call
 * exits or prints. Data layouts are exactly the GGUF blocks (GGUF_LAYOUT §4) read in place.
 */
#ifndef DS4_CUDA_API_H
#define DS4_CUDA_API_H

#include <stddef.h>
#include <stdint.h>
#include "ds4.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable CUDA devices; 0 when there is no driver or no GPU (never an error). */
int cuda_device_count(void);

/* One-line description of device `dev` ("NVIDIA H100 80GB HBM3, sm_90, 132 SMs, 79.6 GiB,
 * driver 13.0") into buf. */
ds4_status cuda_device_describe(int dev, char *buf, size_t buf_bytes, ds4_error *err);

/* Selects the device and uploads the constant tables (IQ2_XXS grid/signs). */
ds4_status cuda_init(int dev, ds4_error *err);

ds4_status cuda_malloc(void **out, size_t n_bytes, ds4_error *err);
void cuda_free(void *p);
ds4_status cuda_upload(void *dst, const void *src, size_t n_bytes, ds4_error *err);
ds4_status cuda_download(void *dst, const void *src, size_t n_bytes, ds4_error *err);
ds4_status cuda_sync(ds4_error *err);

/* Device memory free / total now (cudaMemGetInfo; either pointer may be NULL). */
ds4_status cuda_mem_info(size_t *free_bytes, size_t *total_bytes, ds4_error *err);
/* Pinned host memory mapped into the device (issue #7: routed experts kept on the host): *host
 * for the CPU, *dev for kernels, which read it in place over PCIe. DS4_ERR_NOMEM when it
 * cannot be pinned (RAM, locked-memory limits). Freed by cuda_host_free(*host). */
ds4_status cuda_host_alloc_mapped(void **host, void **dev, size_t n_bytes, ds4_error *err);
void cuda_host_free(void *host);
/* cudaMemcpy with the direction taken from the pointers (device, pinned or plain host). */
ds4_status cuda_copy(void *dst, const void *src, size_t n_bytes, ds4_error *err);

/* Activation quantizers, bit-identical to the CPU reference (quants README §4.4, §5.1):
 * n values of x (device f32) → Q8_K blocks (292 bytes / 256 values) or ds4's Q8_0 activation
 * records (36 bytes / 32 values). */
ds4_status cuda_quantize_q8_K(const float *d_x, void *d_q, int64_t n, ds4_error *err);
ds4_status cuda_quantize_q8_0_act(const float *d_x, void *d_q, int64_t n, ds4_error *err);

/* y[r] = W[r,:] · x for r in [0, rows), with W a GGUF tensor of `type` (ggml id) with `cols`
 * values per row, resident on the device. x is device f32 [cols]; quantized types quantize x
 * first (Q8_K for Q2_K/Q4_K/IQ2_XXS, Q8_0 activation for Q8_0) into the scratch `d_act`
 * (at least cuda_matvec_scratch_bytes(type, cols) bytes). Bit-identical to the CPU's q_dot_row
 * (the CPU's per-block steps and summation order: matvec_dense.cu for Q8_0 / F32 / F16 / BF16,
 * matvec_exp.cu for the routed experts). */
size_t cuda_matvec_scratch_bytes(int type, int64_t cols);
ds4_status cuda_matvec(int type, const void *d_w, int64_t rows, int64_t cols, const float *d_x,
                       void *d_act, float *d_y, ds4_error *err);

/* The selected routed experts of a token in one launch (issue #7): W is a 3-D GGUF tensor
 * [cols, rows, n_experts]; d_ids (device int32[n_sel]) picks the experts; y is [n_sel][rows].
 * x is one shared input [cols] (gate/up) or, with per_expert_x, [n_sel][cols] (down).
 * Scratch: n_sel · cuda_matvec_scratch_bytes(type, cols). */
ds4_status cuda_matvec_experts(int type, const void *d_w, int64_t n_experts, int64_t rows,
                               int64_t cols, const int32_t *d_ids, int n_sel, const float *d_x,
                               int per_expert_x, void *d_act, float *d_y, ds4_error *err);

/* Quantize once for several products sharing one input (issue #7): cuda_act_kind(type) says
 * which activation a weight type reads (CUDA_ACT_F32: x itself); cuda_quantize_act writes it
 * (n values, the bytes of cuda_matvec_scratch_bytes); the _preq products read it instead of
 * quantizing x again (shared input only). Results equal cuda_matvec / cuda_matvec_experts. */
enum { CUDA_ACT_F32 = 0, CUDA_ACT_Q8_0 = 1, CUDA_ACT_Q8_K = 2 };
int cuda_act_kind(int type);
ds4_status cuda_quantize_act(int kind, const float *d_x, void *d_q, int64_t n, ds4_error *err);
ds4_status cuda_matvec_preq(int type, const void *d_w, int64_t rows, int64_t cols,
                            const void *d_act, float *d_y, ds4_error *err);
ds4_status cuda_matvec_experts_preq(int type, const void *d_w, int64_t n_experts, int64_t rows,
                                    int64_t cols, const int32_t *d_ids, int n_sel,
                                    const void *d_act, float *d_y, ds4_error *err);

/* Issue #7, fewer launches per decode step: two products of one type and shape reading one
 * quantized input (gate and up) in one launch, alone or as the selected experts; the results
 * equal two cuda_matvec_preq / cuda_matvec_experts_preq calls (same kernel per row).
 * _preq_x: the selected experts with per-expert inputs quantized beforehand ([n_sel] records
 * of cuda_matvec_scratch_bytes(type, cols) bytes), e.g. by cuda_swiglu_quant. */
ds4_status cuda_matvec_pair_preq(int type, const void *d_w1, const void *d_w2, int64_t rows,
                                 int64_t cols, const void *d_act, float *d_y1, float *d_y2,
                                 ds4_error *err);
ds4_status cuda_matvec_experts_pair_preq(int type, const void *d_w1, const void *d_w2,
                                         int64_t n_experts, int64_t rows, int64_t cols,
                                         const int32_t *d_ids, int n_sel, const void *d_act,
                                         float *d_y1, float *d_y2, ds4_error *err);
ds4_status cuda_matvec_experts_preq_x(int type, const void *d_w, int64_t n_experts, int64_t rows,
                                      int64_t cols, const int32_t *d_ids, int n_sel,
                                      const void *d_act, float *d_y, ds4_error *err);
/* Two F32/F16/BF16 products of one shape on one f32 x in one launch (the compressor's kv and
 * gate); the kernel (warps per row) is chosen for the pair's rows, as cuda_matvec_pair_preq. */
ds4_status cuda_matvec_pair_f(int type, const void *d_w1, const void *d_w2, int64_t rows,
                              int64_t cols, const float *d_x, float *d_y1, float *d_y2,
                              ds4_error *err);
/* cuda_swiglu, and its output h quantized as activation kind `kind` (CUDA_ACT_Q8_K / _Q8_0,
 * F a multiple of the block) into d_q, row by row: bit-identical to cuda_swiglu followed by
 * cuda_quantize_act on each row. */
ds4_status cuda_swiglu_quant(int kind, const float *d_g, const float *d_u, const float *d_rw,
                             int64_t n_rows, int64_t F, float clamp, float *d_h, void *d_q,
                             ds4_error *err);

/* matvec_exp.cu (issue #7): the selected routed experts of IQ2_XXS / Q2_K / Q4_K against Q8_K
 * activations already quantized (n_x = 1 shared row or n_sel rows), gate and up as a pair (d_w2
 * nullable), bit-identical to the CPU dot q_dot_row (block order kept). The cuda_matvec_experts*
 * entry points call it whenever cuda_mvx_supports (cols/256 <= 32 blocks, the shared memory
 * fits; DS4_CUDA_EXP_V1=1 in the environment: never). cuda_mvx_grid_upload: by cuda_init. */
int cuda_mvx_supports(int type, int64_t cols, int n_x);
ds4_status cuda_mvx_launch(int type, const void *d_w1, const void *d_w2, int64_t n_experts,
                           int64_t w_stride, const int32_t *d_ids, int n_sel, int64_t rows,
                           int64_t cols, const void *d_act, int n_x, float *d_y1, float *d_y2,
                           ds4_error *err);
ds4_status cuda_mvx_grid_upload(const uint64_t grid[256], ds4_error *err);
/* Experts in host memory (issue #7, expert_stage.cu): d_dst [k] = the expert d_ids[k] of the
 * n_expert experts of expert_bytes each at d_src (pinned, mapped), for k < n_sel; the decode
 * products then read the staged copies with ids 0..n_sel-1. */
ds4_status cuda_expert_stage(void *d_dst, const void *d_src, int64_t expert_bytes,
                             int64_t n_expert, const int32_t *d_ids, int n_sel, ds4_error *err);
/* The decode MoE's down product and combination in one launch (issue #7): d_y [n_sel][rows] =
 * cuda_matvec_experts_preq_x, d_out [rows] = cuda_moe_combine(d_y, d_shared, 1, n_sel, rows),
 * bit-identical to those two calls. DS4_ERR_UNSUPPORTED where cuda_mvx_supports(type, cols,
 * n_sel) is false (call the two then). */
ds4_status cuda_matvec_experts_down_combine(int type, const void *d_w, int64_t n_experts,
                                            int64_t rows, int64_t cols, const int32_t *d_ids,
                                            int n_sel, const void *d_act, float *d_y,
                                            const float *d_shared, float *d_out, ds4_error *err);
/* Two cuda_swiglu_quant problems in one launch (the routed experts' and the shared expert's
 * SwiGLU of the decode MoE), bit-identical to the two calls. */
ds4_status cuda_swiglu_quant_pair(int kind1, const float *d_g1, const float *d_u1,
                                  const float *d_rw1, int64_t n_rows1, int64_t F1, float clamp1,
                                  float *d_h1, void *d_q1, int kind2, const float *d_g2,
                                  const float *d_u2, const float *d_rw2, int64_t n_rows2,
                                  int64_t F2, float clamp2, float *d_h2, void *d_q2,
                                  ds4_error *err);

/* Elapsed milliseconds of `iters` back-to-back cuda_matvec calls (CUDA events), for benchmarks. */
ds4_status cuda_matvec_time(int type, const void *d_w, int64_t rows, int64_t cols,
                            const float *d_x, void *d_act, float *d_y, int iters, float *out_ms,
                            ds4_error *err);

/* ---- Op table of the V4 forward pass (norm.cu, rope.cu, qat.cu, hc.cu, attention.cu,
 * compressor.cu, indexer.cu, moe.cu, sample.cu, matmul.cu). Every pointer is device memory; shapes are
 * those of the CPU op (cpu/ops.h, model/) named in each comment. Rounding ops are
 * bit-identical to the CPU; the others agree to about one f32 ULP (tests/cuda/test_cuda_layer.c
 * states each tolerance). Calls are asynchronous on the default stream (on the capture stream
 * while a CUDA graph is being captured, see cuda_graph_begin). ---- */

/* cpu_rmsnorm on n_rows contiguous rows of n (w NULL: no weight, MODEL_MATH §3.2). Aliasing
 * out == x is allowed. */
ds4_status cuda_rmsnorm(float *d_out, const float *d_x, const float *d_w, int64_t n_rows,
                        int64_t n, float eps, ds4_error *err);
/* cpu_softmax on n_rows contiguous rows of n, in place. */
ds4_status cuda_softmax(float *d_x, int64_t n_rows, int64_t n, ds4_error *err);
/* x[i] *= s for i < n. */
ds4_status cuda_scale(float *d_x, int64_t n, float s, ds4_error *err);

/* Test entry (refmath.cu): d_out[i] = f(x_i), x_i the f32 with bits bits0 + i·stride, f one of
 * cpu/refmath.h's functions as the kernels call them (exp, log1p, softplus, cos, sin), for a
 * bit-for-bit comparison with the host; LIB_*: CUDA's double exp / log1p / cos / sin rounded
 * to f32 (measured against glibc's, not used by the model). */
enum { CUDA_REFMATH_EXP, CUDA_REFMATH_LOG1P, CUDA_REFMATH_SOFTPLUS, CUDA_REFMATH_COS,
       CUDA_REFMATH_SIN, CUDA_REFMATH_LIB_EXP, CUDA_REFMATH_LIB_LOG1P, CUDA_REFMATH_LIB_COS,
       CUDA_REFMATH_LIB_SIN };
ds4_status cuda_refmath_sweep(int fn, uint32_t bits0, uint32_t stride, int64_t n, float *d_out,
                              ds4_error *err);

/* cpu_rope_tail on n_rows rows: row r starts at d_x + r*row_stride, its n_rope rotated values at
 * + tail_off; it uses position pos0 + r / rows_per_pos (rows_per_pos = n_head for a [tok][head]
 * block of queries). d_freqs: the cpu_rope_freqs table (n_rope/2 values) uploaded once. */
ds4_status cuda_rope_tail(float *d_x, int64_t n_rows, int64_t row_stride, int64_t tail_off,
                          int64_t rows_per_pos, int n_rope, const float *d_freqs, int64_t pos0,
                          int inverse, ds4_error *err);

/* cpu_hadamard on the first n (power of two) values of n_rows rows of row_stride. */
ds4_status cuda_hadamard(float *d_x, int64_t n_rows, int64_t row_stride, int n, ds4_error *err);
/* cpu_fp8_roundtrip / cpu_fp4_roundtrip on the first n values of each of n_rows rows (the KV
 * rows round only their non-RoPE dims, MODEL_MATH §12 #1). Bit-identical. */
ds4_status cuda_fp8_roundtrip(float *d_x, int64_t n_rows, int64_t row_stride, int64_t n,
                              int block, ds4_error *err);
ds4_status cuda_fp4_roundtrip(float *d_x, int64_t n_rows, int64_t row_stride, int64_t n,
                              int block, ds4_error *err);

/* Hyper-connections (MODEL_MATH §4; model/forward.c fwd_hc_pre, fwd_hc_post, fwd_output).
 * X [n_tok][hc][d]; mix = fn·X as computed by cuda_matvec ([n_tok][(2+hc)*hc] for pre,
 * [n_tok][hc] for head); scale [3], base, norm [d] are the layer's f32 tensors on the device.
 * hc_pre writes pre/post [n_tok][hc], comb [n_tok][hc][hc] and the normalised sub-layer input
 * a [n_tok][d]; hc_post writes Xout (must not alias X); hc_head writes the normalised y. */
ds4_status cuda_hc_pre(const float *d_X, const float *d_mix, const float *d_scale,
                       const float *d_base, const float *d_norm, int64_t n_tok, int hc, int64_t d,
                       int iters, float hc_eps, float norm_eps, float *d_pre, float *d_post,
                       float *d_comb, float *d_a, ds4_error *err);
/* cuda_hc_pre that also writes a quantized for the products that read it (issue #7: no
 * quantize launches of their own): d_q80 (nullable) Q8_0 activation records, d_q8k (nullable)
 * Q8_K blocks, [n_tok] rows of cuda_matvec_scratch_bytes(Q8_0 / Q2_K, d) bytes; bit-identical to
 * cuda_quantize_act of a. */
ds4_status cuda_hc_pre_quant(const float *d_X, const float *d_mix, const float *d_scale,
                             const float *d_base, const float *d_norm, int64_t n_tok, int hc,
                             int64_t d, int iters, float hc_eps, float norm_eps, float *d_pre,
                             float *d_post, float *d_comb, float *d_a, void *d_q80, void *d_q8k,
                             ds4_error *err);
/* normfuse.cu (issue #7, one launch for a row chain): in place on n_rows rows of n (<= 8192)
 * values: cuda_rmsnorm (d_w nullable), cuda_rope_tail of the last n_rope values at position pos
 * (or *d_pos when d_pos is not NULL; n_rope 0: none), cuda_fp8_roundtrip of the first fp8_n
 * values in blocks of fp8_block (0: none), and Q8_0 activation records of the rows into d_q80
 * (nullable); bit-identical to those ops in that order. */
ds4_status cuda_norm_rope_qat(float *d_x, const float *d_w, int64_t n_rows, int64_t n, float eps,
                              int n_rope, const float *d_freqs, int64_t pos, const int64_t *d_pos,
                              int64_t fp8_n, int fp8_block, void *d_q80, ds4_error *err);
/* The same, one row (n_rows 1), whose result also goes to d_ring[(pos % W)][0..n) (the window
 * ring store of MODEL_MATH §7.1 in the same launch; pos or *d_pos as above). */
ds4_status cuda_norm_rope_qat_ring(float *d_x, const float *d_w, int64_t n_rows, int64_t n,
                                   float eps, int n_rope, const float *d_freqs, int64_t pos,
                                   const int64_t *d_pos, int64_t fp8_n, int fp8_block, void *d_q80,
                                   float *d_ring, int64_t W, ds4_error *err);
ds4_status cuda_hc_post(const float *d_f, const float *d_X, const float *d_post,
                        const float *d_comb, int64_t n_tok, int hc, int64_t d, float *d_Xout,
                        ds4_error *err);
/* Issue #7 (hc.cu k_hc_mix): one decode token's pending hc_post, the next HC mix and hc_pre in
 * one launch, bit-identical to cuda_hc_post (when d_f is not NULL: X2 = hc_post(f, X) into
 * d_Xout, which must not alias d_X), cuda_matvec (fn [rows][hc·d] of ggml type fn_type · X2
 * into d_mix; F32 and F16 in the launch, BF16 as the separate ops, quantized types rejected) and
 * cuda_hc_pre_quant (when d_scale is not NULL; post/comb out may be the post/comb in). The mix
 * is always fused with hc_post; hc_pre joins the launch when one_launch and the shape is
 * Flash's (hc 4, d 4096), else it runs after as its own launch. Other shapes: the three ops. */
ds4_status cuda_hc_mix_fused(int fn_type, const void *d_fn, int64_t rows, const float *d_X,
                             const float *d_f, const float *d_post, const float *d_comb,
                             float *d_Xout, int hc, int64_t d, float *d_mix, const float *d_scale,
                             const float *d_base, const float *d_norm, int iters, float hc_eps,
                             float norm_eps, float *d_pre, float *d_post_out, float *d_comb_out,
                             float *d_a, void *d_q80, void *d_q8k, int one_launch, ds4_error *err);
/* Timing hook of cuda_hc_mix_fused (tests only; hc_mix.cu): on = 1 clears a device table of
 * phase stamps that the following launches fill; on = 0 stops and writes the last launch's
 * phases (ns after its first block started, cycles of its serial parts) as text into buf. */
ds4_status cuda_hc_mix_trace(int on, char *buf, size_t n, ds4_error *err);
ds4_status cuda_hc_head(const float *d_X, const float *d_mix, const float *d_scale,
                        const float *d_base, const float *d_norm, int64_t n_tok, int hc,
                        int64_t d, float hc_eps, float norm_eps, float *d_y, ds4_error *err);

/* Sparse attention with sinks (MODEL_MATH §5.4-5.6; model/attention.c attn_items) for n_tok
 * query tokens at positions pos0.. of one layer: q [n_tok][H][Dh] (normalised, rotated);
 * window rows of this chunk come from kv_chunk [n_tok][Dh], earlier ones from the ring
 * [W][Dh] (position s at slot s mod W, not yet overwritten by the chunk); compressed rows
 * comp [..][Dh]: with d_isel ([n_tok][topk] ascending rows, counts d_n_isel [n_tok]) those
 * rows, else with ratio > 0 every row complete by p ((p+1)/ratio), else none. sinks [H],
 * freqs the layer's RoPE table. out [n_tok][H][Dh], value tails de-rotated. d_scratch: at
 * least cuda_attn_scratch_bytes(...) bytes (per-split partial sums). At most 32768 attended
 * rows per query (UNSUPPORTED beyond). */
ds4_status cuda_attn(const float *d_q, const float *d_kv_chunk, const float *d_ring, int64_t W,
                     const float *d_comp, int ratio, const int32_t *d_isel,
                     const int32_t *d_n_isel, int64_t topk, const float *d_sinks, int64_t n_tok,
                     int64_t pos0, int64_t H, int64_t Dh, int n_rope, const float *d_freqs,
                     float *d_scratch, float *d_out, ds4_error *err);
size_t cuda_attn_scratch_bytes(int64_t n_tok, int64_t H, int64_t Dh, int64_t W, int ratio,
                               int64_t topk, int indexed, int64_t pos0);
/* Upper bound of the attended rows of a query before position pos_end. */
size_t cuda_attn_max_keys(int64_t W, int ratio, int64_t topk, int indexed, int64_t pos_end);
/* Which prefill-chunk attention kernel cuda_attn takes for two or more tokens (same bits
 * whichever): 0 = the first one (8 heads per block, one key per lane group), 8 = the
 * register-tiled one (8 heads per block), 64 = one block per token and 64 heads (the default;
 * head dims 128 / 256 / 512 and up to ~700 rows, else 8); -1 = DS4_CUDA_ATTN_CHUNK from the
 * environment, else the default. For benches and tests. */
void cuda_attn_chunk_set_variant(int v);
/* cuda_attn for a prefill chunk with q [n_tok][H][Dh] not yet normalized: each head row's
 * RMSNorm (MODEL_MATH §3.2, eps q_eps) and RoPE of its n_rope tail at its position (§3.3)
 * come first, bit-identical to cuda_rmsnorm + cuda_rope_tail on d_q (inside the chunk kernel
 * when it takes the call, d_q then left as it was; else on d_q in place). Head dims below 2048. */
ds4_status cuda_attn_qnorm(float *d_q, const float *d_kv_chunk, const float *d_ring, int64_t W,
                           const float *d_comp, int ratio, const int32_t *d_isel,
                           const int32_t *d_n_isel, int64_t topk, const float *d_sinks,
                           int64_t n_tok, int64_t pos0, int64_t H, int64_t Dh, int n_rope,
                           const float *d_freqs, float q_eps, float *d_scratch, float *d_out,
                           ds4_error *err);

/* A compressor's device state (model/kvstate.h kv_comp): rows [cap][dim] finished entries,
 * st_kv / st_sc [coff*ratio][coff*dim] streaming buffers (initial state: kv 0, score -inf). */
typedef struct cuda_comp_state {
    int64_t ratio, coff, dim, cap;
    float *rows, *st_kv, *st_sc;
} cuda_comp_state;

/* model/compressor.c comp_push for the token at pos: A, B [coff*dim] (B without ape), ape
 * [ratio][coff*dim], norm [dim]; indexer != 0 finishes with Hadamard + FP4 instead of FP8.
 * *finished (nullable) = 1 when entry (pos+1)/ratio - 1 was written. */
ds4_status cuda_comp_push(const cuda_comp_state *c, const float *d_A, const float *d_B,
                          const float *d_ape, const float *d_norm, int64_t pos, int indexer,
                          const float *d_freqs, int n_rope, float eps, int *finished,
                          ds4_error *err);

/* model/indexer.c indexer_select for n_tok tokens at pos0..: q [n_tok][ih][id] (prepared:
 * RoPE, Hadamard, FP4), w [n_tok][ih] (scaled), rows [..][id] indexer entries. Writes
 * isel [n_tok][topk] (ascending rows) and n_isel [n_tok]. d_scores: scratch of
 * cuda_indexer_scratch_bytes(n_tok, pos0). Scores and selection are bit-identical. The scratch
 * holds the scores [n_tok][(pos0+n_tok)/4+1] first, then (1-2 tokens) the multi-block top-k's
 * histograms (issue #7); size it only with cuda_indexer_scratch_bytes. */
ds4_status cuda_indexer_topk(const float *d_q, const float *d_w, const float *d_rows,
                             int64_t n_tok, int64_t pos0, int64_t ih, int64_t id, int64_t topk,
                             float *d_scores, int32_t *d_isel, int32_t *d_n_isel,
                             ds4_error *err);
size_t cuda_indexer_scratch_bytes(int64_t n_tok, int64_t pos0);
/* One half of cuda_indexer_topk (benchmarks, tests): part 1 the scores only, part 2 the
 * selection from the scores already in d_scores. */
ds4_status cuda_indexer_part(int part, const float *d_q, const float *d_w, const float *d_rows,
                             int64_t n_tok, int64_t pos0, int64_t ih, int64_t id, int64_t topk,
                             float *d_scores, int32_t *d_isel, int32_t *d_n_isel, ds4_error *err);
/* model/attention.c's indexer query steps for n_tok tokens at pos0 (or, with d_pos0 non-NULL,
 * at the device position *d_pos0): per head row of q [n_tok][ih][id], RoPE on the last n_rope
 * values, Hadamard, FP4 round trip in blocks of fp4_block (§12 #3); w [n_tok][ih] *=
 * 1/sqrt(id·ih). One launch (indexer_prep.cu), bit-identical to cuda_rope_tail, cuda_hadamard,
 * cuda_fp4_roundtrip, cuda_scale in turn (DS4_CUDA_IDX_V1=1 runs those four). */
ds4_status cuda_indexer_qprep(float *d_q, float *d_w, int64_t n_tok, int64_t ih, int64_t id,
                              int n_rope, const float *d_freqs, int64_t pos0,
                              const int64_t *d_pos0, int fp4_block, ds4_error *err);

/* MoE (MODEL_MATH §9; model/moe.c). Router: logits [n_tok][n_expert] = gate_inp·x →
 * sel [n_tok][n_used] ascending expert ids, w [n_tok][n_used] routing weights. Hash layers
 * pass d_tid2eid [vocab][n_used] (ids validated at load) and d_tokens; others d_bias.
 * n_expert <= 1024 (one warp per token). */
ds4_status cuda_moe_route(const float *d_logits, const float *d_bias, const int32_t *d_tid2eid,
                          const int32_t *d_tokens, int64_t n_tok, int n_expert, int n_used,
                          float route_scale, int norm_weights, int32_t *d_sel, float *d_w,
                          ds4_error *err);
/* h = silu(min(g, clamp))·clamp(u, ±clamp)·rw[row] over n_rows rows of F (rw NULL: 1). */
ds4_status cuda_swiglu(const float *d_g, const float *d_u, const float *d_rw, int64_t n_rows,
                       int64_t F, float clamp, float *d_h, ds4_error *err);
/* out [n_tok][D] = Σ_k y[t][k] (k ascending; y [n_tok][n_used][D]) + shared (nullable). */
ds4_status cuda_moe_combine(const float *d_y, const float *d_shared, int64_t n_tok, int n_used,
                            int64_t D, float *d_out, ds4_error *err);

/* cpu_matmul on the device (prefill): y[t*ldy + o] = Σ_i W[o][i]·x[t*ldx + i] for t < n_tok,
 * o < rows; W a GGUF tensor of `type` with `cols` values per row read in place; activations
 * quantized per token like the CPU (Q8_K / Q8_0 record / f32) into d_act, at least
 * cuda_matmul_scratch_bytes(type, cols, n_tok) bytes. Bit-identical to cpu_matmul (same
 * products, the CPU's float steps and summation order; int8 tensor cores for quantized types). */
ds4_status cuda_matmul(int type, const void *d_w, int64_t rows, int64_t cols, const float *d_x,
                       int64_t ldx, int64_t n_tok, void *d_act, float *d_y, int64_t ldy,
                       ds4_error *err);
size_t cuda_matmul_scratch_bytes(int type, int64_t cols, int64_t n_tok);
/* cuda_matmul for the routed experts of a chunk in one launch (issue #7): x rows sorted by
 * expert, expert e owns x rows d_off[e] .. d_off[e+1] (d_off: device int32[n_expert+1],
 * d_off[0] = 0, d_off[n_expert] = n_rows_total; empty experts allowed) and multiplies them with
 * its weights at d_w + e·expert_stride_bytes ([rows][cols] of `type`); y row j = x row j's
 * product (ldy floats apart). Scratch: cuda_matmul_scratch_bytes(type, cols, n_rows_total).
 * Each row's result is bit-identical to cuda_matmul / cpu_matmul on that expert's slice. */
ds4_status cuda_matmul_experts(int type, const void *d_w, int64_t n_expert, int64_t rows,
                               int64_t cols, uint64_t expert_stride_bytes, const int32_t *d_off,
                               const float *d_x, int64_t ldx, int64_t n_rows_total, void *d_act,
                               float *d_y, int64_t ldy, ds4_error *err);
/* The first (SIMT f32, not bit-exact) prefill kernel, kept as the benchmark's baseline only. */
ds4_status cuda_matmul_simt(int type, const void *d_w, int64_t rows, int64_t cols,
                            const float *d_x, int64_t ldx, int64_t n_tok, void *d_act,
                            float *d_y, int64_t ldy, ds4_error *err);
/* Bench/tests: force the float kernels' tile (rt rows x tt tokens per thread; 0, 0: by shape).
 * Tiles: (1,4) (2,4) (3,4) (4,4) (3,2) (4,8) (8,8) (2,8); others fail the launch. */
void cuda_matmul_float_tile(int rt, int tt);

/* ds4_argmax per row: out[r] = index of the largest finite logit (lowest on ties), -1 if none.
 * Two passes through a fixed device buffer: one call at a time. */
ds4_status cuda_argmax(const float *d_x, int64_t n_rows, int64_t n, int32_t *d_out,
                       ds4_error *err);

/* CUDA graphs (graph.cu). Between cuda_graph_begin and cuda_graph_end every op is recorded on
 * a capture stream instead of running; no upload, download or sync may happen in between (they
 * fail the capture). cuda_graph_end turns the capture into *g (allocated on first use): the
 * executable graph is updated in place when the topology is unchanged (new kernel arguments:
 * positions, grid sizes), otherwise instantiated again. cuda_graph_launch runs it; later
 * downloads/uploads on the default stream wait for it. cuda_graph_abort drops an open capture
 * after an op failed. One capture at a time per process. */
typedef struct cuda_graph cuda_graph;
ds4_status cuda_graph_begin(ds4_error *err);
ds4_status cuda_graph_end(cuda_graph **g, ds4_error *err);
void cuda_graph_abort(void);
ds4_status cuda_graph_launch(cuda_graph *g, ds4_error *err);
/* Instantiations and in-place updates of g so far (benchmarks). */
void cuda_graph_counts(const cuda_graph *g, long *n_inst, long *n_upd);
void cuda_graph_free(cuda_graph *g);
/* Branches inside an open capture (issue #7: independent chains of the decode step run
 * concurrently). cuda_graph_fork(lane): lane 1..CUDA_GRAPH_LANES depends on everything
 * captured on the main stream so far, and the following ops are captured on it;
 * cuda_graph_main(): the following ops are captured on the main stream again (a no-op outside
 * a capture); cuda_graph_join(lane): the main stream's following ops depend on everything
 * captured on the lane (and are captured on the main stream). A lane may be forked again later
 * (it then also depends on the main stream's newer work); every forked lane must be joined before
 * cuda_graph_end. Two lanes running at once must not write the same buffer. */
#define CUDA_GRAPH_LANES 4
ds4_status cuda_graph_fork(int lane, ds4_error *err);
void cuda_graph_main(void);
ds4_status cuda_graph_join(int lane, ds4_error *err);

/* Per-op timing with CUDA events (prof.cu): cuda_prof_mark records an event on the launch
 * stream tagged `tag` (up to cap marks, then dropped); cuda_prof_collect waits and calls fn with
 * each tag and the milliseconds since the previous mark, then starts over. Op by op only. */
typedef struct cuda_prof cuda_prof;
ds4_status cuda_prof_create(cuda_prof **out, int cap, ds4_error *err);
void cuda_prof_mark(cuda_prof *p, int tag);
ds4_status cuda_prof_collect(cuda_prof *p, void (*fn)(void *user, int tag, float ms), void *user,
                             ds4_error *err);
void cuda_prof_free(cuda_prof *p);
/* Gate (issue #7: GPU time, not launch gaps): hold queues a kernel that waits on a host-mapped
 * flag (and a mark whose interval is dropped); ops queued after it run back to back once
 * release sets the flag. Queue at most a few hundred ops between the two (the launch queue
 * must not fill while the device waits). Negative tags are never passed to collect's fn. */
ds4_status cuda_prof_gate_hold(cuda_prof *p, ds4_error *err);
void cuda_prof_gate_release(cuda_prof *p);

/* ---- Position on the device (issue #7: one captured decode step serves every position).
 * These take the position of the (first) token from device memory (int64 at d_pos) instead
 * of an argument, otherwise exactly the op of the same name; pos_bound is a host-side upper
 * bound of that position + 1 (the exclusive end) that sizes grids and scratch: results equal
 * the plain op's for any position below it (extra splits / rows contribute nothing). ---- */
ds4_status cuda_rope_tail_dpos(float *d_x, int64_t n_rows, int64_t row_stride, int64_t tail_off,
                               int64_t rows_per_pos, int n_rope, const float *d_freqs,
                               const int64_t *d_pos0, int inverse, ds4_error *err);
/* Launches the store and the finishing kernel every step (the latter works only when the token
 * completes a window); positions below pos_bound must fit the state's capacity. */
ds4_status cuda_comp_push_dpos(const cuda_comp_state *c, const float *d_A, const float *d_B,
                               const float *d_ape, const float *d_norm, const int64_t *d_pos,
                               int64_t pos_bound, int indexer, const float *d_freqs, int n_rope,
                               float eps, ds4_error *err);
/* The same step as one launch (issue #7): store and, when the window completes, the entry. */
ds4_status cuda_comp_push_dpos1(const cuda_comp_state *c, const float *d_A, const float *d_B,
                                const float *d_ape, const float *d_norm, const int64_t *d_pos,
                                int64_t pos_bound, int indexer, const float *d_freqs, int n_rope,
                                float eps, ds4_error *err);
ds4_status cuda_indexer_topk_dpos(const float *d_q, const float *d_w, const float *d_rows,
                                  int64_t n_tok, const int64_t *d_pos0, int64_t pos_bound,
                                  int64_t ih, int64_t id, int64_t topk, float *d_scores,
                                  int32_t *d_isel, int32_t *d_n_isel, ds4_error *err);
/* d_scratch: cuda_attn_scratch_bytes(n_tok, ..., pos_bound - n_tok) bytes. */
ds4_status cuda_attn_dpos(const float *d_q, const float *d_kv_chunk, const float *d_ring,
                          int64_t W, const float *d_comp, int ratio, const int32_t *d_isel,
                          const int32_t *d_n_isel, int64_t topk, const float *d_sinks,
                          int64_t n_tok, const int64_t *d_pos0, int64_t pos_bound, int64_t H,
                          int64_t Dh, int n_rope, const float *d_freqs, float *d_scratch,
                          float *d_out, ds4_error *err);
/* ring[(pos % W)][0..Dh) = row (the window ring store of one token, MODEL_MATH §7.1). */
ds4_status cuda_ring_store_dpos(float *d_ring, const float *d_row, int64_t W, int64_t Dh,
                                const int64_t *d_pos, ds4_error *err);
/* X[k][0..D) = embed row tok[0] (decoded to f32) for k < n_copies: the token embedding
 * (MODEL_MATH §2) from the device token id; F16, BF16 and F32 tables (others: UNSUPPORTED). */
ds4_status cuda_embed_rows(const void *d_table, int type, int64_t n_vocab, int64_t D,
                           const int32_t *d_tok, int n_copies, float *d_X, ds4_error *err);

#ifdef __cplusplus
}
#endif

#endif
