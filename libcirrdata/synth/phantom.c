/* One synthetic abdominal MRI case: an axial stack (LPS) with body wall, subcutaneous fat, liver,
 * spleen, kidneys, spine, aorta/IVC, gallbladder and bowel, a smooth bias field and Rician noise,
 * plus the binary liver mask.
 *
 * Geometry is built in "patient millimetres" x = towards the patient's left, y = towards posterior,
 * z = towards superior (the LPS axes of the voxel grid), origin at the body centre in-plane and at
 * the liver centre in z. Organs are ellipsoids deformed by smooth value noise.
 *
 * The cirrhosis stage acts through a continuous per-case severity s = stage + 0.15 N(0, 1) (cases
 * vary within a stage; neighbouring stages rarely overlap in s itself, but their images overlap
 * through the per-case draws below): surface nodularity, parenchymal heterogeneity (nodules,
 * reticular fibrosis), right-lobe atrophy with caudate/left-lobe hypertrophy, splenomegaly and, when
 * severe, ascites. The texture strengths grow with s steeply enough (about 8-10 % of the liver signal
 * per stage for nodules) to stay above the stage-independent fine texture and Rician noise after a
 * slice is resized to 256x256 and windowed by its percentiles, so a network can learn the stage;
 * per-case factors (texture and nodule scale, noise level, bias field, lobe sizes) keep the cases of
 * one stage different. Mean intensities vary per case (scanner gain, tissue jitter), so they do not
 * give the stage away.
 *
 * Randomness: Philox streams keyed by the seed, indexed by (case_index, purpose). Anatomy streams do
 * not depend on the sequence or the stage, so the T1 and T2 scans of one patient show the same body,
 * and the same case drawn at another stage differs only through s. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cirrdata/rng.h"
#include "cirrdata/synth.h"
#include "core/internal.h"

enum { T_AIR, T_FAT, T_MUSCLE, T_CAVITY, T_LIVER, T_SPLEEN, T_KIDNEY, T_BONE, T_VESSEL, T_FLUID, T_COUNT };

/* stream_lo purposes; the sequence is added in bits 8.. for acquisition-specific streams. */
enum {
    P_ANATOMY = 1,
    P_ACQ = 2,
    P_CONTRAST = 3,
    P_RICIAN = 4,
    P_FIELD = 16 /* + field index: lattices of the value-noise fields */
};
enum { F_SHAPE, F_NODULAR, F_NODULES, F_FIBROSIS, F_FINE, F_BOWEL, F_BIAS, F_COUNT };

/* ---- value noise: random values on a coarse lattice, smoothstep-interpolated ---------------- */

typedef struct vnoise {
    float *v; /* n[0] * n[1] * n[2] lattice values in [-1, 1], x fastest */
    int n[3];
    double lo[3]; /* patient mm of lattice point 0 */
    double inv_cell;
    float *row; /* n[0] values: the lattice interpolated in y and z for the current row */
} vnoise;

static double smooth01(double f) { return f * f * (3.0 - 2.0 * f); }

static int vnoise_init(vnoise *vn, cd_rng *rng, const double lo[3], const double hi[3], double cell) {
    /* Coarsen the lattice rather than let a huge box allocate a lot: the fields are smooth anyway. */
    for (;;) {
        size_t total = 1;
        for (int d = 0; d < 3; d++) {
            vn->n[d] = (int)ceil((hi[d] - lo[d]) / cell) + 2;
            total *= (size_t)vn->n[d];
        }
        if (total <= ((size_t)1 << 22)) break;
        cell *= 1.25;
    }
    for (int d = 0; d < 3; d++) vn->lo[d] = lo[d];
    vn->inv_cell = 1.0 / cell;
    size_t total = (size_t)vn->n[0] * (size_t)vn->n[1] * (size_t)vn->n[2];
    vn->v = malloc(total * sizeof *vn->v);
    vn->row = malloc((size_t)vn->n[0] * sizeof *vn->row);
    if (!vn->v || !vn->row) return -1;
    for (size_t i = 0; i < total; i++) vn->v[i] = (float)((double)cd_rng_u32(rng) * (2.0 / 4294967295.0) - 1.0);
    return 0;
}

static void vnoise_free(vnoise *vn) {
    free(vn->v);
    free(vn->row);
}

