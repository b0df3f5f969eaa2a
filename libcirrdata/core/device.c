/* The device names of cirrdata/device.h. */
#include <string.h>

#include "cirrdata/device.h"
#include "core/internal.h"

static const char *const names[] = {"cpu", "vulkan", "auto"};

cd_status cd_device_parse(const char *name, cd_device *out, cd_error *err) {
    if (!out) return cd_fail(err, CD_ERR_ARG, "cd_device_parse: NULL output");
    if (!name) name = "cpu";
    for (int i = 0; i < 3; i++)
        if (!strcmp(name, names[i])) {
            *out = (cd_device)i;
            return CD_OK;
        }
    return cd_fail(err, CD_ERR_ARG, "unknown device '%s' (cpu, vulkan or auto)", name);
}

const char *cd_device_name(cd_device device) { return (int)device >= 0 && (int)device < 3 ? names[device] : "unknown"; }
