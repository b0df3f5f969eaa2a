#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
// Multi-head attention over token maps: cd_nn_ref_attention (libcirrdata/nn/ref_attention.c). q is
// (N, C, Lq), k and v (N, C, Lk) (tokens t = h*W + w of NCHW), head h on channels [h*D, (h+1)*D):
// out[n, h*D + j, t] = sum_s softmax_s(scale * q[., t] . k[., s]) v[n, h*D + j, s].
// One workgroup of 64 invocations per (block of 64 query rows, head, image); the keys go by in tiles
// of 16, k and v staged in shared memory, with an online softmax (each row's running maximum m and
// sum l; its output rescaled by exp(m_old - m_new) once per tile). Each tile is three small GEMMs in
// 4 x 4 register micro-tiles like nn_conv_gemm.comp's: the scores S = q^T k (64 x 16, an invocation
// 4 rows x 4 keys), the softmax of S's rows (an invocation per row), then out += P v^T (64 x D, an
// invocation 4 rows x every fourth block of 4 features). D, the head dimension, is specialization
// constant 0 (padded to DP, a multiple of 4, in shared memory). The block's q is staged in shared
// memory too when the device has room for it (constant 1, QD, is then D; else 1 and q is read from
// the buffer at every tile: the host decides, see vk_exec.c). float32 throughout; only the storage
// is ACT.
#include "nn_storage.glsl"
layout(local_size_x = 64, local_size_y = 1, local_size_z = 1) in;
layout(constant_id = 0) const uint D = 64u;
layout(constant_id = 1) const uint QD = 64u; // D: q staged in shared memory; 1: not
const uint DP = (D + 3u) / 4u * 4u;       // D padded
const uint JB = (DP / 4u + 3u) / 4u;      // feature blocks of 4 per invocation (every fourth)
layout(std430, set = 0, binding = 0) readonly buffer Q { ACT q[]; };
layout(std430, set = 0, binding = 1) readonly buffer K { ACT k[]; };
layout(std430, set = 0, binding = 2) readonly buffer V { ACT v[]; };
layout(std430, set = 0, binding = 3) writeonly buffer Out { ACT y[]; };
layout(push_constant) uniform Push {
    uint q_off, k_off, v_off, y_off;
    uint C, Lq, Lk;
    float scale;
} pc;

const uint QR = 64u; // query rows per workgroup
const uint TK = 16u; // keys per tile
shared vec4 ks[D][TK / 4u];      // [feature][key / 4]
shared vec4 vs[TK][DP / 4u];     // [key][feature / 4]
shared vec4 sp[QR * TK / 4u];    // the scores [row][key / 4], then the probabilities [key][row / 4]
shared vec4 corr_s[QR / 4u], inv_s[QR / 4u]; // per row: exp(m_old - m_new), then 1 / l
shared vec4 qs[QD][QR / 4u];     // [feature][row / 4] when staged

