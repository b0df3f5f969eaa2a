/* cirrdata — the command-line tool of libcirrdata. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const cli_command commands[] = {
    {"info", "print a NIfTI file's header: shape, dtype, spacing, affine, orientation, scaling", cmd_info},
    {"export", "write a NIfTI volume's voxels as a NumPy .npy file (optionally reoriented to RAS+)", cmd_export},
    {"synth", "write a synthetic dataset (CirrMRI600+ layout: T1/T2 phantoms, liver masks, metadata)", cmd_synth},
    {"convert", "convert a dataset (CirrMRI600+, nnU-Net) into checksummed, chunked shards with a recipe", cmd_convert},
    {"verify", "check every checksum of a converted dataset; name the damaged shard and record", cmd_verify},
    {"inspect", "print a converted dataset's counts, statistics, recipe and shards", cmd_inspect},
    {"merge", "join the parts of a 'convert --part I/N' run into one dataset", cmd_merge},
    {"export-batch",
     "write a converted dataset's records as .npy files with JSON sidecars, or .nii.gz files, for tools that read only "
     "files",
     cmd_export_batch},
    {"export-nnunet",
     "write an nnU-Net v2 raw dataset (imagesTr, labelsTr, imagesTs, dataset.json, splits) from a source",
     cmd_export_nnunet},
    {"verify-raw", "check an nnU-Net v2 raw dataset with nnU-Net's integrity rules; list every failure",
     cmd_verify_raw},
    {"resample", "resample a NIfTI volume in world space onto a new grid (spacing, shape or another image)",
     cmd_resample},
    {"preview", "draw a converted sample (three planes, mask outline) or a loader batch as a PNG picture", cmd_preview},
    {"stage", "stage cirrhosis (mild, moderate, severe) in MRI scans with a trained network", cmd_stage},
    {"bench", "measure decode, convert and loader throughput on this machine (synthetic data, about a minute)",
     cmd_bench},
    {"devices", "list the Vulkan devices and which one the GPU path would use", cmd_devices},
    {"limits", "print the caps on sizes read from files (NIfTI, JSON, CSV) and the variables that set them",
     cmd_limits},
};

/* Runs after every command: a process that used Vulkan with the validation layer on fails (exit 1)
 * when the layer reported anything, including what it reported while the contexts were destroyed
 * (objects left alive), so that a test or a CI run cannot miss it. CIRRDATA_VK_STATS=1 prints the
 * process's Vulkan totals (tests check that the device, not the C reference, did the work). */
static int vulkan_epilogue(int rc) {
    cd_gpu_stats s;
    cd_gpu_process_stats(&s);
    const char *v = getenv("CIRRDATA_VK_STATS");
    if (v && !strcmp(v, "1"))
        fprintf(
            stderr,
            "cirrdata: vulkan stats: contexts %llu, submissions %llu, cpu_fallback %llu, validation_messages %llu\n",
            (unsigned long long)s.contexts, (unsigned long long)s.submissions, (unsigned long long)s.cpu_fallback,
            (unsigned long long)s.validation_messages);
    if (s.validation_messages) {
        fprintf(stderr, "cirrdata: error: the Vulkan validation layer reported %llu message%s; the first: %s\n",
                (unsigned long long)s.validation_messages, s.validation_messages == 1 ? "" : "s", s.validation_first);
        if (rc == CLI_OK) rc = CLI_FAIL;
    }
    return rc;
}

static void usage(FILE *out) {
    fprintf(out,
            "usage: cirrdata <command> [options]\n\n"
            "libcirrdata %s: fast, exact NIfTI reading and data pipelines for 3D medical imaging.\n\n"
            "commands:\n",
            cd_version());
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n'cirrdata <command> --help' describes each command.\n"
                 "Exit status: 0 success, 1 bad input or failure (also: any message of the Vulkan validation layer\n"
                 "when it is on, CIRRDATA_VK_VALIDATION=1), 2 wrong usage.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return CLI_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return CLI_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("cirrdata %s\n", cd_version());
        return CLI_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return vulkan_epilogue(commands[i].run(argc - 1, argv + 1));
    fprintf(stderr, "cirrdata: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return CLI_USAGE;
}
