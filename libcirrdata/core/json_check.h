/* JSON helpers shared by the library: strict validation for the parsers (recipes, augmentation
 * pipelines) and the vectors and matrices the writers store. */
#ifndef CD_CORE_JSON_CHECK_H
#define CD_CORE_JSON_CHECK_H

#include <jansson.h>

#include "core/internal.h"

/* Refuses keys of obj that are not in allowed (NULL-terminated): "<origin>: <what><where>: unknown
 * key 'k'" as CD_ERR_FORMAT. */
CD_INTERNAL cd_status cd_json_check_keys(json_t *obj, const char *const *allowed, const char *origin, const char *what,
                                         const char *where, cd_error *err);

/* New JSON arrays of 3 reals, 3 integers, and a 4x4 matrix as 4 rows of 4 reals. */
CD_INTERNAL json_t *cd_json_vec3(const double v[3]);
CD_INTERNAL json_t *cd_json_vec3i(const int64_t v[3]);
CD_INTERNAL json_t *cd_json_mat4(const double m[4][4]);

#endif
