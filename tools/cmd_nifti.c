/* cirrdata info / cirrdata export: NIfTI inspection and export to .npy. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char info_help[] =
    "usage: cirrdata info FILE [--json] [--max-bytes N]\n\n"
    "Prints the header of a NIfTI-1/-2 file (.nii, .nii.gz, .hdr/.img pair): shape, dtype, spacing, the\n"
    "affine nibabel would use (sform > qform > base), orientation codes, scaling, qform/sform codes.\n\n"
    "  --json          one JSON object on stdout\n"
    "  --max-bytes N   refuse headers describing volumes above N bytes (K/M/G suffixes; default 8G,\n"
    "                  or $CIRRDATA_MAX_BYTES)\n";

static const char export_help[] =
    "usage: cirrdata export FILE -o OUT.npy [--canonical] [--volume N] [--json] [--max-bytes N]\n\n"
    "Writes one 3D volume of a NIfTI file as a NumPy .npy array of shape (X, Y, Z) (NIfTI axis order).\n"
    "The dtype is float32 when the header's scaling applies (raw * scl_slope + scl_inter), else the\n"
    "stored dtype.\n\n"
    "  -o, --output OUT.npy  where to write\n"
    "  --canonical           reorient to RAS+ first (axis permutation and flips only, as\n"
    "                        nibabel.as_closest_canonical)\n"
    "  --volume N            which volume of a 4D+ file (0-based, default 0)\n"
    "  --json                describe what was written as one JSON object on stdout\n"
    "  --max-bytes N         allocation cap (K/M/G suffixes; default 8G, or $CIRRDATA_MAX_BYTES)\n";

enum { OPT_JSON = 1000, OPT_MAX_BYTES, OPT_CANONICAL, OPT_VOLUME, OPT_HELP };

static json_t *header_json(const char *path, const cd_nifti_header *h) {
    json_t *o = json_object();
    json_object_set_new(o, "path", json_string(path));
    json_object_set_new(o, "version", json_integer(h->version));
    json_object_set_new(o, "byte_order", json_string(h->big_endian ? "big" : "little"));
    json_object_set_new(o, "compressed", json_boolean(h->compressed));
    json_object_set_new(o, "pair", json_boolean(h->pair));
    json_object_set_new(o, "ndim", json_integer(h->ndim));
    json_object_set_new(o, "shape", cli_json_int64s(h->dim + 1, h->ndim));
    json_object_set_new(o, "dtype", h->dtype ? json_string(cd_dtype_name(h->dtype)) : json_null());
    json_object_set_new(o, "datatype", json_integer(h->datatype));
    json_object_set_new(o, "bitpix", json_integer(h->bitpix));
    json_object_set_new(o, "spacing", cli_json_doubles(h->pixdim + 1, h->ndim));
    json_object_set_new(o, "qfac", cli_json_real(h->pixdim[0]));
    json_object_set_new(o, "affine", cli_json_matrix4(h->affine));
    json_object_set_new(o, "orientation", json_string(h->orientation));
    json_object_set_new(o, "qform_code", json_integer(h->qform_code));
    json_object_set_new(o, "sform_code", json_integer(h->sform_code));
    json_object_set_new(o, "qform", cli_json_matrix4(h->qform));
    json_object_set_new(o, "sform", cli_json_matrix4(h->sform));
    json_object_set_new(o, "scl_slope", cli_json_real(h->scl_slope));
    json_object_set_new(o, "scl_inter", cli_json_real(h->scl_inter));
    json_object_set_new(o, "scaling", json_boolean(h->has_scaling));
    json_object_set_new(o, "vox_offset", json_integer(h->vox_offset));
    json_object_set_new(o, "nvolumes", json_integer(h->nvolumes));
    json_object_set_new(o, "xyzt_units", json_integer(h->xyzt_units));
    json_object_set_new(o, "intent_code", json_integer(h->intent_code));
    json_object_set_new(o, "descrip", json_stringn_nocheck(h->descrip, strlen(h->descrip)));
    return o;
}

static void print_matrix(const char *label, const double m[4][4]) {
    printf("%-12s", label);
    for (int i = 0; i < 4; i++)
        printf("%s[%12.6g %12.6g %12.6g %12.6g]\n", i ? "            " : "", m[i][0], m[i][1], m[i][2], m[i][3]);
}

static void print_header_text(const char *path, const cd_nifti_header *h) {
    static const char *xform_names[] = {"unknown", "scanner", "aligned", "talairach", "mni", "template"};
    printf("file        %s\n", path);
    printf("format      NIfTI-%d, %s endian%s%s\n", h->version, h->big_endian ? "big" : "little",
           h->compressed ? ", gzip" : "", h->pair ? ", .hdr/.img pair" : "");
    printf("shape       ");
    for (int i = 1; i <= h->ndim; i++) printf("%s%lld", i > 1 ? " x " : "", (long long)h->dim[i]);
    printf("\ndtype       %s (datatype %d, bitpix %d)\n", h->dtype ? cd_dtype_name(h->dtype) : "unsupported",
           h->datatype, h->bitpix);
    printf("spacing     ");
    for (int i = 1; i <= h->ndim; i++) printf("%s%g", i > 1 ? " x " : "", h->pixdim[i]);
    printf("\norientation %s\n", h->orientation);
    print_matrix("affine", h->affine);
    printf("qform_code  %d (%s)\nsform_code  %d (%s)\n", h->qform_code, xform_names[h->qform_code], h->sform_code,
           xform_names[h->sform_code]);
    if (h->has_scaling)
        printf("scaling     value = raw * %.9g + %.9g\n", h->scl_slope, h->scl_inter);
    else
        printf("scaling     none (scl_slope %g, scl_inter %g)\n", h->scl_slope, h->scl_inter);
    printf("volumes     %lld\n", (long long)h->nvolumes);
    if (h->descrip[0]) printf("descrip     %s\n", h->descrip);
}

/* Applies --max-bytes as the process-wide decompressed-size cap (cirrdata/limits.h), which every read
 * below, the header-only one of `info` included, works under. */
