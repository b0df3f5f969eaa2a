#version 450
#extension GL_GOOGLE_include_directive : require
// Hardswish, x * relu6(x + 3) / 6: cd_nn_ref_unary (libcirrdata/nn/ref_ops.c); the clamp by
// comparisons (false for NaN) so that NaN stays NaN.
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
    float c = v + 3.0;
    c = c < 0.0 ? 0.0 : c;
    c = c > 6.0 ? 6.0 : c;
    const float r = v * c / 6.0;
    y[pc.y_off + i] = ACT(r);
}
