/* libFuzzer target: the augmentation pipeline parser (augment/pipeline.c). A pipeline that parses is
 * serialised, re-parsed, and drawn for a tiny patch; the drawn parameters are applied to a 6^3 image
 * (spatial then intensity), so ranges the parser accepts are exercised by the code that uses them. */
#include <stdint.h>

#include "cirrdata/cirrdata.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *json = fuzz_cstring(data, size);
    cd_error err;
    cd_aug_pipeline *p = NULL;
    if (cd_aug_pipeline_parse(json, "fuzz", &p, &err) == CD_OK) {
        char *canon = cd_aug_pipeline_to_json(p);
        if (!canon) abort();
        cd_aug_pipeline *p2 = NULL;
        if (cd_aug_pipeline_parse(canon, "fuzz-canonical", &p2, &err) != CD_OK) {
            fprintf(stderr, "canonical pipeline does not parse: %s\n%s\n", err.message, canon);
            abort();
        }
        cd_aug_pipeline_destroy(p2);
        free(canon);
        (void)cd_aug_pipeline_is_2d(p);

        enum { N = 6 };
        const int64_t patch[3] = {4, 4, 4};
        const double center[3] = {2.5, 2.5, 2.5};
        static float src[N * N * N], img[4 * 4 * 4];
        static uint8_t msrc[N * N * N], mask[4 * 4 * 4];
        for (int i = 0; i < N * N * N; i++) {
            src[i] = (float)(i % 7) - 3.0f;
            msrc[i] = (uint8_t)(i % 3);
        }
        for (uint64_t sample = 0; sample < 2; sample++) {
            cd_aug_params a;
            cd_aug_draw(p, 1234, 1, sample, patch, center, &a);
            char *pj = cd_aug_params_to_json(&a);
            free(pj);
            int64_t lo[3], hi[3];
            cd_aug_source_box(&a, patch, lo, hi);
            const int64_t box_lo[3] = {0, 0, 0}, box_shape[3] = {N, N, N};
            if (cd_aug_apply_spatial(&a, src, msrc, 1, box_lo, box_shape, patch, img, mask, &err) == CD_OK)
                cd_aug_apply_intensity(&a, img, 1, patch, &err);
        }
        cd_aug_pipeline_destroy(p);
    }
    free(json);
    return 0;
}
