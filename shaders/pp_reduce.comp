#version 450
// Statistics for the z-score normalisation of a recipe (normalize() in
// libcirrdata/convert/preprocess.c): count, mean and population standard deviation of the voxels
// of a region (the whole volume, mask != 0, or x != 0) and, for an empty region, of the whole
// volume. The reference sums in double; here every invocation runs Welford's update in float over
// its voxels and the (count, mean, M2) triples are merged pairwise with Chan et al.'s formula
// (M2 = M2a + M2b + d^2 na nb / n) in a shared-memory tree: no cancellation of large sums, the
// error is a few float ulps times log2(N) of the data's spread (~1e-6; the tests assert 1e-4 of
// the data range). Counts stay exact (uint). No subgroup operations; workgroup size <= 256.
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

struct acc {
    uint n;
    float mean, m2;
};

acc merge(acc a, acc b) {
    if (b.n == 0u) return a;
    if (a.n == 0u) return b;
    acc r;
    r.n = a.n + b.n;
    const float fn = float(r.n), fa = float(a.n), fb = float(b.n) / fn;
    const float d = b.mean - a.mean;
    r.mean = a.mean + d * fb;
    r.m2 = a.m2 + b.m2 + d * d * fa * fb;
    return r;
}

acc add(acc a, float x) {
    a.n += 1u;
    const float d = x - a.mean;
    a.mean += d / float(a.n);
    a.m2 += d * (x - a.mean);
    return a;
}

void main() {
    const uint t = gl_LocalInvocationID.x, L = gl_WorkGroupSize.x;
    acc a[2] = acc[2](acc(0u, 0.0, 0.0), acc(0u, 0.0, 0.0)); // region, volume
    if (pc.mode == 0u) {
        for (uint i = gl_WorkGroupID.x * L + t; i < pc.n; i += pc.parts * L) {
            const float x = data[i];
            bool in_region = true;
            if (pc.region == 1u) in_region = ((mask[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu) != 0u;
            else if (pc.region == 2u) in_region = x != 0.0;
            if (in_region) a[0] = add(a[0], x);
            a[1] = add(a[1], x);
        }
    } else {
        for (uint p = t; p < pc.parts; p += L)
            for (int k = 0; k < 2; k++) {
                const uint q = p * 6u + uint(k) * 3u;
                a[k] = merge(a[k], acc(floatBitsToUint(stats[q]), stats[q + 1u], stats[q + 2u]));
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
                a[k] = merge(a[k], acc(s_n[k][u], s_mean[k][u], s_m2[k][u]));
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
        const acc r = a[0].n > 0u ? a[0] : a[1];
        const uint q = pc.parts * 6u;
        stats[q] = r.mean;
        stats[q + 1u] = max(sqrt(max(r.m2, 0.0) / float(max(r.n, 1u))), 1e-8);
    }
}
