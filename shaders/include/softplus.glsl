// PyTorch's softplus for the inference kernels (nn_softplus.comp, nn_selective_scan.comp), as
// cd_nn_ref_softplus (libcirrdata/nn/ref_scan.c) computes it with libm's log1pf. GLSL has no log1p, and
// log(1 + e) near 1 is poor twice over: 1 + e drops e's low bits, and Vulkan allows log an absolute
// error of 2^-21 on [0.5, 2]. So for e in [0, 1]: log1p(e) = 2 atanh(z), z = e / (2 + e) in [0, 1/3],
// by its series 2 z (1 + z^2/3 + ... + z^16/17) (the next term is below 2^-24 of the sum); above, log.

// log(1 + e) for e >= 0; NaN stays NaN, +inf gives +inf
float cd_log1p_pos(float e) {
    if (e <= 1.0) {
        const float z = e / (2.0 + e), z2 = z * z;
        float p = 1.0 / 17.0;
        p = p * z2 + 1.0 / 15.0;
        p = p * z2 + 1.0 / 13.0;
        p = p * z2 + 1.0 / 11.0;
        p = p * z2 + 1.0 / 9.0;
        p = p * z2 + 1.0 / 7.0;
        p = p * z2 + 1.0 / 5.0;
        p = p * z2 + 1.0 / 3.0;
        p = p * z2 + 1.0;
        return 2.0 * z * p;
    }
    return log(1.0 + e);
}

// x * beta > threshold ? x : log1p(exp(x * beta)) / beta (NaN fails the comparison and stays NaN)
float cd_softplus(float x, float beta, float threshold) {
    const float bx = x * beta;
    return bx > threshold ? x : cd_log1p_pos(exp(bx)) / beta;
}
