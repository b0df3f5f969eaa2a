/* Orientation codes and reorientation, matching nibabel.orientations exactly. */
#include <math.h>
#include <string.h>

#include "cirrdata/orient.h"
#include "core/internal.h"
#include "core/volume_impl.h"

/* One-sided Jacobi SVD of a 3x3 matrix: a = u * diag(s) * v^T. Robust for rank-deficient input,
 * which the polar decomposition below needs (nibabel uses LAPACK's SVD for the same purpose). */
static void svd3(const double a[3][3], double u[3][3], double s[3], double v[3][3]) {
    memcpy(u, a, sizeof(double[3][3]));
    memset(v, 0, sizeof(double[3][3]));
    for (int i = 0; i < 3; i++) v[i][i] = 1.0;
    for (int sweep = 0; sweep < 60; sweep++) {
        double off = 0.0;
        for (int p = 0; p < 2; p++)
            for (int q = p + 1; q < 3; q++) {
                double alpha = 0, beta = 0, gamma = 0;
                for (int k = 0; k < 3; k++) {
                    alpha += u[k][p] * u[k][p];
                    beta += u[k][q] * u[k][q];
                    gamma += u[k][p] * u[k][q];
                }
                if (gamma == 0.0 || fabs(gamma) <= 1e-300) continue;
                double rel = fabs(gamma) / sqrt(alpha * beta);
                if (!(rel > 1e-16)) continue;
                if (rel > off) off = rel;
                double zeta = (beta - alpha) / (2.0 * gamma);
                double t = (zeta >= 0 ? 1.0 : -1.0) / (fabs(zeta) + sqrt(1.0 + zeta * zeta));
                double c = 1.0 / sqrt(1.0 + t * t), sn = c * t;
                for (int k = 0; k < 3; k++) {
                    double up = u[k][p], uq = u[k][q];
                    u[k][p] = c * up - sn * uq;
                    u[k][q] = sn * up + c * uq;
                    double vp = v[k][p], vq = v[k][q];
                    v[k][p] = c * vp - sn * vq;
                    v[k][q] = sn * vp + c * vq;
                }
            }
        if (off <= 1e-16) break;
    }
    for (int j = 0; j < 3; j++) {
        double n = sqrt(u[0][j] * u[0][j] + u[1][j] * u[1][j] + u[2][j] * u[2][j]);
        s[j] = n;
        if (n > 0)
            for (int k = 0; k < 3; k++) u[k][j] /= n;
    }
}

cd_status cd_orientation_from_affine(const double affine[4][4], cd_orientation *out, cd_error *err) {
    double rs[3][3];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            if (!isfinite(affine[i][j])) return cd_fail(err, CD_ERR_ARG, "affine has non-finite entries");
            rs[i][j] = affine[i][j];
        }
    /* Remove zooms (column norms; zero columns stay zero). */
    for (int j = 0; j < 3; j++) {
        double z = sqrt(rs[0][j] * rs[0][j] + rs[1][j] * rs[1][j] + rs[2][j] * rs[2][j]);
        if (z == 0) z = 1;
        for (int i = 0; i < 3; i++) rs[i][j] /= z;
    }
    /* Polar decomposition: the closest shear-free matrix R = U_keep V_keep^T. */
    double u[3][3], s[3], v[3][3], r[3][3];
    svd3(rs, u, s, v);
    double smax = fmax(s[0], fmax(s[1], s[2]));
    double tol = smax * 3 * 2.220446049250313e-16;
    memset(r, 0, sizeof r);
    for (int k = 0; k < 3; k++) {
        if (!(s[k] > tol)) continue;
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) r[i][j] += u[i][k] * v[j][k];
    }
    /* For each input axis, the output axis that changes most; ties go to the lowest index, and a
     * chosen output axis is removed from later consideration (nibabel's iteration). */
    for (int in_ax = 0; in_ax < 3; in_ax++) {
        out->world_axis[in_ax] = -1;
        out->flip[in_ax] = 0;
        bool allzero = true;
        for (int i = 0; i < 3; i++)
            if (fabs(r[i][in_ax]) > 1e-8) allzero = false;
        if (allzero) continue;
        int best = 0;
        for (int i = 1; i < 3; i++)
            if (fabs(r[i][in_ax]) > fabs(r[best][in_ax])) best = i;
        out->world_axis[in_ax] = best;
        out->flip[in_ax] = r[best][in_ax] < 0 ? -1 : 1;
        for (int j = 0; j < 3; j++) r[best][j] = 0.0;
    }
    return CD_OK;
}

