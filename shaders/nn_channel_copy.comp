#version 450
#extension GL_GOOGLE_include_directive : require
// A range of channels of each image copied into a range of another tensor's channels: the graph's
// slice (one dispatch) and concat (one per operand, into disjoint ranges); cd_nn_ref_slice and
// cd_nn_ref_concat (libcirrdata/nn/ref_attention.c). The channels of an image are contiguous in NCHW,
// so a range of them is `len` consecutive elements per image. One invocation per element copied; the
// workgroup size is specialization constant 0.
#include "nn_storage.glsl"
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;
#include "invocation.glsl"
layout(std430, set = 0, binding = 0) readonly buffer In { ACT x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Out { ACT y[]; };
layout(push_constant) uniform Push {
    uint x_off, y_off, total, groups_x; // total = images * len
    uint len;                            // elements copied per image
    uint x_img, x_base;                  // the input's elements per image, the first one copied
    uint y_img, y_base;                  // the output's elements per image, the first one written
} pc;

void main() {
    const uint i = cd_invocation(pc.groups_x);
    if (i >= pc.total) return;
    const uint n = i / pc.len, r = i - n * pc.len;
    y[pc.y_off + n * pc.y_img + pc.y_base + r] = x[pc.x_off + n * pc.x_img + pc.x_base + r];
}
