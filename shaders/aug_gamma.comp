#version 450
// Gamma (and the inverted-gamma step before it), nnU-Net's GammaTransform with retained statistics, as
// gamma_channel in libcirrdata/augment/intensity.c. pc.op: the flag (32 inverted, 64 gamma); the
// inverted variant works on -x and negates back, which here is a sign s on the way in and out.
//   pc.mode 0: x' = ((s x - mn) / max(r, 1e-7))^g * r + mn, with mn, r = max - mn of s x from stats
//              slot 0 (of x: for s = -1, mn = -max); written in the signed space
//   pc.mode 1: x = s ((x' - mean') * sd / max(sd', 1e-7) + s mean), mean/sd of x from slot 0 and
//              mean'/sd' of x' from slot 1 (aug_reduce.comp)
// t^g = exp2(g log2 t) in float with the reference's polynomials (cd_vlog2f / cd_vexp2f /
// cd_vpowf_unit in libcirrdata/core/vmath.h: same constants, same operations in the same order,
// `precise` so that nothing is fused or reassociated); 0 where t or t^g is below 2^-126 (t <= 0
// included). Only the division may differ from the CPU's in the last bit (Vulkan allows 2.5 ulp).
// One invocation per voxel of one row (sample x channel, gl_WorkGroupID.z).
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

layout(std430, set = 0, binding = 0) readonly buffer Meta { uint meta[]; };
layout(std430, set = 0, binding = 1) buffer Data { float data[]; };
layout(std430, set = 0, binding = 2) readonly buffer Stats { float stats[]; };

layout(push_constant) uniform Push {
    uint groups_x, count, npatch, channels, nx, ny, nz, cur, oth, op, mode, slot, parts, stats, rows, pad;
} pc;

const uint SAMPLE_WORDS = 32u, FLAG_GAMMA_INVERT = 32u;

// log2 x = k + s P(s^2), x = 2^k m, m in [sqrt(1/2), sqrt(2)), s = (m - 1) / (m + 1),
// P = 2 / ln 2 (1 + z/3 + z^2/5 + z^3/7 + z^4/9)
float vlog2(float x) {
    const float C1 = uintBitsToFloat(0x4038aa3bu), C3 = uintBitsToFloat(0x3f76384fu), C5 = uintBitsToFloat(0x3f13bb63u),
                C7 = uintBitsToFloat(0x3ed30bb1u), C9 = uintBitsToFloat(0x3ea4258au);
    const uint ix = floatBitsToUint(x) + (0x3f800000u - 0x3f3504f3u);
    const int k = int(ix >> 23) - 0x7f;
    precise float f = uintBitsToFloat((ix & 0x007fffffu) + 0x3f3504f3u) - 1.0;
    precise float s = f / (2.0 + f);
    precise float z = s * s;
    precise float r = s * (C1 + z * (C3 + z * (C5 + z * (C7 + z * C9)))) + float(k);
    return r;
}

// 2^z = 2^k (1 + r P(r)), k = round(z) by the 1.5 * 2^23 shift, r = z - k; 0 below -126
float vexp2(float z) {
    const float P0 = uintBitsToFloat(0x3920fddeu), P1 = uintBitsToFloat(0x3aaf9f29u), P2 = uintBitsToFloat(0x3c1d96a6u),
                P3 = uintBitsToFloat(0x3d635774u), P4 = uintBitsToFloat(0x3e75fdeeu), P5 = uintBitsToFloat(0x3f317218u);
    precise float zs = z + 12582912.0;
    precise float kf = zs - 12582912.0;
    precise float r = z - kf;
    const uint k = floatBitsToUint(zs) - 0x4b400000u;
    precise float p = 1.0 + r * (((((P0 * r + P1) * r + P2) * r + P3) * r + P4) * r + P5);
    precise float y = p * uintBitsToFloat((k + 127u) << 23);
    const float inf = uintBitsToFloat(0x7f800000u);
    return z >= -126.0 ? (z < 127.5 ? y : inf) : 0.0;
}

void main() {
    const uint i = (gl_WorkGroupID.y * pc.groups_x + gl_WorkGroupID.x) * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
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
