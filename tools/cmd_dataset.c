/* cirrdata convert / verify / inspect / merge: building and checking converted datasets. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_part.h"
#include "cli_progress.h"

static const char convert_help[] =
    "usage: cirrdata convert --layout cirrmri600|nnunet ROOT --out DIR [options]\n\n"
    "Converts a dataset into sharded, chunked, checksummed records (schemas/shard-format.md) plus\n"
    "DIR/manifest.json. Restartable: if killed, run the same command again to resume; the result is\n"
    "byte-identical to an uninterrupted run.\n\n"
    "  --layout NAME        cirrmri600 (the published CirrMRI600+ tree) or nnunet (nnU-Net raw / MSD:\n"
    "                       every channel of dataset.json in one record, imagesTs cases as 'test')\n"
    "  --out DIR            output dataset directory\n"
    "  --recipe NAME|FILE   raw (default), nnunet-3d, synergynet-3d, cirrhosisstage-2d, or a JSON recipe\n"
    "  --threads N          worker threads (default: all CPUs)\n"
    "  --shard-size SIZE    target shard size (default 256M; K/M/G suffixes)\n"
    "  --part I/N           convert only part I of N (then 'cirrdata merge'): contiguous ranges of the\n"
    "                       sorted cases, balanced by input bytes\n"
    "  --part auto          in a Slurm array job: I/N from SLURM_ARRAY_TASK_ID, _MIN and _COUNT\n"
    "                       (tools/slurm/convert.sbatch)\n"
    "  --healthy            cirrmri600: include Healthy_subjects as class 3 'healthy'\n"
    "  --pair-t1t2          cirrmri600: one 2-channel record (T1, T2 resampled onto T1's grid in world\n"
    "                       space) per patient with both sequences\n"
    "  --fold K             nnunet: fold K's validation cases get split 'valid', the other training\n"
    "                       cases 'train' (imagesTs cases are always 'test'); the folds come from\n"
    "                       --splits, else ROOT/splits_final.json, else nnU-Net v2's default 5-fold\n"
    "                       split (K in 0..4)\n"
    "  --splits FILE        nnunet: an nnU-Net splits_final.json (needs --fold)\n"
    "  --strict             a bad case stops the conversion (default: skip it and report it)\n"
    "  --non-finite P       error (default): skip a case whose image or mask has NaN or infinite\n"
    "                       voxels, naming their count; zero: set them to 0 (the recipe's non_finite)\n"
    "  --max-bytes SIZE     NIfTI allocation cap (default 8G)\n"
    "  --quiet              no progress on stderr (a bar on a terminal, else a line every 10 s or 5 %)\n"
    "  --json               print the summary as JSON (and no progress)\n\n"
    "Augmented copies (for trainers that cannot run the loader; schemas/shard-format.md):\n"
    "  --augment A          nnunet, cirrhosisstage or a pipeline JSON file: each case is followed by\n"
    "                       K augmented records; copy k of case i equals the loader's sample for\n"
    "                       (--seed, epoch k, record i of the plain conversion) in --mode with batch 1\n"
    "  --copies K           augmented records per case, 1..1024 (default 1)\n"
    "  --seed S             the loader seed the copies are drawn with (default 0)\n"
    "  --mode MODE          volume (default; with --patch a centred crop/pad), patch or slice\n"
    "  --patch X,Y,Z        volume: fixed output size; patch: the patch size (required)\n"
    "  --foreground-fraction F  patch mode: >= 0.5 centres every copy on the mask (default 0.33:\n"
    "                       never, as a batch-size-1 loader)\n"
    "  --no-original        write only the K copies\n"
    "  --device D           cpu (default), vulkan or auto: what runs the recipe's resampling and\n"
    "                       normalisation and the copies' spatial warp. vulkan requires a device; auto\n"
    "                       uses a hardware GPU, else the CPU; what the device cannot do runs on the CPU,\n"
    "                       with the reason (cirrdata/device.h). The data agree within float32\n"
    "                       rounding, masks exactly\n";

static const char verify_help[] =
    "usage: cirrdata verify DIR [--quiet]\n\n"
    "Checks the manifest's own checksum (manifest_xxh3), every shard's size and XXH3-128 against the\n"
    "manifest, and every record and chunk checksum.\n"
    "Exit 1 naming the damaged file (and record, tensor, chunk) when anything is wrong.\n"
    "  --quiet   no progress on stderr and no summary\n";

static const char inspect_help[] =
    "usage: cirrdata inspect DIR [--json]\n\n"
    "Prints what a converted dataset holds: counts per split, sequence and label; dataset statistics;\n"
    "the recipe; the shards.\n";

static const char merge_help[] =
    "usage: cirrdata merge OUT PART_DIR... [--quiet]\n\n"
    "Joins the outputs of 'cirrdata convert --part I/N' (all N parts, any order) into one dataset OUT,\n"
    "byte-identical to a one-machine conversion. Refused, naming the part: a missing or duplicated\n"
    "part, parts of another source, options or N, parts that do not cover every case exactly once.\n"
    "  --quiet   no progress on stderr (a bar on a terminal, else a line every 10 s)\n";

enum {
    O_LAYOUT = 1000,
    O_OUT,
    O_RECIPE,
    O_THREADS,
    O_SHARD,
    O_PART,
    O_HEALTHY,
    O_PAIR,
    O_STRICT,
    O_MAXB,
    O_QUIET,
    O_JSON,
    O_HELP,
    O_AUGMENT,
    O_COPIES,
    O_SEED,
    O_MODE,
    O_PATCH,
    O_FGF,
    O_NOORIG,
    O_DEVICE,
    O_NONFINITE,
    O_FOLD,
    O_SPLITS
};

static bool parse_xyz(const char *s, int64_t out[3]) {
    char tail;
    long long a, b, c;
    if (sscanf(s, "%lld,%lld,%lld%c", &a, &b, &c, &tail) != 3) return false;
    out[0] = a;
    out[1] = b;
    out[2] = c;
    return a >= 1 && b >= 1 && c >= 1 && a <= 4096 && b <= 4096 && c <= 4096;
}

static void on_progress(void *user, uint64_t done, uint64_t total, uint64_t bytes) {
    cli_progress *p = user;
    cli_progress_set_total(p, total);
    cli_progress_update(p, done, bytes);
}

/* What `convert` was asked for: the library's options and the CLI's own. */
typedef struct convert_args {
    cd_convert_options co;
    const char *aug_only; /* an augmentation option given (needs --augment) */
    const char *recipe;
    int non_finite; /* --non-finite: overrides the recipe's; -1: not given */
    bool quiet, json;
} convert_args;

