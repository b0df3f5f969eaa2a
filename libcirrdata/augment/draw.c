/* cd_aug_draw: every random decision of one sample, resolved from Philox streams.
 *
 * Stream scheme (stable; the Vulkan path and any re-implementation must follow it exactly):
 *   Each op kind has a stream id s (augment_impl.h: rotation 1, scaling 2, elastic 3, noise 4,
 *   blur 5, brightness 6, contrast 7, lowres 8, inverted gamma 9, gamma 10, mirror 11). Its
 *   numbers come from Philox4x32-10 with
 *     key     = seed (64 bits: key[0] = low word, key[1] = high word)
 *     counter = {n, s, sample mod 2^32, epoch mod 2^32}      (n = 0, 1, 2, ... block index)
 *   i.e. cd_rng_init(&rng, seed, epoch, sample) skipped to position s * 2^32 (counter word 1 = s),
 *   read with cd_rng_uniform (53 bits from two successive words) and cd_rng_u32. Streams of
 *   different ops, samples, epochs or seeds never overlap (an op uses far fewer than 2^32 blocks),
 *   and none overlaps the plain stream cd_rng_init(seed, epoch, sample) at word-1 position 0.
 *   Within a stream, the draws are, in this order ("u" = cd_rng_uniform, "U(a, b)" = cd_rng_range):
 *     rotation:   u < p ? then for each axis x, y, z listed: angle = U(lo, hi) degrees
 *     scaling:    u < p ? then scale = U(lo, hi) (isotropic; z unscaled in 2D pipelines)
 *     elastic:    u < p ? then alpha = U(alpha), sigma = U(sigma), key = u32 | u32 << 32
 *     noise:      u < p ? then sigma = U(lo, hi), key = u32 | u32 << 32
 *     blur:       u < p, u2 < p_per_channel (both drawn) ? then per_axis: sigma_x, sigma_y (, sigma_z)
 *                 = U(lo, hi) each; else one U(lo, hi) for all axes (z: 0 in 2D pipelines)
 *     brightness, contrast: u < p ? then factor = split(lo, hi)
 *     lowres:     u < p, u2 < p_per_channel ? then zoom = U(lo, hi)
 *     inv. gamma: u < invert_p ? then gamma = split(lo, hi)        (stream 9)
 *     gamma:      u < p ? then gamma = split(lo, hi)               (stream 10)
 *     mirror:     three u, for x, y, z: mirror axis a if listed and u_a < p
 *   split(lo, hi) is batchgenerators' contrast/gamma sampling (BGContrast): when lo < 1 < hi,
 *   u < 0.5 ? U(lo, 1) : U(1, hi); otherwise U(lo, hi). (For a range symmetric about 1 it equals
 *   U(lo, hi).) nnU-Net v2 samples brightness, contrast and both gammas this way.
 *
 * Per-voxel noise: voxel i of the patch (C-order index over x, y, z; the same value for every
 * channel, as nnU-Net v2's synchronised noise) gets x += sigma * n_i, in float32 arithmetic (sigma
 * rounded to float, the product rounded, then the sum), with n_i from block b = i / 4 of
 * Philox4x32-10(counter = {b mod 2^32, b / 2^32, 0, 0}, key = {noise_key low, noise_key high}) ->
 * words w0..w3; lane i % 4: (w0, w1) give n for lanes 0 and 1, (w2, w3) for lanes 2 and 3, by
 * Box-Muller evaluated in float32 (round to nearest, no fused multiply-add), operation by operation:
 *   u1 = ((w_even >> 8) + 1) * 2^-24 in (0, 1], u2 = (w_odd >> 8) * 2^-24 in [0, 1) (both exact)
 *   ln u1 = log_acc(u1): m = u1's significand with the exponent set for [0.5, 1), e the matching
 *     exponent (u1 = m 2^e, frexp); if m < 0.70710678f: m = 2 m, e = e - 1; f = m - 1;
 *     s = f / (2 + f); z = s s; R = z (c1 + z (c2 + z (c3 + z c4))), c1..c4 = 0.6666666667f, 0.4f,
 *     0.2857142857f, 0.2222222222f; ln = e * 0.69314718056f + (2 s + s R)
 *   r = sqrt(-2 ln) (correctly rounded)
 *   (cos, sin)(2 pi u2) = cos_sin_2pi(u2): q = floor(4 u2 + 0.5), a = (u2 - q * 0.25) * 6.28318530718f,
 *     a2 = a a, S = a (1 + a2 (-1/6 + a2 (1/120 + a2 (-1/5040 + a2 / 362880)))), C = 1 + a2 (-1/2 +
 *     a2 (1/24 + a2 (-1/720 + a2 (1/40320 + a2 (-1/3628800))))) (each coefficient the float nearest
 *     the fraction, polynomials evaluated as written); for q & 3 = 0, 1, 2, 3: (cos, sin) =
 *     (C, S), (-S, C), (-C, -S), (S, -C)
 *   lane 0/2: n = r * cos, lane 1/3: n = r * sin.
 * log_acc is fdlibm's logf scheme (series error < 1e-9 for |s| <= 0.172), cos_sin_2pi a Taylor series
 * on [-pi/4, pi/4] (error < 1e-9): n is within a few float ulp of the exact Box-Muller value of
 * (u1, u2) (|n| <= 5.77; about 1e-6 absolute at worst). A pure function of (noise_key, i); the C
 * code below (box_muller) is the reference, shaders/aug_noise.comp evaluates the same operations
 * (its division, sqrt and fusing are the driver's: ~1e-6 from the C value).
 *
 * Elastic field (batchgenerators' create_deformation_coords, deformation on the patch grid before
 * rotation and scaling): for axis k and voxel i, v = 2 * (w >> 8) / 2^24 - 1 in [-1, 1) with w =
 * word i % 4 of Philox(counter = {i/4 low, i/4 high, k, 0}, key = elastic_key); d_k = alpha *
 * gaussian_filter(v, sigma, mode 'constant', cval 0, truncate 4) (scipy definition, each axis of
 * length > 1; in 2D pipelines d_z = 0 and z is not smoothed). */
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE__
#include <xmmintrin.h>
#endif

