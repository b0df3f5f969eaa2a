// Running (count, mean, M2) statistics in float, numerically sound for reductions on the device:
// Welford's update per value, and Chan et al.'s pairwise merge (M2 = M2a + M2b + d^2 na nb / n) to
// combine partials -- no large sums of squares that cancel; the error of mean and sd is a few float ulps
// times log2(N) relative to the data's spread. The count's type is the includer's:
//   #define WELFORD_COUNT uint (exact counts) or float, then #include "welford.glsl".
// Used by aug_reduce.comp (per-row statistics of the intensity ops) and pp_reduce.comp (the recipe's
// z-score normalisation).
struct welford {
    WELFORD_COUNT n;
    float mean, m2;
};

welford welford_merge(welford a, welford b) {
    if (b.n == WELFORD_COUNT(0)) return a;
    if (a.n == WELFORD_COUNT(0)) return b;
    welford r;
    r.n = a.n + b.n;
    const float fn = float(r.n), fa = float(a.n), fb = float(b.n) / fn;
    const float d = b.mean - a.mean;
    r.mean = a.mean + d * fb;
    r.m2 = a.m2 + b.m2 + d * d * fa * fb;
    return r;
}

welford welford_add(welford a, float x) {
    a.n += WELFORD_COUNT(1);
    const float d = x - a.mean;
    a.mean += d / float(a.n);
    a.m2 += d * (x - a.mean);
    return a;
}
