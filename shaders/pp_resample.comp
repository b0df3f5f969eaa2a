#version 450
#extension GL_GOOGLE_include_directive : require
// Resampling of a volume onto another voxel grid through an index->index affine: cd_resample
// (libcirrdata/transform/resample.c) with float32 values, for orders 0 (nearest), 1 (trilinear)
// and 3 (cubic B-spline on coefficients the host prefiltered with the reference's own prefilter).
// Trilinear taps of weight exactly 0 are not read (lerp_taps), as in the reference.
// Volumes are x-fastest (NIfTI order): element (x, y, z) at x + n0 * (y + n1 * z).
//
// One invocation per output voxel o = i + onx * row; position = row base + i * step, the row base
// computed on the host in double exactly as the reference's ROW_SETUP, the step M[:,0].
//  - CD_FP64 (devices with shaderFloat64): the reference's own double operations, `precise` (no FMA),
//    so positions, edge tests and nearest indices are bit for bit the reference's;
//  - otherwise exact 32.32 fixed point (two uint32 words, no 64-bit feature): the host rounds base
//    and step, positions agree to < 1e-7 voxel (the host nudges rows whose constant position sits on
//    a decision boundary to the reference's side, and for an axis whose position depends on i alone
//    (axis-aligned grids: every recipe grid) hands over the reference's decisions as a table).
// Both pass 6 uints per row and per step/edge: the bits of a double, or a fixed-point number.
//
// Semantics, as the reference: a position outside [-1e-4, n-1+1e-4] on any axis gives `fill`;
// inside it is snapped into [0, n-1]. Order 0: index floor(p + 1/2). Order 1: the lower corner is
// clamped to n-2 so that at p == n-1 the upper neighbour has weight 1; a 1-voxel axis has no
// neighbour. Order 3: taps f-1 .. f+2 with scipy's mirror extension (period 2n-2). The float32
// arithmetic follows the reference's evaluation order (x, then y, then z); `precise` keeps the
// compiler from contracting it into FMAs. No subgroup operations; the workgroup size is a
// specialization constant.
#ifdef CD_FP64
#extension GL_ARB_gpu_shader_fp64 : enable
#endif
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;
#include "invocation.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Src { float src[]; };
layout(std430, set = 0, binding = 1) readonly buffer Rows { uint rows[]; }; // 6 uints per output row (x lo/hi, y, z)
layout(std430, set = 0, binding = 2) writeonly buffer Out { float dst[]; };

layout(push_constant) uniform Push {
    uint onx;      // output voxels per row (along x)
    uint nout;     // output voxels
    uint groups_x; // workgroups along x (the grid is 2D when one row of groups would be too long)
    uint order;    // 0, 1 or 3
    int n0, n1, n2;
    float fill;
    uint step[6];  // M[:,0] (x lo, x hi, y lo, y hi, z lo, z hi words)
    uint lo[2];    // -1e-4
    uint hi[6];    // n_a - 1 + 1e-4, per axis
    uint tables;   // fixed point: bit a set when axis a's decisions come from a table (see below)
    uint table_at; // where the tables start in Rows: onx ints per axis, the nearest index or -1 outside
} pc;

uvec2 add64(uvec2 a, uvec2 b) {
    uint carry;
    uint l = uaddCarry(a.x, b.x, carry);
    return uvec2(l, a.y + b.y + carry);
}

// i * d mod 2^64 for i < 2^32 and d a two's complement 64-bit number
uvec2 mul64(uint i, uvec2 d) {
    uint h, l;
    umulExtended(i, d.x, h, l);
    return uvec2(l, h + i * d.y);
}

// signed a < b
bool lt64(uvec2 a, uvec2 b) { return int(a.y) < int(b.y) || (a.y == b.y && a.x < b.x); }

int mirror(int i, int n) {
    if (n <= 1) return 0;
    const int p = 2 * n - 2;
    i = (i + p) % p; // GLSL's % of a negative operand is undefined; i >= -1 here
    return i >= n ? p - i : i;
}

void cubic_weights(float t, out float w[4]) {
    precise float s = 1.0 - t;
    precise float w0 = s * s * s / 6.0;
    precise float w1 = (4.0 + t * t * (3.0 * t - 6.0)) / 6.0;
    precise float w2 = (4.0 + s * s * (3.0 * s - 6.0)) / 6.0;
    precise float w3 = t * t * t / 6.0;
    w = float[4](w0, w1, w2, w3);
}

// g * a + f * b where a tap of weight exactly 0 is not read: 0 * NaN (or inf) is NaN, and a non-finite
// neighbour would reach voxels that do not depend on it (the reference's lerp_taps).
float lerp_taps(float g, float f, float a, float b) {
    precise float t = g * a + f * b;
    return f == 0.0 ? a : g == 0.0 ? b : t;
}