#include "augment/augment_impl.h"
#include "cirrdata/rng.h"

#define PI 3.14159265358979323846

static void op_rng(cd_rng *r, uint64_t seed, uint64_t epoch, uint64_t sample, uint32_t stream) {
    cd_rng_init(r, seed, (uint32_t)epoch, (uint32_t)sample);
    r->counter[1] = stream;
}

static double split_draw(cd_rng *r, double lo, double hi) {
    if (lo < 1.0 && hi > 1.0) return cd_rng_uniform(r) < 0.5 ? cd_rng_range(r, lo, 1.0) : cd_rng_range(r, 1.0, hi);
    return cd_rng_range(r, lo, hi);
}

static uint64_t draw_key(cd_rng *r) {
    uint64_t lo = cd_rng_u32(r);
    uint64_t hi = cd_rng_u32(r);
    return lo | hi << 32;
}

static void matmul(double a[3][3], const double b[3][3]) {
    double t[3][3];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) t[i][j] = a[i][0] * b[0][j] + a[i][1] * b[1][j] + a[i][2] * b[2][j];
    memcpy(a, t, sizeof t);
}

/* Where one draw comes from: the pipeline and the (seed, epoch, sample) that key every op's stream. */
typedef struct draw_src {
    const cd_aug_pipeline *p;
    uint64_t seed, epoch, sample;
} draw_src;

/* Op `op` of the pipeline when present, with r seeded on its stream; NULL when absent. */
static const cd_aug_op *op_start(const draw_src *d, cd_aug_kind kind, uint32_t stream, cd_rng *r) {
    const cd_aug_op *op = &d->p->ops[kind];
    if (!op->present) return NULL;
    op_rng(r, d->seed, d->epoch, d->sample, stream);
    return op;
}

/* Rotation, scaling and the elastic deformation. */
static void draw_spatial(const draw_src *d, cd_aug_params *out) {
    cd_rng r;
    const cd_aug_op *op;
    if ((op = op_start(d, CD_AUG_ROTATION, CD_AUG_STREAM_ROTATION, &r)) && cd_rng_uniform(&r) < op->p)
        for (int a = 0; a < 3; a++)
            if (op->axes[a]) out->rotation[a] = cd_rng_range(&r, op->range[0], op->range[1]) * (PI / 180.0);
    if ((op = op_start(d, CD_AUG_SCALING, CD_AUG_STREAM_SCALING, &r)) && cd_rng_uniform(&r) < op->p)
        out->scale = cd_rng_range(&r, op->range[0], op->range[1]);
    if ((op = op_start(d, CD_AUG_ELASTIC, CD_AUG_STREAM_ELASTIC, &r)) && cd_rng_uniform(&r) < op->p) {
        out->elastic = true;
        out->elastic_alpha = cd_rng_range(&r, op->range[0], op->range[1]);
        out->elastic_sigma = cd_rng_range(&r, op->range2[0], op->range2[1]);
        out->elastic_key = draw_key(&r);
    }
}

