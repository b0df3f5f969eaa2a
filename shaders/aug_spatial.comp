#version 450
#extension GL_GOOGLE_include_directive : require
// The fused spatial augmentation warp: cd_aug_apply_spatial (libcirrdata/augment/spatial.c) for a
// batch of samples. One invocation computes 4 consecutive output voxels (in C order over the patch)
// of one sample (gl_WorkGroupID.z), so that it writes one whole 32-bit word of the uint8 mask.
//
// Positions are exact 32.32 fixed point (two uint32 words, no 64-bit integer or float feature
// needed): p = row_p0 + z * dp (+ elastic offset), where the host rounds row_p0 = base * 2^32 and
// dp = step * 2^32 exactly as the C reference's fast path does, so the weights and the float32
// lerps (made `precise`: no FMA contraction) are bit for bit the reference's on the rows it runs
// in fixed point (row_fast, and row_edge for rows crossing the box edge, whose bounds tests here
// are the same). Images: trilinear, zero outside the box; masks: nearest, floor(p + 1/2), 0
// outside. No subgroup operations; the workgroup size is a specialization constant.
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;
#include "invocation.glsl"

// Per sample, 20 uints (see libcirrdata/augment/gpu_spatial.c, SAMPLE_WORDS):
//  0 src offset (floats), 1 mask offset (bytes, multiple of 4), 2 out offset (floats),
//  3 out-mask offset (bytes, multiple of 4), 4 rows offset (uints), 5 elastic offset (uints),
//  6 flags (1 image, 2 mask, 4 elastic), 7 voxels in the box, 8..10 box shape,
//  12..17 dp (x lo, x hi, y lo, y hi, z lo, z hi)
layout(std430, set = 0, binding = 0) readonly buffer Samples { uint smp[]; };
layout(std430, set = 0, binding = 1) readonly buffer Rows { uint rows[]; };      // 6 uints per (x, y) row
layout(std430, set = 0, binding = 2) readonly buffer Src { float src[]; };
layout(std430, set = 0, binding = 3) readonly buffer Mask { uint mask[]; };      // uint8, packed
layout(std430, set = 0, binding = 4) writeonly buffer Out { float dst[]; };
layout(std430, set = 0, binding = 5) writeonly buffer OutMask { uint dmask[]; }; // uint8, packed
layout(std430, set = 0, binding = 6) readonly buffer Elastic { uint el[]; };     // 6 uints per voxel

layout(push_constant) uniform Push {
    uint pz;       // patch size along z (the fastest axis)
    uint npatch;   // voxels per patch
    uint channels;
    uint nquads;   // invocations per sample: ceil(npatch / 4)
    uint groups_x; // workgroups along x (the grid is 2D when one row of groups would be too long)
} pc;

const uint FLAG_IMAGE = 1u, FLAG_MASK = 2u, FLAG_ELASTIC = 4u;

uvec2 add64(uvec2 a, uvec2 b) {
    uint carry;
    uint lo = uaddCarry(a.x, b.x, carry);
    return uvec2(lo, a.y + b.y + carry);
}

// z * d mod 2^64 for z < 2^32 and d a two's complement 64-bit number
uvec2 mul64(uint z, uvec2 d) {
    uint hi, lo;
    umulExtended(z, d.x, hi, lo);
    return uvec2(lo, hi + z * d.y);
}

