#version 450
#extension GL_GOOGLE_include_directive : require
// Depthwise conv1d over each (n, c)'s token sequence (an image's H*W pixels in row-major order) with
// zero padding pl on the left and K - 1 - pl on the right: cd_nn_ref_dwconv1d
// (libcirrdata/nn/ref_scan.c), the taps summed in the same order from 0, then the bias. One invocation
// per output element; the workgroup size is specialization constant 0. The parameters (binding 1) stay
// float32 in both variants: the weight [c][k] at w_off, the bias at b_off.
#include "nn_storage.glsl"
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;
#include "invocation.glsl"
layout(std430, set = 0, binding = 0) readonly buffer X { ACT x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Param { float prm[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Out { ACT y[]; };
layout(push_constant) uniform Push {
    uint x_off, y_off, w_off, b_off;
    uint total, groups_x; // output elements of this dispatch; grid width
    uint C, L, K, pl;     // channels, tokens per sequence, kernel size, left padding
    uint flags;           // 1 bias
} pc;

void main() {
    const uint i = cd_invocation(pc.groups_x);
    if (i >= pc.total) return;
    const uint plane = i / pc.L, t = i - plane * pc.L, c = plane % pc.C;
    // taps k with 0 <= t + k - pl < L
    const uint k0 = pc.pl > t ? pc.pl - t : 0u, k1 = min(pc.K, pc.L - t + pc.pl);
    const uint xb = pc.x_off + plane * pc.L + t - pc.pl, wb = pc.w_off + c * pc.K;
    float acc = 0.0;
    for (uint k = k0; k < k1; k++) acc += prm[wb + k] * float(x[xb + k]);
    if ((pc.flags & 1u) != 0u) acc += prm[pc.b_off + c];
    y[pc.y_off + i] = ACT(acc);
}