void main() {
    const uint o = cd_invocation(pc.groups_x);
    if (o >= pc.nout) return;
    const uint row = o / pc.onx;
    const uint i = o - row * pc.onx;
    const ivec3 n = ivec3(pc.n0, pc.n1, pc.n2);
    const uvec2 lo = uvec2(pc.lo[0], pc.lo[1]);
    // per axis: the snapped position's integer part ip, its fraction fr, and the nearest index q
    ivec3 ip, q;
    vec3 fr;
    bool inside = true;
    for (int a = 0; a < 3; a++) {
        const uint r = row * 6u + 2u * uint(a);
#ifdef CD_FP64
        const double b = packDouble2x32(uvec2(rows[r], rows[r + 1u]));
        const double st = packDouble2x32(uvec2(pc.step[2 * a], pc.step[2 * a + 1]));
        precise double x = b + double(i) * st;
        const double hi = double(n[a] - 1);
        inside = inside && x >= packDouble2x32(uvec2(pc.lo[0], pc.lo[1])) && x <= packDouble2x32(uvec2(pc.hi[2 * a], pc.hi[2 * a + 1]));
        x = x < 0.0LF ? 0.0LF : x > hi ? hi : x;
        ip[a] = int(x);
        precise double f = x - double(ip[a]);
        fr[a] = float(f);
        precise double h = x + 0.5LF;
        q[a] = int(h);
#else
        uvec2 p = add64(uvec2(rows[r], rows[r + 1u]), mul64(i, uvec2(pc.step[2 * a], pc.step[2 * a + 1])));
        const uvec2 hi = uvec2(pc.hi[2 * a], pc.hi[2 * a + 1]);
        bool axis_in = !lt64(p, lo) && !lt64(hi, p);
        // snap into [0, n-1]
        if (int(p.y) < 0) p = uvec2(0u);
        if (int(p.y) >= n[a] - 1 && (int(p.y) > n[a] - 1 || p.x != 0u)) p = uvec2(0u, uint(n[a] - 1));
        ip[a] = int(p.y);
        fr[a] = float(p.x >> 8u) * (1.0 / 16777216.0);
        q[a] = int(add64(p, uvec2(0x80000000u, 0u)).y);
        if ((pc.tables & (1u << uint(a))) != 0u) {
            const int t = int(rows[pc.table_at + uint(a) * pc.onx + i]);
            axis_in = t >= 0;
            q[a] = t;
        }
        inside = inside && axis_in;
#endif
    }
    if (!inside) {
        dst[o] = pc.fill;
        return;
    }
    const int sy = n.x, sz = n.x * n.y;
    if (pc.order == 0u) {
        dst[o] = src[q.x + sy * q.y + sz * q.z];
    } else if (pc.order == 1u) {
        const ivec3 l = max(n - 2, ivec3(0));
        const ivec3 c = min(ip, l);
        // the fraction from the clamped corner: 1 exactly at p == n-1 (n > 1)
        const vec3 f = vec3(ip - c) + fr;
        const int dx = n.x > 1 ? 1 : 0, dy = n.y > 1 ? sy : 0, dz = n.z > 1 ? sz : 0;
        const int b = c.x + sy * c.y + sz * c.z;
        precise float gx = 1.0 - f.x, gy = 1.0 - f.y, gz = 1.0 - f.z;
        const float c00 = lerp_taps(gx, f.x, src[b], src[b + dx]);
        const float c10 = lerp_taps(gx, f.x, src[b + dy], src[b + dy + dx]);
        const float c01 = lerp_taps(gx, f.x, src[b + dz], src[b + dz + dx]);
        const float c11 = lerp_taps(gx, f.x, src[b + dz + dy], src[b + dz + dy + dx]);
        dst[o] = lerp_taps(gz, f.z, lerp_taps(gy, f.y, c00, c10), lerp_taps(gy, f.y, c01, c11));
    } else {
        float wx[4], wy[4], wz[4];
        int ox[4], oy[4], oz[4];
        cubic_weights(fr.x, wx);
        cubic_weights(fr.y, wy);
        cubic_weights(fr.z, wz);
        for (int k = 0; k < 4; k++) {
            ox[k] = mirror(ip.x - 1 + k, n.x);
            oy[k] = mirror(ip.y - 1 + k, n.y) * sy;
            oz[k] = mirror(ip.z - 1 + k, n.z) * sz;
        }
        precise float t = 0.0;
        for (int c = 0; c < 4; c++) {
            precise float ty = 0.0;
            for (int b = 0; b < 4; b++) {
                const int a = oz[c] + oy[b];
                precise float tx = wx[0] * src[a + ox[0]] + wx[1] * src[a + ox[1]] + wx[2] * src[a + ox[2]] + wx[3] * src[a + ox[3]];
                ty += wy[b] * tx;
            }
            t += wz[c] * ty;
        }
        dst[o] = t;
    }
}
