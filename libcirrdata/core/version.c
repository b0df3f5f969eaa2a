#include "cirrdata/version.h"

const char *cd_version(void) { return CD_VERSION_STRING; }
