/*
 * model/smp_exp.h — the sampler's exp(x) in double, written once for the host (model/sampling.c)
 * and the device (cuda/sample_dev.cu) so both compute the same bits (issue #7, sampling on the
 * device). glibc's exp and CUDA's exp are each within ~1 ULP of e^x but not always the same
 * double; the sampler's min-p cut, top-p cut and draw compare these values, so a last-bit
 * difference could change a token. Only IEEE +, -, * (never contracted: the host builds with
 * -ffp-contract=off, the device spells them __dadd_rn / __dmul_rn), rint and a power of two
 * built from its bits. Must not: depend on the rounding mode being other than to-nearest.
 *
 * Method: x = k·ln2 + r with k = rint(x·log2 e) and ln2 in two parts (Cody-Waite), |r| <= 0.35;
 * e^r by its Taylor series to r^13/13! (truncation < 1e-17 relative), Horner; times 2^k.
 * x < -708 gives 0 (e^-708 ~ 3e-308 weighs nothing next to the best token's p = 1).
 */
#ifndef DS4_MODEL_SMP_EXP_H
#define DS4_MODEL_SMP_EXP_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define SMP_FN static __host__ __device__ __forceinline__
#ifdef __CUDA_ARCH__
#define SMP_DADD(a, b) __dadd_rn((a), (b))
#define SMP_DMUL(a, b) __dmul_rn((a), (b))
#else
#define SMP_DADD(a, b) ((a) + (b))
#define SMP_DMUL(a, b) ((a) * (b))
#endif
#else
#define SMP_FN static inline
#define SMP_DADD(a, b) ((a) + (b))
#define SMP_DMUL(a, b) ((a) * (b))
#endif

SMP_FN double smp_pow2i(int k) { /* 2^k for -1022 <= k <= 1023 */
    uint64_t bits = (uint64_t)(k + 1023) << 52;
#ifdef __CUDA_ARCH__
    return __longlong_as_double((long long)bits);
#else
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
#endif
}

SMP_FN double smp_exp(double x) {
    if (!(x >= -708.0)) return x != x ? x : 0.0;
    if (x > 709.0) return INFINITY;
    const double log2e = 0x1.71547652b82fep+0;
    const double ln2_hi = 0x1.62e42fee00000p-1, ln2_lo = 0x1.a39ef35793c76p-33;
    double k = rint(SMP_DMUL(x, log2e));
    double r = SMP_DADD(SMP_DADD(x, -SMP_DMUL(k, ln2_hi)), -SMP_DMUL(k, ln2_lo));
#define SMP_H(c) p = SMP_DADD(SMP_DMUL(p, r), c)
    double p = 0x1.6124613a86d09p-33; /* 1/13! ... 1/0!: the Taylor coefficients, correctly rounded */
    SMP_H(0x1.1eed8eff8d898p-29); SMP_H(0x1.ae64567f544e4p-26); SMP_H(0x1.27e4fb7789f5cp-22);
    SMP_H(0x1.71de3a556c734p-19); SMP_H(0x1.a01a01a01a01ap-16); SMP_H(0x1.a01a01a01a01ap-13);
    SMP_H(0x1.6c16c16c16c17p-10); SMP_H(0x1.1111111111111p-7); SMP_H(0x1.5555555555555p-5);
    SMP_H(0x1.5555555555555p-3); SMP_H(0x1.0000000000000p-1); SMP_H(1.0); SMP_H(1.0);
#undef SMP_H
    return SMP_DMUL(p, smp_pow2i((int)k));
}

#endif
