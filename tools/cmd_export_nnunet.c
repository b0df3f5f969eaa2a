/* cirrdata export-nnunet: a source dataset (or a converted one) as an nnU-Net v2 raw dataset
 * (cirrdata/nnunet.h). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_progress.h"

static const char export_nnunet_help[] =
    "usage: cirrdata export-nnunet SOURCE -o DatasetNNN_Name [--layout cirrmri600|nnunet|dataset]\n"
    "                              [--sequence NAME | --pair-t1t2] [--healthy] [--prefix P] [--labels JSON]\n"
    "                              [--skip-bad] [--force] [--level N] [--quiet] [--json]\n\n"
    "Writes an nnU-Net v2 raw dataset: dataset.json (channel_names, labels, numTraining, file_ending\n"
    "\".nii.gz\"), imagesTr/<case>_<XXXX>.nii.gz, labelsTr/<case>.nii.gz, and for the source's test split\n"
    "imagesTs/ and labelsTs/. Case identifiers are <prefix>_<patient id> (healthy subjects:\n"
    "<prefix>_healthy<id>; an nnunet source keeps its own identifiers unless --prefix is given).\n"
    "SOURCE is a source dataset of the given --layout, or a converted dataset folder (manifest.json;\n"
    "its plain records, augmented copies left out, written from the stored arrays and their affine).\n\n"
    "CirrMRI600+ (--layout cirrmri600): one nnU-Net dataset per sequence: --sequence T1 or --sequence T2\n"
    "(run twice, with two -o names, for both), or --pair-t1t2: one case per patient with both scans,\n"
    "channel 0000 the T1 file as stored and 0001 the T2 scan resampled onto T1's grid as convert\n"
    "--pair-t1t2 does (trilinear interpolation in world space through both affines, 0 outside T2's\n"
    "field of view, float32); patients with one sequence are skipped and listed. The official split:\n"
    "train and valid go to imagesTr, test to imagesTs, and splits_final.json holds one fold,\n"
    "[{\"train\": [...], \"val\": [...]}]: copy it to $nnUNet_preprocessed/DatasetNNN_Name/ to train on it.\n\n"
    "Files: a .nii.gz source is copied byte for byte and a .nii source gzipped as it is, so arrays,\n"
    "affines, dtypes and scaling read back unchanged. Every case is checked first as verify-raw would\n"
    "(mask on its image's grid, no NaN, mask values declared in labels); a failure names the file.\n"
    "The dataset appears complete or not at all: it is written into a hidden sibling folder renamed into\n"
    "place at the end. cirrdata_export.json records each case's source files and the skipped cases.\n\n"
    "  -o, --out DIR     the dataset folder, named DatasetNNN_Name (must not exist unless --force)\n"
    "  --layout L        cirrmri600 or nnunet (every channel; imagesTs as the test split); dataset (converted)\n"
    "                    is recognised without it\n"
    "  --sequence NAME   the sequence to export (T1, T2; for a converted dataset a record's sequence);\n"
    "                    needed when the source has several\n"
    "  --pair-t1t2       T1 and T2 as two channels on T1's grid (see above)\n"
    "  --healthy         cirrmri600: also the Healthy_subjects (every tenth to valid, the next to test)\n"
    "  --prefix P        case identifier prefix (letters, digits, '-'; default 'case')\n"
    "  --labels JSON     dataset.json's labels (default: an nnunet source's own, else\n"
    "                    {\"background\": 0, \"liver\": 1})\n"
    "  --skip-bad        skip cases the layout cannot use (an image without its mask or label) instead of\n"
    "                    failing; they are listed in cirrdata_export.json\n"
    "  --force           replace an existing DIR (only an nnU-Net dataset with dataset.json, or an empty\n"
    "                    folder)\n"
    "  --level N         gzip level 1..12 of the files written rather than copied (default 6)\n"
    "  --quiet           no progress bar\n"
    "  --json            print the summary as one JSON object\n";

enum {
    O_LAYOUT = 1000,
    O_SEQ,
    O_PAIR,
    O_HEALTHY,
    O_PREFIX,
    O_LABELS,
    O_SKIP,
    O_FORCE,
    O_LEVEL,
    O_QUIET,
    O_JSON,
    O_HELP
};

static void on_progress(void *user, uint64_t done, uint64_t total, uint64_t bytes) {
    cli_progress_set_total(user, total);
    cli_progress_update(user, done, bytes);
}

int cmd_export_nnunet(int argc, char **argv) {
    static const struct option opts[] = {
        {"out", required_argument, NULL, 'o'},         {"layout", required_argument, NULL, O_LAYOUT},
        {"sequence", required_argument, NULL, O_SEQ},  {"pair-t1t2", no_argument, NULL, O_PAIR},
        {"healthy", no_argument, NULL, O_HEALTHY},     {"prefix", required_argument, NULL, O_PREFIX},
        {"labels", required_argument, NULL, O_LABELS}, {"skip-bad", no_argument, NULL, O_SKIP},
        {"force", no_argument, NULL, O_FORCE},         {"level", required_argument, NULL, O_LEVEL},
        {"quiet", no_argument, NULL, O_QUIET},         {"json", no_argument, NULL, O_JSON},
        {"help", no_argument, NULL, O_HELP},           {NULL, 0, NULL, 0}};
    cd_nnunet_export_options o;
    cd_nnunet_export_options_init(&o);
    bool quiet = false, json = false;
    int c;
    int64_t level;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        switch (c) {
        case 'o': o.out_dir = optarg; break;
        case O_LAYOUT: o.layout = optarg; break;
        case O_SEQ: o.sequence = optarg; break;
        case O_PAIR: o.pair_t1t2 = true; break;
        case O_HEALTHY: o.healthy = true; break;
        case O_PREFIX: o.prefix = optarg; break;
        case O_LABELS: o.labels_json = optarg; break;
        case O_SKIP: o.skip_bad = true; break;
        case O_FORCE: o.force = true; break;
        case O_LEVEL:
            if (!cli_parse_int64(optarg, &level) || level < 1 || level > 12)
                return cli_usage_error("export-nnunet", "bad --level '%s' (1..12)", optarg);
            o.compression_level = (int)level;
            break;
        case O_QUIET: quiet = true; break;
        case O_JSON: json = true; break;
        case 'h':
        case O_HELP: fputs(export_nnunet_help, stdout); return CLI_OK;
        default: return cli_usage_error("export-nnunet", "unknown option or missing value '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) return cli_usage_error("export-nnunet", "expected exactly one SOURCE");
    if (!o.out_dir) return cli_usage_error("export-nnunet", "missing -o DatasetNNN_Name");
    if (o.pair_t1t2 && o.sequence)
        return cli_usage_error("export-nnunet", "--sequence and --pair-t1t2 exclude each other");
    o.source = argv[optind];
    cli_progress *bar = cli_progress_start("export-nnunet", "cases", 0, quiet || json);
    o.progress = on_progress;
    o.progress_user = bar;
    cd_nnunet_export_result r;
    cd_error err;
    cd_status st = cd_nnunet_export(&o, &r, &err);
    cli_progress_finish(bar);
    if (st != CD_OK) return cli_fail_error(&err);
    if (json) {
        cli_json_print(json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:b}", "out", o.out_dir, "training",
                                 (json_int_t)r.training, "test", (json_int_t)r.test, "skipped", (json_int_t)r.skipped,
                                 "warnings", (json_int_t)r.warnings, "copied", (json_int_t)r.copied, "gzipped",
                                 (json_int_t)r.gzipped, "written", (json_int_t)r.written, "bytes_written",
                                 (json_int_t)r.bytes_written, "splits", r.splits));
        return CLI_OK;
    }
    printf("export-nnunet: %s: %llu training and %llu test case%s (files: %llu copied, %llu gzipped, %llu written)\n",
           o.out_dir, (unsigned long long)r.training, (unsigned long long)r.test, r.test == 1 ? "" : "s",
           (unsigned long long)r.copied, (unsigned long long)r.gzipped, (unsigned long long)r.written);
    if (r.splits)
        printf("splits_final.json: the source's train/valid split as fold 0; copy it to "
               "$nnUNet_preprocessed/<this dataset's name>/ to train on it\n");
    if (r.skipped || r.warnings)
        printf("%llu case%s skipped, %llu warning%s: see cirrdata_export.json\n", (unsigned long long)r.skipped,
               r.skipped == 1 ? "" : "s", (unsigned long long)r.warnings, r.warnings == 1 ? "" : "s");
    return CLI_OK;
}