static bool set_max_bytes(const char *arg) {
    uint64_t v;
    if (!cd_parse_bytes(arg, &v) || v == 0) return false;
    cd_limits l = {0}; /* the other caps: environment or default */
    l.max_decompressed_bytes = v;
    return cd_limits_set(&l, NULL) == CD_OK;
}

int cmd_info(int argc, char **argv) {
    static const struct option opts[] = {{"json", no_argument, NULL, OPT_JSON},
                                         {"max-bytes", required_argument, NULL, OPT_MAX_BYTES},
                                         {"help", no_argument, NULL, OPT_HELP},
                                         {NULL, 0, NULL, 0}};
    bool json = false;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_JSON: json = true; break;
        case OPT_MAX_BYTES:
            if (!set_max_bytes(optarg)) return cli_usage_error("info", "bad --max-bytes '%s'", optarg);
            break;
        case 'h':
        case OPT_HELP: fputs(info_help, stdout); return CLI_OK;
        default: return cli_usage_error("info", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) return cli_usage_error("info", "expected exactly one FILE");
    const char *path = argv[optind];
    cd_nifti_header h;
    cd_error err;
    if (cd_nifti_read_header(path, &h, &err) != CD_OK) return cli_fail_error(&err);
    if (json)
        cli_json_print(header_json(path, &h));
    else
        print_header_text(path, &h);
    return CLI_OK;
}

int cmd_export(int argc, char **argv) {
    static const struct option opts[] = {{"output", required_argument, NULL, 'o'},
                                         {"canonical", no_argument, NULL, OPT_CANONICAL},
                                         {"volume", required_argument, NULL, OPT_VOLUME},
                                         {"json", no_argument, NULL, OPT_JSON},
                                         {"max-bytes", required_argument, NULL, OPT_MAX_BYTES},
                                         {"help", no_argument, NULL, OPT_HELP},
                                         {NULL, 0, NULL, 0}};
    bool json = false, canonical = false;
    const char *output = NULL;
    cd_nifti_read_options ropts;
    cd_nifti_read_options_init(&ropts);
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        switch (c) {
        case 'o': output = optarg; break;
        case OPT_CANONICAL: canonical = true; break;
        case OPT_VOLUME:
            if (!cli_parse_int64(optarg, &ropts.volume) || ropts.volume < 0)
                return cli_usage_error("export", "bad --volume '%s'", optarg);
            break;
        case OPT_JSON: json = true; break;
        case OPT_MAX_BYTES:
            if (!set_max_bytes(optarg)) return cli_usage_error("export", "bad --max-bytes '%s'", optarg);
            break;
        case 'h':
        case OPT_HELP: fputs(export_help, stdout); return CLI_OK;
        default: return cli_usage_error("export", "unknown option or missing value '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) return cli_usage_error("export", "expected exactly one FILE");
    if (!output) return cli_usage_error("export", "missing -o OUT.npy");
    const char *path = argv[optind];

    cd_error err;
    cd_volume *vol = NULL;
    if (cd_nifti_read(path, &ropts, &vol, NULL, &err) != CD_OK) return cli_fail_error(&err);
    if (canonical) {
        cd_volume *ras = NULL;
        if (cd_volume_reorient_canonical(vol, &ras, &err) != CD_OK) {
            cd_volume_destroy(vol);
            /* The library's message does not know the file; name it here. */
            fprintf(stderr, "cirrdata: %s: %s\n", path, err.message);
            return CLI_FAIL;
        }
        cd_volume_destroy(vol);
        vol = ras;
    }
    int rc = CLI_OK;
    if (cd_npy_write_volume(output, vol, true, &err) != CD_OK) {
        rc = cli_fail_error(&err);
    } else if (json) {
        int64_t dims[3];
        double aff[4][4], sp[3], slope, inter;
        char codes[4];
        cd_volume_dims(vol, dims);
        cd_volume_affine(vol, aff);
        cd_volume_spacing(vol, sp);
        cd_volume_scaling(vol, &slope, &inter);
        cd_volume_axcodes(vol, codes);
        bool scaled = cd_volume_has_scaling(vol);
        json_t *o = json_object();
        json_object_set_new(o, "path", json_string(path));
        json_object_set_new(o, "output", json_string(output));
        json_object_set_new(o, "shape", cli_json_int64s(dims, 3));
        json_object_set_new(o, "dtype", json_string(scaled ? "float32" : cd_dtype_name(cd_volume_dtype(vol))));
        json_object_set_new(o, "stored_dtype", json_string(cd_dtype_name(cd_volume_dtype(vol))));
        json_object_set_new(o, "affine", cli_json_matrix4(aff));
        json_object_set_new(o, "orientation", json_string(codes));
        json_object_set_new(o, "spacing", cli_json_doubles(sp, 3));
        json_object_set_new(o, "scaled", json_boolean(scaled));
        json_object_set_new(o, "slope", cli_json_real(slope));
        json_object_set_new(o, "inter", cli_json_real(inter));
        json_object_set_new(o, "volume", json_integer(ropts.volume));
        json_object_set_new(o, "canonical", json_boolean(canonical));
        cli_json_print(o);
    }
    cd_volume_destroy(vol);
    return rc;
}
