#version 450
#extension GL_GOOGLE_include_directive : require
// Layer norm over the channels of NCHW at every (n, h, w): cd_nn_ref_layer_norm
// (libcirrdata/nn/ref_norm.c). One invocation per position: the mean, the biased variance around it
// (two passes, float32 sums; the reference sums in double), then (x - mean) / sqrt(var + eps) *
// weight + bias. Neighbouring invocations read neighbouring positions of one channel row. weight and
// bias stay float32 in the fp16 variant (like the GEMM's bias). The workgroup size is specialization
// constant 0.
#include "nn_storage.glsl"
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;
#include "invocation.glsl"
layout(std430, set = 0, binding = 0) readonly buffer In { ACT x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Wt { float wt[]; };
layout(std430, set = 0, binding = 2) readonly buffer Bs { float bs[]; };
layout(std430, set = 0, binding = 3) writeonly buffer Out { ACT y[]; };
layout(push_constant) uniform Push {
    uint x_off, w_off, b_off, y_off, total, groups_x; // total = N * H * W
    uint C, HW, flags;                                // flags: 1 weight, 2 bias
    float eps;
} pc;

void main() {
    const uint i = cd_invocation(pc.groups_x);
    if (i >= pc.total) return;
    const uint n = i / pc.HW, p = i - n * pc.HW;
    const uint base = n * pc.C * pc.HW + p;
    float s = 0.0;
    for (uint c = 0u; c < pc.C; c++) s += float(x[pc.x_off + base + c * pc.HW]);
    const float mean = s / float(pc.C);
    float v = 0.0;
    for (uint c = 0u; c < pc.C; c++) {
        const float d = float(x[pc.x_off + base + c * pc.HW]) - mean;
        v += d * d;
    }
    const float inv = 1.0 / sqrt(v / float(pc.C) + pc.eps);
    for (uint c = 0u; c < pc.C; c++) {
        float r = (float(x[pc.x_off + base + c * pc.HW]) - mean) * inv;
        if ((pc.flags & 1u) != 0u) r *= wt[pc.w_off + c];
        if ((pc.flags & 2u) != 0u) r += bs[pc.b_off + c];
        y[pc.y_off + base + c * pc.HW] = ACT(r);
    }
}
