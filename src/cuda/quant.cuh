/*
 * cuda/quant.cuh — the activation quantizers as warp-level device functions (GGUF_LAYOUT §4.6
 * Q8_K, quants README §4.4 ds4's Q8_0 records), bit-identical to the CPU reference, so that a
 * kernel producing an activation can quantize it in its epilogue (issue #7: one launch less per
 * product input). Used by quantize.cu (the plain quantizers) and the fused producers (hc.cu).
 * Must not: launch anything or know the model.
 */
#ifndef DS4_CUDA_QUANT_CUH
#define DS4_CUDA_QUANT_CUH

#include "common.cuh"

/* One Q8_K block by one warp: lane l holds values 8l..8l+7 in v; ob is the block's record. */
__device__ __forceinline__ void q8k_warp(const float v[8], uint8_t *ob) {
    const int lane = threadIdx.x & 31;
    float amax = 0.0f, maxv = 0.0f;
    int aidx = 1 << 30;
    for (int i = 0; i < 8; i++) {
        float a = fabsf(v[i]);
        if (a > amax) { amax = a; maxv = v[i]; aidx = lane * 8 + i; }
    }
    /* first index of the largest |x| wins (CPU scans in order with a strict >) */
    for (int o = 16; o > 0; o >>= 1) {
        float oa = __shfl_xor_sync(0xffffffffu, amax, o);
        float ov = __shfl_xor_sync(0xffffffffu, maxv, o);
        int oi = __shfl_xor_sync(0xffffffffu, aidx, o);
        if (oa > amax || (oa == amax && oi < aidx)) { amax = oa; maxv = ov; aidx = oi; }
    }
    int8_t *q = (int8_t *)(ob + 4) + lane * 8;
    int sum = 0;
    if (amax == 0.0f) {
        for (int i = 0; i < 8; i++) q[i] = 0;
        if (lane == 0) *(float *)ob = 0.0f;
    } else {
        const float iscale = -127.0f / maxv;
        for (int i = 0; i < 8; i++) {
            int qi = __float2int_rn(iscale * v[i]);
            qi = qi < -128 ? -128 : (qi > 127 ? 127 : qi);
            q[i] = (int8_t)qi;
            sum += qi;
        }
        if (lane == 0) *(float *)ob = 1.0f / iscale;
    }
    /* bsums[j] covers values 16j..16j+15 = lanes 2j and 2j+1 */
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    if ((lane & 1) == 0) ((int16_t *)(ob + 260))[lane >> 1] = (int16_t)sum;
}

/* One Q8_0 activation record by one warp: lane l holds value l. */
__device__ __forceinline__ void q8act_warp(float v, uint8_t *ob) {
    const int lane = threadIdx.x & 31;
    float amax = fabsf(v);
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    int qi = __float2int_rn(v * id);
    qi = qi < -128 ? -128 : (qi > 127 ? 127 : qi);
    ((int8_t *)(ob + 4))[lane] = (int8_t)qi;
    if (lane == 0) *(float *)ob = d;
}

#endif
