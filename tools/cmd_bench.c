/* cirrdata bench: decode, convert and loader throughput on this machine, on a synthetic CirrMRI600+
 * set written to a temporary directory (removed afterwards). The careful, peer-compared benchmarks
 * are in benchmarks/ (run_decode.sh, run_convert.sh, run_loader.sh); this is the one-minute check. */
#define _XOPEN_SOURCE 700
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static const char bench_help[] =
    "usage: cirrdata bench [--quick] [--cases N] [--seconds S] [--threads N] [--dir DIR] [--json]\n\n"
    "Measures on this machine, on a synthetic CirrMRI600+ set (T1 and T2, published layout) written to\n"
    "a temporary directory and removed afterwards:\n"
    "  decode   cd_nifti_read of every .nii.gz image, one thread: volumes/s, MB/s of voxels and of file\n"
    "  convert  cirrdata convert with the raw and nnunet-3d recipes: cases/s, MB/s of .nii.gz read\n"
    "  loader   cirrdata.Loader in patch mode (96x96x32, batch 2, nnU-Net augmentation) over the raw\n"
    "           dataset after one warm-up epoch: samples/s\n"
    "Default: 8 patients, 3 s per timed phase (under a minute on 2 cores). benchmarks/ has the careful,\n"
    "peer-compared versions (benchmarks/README.md).\n\n"
    "  --quick       2 patients, raw recipe only, 1 s phases (a smoke test: seconds)\n"
    "  --cases N     synthetic patients (1..200)\n"
    "  --seconds S   minimum seconds per timed phase (0.1..600)\n"
    "  --threads N   threads for convert and the loader (default: online CPUs)\n"
    "  --dir DIR     where to make the temporary directory (default $TMPDIR or /tmp)\n"
    "  --json        one JSON object on stdout\n";

enum { O_QUICK = 1000, O_CASES, O_SECONDS, O_THREADS, O_DIR, O_JSON, O_HELP };

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* The synthetic set's image files (T1 double nested, T2), every split. */
static int list_images(const char *root, char ***out, int *n) {
    static const char *const dirs[] = {"Cirrhosis_T1_3D/Cirrhosis_T1_3D", "Cirrhosis_T2_3D"};
    static const char *const splits[] = {"train", "valid", "test"};
    int cap = 64;
    char **v = malloc((size_t)cap * sizeof *v);
    *n = 0;
    if (!v) return -1;
    for (int d = 0; d < 2; d++)
        for (int s = 0; s < 3; s++) {
            char dir[4400];
            snprintf(dir, sizeof dir, "%s/%s/%s_images", root, dirs[d], splits[s]);
            DIR *dp = opendir(dir);
            if (!dp) continue;
            struct dirent *e;
            while ((e = readdir(dp))) {
                size_t len = strlen(e->d_name);
                if (len < 8 || strcmp(e->d_name + len - 7, ".nii.gz")) continue;
                if (*n == cap) {
                    char **nv = realloc(v, (size_t)(cap *= 2) * sizeof *v);
                    if (!nv) break;
                    v = nv;
                }
                size_t need = strlen(dir) + len + 2;
                if (!(v[*n] = malloc(need))) break;
                snprintf(v[*n], need, "%s/%s", dir, e->d_name);
                (*n)++;
            }
            closedir(dp);
        }
    *out = v;
    return 0;
}

typedef struct bench_out {
    int cpus, threads, patients, scans;
    double synth_s, source_mb;
    double dec_vol_s, dec_mb_s, dec_file_mb_s;
    int dec_passes;
    struct {
        const char *recipe;
        double cases_s, mb_s, seconds;
        uint64_t records;
    } conv[2];
    int nconv;
    double load_samples_s;
    uint64_t load_samples;
    char load_io[16];
} bench_out;

