#include <stdbool.h>
#include <string.h>

#include "core/json_check.h"

cd_status cd_json_check_keys(json_t *obj, const char *const *allowed, const char *origin, const char *what, const char *where,
                             cd_error *err) {
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        bool ok = false;
        for (int i = 0; allowed[i]; i++) ok |= !strcmp(allowed[i], key);
        if (!ok) return cd_fail(err, CD_ERR_FORMAT, "%s: %s%s: unknown key '%s'", origin, what, where, key);
    }
    return CD_OK;
}
