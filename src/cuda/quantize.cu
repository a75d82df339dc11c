/*
 * cuda/quantize.cu — activation quantizers on the device, bit-identical to the CPU reference:
 * Q8_K (GGUF_LAYOUT §4.6, quants README §5.1) and ds4's Q8_0 activation records (quants
 * README §4.4). Round-half-even via __float2int_rn matches lrintf; the division is IEEE.
 */
#include "common.cuh"
#include "cuda_api.h"

/* One warp per 256-value block; lane l owns values 8l..8l+7. */
__global__ void k_quantize_q8_K(const float *__restrict__ x, uint8_t *__restrict__ out) {
    const int b = blockIdx.x, lane = threadIdx.x;
    const float *xb = x + (int64_t)b * 256 + lane * 8;
    float v[8];
    float amax = 0.0f, maxv = 0.0f;
    int aidx = 1 << 30;
    for (int i = 0; i < 8; i++) {
        v[i] = xb[i];
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
    uint8_t *ob = out + (int64_t)b * CU_Q8_K_BYTES;
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

/* One warp per 32-value record; lane l owns value l. */
__global__ void k_quantize_q8_0_act(const float *__restrict__ x, uint8_t *__restrict__ out) {
    const int b = blockIdx.x, lane = threadIdx.x;
    const float v = x[(int64_t)b * 32 + lane];
    float amax = fabsf(v);
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    int qi = __float2int_rn(v * id);
    qi = qi < -128 ? -128 : (qi > 127 ? 127 : qi);
    uint8_t *ob = out + (int64_t)b * CU_Q8_0ACT_BYTES;
    ((int8_t *)(ob + 4))[lane] = (int8_t)qi;
    if (lane == 0) *(float *)ob = d;
}

extern "C" ds4_status cuda_quantize_q8_K(const float *d_x, void *d_q, int64_t n, ds4_error *err) {
    if (n <= 0 || n % 256 != 0)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda q8_K: n=%lld is not a positive multiple of 256",
                          (long long)n);
    k_quantize_q8_K<<<(unsigned)(n / 256), 32, 0, cu_stream>>>(d_x, (uint8_t *)d_q);
    CU_CHECK(cudaGetLastError(), err, "quantize q8_K launch");
    return DS4_OK;
}

extern "C" ds4_status cuda_quantize_q8_0_act(const float *d_x, void *d_q, int64_t n, ds4_error *err) {
    if (n <= 0 || n % 32 != 0)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda q8_0 act: n=%lld is not a positive multiple of 32",
                          (long long)n);
    k_quantize_q8_0_act<<<(unsigned)(n / 32), 32, 0, cu_stream>>>(d_x, (uint8_t *)d_q);
    CU_CHECK(cudaGetLastError(), err, "quantize q8_0 act launch");
    return DS4_OK;
}