/* The augmentation options (given only with --augment); CLI_OK or a usage error. */
static int parse_augment_option(int c, convert_args *a) {
    cd_convert_options *co = &a->co;
    int64_t v;
    switch (c) {
    case O_COPIES:
        if (!cli_parse_int64(optarg, &v) || v < 1 || v > 1024)
            return cli_usage_error("convert", "bad --copies '%s' (1..1024)", optarg);
        co->copies = (uint32_t)v;
        a->aug_only = "--copies";
        break;
    case O_SEED:
        if (!cli_parse_int64(optarg, &v) || v < 0) return cli_usage_error("convert", "bad --seed '%s'", optarg);
        co->seed = (uint64_t)v;
        a->aug_only = "--seed";
        break;
    case O_MODE:
        if (!strcmp(optarg, "volume"))
            co->aug_mode = CD_LOADER_VOLUME;
        else if (!strcmp(optarg, "patch"))
            co->aug_mode = CD_LOADER_PATCH;
        else if (!strcmp(optarg, "slice"))
            co->aug_mode = CD_LOADER_SLICE;
        else
            return cli_usage_error("convert", "bad --mode '%s' (volume, patch or slice)", optarg);
        a->aug_only = "--mode";
        break;
    case O_PATCH:
        if (!parse_xyz(optarg, co->aug_patch))
            return cli_usage_error("convert", "bad --patch '%s' (X,Y,Z, each 1..4096)", optarg);
        a->aug_only = "--patch";
        break;
    case O_FGF: {
        char *end;
        co->foreground_fraction = strtod(optarg, &end);
        if (*end || end == optarg || !(co->foreground_fraction >= 0 && co->foreground_fraction <= 1))
            return cli_usage_error("convert", "bad --foreground-fraction '%s' (0..1)", optarg);
        a->aug_only = "--foreground-fraction";
        break;
    }
    case O_NOORIG:
        co->no_original = true;
        a->aug_only = "--no-original";
        break;
    }
    return CLI_OK;
}

