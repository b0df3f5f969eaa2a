#version 450
#extension GL_GOOGLE_include_directive : require
// Statistics for the z-score normalisation of a recipe (normalize() in
// libcirrdata/preprocess/): count, mean and population standard deviation of the voxels
// of a region (the whole volume, mask != 0, or x != 0) and, for an empty region, of the whole
// volume. The reference sums in double; here every invocation runs Welford's update in float over
// its voxels and the (count, mean, M2) triples are merged pairwise (include/welford.glsl, as
// aug_reduce.comp) in a shared-memory tree: the error is ~1e-6 of the data's spread (the tests
// assert 1e-4 of the data range). Counts stay exact (uint). No subgroup operations; workgroup size
// <= 256.
//   pc.mode 0: workgroup g reduces voxels g*L + t, stepping by pc.parts*L, into partial g:
//              Stats[g * 6 + {count (uint bits), mean, M2} for the region, then for the volume]
//   pc.mode 1: one workgroup merges the pc.parts partials into Stats[pc.parts * 6 + {mean, sd}]:
//              the region's, or the volume's when the region is empty; sd = max(sqrt(M2 / n), 1e-8)
//              as the reference clamps it.
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

layout(std430, set = 0, binding = 0) readonly buffer Data { float data[]; };
layout(std430, set = 0, binding = 1) readonly buffer Mask { uint mask[]; }; // uint8, packed
layout(std430, set = 0, binding = 2) buffer Stats { float stats[]; };

layout(push_constant) uniform Push {
    uint n;      // voxels
    uint parts;  // partials (workgroups of mode 0)
    uint region; // 0 volume, 1 mask != 0, 2 x != 0
    uint mode;
} pc;

const uint MAX_LOCAL = 256u;
shared uint s_n[2][MAX_LOCAL];
shared float s_mean[2][MAX_LOCAL], s_m2[2][MAX_LOCAL];

#define WELFORD_COUNT uint
#include "welford.glsl"

void main() {
    const uint t = gl_LocalInvocationID.x, L = gl_WorkGroupSize.x;
    welford a[2] = welford[2](welford(0u, 0.0, 0.0), welford(0u, 0.0, 0.0)); // region, volume
    if (pc.mode == 0u) {
        for (uint i = gl_WorkGroupID.x * L + t; i < pc.n; i += pc.parts * L) {
            const float x = data[i];
            bool in_region = true;
            if (pc.region == 1u) in_region = ((mask[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu) != 0u;
            else if (pc.region == 2u) in_region = x != 0.0;
            if (in_region) a[0] = welford_add(a[0], x);
            a[1] = welford_add(a[1], x);
        }
    } else {
        for (uint p = t; p < pc.parts; p += L)
            for (int k = 0; k < 2; k++) {
                const uint q = p * 6u + uint(k) * 3u;
                a[k] = welford_merge(a[k], welford(floatBitsToUint(stats[q]), stats[q + 1u], stats[q + 2u]));
            }
    }
    for (int k = 0; k < 2; k++) {
        s_n[k][t] = a[k].n;
        s_mean[k][t] = a[k].mean;
        s_m2[k][t] = a[k].m2;
    }
    for (uint step = 1u; step < L; step *= 2u) {
        memoryBarrierShared();
        barrier();
        if (t % (2u * step) == 0u && t + step < L) {
            const uint u = t + step;
            for (int k = 0; k < 2; k++) {
                a[k] = welford_merge(a[k], welford(s_n[k][u], s_mean[k][u], s_m2[k][u]));
                s_n[k][t] = a[k].n;
                s_mean[k][t] = a[k].mean;
                s_m2[k][t] = a[k].m2;
            }
        }
    }
    if (t != 0u) return;
    if (pc.mode == 0u) {
        for (int k = 0; k < 2; k++) {
            const uint q = gl_WorkGroupID.x * 6u + uint(k) * 3u;
            stats[q] = uintBitsToFloat(a[k].n);
            stats[q + 1u] = a[k].mean;
            stats[q + 2u] = a[k].m2;
        }
    } else {
        const welford r = a[0].n > 0u ? a[0] : a[1];
        const uint q = pc.parts * 6u;
        stats[q] = r.mean;
        stats[q + 1u] = max(sqrt(max(r.m2, 0.0) / float(max(r.n, 1u))), 1e-8);
    }
}
