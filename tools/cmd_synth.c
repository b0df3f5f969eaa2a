/* cirrdata synth: writes a synthetic dataset in a published layout (CirrMRI600+ for now). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cli_progress.h"

static const char synth_help[] =
    "usage: cirrdata synth --layout cirrmri600 OUT [--cases N] [--seed S] [--threads N] [--no-healthy]\n"
    "                      [--quiet] [--json]\n\n"
    "Writes a synthetic CirrMRI600+ dataset under OUT, in the exact layout of the published 3D release:\n"
    "  Cirrhosis_T1_3D/Cirrhosis_T1_3D/{train,valid,test}_{images,masks}/<id>.nii.gz\n"
    "  Cirrhosis_T2_3D/{train,valid,test}_{images,masks}/<id>.nii.gz\n"
    "  Healthy_subjects/T1_W_Healthy/{T1_images,T1_masks}/, T2_W_Healthy/{T2_images,T2_masks}/\n"
    "  Metadata/*.csv (Patient ID,Age,Gender,Radiological Evaluation), labels.txt\n"
    "Abdominal T1/T2 phantoms with liver masks; the liver's look depends on the stage (1 mild,\n"
    "2 moderate, 3 severe). The output is a pure function of the seed and --cases: the same bytes for\n"
    "any --threads.\n\n"
    "  --layout NAME   dataset layout; only cirrmri600 (the default)\n"
    "  --cases N       cirrhosis patients (default 24); ~88 %% have both T1 and T2\n"
    "  --seed S        random seed (default 0)\n"
    "  --threads N     worker threads (default: online CPUs)\n"
    "  --no-healthy    no Healthy_subjects/ (default: max(2, cases/4) healthy subjects)\n"
    "  --quiet         no progress bar\n"
    "  --json          print the summary as one JSON object on stdout\n";

enum { OPT_LAYOUT = 1000, OPT_CASES, OPT_SEED, OPT_THREADS, OPT_NO_HEALTHY, OPT_QUIET, OPT_JSON, OPT_HELP };

static bool parse_u64(const char *s, uint64_t *out) {
    if (!s || !*s || *s == '-') return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end) return false;
    *out = v;
    return true;
}

typedef struct progress_ctx {
    cli_progress *bar;
    const cd_synth_stats *stats;
} progress_ctx;

static void on_progress(void *user, uint64_t done, uint64_t total, uint64_t bytes) {
    progress_ctx *ctx = user;
    cli_progress_set_total(ctx->bar, total); /* exact scan count: not every patient has both sequences */
    cli_progress_update(ctx->bar, done, bytes);
}

static json_t *sequence_json(const cd_synth_stats *s, int q) {
    json_t *o = json_object();
    json_object_set_new(o, "train", json_integer(s->cases[q][0]));
    json_object_set_new(o, "valid", json_integer(s->cases[q][1]));
    json_object_set_new(o, "test", json_integer(s->cases[q][2]));
    json_object_set_new(o, "healthy", json_integer(s->healthy_cases[q]));
    json_t *st = json_object();
    for (int k = 1; k <= 3; k++) {
        char key[2] = {(char)('0' + k), 0};
        json_object_set_new(st, key, json_integer(s->stage_cases[q][k]));
    }
    json_object_set_new(o, "stages", st);
    return o;
}

