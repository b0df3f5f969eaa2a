/* A progress bar on stderr for long commands (synth, convert).
 *
 * Draws only when stderr is a terminal and quiet is false; otherwise every call is a no-op and the
 * command prints a summary instead. Thread safe: workers may call cli_progress_update concurrently;
 * redraws are limited to about 10 per second. */
#ifndef CD_TOOLS_CLI_PROGRESS_H
#define CD_TOOLS_CLI_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

typedef struct cli_progress cli_progress;

/* Starts a bar for total units of work (e.g. cases). Never returns NULL unless out of memory; the
 * other functions accept NULL. */
cli_progress *cli_progress_start(const char *label, uint64_t total, bool quiet);

/* Reports done units and bytes written or read so far (both cumulative; for MB/s). */
void cli_progress_update(cli_progress *p, uint64_t done, uint64_t bytes);

/* Changes the total when it becomes known only once the work has started. */
void cli_progress_set_total(cli_progress *p, uint64_t total);

/* Draws the final state followed by a newline (when drawing at all) and frees p. */
void cli_progress_finish(cli_progress *p);

#endif
