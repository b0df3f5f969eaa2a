#version 450
#extension GL_GOOGLE_include_directive : require
// Per-row statistics (row = sample x channel) for contrast and gamma: mean, sample standard
// deviation (N - 1), min, max, as sum_min_max / sd_about in libcirrdata/augment/intensity.c compute
// them in double (16 lane partial sums in a fixed order). Here in float, numerically sound: every
// invocation runs Welford's update over its voxels, then the (count, mean, M2) triples are merged
// pairwise (include/welford.glsl, as pp_reduce.comp) -- a tree in shared memory, no subgroup
// operations, any workgroup size up to 256. The error of mean and sd is ~1e-6 of the data's spread
// where the tolerance against the double reference is 1e-4 of the data range.
//   pc.mode 0: workgroup (g, row) reduces voxels g*L + t, stepping by pc.parts*L, to partial g of the
//              row: Stats[(row * pc.parts + g) * 5 + {count (uint bits), mean, M2, min, max}]
//   pc.mode 1: one workgroup per row merges its pc.parts partials into
//              Stats[pc.stats + (pc.slot * pc.rows + row) * 4 + {mean, sd, min, max}]
// Only rows whose sample has a flag of pc.op set are reduced.
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

layout(std430, set = 0, binding = 0) readonly buffer Meta { uint meta[]; };
layout(std430, set = 0, binding = 1) readonly buffer Data { float data[]; };
layout(std430, set = 0, binding = 2) buffer Stats { float stats[]; };

#include "aug_intensity.glsl"

const uint MAX_LOCAL = 256u;

shared float s_n[MAX_LOCAL], s_mean[MAX_LOCAL], s_m2[MAX_LOCAL], s_lo[MAX_LOCAL], s_hi[MAX_LOCAL];

#define WELFORD_COUNT float
#include "welford.glsl"

struct acc {
    welford w;
    float lo, hi;
};

acc merge(acc a, acc b) {
    if (b.w.n == 0.0) return a;
    if (a.w.n == 0.0) return b;
    return acc(welford_merge(a.w, b.w), min(a.lo, b.lo), max(a.hi, b.hi));
}

void main() {
    const uint row = gl_WorkGroupID.z, t = gl_LocalInvocationID.x, L = gl_WorkGroupSize.x;
    if ((meta[(row / pc.channels) * SAMPLE_WORDS] & pc.op) == 0u) return; // uniform over the workgroup
    const float inf = uintBitsToFloat(0x7f800000u);
    acc a = acc(welford(0.0, 0.0, 0.0), inf, -inf);
    if (pc.mode == 0u) {
        const uint base = pc.cur + row * pc.npatch;
        for (uint i = gl_WorkGroupID.x * L + t; i < pc.npatch; i += pc.parts * L) {
            const float x = data[base + i];
            a.w = welford_add(a.w, x);
            a.lo = min(a.lo, x);
            a.hi = max(a.hi, x);
        }
    } else {
        for (uint p = t; p < pc.parts; p += L) {
            const uint q = (row * pc.parts + p) * 5u;
            a = merge(a, acc(welford(float(floatBitsToUint(stats[q])), stats[q + 1u], stats[q + 2u]), stats[q + 3u], stats[q + 4u]));
        }
    }
    s_n[t] = a.w.n;
    s_mean[t] = a.w.mean;
    s_m2[t] = a.w.m2;
    s_lo[t] = a.lo;
    s_hi[t] = a.hi;
    for (uint step = 1u; step < L; step *= 2u) {
        memoryBarrierShared();
        barrier();
        if (t % (2u * step) == 0u && t + step < L) {
            const uint u = t + step;
            a = merge(a, acc(welford(s_n[u], s_mean[u], s_m2[u]), s_lo[u], s_hi[u]));
            s_n[t] = a.w.n;
            s_mean[t] = a.w.mean;
            s_m2[t] = a.w.m2;
            s_lo[t] = a.lo;
            s_hi[t] = a.hi;
        }
    }
    if (t != 0u) return;
    if (pc.mode == 0u) {
        const uint q = (row * pc.parts + gl_WorkGroupID.x) * 5u;
        stats[q] = uintBitsToFloat(uint(a.w.n));
        stats[q + 1u] = a.w.mean;
        stats[q + 2u] = a.w.m2;
        stats[q + 3u] = a.lo;
        stats[q + 4u] = a.hi;
    } else {
        const uint q = pc.stats + (pc.slot * pc.rows + row) * 4u;
        stats[q] = a.w.mean;
        stats[q + 1u] = a.w.n > 1.0 ? sqrt(max(a.w.m2, 0.0) / (a.w.n - 1.0)) : 0.0;
        stats[q + 2u] = a.lo;
        stats[q + 3u] = a.hi;
    }
}
