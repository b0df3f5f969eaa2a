#version 450
#extension GL_GOOGLE_include_directive : require
// The intensity map of a recipe's normalisation (normalize() in libcirrdata/preprocess/),
// in place on float32 voxels:
//   pc.mode 0 (z-score): x = (x - mean) / sd with mean and sd from Stats[pc.stats_at + {0, 1}]
//                        (pp_reduce.comp, or the caller's given values);
//   pc.mode 1 (percentiles): x = clamp(r0 + (x - lo) * scale, cmin, cmax), lo and scale from the
//                        percentiles the host computed;
//   pc.mode 2: no map (only the `then` step);
// then, with pc.then != 0, x = (x - then_mean) / then_std. The reference computes each step in
// double and rounds to float; here float throughout (a few ulps). `precise`: no FMA contraction.
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;
#include "invocation.glsl"

layout(std430, set = 0, binding = 0) buffer Data { float data[]; };
layout(std430, set = 0, binding = 1) readonly buffer Stats { float stats[]; };

layout(push_constant) uniform Push {
    uint n, groups_x, mode, then, stats_at;
    float lo, scale, r0, cmin, cmax, then_mean, then_std;
} pc;

void main() {
    const uint i = cd_invocation(pc.groups_x);
    if (i >= pc.n) return;
    precise float x = data[i];
    if (pc.mode == 0u) {
        precise float y = (x - stats[pc.stats_at]) / stats[pc.stats_at + 1u];
        x = y;
    } else if (pc.mode == 1u) {
        precise float y = pc.r0 + (x - pc.lo) * pc.scale;
        x = clamp(y, pc.cmin, pc.cmax);
    }
    if (pc.then != 0u) {
        precise float y = (x - pc.then_mean) / pc.then_std;
        x = y;
    }
    data[i] = x;
}
