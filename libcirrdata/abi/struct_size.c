/* cd_abi_struct_size: one row per public struct with a body in include/cirrdata/ (tests/python/test_abi.py
 * fails on a struct the table lacks and checks every row against a compiler's own sizeof). */
#include <string.h>

#include "cirrdata/abi.h"
#include "cirrdata/augment.h"
#include "cirrdata/convert.h"
#include "cirrdata/gpu.h"
#include "cirrdata/limits.h"
#include "cirrdata/loader.h"
#include "cirrdata/model.h"
#include "cirrdata/nifti.h"
#include "cirrdata/nnunet.h"
#include "cirrdata/orient.h"
#include "cirrdata/preprocess.h"
#include "cirrdata/recipe.h"
#include "cirrdata/resample.h"
#include "cirrdata/rng.h"
#include "cirrdata/shard.h"
#include "cirrdata/staging.h"
#include "cirrdata/status.h"
#include "cirrdata/synth.h"

#define ROW(type)                                                                                                      \
    { #type, sizeof(type) }

static const struct {
    const char *name;
    size_t size;
} rows[] = {
    ROW(cd_error),
    ROW(cd_limits),
    ROW(cd_rng),
    ROW(cd_orientation),
    ROW(cd_grid),
    ROW(cd_resample_options),
    ROW(cd_nifti_header),
    ROW(cd_nifti_read_options),
    ROW(cd_nifti_write_options),
    ROW(cd_tensor_info),
    ROW(cd_chunk_info),
    ROW(cd_gpu_device_info),
    ROW(cd_gpu_options),
    ROW(cd_gpu_stats),
    ROW(cd_gpu_timings),
    ROW(cd_aug_params),
    ROW(cd_gpu_spatial_item),
    ROW(cd_synth_case_params),
    ROW(cd_synth_stats),
    ROW(cd_synth_options),
    ROW(cd_recipe),
    ROW(cd_sample),
    ROW(cd_convert_options),
    ROW(cd_convert_result),
    ROW(cd_nnunet_export_options),
    ROW(cd_nnunet_export_result),
    ROW(cd_nnunet_finding),
    ROW(cd_nnunet_report),
    ROW(cd_loader_options),
    ROW(cd_batch),
    ROW(cd_loader_state),
    ROW(cd_loader_device_stats),
    ROW(cd_model_options),
    ROW(cd_stage_input),
    ROW(cd_stage_result),
};

size_t cd_abi_struct_size(const char *name) {
    if (!name) return 0;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        if (strcmp(rows[i].name, name) == 0) return rows[i].size;
    return 0;
}
