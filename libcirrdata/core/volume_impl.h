/* The layout of cd_volume, shared by the library's files that build volumes (not installed). */
#ifndef CD_VOLUME_IMPL_H
#define CD_VOLUME_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cirrdata/volume.h"

struct cd_volume {
    int64_t dims[3];
    cd_dtype dtype;
    size_t count;        /* dims[0] * dims[1] * dims[2] */
    void *data;          /* first voxel, inside buffer */
    void *buffer;        /* what cd_buffer_alloc returned */
    size_t buffer_bytes; /* its size, for cd_buffer_free */
    double affine[4][4];
    double spacing[3];
    double slope, inter;
    bool scaled;
};

#endif
