#version 450
#extension GL_GOOGLE_include_directive : require
// mamba's selective scan (selective_scan_fn with z = None): cd_nn_ref_selective_scan
// (libcirrdata/nn/ref_scan.c). Inputs u, delta (N, D, L), B, C (N, S, L), L = H*W tokens; the
// parameters (binding 4, float32 in both variants) A = -exp(A_log) [d][s] at a_off, the D skip at
// dskip_off, delta_bias at dbias_off. One invocation per (n, d, s): its state h in a float32 register,
// sequential over the tokens; a workgroup holds cpw = local / S whole channels (lanes past cpw * S
// idle: not live, though they take part in the barriers). Per token each lane writes C * h to shared memory and
// the channel's first lane sums its S values in the reference's order (s = 0 first) and stores y.
// The barriers are in uniform control flow: every lane runs all L iterations. The workgroup size is
// specialization constant 0, at most 256 (the host checks S <= it).
#include "nn_storage.glsl"
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;
#include "softplus.glsl"
layout(std430, set = 0, binding = 0) readonly buffer U { ACT u[]; };
layout(std430, set = 0, binding = 1) readonly buffer Delta { ACT delta[]; };
layout(std430, set = 0, binding = 2) readonly buffer Bm { ACT bm[]; };
layout(std430, set = 0, binding = 3) readonly buffer Cm { ACT cm[]; };
layout(std430, set = 0, binding = 4) readonly buffer Param { float prm[]; };
layout(std430, set = 0, binding = 5) writeonly buffer Out { ACT y[]; };
layout(push_constant) uniform Push {
    uint u_off, d_off, b_off, c_off, y_off; // element offsets within the bindings
    uint a_off, dskip_off, dbias_off;       // within the parameters
    uint channels, groups_x;                // (n, d) channels of this dispatch; grid width
    uint D, S, L, cpw;                      // channels and states per image, tokens, channels per workgroup
    uint flags;                             // 1 D skip, 2 delta_bias, 4 delta_softplus
} pc;

shared float part[256];

void main() {
    const uint lane = gl_LocalInvocationID.x;
    const uint group = gl_WorkGroupID.y * pc.groups_x + gl_WorkGroupID.x;
    const uint lc = lane / pc.S, s = lane - lc * pc.S, ch = group * pc.cpw + lc;
    const bool live = lc < pc.cpw && ch < pc.channels;
    const uint n = ch / pc.D, d = ch - n * pc.D;
    const uint ub = ch * pc.L, bb = (n * pc.S + s) * pc.L;
    const float A = live ? prm[pc.a_off + d * pc.S + s] : 0.0;
    const float dbias = live && (pc.flags & 2u) != 0u ? prm[pc.dbias_off + d] : 0.0;
    const float dskip = live && (pc.flags & 1u) != 0u ? prm[pc.dskip_off + d] : 0.0;
    float h = 0.0;
    for (uint t = 0u; t < pc.L; t++) {
        float uv = 0.0;
        if (live) {
            float dt = float(delta[pc.d_off + ub + t]) + dbias;
            if ((pc.flags & 4u) != 0u) dt = dt <= 20.0 ? cd_log1p_pos(exp(dt)) : dt; // F.softplus, threshold 20
            uv = float(u[pc.u_off + ub + t]);
            const float du = dt * uv;
            h = exp(dt * A) * h + du * float(bm[pc.b_off + bb + t]);
            part[lane] = float(cm[pc.c_off + bb + t]) * h;
        }
        barrier();
        if (live && s == 0u) {
            float acc = 0.0;
            for (uint k = 0u; k < pc.S; k++) acc += part[lane + k];
            y[pc.y_off + ub + t] = ACT((pc.flags & 1u) != 0u ? acc + dskip * uv : acc);
        }
        barrier();
    }
}