/* Noise and blur (sigma per axis, or one for all). */
static void draw_noise_blur(const draw_src *d, cd_aug_params *out) {
    cd_rng r;
    const cd_aug_op *op;
    if ((op = op_start(d, CD_AUG_NOISE, CD_AUG_STREAM_NOISE, &r)) && cd_rng_uniform(&r) < op->p) {
        out->noise = true;
        out->noise_sigma = cd_rng_range(&r, op->range[0], op->range[1]);
        out->noise_key = draw_key(&r);
    }
    if (!(op = op_start(d, CD_AUG_BLUR, CD_AUG_STREAM_BLUR, &r))) return;
    const int naxes = out->planar ? 2 : 3;
    double u = cd_rng_uniform(&r), u2 = cd_rng_uniform(&r);
    if (u < op->p && u2 < op->p_per_channel) {
        out->blur = true;
        out->blur_truncate = op->truncate;
        if (op->per_axis)
            for (int a = 0; a < naxes; a++) out->blur_sigma[a] = cd_rng_range(&r, op->range[0], op->range[1]);
        else {
            double s = cd_rng_range(&r, op->range[0], op->range[1]);
            for (int a = 0; a < naxes; a++) out->blur_sigma[a] = s;
        }
    }
}

/* Brightness, contrast, low resolution and gamma (with its inversion). */
static void draw_intensity(const draw_src *d, cd_aug_params *out) {
    cd_rng r;
    const cd_aug_op *op;
    if ((op = op_start(d, CD_AUG_BRIGHTNESS, CD_AUG_STREAM_BRIGHTNESS, &r)) && cd_rng_uniform(&r) < op->p) {
        out->brightness = true;
        out->brightness_factor = split_draw(&r, op->range[0], op->range[1]);
    }
    if ((op = op_start(d, CD_AUG_CONTRAST, CD_AUG_STREAM_CONTRAST, &r)) && cd_rng_uniform(&r) < op->p) {
        out->contrast = true;
        out->contrast_factor = split_draw(&r, op->range[0], op->range[1]);
    }
    if ((op = op_start(d, CD_AUG_LOWRES, CD_AUG_STREAM_LOWRES, &r))) {
        double u = cd_rng_uniform(&r), u2 = cd_rng_uniform(&r);
        if (u < op->p && u2 < op->p_per_channel) {
            out->lowres = true;
            out->lowres_zoom = cd_rng_range(&r, op->range[0], op->range[1]);
        }
    }
    if ((op = op_start(d, CD_AUG_GAMMA, CD_AUG_STREAM_GAMMA_INVERT, &r))) {
        if (cd_rng_uniform(&r) < op->invert_p) {
            out->gamma_invert = true;
            out->gamma_invert_value = split_draw(&r, op->range[0], op->range[1]);
        }
        op_rng(&r, d->seed, d->epoch, d->sample, CD_AUG_STREAM_GAMMA);
        if (cd_rng_uniform(&r) < op->p) {
            out->gamma = true;
            out->gamma_value = split_draw(&r, op->range[0], op->range[1]);
        }
    }
}

/* matrix = Rz * Ry * Rx * S * F (batchgeneratorsv2 create_affine_matrix_3d, then mirroring). */
static void compose_matrix(cd_aug_params *out) {
    const double *t = out->rotation;
    const double rx[3][3] = {{1, 0, 0}, {0, cos(t[0]), -sin(t[0])}, {0, sin(t[0]), cos(t[0])}};
    const double ry[3][3] = {{cos(t[1]), 0, sin(t[1])}, {0, 1, 0}, {-sin(t[1]), 0, cos(t[1])}};
    const double rz[3][3] = {{cos(t[2]), -sin(t[2]), 0}, {sin(t[2]), cos(t[2]), 0}, {0, 0, 1}};
    double m[3][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}};
    if (t[2] != 0) matmul(m, rz);
    if (t[1] != 0) matmul(m, ry);
    if (t[0] != 0) matmul(m, rx);
    const double sf[3][3] = {{out->scale * (out->mirror[0] ? -1 : 1), 0, 0},
                             {0, out->scale * (out->mirror[1] ? -1 : 1), 0},
                             {0, 0, (out->planar ? 1.0 : out->scale) * (out->mirror[2] ? -1 : 1)}};
    matmul(m, sf);
    memcpy(out->matrix, m, sizeof m);
}

