#include <stdbool.h>
#include <string.h>

#include "core/json_check.h"

cd_status cd_json_check_keys(json_t *obj, const char *const *allowed, const char *origin, const char *what,
                             const char *where, cd_error *err) {
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        bool ok = false;
        for (int i = 0; allowed[i]; i++) ok |= !strcmp(allowed[i], key);
        if (!ok) return cd_fail(err, CD_ERR_FORMAT, "%s: %s%s: unknown key '%s'", origin, what, where, key);
    }
    return CD_OK;
}

json_t *cd_json_vec3(const double v[3]) {
    json_t *a = json_array();
    for (int i = 0; i < 3; i++) json_array_append_new(a, json_real(v[i]));
    return a;
}

json_t *cd_json_vec3i(const int64_t v[3]) {
    json_t *a = json_array();
    for (int i = 0; i < 3; i++) json_array_append_new(a, json_integer(v[i]));
    return a;
}

json_t *cd_json_mat4(const double m[4][4]) {
    json_t *a = json_array();
    for (int i = 0; i < 4; i++) {
        json_t *row = json_array();
        for (int k = 0; k < 4; k++) json_array_append_new(row, json_real(m[i][k]));
        json_array_append_new(a, row);
    }
    return a;
}
