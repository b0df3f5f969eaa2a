/* cirrdata/convert.h — converting a source dataset (CirrMRI600+, nnU-Net raw) into a dataset directory
 * (cirrdata/dataset.h reads it). */
#ifndef CIRRDATA_CONVERT_H
#define CIRRDATA_CONVERT_H

#include "cirrdata/api.h"
#include <stdbool.h>
#include <stdint.h>

#include "cirrdata/augment.h"
#include "cirrdata/dataset.h"
#include "cirrdata/device.h"
#include "cirrdata/recipe.h"
#include "cirrdata/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cd_convert_options {
    const char *layout;  /* "cirrmri600" or "nnunet" */
    const char *root;    /* the source dataset */
    const char *out_dir; /* created if missing */
    cd_recipe recipe;
    int threads;                /* 0 = online CPUs */
    uint64_t shard_size;        /* target bytes per shard; 0 = 256 MiB */
    int part_index, part_count; /* convert part I of N (1-based); 0/0 = everything */
    bool strict;                /* a bad case is fatal instead of skipped */
    bool healthy;               /* cirrmri600: Healthy_subjects as class 3 "healthy" (else not read) */
    bool pair_sequences;        /* cirrmri600: one 2-channel (T1, T2-on-T1-grid) record per patient with both */
    uint64_t max_bytes;         /* NIfTI allocation cap; 0 = default */
    cd_progress_fn progress;    /* optional (cirrdata/progress.h): cases done of this part's, source bytes read */
    void *progress_user;
    /* Augmented copies (schemas/shard-format.md, "Augmented records"): with augment set, each case
     * yields its plain record (unless no_original) followed by `copies` augmented records; copy k of
     * case i equals the loader's sample for (seed, epoch k, record index i) in aug_mode with
     * batch_size 1, read from the plain conversion of the same source and recipe. */
    const char *augment; /* NULL or "none": plain; "nnunet", "cirrhosisstage" or a pipeline JSON file */
    uint32_t copies;     /* K, 1..1024 (needs augment) */
    uint64_t seed;
    cd_loader_mode aug_mode;    /* CD_LOADER_VOLUME (what init sets), CD_LOADER_PATCH or CD_LOADER_SLICE */
    int64_t aug_patch[3];       /* volume: fixed crop/pad size, 0 = as stored; patch: the patch size */
    double foreground_fraction; /* patch mode: >= 0.5 centres every copy on foreground (as a batch-size-1 loader) */
    bool no_original;           /* write only the copies */
    cd_device device;           /* cirrdata/device.h: where the recipe's resampling and normalisation and the copies'
                                * spatial warp run (CD_DEVICE_CPU, the default; VULKAN; AUTO) */
    /* nnunet layout: with fold >= 0 the fold's validation cases get split "valid" (the other training
     * cases "train", imagesTs cases "test"), from splits_file, else <root>/splits_final.json when present,
     * else nnU-Net v2's default 5-fold split (folds 0..4). -1 (what init sets): every training case
     * "train". A splits file without a fold is CD_ERR_ARG. */
    int fold;
    const char *splits_file; /* nnU-Net's splits_final.json format; NULL: see fold */
} cd_convert_options;

/* Fills defaults: raw recipe, all threads, 256 MiB shards, no fold. */
CD_API void cd_convert_options_init(cd_convert_options *opts);

typedef struct cd_convert_result {
    uint64_t records; /* records in the dataset (this part) */
    uint64_t skipped; /* cases skipped, listed in the manifest with reasons */
    uint64_t shards;
    uint64_t bytes_read;      /* source bytes (compressed files) */
    uint64_t bytes_written;   /* shard bytes */
    uint64_t resumed_records; /* records taken over from an interrupted earlier run */
    double seconds;
    double augment_seconds; /* augmented copies: CPU seconds spent drawing, warping and intensity ops, all threads */
    char device[16];        /* "cpu" or "vulkan": what ran the spatial warp of augmented copies, else what ran the
                                * recipe's resampling and normalisation (also the manifest's "device") */
    char device_note[256];  /* why the device was not (or not always) used: the device policy's note, or
                                * for CD_DEVICE_AUTO the reason the CPU was chosen; empty otherwise */
    char note[1024];        /* what a resume noticed: a source case changed since the interrupted run (named), a
                                * damaged resume journal or manifest converted again; empty otherwise */
} cd_convert_result;

/* Converts. Restartable: a killed run leaves finished shards and a journal; running the same
 * conversion again resumes and produces byte-identical shards. The manifest is written last.
 * The output folder: one writer at a time (a second convert or merge into it fails at once, naming the
 * holder: pid, host, command). What it already holds decides: a finished dataset of the same conversion
 * (same options and the same inputs: every file's size and modification time) is left as it is; one of
 * another conversion, or of an earlier state of the source (the changed case is named), is refused
 * (CD_ERR_ARG); an interrupted run of the same options resumes after the last finished shard, or from the
 * first case that changed since. Shard files that no manifest or resume journal of this conversion
 * accounts for are never deleted: CD_ERR_ARG naming them. */
CD_API cd_status cd_convert(const cd_convert_options *opts, cd_convert_result *result, cd_error *err);

#ifdef __cplusplus
}
#endif
#endif