void cd_aug_draw(const cd_aug_pipeline *p, uint64_t seed, uint64_t epoch, uint64_t sample, const int64_t patch[3],
                 const double center[3], cd_aug_params *out) {
    (void)patch;
    memset(out, 0, sizeof *out);
    for (int i = 0; i < 3; i++) {
        out->matrix[i][i] = 1.0;
        out->center[i] = center ? center[i] : 0.0;
    }
    out->scale = 1.0;
    out->blur_truncate = 4.0;
    if (!p) return;
    out->planar = p->dims == 2;
    const draw_src d = {p, seed, epoch, sample};
    draw_spatial(&d, out);
    draw_noise_blur(&d, out);
    draw_intensity(&d, out);
    cd_rng r;
    const cd_aug_op *op = op_start(&d, CD_AUG_MIRROR, CD_AUG_STREAM_MIRROR, &r);
    for (int a = 0; op && a < 3; a++) {
        double u = cd_rng_uniform(&r);
        out->mirror[a] = op->axes[a] && u < op->p;
    }
    compose_matrix(out);
}

/* Box-Muller on pairs (w[2p], w[2p + 1]) -> out[2p] = r cos, out[2p + 1] = r sin, p < NOISE_PAIRS (a
 * fixed count: gcc -O2 vectorises only loops without a remainder), in float, with the definition's
 * log_acc and cos_sin_2pi written branch-free (selects) so the loops vectorise; shaders/aug_noise.comp
 * evaluates the same operations. Three passes: gcc will not vectorise sqrtf while it may set errno
 * (-fmath-errno, the default; the optimize attribute does not change that), so the square roots are a
 * pass of their own, explicit SSE where there is SSE: sqrtps and sqrtf are both the correctly rounded
 * square root, so every path gives the same bits. */
enum { NOISE_PAIRS = 128 };
static void box_muller(const uint32_t *restrict w, float *restrict out) {
    float t[NOISE_PAIRS], cv[NOISE_PAIRS], sv[NOISE_PAIRS];
    for (int p = 0; p < NOISE_PAIRS; p++) {
        const float u1 = ((float)(int32_t)(w[2 * p] >> 8) + 1.0f) * 0x1p-24f; /* (0, 1], exact */
        const float u2 = (float)(int32_t)(w[2 * p + 1] >> 8) * 0x1p-24f;      /* [0, 1), exact */
        /* log_acc(u1): frexp by bits (u1 is normal: >= 2^-24), m into [sqrt(1/2), sqrt(2)) */
        uint32_t bits;
        memcpy(&bits, &u1, sizeof bits);
        uint32_t mbits = (bits & 0x007FFFFFu) | 0x3F000000u;
        float m;
        memcpy(&m, &mbits, sizeof m);
        int32_t e = (int32_t)(bits >> 23) - 126;
        /* m < sqrt(1/2): m *= 2 (exact), e -= 1. The doubling is done on the exponent bits: a
         * conditional float multiply (trapping math) would keep a branch and stop the vectoriser. */
        const bool low = m < 0.70710678f;
        mbits += low ? 0x00800000u : 0u;
        memcpy(&m, &mbits, sizeof m);
        e -= low ? 1 : 0;
        const float f = m - 1.0f;
        const float s = f / (2.0f + f), z = s * s;
        const float rr = z * (0.6666666667f + z * (0.4f + z * (0.2857142857f + z * 0.2222222222f)));
        const float ln = (float)e * 0.69314718056f + (2.0f * s + s * rr);
        t[p] = -2.0f * ln;
        /* cos_sin_2pi(u2): q = floor(4 u2 + 0.5) (truncation: the argument is >= 0) */
        const int32_t q = (int32_t)(u2 * 4.0f + 0.5f);
        const float a = (u2 - (float)q * 0.25f) * 6.28318530718f, a2 = a * a;
        const float sn =
            a * (1.0f + a2 * (-1.0f / 6.0f + a2 * (1.0f / 120.0f + a2 * (-1.0f / 5040.0f + a2 * (1.0f / 362880.0f)))));
        const float cs =
            1.0f + a2 * (-0.5f + a2 * (1.0f / 24.0f +
                                       a2 * (-1.0f / 720.0f + a2 * (1.0f / 40320.0f + a2 * (-1.0f / 3628800.0f)))));
        /* quadrant q & 3: (c, s), (-s, c), (-c, -s), (s, -c); sign flips by exact multiplies */
        const float c0 = (q & 1) ? sn : cs, s0 = (q & 1) ? cs : sn;
        cv[p] = c0 * (((q + 1) & 2) ? -1.0f : 1.0f);
        sv[p] = s0 * ((q & 2) ? -1.0f : 1.0f);
    }
#ifdef __SSE__
    for (int p = 0; p < NOISE_PAIRS; p += 4) _mm_storeu_ps(t + p, _mm_sqrt_ps(_mm_loadu_ps(t + p)));
#else
    for (int p = 0; p < NOISE_PAIRS; p++) t[p] = sqrtf(t[p]); /* >= -0: no error case */
#endif
    for (int p = 0; p < NOISE_PAIRS; p++) {
        out[2 * p] = t[p] * cv[p];
        out[2 * p + 1] = t[p] * sv[p];
    }
}

