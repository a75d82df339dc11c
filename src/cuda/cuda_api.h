/*
 * cuda/cuda_api.h — the C interface of the CUDA backend: device discovery, device memory, and
 * the op table entries implemented so far (activation quantizers, quantized matvec).
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

/* Activation quantizers, bit-identical to the CPU reference (quants README §4.4, §5.1):
 * n values of x (device f32) → Q8_K blocks (292 bytes / 256 values) or ds4's Q8_0 activation
 * records (36 bytes / 32 values). */
ds4_status cuda_quantize_q8_K(const float *d_x, void *d_q, int64_t n, ds4_error *err);
ds4_status cuda_quantize_q8_0_act(const float *d_x, void *d_q, int64_t n, ds4_error *err);

/* y[r] = W[r,:] · x for r in [0, rows), with W a GGUF tensor of `type` (ggml id) with `cols`
 * values per row, resident on the device. x is device f32 [cols]; quantized types quantize x
 * first (Q8_K for Q2_K/Q4_K/IQ2_XXS, Q8_0 activation for Q8_0) into the scratch `d_act`
 * (at least cuda_matvec_scratch_bytes(type, cols) bytes). Per block the float steps are those
 * of the CPU reference; only the order of the sum over blocks differs. */
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

/* Elapsed milliseconds of `iters` back-to-back cuda_matvec calls (CUDA events), for benchmarks. */
ds4_status cuda_matvec_time(int type, const void *d_w, int64_t rows, int64_t cols,
                            const float *d_x, void *d_act, float *d_y, int iters, float *out_ms,
                            ds4_error *err);

#ifdef __cplusplus
}
#endif

#endif