/* Lattice coordinate of a position along axis d: integer cell and smoothed fraction. */
static void vnoise_coord(const vnoise *vn, int d, double p, int *cell, double *frac) {
    double t = (p - vn->lo[d]) * vn->inv_cell;
    double tmax = (double)vn->n[d] - 1.000001;
    if (t < 0) t = 0;
    if (t > tmax) t = tmax;
    int c = (int)t;
    *cell = c;
    *frac = smooth01(t - c);
}

/* Interpolates the lattice in y and z once per row, so each voxel costs one 1D interpolation. */
static void vnoise_row(vnoise *vn, double y, double z) {
    int cy, cz;
    double fy, fz;
    vnoise_coord(vn, 1, y, &cy, &fy);
    vnoise_coord(vn, 2, z, &cz, &fz);
    size_t nx = (size_t)vn->n[0], plane = nx * (size_t)vn->n[1];
    const float *a = vn->v + (size_t)cz * plane + (size_t)cy * nx, *b = a + nx, *c = a + plane, *e = c + nx;
    float w00 = (float)((1 - fy) * (1 - fz)), w10 = (float)(fy * (1 - fz)), w01 = (float)((1 - fy) * fz),
          w11 = (float)(fy * fz);
    for (size_t i = 0; i < nx; i++) vn->row[i] = w00 * a[i] + w10 * b[i] + w01 * c[i] + w11 * e[i];
}

static double vnoise_at(const vnoise *vn, double x) {
    int cx;
    double fx;
    vnoise_coord(vn, 0, x, &cx, &fx);
    return vn->row[cx] + fx * (vn->row[cx + 1] - vn->row[cx]);
}

/* ---- anatomy ---------------------------------------------------------------------------------- */

typedef struct ellipsoid {
    double c[3], r[3];
} ellipsoid;

/* Normalised radial distance minus one: < 0 inside. */
static double ell_d(const ellipsoid *e, double x, double y, double z) {
    double a = (x - e->c[0]) / e->r[0], b = (y - e->c[1]) / e->r[1], c = (z - e->c[2]) / e->r[2];
    return sqrt(a * a + b * b + c * c) - 1.0;
}

/* The ellipsoid's cross-section at (y, z) touches the row: a cheap reject per row. */
static bool ell_row_hits(const ellipsoid *e, double y, double z, double grow) {
    double b = (y - e->c[1]) / (e->r[1] * grow), c = (z - e->c[2]) / (e->r[2] * grow);
    return b * b + c * c < 1.0;
}

typedef struct anatomy {
    double A, B;                               /* body semi-axes (x, y) */
    double fat, muscle;                        /* subcutaneous fat and abdominal wall thickness */
    double spine_y, spine_r, aorta[3], ivc[3]; /* (x, y, r) */
    ellipsoid lobe[3];                         /* right lobe, left lobe, caudate */
    ellipsoid spleen, kidney[2], gall;
    bool has_gall, ascites;
    double ascites_d;            /* ascites rim width in normalised liver distance */
    double shape_amp;            /* generic smooth shape variation (all stages) */
    double nod_amp;              /* surface nodularity amplitude (normalised distance) */
    double h_nod, h_fib, h_fine; /* parenchymal texture strengths */
    double liver_box[2][3];      /* bounding box of the liver (mm) */
    double sev;                  /* continuous severity (0 healthy .. ~3.6) */
} anatomy;

static double clampd(double v, double lo, double hi) { return v < lo ? lo : v > hi ? hi : v; }
static double mind(double a, double b) { return a < b ? a : b; } /* fmin is a libm call at -O2 */
static double maxd(double a, double b) { return a > b ? a : b; }
/* Round half away from zero without a libm call (hot loop). */
static double round_fast(double v) { return (double)(int64_t)(v < 0 ? v - 0.5 : v + 0.5); }

