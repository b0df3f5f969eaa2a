/* cirrdata resample: world-space resampling of a NIfTI volume onto a new grid. */
#include <errno.h>
#include <getopt.h>
#include <math.h> /* isfinite only: the tool does not link libm */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char resample_help[] =
    "usage: cirrdata resample IN -o OUT.nii[.gz] (--spacing SX,SY,SZ | --shape NX,NY,NZ | --like REF)\n"
    "                         [--order 0|1|3] [--threads N] [--dtype NAME] [--volume N] [--json]\n\n"
    "Resamples one 3D volume of a NIfTI file in world space (scipy.ndimage.map_coordinates semantics,\n"
    "mode 'constant': voxels outside IN become 0) and writes it with sform = qform = the new grid.\n\n"
    "  -o, --output OUT      where to write (.nii or .nii.gz)\n"
    "  --spacing SX,SY,SZ    new voxel size in mm per array axis (one value: all axes); same field of\n"
    "                        view, directions and centre; shape = round(n * old / new)\n"
    "  --shape NX,NY,NZ      new shape covering the same field of view edge to edge, same centre\n"
    "  --like REF            REF's grid (shape and affine), as nibabel.processing.resample_from_to\n"
    "  --order 0|1|3         nearest, trilinear (default) or cubic B-spline\n"
    "  --threads N           worker threads (default 0 = all online CPUs)\n"
    "  --dtype NAME          output dtype (uint8 ... float64); default float32 for orders 1 and 3, the\n"
    "                        stored dtype (and scaling) of IN for order 0; integers are rounded and\n"
    "                        clamped\n"
    "  --volume N            which volume of a 4D+ file (0-based, default 0)\n"
    "  --json                describe what was written as one JSON object on stdout\n";

enum { OPT_SPACING = 1000, OPT_SHAPE, OPT_LIKE, OPT_ORDER, OPT_THREADS, OPT_DTYPE, OPT_VOLUME, OPT_JSON, OPT_HELP };

/* "a,b,c" or a single "a" (repeated); false on anything else. */
static bool parse_triple(const char *s, double out[3]) {
    int n = 0;
    const char *p = s;
    for (;;) {
        if (n == 3) return false;
        char *end;
        errno = 0;
        out[n++] = strtod(p, &end);
        if (errno || end == p) return false;
        if (*end == '\0') break;
        if (*end != ',') return false;
        p = end + 1;
    }
    if (n == 1) out[1] = out[2] = out[0];
    return n == 1 || n == 3;
}

