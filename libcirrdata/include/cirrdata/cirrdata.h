/* cirrdata/cirrdata.h — umbrella header of libcirrdata. */
#ifndef CIRRDATA_CIRRDATA_H
#define CIRRDATA_CIRRDATA_H

#include "cirrdata/version.h"
#include "cirrdata/status.h"
#include "cirrdata/limits.h"
#include "cirrdata/dtype.h"
#include "cirrdata/volume.h"
#include "cirrdata/orient.h"
#include "cirrdata/nifti.h"
#include "cirrdata/npy.h"
#include "cirrdata/folder.h"
#include "cirrdata/device.h"
#include "cirrdata/progress.h"
#include "cirrdata/rng.h"
#include "cirrdata/resample.h"
#include "cirrdata/synth.h"
#include "cirrdata/shard.h"
#include "cirrdata/recipe.h"
#include "cirrdata/preprocess.h"
#include "cirrdata/dataset.h"
#include "cirrdata/convert.h"
#include "cirrdata/nnunet.h"
#include "cirrdata/augment.h"
#include "cirrdata/loader.h"
#include "cirrdata/gpu.h"
#include "cirrdata/model.h"
#include "cirrdata/staging.h"
#include "cirrdata/abi.h"

#endif
