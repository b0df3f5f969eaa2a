#version 450
#extension GL_GOOGLE_include_directive : require
// adaptive_avg_pool2d over NCHW: cd_nn_ref_adaptive_avgpool2d (libcirrdata/nn/ref_ops.c), PyTorch's
// bins: rows floor(i H / OH) .. ceil((i + 1) H / OH). One invocation per output element, summing in
// row-major order. The workgroup size is specialization constant 0.
#include "nn_storage.glsl"
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;
#include "invocation.glsl"
layout(std430, set = 0, binding = 0) readonly buffer In { ACT x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Out { ACT y[]; };
layout(push_constant) uniform Push {
    uint x_off, y_off, total, groups_x;
    uint H, W, OH, OW;
} pc;

void main() {
    const uint i = cd_invocation(pc.groups_x);
    if (i >= pc.total) return;
    const uint ohw = pc.OH * pc.OW;
    const uint plane = i / ohw, p = i - plane * ohw;
    const uint oh = p / pc.OW, ow = p - oh * pc.OW;
    const uint hs = (oh * pc.H) / pc.OH, he = ((oh + 1u) * pc.H + pc.OH - 1u) / pc.OH;
    const uint ws = (ow * pc.W) / pc.OW, we = ((ow + 1u) * pc.W + pc.OW - 1u) / pc.OW;
    const uint base = pc.x_off + plane * pc.H * pc.W;
    float s = 0.0;
    for (uint a = hs; a < he; a++)
        for (uint b = ws; b < we; b++) s += float(x[base + a * pc.W + b]);
    y[pc.y_off + i] = ACT(s / float((he - hs) * (we - ws)));
}
