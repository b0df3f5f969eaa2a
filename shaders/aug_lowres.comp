#version 450
#extension GL_GOOGLE_include_directive : require
// Low-resolution simulation (cd_aug_apply_intensity / lowres_channel, libcirrdata/augment/intensity.c):
// pc.mode 0: down to m voxels per axis by torch 'nearest-exact' (pc.cur -> pc.oth, one invocation per
// voxel of the m-grid); pc.mode 1: back up to the patch by (tri)linear, align_corners=False
// (pc.oth -> pc.cur), the reference's float expression term for term. The index and weight tables
// are the reference's own, computed on the host (float division here may differ in the last bit,
// which could move a nearest index): per axis in Meta, idx[m], i0[n], i1[n], l1[n] (float).
// Rows: sample x channel, gl_WorkGroupID.z; samples without the op are left alone.
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;
#include "invocation.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Meta { uint meta[]; };
layout(std430, set = 0, binding = 1) buffer Data { float data[]; };

#include "aug_intensity.glsl"

void main() {
    const uint o = cd_invocation(pc.groups_x);
    if (o >= pc.count) return;
    const uint row = gl_WorkGroupID.z, rec = (row / pc.channels) * SAMPLE_WORDS;
    if ((meta[rec] & FLAG_LOWRES) == 0u) return;
    const uvec3 m = uvec3(meta[rec + 8u], meta[rec + 9u], meta[rec + 10u]);
    const uvec3 t = uvec3(meta[rec + 11u], meta[rec + 12u], meta[rec + 13u]); // table of each axis
    const uvec3 n = uvec3(pc.nx, pc.ny, pc.nz);
    const uint img = pc.cur + row * pc.npatch, down = pc.oth + row * pc.npatch;
    if (pc.mode == 0u) {
        if (o >= m.x * m.y * m.z) return;
        const uint a = o / (m.y * m.z), b = (o / m.z) % m.y, c = o % m.z;
        data[down + o] = data[img + (meta[t.x + a] * n.y + meta[t.y + b]) * n.z + meta[t.z + c]];
        return;
    }
    const uint a = o / (n.y * n.z), b = (o / n.z) % n.y, c = o % n.z;
    // i0 at t + m, i1 at t + m + n, l1 at t + m + 2n
    const float ax = uintBitsToFloat(meta[t.x + m.x + 2u * n.x + a]), bx = 1.0 - ax;
    const float ay = uintBitsToFloat(meta[t.y + m.y + 2u * n.y + b]), by = 1.0 - ay;
    const float az = uintBitsToFloat(meta[t.z + m.z + 2u * n.z + c]), bz = 1.0 - az;
    const uint p0 = down + meta[t.x + m.x + a] * m.y * m.z, p1 = down + meta[t.x + m.x + n.x + a] * m.y * m.z;
    const uint y0 = meta[t.y + m.y + b] * m.z, y1 = meta[t.y + m.y + n.y + b] * m.z;
    const uint z0 = meta[t.z + m.z + c], z1 = meta[t.z + m.z + n.z + c];
    precise float v = bx * (by * (bz * data[p0 + y0 + z0] + az * data[p0 + y0 + z1]) + ay * (bz * data[p0 + y1 + z0] + az * data[p0 + y1 + z1])) +
                      ax * (by * (bz * data[p1 + y0 + z0] + az * data[p1 + y0 + z1]) + ay * (bz * data[p1 + y1 + z0] + az * data[p1 + y1 + z1]));
    data[img + o] = v;
}
