#version 450
#extension GL_GOOGLE_include_directive : require
// GELU, PyTorch's approximate='tanh': 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))),
// cd_nn_ref_unary (libcirrdata/nn/ref_ops.c). tanh u = 1 - 2 / (exp(2u) + 1): finite for every u
// (the built-in's sinh/cosh form may give inf/inf past |u| ~ 44).
// One invocation per element; the workgroup size is specialization constant 0.
#include "nn_storage.glsl"
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;
#include "invocation.glsl"
layout(std430, set = 0, binding = 0) readonly buffer X { ACT x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Out { ACT y[]; };
layout(push_constant) uniform Push {
    uint x_off, y_off, total, groups_x;
} pc;

void main() {
    const uint i = cd_invocation(pc.groups_x);
    if (i >= pc.total) return;
    const float v = float(x[pc.x_off + i]);
    const float u = 0.79788456080286536 * (v + 0.044715 * v * v * v);
    const float t = 1.0 - 2.0 / (exp(2.0 * u) + 1.0);
    const float r = 0.5 * v * (1.0 + t);
    y[pc.y_off + i] = ACT(r);
}
