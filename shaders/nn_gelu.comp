#version 450
#extension GL_GOOGLE_include_directive : require
// Exact GELU, x * 0.5 * (1 + erf(x / sqrt(2))): cd_nn_ref_unary (libcirrdata/nn/ref_ops.c). GLSL has no
// erf: Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7, so the output's <= 0.75e-7 |x| more).
// One invocation per element; the workgroup size is specialization constant 0.
#include "nn_storage.glsl"
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;
#include "invocation.glsl"
layout(std430, set = 0, binding = 0) readonly buffer X { ACT x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Out { ACT y[]; };
layout(push_constant) uniform Push {
    uint x_off, y_off, total, groups_x;
} pc;

// erf by A&S 7.1.26: 1 - (a1 t + ... + a5 t^5) exp(-x^2), t = 1 / (1 + p |x|), odd in x
float erf_as(float a) {
    const float p = 0.3275911, a1 = 0.254829592, a2 = -0.284496736, a3 = 1.421413741, a4 = -1.453152027,
                a5 = 1.061405429;
    const float z = abs(a), t = 1.0 / (1.0 + p * z);
    const float e = 1.0 - (((((a5 * t + a4) * t) + a3) * t + a2) * t + a1) * t * exp(-z * z);
    return a < 0.0 ? -e : (a >= 0.0 ? e : a); // NaN stays NaN
}

void main() {
    const uint i = cd_invocation(pc.groups_x);
    if (i >= pc.total) return;
    const float v = float(x[pc.x_off + i]);
    const float r = v * 0.5 * (1.0 + erf_as(v * 0.70710678118654752));
    y[pc.y_off + i] = ACT(r);
}