/* Draws the patient's body. All draws happen in a fixed order, independent of the stage. */
static void draw_anatomy(cd_rng *r, int stage, double fov_x, double fov_y, anatomy *an) {
    double sev_noise = cd_rng_normal(r);
    /* Continuous severity: spread within a stage; healthy livers stay near 0. */
    double s = stage == 0 ? 0.15 * fabs(sev_noise) : clampd(stage + 0.15 * sev_noise, 0.4, 3.6);
    an->sev = s;

    an->A = fmin(cd_rng_range(r, 135, 170), 0.47 * fov_x);
    an->B = fmin(an->A * cd_rng_range(r, 0.62, 0.78), 0.45 * fov_y);
    an->fat = cd_rng_range(r, 6, 28) * an->B / 110.0;
    an->muscle = cd_rng_range(r, 6, 11);
    double A = an->A, B = an->B;
    an->spine_y = 0.55 * B;
    an->spine_r = cd_rng_range(r, 15, 19);
    an->aorta[0] = 0.06 * A;
    an->aorta[1] = 0.30 * B;
    an->aorta[2] = cd_rng_range(r, 9, 12);
    an->ivc[0] = -0.12 * A;
    an->ivc[1] = 0.24 * B;
    an->ivc[2] = cd_rng_range(r, 9, 13);

    double r_scale = 1.0 - s * cd_rng_range(r, 0.05, 0.08);  /* right-lobe atrophy */
    double c_scale = 1.0 + s * cd_rng_range(r, 0.10, 0.16);  /* caudate hypertrophy */
    double l_scale = 1.0 + s * cd_rng_range(r, 0.00, 0.06);  /* left lobe */
    double sp_scale = 1.0 + s * cd_rng_range(r, 0.08, 0.16); /* splenomegaly */
    double liver_size = cd_rng_range(r, 0.9, 1.1);
    double lz = cd_rng_range(r, 65, 85) * liver_size;

    ellipsoid *rl = &an->lobe[0], *ll = &an->lobe[1], *cl = &an->lobe[2];
    *rl = (ellipsoid){{-0.42 * A, -0.05 * B, 0}, {0.42 * A, 0.60 * B, lz}};
    *ll = (ellipsoid){{0.10 * A, -0.50 * B, 0.25 * lz}, {0.38 * A, 0.22 * B, 0.6 * lz}};
    *cl = (ellipsoid){{-0.12 * A, 0.10 * B, 0.1 * lz}, {0.11 * A, 0.15 * B, 0.45 * lz}};
    for (int d = 0; d < 3; d++) {
        rl->r[d] *= liver_size * r_scale * cd_rng_range(r, 0.93, 1.07);
        ll->r[d] *= liver_size * l_scale * cd_rng_range(r, 0.93, 1.07);
        cl->r[d] *= liver_size * c_scale * cd_rng_range(r, 0.93, 1.07);
    }
    /* An atrophic right lobe retracts from the body wall towards the hilum. */
    rl->c[0] += (1.0 - r_scale) * 0.3 * A;

    an->spleen = (ellipsoid){{0.58 * A, 0.26 * B, 0.2 * lz}, {28, 0.45 * B, 0.7 * lz}};
    for (int d = 0; d < 3; d++) an->spleen.r[d] *= sp_scale * cd_rng_range(r, 0.9, 1.1);
    /* An enlarged spleen grows anteriorly and downwards. */
    an->spleen.c[1] -= (sp_scale - 1.0) * 0.2 * B;
    an->spleen.c[2] -= (sp_scale - 1.0) * 0.4 * lz;

    for (int k = 0; k < 2; k++) {
        double side = k == 0 ? -1.0 : 1.0;
        an->kidney[k] = (ellipsoid){{side * 0.40 * A, 0.38 * B, -0.75 * lz + (k == 0 ? -8 : 0)},
                                    {cd_rng_range(r, 22, 28), cd_rng_range(r, 18, 23), cd_rng_range(r, 45, 55)}};
    }
    an->has_gall = cd_rng_uniform(r) < 0.8;
    an->gall = (ellipsoid){{-0.22 * A, -0.40 * B, -0.55 * lz},
                           {cd_rng_range(r, 10, 16), cd_rng_range(r, 10, 16), cd_rng_range(r, 20, 32)}};

    double u_asc = cd_rng_uniform(r);
    an->ascites = s > 2.3 && u_asc < 0.6;
    an->ascites_d = cd_rng_range(r, 0.04, 0.12);

    an->shape_amp = cd_rng_range(r, 0.04, 0.09);
    an->nod_amp = 0.004 + s * cd_rng_range(r, 0.026, 0.032);
    an->h_nod = s * cd_rng_range(r, 0.080, 0.100);
    an->h_fib = s * cd_rng_range(r, 0.065, 0.085);
    an->h_fine = cd_rng_range(r, 0.006, 0.012);

    double grow = 1.0 + an->shape_amp + 1.2 * an->nod_amp + 0.05;
    for (int d = 0; d < 3; d++) {
        an->liver_box[0][d] = 1e9;
        an->liver_box[1][d] = -1e9;
        for (int l = 0; l < 3; l++) {
            an->liver_box[0][d] = mind(an->liver_box[0][d], an->lobe[l].c[d] - grow * an->lobe[l].r[d]);
            an->liver_box[1][d] = maxd(an->liver_box[1][d], an->lobe[l].c[d] + grow * an->lobe[l].r[d]);
        }
    }
}

