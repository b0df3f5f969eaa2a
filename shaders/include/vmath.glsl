// Float log2 and exp2 by libcirrdata/core/vmath.h's polynomials (cd_vlog2f, cd_vexp2f): the same
// constants (as bits), the same operations in the same order, `precise` so that nothing is fused or
// reassociated. Only the division may differ from the CPU's in the last bit (Vulkan allows 2.5 ulp).

// log2 x = k + s P(s^2), x = 2^k m, m in [sqrt(1/2), sqrt(2)), s = (m - 1) / (m + 1),
// P = 2 / ln 2 (1 + z/3 + z^2/5 + z^3/7 + z^4/9)
float vlog2(float x) {
    const float C1 = uintBitsToFloat(0x4038aa3bu), C3 = uintBitsToFloat(0x3f76384fu), C5 = uintBitsToFloat(0x3f13bb63u),
                C7 = uintBitsToFloat(0x3ed30bb1u), C9 = uintBitsToFloat(0x3ea4258au);
    const uint ix = floatBitsToUint(x) + (0x3f800000u - 0x3f3504f3u);
    const int k = int(ix >> 23) - 0x7f;
    precise float f = uintBitsToFloat((ix & 0x007fffffu) + 0x3f3504f3u) - 1.0;
    precise float s = f / (2.0 + f);
    precise float z = s * s;
    precise float r = s * (C1 + z * (C3 + z * (C5 + z * (C7 + z * C9)))) + float(k);
    return r;
}

// 2^z = 2^k (1 + r P(r)), k = round(z) by the 1.5 * 2^23 shift, r = z - k; 0 below -126
float vexp2(float z) {
    const float P0 = uintBitsToFloat(0x3920fddeu), P1 = uintBitsToFloat(0x3aaf9f29u), P2 = uintBitsToFloat(0x3c1d96a6u),
                P3 = uintBitsToFloat(0x3d635774u), P4 = uintBitsToFloat(0x3e75fdeeu), P5 = uintBitsToFloat(0x3f317218u);
    precise float zs = z + 12582912.0;
    precise float kf = zs - 12582912.0;
    precise float r = z - kf;
    const uint k = floatBitsToUint(zs) - 0x4b400000u;
    precise float p = 1.0 + r * (((((P0 * r + P1) * r + P2) * r + P3) * r + P4) * r + P5);
    precise float y = p * uintBitsToFloat((k + 127u) << 23);
    const float inf = uintBitsToFloat(0x7f800000u);
    return z >= -126.0 ? (z < 127.5 ? y : inf) : 0.0;
}
