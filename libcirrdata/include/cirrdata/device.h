/* cirrdata/device.h — where work that can use a GPU runs, and the one rule set for falling back to the
 * CPU. The loader's augmentation (cd_loader_options.device), the converter's preprocessing and
 * augmented copies (cd_convert_options.device) and inference (cd_model_options.device) take this enum
 * and follow the same policy:
 *
 *   CD_DEVICE_CPU     the C reference only; no Vulkan is touched.
 *   CD_DEVICE_VULKAN  a Vulkan device is required: creating the loader, converter or model fails
 *                     (CD_ERR_UNSUPPORTED or the driver's error), naming the reason, when no context can
 *                     be made (cirrdata/gpu.h and CIRRDATA_VK_DEVICE choose the device).
 *   CD_DEVICE_AUTO    Vulkan on a hardware GPU (discrete, integrated or virtual); the CPU on a software
 *                     device such as lavapipe (slower than the C code) or without Vulkan, the reason
 *                     kept in the device note.
 *
 * While running on Vulkan:
 *   - an item the device has no memory for or that exceeds its limits (CD_ERR_NOMEM, CD_ERR_LIMIT) runs
 *     on the CPU; the device stays in use;
 *   - a lost device (CD_ERR_IO) gets its context created again, once per context, and the item is
 *     retried; a second loss or a failed re-creation gives the device up: the CPU does the rest;
 *   - any other device error gives the device up at once.
 * The CPU reference computes the same function (kernels and references are compared in the tests), so a
 * fallback changes where, not what; each is counted and the first reason kept as a note that the
 * caller's stats report (cd_loader_device_stats, cd_convert_result.device_note, cd_model_device_name). */
#ifndef CIRRDATA_DEVICE_H
#define CIRRDATA_DEVICE_H

#include "cirrdata/api.h"

#include "cirrdata/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cd_device {
    CD_DEVICE_CPU = 0, /* the default (a zeroed options struct) */
    CD_DEVICE_VULKAN = 1,
    CD_DEVICE_AUTO = 2
} cd_device;

/* "cpu", "vulkan" or "auto" (NULL: "cpu") to *out; CD_ERR_ARG naming the text for anything else. */
CD_API cd_status cd_device_parse(const char *name, cd_device *out, cd_error *err);
/* "cpu", "vulkan", "auto"; "unknown" for a value outside the enum. */
CD_API const char *cd_device_name(cd_device device);

#ifdef __cplusplus
}
#endif
#endif
