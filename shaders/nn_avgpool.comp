#version 450
#extension GL_GOOGLE_include_directive : require
// avg_pool2d over NCHW: cd_nn_ref_avgpool2d (libcirrdata/nn/ref_ops.c), PyTorch's divisor: with
// count_include_pad the window clipped to the padded input (H + ph), else to the input itself;
// ceil_mode only changes OH, OW (computed by the host). One invocation per output element, summing
// in row-major window order as the reference does. The workgroup size is specialization constant 0.
#include "nn_storage.glsl"
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;
#include "invocation.glsl"
layout(std430, set = 0, binding = 0) readonly buffer In { ACT x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Out { ACT y[]; };
layout(push_constant) uniform Push {
    uint x_off, y_off, total, groups_x;
    uint H, W, OH, OW;
    uint kh, kw, sh, sw, ph, pw, count_include_pad, pad_;
} pc;

void main() {
    const uint i = cd_invocation(pc.groups_x);
    if (i >= pc.total) return;
    const uint ohw = pc.OH * pc.OW;
    const uint plane = i / ohw, p = i - plane * ohw;
    const uint oh = p / pc.OW, ow = p - oh * pc.OW;
    int hs = int(oh * pc.sh) - int(pc.ph), ws = int(ow * pc.sw) - int(pc.pw);
    int he = min(hs + int(pc.kh), int(pc.H + pc.ph)), we = min(ws + int(pc.kw), int(pc.W + pc.pw));
    const int pool = (he - hs) * (we - ws);
    hs = max(hs, 0);
    ws = max(ws, 0);
    he = min(he, int(pc.H));
    we = min(we, int(pc.W));
    const uint base = pc.x_off + plane * pc.H * pc.W;
    float s = 0.0;
    for (int a = hs; a < he; a++)
        for (int b = ws; b < we; b++) s += float(x[base + uint(a) * pc.W + uint(b)]);
    const int div = pc.count_include_pad != 0u ? pool : (he - hs) * (we - ws);
    y[pc.y_off + i] = ACT(div > 0 ? s / float(div) : 0.0);
}
