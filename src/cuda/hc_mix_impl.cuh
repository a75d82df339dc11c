/*
 * cuda/hc_mix_impl.cuh — the pieces of hc_mix.cu's k_hc_mix2 that hold no device state: the
 * launch's argument block, the named barriers between producers and the chain warp, the chains
 * of adds (one CPU lane's terms left to right, format/quant_dot.c q_dot_f32/f16), and the two
 * producers (hcm_unit: one 8-value unit; hcm_group: one column group of every stream), which
 * form X2 with k_hc_post's operations (MODEL_MATH §4.3) and the rounded products w·x2.
 * Must not: launch anything or hold globals (hc_mix.cu has the counter and the phase table).
 */
#ifndef DS4_CUDA_HC_MIX_IMPL_CUH
#define DS4_CUDA_HC_MIX_IMPL_CUH

#include "hc_impl.cuh"

struct hcm_args {
    const uint8_t *fn;                /* [rows][cols] F32 or F16, cols = hc·d */
    const float *X, *f, *post, *comb; /* X [hc][d]; f NULL: no pending hc_post */
    float *Xout;                      /* X2 (with f) */
    float *mix;                       /* [rows] */
    int64_t rows, cols, d;
    int hc, n_mix_blocks;
    /* k_hc_mix2: 8-value units, d / 8, the tile's stride, producer warps, units per chunk;
     * solo: no producer on warp 0's scheduler (warps 4, 8, .. idle) */
    int n_units, du, js, npw, upc, n_chunks, solo;
    int sc;    /* k_hc_mix2: stream chunks (hcm_group) */
    int trace; /* stamp the phases into g_hcm_trace (cuda_hc_mix_trace) */
    /* hc_pre (k_hc_mix with PRE): as cuda_hc_pre_quant; post_out/comb_out may be post/comb */
    const float *scale, *base, *norm;
    int iters;
    float hc_eps, norm_eps;
    float *pre, *post_out, *comb_out, *a;
    uint8_t *q80, *q8k;
};

/* Named barrier b (1..15) of n threads (a multiple of 32, every thread of a warp). */
__device__ __forceinline__ void hcm_bar_arrive(int b, int n) {
    asm volatile("bar.arrive %0, %1;" ::"r"(b), "r"(n) : "memory");
}
__device__ __forceinline__ void hcm_bar_sync(int b, int n) {
    asm volatile("bar.sync %0, %1;" ::"r"(b), "r"(n) : "memory");
}

__device__ __forceinline__ float hcm_add4(float acc, float4 v) {
    acc = __fadd_rn(acc, v.x);
    acc = __fadd_rn(acc, v.y);
    acc = __fadd_rn(acc, v.z);
    return __fadd_rn(acc, v.w);
}

/* acc + c[0] + .. + c[n-1] left to right (c 16-byte aligned shared memory): the next 16
 * values' loads are issued before the current 16 adds, so only the adds' latency shows. */
__device__ __forceinline__ float hcm_chain(float acc, const float *c, int n) {
    int i = 0;
    if (n >= 16) {
        const float4 *c4 = (const float4 *)c;
        float4 v0 = c4[0], v1 = c4[1], v2 = c4[2], v3 = c4[3];
        for (i = 16; i + 16 <= n; i += 16) {
            const float4 w0 = c4[i / 4], w1 = c4[i / 4 + 1], w2 = c4[i / 4 + 2], w3 = c4[i / 4 + 3];
            acc = hcm_add4(hcm_add4(hcm_add4(hcm_add4(acc, v0), v1), v2), v3);
            v0 = w0; v1 = w1; v2 = w2; v3 = w3;
        }
        acc = hcm_add4(hcm_add4(hcm_add4(hcm_add4(acc, v0), v1), v2), v3);
    }
    for (; i < n; i++) acc = __fadd_rn(acc, c[i]);
    return acc;
}