int cmd_synth(int argc, char **argv) {
    static const struct option opts[] = {{"layout", required_argument, NULL, OPT_LAYOUT},
                                         {"cases", required_argument, NULL, OPT_CASES},
                                         {"seed", required_argument, NULL, OPT_SEED},
                                         {"threads", required_argument, NULL, OPT_THREADS},
                                         {"no-healthy", no_argument, NULL, OPT_NO_HEALTHY},
                                         {"quiet", no_argument, NULL, OPT_QUIET},
                                         {"json", no_argument, NULL, OPT_JSON},
                                         {"help", no_argument, NULL, OPT_HELP},
                                         {NULL, 0, NULL, 0}};
    cd_synth_options so;
    cd_synth_options_init(&so);
    bool json = false, quiet = false;
    int c;
    int64_t v;
    uint64_t u;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_LAYOUT:
            if (strcmp(optarg, "cirrmri600") != 0)
                return cli_usage_error("synth", "unknown --layout '%s' (known: cirrmri600)", optarg);
            break;
        case OPT_CASES:
            if (!cli_parse_int64(optarg, &v) || v < 1 || v > 100000)
                return cli_usage_error("synth", "bad --cases '%s' (1..100000)", optarg);
            so.cases = (uint32_t)v;
            break;
        case OPT_SEED:
            if (!parse_u64(optarg, &u)) return cli_usage_error("synth", "bad --seed '%s'", optarg);
            so.seed = u;
            break;
        case OPT_THREADS:
            if (!cli_parse_int64(optarg, &v) || v < 1 || v > 1024)
                return cli_usage_error("synth", "bad --threads '%s' (1..1024)", optarg);
            so.threads = (int)v;
            break;
        case OPT_NO_HEALTHY: so.healthy = false; break;
        case OPT_QUIET: quiet = true; break;
        case OPT_JSON: json = true; break;
        case 'h':
        case OPT_HELP: fputs(synth_help, stdout); return CLI_OK;
        default: return cli_usage_error("synth", "unknown option or missing value '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) return cli_usage_error("synth", "expected exactly one output folder OUT");
    const char *out = argv[optind];

    cd_synth_stats stats;
    memset(&stats, 0, sizeof stats);
    /* The exact scan count is known only inside the library; the first callback sets it. */
    uint32_t nhealthy = so.healthy ? (so.cases / 4 > 2 ? so.cases / 4 : 2) : 0;
    /* No unit: a bar on a terminal, nothing off it (a summary follows either way). */
    progress_ctx ctx = {cli_progress_start("synth", NULL, 2u * (so.cases + nhealthy), quiet), &stats};
    so.stats = &stats;
    so.progress = on_progress;
    so.progress_user = &ctx;
    double t0 = cli_now_s();
    cd_error err;
    cd_status st = cd_synth_cirrmri600(out, &so, &err);
    double secs = cli_now_s() - t0;
    cli_progress_finish(ctx.bar);
    if (st != CD_OK) return cli_fail_error(&err);

    uint64_t scans = stats.files / 2;
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "layout", json_string("cirrmri600"));
        json_object_set_new(o, "output", json_string(out));
        json_object_set_new(o, "seed", json_integer((json_int_t)so.seed));
        json_object_set_new(o, "patients", json_integer(stats.patients));
        json_object_set_new(o, "healthy_subjects", json_integer(stats.healthy));
        json_object_set_new(o, "scans", json_integer((json_int_t)scans));
        json_object_set_new(o, "T1", sequence_json(&stats, 0));
        json_object_set_new(o, "T2", sequence_json(&stats, 1));
        json_object_set_new(o, "files", json_integer((json_int_t)stats.files));
        json_object_set_new(o, "bytes", json_integer((json_int_t)stats.bytes));
        json_object_set_new(o, "seconds", json_real(secs));
        cli_json_print(o);
    } else {
        printf("synth: wrote %llu scans (%llu NIfTI files, %.1f MB) to %s in %.2f s (%.3f s per scan)\n",
               (unsigned long long)scans, (unsigned long long)stats.files, (double)stats.bytes / 1e6, out, secs,
               scans ? secs / (double)scans : 0.0);
        printf("  patients: %u with cirrhosis, %u healthy\n", stats.patients, stats.healthy);
        for (int q = 0; q < 2; q++)
            printf("  T%d: train %u, valid %u, test %u; stage 1/2/3: %u/%u/%u; healthy %u\n", q + 1, stats.cases[q][0],
                   stats.cases[q][1], stats.cases[q][2], stats.stage_cases[q][1], stats.stage_cases[q][2],
                   stats.stage_cases[q][3], stats.healthy_cases[q]);
    }
    return CLI_OK;
}
