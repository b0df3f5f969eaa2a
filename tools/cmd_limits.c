/* cirrdata limits: the caps on untrusted input in effect (cirrdata/limits.h) and how to change them. */
#include <getopt.h>
#include <stdio.h>

#include "cli.h"

static const char limits_help[] =
    "usage: cirrdata limits [--json]\n\n"
    "Prints the caps the library applies to sizes read from files (NIfTI dims, voxels and decompressed\n"
    "bytes; JSON and CSV file sizes), each with its default and the environment variable that sets it\n"
    "(a number with an optional K, M, G or T suffix, e.g. CIRRDATA_MAX_JSON_BYTES=1G). Exit 1, naming the\n"
    "variable, when one is malformed.\n\n"
    "  --json   one JSON object on stdout: {cap: {\"value\", \"default\", \"env\"}}\n";

int cmd_limits(int argc, char **argv) {
    bool json = false;
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'j')
            json = true;
        else if (c == 'h') {
            fputs(limits_help, stdout);
            return CLI_OK;
        } else
            return cli_usage_error("limits", "unknown option '%s'", argv[optind - 1]);
    }
    if (optind < argc) return cli_usage_error("limits", "unexpected argument '%s'", argv[optind]);
    cd_limits now, def;
    cd_error err;
    if (cd_limits_get(&now, &err) != CD_OK) return cli_fail_error(&err);
    cd_limits_defaults(&def);
    const struct {
        const char *name, *env, *what;
        uint64_t value, dflt;
    } rows[] = {
        {"max_dim", "CIRRDATA_MAX_DIM", "NIfTI dim[1..7]", now.max_dim, def.max_dim},
        {"max_voxels", "CIRRDATA_MAX_VOXELS", "voxels of one NIfTI volume, resampling output", now.max_voxels,
         def.max_voxels},
        {"max_decompressed_bytes", "CIRRDATA_MAX_BYTES", "bytes of one NIfTI read, resampling output",
         now.max_decompressed_bytes, def.max_decompressed_bytes},
        {"max_json_bytes", "CIRRDATA_MAX_JSON_BYTES", "manifest, recipe, pipeline, dataset.json, model graph",
         now.max_json_bytes, def.max_json_bytes},
        {"max_csv_bytes", "CIRRDATA_MAX_CSV_BYTES", "metadata CSV files", now.max_csv_bytes, def.max_csv_bytes},
    };
    if (json) {
        json_t *o = json_object();
        for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
            json_t *e = json_object();
            json_object_set_new(e, "value", json_integer((json_int_t)rows[i].value));
            json_object_set_new(e, "default", json_integer((json_int_t)rows[i].dflt));
            json_object_set_new(e, "env", json_string(rows[i].env));
            json_object_set_new(o, rows[i].name, e);
        }
        cli_json_print(o);
        return CLI_OK;
    }
    printf("%-24s %22s %22s  %-24s %s\n", "cap", "value", "default", "environment", "applies to");
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++)
        printf("%-24s %22llu %22llu  %-24s %s\n", rows[i].name, (unsigned long long)rows[i].value,
               (unsigned long long)rows[i].dflt, rows[i].env, rows[i].what);
    return CLI_OK;
}
