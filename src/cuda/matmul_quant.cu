/*
 * cuda/matmul_quant.cu — the activation quantization of the int8 prefill matmul (matmul_mma.cu):
 * the same numbers as the Q8_K blocks / Q8_0 activation records of quantize.cu (quants README
 * §5.1, §4.4; the CPU's q_quantize_q8k / q_quantize_q8act), laid out in planes so the matmul can
 * copy them with 16-byte cp.async: int8 codes [n][cols], then f32 scales [n][nblk], then (Q8_K)
 * int16 bsums [n][nblk][16]. Each x row is read ldx floats apart, so strided inputs are one
 * launch. Same steps as quantize.cu: the first index of the largest |x| gives the Q8_K scale
 * (iscale = -127/max, d = 1/iscale), Q8_0 d = amax/127, id = 1/d; lrintf = __float2int_rn.
 * Must not: know tensor names or the model.
 */
#include "matmul_impl.cuh"

mm_planes mm_planes_of(void *d_act, int kind, int64_t n, int64_t cols) {
    mm_planes p;
    uintptr_t a = ((uintptr_t)d_act + 15) & ~(uintptr_t)15;
    int64_t nblk = cols / (kind == MM_ACT_Q8_0 ? 32 : 256);
    p.codes = (int8_t *)a;
    p.d = (float *)(a + (size_t)(n * cols));
    uintptr_t b = ((uintptr_t)(p.d + n * nblk) + 15) & ~(uintptr_t)15;
    p.bsums = (int16_t *)b;
    p.nblk = nblk;
    return p;
}

/* One warp per 256-value block (x row t = b / nblk, block j = b % nblk); lane l owns 8l .. 8l+7. */
__global__ void k_mm_quant_q8k(const float *__restrict__ x, int64_t ldx, int64_t n_blocks,
                               int64_t nblk, int64_t cols, int8_t *codes, float *dd, int16_t *bs) {
    cu_pdl_wait();
    int64_t b = (int64_t)blockIdx.x * 8 + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (b >= n_blocks) return;
    int64_t t = b / nblk, j = b % nblk;
    const float *xb = x + t * ldx + j * 256 + lane * 8;
    float v[8];
    float amax = 0.0f, maxv = 0.0f;
    int aidx = 1 << 30;
    for (int i = 0; i < 8; i++) {
        v[i] = xb[i];
        float a = fabsf(v[i]);
        if (a > amax) { amax = a; maxv = v[i]; aidx = lane * 8 + i; }
    }
    for (int o = 16; o > 0; o >>= 1) { /* the first index of the largest |x| wins */
        float oa = __shfl_xor_sync(0xffffffffu, amax, o);
        float ov = __shfl_xor_sync(0xffffffffu, maxv, o);
        int oi = __shfl_xor_sync(0xffffffffu, aidx, o);
        if (oa > amax || (oa == amax && oi < aidx)) { amax = oa; maxv = ov; aidx = oi; }
    }
    uint32_t w[2] = {0, 0};
    int sum = 0;
    float d = 0.0f;
    if (amax != 0.0f) {
        const float iscale = -127.0f / maxv;
        for (int i = 0; i < 8; i++) {
            int qi = __float2int_rn(iscale * v[i]);
            qi = qi < -128 ? -128 : (qi > 127 ? 127 : qi);
            w[i >> 2] |= (uint32_t)(uint8_t)(int8_t)qi << (8 * (i & 3));
            sum += qi;
        }
        d = 1.0f / iscale;
    }
    *(uint2 *)(codes + t * cols + j * 256 + lane * 8) = make_uint2(w[0], w[1]);
    if (lane == 0) dd[b] = d;
    sum += __shfl_xor_sync(0xffffffffu, sum, 1); /* bsums[k]: values 16k .. 16k+15 */
    if ((lane & 1) == 0) bs[b * 16 + (lane >> 1)] = (int16_t)sum;
}

/* 8 lanes per 32-value record (4 values each), 4 records per warp, 32 per block of 256. */
__global__ void k_mm_quant_q8_0(const float *__restrict__ x, int64_t ldx, int64_t n_blocks,
                                int64_t nblk, int64_t cols, int vec, int8_t *codes, float *dd) {
    cu_pdl_wait();
    int64_t b = (int64_t)blockIdx.x * 32 + (threadIdx.x >> 3);
    int l = threadIdx.x & 7;
    bool ok = b < n_blocks;
    int64_t t = ok ? b / nblk : 0, j = ok ? b % nblk : 0;
    const float *xp = x + t * ldx + j * 32 + 4 * l;
    float4 v = make_float4(0, 0, 0, 0);
    if (ok && vec) v = *(const float4 *)xp; /* 16-byte aligned rows */
    else if (ok) v = make_float4(xp[0], xp[1], xp[2], xp[3]);
    float amax = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
    for (int o = 4; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    float vv[4] = {v.x, v.y, v.z, v.w};
    uint32_t w = 0;
    for (int i = 0; i < 4; i++) {
        int qi = __float2int_rn(vv[i] * id);
        qi = qi < -128 ? -128 : (qi > 127 ? 127 : qi);
        w |= (uint32_t)(uint8_t)(int8_t)qi << (8 * i);
    }
    if (!ok) return;
    *(uint32_t *)(codes + t * cols + j * 32 + 4 * l) = w;
    if (l == 0) dd[b] = d;
}

ds4_status mm_quantize_planes(int kind, const float *d_x, int64_t ldx, int64_t n, int64_t cols,
                              const mm_planes *p, ds4_error *err) {
    int64_t n_blocks = n * p->nblk;
    if (kind == MM_ACT_Q8_K) {
        cu_launch(k_mm_quant_q8k, (unsigned)((n_blocks + 7) / 8), 256, 0, 
            d_x, ldx, n_blocks, p->nblk, cols, p->codes, p->d, p->bsums);
    } else {
        int vec = ((uintptr_t)d_x & 15) == 0 && (ldx & 3) == 0; /* float4 loads */
        cu_launch(k_mm_quant_q8_0, (unsigned)((n_blocks + 31) / 32), 256, 0, 
            d_x, ldx, n_blocks, p->nblk, cols, vec, p->codes, p->d);
    }
    CU_CHECK(cudaGetLastError(), err, "matmul quantize launch");
    return DS4_OK;
}
