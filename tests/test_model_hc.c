/* tests/test_model_hc.c — hyper-connections against the MODEL_MATH §4.5 unit-test vectors
 * (values quoted from that section; f64 reference, f32 must agree to ~1e-6). */
#include <criterion/criterion.h>
#include <math.h>

#include "model/hc.h"

Test(model_hc, sinkhorn_split_matches_spec_vectors) {
    float m[24], base[24], scale[3] = {0.9f, 1.1f, 2.0f};
    for (int i = 0; i < 24; i++) {
        m[i] = (float)(1.5 * sin(1.3 * i));
        base[i] = (float)(0.4 * cos(0.7 * i));
    }
    float pre[4], post[4], C[16];
    hc_split(m, scale, base, 4, 20, 1e-6f, pre, post, C);
    const double pre_ref[4] = {0.5986887, 0.8329593, 0.6822038, 0.2440841};
    const double post_ref[4] = {0.2753850, 0.9901830, 1.6204560, 1.2918237};
    const double C_ref[16] = {0.0010899, 0.0072673, 0.7142188, 0.2776226,
                              0.1092715, 0.0205337, 0.1710006, 0.6993558,
                              0.7242499, 0.2036039, 0.0497403, 0.0222443,
                              0.1653877, 0.7685942, 0.0650393, 0.0007763};
    for (int k = 0; k < 4; k++) {
        cr_assert(fabs(pre[k] - pre_ref[k]) < 2e-6, "pre[%d] ref %.7f got %.7f", k, pre_ref[k], pre[k]);
        cr_assert(fabs(post[k] - post_ref[k]) < 2e-6, "post[%d] ref %.7f got %.7f", k, post_ref[k], post[k]);
    }
    for (int i = 0; i < 16; i++)
        cr_assert(fabs(C[i] - C_ref[i]) < 2e-6, "C[%d][%d] ref %.7f got %.7f", i / 4, i % 4,
                  C_ref[i], C[i]);
    /* X = [1,2,3,4] with D = 1, f = 10 */
    float X[4] = {1, 2, 3, 4}, a, Xo[4], f = 10.0f;
    hc_weighted_sum(X, pre, 4, 1, &a);
    cr_assert(fabs(a - 5.287555) < 5e-6, "hc_pre a ref 5.287555 got %.7f", a);
    hc_post(&f, X, post, C, 4, 1, Xo);
    const double xo_ref[4] = {5.807783, 13.635353, 17.670158, 14.664410};
    for (int k = 0; k < 4; k++)
        cr_assert(fabs(Xo[k] - xo_ref[k]) < 2e-5, "hc_post X'[%d] ref %.6f got %.6f", k,
                  xo_ref[k], Xo[k]);
}

Test(model_hc, head_weights_are_sigmoid_plus_eps) {
    float m[4] = {0.5f, -1.0f, 2.0f, 0.0f}, base[4] = {0.1f, 0.2f, -0.3f, 0.0f}, pre[4];
    hc_head_weights(m, 2.0f, base, 4, 1e-6f, pre);
    for (int k = 0; k < 4; k++) {
        double ref = 1.0 / (1.0 + exp(-(m[k] * 2.0 + base[k]))) + 1e-6;
        cr_assert(fabs(pre[k] - ref) < 1e-7, "pre[%d] ref %.8f got %.8f", k, ref, pre[k]);
    }
}