void main() {
    const uint q = cd_invocation(pc.groups_x);
    if (q >= pc.nquads) return;
    const uint s = gl_WorkGroupID.z * 20u;
    const uint src_off = smp[s + 0u], mask_off = smp[s + 1u], out_off = smp[s + 2u], omask_off = smp[s + 3u];
    const uint rows_off = smp[s + 4u], el_off = smp[s + 5u], flags = smp[s + 6u], nbox = smp[s + 7u];
    const ivec3 b = ivec3(smp[s + 8u], smp[s + 9u], smp[s + 10u]);
    const uvec2 dp[3] = uvec2[3](uvec2(smp[s + 12u], smp[s + 13u]), uvec2(smp[s + 14u], smp[s + 15u]),
                                 uvec2(smp[s + 16u], smp[s + 17u]));
    const int sy = b.z, sx = b.y * b.z;
    const float inv = 1.0 / 16777216.0;

    uint mword = 0u;
    for (uint k = 0u; k < 4u; k++) {
        const uint o = q * 4u + k;
        if (o >= pc.npatch) break;
        const uint row = o / pc.pz;
        const uint z = o - row * pc.pz;
        const uint r = rows_off + row * 6u;
        uvec2 p[3];
        for (int i = 0; i < 3; i++) {
            p[i] = add64(uvec2(rows[r + 2u * uint(i)], rows[r + 2u * uint(i) + 1u]), mul64(z, dp[i]));
            if ((flags & FLAG_ELASTIC) != 0u) {
                const uint e = el_off + o * 6u + 2u * uint(i);
                p[i] = add64(p[i], uvec2(el[e], el[e + 1u]));
            }
        }
        if ((flags & FLAG_MASK) != 0u) {
            // nearest: floor(p + 1/2), 0 outside the box
            uint v = 0u;
            const ivec3 n = ivec3(int(add64(p[0], uvec2(0x80000000u, 0u)).y), int(add64(p[1], uvec2(0x80000000u, 0u)).y),
                                  int(add64(p[2], uvec2(0x80000000u, 0u)).y));
            if (all(greaterThanEqual(n, ivec3(0))) && all(lessThan(n, b))) {
                const uint idx = mask_off + uint(n.x * sx + n.y * sy + n.z);
                v = (mask[idx >> 2u] >> ((idx & 3u) * 8u)) & 0xffu;
            }
            mword |= v << (k * 8u);
        }
        if ((flags & FLAG_IMAGE) != 0u) {
            const ivec3 ip = ivec3(int(p[0].y), int(p[1].y), int(p[2].y));
            const uvec3 fr = uvec3(p[0].x, p[1].x, p[2].x);
            // inside iff -1 < p < box on every axis
            const bool inside = all(lessThan(ip, b)) && all(greaterThanEqual(ip, ivec3(-1))) &&
                                (ip.x > -1 || fr.x != 0u) && (ip.y > -1 || fr.y != 0u) && (ip.z > -1 || fr.z != 0u);
            const float tx = float(fr.x >> 8u) * inv, ty = float(fr.y >> 8u) * inv, tz = float(fr.z >> 8u) * inv;
            const bool vx0 = ip.x >= 0, vx1 = ip.x + 1 < b.x, vy0 = ip.y >= 0, vy1 = ip.y + 1 < b.y, vz0 = ip.z >= 0,
                       vz1 = ip.z + 1 < b.z;
            const uint base = src_off + uint(ip.x * sx + ip.y * sy + ip.z); // wraps when ip < 0: only valid taps are read
            for (uint c = 0u; c < pc.channels; c++) {
                float v = 0.0;
                if (inside) {
                    const uint a = base + c * nbox;
                    const float s000 = (vx0 && vy0 && vz0) ? src[a] : 0.0;
                    const float s001 = (vx0 && vy0 && vz1) ? src[a + 1u] : 0.0;
                    const float s010 = (vx0 && vy1 && vz0) ? src[a + uint(sy)] : 0.0;
                    const float s011 = (vx0 && vy1 && vz1) ? src[a + uint(sy) + 1u] : 0.0;
                    const float s100 = (vx1 && vy0 && vz0) ? src[a + uint(sx)] : 0.0;
                    const float s101 = (vx1 && vy0 && vz1) ? src[a + uint(sx) + 1u] : 0.0;
                    const float s110 = (vx1 && vy1 && vz0) ? src[a + uint(sx + sy)] : 0.0;
                    const float s111 = (vx1 && vy1 && vz1) ? src[a + uint(sx + sy) + 1u] : 0.0;
                    precise float c00 = s000 + tz * (s001 - s000);
                    precise float c01 = s010 + tz * (s011 - s010);
                    precise float c10 = s100 + tz * (s101 - s100);
                    precise float c11 = s110 + tz * (s111 - s110);
                    precise float c0 = c00 + ty * (c01 - c00);
                    precise float c1 = c10 + ty * (c11 - c10);
                    precise float res = c0 + tx * (c1 - c0);
                    v = res;
                }
                dst[out_off + c * pc.npatch + o] = v;
            }
        }
    }
    if ((flags & FLAG_MASK) != 0u) dmask[(omask_off >> 2u) + q] = mword;
}
