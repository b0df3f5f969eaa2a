#version 450
#extension GL_GOOGLE_include_directive : require
// Brightness (multiplicative): x *= factor, per sample, every channel (cd_aug_apply_intensity,
// libcirrdata/augment/intensity.c). One invocation per voxel of one row (sample x channel,
// gl_WorkGroupID.z); rows of samples without the op are left alone.
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;
#include "invocation.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Meta { uint meta[]; };
layout(std430, set = 0, binding = 1) buffer Data { float data[]; };

#include "aug_intensity.glsl"

void main() {
    const uint i = cd_invocation(pc.groups_x);
    if (i >= pc.count) return;
    const uint row = gl_WorkGroupID.z, rec = (row / pc.channels) * SAMPLE_WORDS;
    if ((meta[rec] & FLAG_BRIGHTNESS) == 0u) return;
    data[pc.cur + row * pc.npatch + i] *= uintBitsToFloat(meta[rec + 4u]);
}