/* One option (getopt's c and optarg); CLI_OK or a usage error. */
static int parse_convert_option(int c, char **argv, convert_args *a) {
    cd_convert_options *co = &a->co;
    int64_t v;
    switch (c) {
    case O_LAYOUT: co->layout = optarg; break;
    case 'o':
    case O_OUT: co->out_dir = optarg; break;
    case O_RECIPE: a->recipe = optarg; break;
    case O_THREADS:
        if (!cli_parse_int64(optarg, &v) || v < 1 || v > 1024)
            return cli_usage_error("convert", "bad --threads '%s'", optarg);
        co->threads = (int)v;
        break;
    case O_SHARD:
        if (!cd_parse_bytes(optarg, &co->shard_size) || co->shard_size < 4096)
            return cli_usage_error("convert", "bad --shard-size '%s'", optarg);
        break;
    case O_PART: return cli_parse_part(optarg, &co->part_index, &co->part_count);
    case O_HEALTHY: co->healthy = true; break;
    case O_PAIR: co->pair_sequences = true; break;
    case O_STRICT: co->strict = true; break;
    case O_MAXB:
        if (!cd_parse_bytes(optarg, &co->max_bytes)) return cli_usage_error("convert", "bad --max-bytes '%s'", optarg);
        break;
    case O_QUIET: a->quiet = true; break;
    case O_JSON: a->json = true; break;
    case O_AUGMENT: co->augment = optarg; break;
    case O_COPIES:
    case O_SEED:
    case O_MODE:
    case O_PATCH:
    case O_FGF:
    case O_NOORIG: return parse_augment_option(c, a);
    case O_DEVICE:
        if (cd_device_parse(optarg, &co->device, NULL) != CD_OK)
            return cli_usage_error("convert", "bad --device '%s' (cpu, vulkan or auto)", optarg);
        break;
    case O_FOLD:
        if (!cli_parse_int64(optarg, &v) || v < 0 || v > 1000000)
            return cli_usage_error("convert", "bad --fold '%s' (0, 1, ...)", optarg);
        co->fold = (int)v;
        break;
    case O_SPLITS: co->splits_file = optarg; break;
    case O_NONFINITE:
        if (strcmp(optarg, "error") && strcmp(optarg, "zero"))
            return cli_usage_error("convert", "bad --non-finite '%s' (error or zero)", optarg);
        a->non_finite = strcmp(optarg, "zero") ? CD_NON_FINITE_ERROR : CD_NON_FINITE_ZERO;
        break;
    default: return cli_usage_error("convert", "unknown option or missing value '%s'", argv[optind - 1]);
    }
    return CLI_OK;
}

/* What the options need of each other, once all are read. */
static int check_convert_args(int argc, char **argv, convert_args *a) {
    cd_convert_options *co = &a->co;
    if (optind != argc - 1) return cli_usage_error("convert", "expected exactly one ROOT");
    if (!co->layout) return cli_usage_error("convert", "missing --layout (cirrmri600 or nnunet)");
    if (!co->out_dir) return cli_usage_error("convert", "missing --out DIR");
    if (co->augment && !strcmp(co->augment, "none")) co->augment = NULL;
    if (a->aug_only && !co->augment) return cli_usage_error("convert", "%s needs --augment", a->aug_only);
    if (co->augment && !co->copies) co->copies = 1;
    if (co->aug_mode == CD_LOADER_PATCH && !co->aug_patch[0])
        return cli_usage_error("convert", "--mode patch needs --patch X,Y,Z");
    if (co->aug_mode == CD_LOADER_SLICE && co->aug_patch[0])
        return cli_usage_error("convert", "--mode slice takes no --patch");
    co->root = argv[optind];
    return CLI_OK;
}

static void print_convert_json(const cd_convert_options *co, const cd_convert_result *res) {
    json_t *o = json_object();
    json_object_set_new(o, "out", json_string(co->out_dir));
    json_object_set_new(o, "recipe", json_string(co->recipe.name));
    json_object_set_new(o, "records", json_integer((json_int_t)res->records));
    json_object_set_new(o, "skipped", json_integer((json_int_t)res->skipped));
    json_object_set_new(o, "shards", json_integer((json_int_t)res->shards));
    json_object_set_new(o, "resumed_records", json_integer((json_int_t)res->resumed_records));
    json_object_set_new(o, "bytes_read", json_integer((json_int_t)res->bytes_read));
    json_object_set_new(o, "bytes_written", json_integer((json_int_t)res->bytes_written));
    json_object_set_new(o, "seconds", json_real(res->seconds));
    json_object_set_new(o, "cases_per_second",
                        json_real(res->seconds > 0 ? (double)(res->records + res->skipped) / res->seconds : 0));
    if (co->augment) json_object_set_new(o, "augment_seconds", json_real(res->augment_seconds));
    json_object_set_new(o, "device", json_string(res->device));
    if (res->device_note[0]) json_object_set_new(o, "device_note", json_string(res->device_note));
    if (res->note[0]) json_object_set_new(o, "note", json_string(res->note));
    cli_json_print(o);
}

