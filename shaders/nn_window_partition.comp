#version 450
#extension GL_GOOGLE_include_directive : require
// MambaVision's window partition after F.pad: cd_nn_ref_window_partition (libcirrdata/nn/ref_scan.c).
// Image (n, c, y, x) goes to window n * nh * nw + (y / ws) * nw + x / ws, element (c, y % ws, x % ws);
// the padding right of W and below H is zero. One invocation per output element (a copy: exact);
// the workgroup size is specialization constant 0.
#include "nn_storage.glsl"
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;
#include "invocation.glsl"
layout(std430, set = 0, binding = 0) readonly buffer X { ACT x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Out { ACT y[]; };
layout(push_constant) uniform Push {
    uint x_off, y_off, total, groups_x;
    uint C, H, W, ws, nh, nw; // the image's channels and size, the window, windows per column and row
} pc;

void main() {
    const uint i = cd_invocation(pc.groups_x);
    if (i >= pc.total) return;
    const uint area = pc.ws * pc.ws, r = i % area, q = i / area;
    const uint c = q % pc.C, win = q / pc.C;
    const uint wx = win % pc.nw, wy = (win / pc.nw) % pc.nh, n = win / (pc.nw * pc.nh);
    const uint yy = wy * pc.ws + r / pc.ws, xx = wx * pc.ws + r % pc.ws;
    // through float: a float16 constant or select would need the Float16 capability, and the round
    // trip is exact
    const float v = yy < pc.H && xx < pc.W ? float(x[pc.x_off + ((n * pc.C + c) * pc.H + yy) * pc.W + xx]) : 0.0;
    y[pc.y_off + i] = ACT(v);
}
