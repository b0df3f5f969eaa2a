/* convert's --part: I/N, or auto in a Slurm array job. */
#ifndef CD_TOOLS_CLI_PART_H
#define CD_TOOLS_CLI_PART_H

/* Parses arg, "I/N" (1 <= I <= N <= 65536) or "auto": part I of N from the Slurm array task this process
 * runs in, I = (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP + 1 and
 * N = SLURM_ARRAY_TASK_COUNT (step 1 when unset). Outside an array job, or when the variables disagree (a
 * task id outside the array, ids that are not one evenly spaced range), a usage error naming them: CLI_OK
 * or CLI_USAGE (printed). */
int cli_parse_part(const char *arg, int *index, int *count);

#endif