static void print_convert_text(const cd_convert_options *co, const cd_convert_result *res) {
    double mb = (double)res->bytes_read / 1e6;
    printf("converted %llu records (%llu skipped%s) into %llu shard%s in %s\n", (unsigned long long)res->records,
           (unsigned long long)res->skipped, res->skipped ? ", listed in the manifest" : "",
           (unsigned long long)res->shards, res->shards == 1 ? "" : "s", co->out_dir);
    if (res->resumed_records)
        printf("resumed: %llu records were already done\n", (unsigned long long)res->resumed_records);
    printf("read %.1f MB in %.2f s (%.1f MB/s), recipe %s\n", mb, res->seconds,
           res->seconds > 0 ? mb / res->seconds : 0.0, co->recipe.name);
    if (co->augment)
        printf("augmented copies: %u per case, warp on %s (%.2f CPU s of augmentation), seed %llu\n", co->copies,
               res->device, res->augment_seconds, (unsigned long long)co->seed);
}

int cmd_convert(int argc, char **argv) {
    static const struct option opts[] = {{"layout", required_argument, NULL, O_LAYOUT},
                                         {"out", required_argument, NULL, O_OUT},
                                         {"recipe", required_argument, NULL, O_RECIPE},
                                         {"threads", required_argument, NULL, O_THREADS},
                                         {"shard-size", required_argument, NULL, O_SHARD},
                                         {"part", required_argument, NULL, O_PART},
                                         {"healthy", no_argument, NULL, O_HEALTHY},
                                         {"strict", no_argument, NULL, O_STRICT},
                                         {"pair-t1t2", no_argument, NULL, O_PAIR},
                                         {"max-bytes", required_argument, NULL, O_MAXB},
                                         {"quiet", no_argument, NULL, O_QUIET},
                                         {"json", no_argument, NULL, O_JSON},
                                         {"help", no_argument, NULL, O_HELP},
                                         {"augment", required_argument, NULL, O_AUGMENT},
                                         {"copies", required_argument, NULL, O_COPIES},
                                         {"seed", required_argument, NULL, O_SEED},
                                         {"mode", required_argument, NULL, O_MODE},
                                         {"patch", required_argument, NULL, O_PATCH},
                                         {"foreground-fraction", required_argument, NULL, O_FGF},
                                         {"no-original", no_argument, NULL, O_NOORIG},
                                         {"device", required_argument, NULL, O_DEVICE},
                                         {"non-finite", required_argument, NULL, O_NONFINITE},
                                         {"fold", required_argument, NULL, O_FOLD},
                                         {"splits", required_argument, NULL, O_SPLITS},
                                         {NULL, 0, NULL, 0}};
    convert_args a = {.recipe = "raw", .non_finite = -1};
    cd_convert_options *co = &a.co;
    cd_convert_options_init(co);
    co->foreground_fraction = 0.33; /* the loader's default */
    co->layout = NULL;
    int c, rc;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        if (c == 'h' || c == O_HELP) {
            fputs(convert_help, stdout);
            return CLI_OK;
        }
        if ((rc = parse_convert_option(c, argv, &a)) != CLI_OK) return rc;
    }
    if ((rc = check_convert_args(argc, argv, &a)) != CLI_OK) return rc;
    cd_error err;
    if (cd_recipe_load(a.recipe, &co->recipe, &err) != CD_OK) return cli_fail_error(&err);
    if (a.non_finite >= 0) co->recipe.non_finite = (cd_non_finite)a.non_finite; /* stored with the recipe */
    cli_progress *bar = cli_progress_start("convert", "cases", 0, a.quiet || a.json);
    co->progress = on_progress;
    co->progress_user = bar;
    cd_convert_result res;
    cd_status st = cd_convert(co, &res, &err);
    cli_progress_finish(bar);
    if (st != CD_OK) return cli_fail_error(&err);
    if (a.json)
        print_convert_json(co, &res);
    else
        print_convert_text(co, &res);
    if (res.device_note[0]) fprintf(stderr, "cirrdata convert: note: %s\n", res.device_note);
    if (res.note[0]) fprintf(stderr, "cirrdata convert: note: %s\n", res.note);
    return CLI_OK;
}

