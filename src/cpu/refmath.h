/*
 * cpu/refmath.h — the reference's transcendentals (exp, log1p, sin, cos), written once for the
 * host (cpu/ops.c and the model files) and the device (cuda/ops.cuh) so that both backends
 * compute the same bits by construction (issue #7: GPU logits bit-identical to the CPU).
 *
 * Why not the libraries: glibc's expf / log1pf / cos and CUDA's exp / log1p / cos are each
 * within an ULP or so of the true value but not the same function; a q2 model rounds every
 * activation (Q8 records, FP8 KV, FP4 indexer), so one last-bit difference flips a rounding
 * now and then and the flips grow (docs/ENGINE.md §3). Here every step is an IEEE double +, -,
 * *, / (the host builds with -ffp-contract=off; the device spells them __dadd_rn etc., which
 * nvcc never contracts), rint, and exponent bits; the f32 results are the double ones rounded
 * once, so they are the correctly rounded f32 values except where the double (within ~1 ULP
 * of the truth) sits next to an f32 rounding midpoint — rare, and the same on both sides.
 *
 * exp is model/smp_exp.h's (the sampler's); log1p and sin/cos are below. Must not: depend on
 * a rounding mode other than to-nearest, or on errno.
 */
#ifndef DS4_CPU_REFMATH_H
#define DS4_CPU_REFMATH_H

#include "model/smp_exp.h"

/* DS4_REFMATH_LIBM (timing builds only, e.g. make cuda BUILD=build/x CPPFLAGS="-Iinclude -Isrc
 * -DDS4_REFMATH_LIBM"): the libraries' double functions and plain double sums instead, what
 * the GPU computed before session 4, so one device call can time both. Not bit-identical. */
#ifdef __CUDACC__
#define REF_FN static __host__ __device__ __forceinline__
#else
#define REF_FN static inline
#endif
#ifdef __CUDA_ARCH__
#define REF_DADD(a, b) __dadd_rn((a), (b))
#define REF_DSUB(a, b) __dsub_rn((a), (b))
#define REF_DMUL(a, b) __dmul_rn((a), (b))
#define REF_DDIV(a, b) __ddiv_rn((a), (b))
#else
#define REF_DADD(a, b) ((a) + (b))
#define REF_DSUB(a, b) ((a) - (b))
#define REF_DMUL(a, b) ((a) * (b))
#define REF_DDIV(a, b) ((a) / (b))
#endif

/* A sum of doubles that carries its rounding errors (Knuth's TwoSum): s + c is the exact sum up
 * to ~n²·2^-106 relative (n terms), so any two orders of the same terms (the CPU's loop, a
 * GPU block's tree) give the same double value() except in ~2^-25 of sums, and an f32 made
 * from it (RMSNorm's 1/sqrt(mean + eps), ref_rms_inv) the same except in ~2^-54. A plain
 * double sum differs between two orders by ~2^-48 relative at n = 4096, which flips that f32
 * once in ~10^7 norms: about once per full-size 2048-token prefill (h6, session 4). */
typedef struct ref_dsum {
    double s, c;
} ref_dsum;

REF_FN void ref_dsum_add(ref_dsum *a, double y) {
#ifdef DS4_REFMATH_LIBM
    a->s += y;
    return;
#endif
    double t = REF_DADD(a->s, y), bp = REF_DSUB(t, a->s);
    double e = REF_DADD(REF_DSUB(a->s, REF_DSUB(t, bp)), REF_DSUB(y, bp)); /* exact a->s+y-t */
    a->s = t;
    a->c = REF_DADD(a->c, e);
}

/* a += b; symmetric in a and b (the same bits either way round), as butterflies need. */
REF_FN void ref_dsum_merge(ref_dsum *a, ref_dsum b) {
    double c = REF_DADD(a->c, b.c);
    a->c = 0.0;
    ref_dsum_add(a, b.s);
    a->c = REF_DADD(a->c, c);
}

REF_FN double ref_dsum_value(ref_dsum a) { return REF_DADD(a.s, a.c); }

/* MODEL_MATH §3.1 / §4.1: 1/sqrt(ss/n + eps) in double, rounded once to f32. */
REF_FN float ref_rms_inv(double ss, int64_t n, float eps) {
    return (float)(1.0 / sqrt(REF_DADD(REF_DDIV(ss, (double)n), (double)eps)));
}

/* e^x rounded to f32 (MODEL_MATH's softmax / sigmoid / SiLU exp). -inf gives 0, NaN NaN. */
REF_FN float ref_expf(float x) {
#ifdef DS4_REFMATH_LIBM
    return (float)exp((double)x);
#endif
    return (float)smp_exp((double)x);
}

/* log(1 + y) for finite y >= 0 (softplus's log1p of an exp), in double. u = 1 + y rounded,
 * its rounding error e exactly (TwoSum); u = m·2^k with m in [sqrt(1/2), sqrt(2)); log m =
 * 2·atanh(s), s = (m-1)/(m+1), |s| <= 0.172, series to s^21 (truncation < 2^-55 relative);
 * log1p(y) = k·ln2 + log m + e/u. y < 0 or not finite: NaN / the input (unused by the model). */