void cd_aug_noise_fill(uint64_t key, uint64_t first, int64_t n, float *out) {
    enum { BLOCKS = NOISE_PAIRS / 2 }; /* 256 voxels per round: words and values stay in L1 */
    const uint32_t k[2] = {(uint32_t)key, (uint32_t)(key >> 32)};
    uint32_t w[4 * BLOCKS];
    float v[4 * BLOCKS];
    while (n > 0) { /* always BLOCKS blocks; values past n are dropped */
        const uint64_t b0 = first / 4;
        const int64_t skip = (int64_t)(first % 4);
        const uint32_t ctr[4] = {(uint32_t)b0, (uint32_t)(b0 >> 32), 0, 0};
        cd_philox4x32_10_blocks(ctr, k, BLOCKS, w);
        int64_t got = 4 * BLOCKS - skip;
        if (got > n) got = n;
        if (skip == 0 && got == 4 * BLOCKS) /* whole round: straight into out */
            box_muller(w, out);
        else {
            box_muller(w, v);
            memcpy(out, v + skip, sizeof(float) * (size_t)got);
        }
        out += got;
        first += (uint64_t)got;
        n -= got;
    }
}

static json_t *vec3(const double *v) {
    json_t *a = json_array();
    for (int i = 0; i < 3; i++) json_array_append_new(a, json_real(v[i]));
    return a;
}

static json_t *hex64(uint64_t v) {
    char s[19];
    snprintf(s, sizeof s, "0x%016llx", (unsigned long long)v);
    return json_string(s);
}

char *cd_aug_params_to_json(const cd_aug_params *a) {
    if (!a) return NULL;
    json_t *o = json_object();
    json_t *m = json_array();
    for (int i = 0; i < 3; i++) json_array_append_new(m, vec3(a->matrix[i]));
    json_object_set_new(o, "matrix", m);
    json_object_set_new(o, "center", vec3(a->center));
    json_object_set_new(o, "planar", json_boolean(a->planar));
    json_object_set_new(o, "rotation_rad", vec3(a->rotation));
    json_object_set_new(o, "scale", json_real(a->scale));
    json_t *mi = json_array();
    for (int i = 0; i < 3; i++) json_array_append_new(mi, json_boolean(a->mirror[i]));
    json_object_set_new(o, "mirror", mi);
    if (a->elastic) {
        json_t *e = json_object();
        json_object_set_new(e, "alpha", json_real(a->elastic_alpha));
        json_object_set_new(e, "sigma", json_real(a->elastic_sigma));
        json_object_set_new(e, "key", hex64(a->elastic_key));
        json_object_set_new(o, "elastic", e);
    }
    if (a->noise) {
        json_t *e = json_object();
        json_object_set_new(e, "sigma", json_real(a->noise_sigma));
        json_object_set_new(e, "key", hex64(a->noise_key));
        json_object_set_new(o, "noise", e);
    }
    if (a->blur) {
        json_t *e = json_object();
        json_object_set_new(e, "sigma", vec3(a->blur_sigma));
        json_object_set_new(e, "truncate", json_real(a->blur_truncate));
        json_object_set_new(o, "blur", e);
    }
    if (a->brightness) json_object_set_new(o, "brightness", json_real(a->brightness_factor));
    if (a->contrast) json_object_set_new(o, "contrast", json_real(a->contrast_factor));
    if (a->lowres) json_object_set_new(o, "lowres_zoom", json_real(a->lowres_zoom));
    if (a->gamma_invert) json_object_set_new(o, "gamma_inverted", json_real(a->gamma_invert_value));
    if (a->gamma) json_object_set_new(o, "gamma", json_real(a->gamma_value));
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    json_decref(o);
    return s;
}
