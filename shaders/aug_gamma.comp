#version 450
#extension GL_GOOGLE_include_directive : require
// Gamma (and the inverted-gamma step before it), nnU-Net's GammaTransform with retained statistics, as
// gamma_channel in libcirrdata/augment/intensity.c. pc.op: the flag (32 inverted, 64 gamma); the
// inverted variant works on -x and negates back, which here is a sign s on the way in and out.
//   pc.mode 0: x' = ((s x - mn) / max(r, 1e-7))^g * r + mn, with mn, r = max - mn of s x from stats
//              slot 0 (of x: for s = -1, mn = -max); written in the signed space
//   pc.mode 1: x = s ((x' - mean') * sd / max(sd', 1e-7) + s mean), mean/sd of x from slot 0 and
//              mean'/sd' of x' from slot 1 (aug_reduce.comp)
// t^g = exp2(g log2 t) in float with the reference's polynomials (cd_vpowf_unit in
// libcirrdata/core/vmath.h; vlog2 and vexp2 from include/vmath.glsl); 0 where t or t^g is below
// 2^-126 (t <= 0 included).
// One invocation per voxel of one row (sample x channel, gl_WorkGroupID.z).
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;
#include "invocation.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Meta { uint meta[]; };
layout(std430, set = 0, binding = 1) buffer Data { float data[]; };
layout(std430, set = 0, binding = 2) readonly buffer Stats { float stats[]; };

#include "aug_intensity.glsl"
#include "vmath.glsl"

void main() {
    const uint i = cd_invocation(pc.groups_x);
    if (i >= pc.count) return;
    const uint row = gl_WorkGroupID.z, rec = (row / pc.channels) * SAMPLE_WORDS;
    if ((meta[rec] & pc.op) == 0u) return;
    const bool inv = pc.op == FLAG_GAMMA_INVERT;
    const float s = inv ? -1.0 : 1.0;
    const uint s0 = pc.stats + row * 4u, s1 = pc.stats + (pc.rows + row) * 4u; // slots 0 and 1
    const uint a = pc.cur + row * pc.npatch + i;
    if (pc.mode == 0u) {
        const float g = uintBitsToFloat(meta[rec + (inv ? 6u : 7u)]);
        const float mn = inv ? -stats[s0 + 3u] : stats[s0 + 2u], mx = inv ? -stats[s0 + 2u] : stats[s0 + 3u];
        const float r = mx - mn;
        const float scale = 1.0 / (r > 1e-7 ? r : 1e-7);
        const float t = (s * data[a] - mn) * scale;
        precise float z = g * vlog2(t);
        const float y = t >= uintBitsToFloat(0x00800000u) ? vexp2(z) : 0.0;
        precise float o = y * r + mn; // unfused, as the reference
        data[a] = o;
    } else {
        const float mean = s * stats[s0], sd = stats[s0 + 1u], mean2 = stats[s1], sd2 = stats[s1 + 1u];
        const float f = sd / (sd2 > 1e-7 ? sd2 : 1e-7);
        data[a] = s * ((data[a] - mean2) * f + mean);
    }
}