int cmd_verify(int argc, char **argv) {
    static const struct option opts[] = {
        {"quiet", no_argument, NULL, O_QUIET}, {"help", no_argument, NULL, O_HELP}, {NULL, 0, NULL, 0}};
    bool quiet = false;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_QUIET: quiet = true; break;
        case 'h':
        case O_HELP: fputs(verify_help, stdout); return CLI_OK;
        default: return cli_usage_error("verify", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) return cli_usage_error("verify", "expected exactly one DIR");
    cli_progress *bar = cli_progress_start("verify", "shards", 0, quiet);
    cd_error err;
    cd_status st = cd_dataset_verify(argv[optind], on_progress, bar, &err);
    cli_progress_finish(bar);
    if (st != CD_OK) return cli_fail_error(&err);
    cd_dataset *ds;
    if (cd_dataset_open(argv[optind], &ds, &err) != CD_OK) return cli_fail_error(&err);
    if (!quiet)
        printf("%s: OK (%llu records, every checksum verified)\n", argv[optind],
               (unsigned long long)cd_dataset_record_count(ds));
    cd_dataset_close(ds);
    return CLI_OK;
}

static void print_counts(const char *title, json_t *obj) {
    printf("  %-12s", title);
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) printf(" %s=%lld", k, (long long)json_integer_value(v));
    printf("\n");
}