/* ---- acquisition ------------------------------------------------------------------------------ */

typedef struct acquisition {
    int64_t dims[3];
    double sp[3];
    double rot;                  /* in-plane obliquity (radians), small */
    double origin[3];            /* LPS world position of voxel (0,0,0) before rotation */
    double body_off[2], liver_z; /* body centre offset in-plane, liver centre offset in z (mm) */
    cd_dtype dtype;
    bool scaled;
    double slope, inter, gain;
} acquisition;

static void draw_acquisition(cd_rng *r, const int64_t req[3], acquisition *aq) {
    static const int sizes[] = {160, 192, 208, 224, 240, 256, 256, 272, 288, 320, 320};
    int nx = sizes[cd_rng_below(r, sizeof sizes / sizeof sizes[0])];
    int ny = nx;
    double u_rect = cd_rng_uniform(r), rect = cd_rng_range(r, 0.75, 0.92);
    if (u_rect < 0.3) ny = (int)clampd(8 * floor(nx * rect / 8), 160, 320); /* rectangular FOV (AP shorter) */
    int nz = 24 + (int)cd_rng_below(r, 41);
    aq->dims[0] = req[0] > 0 ? req[0] : nx;
    aq->dims[1] = req[1] > 0 ? req[1] : ny;
    aq->dims[2] = req[2] > 0 ? req[2] : nz;

    double fov = 10.0 * round(cd_rng_range(r, 340, 420) / 10.0);
    aq->sp[0] = aq->sp[1] = clampd(fov / (double)(req[0] > 0 ? req[0] : nx), 0.7, 1.6);
    double coverage = cd_rng_range(r, 170, 250);
    aq->sp[2] = clampd(round(10.0 * coverage / (double)(req[2] > 0 ? req[2] : nz)) / 10.0, 3.0, 8.0);

    double u_rot = cd_rng_uniform(r), rot = cd_rng_range(r, -4, 4);
    aq->rot = u_rot < 0.25 ? rot * 3.141592653589793 / 180.0 : 0.0;
    aq->body_off[0] = cd_rng_range(r, -10, 10);
    aq->body_off[1] = cd_rng_range(r, -5, 15);
    aq->liver_z = cd_rng_range(r, -15, 15);
    for (int d = 0; d < 3; d++) aq->origin[d] = -0.5 * (double)(aq->dims[d] - 1) * aq->sp[d] + cd_rng_range(r, -20, 20);
    aq->origin[2] += cd_rng_range(r, -300, 100); /* table position */

    /* Stored types as scanners and converters produce them: mostly int16. */
    double u = cd_rng_uniform(r);
    aq->scaled = false;
    aq->slope = 1;
    aq->inter = 0;
    if (u < 0.60) {
        aq->dtype = CD_DTYPE_INT16;
    } else if (u < 0.75) {
        aq->dtype = CD_DTYPE_UINT16;
    } else if (u < 0.87) {
        aq->dtype = CD_DTYPE_FLOAT32;
    } else {
        aq->dtype = CD_DTYPE_INT16;
        aq->scaled = true;
    }
    double slope = cd_rng_range(r, 0.4, 3.0), u_inter = cd_rng_uniform(r), inter = cd_rng_range(r, -50, 0);
    if (aq->scaled) {
        aq->slope = round(slope * 1e4) / 1e4; /* exactly representable enough in float32 headers */
        aq->inter = u_inter < 0.5 ? round(inter) : 0.0;
    }
    /* Gain: the stored value of a signal of 1.0. Wide, so absolute intensity says little. */
    double g = cd_rng_range(r, 1500, 4500);
    aq->gain = aq->dtype == CD_DTYPE_FLOAT32 ? g * cd_rng_range(r, 0.05, 0.5) : g;
}