static cd_status bench_decode(char **files, int n, double min_s, bench_out *b, cd_error *err) {
    double t0 = cli_now_s(), voxel_bytes = 0, file_bytes = 0;
    int vols = 0;
    do {
        for (int i = 0; i < n; i++) {
            cd_volume *v = NULL;
            cd_status st = cd_nifti_read(files[i], NULL, &v, NULL, err);
            if (st != CD_OK) return st;
            voxel_bytes += (double)cd_volume_nbytes(v);
            struct stat sb;
            if (stat(files[i], &sb) == 0) file_bytes += (double)sb.st_size;
            cd_volume_destroy(v);
            vols++;
        }
        b->dec_passes++;
    } while (cli_now_s() - t0 < min_s);
    double dt = cli_now_s() - t0;
    b->dec_vol_s = vols / dt;
    b->dec_mb_s = voxel_bytes / 1e6 / dt;
    b->dec_file_mb_s = file_bytes / 1e6 / dt;
    return CD_OK;
}

static cd_status bench_convert(const char *src, const char *out, const char *recipe, int threads, bench_out *b,
                               cd_error *err) {
    cd_convert_options co;
    cd_convert_options_init(&co);
    co.layout = "cirrmri600";
    co.root = src;
    co.out_dir = out;
    co.threads = threads;
    cd_status st = cd_recipe_preset(recipe, &co.recipe, err);
    cd_convert_result res;
    memset(&res, 0, sizeof res);
    double t0 = cli_now_s();
    if (st == CD_OK) st = cd_convert(&co, &res, err);
    if (st != CD_OK) return st;
    double dt = cli_now_s() - t0;
    b->conv[b->nconv].recipe = recipe;
    b->conv[b->nconv].records = res.records;
    b->conv[b->nconv].seconds = dt;
    b->conv[b->nconv].cases_s = (double)res.records / dt;
    b->conv[b->nconv].mb_s = (double)res.bytes_read / 1e6 / dt;
    b->nconv++;
    return CD_OK;
}

static cd_status bench_loader(const char *dataset, int threads, double min_s, bench_out *b, cd_error *err) {
    cd_loader_options lo;
    cd_loader_options_init(&lo);
    lo.dataset = dataset;
    lo.mode = CD_LOADER_PATCH;
    lo.patch[0] = 96;
    lo.patch[1] = 96;
    lo.patch[2] = 32;
    lo.batch_size = 2;
    lo.seed = 42;
    lo.augment = "nnunet";
    lo.threads = threads;
    cd_loader *l = NULL;
    cd_status st = cd_loader_create(&lo, &l, err);
    if (st != CD_OK) return st;
    cd_batch *bt = NULL;
    /* Warm-up: one epoch (fills the decoded-chunk cache, starts the workers). */
    for (;;) {
        if ((st = cd_loader_next(l, &bt, err)) != CD_OK || !bt) break;
        cd_loader_release(l, bt);
    }
    uint64_t n = 0;
    double t0 = cli_now_s();
    while (st == CD_OK && cli_now_s() - t0 < min_s) {
        if ((st = cd_loader_next(l, &bt, err)) != CD_OK) break;
        if (!bt) continue; /* end of an epoch: the next call starts the following one */
        n += bt->size;
        cd_loader_release(l, bt);
    }
    double dt = cli_now_s() - t0;
    snprintf(b->load_io, sizeof b->load_io, "%s", cd_loader_io_name(l));
    cd_loader_destroy(l);
    b->load_samples = n;
    b->load_samples_s = (double)n / dt;
    return st;
}

/* What `bench` was asked for. */
typedef struct bench_args {
    bool quick, json;
    int64_t cases, threads;
    double seconds;
    const char *dir;
} bench_args;

