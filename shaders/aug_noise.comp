#version 450
#extension GL_GOOGLE_include_directive : require
// Gaussian noise (cd_aug_apply_intensity's first op, libcirrdata/augment/intensity.c): x += sigma * n(i)
// with n(i) the per-voxel normal field of libcirrdata/augment/draw.c, the same for every channel.
// One invocation per block b of 4 voxels of one sample (gl_WorkGroupID.z): Philox4x32-10 with
// counter {b, 0, 0, 0} (b < 2^30: the high word is 0) and key {noise key low, high}, then Box-Muller
// on (w0, w1) and (w2, w3), in float with the definition's own log and sin/cos (draw.c: the C
// reference evaluates the same operations; the built-ins' Vulkan precision is only 2^-11 absolute
// for sin/cos and 2^-21 for log near 1). Vulkan's division and sqrt may be a few ulp off correctly
// rounded and a driver may fuse a * b + c, so n agrees with the C value to ~1e-6, not bit for bit.
// No subgroup operations.
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;
#include "invocation.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Meta { uint meta[]; };
layout(std430, set = 0, binding = 1) buffer Data { float data[]; };

#include "aug_intensity.glsl"

uvec4 philox(uvec4 c, uvec2 k) {
    for (int i = 0; i < 10; i++) {
        uint hi0, lo0, hi1, lo1;
        umulExtended(0xD2511F53u, c.x, hi0, lo0);
        umulExtended(0xCD9E8D57u, c.z, hi1, lo1);
        c = uvec4(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
        k += uvec2(0x9E3779B9u, 0xBB67AE85u);
    }
    return c;
}

// ln(x) for a normal x in (0, 1] (u1 >= 2^-24) to a few ulp: x = m 2^e with m in [sqrt(1/2), sqrt(2));
// ln m = 2 atanh(f / (2 + f)), f = m - 1 exact (fdlibm's logf scheme, series to s^9: error < 1e-9 for
// |s| <= 0.172). frexp by the bits and the doubling of m on its exponent bits, as the C code does
// (libcirrdata/augment/draw.c box_muller: the same operations in the same order).
float log_acc(float x) {
    const uint bits = floatBitsToUint(x);
    uint mbits = (bits & 0x007FFFFFu) | 0x3F000000u;
    int e = int(bits >> 23u) - 126;
    const bool low = uintBitsToFloat(mbits) < 0.70710678;
    mbits += low ? 0x00800000u : 0u;
    e -= low ? 1 : 0;
    const float f = uintBitsToFloat(mbits) - 1.0;
    const float s = f / (2.0 + f), z = s * s;
    const float r = z * (0.6666666667 + z * (0.4 + z * (0.2857142857 + z * 0.2222222222)));
    return float(e) * 0.69314718056 + (2.0 * s + s * r);
}

// (cos, sin) of 2 pi u for u in [0, 1): quadrant q = floor(4u + 0.5) (int truncation: the argument
// is >= 0), a = 2 pi (u - q/4) in [-pi/4, pi/4] (u - q/4 exact), Taylor series to a^10 (error
// < 1e-9 there); the quadrant's signs by exact multiplies by +-1 as in the C code.
vec2 cos_sin_2pi(float u) {
    const int q = int(u * 4.0 + 0.5);
    const float a = (u - float(q) * 0.25) * 6.28318530718;
    const float a2 = a * a;
    const float s = a * (1.0 + a2 * (-1.0 / 6.0 + a2 * (1.0 / 120.0 + a2 * (-1.0 / 5040.0 + a2 * (1.0 / 362880.0)))));
    const float c = 1.0 + a2 * (-0.5 + a2 * (1.0 / 24.0 + a2 * (-1.0 / 720.0 + a2 * (1.0 / 40320.0 + a2 * (-1.0 / 3628800.0)))));
    const bool odd = (q & 1) != 0;
    const float c0 = odd ? s : c, s0 = odd ? c : s;
    return vec2(c0 * (((q + 1) & 2) != 0 ? -1.0 : 1.0), s0 * ((q & 2) != 0 ? -1.0 : 1.0));
}

void main() {
    const uint b = cd_invocation(pc.groups_x);
    if (b >= pc.count) return;
    const uint s = gl_WorkGroupID.z, rec = s * SAMPLE_WORDS;
    if ((meta[rec] & FLAG_NOISE) == 0u) return;
    const float sigma = uintBitsToFloat(meta[rec + 3u]);
    const uvec4 w = philox(uvec4(b, 0u, 0u, 0u), uvec2(meta[rec + 1u], meta[rec + 2u]));
    float n[4];
    for (int h = 0; h < 2; h++) {
        const float u1 = (float(w[2 * h] >> 8u) + 1.0) * (1.0 / 16777216.0);
        const float u2 = float(w[2 * h + 1] >> 8u) * (1.0 / 16777216.0);
        const float r = sqrt(-2.0 * log_acc(u1));
        const vec2 cs = cos_sin_2pi(u2);
        n[2 * h] = r * cs.x;
        n[2 * h + 1] = r * cs.y;
    }
    const uint base = pc.cur + s * pc.channels * pc.npatch;
    for (uint l = 0u; l < 4u; l++) {
        const uint o = b * 4u + l;
        if (o >= pc.npatch) break;
        const float add = sigma * n[l];
        for (uint c = 0u; c < pc.channels; c++) data[base + c * pc.npatch + o] += add;
    }
}
