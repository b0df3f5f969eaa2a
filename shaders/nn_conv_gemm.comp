#version 450
#extension GL_GOOGLE_include_directive : require
// Convolution (and linear layers: a 1x1 convolution over a 1x1 image) as an implicit GEMM, the
// Vulkan twin of cd_nn_ref_conv2d / cd_nn_ref_linear (libcirrdata/nn/ref_ops.c):
//   Y[m, n] = sum_k W[m, k] X[k, n] per group, M = output channels of the group,
//   N = batch * OH * OW, K = C/groups * KH * KW,
// with the input patches gathered straight from the NCHW tensor (no im2col buffer). One workgroup of
// 256 invocations computes a 64 x 64 tile of Y, each invocation a 4 x 4 micro-tile; K advances by 16,
// both operand tiles staged through shared memory, the next slab prefetched into registers. Epilogue: bias, optional residual (an equal-shaped
// tensor added before the ReLU, as a ResNet block's add), optional ReLU. No subgroup operations.
// Weights are stored transposed by the host: Wt[group][k][m] (k = c * KH * KW + kh * KW + kw), so that
// a tile row is contiguous. KH and KW are specialization constants: the index arithmetic of the
// gather divides by constants.
// A layer whose weights are more than one binding may hold (maxStorageBufferRange) is dispatched in
// blocks of output channels: the host stores each block as its own [k][m - m_base] matrix (row length
// w_ld) and binds it, its bias slice and the input/output (all channels); the dispatch covers group g_base
// (gl_WorkGroupID.z = 0) and channels [m_base, m_end) of it. Unsplit: g_base = m_base = 0,
// m_end = w_ld = Og, every group in z.
// The fp16 variant (CD_FP16) stores x, w, res and y as float16, converted on load and store; the bias,
// the shared tiles and the accumulators stay float32.
#include "nn_storage.glsl"
layout(local_size_x = 256, local_size_y = 1, local_size_z = 1) in;
layout(constant_id = 0) const uint KH = 1;
layout(constant_id = 1) const uint KW = 1;

