#version 450
#extension GL_GOOGLE_include_directive : require
// softplus, x * beta > threshold ? x : log1p(exp(beta x)) / beta (PyTorch's F.softplus):
// cd_nn_ref_softplus (libcirrdata/nn/ref_scan.c); log1p as include/softplus.glsl computes it.
// One invocation per element; the workgroup size is specialization constant 0.
#include "nn_storage.glsl"
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;
#include "invocation.glsl"
#include "softplus.glsl"
layout(std430, set = 0, binding = 0) readonly buffer X { ACT x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Out { ACT y[]; };
layout(push_constant) uniform Push {
    uint x_off, y_off, total, groups_x;
    float beta, threshold;
} pc;

void main() {
    const uint i = cd_invocation(pc.groups_x);
    if (i >= pc.total) return;
    y[pc.y_off + i] = ACT(cd_softplus(float(x[pc.x_off + i]), pc.beta, pc.threshold));
}
