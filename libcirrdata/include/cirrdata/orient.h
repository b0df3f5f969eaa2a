/* cirrdata/orient.h — axis orientation codes and reorientation without interpolation.
 *
 * Semantics follow nibabel.orientations: io_orientation picks, for each array axis, the world axis it
 * is closest to (after removing zooms and shears by polar decomposition), and aff2axcodes names the
 * world direction each array axis points to ('R'/'L', 'A'/'P', 'S'/'I'). */
#ifndef CIRRDATA_ORIENT_H
#define CIRRDATA_ORIENT_H

#include "cirrdata/api.h"
#include "cirrdata/status.h"
#include "cirrdata/volume.h"

#ifdef __cplusplus
extern "C" {
#endif

/* For each array axis i: world_axis[i] in {0 (x, R-L), 1 (y, A-P), 2 (z, S-I)} and flip[i] in
 * {+1, -1} (+1: index increases towards R/A/S). world_axis[i] is -1 when the axis is degenerate
 * (zero column in the affine); then the orientation is undefined. */
typedef struct cd_orientation {
    int world_axis[3];
    int flip[3];
} cd_orientation;

/* nibabel.orientations.io_orientation of the 3x3 part of affine. Returns CD_ERR_ARG for a
 * non-finite affine. */
CD_API cd_status cd_orientation_from_affine(const double affine[4][4], cd_orientation *out, cd_error *err);

/* Axis codes such as "LPS" into codes[4] (NUL-terminated); '?' for a degenerate axis. */
CD_API void cd_orientation_codes(const cd_orientation *ornt, char codes[4]);

/* Convenience: the axis codes of a volume's affine. */
CD_API void cd_volume_axcodes(const cd_volume *vol, char codes[4]);

/* Reorients vol to the closest canonical orientation (RAS+) by permuting and flipping axes only, as
 * nibabel.as_closest_canonical does: voxel values are moved, never interpolated, and the affine is
 * updated exactly so every voxel keeps its world position. Spacing is permuted with the axes.
 * The caller owns *out (a new volume; vol is unchanged). Fails with CD_ERR_FORMAT when the affine has
 * a degenerate axis. */
CD_API cd_status cd_volume_reorient_canonical(const cd_volume *vol, cd_volume **out, cd_error *err);

#ifdef __cplusplus
}
#endif
#endif
