/* cirrdata verify-raw: nnU-Net's dataset-integrity rules on a raw dataset, every failure listed
 * (cirrdata/nnunet.h). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cli_progress.h"

static const char verify_raw_help[] =
    "usage: cirrdata verify-raw DIR [--json] [--quiet]\n\n"
    "Checks an nnU-Net v2 raw dataset with the rules of nnU-Net's verify_dataset_integrity\n"
    "(nnUNetv2_plan_and_preprocess --verify_dataset_integrity) and lists every failure, one line each:\n"
    "  FAIL <rule> <case>: <message>      (WARN for what nnU-Net only warns about)\n"
    "Rules: dataset_json (required keys labels, channel_names, numTraining, file_ending), folders,\n"
    "labels (background 0, consecutive values, ignore label, regions), file_ending, num_training\n"
    "(numTraining = cases in imagesTr), stray_file (files nnU-Net would take for cases), missing_channel,\n"
    "extra_channel, missing_label, unreadable, not_3d, shape and spacing (channels and label;\n"
    "np.allclose), origin and direction (warnings), label_values (declared in labels), nan (images and\n"
    "labels). imagesTs (and labelsTs where present) are checked like the training cases, labels optional.\n"
    "Exit status 1 when anything failed.\n\n"
    "  --json    print the report as one JSON object\n"
    "  --quiet   no progress bar\n";

static void on_progress(void *user, uint64_t done, uint64_t total, uint64_t bytes) {
    cli_progress_set_total(user, total);
    cli_progress_update(user, done, bytes);
}

int cmd_verify_raw(int argc, char **argv) {
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                         {"quiet", no_argument, NULL, 'q'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    bool json = false, quiet = false;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = true; break;
        case 'q': quiet = true; break;
        case 'h': fputs(verify_raw_help, stdout); return CLI_OK;
        default: return cli_usage_error("verify-raw", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) return cli_usage_error("verify-raw", "expected exactly one DIR");
    const char *dir = argv[optind];
    cli_progress *bar = cli_progress_start("verify-raw", "cases", 0, quiet || json);
    cd_nnunet_report *r;
    cd_error err;
    cd_status st = cd_nnunet_verify(dir, on_progress, bar, &r, &err);
    cli_progress_finish(bar);
    if (st != CD_OK) return cli_fail_error(&err);
    if (json) {
        json_t *list = json_array();
        for (size_t i = 0; i < r->nfindings; i++) {
            const cd_nnunet_finding *f = &r->findings[i];
            json_array_append_new(list, json_pack("{s:s,s:s,s:s,s:s,s:s}", "level", f->warning ? "warning" : "failure",
                                                  "rule", f->rule, "case", f->case_id, "file", f->file, "message",
                                                  f->message));
        }
        cli_json_print(json_pack("{s:s,s:b,s:I,s:I,s:I,s:I,s:o}", "dir", dir, "ok", r->failures == 0, "training_cases",
                                 (json_int_t)r->training_cases, "test_cases", (json_int_t)r->test_cases, "failures",
                                 (json_int_t)r->failures, "warnings", (json_int_t)r->warnings, "findings", list));
    } else {
        for (size_t i = 0; i < r->nfindings; i++) {
            const cd_nnunet_finding *f = &r->findings[i];
            printf("%s %s %s: %s\n", f->warning ? "WARN" : "FAIL", f->rule, *f->case_id ? f->case_id : "-", f->message);
        }
        printf("verify-raw: %s: %llu training case%s, %llu test case%s: %llu failure%s, %llu warning%s\n", dir,
               (unsigned long long)r->training_cases, r->training_cases == 1 ? "" : "s",
               (unsigned long long)r->test_cases, r->test_cases == 1 ? "" : "s", (unsigned long long)r->failures,
               r->failures == 1 ? "" : "s", (unsigned long long)r->warnings, r->warnings == 1 ? "" : "s");
    }
    int rc = r->failures ? CLI_FAIL : CLI_OK;
    cd_nnunet_report_free(r);
    return rc;
}
