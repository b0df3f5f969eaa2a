/* What an output folder already holds, before a conversion writes into it (internal): a finished dataset
 * of the same conversion (nothing to do), an interrupted run to resume, or data of something else, which
 * is refused and never deleted. */
#ifndef CD_CONVERT_RESUME_H
#define CD_CONVERT_RESUME_H

#include <jansson.h>
#include <stdbool.h>

#include "convert/identity.h"

typedef struct cd_resume {
    bool finished;      /* the folder holds this conversion, complete: nothing to do */
    json_t *manifest;   /* finished: its manifest (owned) */
    json_t *lines;      /* journal lines of the shards kept, in order: {"shard": {...}, "entries": [...],
                         * "skipped": [...]} (owned) */
    size_t resume_case; /* the first case to convert */
    char note[1024];    /* what was noticed and done: a changed source case, a damaged journal or manifest */
} cd_resume;

/* Looks at dir (which exists, locked by the caller) for the conversion `id`. legacy: the fingerprint a
 * format_version 1 manifest of the same command would carry (NULL: none).
 * - dir/manifest.json intact and of this conversion: r->finished.
 * - intact but of another conversion (another part, other options, or an earlier state of the source,
 *   named): CD_ERR_ARG.
 * - damaged (or format_version 1) but of this conversion: its shards are ours to rewrite; otherwise
 *   CD_ERR_ARG, the dataset left as it is.
 * - the resume journal (journal.h) of this conversion: the shards it lists are kept up to the first case
 *   that changed since (named in r->note) or the first damaged line; a journal of other options is
 *   CD_ERR_ARG.
 * Shard files that neither vouches for are never deleted: CD_ERR_ARG naming them. Shard files this
 * conversion wrote and does not keep (a killed run's) are removed. */
CD_INTERNAL cd_status cd_resume_prepare(const char *dir, const cd_conv_identity *id, const char *legacy, cd_resume *r,
                                        cd_error *err);
CD_INTERNAL void cd_resume_free(cd_resume *r);

/* The journal header of conversion id (with its part's inputs). */
CD_INTERNAL json_t *cd_resume_journal_header(const cd_conv_identity *id);

#endif
