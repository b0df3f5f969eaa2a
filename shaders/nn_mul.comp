#version 450
#extension GL_GOOGLE_include_directive : require
// Elementwise product a * b: cd_nn_ref_mul (libcirrdata/nn/ref_norm.c). b has a's shape, or with
// HW > 0 it is (N, C, 1, 1): one factor per (n, c) plane of HW elements (squeeze-and-excitation).
// One invocation per element; the workgroup size is specialization constant 0.
#include "nn_storage.glsl"
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;
#include "invocation.glsl"
layout(std430, set = 0, binding = 0) readonly buffer A { ACT a[]; };
layout(std430, set = 0, binding = 1) readonly buffer B { ACT b[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Out { ACT y[]; };
layout(push_constant) uniform Push {
    uint a_off, b_off, y_off, total, groups_x, HW; // HW 0: b has a's shape
} pc;

void main() {
    const uint i = cd_invocation(pc.groups_x);
    if (i >= pc.total) return;
    const uint j = pc.HW == 0u ? i : i / pc.HW;
    y[pc.y_off + i] = ACT(float(a[pc.a_off + i]) * float(b[pc.b_off + j]));
}
