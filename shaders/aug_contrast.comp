#version 450
#extension GL_GOOGLE_include_directive : require
// Contrast: x = (x - mean) * factor + mean, clipped to the row's [min, max] (cd_aug_apply_intensity,
// libcirrdata/augment/intensity.c). mean, min and max come from aug_reduce.comp (stats slot pc.slot).
// One invocation per voxel of one row (sample x channel, gl_WorkGroupID.z).
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;
#include "invocation.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Meta { uint meta[]; };
layout(std430, set = 0, binding = 1) buffer Data { float data[]; };
layout(std430, set = 0, binding = 2) readonly buffer Stats { float stats[]; };

#include "aug_intensity.glsl"

void main() {
    const uint i = cd_invocation(pc.groups_x);
    if (i >= pc.count) return;
    const uint row = gl_WorkGroupID.z, rec = (row / pc.channels) * SAMPLE_WORDS;
    if ((meta[rec] & FLAG_CONTRAST) == 0u) return;
    const uint st = pc.stats + (pc.slot * pc.rows + row) * 4u; // mean, sd, min, max
    const float mean = stats[st], mn = stats[st + 2u], mx = stats[st + 3u];
    const float f = uintBitsToFloat(meta[rec + 5u]);
    const uint a = pc.cur + row * pc.npatch + i;
    const float v = (data[a] - mean) * f + mean;
    data[a] = v < mn ? mn : (v > mx ? mx : v);
}