/* ---- contrast --------------------------------------------------------------------------------- */

/* Base signal per tissue for T1 and T2 (T1: liver > spleen, fat bright, fluid dark;
 * T2: fluid and spleen bright, liver dark). */
static const double base_signal[2][T_COUNT] = {
    /* air  fat   muscle cavity liver spleen kidney bone vessel fluid */
    {0.00, 0.85, 0.30, 0.42, 0.62, 0.42, 0.40, 0.55, 0.18, 0.10},
    {0.00, 0.72, 0.22, 0.36, 0.30, 0.62, 0.58, 0.40, 0.06, 1.00},
};

typedef struct contrast {
    double tissue[T_COUNT];
    double bias_amp, bias_grad, sigma;
} contrast;

static void draw_contrast(cd_rng *r, cd_sequence seq, double sev, contrast *ct) {
    int q = seq == CD_SEQ_T1 ? 0 : 1;
    for (int t = 0; t < T_COUNT; t++) ct->tissue[t] = base_signal[q][t] * cd_rng_range(r, 0.92, 1.08);
    /* A weak stage trend in mean liver signal, swamped by per-case variation. */
    double trend = q == 0 ? -0.025 : 0.03;
    ct->tissue[T_LIVER] *= cd_rng_range(r, 0.92, 1.08) * (1.0 + trend * sev);
    ct->bias_amp = cd_rng_range(r, 0.05, 0.25);
    ct->bias_grad = cd_rng_range(r, -0.12, 0.12);
    ct->sigma = cd_rng_range(r, 0.008, 0.018);
}

/* Approximately normal (sum of four uniform bytes): one Philox word per value, no log/cos. */
static float byte_normal(uint32_t w) {
    int s = (int)(w & 255) + (int)((w >> 8) & 255) + (int)((w >> 16) & 255) + (int)(w >> 24);
    return (float)(s - 510) * (1.0f / 147.8f);
}

/* Rician noise on one slice: magnitude of the signal plus complex Gaussian noise. Whole Philox
 * blocks (4 words = 2 voxels) straight from the stream's counter: the hot loop of the generator. */
static void add_rician(cd_rng *r, float sigma, float *img, size_t n) {
    uint32_t blk[4];
    for (size_t q = 0; q < n; q += 2) {
        cd_philox4x32_10(r->counter, r->key, blk);
        if (++r->counter[0] == 0) r->counter[1]++;
        for (size_t h = 0; h < 2 && q + h < n; h++) {
            float re = img[q + h] + sigma * byte_normal(blk[2 * h]), im = sigma * byte_normal(blk[2 * h + 1]);
            img[q + h] = sqrtf(re * re + im * im);
        }
    }
}

/* ---- rendering -------------------------------------------------------------------------------- */

typedef struct render {
    const anatomy *an;
    const contrast *ct;
    int seq_q; /* 0 = T1, 1 = T2 */
    vnoise f[F_COUNT];
} render;