int cmd_resample(int argc, char **argv) {
    static const struct option opts[] = {{"output", required_argument, NULL, 'o'},
                                         {"spacing", required_argument, NULL, OPT_SPACING},
                                         {"shape", required_argument, NULL, OPT_SHAPE},
                                         {"like", required_argument, NULL, OPT_LIKE},
                                         {"order", required_argument, NULL, OPT_ORDER},
                                         {"threads", required_argument, NULL, OPT_THREADS},
                                         {"dtype", required_argument, NULL, OPT_DTYPE},
                                         {"volume", required_argument, NULL, OPT_VOLUME},
                                         {"json", no_argument, NULL, OPT_JSON},
                                         {"help", no_argument, NULL, OPT_HELP},
                                         {NULL, 0, NULL, 0}};
    const char *output = NULL, *like = NULL;
    double spacing[3], shape_d[3];
    bool have_spacing = false, have_shape = false, json = false;
    int64_t order = 1, threads = 0;
    cd_resample_options ro;
    cd_resample_options_init(&ro);
    cd_nifti_read_options rdo;
    cd_nifti_read_options_init(&rdo);
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        switch (c) {
        case 'o': output = optarg; break;
        case OPT_SPACING:
            if (!parse_triple(optarg, spacing)) return cli_usage_error("resample", "bad --spacing '%s'", optarg);
            for (int i = 0; i < 3; i++)
                if (!(spacing[i] > 0) || !isfinite(spacing[i]))
                    return cli_usage_error("resample", "--spacing values must be finite and > 0, got '%s'", optarg);
            have_spacing = true;
            break;
        case OPT_SHAPE:
            if (!parse_triple(optarg, shape_d)) return cli_usage_error("resample", "bad --shape '%s'", optarg);
            for (int i = 0; i < 3; i++)
                if (!(shape_d[i] >= 1 && shape_d[i] <= (double)(1 << 24)) || shape_d[i] != (double)(int64_t)shape_d[i])
                    return cli_usage_error("resample", "--shape values must be integers >= 1, got '%s'", optarg);
            have_shape = true;
            break;
        case OPT_LIKE: like = optarg; break;
        case OPT_ORDER:
            if (!cli_parse_int64(optarg, &order) || (order != 0 && order != 1 && order != 3))
                return cli_usage_error("resample", "bad --order '%s' (0, 1 or 3)", optarg);
            break;
        case OPT_THREADS:
            if (!cli_parse_int64(optarg, &threads) || threads < 0 || threads > 4096)
                return cli_usage_error("resample", "bad --threads '%s'", optarg);
            break;
        case OPT_DTYPE:
            ro.out_dtype = cd_dtype_from_name(optarg);
            if (ro.out_dtype == CD_DTYPE_INVALID) return cli_usage_error("resample", "unknown --dtype '%s'", optarg);
            break;
        case OPT_VOLUME:
            if (!cli_parse_int64(optarg, &rdo.volume) || rdo.volume < 0)
                return cli_usage_error("resample", "bad --volume '%s'", optarg);
            break;
        case OPT_JSON: json = true; break;
        case 'h':
        case OPT_HELP: fputs(resample_help, stdout); return CLI_OK;
        default: return cli_usage_error("resample", "unknown option or missing value '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) return cli_usage_error("resample", "expected exactly one input FILE");
    if (!output) return cli_usage_error("resample", "missing -o OUT.nii[.gz]");
    if (have_spacing + have_shape + (like != NULL) != 1)
        return cli_usage_error("resample", "give exactly one of --spacing, --shape and --like");
    const char *path = argv[optind];
    ro.interp = (cd_interp)order;
    ro.threads = (int)threads;

    cd_error err;
    cd_volume *vol = NULL, *res = NULL;
    if (cd_nifti_read(path, &rdo, &vol, NULL, &err) != CD_OK) return cli_fail_error(&err);
    cd_grid grid;
    cd_status st = CD_OK;
    if (like) {
        cd_nifti_header rh;
        if (cd_nifti_read_header(like, &rh, &err) != CD_OK) {
            cd_volume_destroy(vol);
            return cli_fail_error(&err); /* the message names REF */
        }
        for (int i = 0; i < 3; i++) grid.dims[i] = rh.dim[i + 1];
        memcpy(grid.affine, rh.affine, sizeof grid.affine);
    } else if (have_spacing) {
        st = cd_grid_for_spacing(vol, spacing, &grid, &err);
    } else {
        int64_t shape[3] = {(int64_t)shape_d[0], (int64_t)shape_d[1], (int64_t)shape_d[2]};
        st = cd_grid_for_shape(vol, shape, &grid, &err);
    }
    if (st == CD_OK) st = cd_resample(vol, &grid, &ro, &res, &err);
    cd_volume_destroy(vol);
    if (st != CD_OK) {
        /* Grid and resampling messages do not know the file; name it here. */
        fprintf(stderr, "cirrdata: %s: %s\n", path, err.message);
        return CLI_FAIL;
    }
    int rc = CLI_OK;
    if (cd_nifti_write(output, res, NULL, &err) != CD_OK) {
        rc = cli_fail_error(&err);
    } else if (json) {
        double sp[3];
        cd_volume_spacing(res, sp);
        json_t *o = json_object();
        json_object_set_new(o, "path", json_string(path));
        json_object_set_new(o, "output", json_string(output));
        json_object_set_new(o, "shape", cli_json_int64s(grid.dims, 3));
        json_object_set_new(o, "affine", cli_json_matrix4(grid.affine));
        json_object_set_new(o, "spacing", cli_json_doubles(sp, 3));
        json_object_set_new(o, "order", json_integer(order));
        json_object_set_new(o, "dtype", json_string(cd_dtype_name(cd_volume_dtype(res))));
        cli_json_print(o);
    }
    cd_volume_destroy(res);
    return rc;
}
