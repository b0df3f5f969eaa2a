#version 450
#extension GL_GOOGLE_include_directive : require
// Gaussian blur along one axis (pc.op: 0 = x, 1 = y, 2 = z), scipy.ndimage.gaussian_filter1d with
// mode 'reflect' (d c b a | a b c d), as cd_aug_gauss_axis (libcirrdata/augment/intensity.c). The
// host computes each sample's weights (radius (int)(truncate * sigma + 0.5), exp(-x^2 / 2 sigma^2)
// in double, normalised to sum 1) and stores them in Meta; the sum runs in float in the reference's
// order. Not in place: reads the image at pc.cur, writes pc.oth (the host swaps them); rows of
// samples that do not blur this axis are copied. One invocation per voxel of one row (sample x
// channel, gl_WorkGroupID.z).
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;
#include "invocation.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Meta { uint meta[]; };
layout(std430, set = 0, binding = 1) buffer Data { float data[]; };

#include "aug_intensity.glsl"

int reflect_index(int i, int n) {
    if (n == 1) return 0;
    const int period = 2 * n;
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - 1 - i;
}

void main() {
    const uint i = cd_invocation(pc.groups_x);
    if (i >= pc.count) return;
    const uint row = gl_WorkGroupID.z, rec = (row / pc.channels) * SAMPLE_WORDS;
    const uint src = pc.cur + row * pc.npatch, dst = pc.oth + row * pc.npatch;
    const uint axis = pc.op;
    const int r = int(meta[rec + 17u + axis]);
    if (r == 0) {
        data[dst + i] = data[src + i];
        return;
    }
    const uint n = axis == 0u ? pc.nx : axis == 1u ? pc.ny : pc.nz;
    const uint stride = axis == 0u ? pc.ny * pc.nz : axis == 1u ? pc.nz : 1u;
    const int p = int((i / stride) % n);
    const uint line = src + i - uint(p) * stride;
    const uint w = meta[rec + 14u + axis];
    float acc = uintBitsToFloat(meta[w + uint(r)]) * data[line + uint(p) * stride];
    if (p >= r && p + r < int(n)) { // all taps inside: no reflection (most voxels)
        for (int j = 0; j < r; j++)
            acc += (data[line + uint(p - r + j) * stride] + data[line + uint(p + r - j) * stride]) * uintBitsToFloat(meta[w + uint(j)]);
    } else {
        for (int j = 0; j < r; j++) {
            const float e0 = data[line + uint(reflect_index(p - r + j, int(n))) * stride];
            const float e1 = data[line + uint(reflect_index(p + r - j, int(n))) * stride];
            acc += (e0 + e1) * uintBitsToFloat(meta[w + uint(j)]);
        }
    }
    data[dst + i] = acc;
}