/* The options into a; CLI_OK, a usage error, or -1 after --help. */
static int parse_options(int argc, char **argv, bench_args *a) {
    static const struct option opts[] = {{"quick", no_argument, NULL, O_QUICK},
                                         {"cases", required_argument, NULL, O_CASES},
                                         {"seconds", required_argument, NULL, O_SECONDS},
                                         {"threads", required_argument, NULL, O_THREADS},
                                         {"dir", required_argument, NULL, O_DIR},
                                         {"json", no_argument, NULL, O_JSON},
                                         {"help", no_argument, NULL, O_HELP},
                                         {NULL, 0, NULL, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end;
        switch (c) {
        case O_QUICK: a->quick = true; break;
        case O_CASES:
            if (!cli_parse_int64(optarg, &a->cases) || a->cases < 1 || a->cases > 200)
                return cli_usage_error("bench", "--cases must be 1..200");
            break;
        case O_SECONDS:
            a->seconds = strtod(optarg, &end);
            if (*end || !(a->seconds >= 0.1 && a->seconds <= 600))
                return cli_usage_error("bench", "--seconds must be 0.1..600");
            break;
        case O_THREADS:
            if (!cli_parse_int64(optarg, &a->threads) || a->threads < 0 || a->threads > 1024)
                return cli_usage_error("bench", "--threads must be 0..1024");
            break;
        case O_DIR: a->dir = optarg; break;
        case O_JSON: a->json = true; break;
        case O_HELP:
        case 'h': fputs(bench_help, stdout); return -1;
        default: return cli_usage_error("bench", "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error("bench", "unexpected argument '%s'", argv[optind]);
    if (a->cases < 0) a->cases = a->quick ? 2 : 8;
    if (a->seconds < 0) a->seconds = a->quick ? 1.0 : 3.0;
    return CLI_OK;
}

/* A progress line on stderr (not with --json). */
static void phase(const bench_args *a, const char *what) {
    if (!a->json) fprintf(stderr, "  %s...\n", what);
}

/* The synthetic set in tmp and every phase on it, in order, until one fails. */
static cd_status run_phases(const bench_args *a, const char *tmp, bench_out *b, cd_error *err) {
    char src[4200], out_raw[4200], out_nn[4200];
    snprintf(src, sizeof src, "%s/CirrMRI600+", tmp);
    snprintf(out_raw, sizeof out_raw, "%s/dataset-raw", tmp);
    snprintf(out_nn, sizeof out_nn, "%s/dataset-nnunet-3d", tmp);
    cd_synth_options so;
    cd_synth_options_init(&so);
    cd_synth_stats stats;
    so.cases = (uint32_t)a->cases;
    so.seed = 7;
    so.healthy = false;
    so.threads = (int)a->threads;
    so.stats = &stats;
    double t0 = cli_now_s();
    cd_status st = cd_synth_cirrmri600(src, &so, err);
    b->synth_s = cli_now_s() - t0;
    char **files = NULL;
    int nfiles = 0;
    if (st == CD_OK && list_images(src, &files, &nfiles) != 0) {
        snprintf(err->message, sizeof err->message, "out of memory listing %.400s", src);
        st = err->status = CD_ERR_NOMEM;
    }
    if (st == CD_OK) {
        b->scans = nfiles;
        for (int i = 0; i < nfiles; i++) {
            struct stat sb;
            if (stat(files[i], &sb) == 0) b->source_mb += (double)sb.st_size / 1e6;
        }
        phase(a, "decode");
        st = bench_decode(files, nfiles, a->seconds, b, err);
    }
    if (st == CD_OK) {
        phase(a, "convert raw");
        st = bench_convert(src, out_raw, "raw", (int)a->threads, b, err);
    }
    if (st == CD_OK && !a->quick) {
        phase(a, "convert nnunet-3d");
        st = bench_convert(src, out_nn, "nnunet-3d", (int)a->threads, b, err);
    }
    if (st == CD_OK) {
        phase(a, "loader");
        st = bench_loader(out_raw, (int)a->threads, a->seconds, b, err);
    }
    for (int i = 0; i < nfiles; i++) free(files[i]);
    free(files);
    return st;
}

static void print_json(const bench_out *b) {
    json_t *o = json_object(), *conv = json_array();
    json_object_set_new(o, "version", json_string(cd_version()));
    json_object_set_new(o, "cpus", json_integer(b->cpus));
    json_object_set_new(o, "threads", json_integer(b->threads));
    json_object_set_new(o, "patients", json_integer(b->patients));
    json_object_set_new(o, "scans", json_integer(b->scans));
    json_object_set_new(o, "source_mb", json_real(b->source_mb));
    json_object_set_new(o, "synth_seconds", json_real(b->synth_s));
    json_t *d = json_object();
    json_object_set_new(d, "threads", json_integer(1));
    json_object_set_new(d, "passes", json_integer(b->dec_passes));
    json_object_set_new(d, "volumes_per_s", json_real(b->dec_vol_s));
    json_object_set_new(d, "voxel_mb_per_s", json_real(b->dec_mb_s));
    json_object_set_new(d, "file_mb_per_s", json_real(b->dec_file_mb_s));
    json_object_set_new(o, "decode", d);
    for (int i = 0; i < b->nconv; i++) {
        json_t *e = json_object();
        json_object_set_new(e, "recipe", json_string(b->conv[i].recipe));
        json_object_set_new(e, "records", json_integer((json_int_t)b->conv[i].records));
        json_object_set_new(e, "seconds", json_real(b->conv[i].seconds));
        json_object_set_new(e, "cases_per_s", json_real(b->conv[i].cases_s));
        json_object_set_new(e, "source_mb_per_s", json_real(b->conv[i].mb_s));
        json_array_append_new(conv, e);
    }
    json_object_set_new(o, "convert", conv);
    json_t *l = json_object();
    json_object_set_new(l, "mode", json_string("patch 96x96x32, batch 2, augment nnunet, raw dataset"));
    json_object_set_new(l, "samples", json_integer((json_int_t)b->load_samples));
    json_object_set_new(l, "samples_per_s", json_real(b->load_samples_s));
    json_object_set_new(l, "io", json_string(b->load_io));
    json_object_set_new(o, "loader", l);
    cli_json_print(o);
}

static void print_text(const bench_out *b) {
    char host[256] = "?";
    gethostname(host, sizeof host - 1);
    printf("cirrdata bench on %s: %d CPUs online, libcirrdata %s\n", host, b->cpus, cd_version());
    printf("synthetic CirrMRI600+: %d patients, %d scans, %.1f MB of .nii.gz (written in %.1f s)\n", b->patients,
           b->scans, b->source_mb, b->synth_s);
    printf("  decode   cd_nifti_read, 1 thread          %7.1f volumes/s  %7.1f MB/s voxels  %6.1f MB/s .nii.gz\n",
           b->dec_vol_s, b->dec_mb_s, b->dec_file_mb_s);
    for (int i = 0; i < b->nconv; i++)
        printf("  convert  %-10s %2d threads             %7.2f cases/s    %7.1f MB/s .nii.gz read\n", b->conv[i].recipe,
               b->threads, b->conv[i].cases_s, b->conv[i].mb_s);
    printf("  loader   patch 96x96x32 nnunet aug, %2d thr %7.1f samples/s  (batch 2, io %s)\n", b->threads,
           b->load_samples_s, b->load_io);
}

int cmd_bench(int argc, char **argv) {
    bench_args a = {.cases = -1, .seconds = -1, .dir = getenv("TMPDIR")};
    int rc = parse_options(argc, argv, &a);
    if (rc != CLI_OK) return rc < 0 ? CLI_OK : rc;
    bench_out b;
    memset(&b, 0, sizeof b);
    b.cpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
    b.threads = a.threads ? (int)a.threads : b.cpus;
    b.patients = (int)a.cases;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s/cirrdata-bench-XXXXXX", a.dir && *a.dir ? a.dir : "/tmp");
    if (!mkdtemp(tmp)) {
        fprintf(stderr, "cirrdata: %s: cannot create a temporary directory: %s\n", tmp, strerror(errno));
        return CLI_FAIL;
    }
    if (!a.json) fprintf(stderr, "cirrdata bench: synthetic data in %s (removed afterwards)\n", tmp);
    cd_error err;
    cd_error_clear(&err);
    cd_status st = run_phases(&a, tmp, &b, &err);
    nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (st != CD_OK) return cli_fail_error(&err);
    if (a.json)
        print_json(&b);
    else
        print_text(&b);
    return CLI_OK;
}