void cd_orientation_codes(const cd_orientation *ornt, char codes[4]) {
    static const char pos[3] = {'R', 'A', 'S'}, neg[3] = {'L', 'P', 'I'};
    for (int i = 0; i < 3; i++) {
        int w = ornt->world_axis[i];
        codes[i] = (w < 0 || w > 2) ? '?' : (ornt->flip[i] < 0 ? neg[w] : pos[w]);
    }
    codes[3] = '\0';
}

void cd_volume_axcodes(const cd_volume *vol, char codes[4]) {
    cd_orientation o;
    if (cd_orientation_from_affine(vol->affine, &o, NULL) == CD_OK)
        cd_orientation_codes(&o, codes);
    else
        memcpy(codes, "???", 4);
}

#define PERMUTE_LOOP(T)                                                                                                \
    do {                                                                                                               \
        const T *src = (const T *)vol->data;                                                                           \
        T *dst = (T *)res->data;                                                                                       \
        size_t idx = 0;                                                                                                \
        for (int64_t k = 0; k < n[2]; k++)                                                                             \
            for (int64_t j = 0; j < n[1]; j++) {                                                                       \
                int64_t at = base + step[2] * k + step[1] * j;                                                         \
                for (int64_t i = 0; i < n[0]; i++, at += step[0]) dst[at] = src[idx++];                                \
            }                                                                                                          \
    } while (0)

cd_status cd_volume_reorient_canonical(const cd_volume *vol, cd_volume **out, cd_error *err) {
    if (!vol || !out) return cd_fail(err, CD_ERR_ARG, "cd_volume_reorient_canonical: NULL argument");
    cd_orientation o;
    cd_status st = cd_orientation_from_affine(vol->affine, &o, err);
    if (st != CD_OK) return cd_fail(err, CD_ERR_FORMAT, "cannot reorient: the affine has non-finite entries");
    for (int i = 0; i < 3; i++)
        if (o.world_axis[i] < 0)
            return cd_fail(err, CD_ERR_FORMAT, "cannot reorient: array axis %d has no direction in the affine", i);
    const int64_t *n = vol->dims;
    int64_t new_dims[3];
    for (int i = 0; i < 3; i++) new_dims[o.world_axis[i]] = n[i];
    cd_volume *res;
    st = cd_volume_create(new_dims, vol->dtype, &res, err);
    if (st != CD_OK) return st;

    /* Output strides per output axis, then per input axis with its flip. */
    int64_t ostride[3] = {1, new_dims[0], new_dims[0] * new_dims[1]};
    int64_t step[3], base = 0;
    for (int i = 0; i < 3; i++) {
        int64_t s = ostride[o.world_axis[i]];
        step[i] = o.flip[i] * s;
        if (o.flip[i] < 0) base += s * (n[i] - 1);
    }
    switch (cd_dtype_size(vol->dtype)) {
    case 1: PERMUTE_LOOP(uint8_t); break;
    case 2: PERMUTE_LOOP(uint16_t); break;
    case 4: PERMUTE_LOOP(uint32_t); break;
    case 8: PERMUTE_LOOP(uint64_t); break;
    default: break;
    }

    /* New affine: column w_i is flip_i * A[:, i]; flipped axes move the origin to their far end. */
    double a[4][4];
    memset(a, 0, sizeof a);
    for (int r = 0; r < 3; r++) {
        double t = vol->affine[r][3];
        for (int i = 0; i < 3; i++) {
            a[r][o.world_axis[i]] = o.flip[i] * vol->affine[r][i];
            if (o.flip[i] < 0) t += vol->affine[r][i] * (double)(n[i] - 1);
        }
        a[r][3] = t;
    }
    a[3][3] = 1.0;
    memcpy(res->affine, a, sizeof a);
    for (int i = 0; i < 3; i++) res->spacing[o.world_axis[i]] = vol->spacing[i];
    res->slope = vol->slope;
    res->inter = vol->inter;
    res->scaled = vol->scaled;
    *out = res;
    return CD_OK;
}
