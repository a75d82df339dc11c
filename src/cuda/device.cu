/*
 * cuda/device.cu — device discovery, selection, memory and copies. No kernels here.
 */
#include "common.cuh"
#include "cuda_api.h"

#include <stdio.h>
#include <stdlib.h>

cudaStream_t cu_stream = 0;
int cu_pdl_on = 0;
int cu_prio = 0;

extern "C" int cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky "no driver" error */
        return 0;
    }
    return n;
}

extern "C" ds4_status cuda_device_describe(int dev, char *buf, size_t buf_bytes, ds4_error *err) {
    cudaDeviceProp p;
    CU_CHECK(cudaGetDeviceProperties(&p, dev), err, "cudaGetDeviceProperties");
    int drv = 0, rt = 0;
    cudaDriverGetVersion(&drv);
    cudaRuntimeGetVersion(&rt);
    snprintf(buf, buf_bytes, "%s, sm_%d%d, %d SMs, %.1f GiB, driver CUDA %d.%d, runtime %d.%d",
             p.name, p.major, p.minor, p.multiProcessorCount,
             (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0), drv / 1000, (drv % 1000) / 10,
             rt / 1000, (rt % 1000) / 10);
    return DS4_OK;
}

extern "C" ds4_status cuda_malloc(void **out, size_t n_bytes, ds4_error *err) {
    *out = NULL;
    cudaError_t e = cudaMalloc(out, n_bytes ? n_bytes : 1);
    if (e != cudaSuccess)
        return ds4_seterr(err, DS4_ERR_NOMEM, "cuda: cannot allocate %zu bytes: %s", n_bytes,
                          cudaGetErrorString(e));
    return DS4_OK;
}

extern "C" void cuda_free(void *p) {
    if (p) cudaFree(p);
}

extern "C" ds4_status cuda_upload(void *dst, const void *src, size_t n_bytes, ds4_error *err) {
    CU_CHECK(cudaMemcpy(dst, src, n_bytes, cudaMemcpyHostToDevice), err, "upload");
    return DS4_OK;
}

extern "C" ds4_status cuda_download(void *dst, const void *src, size_t n_bytes, ds4_error *err) {
    CU_CHECK(cudaMemcpy(dst, src, n_bytes, cudaMemcpyDeviceToHost), err, "download");
    return DS4_OK;
}

/* Issue #7 (host-resident experts): what the auto-fit measures and what it allocates. */
extern "C" ds4_status cuda_mem_info(size_t *free_bytes, size_t *total_bytes, ds4_error *err) {
    size_t f = 0, t = 0;
    CU_CHECK(cudaMemGetInfo(&f, &t), err, "cudaMemGetInfo");
    if (free_bytes) *free_bytes = f;
    if (total_bytes) *total_bytes = t;
    return DS4_OK;
}

extern "C" ds4_status cuda_host_alloc_mapped(void **host, void **dev, size_t n_bytes,
                                             ds4_error *err) {
    *host = NULL;
    *dev = NULL;
    /* Portable: usable from any context; mapped: kernels read it in place over PCIe. */
    cudaError_t e = cudaHostAlloc(host, n_bytes ? n_bytes : 1,
                                  cudaHostAllocMapped | cudaHostAllocPortable);
    if (e != cudaSuccess) {
        *host = NULL;
        cudaGetLastError();
        return ds4_seterr(err, DS4_ERR_NOMEM, "cuda: cannot pin %zu bytes of host memory: %s",
                          n_bytes, cudaGetErrorString(e));
    }
    e = cudaHostGetDevicePointer(dev, *host, 0);
    if (e != cudaSuccess) {
        cudaFreeHost(*host);
        *host = NULL;
        *dev = NULL;
        cudaGetLastError();
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED,
                          "cuda: pinned host memory is not mapped into the device: %s",
                          cudaGetErrorString(e));
    }
    return DS4_OK;
}

extern "C" void cuda_host_free(void *host) {
    if (host) cudaFreeHost(host);
}

extern "C" ds4_status cuda_copy(void *dst, const void *src, size_t n_bytes, ds4_error *err) {
    CU_CHECK(cudaMemcpy(dst, src, n_bytes, cudaMemcpyDefault), err, "copy");
    return DS4_OK;
}

extern "C" ds4_status cuda_sync(ds4_error *err) {
    CU_CHECK(cudaDeviceSynchronize(), err, "synchronize");
    return DS4_OK;
}

/* IQ2_XXS tables of the CPU library (format/iq2xxs_tables.c, generated from the quants data). */
extern "C" const uint64_t q_iq2xxs_grid[256];
extern "C" const uint8_t q_iq2xxs_signs[128];
extern "C" ds4_status cuda_iq2_tables_upload(const uint64_t grid[256], const uint8_t ksigns[128],
                                             ds4_error *err);

extern "C" ds4_status cuda_init(int dev, ds4_error *err) {
    int n = cuda_device_count();
    if (n == 0) return ds4_seterr(err, DS4_ERR_UNSUPPORTED, "cuda: no CUDA device is available");
    if (dev < 0 || dev >= n)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda: device %d does not exist (%d present)", dev, n);
    CU_CHECK(cudaSetDevice(dev), err, "cudaSetDevice");
    /* Programmatic dependent launch (common.cuh) needs sm_90; opt-in with DS4_CUDA_PDL=1: it
     * took 2.4% off the decode step of the start of session 3, but with that session's fused
     * kernels it costs 2.8% (docs/BENCHMARKS.md, "Programmatic dependent launch"). */
    int major = 0;
    CU_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), err,
             "cudaDeviceGetAttribute");
    const char *pdl = getenv("DS4_CUDA_PDL");
    cu_pdl_on = major >= 9 && pdl && pdl[0] == '1';
    return cuda_iq2_tables_upload(q_iq2xxs_grid, q_iq2xxs_signs, err);
}
