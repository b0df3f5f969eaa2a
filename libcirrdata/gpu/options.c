/* The defaults of cd_gpu_options (cirrdata/gpu.h). */
#include <string.h>

#include "cirrdata/gpu.h"

void cd_gpu_options_init(cd_gpu_options *o) { memset(o, 0, sizeof *o); }