REF_FN double ref_log1p(double y) {
#ifdef DS4_REFMATH_LIBM
    return log1p(y);
#endif
    if (!(y >= 0.0) || y > 1e300) return y != y || y < 0.0 ? (y - y) / (y - y) : y;
    double u = REF_DADD(1.0, y);
    double bb = REF_DSUB(u, 1.0);
    double e = REF_DADD(REF_DSUB(1.0, REF_DSUB(u, bb)), REF_DSUB(y, bb));
    int k;
    frexp(u, &k); /* u = f·2^k, f in [1/2, 1): exact */
    k -= 1;
    double m = REF_DMUL(u, smp_pow2i(-k)); /* in [1, 2), exact */
    if (m > 0x1.6a09e667f3bcdp+0) {
        m = REF_DMUL(m, 0.5);
        k += 1;
    }
    double f = REF_DSUB(m, 1.0); /* exact (Sterbenz) */
    double s = REF_DDIV(f, REF_DADD(2.0, f));
    double z = REF_DMUL(s, s);
#define REF_H(c) p = REF_DADD(REF_DMUL(p, z), c)
    double p = 0x1.8618618618618p-5; /* 1/21, 1/19, ..., 1/3, 1 */
    REF_H(0x1.af286bca1af28p-5); REF_H(0x1.e1e1e1e1e1e1ep-5); REF_H(0x1.1111111111111p-4);
    REF_H(0x1.3b13b13b13b14p-4); REF_H(0x1.745d1745d1746p-4); REF_H(0x1.c71c71c71c71cp-4);
    REF_H(0x1.2492492492492p-3); REF_H(0x1.999999999999ap-3); REF_H(0x1.5555555555555p-2);
    REF_H(1.0);
#undef REF_H
    double logm = REF_DMUL(REF_DMUL(2.0, s), p);
    const double ln2_hi = 0x1.62e42fee00000p-1, ln2_lo = 0x1.a39ef35793c76p-33;
    double kd = (double)k;
    double r = REF_DADD(REF_DMUL(kd, ln2_lo), REF_DDIV(e, u));
    return REF_DADD(REF_DMUL(kd, ln2_hi), REF_DADD(logm, r));
}

/* cos and sin of an f32 angle (MODEL_MATH §3.3's RoPE angle), each rounded to f32. Reduction
 * x = q·π/2 + r with q = rint(x·2/π) and π/2 in three parts (Cody-Waite; the first two have 33
 * significant bits, so q·P1 and q·P2 are exact for |q| < 2^20, i.e. |x| < 1.6e6, and x - q·P1
 * is exact by Sterbenz), |r| <= π/4 + tiny; Taylor series to r^17 / r^18 (truncation below
 * 2^-53 relative), Horner in r²; the quadrant picks and signs the two. Larger |x| (beyond any
 * position the model reaches at 1M context) loses accuracy but stays identical on both sides. */
REF_FN void ref_sincosf(float xf, float *c_out, float *s_out) {
#ifdef DS4_REFMATH_LIBM
    *c_out = (float)cos((double)xf);
    *s_out = (float)sin((double)xf);
    return;
#endif
    if (xf != xf || xf - xf != 0.0f) { /* NaN / inf: NaN */
        *c_out = *s_out = xf - xf;
        return;
    }
    double x = (double)xf;
    double q = rint(REF_DMUL(x, 0x1.45f306dc9c883p-1));
    double r = REF_DSUB(x, REF_DMUL(q, 0x1.921fb54400000p+0));
    r = REF_DSUB(r, REF_DMUL(q, 0x1.0b4611a600000p-34));
    r = REF_DSUB(r, REF_DMUL(q, 0x1.3198a2e037073p-69));
    double z = REF_DMUL(r, r);
#define REF_H(acc, c) acc = REF_DADD(REF_DMUL(acc, z), c)
    double ps = 0x1.952c77030ad4ap-49; /* 1/17!, -1/15!, ..., 1 */
    REF_H(ps, -0x1.ae7f3e733b81fp-41); REF_H(ps, 0x1.6124613a86d09p-33);
    REF_H(ps, -0x1.ae64567f544e4p-26); REF_H(ps, 0x1.71de3a556c734p-19);
    REF_H(ps, -0x1.a01a01a01a01ap-13); REF_H(ps, 0x1.1111111111111p-7);
    REF_H(ps, -0x1.5555555555555p-3); REF_H(ps, 1.0);
    double pc = -0x1.6827863b97d97p-53; /* -1/18!, 1/16!, ..., 1 */
    REF_H(pc, 0x1.ae7f3e733b81fp-45); REF_H(pc, -0x1.93974a8c07c9dp-37);
    REF_H(pc, 0x1.1eed8eff8d898p-29); REF_H(pc, -0x1.27e4fb7789f5cp-22);
    REF_H(pc, 0x1.a01a01a01a01ap-16); REF_H(pc, -0x1.6c16c16c16c17p-10);
    REF_H(pc, 0x1.5555555555555p-5); REF_H(pc, -0x1.0000000000000p-1); REF_H(pc, 1.0);
#undef REF_H
    double sr = REF_DMUL(r, ps), cr = pc;
    double q4 = REF_DSUB(q, REF_DMUL(4.0, floor(REF_DMUL(q, 0.25)))); /* q mod 4, exact */
    int quad = (int)q4;
    double cs = quad == 0 ? cr : quad == 1 ? -sr : quad == 2 ? -cr : sr;
    double sn = quad == 0 ? sr : quad == 1 ? cr : quad == 2 ? -sr : -cr;
    *c_out = (float)cs;
    *s_out = (float)sn;
}

#endif
