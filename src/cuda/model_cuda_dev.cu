/*
 * cuda/model_cuda_dev.cu — the few runtime calls the GPU model needs beyond the op table
 * (device-to-device copies for the window ring). No kernels; must not grow into an op file.
 * Declared in model_cuda_impl.h (a C header; not included here to keep the model's C headers
 * out of the C++ compiler).
 */
#include <cuda_runtime.h>

extern "C" {
#include "core/error.h"
}

extern cudaStream_t cu_stream; /* device.cu: the launch stream (capture stream during a graph) */

extern "C" ds4_status cuda_copy_d2d(void *d_dst, const void *d_src, size_t n_bytes,
                                    ds4_error *err) {
    cudaError_t e = cudaMemcpyAsync(d_dst, d_src, n_bytes, cudaMemcpyDeviceToDevice, cu_stream);
    if (e != cudaSuccess)
        return ds4_seterr(err, DS4_ERR_IO, "cuda: device copy of %zu bytes: %s", n_bytes,
                          cudaGetErrorString(e));
    return DS4_OK;
}
