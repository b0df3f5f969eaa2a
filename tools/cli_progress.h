/* Progress of long commands (convert, merge, verify, export-batch, stage --dataset; synth) on stderr.
 *
 * On a terminal: a bar redrawn in place (about 10 times a second). Off a terminal (a log file, a pipe, a
 * batch job): a line "cirrdata LABEL: DONE/TOTAL UNIT (P%), R MB/s, elapsed T, left T" every
 * CIRRDATA_PROGRESS_INTERVAL seconds (default 10) or every 5 % of the total, whichever comes first, but
 * not more often than once a second (or once per interval when that is shorter), and a last line when
 * the work ends if any line was written and the last one said less: short runs stay silent. quiet:
 * neither. Thread safe: workers may call cli_progress_update concurrently. */
#ifndef CD_TOOLS_CLI_PROGRESS_H
#define CD_TOOLS_CLI_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

typedef struct cli_progress cli_progress;

/* Starts reporting total units of work (e.g. cases; 0 when not known yet); unit names them in lines
 * ("cases", "shards"); NULL: the bar on a terminal, nothing off it. Never returns NULL unless out of
 * memory; the other functions accept NULL. */
cli_progress *cli_progress_start(const char *label, const char *unit, uint64_t total, bool quiet);

/* Reports done units and bytes written or read so far (both cumulative; for MB/s). */
void cli_progress_update(cli_progress *p, uint64_t done, uint64_t bytes);

/* Changes the total when it becomes known only once the work has started. */
void cli_progress_set_total(cli_progress *p, uint64_t total);

/* Draws the final state followed by a newline (when drawing at all) and frees p. */
void cli_progress_finish(cli_progress *p);

#endif