/* Producer: unit u of row wr into the tile. X2's 8 values at stream k, columns c..c+7 by
 * k_hc_post's operations (post·f, then comb[j][k]·X[j] for j ascending); HCT = hc when known
 * at compile time (Flash's 4: every load of the unit issued before the first add), 0 = a.hc. */
template <int T, int HCT>
__device__ __forceinline__ void hcm_unit(const hcm_args &a, const uint8_t *wr, int u, bool writer,
                                         float *tile) {
    const int64_t col = 8 * (int64_t)u;
    float w[8], x[8];
    if (T == CU_T_F32) {
        const float4 w0 = __ldg((const float4 *)(wr + col * 4)), w1 = __ldg((const float4 *)(wr + col * 4 + 16));
        w[0] = w0.x; w[1] = w0.y; w[2] = w0.z; w[3] = w0.w;
        w[4] = w1.x; w[5] = w1.y; w[6] = w1.z; w[7] = w1.w;
    } else {
        const uint4 h = __ldg((const uint4 *)(wr + col * 2));
        const unsigned hw[4] = {h.x, h.y, h.z, h.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            w[2 * i] = __half2float(__ushort_as_half((unsigned short)(hw[i] & 0xFFFFu)));
            w[2 * i + 1] = __half2float(__ushort_as_half((unsigned short)(hw[i] >> 16)));
        }
    }
    if (a.f) {
        const int hc = HCT ? HCT : a.hc;
        const int k = u / a.du; /* the stream (d a multiple of 8: a unit never straddles two) */
        const int64_t c = col - (int64_t)k * a.d;
        const float4 f0 = *(const float4 *)(a.f + c), f1 = *(const float4 *)(a.f + c + 4);
        const float pk = __ldg(a.post + k);
        x[0] = __fmul_rn(pk, f0.x); x[1] = __fmul_rn(pk, f0.y); x[2] = __fmul_rn(pk, f0.z); x[3] = __fmul_rn(pk, f0.w);
        x[4] = __fmul_rn(pk, f1.x); x[5] = __fmul_rn(pk, f1.y); x[6] = __fmul_rn(pk, f1.z); x[7] = __fmul_rn(pk, f1.w);
#pragma unroll
        for (int j = 0; j < (HCT ? HCT : HC_MAX); j++) {
            if (!HCT && j >= hc) break;
            const float cj = __ldg(a.comb + j * hc + k);
            const float *xj = a.X + (int64_t)j * a.d + c;
            const float4 x0 = *(const float4 *)xj, x1 = *(const float4 *)(xj + 4);
            x[0] = __fadd_rn(x[0], __fmul_rn(cj, x0.x)); x[1] = __fadd_rn(x[1], __fmul_rn(cj, x0.y));
            x[2] = __fadd_rn(x[2], __fmul_rn(cj, x0.z)); x[3] = __fadd_rn(x[3], __fmul_rn(cj, x0.w));
            x[4] = __fadd_rn(x[4], __fmul_rn(cj, x1.x)); x[5] = __fadd_rn(x[5], __fmul_rn(cj, x1.y));
            x[6] = __fadd_rn(x[6], __fmul_rn(cj, x1.z)); x[7] = __fadd_rn(x[7], __fmul_rn(cj, x1.w));
        }
        if (writer) {
            *(float4 *)(a.Xout + col) = make_float4(x[0], x[1], x[2], x[3]);
            *(float4 *)(a.Xout + col + 4) = make_float4(x[4], x[5], x[6], x[7]);
        }
    } else {
        const float4 x0 = *(const float4 *)(a.X + col), x1 = *(const float4 *)(a.X + col + 4);
        x[0] = x0.x; x[1] = x0.y; x[2] = x0.z; x[3] = x0.w;
        x[4] = x1.x; x[5] = x1.y; x[6] = x1.z; x[7] = x1.w;
    }
#pragma unroll
    for (int j = 0; j < 8; j++) tile[j * a.js + u] = __fmul_rn(w[j], x[j]);
}