int cmd_inspect(int argc, char **argv) {
    static const struct option opts[] = {
        {"json", no_argument, NULL, O_JSON}, {"help", no_argument, NULL, O_HELP}, {NULL, 0, NULL, 0}};
    bool json = false;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_JSON: json = true; break;
        case 'h':
        case O_HELP: fputs(inspect_help, stdout); return CLI_OK;
        default: return cli_usage_error("inspect", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) return cli_usage_error("inspect", "expected exactly one DIR");
    cd_dataset *ds;
    cd_error err;
    if (cd_dataset_open(argv[optind], &ds, &err) != CD_OK) return cli_fail_error(&err);
    json_t *m = json_loads(cd_dataset_manifest(ds), 0, NULL);
    cd_dataset_close(ds);
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "path", json_string(argv[optind]));
        static const char *const keys[] = {"created_by", "recipe", "resolved",   "augmentation", "source", "part",
                                           "classes",    "counts", "statistics", "tensors",      "shards"};
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
            if (json_object_get(m, keys[i])) json_object_set(o, keys[i], json_object_get(m, keys[i]));
        json_object_del(json_object_get(o, "source"), "fingerprint");
        json_object_del(json_object_get(o, "source"), "options");
        json_object_del(json_object_get(o, "source"), "inputs");
        cli_json_print(o);
        json_decref(m);
        return CLI_OK;
    }
    json_t *counts = json_object_get(m, "counts");
    printf("dataset     %s\n", argv[optind]);
    printf("created by  %s, recipe %s\n", json_string_value(json_object_get(m, "created_by")),
           json_string_value(json_object_get(json_object_get(m, "recipe"), "name")));
    printf("records     %lld in %zu shard(s)\n", (long long)json_integer_value(json_object_get(counts, "records")),
           json_array_size(json_object_get(m, "shards")));
    print_counts("by split", json_object_get(counts, "by_split"));
    print_counts("by sequence", json_object_get(counts, "by_sequence"));
    json_t *classes = json_object_get(m, "classes");
    printf("  %-12s", "by label");
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(counts, "by_label"), k, v) {
        long idx = strtol(k, NULL, 10);
        const char *name = idx >= 0 ? json_string_value(json_array_get(classes, (size_t)idx)) : NULL;
        printf(" %s%s%s%s=%lld", k, name ? "(" : "", name ? name : "", name ? ")" : "",
               (long long)json_integer_value(v));
    }
    printf("\n");
    json_t *skipped = json_object_get(json_object_get(m, "source"), "skipped");
    if (json_array_size(skipped))
        printf("skipped     %zu case(s), see manifest.json source.skipped\n", json_array_size(skipped));
    json_t *aug = json_object_get(m, "augmentation");
    if (aug) {
        json_t *pt = json_object_get(aug, "patch");
        char patch[80] = "as stored";
        if (json_is_array(pt))
            snprintf(patch, sizeof patch, "%lld x %lld x %lld", (long long)json_integer_value(json_array_get(pt, 0)),
                     (long long)json_integer_value(json_array_get(pt, 1)),
                     (long long)json_integer_value(json_array_get(pt, 2)));
        long long ncopies = (long long)json_integer_value(json_object_get(aug, "copies"));
        const char *pname = json_string_value(json_object_get(json_object_get(aug, "pipeline"), "name"));
        const char *mode = json_string_value(json_object_get(aug, "mode")),
                   *dev = json_string_value(json_object_get(aug, "device"));
        printf("augmented   %lld cop%s per case, pipeline %s, seed %lld, mode %s, patch %s, %s, warp on %s\n", ncopies,
               ncopies == 1 ? "y" : "ies", pname ? pname : "?",
               (long long)json_integer_value(json_object_get(aug, "seed")), mode ? mode : "?", patch,
               json_is_true(json_object_get(aug, "no_original")) ? "no originals" : "originals kept", dev ? dev : "?");
        char *pj = json_dumps(json_object_get(aug, "pipeline"), JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (pj) printf("  pipeline    %s\n", pj);
        free(pj);
    }
    json_t *res = json_object_get(json_object_get(m, "resolved"), "target_spacing");
    if (res)
        printf("target      spacing %.4g x %.4g x %.4g mm\n", json_number_value(json_array_get(res, 0)),
               json_number_value(json_array_get(res, 1)), json_number_value(json_array_get(res, 2)));
    json_object_foreach(json_object_get(m, "statistics"), k, v) {
        json_t *sp = json_object_get(json_object_get(v, "spacing"), "median");
        json_t *smin = json_object_get(json_object_get(v, "shape"), "min"),
               *smax = json_object_get(json_object_get(v, "shape"), "max");
        json_t *in = json_object_get(v, "intensity_in_mask"), *pct = json_object_get(in, "percentiles");
        printf("%s (%lld cases)\n", k, (long long)json_integer_value(json_object_get(v, "cases")));
        printf("  spacing median  %.3g x %.3g x %.3g mm (RAS axes)\n", json_number_value(json_array_get(sp, 0)),
               json_number_value(json_array_get(sp, 1)), json_number_value(json_array_get(sp, 2)));
        printf("  shape           %g..%g x %g..%g x %g..%g\n", json_number_value(json_array_get(smin, 0)),
               json_number_value(json_array_get(smax, 0)), json_number_value(json_array_get(smin, 1)),
               json_number_value(json_array_get(smax, 1)), json_number_value(json_array_get(smin, 2)),
               json_number_value(json_array_get(smax, 2)));
        printf("  in mask         mean %.4g, std %.4g, p0.5 %.4g, p50 %.4g, p99.5 %.4g\n",
               json_number_value(json_object_get(in, "mean")), json_number_value(json_object_get(in, "std")),
               json_number_value(json_object_get(pct, "0.5")), json_number_value(json_object_get(pct, "50")),
               json_number_value(json_object_get(pct, "99.5")));
    }
    json_decref(m);
    return CLI_OK;
}

int cmd_merge(int argc, char **argv) {
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        fputs(merge_help, stdout);
        return CLI_OK;
    }
    /* OUT and the parts, in order; --quiet anywhere. */
    const char **dirs = calloc((size_t)argc, sizeof *dirs);
    if (!dirs) return CLI_FAIL;
    int n = 0;
    bool quiet = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quiet"))
            quiet = true;
        else
            dirs[n++] = argv[i];
    }
    if (n < 2) {
        free(dirs);
        return cli_usage_error("merge", "expected OUT and at least one PART_DIR");
    }
    cli_progress *bar = cli_progress_start("merge", "shards", 0, quiet);
    cd_error err;
    cd_status st = cd_dataset_merge_with_progress(dirs[0], dirs + 1, n - 1, on_progress, bar, &err);
    cli_progress_finish(bar);
    if (st == CD_OK) printf("merged %d part(s) into %s\n", n - 1, dirs[0]);
    free(dirs);
    return st == CD_OK ? CLI_OK : cli_fail_error(&err);
}
