#version 450
#extension GL_GOOGLE_include_directive : require
// SiLU, x * sigmoid(x) = x / (1 + exp(-x)): cd_nn_ref_unary (libcirrdata/nn/ref_ops.c).
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
    const float r = v / (1.0 + exp(-v));
    y[pc.y_off + i] = ACT(r);
}