/* Tissue at one point, and (for the liver) its texture factor. */
static int tissue_at(render *rd, double x, double y, double z, const bool *row_hit, double *tex) {
    const anatomy *an = rd->an;
    double A = an->A, B = an->B;
    double bx = x / A, by = y / B, rb = bx * bx + by * by;
    if (rb >= 1.0 || y > 0.88 * B) return T_AIR; /* posterior side flattened on the table */
    double Ai = A - an->fat, Bi = B - an->fat;
    double ix = x / Ai, iy = y / Bi;
    if (ix * ix + iy * iy >= 1.0 || y > 0.88 * B - an->fat) return T_FAT;
    double Am = Ai - an->muscle, Bm = Bi - an->muscle;
    double mx = x / Am, my = y / Bm;
    if (mx * mx + my * my >= 1.0) return T_MUSCLE;

    /* Retroperitoneum and vessels. */
    double dx = x, dy = y - an->spine_y;
    if (dx * dx + dy * dy < an->spine_r * an->spine_r) return T_BONE;
    dy = y - (an->spine_y + an->spine_r + 7);
    if (dx * dx + dy * dy < 36) return T_FLUID; /* spinal canal */
    for (int side = -1; side <= 1; side += 2) {
        double px = (x - side * 0.24 * A) / 24.0, py = (y - (an->spine_y + 22)) / 18.0;
        if (px * px + py * py < 1.0) return T_MUSCLE; /* paraspinal muscles */
    }
    dx = x - an->aorta[0];
    dy = y - an->aorta[1];
    if (dx * dx + dy * dy < an->aorta[2] * an->aorta[2]) return T_VESSEL;
    dx = x - an->ivc[0];
    dy = y - an->ivc[1];
    if (dx * dx + dy * dy < an->ivc[2] * an->ivc[2]) return T_VESSEL;
    for (int k = 0; k < 2; k++)
        if (row_hit[2 + k] && ell_d(&an->kidney[k], x, y, z) < 0) return T_KIDNEY;
    if (row_hit[4] && an->has_gall && ell_d(&an->gall, x, y, z) < 0) return T_FLUID;

    double liver_d = 1e9;
    if (row_hit[0]) {
        for (int l = 0; l < 3; l++) liver_d = mind(liver_d, ell_d(&an->lobe[l], x, y, z));
        if (liver_d < 0.3) {
            double nn = vnoise_at(&rd->f[F_NODULAR], x);
            /* Nodules bulge, with sharp creases between them where the noise crosses zero. */
            double bump = 1.6 * fabs(nn) - 0.5;
            liver_d -= an->shape_amp * vnoise_at(&rd->f[F_SHAPE], x) + an->nod_amp * bump;
        }
        if (liver_d < 0) {
            double n1 = vnoise_at(&rd->f[F_NODULES], x), n2 = vnoise_at(&rd->f[F_FIBROSIS], x);
            double fib = exp(-(n2 * n2) * (1.0 / (0.18 * 0.18))); /* septa at zero crossings, wide enough for 256x256 */
            double fine = vnoise_at(&rd->f[F_FINE], x);
            if (rd->seq_q == 0) /* T1: nodules iso/hyper, fibrosis dark */
                *tex = 1.0 + an->h_nod * n1 - an->h_fib * fib + an->h_fine * fine;
            else /* T2: nodules dark, fibrosis bright; stronger, as the T2 liver sits low in the window */
                *tex = 1.0 - 1.1 * an->h_nod * n1 + 1.6 * an->h_fib * fib + an->h_fine * fine;
            return T_LIVER;
        }
    }
    if (row_hit[1]) {
        double d = ell_d(&an->spleen, x, y, z) - 0.5 * an->shape_amp * vnoise_at(&rd->f[F_SHAPE], x + 37.0);
        if (d < 0) return T_SPLEEN;
    }
    if (an->ascites && liver_d < an->ascites_d) return T_FLUID;
    /* Bowel and mesentery: mottled, with some fluid-filled loops. */
    double bw = vnoise_at(&rd->f[F_BOWEL], x);
    if (bw > 0.55) return T_FLUID;
    *tex = 1.0 + 0.35 * bw;
    return T_CAVITY;
}

/* In-plane [1 2 1] blur: partial-volume edges instead of staircase boundaries. */
static void blur_inplane(float *img, float *tmp, int64_t nx, int64_t ny) {
    for (int64_t j = 0; j < ny; j++) {
        const float *s = img + j * nx;
        float *d = tmp + j * nx;
        for (int64_t i = 0; i < nx; i++) {
            float l = s[i > 0 ? i - 1 : i], r = s[i < nx - 1 ? i + 1 : i];
            d[i] = 0.25f * (l + r) + 0.5f * s[i];
        }
    }
    for (int64_t j = 0; j < ny; j++) {
        const float *u = tmp + (j > 0 ? j - 1 : j) * nx, *c = tmp + j * nx, *w = tmp + (j < ny - 1 ? j + 1 : j) * nx;
        float *d = img + j * nx;
        for (int64_t i = 0; i < nx; i++) d[i] = 0.25f * (u[i] + w[i]) + 0.5f * c[i];
    }
}

static void store_slice(const acquisition *aq, const float *img, void *out, size_t n) {
    const double inv_slope = 1.0 / aq->slope;
    for (size_t i = 0; i < n; i++) {
        double v = aq->gain * img[i];
        switch (aq->dtype) {
        case CD_DTYPE_FLOAT32: ((float *)out)[i] = (float)v; break;
        case CD_DTYPE_UINT16: ((uint16_t *)out)[i] = (uint16_t)clampd(round_fast(v), 0, 65535); break;
        default: ((int16_t *)out)[i] = (int16_t)clampd(round_fast((v - aq->inter) * inv_slope), -32768, 32767); break;
        }
    }
}

