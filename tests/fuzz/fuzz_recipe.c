/* libFuzzer target: the preprocessing recipe parser (convert/recipe.c). A recipe that parses must
 * serialise, and its canonical JSON must parse again to the same canonical JSON. */
#include <stdint.h>

#include "cirrdata/cirrdata.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *json = fuzz_cstring(data, size);
    cd_error err;
    cd_recipe r;
    if (cd_recipe_parse(json, "fuzz", &r, &err) == CD_OK) {
        char *canon = cd_recipe_to_json(&r);
        if (!canon) abort();
        cd_recipe r2;
        if (cd_recipe_parse(canon, "fuzz-canonical", &r2, &err) != CD_OK) {
            fprintf(stderr, "canonical recipe does not parse: %s\n%s\n", err.message, canon);
            abort();
        }
        char *canon2 = cd_recipe_to_json(&r2);
        if (!canon2 || strcmp(canon, canon2) != 0) {
            fprintf(stderr, "recipe round trip differs:\n%s\n%s\n", canon, canon2 ? canon2 : "(null)");
            abort();
        }
        free(canon2);
        free(canon);
    }
    free(json);
    return 0;
}
