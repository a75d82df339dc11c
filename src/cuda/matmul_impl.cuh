/*
 * cuda/matmul_impl.cuh — what the prefill matmul files share (matmul.cu: the public entries and
 * argument checks; matmul_mma.cu: int8 tensor-core kernels for the quantized types;
 * matmul_f32.cu: SIMT kernels for F32/F16/BF16; matmul_simt.cu: the old f32 kernel kept as the
 * benchmark baseline): the token-tile scheduler of the dense and the grouped (routed experts)
 * launches, and the host launchers.
 *
 * Token tiles: a dense launch cuts n_tok tokens into tiles of `bn`; a grouped launch cuts each
 * expert's rows d_off[e] .. d_off[e+1] (rows of x sorted by expert) into tiles of `bn`, the
 * tiles of all experts numbered in expert order. blockIdx.y is the tile number; the grid has an
 * upper bound of tiles (ceil(n/bn) + n_expert) and the blocks past the last tile return.
 * Must not: know tensor names or the model.
 */
#ifndef DS4_CUDA_MATMUL_IMPL_CUH
#define DS4_CUDA_MATMUL_IMPL_CUH

#include "common.cuh"

/* What a tile block works on: weights of expert e, token (x/y row) range [t0, t1). */
struct mm_tile {
    int e;
    int64_t t0, t1;
};

/* Finds tile number `tile` (all threads of the block call it; blockDim.x a multiple of 32, at
 * most 1024). Returns false, in every thread, when the tile is past the last one. d_off NULL:
 * dense, n_tok tokens. */
__device__ inline bool mm_find_tile(const int32_t *d_off, int n_expert, int64_t n_tok, int bn,
                                    int64_t tile, mm_tile *out) {
    if (!d_off) {
        out->e = 0;
        out->t0 = tile * bn;
        out->t1 = out->t0 + bn < n_tok ? out->t0 + bn : n_tok;
        return out->t0 < n_tok;
    }
    __shared__ int64_t s_warp[32];
    __shared__ mm_tile s_hit;
    __shared__ int s_found;
    int tid = threadIdx.x, nt = blockDim.x, lane = tid & 31, warp = tid >> 5;
    int per = (n_expert + nt - 1) / nt, e0 = tid * per;
    int e1 = e0 + per < n_expert ? e0 + per : n_expert;
    int64_t mine = 0;
    for (int e = e0; e < e1; e++) mine += (d_off[e + 1] - d_off[e] + bn - 1) / bn;
    /* Exclusive prefix over threads: inclusive warp scan, then the warp totals. */
    int64_t inc = mine;
    for (int o = 1; o < 32; o <<= 1) {
        int64_t v = __shfl_up_sync(0xffffffffu, inc, o);
        if (lane >= o) inc += v;
    }
    if (tid == 0) s_found = 0;
    if (lane == 31) s_warp[warp] = inc;
    __syncthreads();
    int64_t before = 0;
    for (int w = 0; w < warp; w++) before += s_warp[w];
    int64_t excl = before + inc - mine;
    if (tile >= excl && tile < excl + mine) {
        int64_t k = tile - excl;
        for (int e = e0; e < e1; e++) {
            int64_t n = (d_off[e + 1] - d_off[e] + bn - 1) / bn;
            if (k < n) {
                s_hit.e = e;
                s_hit.t0 = d_off[e] + k * bn;
                s_hit.t1 = s_hit.t0 + bn < d_off[e + 1] ? s_hit.t0 + bn : d_off[e + 1];
                s_found = 1;
                break;
            }
            k -= n;
        }
    }
    __syncthreads();
    *out = s_hit;
    return s_found != 0;
}

/* The outputs of a thread of the int8 kernels (matmul_mma.cu, matmul_q8.cu): a 128-row x
 * 64-token block tile of 8 warps, warp tile 32 x 32 at rows wr, tokens wt of the tile; acc holds
 * the mma m16n8 fragments (rows r0+wr+16mt+g+8(c/2), tokens t0+wt+8nt+2tg+(c&1)), each times
 * `scale` when it is not 1 (IQ2_XXS's 0.125, rounded once); rows >= rows and tokens >= t1 are
 * not stored. */
__device__ inline void mm_store_frags(const float (&acc)[2][4][4], float scale, float *y,
                                      int64_t ldy, int64_t r0, int64_t rows, int64_t t0,
                                      int64_t t1, int wr, int wt, int g, int tg) {
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int c = 0; c < 4; c++) {
                int64_t o = r0 + wr + 16 * mt + g + 8 * (c >> 1);
                int64_t t = t0 + wt + 8 * nt + 2 * tg + (c & 1);
                float v = scale != 1.0f ? __fmul_rn(scale, acc[mt][nt][c]) : acc[mt][nt][c];
                if (o < rows && t < t1) y[t * ldy + o] = v;
            }
}

/* Activations of the int8 kernels in planes (matmul_quant.cu), inside the d_act scratch:
 * codes int8 [n][cols] (16-byte aligned), scales f32 [n][nblk], Q8_K bsums int16 [n][nblk][16]
 * (16-byte aligned). Same values as quantize.cu's Q8_K blocks / Q8_0 activation records. */
enum { MM_ACT_Q8_0 = 1, MM_ACT_Q8_K = 2 }; /* = CUDA_ACT_Q8_0 / CUDA_ACT_Q8_K */
struct mm_planes {
    int8_t *codes;
    float *d;
    int16_t *bsums;
    int64_t nblk; /* blocks (32 or 256 values) per x row */
};
#define MM_PLANES_SLACK 32 /* alignment bytes on top of the record bytes */
mm_planes mm_planes_of(void *d_act, int kind, int64_t n, int64_t cols);
ds4_status mm_quantize_planes(int kind, const float *d_x, int64_t ldx, int64_t n, int64_t cols,
                              const mm_planes *p, ds4_error *err);

/* One launch over the (dense or grouped) tiles. act: quantized activations (Q8_0 records for
 * Q8_0, Q8_K blocks otherwise), act_stride bytes per x row; float types read x (ldx floats). */
struct mm_args {
    int type;
    const uint8_t *w;
    int64_t rows, cols;
    uint64_t row_bytes, expert_stride;
    const int32_t *d_off; /* NULL: dense */
    int n_expert;
    const uint8_t *act; /* quantized records (matmul_simt.cu) */
    size_t act_stride;
    mm_planes planes; /* quantized planes (matmul_mma.cu) */
    const float *x;
    int64_t ldx;
    int64_t n_tok; /* dense: tokens; grouped: rows of x in all */
    float *y;
    int64_t ldy;
};

/* Row bytes of a `type` row of `cols` values, and the shape checks every entry makes. */
ds4_status mm_check(int type, int64_t rows, int64_t cols, int64_t ldx, int64_t ldy,
                    uint64_t *row_bytes, ds4_error *err);
/* Quantizes n rows of x (ldx floats apart) per row as cpu_matmul does into d_act, *stride bytes
 * per row (quantized types); float types leave d_act alone (*stride 0). */
ds4_status mm_quantize(int type, const float *d_x, int64_t ldx, int64_t n, int64_t cols,
                       void *d_act, size_t *stride, ds4_error *err);

ds4_status mm_launch_mma(const mm_args *a, ds4_error *err);  /* Q8_0, Q2_K, Q4_K, IQ2_XXS */
ds4_status mm_launch_float(const mm_args *a, ds4_error *err); /* F32, F16, BF16 */

#endif
