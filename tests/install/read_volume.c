/* Built against an installed libcirrdata with `pkg-config --cflags --libs cirrdata` by
 * tests/install/check.sh: proves a C trainer can use the installed headers, library and .pc file.
 * Prints the shape and RAS orientation of a NIfTI file after canonical reorientation. */
#include <stdio.h>

#include <cirrdata/cirrdata.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s FILE.nii[.gz]\n", argv[0]);
        return 2;
    }
    cd_error err;
    cd_volume *vol, *ras;
    if (cd_nifti_read(argv[1], NULL, &vol, NULL, &err) != CD_OK) {
        fprintf(stderr, "%s\n", err.message);
        return 1;
    }
    if (cd_volume_reorient_canonical(vol, &ras, &err) != CD_OK) {
        fprintf(stderr, "%s\n", err.message);
        cd_volume_destroy(vol);
        return 1;
    }
    int64_t d[3];
    char codes[4];
    cd_volume_dims(ras, d);
    cd_volume_axcodes(ras, codes);
    printf("%lld %lld %lld %s %s\n", (long long)d[0], (long long)d[1], (long long)d[2], codes, cd_version());
    cd_volume_destroy(ras);
    cd_volume_destroy(vol);
    return 0;
}