void main() {
    const uint lid = gl_LocalInvocationID.x, t0 = gl_WorkGroupID.x * QR;
    const uint c0 = gl_WorkGroupID.z * pc.C + gl_WorkGroupID.y * D; // the head's first channel
    const uint tm = lid >> 2u, tn = lid & 3u;                       // row block, key / feature lane
    const float neg_inf = uintBitsToFloat(0xff800000u);
    uint qi[4];
    bool qok[4];
    for (uint r = 0u; r < 4u; r++) {
        qok[r] = t0 + 4u * tm + r < pc.Lq;
        qi[r] = pc.q_off + c0 * pc.Lq + (qok[r] ? t0 + 4u * tm + r : 0u);
    }
    if (QD == D) {
        for (uint e = lid; e < D * QR; e += QR) { // consecutive invocations, consecutive rows
            const uint i = e / QR, r = e - i * QR;
            qs[i][r >> 2u][r & 3u] = t0 + r < pc.Lq ? float(q[pc.q_off + (c0 + i) * pc.Lq + t0 + r]) : 0.0;
        }
    }
    vec4 acc[JB * 4u]; // [block][row]: rows 4 tm + r, features 4 (tn + 4 block) .. + 3
    for (uint j = 0u; j < JB * 4u; j++) acc[j] = vec4(0.0);
    float m = -3.402823e38, l = 0.0; // row lid's, finite so that exp(m - max) is 0 and never NaN
    for (uint s0 = 0u; s0 < pc.Lk; s0 += TK) {
        const uint nk = min(TK, pc.Lk - s0);
        barrier(); // the previous tile's k, v and probabilities are no longer read
        for (uint e = lid; e < D * TK; e += QR) { // consecutive invocations, consecutive keys
            const uint i = e / TK, s = e - i * TK;
            ks[i][s >> 2u][s & 3u] = s < nk ? float(k[pc.k_off + (c0 + i) * pc.Lk + s0 + s]) : 0.0;
        }
        for (uint e = lid; e < DP * TK; e += QR) {
            const uint i = e / TK, s = e - i * TK;
            vs[s][i >> 2u][i & 3u] = s < nk && i < D ? float(v[pc.v_off + (c0 + i) * pc.Lk + s0 + s]) : 0.0;
        }
        barrier();
        // scores of rows 4 tm .. + 3, keys 4 tn .. + 3
        vec4 sc[4] = vec4[4](vec4(0.0), vec4(0.0), vec4(0.0), vec4(0.0));
        if (QD == D) {
            [[dont_unroll]] for (uint i = 0u; i < D; i++) {
                const vec4 kv = ks[i][tn], qv = qs[i][tm];
                sc[0] += qv.x * kv;
                sc[1] += qv.y * kv;
                sc[2] += qv.z * kv;
                sc[3] += qv.w * kv;
            }
        } else {
            [[dont_unroll]] for (uint i = 0u; i < D; i++) {
                const vec4 kv = ks[i][tn];
                const uint o = i * pc.Lq;
                [[unroll]] for (uint r = 0u; r < 4u; r++) sc[r] += (qok[r] ? float(q[qi[r] + o]) : 0.0) * kv;
            }
        }
        [[unroll]] for (uint r = 0u; r < 4u; r++) sp[(4u * tm + r) * (TK / 4u) + tn] = sc[r] * pc.scale;
        barrier();
        // row lid: the tile's maximum, the rescaling of what came before, the probabilities
        float p[TK];
        float tmax = m;
        [[unroll]] for (uint s = 0u; s < TK; s++) {
            p[s] = s < nk ? sp[lid * (TK / 4u) + (s >> 2u)][s & 3u] : neg_inf;
            tmax = max(tmax, p[s]);
        }
        const float corr = exp(m - tmax);
        l *= corr;
        [[unroll]] for (uint s = 0u; s < TK; s++) {
            p[s] = exp(p[s] - tmax); // 0 past Lk
            l += p[s];
        }
        m = tmax;
        barrier(); // every row's scores read: sp now takes the probabilities
        [[unroll]] for (uint s = 0u; s < TK; s++) sp[s * (QR / 4u) + tm][tn] = p[s];
        corr_s[tm][tn] = corr;
        barrier();
        // out rows 4 tm .. + 3 (one vec4 per feature), feature blocks tn, tn + 4, ...
        const vec4 cr = corr_s[tm];
        [[unroll]] for (uint j = 0u; j < JB; j++) {
            acc[4u * j] *= cr.x;
            acc[4u * j + 1u] *= cr.y;
            acc[4u * j + 2u] *= cr.z;
            acc[4u * j + 3u] *= cr.w;
        }
        [[dont_unroll]] for (uint s = 0u; s < TK; s++) {
            const vec4 pr = sp[s * (QR / 4u) + tm];
            [[unroll]] for (uint j = 0u; j < JB; j++) {
                const uint fb = tn + 4u * j;
                const vec4 vv = fb < DP / 4u ? vs[s][fb] : vec4(0.0);
                acc[4u * j] += pr.x * vv;
                acc[4u * j + 1u] += pr.y * vv;
                acc[4u * j + 2u] += pr.z * vv;
                acc[4u * j + 3u] += pr.w * vv;
            }
        }
    }
    inv_s[tm][tn] = 1.0 / l;
    barrier();
    const vec4 inv = inv_s[tm];
    [[unroll]] for (uint j = 0u; j < JB; j++)
        [[unroll]] for (uint r = 0u; r < 4u; r++) {
            if (!qok[r]) continue;
            const uint t = t0 + 4u * tm + r;
            [[unroll]] for (uint c = 0u; c < 4u; c++) {
                const uint f = 4u * (tn + 4u * j) + c;
                if (f < D) y[pc.y_off + (c0 + f) * pc.Lq + t] = ACT(acc[4u * j + r][c] * inv[r]);
            }
        }
}
