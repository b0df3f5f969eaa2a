/* Strict validation helpers shared by the JSON parsers (recipes, augmentation pipelines). */
#ifndef CD_CORE_JSON_CHECK_H
#define CD_CORE_JSON_CHECK_H

#include <jansson.h>

#include "core/internal.h"

/* Refuses keys of obj that are not in allowed (NULL-terminated): "<origin>: <what><where>: unknown
 * key 'k'" as CD_ERR_FORMAT. */
CD_INTERNAL cd_status cd_json_check_keys(json_t *obj, const char *const *allowed, const char *origin, const char *what,
                                         const char *where, cd_error *err);

#endif
