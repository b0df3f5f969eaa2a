#version 450
#extension GL_GOOGLE_include_directive : require
// Per-channel scale x * weight[c] (+ bias[c]): cd_nn_ref_scale (libcirrdata/nn/ref_norm.c), layer
// scale and a batch norm that no convolution takes. weight and bias stay float32 in the fp16 variant.
// One invocation per element; the workgroup size is specialization constant 0.
#include "nn_storage.glsl"
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;
#include "invocation.glsl"
layout(std430, set = 0, binding = 0) readonly buffer In { ACT x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Wt { float wt[]; };
layout(std430, set = 0, binding = 2) readonly buffer Bs { float bs[]; };
layout(std430, set = 0, binding = 3) writeonly buffer Out { ACT y[]; };
layout(push_constant) uniform Push {
    uint x_off, w_off, b_off, y_off, total, groups_x;
    uint C, HW, flags; // flags: 2 bias
} pc;

void main() {
    const uint i = cd_invocation(pc.groups_x);
    if (i >= pc.total) return;
    const uint c = (i / pc.HW) % pc.C;
    float r = float(x[pc.x_off + i]) * wt[pc.w_off + c];
    if ((pc.flags & 2u) != 0u) r += bs[pc.b_off + c];
    y[pc.y_off + i] = ACT(r);
}
