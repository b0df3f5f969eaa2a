#version 450
#extension GL_GOOGLE_include_directive : require
// Depthwise convolution (groups == input channels, O = m * C with channel multiplier m): the Vulkan
// twin of cd_nn_ref_dwconv2d (libcirrdata/nn/ref_ops.c). One invocation per output element sums its
// kh x kw window of input plane o / m in (ky, kx) order from 0, then adds the bias, the optional
// residual (an equal-shaped tensor added before the ReLU, as the GEMM's epilogue for a fused add) and
// applies the optional ReLU. The weights are stored as the GEMM's ([group][k][m], k = ky * kw + kx;
// for m = 1 simply [o][k]); the host binds the layer whole (a depthwise layer's kh*kw*O weights are
// far under one binding). No subgroup operations; the workgroup size is specialization constant 0.
// The fp16 variant (CD_FP16) stores x, w, res and y as float16; the bias and the sum stay float32.
#include "nn_storage.glsl"
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;
#include "invocation.glsl"

layout(std430, set = 0, binding = 0) readonly buffer In { ACT x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Weight { ACT w[]; };
layout(std430, set = 0, binding = 2) readonly buffer Bias { float bias[]; };
layout(std430, set = 0, binding = 3) readonly buffer Res { ACT res[]; };
layout(std430, set = 0, binding = 4) writeonly buffer Out { ACT y[]; };

layout(push_constant) uniform Push {
    uint x_off, w_off, b_off, r_off, y_off; // element offsets within the bindings
    uint total, groups_x;                   // output elements of this dispatch; grid width
    uint C, H, W;                           // input channels and size
    uint O, OH, OW, m;                      // output channels and size, channel multiplier
    uint kh, kw, sh, sw, ph, pw, dh, dw;
    uint flags;                             // 1 bias, 2 residual, 4 relu
} pc;

void main() {
    const uint i = cd_invocation(pc.groups_x);
    if (i >= pc.total) return;
    const uint ohw = pc.OH * pc.OW;
    const uint plane = i / ohw, p = i - plane * ohw;
    const uint b = plane / pc.O, o = plane - b * pc.O;
    const uint oh = p / pc.OW, ow = p - oh * pc.OW;
    const uint c = o / pc.m, j = o - c * pc.m, K = pc.kh * pc.kw;
    const uint xbase = pc.x_off + (b * pc.C + c) * pc.H * pc.W;
    const uint wbase = pc.w_off + c * K * pc.m + j;
    const int h0 = int(oh * pc.sh) - int(pc.ph), w0 = int(ow * pc.sw) - int(pc.pw);
    float acc = 0.0;
    for (uint ky = 0u; ky < pc.kh; ky++) {
        const int ih = h0 + int(ky * pc.dh);
        if (uint(ih) >= pc.H) continue;
        const uint row = xbase + uint(ih) * pc.W;
        for (uint kx = 0u; kx < pc.kw; kx++) {
            const int iw = w0 + int(kx * pc.dw);
            if (uint(iw) >= pc.W) continue;
            acc += float(w[wbase + (ky * pc.kw + kx) * pc.m]) * float(x[row + uint(iw)]);
        }
    }
    if ((pc.flags & 1u) != 0u) acc += bias[pc.b_off + o];
    if ((pc.flags & 2u) != 0u) acc += float(res[pc.r_off + i]);
    if ((pc.flags & 4u) != 0u) acc = max(acc, 0.0);
    y[pc.y_off + i] = ACT(acc);
}
