#version 450
#extension GL_GOOGLE_include_directive : require
// Softmax over the channels of NCHW: cd_nn_ref_softmax (libcirrdata/nn/ref_ops.c). One invocation
// per (n, h, w) position: max, sum of exp(x - max), then the quotients. The workgroup size is
// specialization constant 0.
#include "nn_storage.glsl"
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;
#include "invocation.glsl"
layout(std430, set = 0, binding = 0) readonly buffer In { ACT x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Out { ACT y[]; };
layout(push_constant) uniform Push {
    uint x_off, y_off, total, groups_x; // total = N * H * W
    uint C, HW;
} pc;

void main() {
    const uint i = cd_invocation(pc.groups_x);
    if (i >= pc.total) return;
    const uint n = i / pc.HW, p = i - n * pc.HW;
    const uint base = n * pc.C * pc.HW + p;
    float m = uintBitsToFloat(0xff800000u);
    for (uint c = 0u; c < pc.C; c++) m = max(m, float(x[pc.x_off + base + c * pc.HW]));
    float s = 0.0;
    for (uint c = 0u; c < pc.C; c++) s += exp(float(x[pc.x_off + base + c * pc.HW]) - m);
    for (uint c = 0u; c < pc.C; c++) y[pc.y_off + base + c * pc.HW] = ACT(exp(float(x[pc.x_off + base + c * pc.HW]) - m) / s);
}
