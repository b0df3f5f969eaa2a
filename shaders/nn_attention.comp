#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
// Multi-head attention over token maps: cd_nn_ref_attention (libcirrdata/nn/ref_attention.c). q is
// (N, C, Lq), k and v (N, C, Lk) (tokens t = h*W + w of NCHW), head h on channels [h*D, (h+1)*D):
// out[n, h*D + j, t] = sum_s softmax_s(scale * q[., t] . k[., s]) v[n, h*D + j, s].
// One workgroup per (block of 64 query rows, head, image), one invocation per query row with its
// scaled q row and its output row (D, the head dimension, is specialization constant 0). The loops
// over D stay rolled: unrolled, lavapipe took seconds to compile each D and ran slower (spills).
// The keys go by in tiles of TK: the workgroup loads the tile's k and v into shared memory, each
// invocation takes its TK scores, and an online softmax (the running maximum m and sum l, the
// accumulator rescaled by exp(m_old - m_new) once per tile) adds the tile's p * v. float32
// throughout; only the storage is ACT.
#include "nn_storage.glsl"
layout(local_size_x = 64, local_size_y = 1, local_size_z = 1) in;
layout(constant_id = 0) const uint D = 64u;
layout(std430, set = 0, binding = 0) readonly buffer Q { ACT q[]; };
layout(std430, set = 0, binding = 1) readonly buffer K { ACT k[]; };
layout(std430, set = 0, binding = 2) readonly buffer V { ACT v[]; };
layout(std430, set = 0, binding = 3) writeonly buffer Out { ACT y[]; };
layout(push_constant) uniform Push {
    uint q_off, k_off, v_off, y_off;
    uint C, Lq, Lk;
    float scale;
} pc;

const uint QR = 64u; // query rows per workgroup (the local size)
const uint TK = 16u; // keys per tile: 2 * TK * D floats of shared memory (16 KiB at D = 128)
shared float ks[TK * D], vs[TK * D]; // [key][feature]

void main() {
    const uint t = gl_WorkGroupID.x * QR + gl_LocalInvocationID.x;
    const uint c0 = gl_WorkGroupID.z * pc.C + gl_WorkGroupID.y * D; // the head's first channel
    const bool live = t < pc.Lq; // the others still load tiles
    const float neg_inf = uintBitsToFloat(0xff800000u);
    float qr[D], acc[D];
    [[dont_unroll]] for (uint i = 0u; i < D; i++) {
        qr[i] = live ? float(q[pc.q_off + (c0 + i) * pc.Lq + t]) * pc.scale : 0.0;
        acc[i] = 0.0;
    }
    float m = -3.402823e38, l = 0.0; // a finite start: exp(m - tile max) is then 0, never NaN
    for (uint s0 = 0u; s0 < pc.Lk; s0 += TK) {
        const uint nk = min(TK, pc.Lk - s0);
        barrier(); // the previous tile is no longer read
        for (uint e = gl_LocalInvocationID.x; e < TK * D; e += QR) {
            const uint i = e / TK, s = e - i * TK; // consecutive invocations read consecutive keys
            const uint src = (c0 + i) * pc.Lk + s0 + s;
            ks[s * D + i] = s < nk ? float(k[pc.k_off + src]) : 0.0;
            vs[s * D + i] = s < nk ? float(v[pc.v_off + src]) : 0.0;
        }
        barrier();
        float sc[TK];
        float tm = m;
        for (uint s = 0u; s < TK; s++) {
            float dot = 0.0;
            [[dont_unroll]] for (uint i = 0u; i < D; i++) dot += qr[i] * ks[s * D + i];
            sc[s] = s < nk ? dot : neg_inf;
            tm = max(tm, sc[s]);
        }
        const float corr = exp(m - tm);
        l *= corr;
        [[dont_unroll]] for (uint i = 0u; i < D; i++) acc[i] *= corr;
        for (uint s = 0u; s < TK; s++) {
            const float p = exp(sc[s] - tm); // 0 for the keys past Lk
            l += p;
            [[dont_unroll]] for (uint i = 0u; i < D; i++) acc[i] += p * vs[s * D + i];
        }
        m = tm;
    }
    if (!live) return;
    const float inv = 1.0 / l;
    [[dont_unroll]] for (uint i = 0u; i < D; i++) y[pc.y_off + (c0 + i) * pc.Lq + t] = ACT(acc[i] * inv);
}
