#version 450
#extension GL_GOOGLE_include_directive : require
// Elementwise add of two equal-shaped tensors with an optional fused ReLU: cd_nn_ref_add
// (libcirrdata/nn/ref_ops.c); with flag 2 (unary) the second operand is absent and this is a
// standalone ReLU. One invocation per element; the workgroup size is specialization constant 0.
#include "nn_storage.glsl"
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;
#include "invocation.glsl"
layout(std430, set = 0, binding = 0) readonly buffer A { ACT a[]; };
layout(std430, set = 0, binding = 1) readonly buffer B { ACT b[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Out { ACT y[]; };
layout(push_constant) uniform Push {
    uint a_off, b_off, y_off, total, groups_x, flags; // flags: 1 relu, 2 unary (no b)
} pc;

void main() {
    const uint i = cd_invocation(pc.groups_x);
    if (i >= pc.total) return;
    float v = float(a[pc.a_off + i]);
    if ((pc.flags & 2u) == 0u) v += float(b[pc.b_off + i]);
    if ((pc.flags & 1u) != 0u) v = max(v, 0.0);
    y[pc.y_off + i] = ACT(v);
}