/* Producer p in stream chunks (a.sc: chunk k = stream k's du units, du <= producers): it owns
 * column group p (columns c = 8p .. 8p+7 of every stream), loads f and X[0..HCT) there once
 * (k_hc_post reads X[j][c] for every stream k: a quarter of hcm_unit's loads), then for each
 * stream k computes unit u = k·du + p (X2 by k_hc_post's operations, the products w·x2) and
 * arrives at barrier 1+k (the chain takes longer over a stream than a load's round trip). */
template <int T, int HCT>
__device__ __forceinline__ void hcm_group(const hcm_args &a, const uint8_t *wr, int p, bool writer,
                                          float *tile, int nbar) {
    const bool have = p < a.du;
    const int64_t c = 8 * (int64_t)p;
    float fv[8], xv[HCT ? HCT : 1][8]; /* HCT 0: never called (a.sc needs HCT) */
    uint4 wn[2] = {make_uint4(0u, 0u, 0u, 0u), make_uint4(0u, 0u, 0u, 0u)};
    if (have) {
        const uint8_t *wu = wr + c * (T == CU_T_F32 ? 4 : 2); /* stream 0's unit */
        wn[0] = __ldg((const uint4 *)wu);
        if (T == CU_T_F32) wn[1] = __ldg((const uint4 *)(wu + 16));
#pragma unroll
        for (int j = 0; j < HCT; j++) {
            const float4 x0 = *(const float4 *)(a.X + (int64_t)j * a.d + c);
            const float4 x1 = *(const float4 *)(a.X + (int64_t)j * a.d + c + 4);
            xv[j][0] = x0.x; xv[j][1] = x0.y; xv[j][2] = x0.z; xv[j][3] = x0.w;
            xv[j][4] = x1.x; xv[j][5] = x1.y; xv[j][6] = x1.z; xv[j][7] = x1.w;
        }
        if (a.f) {
            const float4 f0 = *(const float4 *)(a.f + c), f1 = *(const float4 *)(a.f + c + 4);
            fv[0] = f0.x; fv[1] = f0.y; fv[2] = f0.z; fv[3] = f0.w;
            fv[4] = f1.x; fv[5] = f1.y; fv[6] = f1.z; fv[7] = f1.w;
        }
    }
#pragma unroll
    for (int k = 0; k < HCT; k++) {
        if (have) { /* value by value: xv, fv and this unit's weights are the live registers */
            const int u = k * a.du + p;
            if (k > 0) {
                const uint8_t *wu = wr + (int64_t)u * 8 * (T == CU_T_F32 ? 4 : 2);
                wn[0] = __ldg((const uint4 *)wu);
                if (T == CU_T_F32) wn[1] = __ldg((const uint4 *)(wu + 16));
            }
            float pk = 0.0f, cj[HCT ? HCT : 1];
            if (a.f) {
                pk = __ldg(a.post + k);
#pragma unroll
                for (int j = 0; j < HCT; j++) cj[j] = __ldg(a.comb + j * HCT + k);
            }
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const unsigned wb = T == CU_T_F32 ? (i < 4 ? (&wn[0].x)[i] : (&wn[1].x)[i - 4])
                                                  : (&wn[0].x)[i / 2];
                const float w = T == CU_T_F32 ? __uint_as_float(wb)
                                              : __half2float(__ushort_as_half(
                                                    (unsigned short)(i & 1 ? wb >> 16 : wb & 0xFFFFu)));
                float x = xv[k][i];
                if (a.f) {
                    x = __fmul_rn(pk, fv[i]);
#pragma unroll
                    for (int j = 0; j < HCT; j++) x = __fadd_rn(x, __fmul_rn(cj[j], xv[j][i]));
                    if (writer) a.Xout[(int64_t)u * 8 + i] = x;
                }
                tile[i * a.js + u] = __fmul_rn(w, x);
            }
        }
        __syncwarp();
        hcm_bar_arrive(1 + k, nbar);
    }
}

#endif