static void set_affine(cd_volume *vol, const acquisition *aq) {
    /* LPS grid: i -> patient left, j -> posterior, k -> superior. NIfTI world is RAS, so the first two
     * world axes are negated. A small in-plane obliquity rotates the grid about z. */
    double c = cos(aq->rot), s = sin(aq->rot);
    double lps[3][3] = {{c * aq->sp[0], -s * aq->sp[1], 0}, {s * aq->sp[0], c * aq->sp[1], 0}, {0, 0, aq->sp[2]}};
    double o[3] = {c * aq->origin[0] - s * aq->origin[1], s * aq->origin[0] + c * aq->origin[1], aq->origin[2]};
    double a[4][4] = {{0}};
    for (int j = 0; j < 3; j++) {
        a[0][j] = -lps[0][j];
        a[1][j] = -lps[1][j];
        a[2][j] = lps[2][j];
    }
    a[0][3] = -o[0];
    a[1][3] = -o[1];
    a[2][3] = o[2];
    a[3][3] = 1.0;
    cd_volume_set_affine(vol, a);
    cd_volume_set_spacing(vol, aq->sp);
    if (aq->scaled) cd_volume_set_scaling(vol, aq->slope, aq->inter);
}

cd_status cd_synth_case(const cd_synth_case_params *p, cd_volume **image, cd_volume **mask, cd_error *err) {
    if (!p || !image || !mask) return cd_fail(err, CD_ERR_ARG, "cd_synth_case: NULL argument");
    *image = *mask = NULL;
    if (p->sequence != CD_SEQ_T1 && p->sequence != CD_SEQ_T2)
        return cd_fail(err, CD_ERR_ARG, "cd_synth_case: sequence %d is not T1 (1) or T2 (2)", (int)p->sequence);
    if (p->stage < 0 || p->stage > 3)
        return cd_fail(err, CD_ERR_ARG, "cd_synth_case: stage %d is not in 0..3", p->stage);
    for (int d = 0; d < 3; d++)
        if (p->dims[d] < 0 || p->dims[d] > 2048)
            return cd_fail(err, CD_ERR_ARG, "cd_synth_case: dims[%d] = %lld is not in 0..2048", d,
                           (long long)p->dims[d]);

    const uint32_t seqbits = (uint32_t)p->sequence << 8;
    cd_rng r_anat, r_acq, r_con, r_noise;
    cd_rng_init(&r_anat, p->seed, p->case_index, P_ANATOMY);
    cd_rng_init(&r_acq, p->seed, p->case_index, P_ACQ | seqbits);
    cd_rng_init(&r_con, p->seed, p->case_index, P_CONTRAST | seqbits);
    cd_rng_init(&r_noise, p->seed, p->case_index, P_RICIAN | seqbits);

    acquisition aq;
    draw_acquisition(&r_acq, p->dims, &aq);
    anatomy an;
    draw_anatomy(&r_anat, p->stage, (double)aq.dims[0] * aq.sp[0], (double)aq.dims[1] * aq.sp[1], &an);
    contrast ct;
    draw_contrast(&r_con, p->sequence, an.sev, &ct);

    const int64_t nx = aq.dims[0], ny = aq.dims[1], nz = aq.dims[2];
    cd_status st = cd_volume_create(aq.dims, aq.dtype, image, err);
    if (st == CD_OK) st = cd_volume_create(aq.dims, CD_DTYPE_UINT8, mask, err);
    render rd = {.an = &an, .ct = &ct, .seq_q = p->sequence == CD_SEQ_T1 ? 0 : 1};
    size_t plane = (size_t)nx * (size_t)ny;
    float *img = malloc(plane * sizeof *img), *tmp = malloc(plane * sizeof *tmp);
    if (st == CD_OK && (!img || !tmp)) st = cd_fail(err, CD_ERR_NOMEM, "cd_synth_case: out of memory");

    /* Patient-mm box of the whole grid, for the volume-wide fields. */
    double vlo[3], vhi[3];
    for (int d = 0; d < 3; d++) {
        double a0 = -0.5 * (double)aq.dims[d] * aq.sp[d] - 60, a1 = -a0;
        vlo[d] = a0;
        vhi[d] = a1;
    }
    vlo[2] += aq.liver_z - 40;
    vhi[2] += aq.liver_z + 40;
    static const double cells[F_COUNT] = {45, 0, 0, 0, 4, 11, 140};
    double nod_cell = 0, tex_cell = 0, fib_cell = 0;
    {
        cd_rng r_cell;
        cd_rng_init(&r_cell, p->seed, p->case_index, P_FIELD + F_COUNT);
        nod_cell = cd_rng_range(&r_cell, 7, 11);
        tex_cell = cd_rng_range(&r_cell, 5, 9);
        fib_cell = cd_rng_range(&r_cell, 9, 15);
    }
    for (int f = 0; f < F_COUNT && st == CD_OK; f++) {
        cd_rng rf;
        /* Anatomical fields are shared by T1 and T2; the bias field belongs to the acquisition. */
        cd_rng_init(&rf, p->seed, p->case_index, (uint32_t)(P_FIELD + f) | (f == F_BIAS ? seqbits : 0));
        bool liver_field = f == F_NODULAR || f == F_NODULES || f == F_FIBROSIS || f == F_FINE;
        double cell = f == F_NODULAR ? nod_cell : f == F_NODULES ? tex_cell : f == F_FIBROSIS ? fib_cell : cells[f];
        if (vnoise_init(&rd.f[f], &rf, liver_field ? an.liver_box[0] : vlo, liver_field ? an.liver_box[1] : vhi,
                        cell) != 0)
            st = cd_fail(err, CD_ERR_NOMEM, "cd_synth_case: out of memory");
    }

    if (st == CD_OK) {
        uint8_t *m = cd_volume_data(*mask);
        char *out = cd_volume_data(*image);
        const size_t esize = cd_dtype_size(aq.dtype);
        for (int64_t k = 0; k < nz; k++) {
            double z = ((double)k - 0.5 * (double)(nz - 1)) * aq.sp[2] - aq.liver_z;
            for (int64_t j = 0; j < ny; j++) {
                double y = ((double)j - 0.5 * (double)(ny - 1)) * aq.sp[1] - aq.body_off[1];
                bool hit[5];
                hit[0] = y >= an.liver_box[0][1] && y <= an.liver_box[1][1] && z >= an.liver_box[0][2] &&
                         z <= an.liver_box[1][2];
                hit[1] = ell_row_hits(&an.spleen, y, z, 1.1);
                hit[2] = ell_row_hits(&an.kidney[0], y, z, 1.0);
                hit[3] = ell_row_hits(&an.kidney[1], y, z, 1.0);
                hit[4] = ell_row_hits(&an.gall, y, z, 1.0);
                for (int f = 0; f < F_COUNT; f++) {
                    bool liver_field = f == F_NODULAR || f == F_NODULES || f == F_FIBROSIS || f == F_FINE;
                    if (!liver_field || hit[0]) vnoise_row(&rd.f[f], y, z);
                }
                float *row = img + (size_t)j * (size_t)nx;
                uint8_t *mrow = m + ((size_t)k * (size_t)ny + (size_t)j) * (size_t)nx;
                for (int64_t i = 0; i < nx; i++) {
                    double x = ((double)i - 0.5 * (double)(nx - 1)) * aq.sp[0] - aq.body_off[0];
                    double tex = 1.0;
                    int t = tissue_at(&rd, x, y, z, hit, &tex);
                    mrow[i] = t == T_LIVER;
                    double bias = 1.0 + ct.bias_amp * vnoise_at(&rd.f[F_BIAS], x) + ct.bias_grad * y / an.B;
                    row[i] = (float)(ct.tissue[t] * tex * bias);
                }
            }
            blur_inplane(img, tmp, nx, ny);
            add_rician(&r_noise, (float)ct.sigma, img, plane);
            store_slice(&aq, img, out + (size_t)k * plane * esize, plane);
        }
        set_affine(*image, &aq);
        aq.scaled = false; /* the mask is stored as is */
        set_affine(*mask, &aq);
    }
    for (int f = 0; f < F_COUNT; f++) vnoise_free(&rd.f[f]);
    free(img);
    free(tmp);
    if (st != CD_OK) {
        cd_volume_destroy(*image);
        cd_volume_destroy(*mask);
        *image = *mask = NULL;
    }
    return st;
}
