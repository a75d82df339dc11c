/*
 * cuda/common.cuh — what every CUDA kernel file shares: error plumbing, GGUF block layouts
 * (GGUF_LAYOUT §4) read from unaligned device memory, f16 decode, warp reductions.
 * Knows nothing about the model.
 */
#ifndef DS4_CUDA_COMMON_CUH
#define DS4_CUDA_COMMON_CUH

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "core/error.h"
}

/* The stream every op launches on (device.cu): the legacy default stream (0) except while a
 * CUDA graph is being captured (graph.cu), when it is the capture stream. */
extern cudaStream_t cu_stream;

/* ggml type ids (GGUF_LAYOUT §1.5) */
enum {
    CU_T_F32 = 0, CU_T_F16 = 1, CU_T_Q8_0 = 8, CU_T_Q2_K = 10, CU_T_Q4_K = 12,
    CU_T_Q8_K = 15, CU_T_IQ2_XXS = 16, CU_T_BF16 = 30
};

/* Block sizes in bytes (GGUF_LAYOUT §4.2-§4.6, quants README §1). */
#define CU_Q8_0_BYTES 34
#define CU_Q8_0ACT_BYTES 36
#define CU_Q2_K_BYTES 84
#define CU_Q4_K_BYTES 144
#define CU_IQ2_XXS_BYTES 66
#define CU_Q8_K_BYTES 292

/* Programmatic dependent launch (sm_90+, issue #7): a decode step is ~2,400 small kernels in
 * one graph, and the gap between two dependent kernels (drain, launch, ramp) is of the order of
 * a small kernel's whole run. With PDL the next kernel is launched while the current one still
 * runs; it waits in cu_pdl_wait() until the previous grid has finished and its writes are
 * visible. Hence the rule for every kernel: cu_pdl_wait() is its first statement, before any
 * global memory read or write (a kernel started early must neither read the previous kernel's
 * output nor overwrite what that kernel still reads). cu_pdl_wait() also orders the kernel
 * after everything the previous grid waited for, so the ordering stays transitive. Right after
 * it, cu_pdl_wait() lets the next grid launch (griddepcontrol.launch_dependents): the next
 * kernel's blocks then wait on this one's completion, which keeps correctness while hiding the
 * launch. Both are no-ops on older cards and when the launch was not a PDL launch. */
__device__ __forceinline__ void cu_pdl_wait(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* Whether launches ask for PDL (device.cu: sm_90+ and DS4_CUDA_PDL=1; off by default since the
 * fused kernels of session 3 made it a loss). */
extern int cu_pdl_on;

/* The scheduling priority of launches (0: none, the stream's): while a captured decode step
 * runs branches (graph.cu), the main stream's kernels, the critical path, get the device's
 * greatest priority so that the lanes' kernels fill the SMs they leave idle. */
extern int cu_prio;

/* Every kernel launch of src/cuda: kernel k on cu_stream. PDL (when on) only while a graph is
 * captured (the decode step, cu_stream != 0): the prefill chunk's multi-wave kernels lost ~2% to
 * blocks of the next kernel waiting resident (docs/BENCHMARKS.md, "Programmatic dependent
 * launch"). Returns
 * the launch's error (the callers check cudaGetLastError as with <<<>>>, which this also sets). */
template <typename... KArgs, typename... Args>
static inline cudaError_t cu_launch(void (*k)(KArgs...), dim3 grid, dim3 block, size_t smem,
                                    Args... args) {
    cudaLaunchAttribute at[2];
    unsigned n = 0;
    if (cu_pdl_on && cu_stream) {
        at[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        at[n++].val.programmaticStreamSerializationAllowed = 1;
    }
    if (cu_prio) {
        at[n].id = cudaLaunchAttributePriority;
        at[n++].val.priority = cu_prio;
    }
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = cu_stream;
    cfg.attrs = at;
    cfg.numAttrs = n;
    return cudaLaunchKernelEx(&cfg, k, ((KArgs)args)...);
}

#define CU_CHECK(call, err, what)                                                              \
    do {                                                                                       \
        cudaError_t e_ = (call);                                                               \
        if (e_ != cudaSuccess)                                                                 \
            return ds4_seterr((err), DS4_ERR_INTERNAL, "cuda: %s: %s", (what),                 \
                              cudaGetErrorString(e_));                                         \
    } while (0)

/* GGUF blocks are only 2-byte aligned (34-, 66-, 84-byte records): read through u16. */
__device__ __forceinline__ uint32_t cu_ld_u32_a2(const uint8_t *p) {
    const uint16_t *h = (const uint16_t *)p;
    return (uint32_t)h[0] | ((uint32_t)h[1] << 16);
}

__device__ __forceinline__ float cu_f16(const uint8_t *p) {
    return __half2float(__ushort_as_half(*(const uint16_t *)p));
}

__device__ __forceinline__ float cu_f32_at(const uint8_t *p) { return *(const float *)p; }

__device__ __forceinline__ float cu_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Sum of v over the aligned group of 8 lanes holding this lane (exact for integers). */
__device__ __forceinline__ int cu_sum8_i(int v) {
    v += __shfl_xor_sync(0xffffffffu, v, 4);
    v += __shfl_xor_sync(0xffffffffu, v, 2);
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v;
}

/* The CPU's two ways of combining the 8 lane sums s0..s7 of a dot product, each held by lane k
 * of an aligned 8-lane group (every lane of the group gets the result; all 32 lanes call):
 * cpu_dot_f32 (cpu/ops.c: attention, indexer) adds ((s0+s4)+(s1+s5))+((s2+s6)+(s3+s7)), the
 * format library's F32/F16/BF16 row dot (format/quant_dot.c) ((s0+s4)+(s2+s6))+((s1+s5)+(s3+s7)). */
__device__ __forceinline__ float cu_lanes8_dot_f32(float v) {
    v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, 4));
    v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float cu_lanes8_qdot(float v) {
    v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, 4));
    v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, 2));
    return __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, 1));
}

#endif
