#version 450
#extension GL_GOOGLE_include_directive : require
// max_pool2d over NCHW: cd_nn_ref_maxpool2d (libcirrdata/nn/ref_ops.c). One invocation per output
// element; padding is -inf (padded positions never win), dilation and ceil_mode as PyTorch (the
// host computes OH, OW). No subgroup operations; the workgroup size is specialization constant 0.
#include "nn_storage.glsl"
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;
#include "invocation.glsl"
layout(std430, set = 0, binding = 0) readonly buffer In { ACT x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Out { ACT y[]; };
layout(push_constant) uniform Push {
    uint x_off, y_off, total, groups_x;
    uint H, W, OH, OW;
    uint kh, kw, sh, sw, ph, pw, dh, dw;
} pc;

void main() {
    const uint i = cd_invocation(pc.groups_x);
    if (i >= pc.total) return;
    const uint ohw = pc.OH * pc.OW;
    const uint plane = i / ohw, p = i - plane * ohw;
    const uint oh = p / pc.OW, ow = p - oh * pc.OW;
    const uint base = pc.x_off + plane * pc.H * pc.W;
    const int h0 = int(oh * pc.sh) - int(pc.ph), w0 = int(ow * pc.sw) - int(pc.pw);
    float m = uintBitsToFloat(0xff800000u); // -inf
    for (uint a = 0u; a < pc.kh; a++) {
        const int ih = h0 + int(a * pc.dh);
        if (uint(ih) >= pc.H) continue;
        for (uint b = 0u; b < pc.kw; b++) {
            const int iw = w0 + int(b * pc.dw);
            if (uint(iw) >= pc.W) continue;
            const float v = float(x[base + uint(ih) * pc.W + uint(iw)]);
            if (v > m || isnan(v)) m = v;
        }
    }
    y[pc.y_off + i] = ACT(m);
}
