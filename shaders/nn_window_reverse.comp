#version 450
#extension GL_GOOGLE_include_directive : require
// MambaVision's window reverse and the crop: cd_nn_ref_window_reverse (libcirrdata/nn/ref_scan.c).
// Output (n, c, y, x) comes from window n * nh * nw + (y / ws) * nw + x / ws, element (c, y % ws,
// x % ws); the padding's windows elements are not read. One invocation per output element (a copy:
// exact); the workgroup size is specialization constant 0.
#include "nn_storage.glsl"
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;
#include "invocation.glsl"
layout(std430, set = 0, binding = 0) readonly buffer X { ACT x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Out { ACT y[]; };
layout(push_constant) uniform Push {
    uint x_off, y_off, total, groups_x;
    uint C, H, W, ws, nh, nw; // the output's channels and size, the window, windows per column and row
} pc;

void main() {
    const uint i = cd_invocation(pc.groups_x);
    if (i >= pc.total) return;
    const uint xx = i % pc.W, q = i / pc.W, yy = q % pc.H, q2 = q / pc.H, c = q2 % pc.C, n = q2 / pc.C;
    const uint win = (n * pc.nh + yy / pc.ws) * pc.nw + xx / pc.ws;
    y[pc.y_off + i] = x[pc.x_off + ((win * pc.C + c) * pc.ws + yy % pc.ws) * pc.ws + xx % pc.ws];
}