layout(std430, set = 0, binding = 0) readonly buffer In { ACT x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Weight { ACT w[]; };
layout(std430, set = 0, binding = 2) readonly buffer Bias { float bias[]; };
layout(std430, set = 0, binding = 3) readonly buffer Res { ACT res[]; };
layout(std430, set = 0, binding = 4) writeonly buffer Out { ACT y[]; };

layout(push_constant) uniform Push {
    uint x_off, w_off, b_off, r_off, y_off; // element offsets within the bindings
    uint C, H, W;                            // input channels (all groups) and size
    uint O, OH, OW;                          // output channels (all groups) and size
    uint Cg, Og, K;                          // per group: input channels, output channels, Cg*KH*KW
    uint ntotal, n_base;                     // batch * OH * OW; first column of this dispatch
    uint sh, sw, ph, pw, dh, dw;
    uint flags;                              // 1 bias, 2 residual, 4 relu
    uint g_base, m_base, m_end, w_ld;        // first group, channel range in the group, weight row length
} pc;

shared vec4 As[16][16]; // [k][m / 4]
shared vec4 Bs[16][16]; // [k][n / 4]

// Rows lk, lk + 4, lk + 8, lk + 12 of the K slab starting at k0: the weights of column ln of the
// output-channel tile (a) and the input patch values of column ln of the N tile (b); 0 outside.
void load_slab(uint k0, uint lk, bool mvalid, bool nvalid, uint wbase, uint xbase, int ih0, int iw0, uint hw,
               out float a[4], out float b[4]) {
    for (uint i = 0u; i < 4u; i++) {
        const uint k = k0 + lk + 4u * i;
        a[i] = 0.0;
        b[i] = 0.0;
        if (k < pc.K) {
            if (mvalid) a[i] = float(w[wbase + k * pc.w_ld]);
            if (nvalid) {
                const uint c = k / (KH * KW);
                const uint r = k - c * (KH * KW);
                const uint kh = r / KW, kw = r - kh * KW;
                const int ih = ih0 + int(kh * pc.dh), iw = iw0 + int(kw * pc.dw);
                if (uint(ih) < pc.H && uint(iw) < pc.W) b[i] = float(x[xbase + c * hw + uint(ih) * pc.W + uint(iw)]);
            }
        }
    }
}

void main() {
    const uint t = gl_LocalInvocationID.x;
    const uint g = pc.g_base + gl_WorkGroupID.z;
    const uint m0 = pc.m_base + gl_WorkGroupID.y * 64u;
    const uint n0 = pc.n_base + gl_WorkGroupID.x * 64u;
    const uint ohw = pc.OH * pc.OW;

    // loading role: column ln of both tiles, rows lk, lk + 4, lk + 8, lk + 12
    const uint ln = t & 63u, lk = t >> 6u;
    const uint n = n0 + ln;
    const bool nvalid = n < pc.ntotal;
    uint b = 0u, oh = 0u, ow = 0u;
    if (nvalid) {
        b = n / ohw;
        const uint p = n - b * ohw;
        oh = p / pc.OW;
        ow = p - oh * pc.OW;
    }
    const int ih0 = int(oh * pc.sh) - int(pc.ph), iw0 = int(ow * pc.sw) - int(pc.pw);
    const uint hw = pc.H * pc.W;
    const uint xbase = pc.x_off + (b * pc.C + g * pc.Cg) * hw;
    const bool mvalid = m0 + ln < pc.m_end;
    const uint wbase = pc.w_off + gl_WorkGroupID.z * pc.K * pc.w_ld + (m0 - pc.m_base) + ln;
    const uint o_lo = pc.g_base * pc.Og + pc.m_base; // the bias binding's first channel

    // computing role: rows tm * 4 .. + 3, columns tn * 4 .. + 3 (one vec4 of each tile per k)
    const uint tm = t >> 4u, tn = t & 15u;
    vec4 acc[4] = vec4[4](vec4(0.0), vec4(0.0), vec4(0.0), vec4(0.0)); // acc[i][j]

    // The next K slab is read from global memory into registers while the current one is
    // multiplied out of shared memory (latency hiding without a second shared buffer).
    float pa[4], pb[4];
    load_slab(0u, lk, mvalid, nvalid, wbase, xbase, ih0, iw0, hw, pa, pb);
    for (uint k0 = 0u; k0 < pc.K; k0 += 16u) {
        for (uint i = 0u; i < 4u; i++) {
            const uint kk = lk + 4u * i;
            As[kk][ln >> 2u][ln & 3u] = pa[i];
            Bs[kk][ln >> 2u][ln & 3u] = pb[i];
        }
        barrier();
        if (k0 + 16u < pc.K) load_slab(k0 + 16u, lk, mvalid, nvalid, wbase, xbase, ih0, iw0, hw, pa, pb);
        for (uint kk = 0u; kk < 16u; kk++) {
            const vec4 a = As[kk][tm], b = Bs[kk][tn];
            acc[0] += a.x * b;
            acc[1] += a.y * b;
            acc[2] += a.z * b;
            acc[3] += a.w * b;
        }
        barrier();
    }

    for (uint j = 0u; j < 4u; j++) {
        const uint nn = n0 + tn * 4u + j;
        if (nn >= pc.ntotal) continue;
        const uint bb = nn / ohw, p = nn - bb * ohw;
        for (uint i = 0u; i < 4u; i++) {
            const uint m = m0 + tm * 4u + i;
            if (m >= pc.m_end) continue;
            const uint o = g * pc.Og + m;
            const uint idx = (bb * pc.O + o) * ohw + p;
            float v = acc[i][j];
            if ((pc.flags & 1u) != 0u) v += bias[pc.b_off + (o - o_lo)];
            if ((pc.flags & 2u) != 0u) v += float(res[pc.r_off + idx]);
            if ((pc.flags & 4u) != 0u) v = max(v, 0.0);
            y[pc.y_off + idx] = ACT(v);
        }
    }
}
