/* nnU-Net's resampling rules for preprocessing (internal): masks resampled linearly per label with an
 * argmax, and the low-resolution axis of an anisotropic volume resampled apart (do_separate_z). */
#ifndef CD_PREPROCESS_NNUNET_RESAMPLE_H
#define CD_PREPROCESS_NNUNET_RESAMPLE_H

#include <stdbool.h>

#include "cirrdata/recipe.h"
#include "cirrdata/resample.h"
#include "core/internal.h"

/* Mask resampling with linear interpolation per label (one-hot) and argmax, as nnU-Net does (a uint8
 * mask onto grid; the caller owns *out). */
CD_INTERNAL cd_status cd_pp_mask_linear(const cd_volume *mask, const cd_grid *grid, int threads, cd_volume **out,
                                        cd_error *err);
/* nnU-Net's anisotropy rule: the axis of src to resample on its own onto grid, or -1. */
CD_INTERNAL int cd_pp_separate_axis(const cd_recipe *r, const cd_volume *src, const cd_grid *grid);
/* src onto grid with `axis` resampled apart: an image (float32 out, in-plane r->image_order, along the
 * axis r->order_z) or a mask (uint8 out, in-plane as r->mask_order, nearest along the axis). *done is
 * false (and nothing happens) when the grid's axes are not parallel to the source's. */
CD_INTERNAL cd_status cd_pp_resample_separate(const cd_recipe *r, const cd_volume *src, const cd_grid *grid, int axis,
                                              int threads, bool mask, cd_volume **out, bool *done, cd_error *err);

#endif
