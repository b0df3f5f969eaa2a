/* convert --part I/N | auto (see cli_part.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_part.h"

#define PART_MAX 65536

/* A non-negative decimal integer, the whole of s. */
static bool parse_count(const char *s, long *out) {
    if (!s || !*s || *s == '-' || *s == '+') return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < 0) return false;
    *out = v;
    return true;
}

/* A Slurm variable: -1 when unset, -2 when set but not a count (reported). */
static long slurm_var(const char *name, bool *bad) {
    const char *v = getenv(name);
    long n;
    if (!v) return -1;
    if (!parse_count(v, &n)) {
        cli_usage_error("convert", "--part auto: %s='%s' is not a number", name, v);
        *bad = true;
        return -2;
    }
    return n;
}

static int part_auto(int *index, int *count) {
    bool bad = false;
    long id = slurm_var("SLURM_ARRAY_TASK_ID", &bad), lo = slurm_var("SLURM_ARRAY_TASK_MIN", &bad),
         hi = slurm_var("SLURM_ARRAY_TASK_MAX", &bad), n = slurm_var("SLURM_ARRAY_TASK_COUNT", &bad),
         step = slurm_var("SLURM_ARRAY_TASK_STEP", &bad);
    if (bad) return CLI_USAGE;
    if (id < 0 || lo < 0 || n < 0)
        return cli_usage_error("convert",
                               "--part auto: not a task of a Slurm array job (SLURM_ARRAY_TASK_ID, _MIN and _COUNT "
                               "must be set: sbatch --array=1-N); give --part I/N instead");
    if (step < 0) step = 1;
    if (n < 1 || n > PART_MAX || step < 1)
        return cli_usage_error("convert",
                               "--part auto: SLURM_ARRAY_TASK_COUNT=%ld, SLURM_ARRAY_TASK_STEP=%ld: need 1..%d tasks",
                               n, step, PART_MAX);
    if (id < lo || (id - lo) % step || (id - lo) / step >= n || (hi >= 0 && id > hi))
        return cli_usage_error("convert",
                               "--part auto: task id %ld is not one of the array's %ld ids from %ld by %ld "
                               "(SLURM_ARRAY_TASK_ID, _MIN, _COUNT, _STEP disagree)",
                               id, n, lo, step);
    if (hi >= 0 && lo + (n - 1) * step != hi)
        return cli_usage_error("convert",
                               "--part auto: the array's ids are not one evenly spaced range (min %ld, max %ld, step "
                               "%ld, %ld tasks): submit it as --array=1-N",
                               lo, hi, step, n);
    *index = (int)((id - lo) / step + 1);
    *count = (int)n;
    return CLI_OK;
}

int cli_parse_part(const char *arg, int *index, int *count) {
    if (!strcmp(arg, "auto")) return part_auto(index, count);
    const char *slash = strchr(arg, '/');
    char head[32];
    long i, n;
    size_t k = slash ? (size_t)(slash - arg) : 0;
    if (!slash || k >= sizeof head)
        return cli_usage_error("convert", "bad --part '%s' (expected I/N with 1 <= I <= N, or auto)", arg);
    memcpy(head, arg, k);
    head[k] = 0;
    if (!parse_count(head, &i) || !parse_count(slash + 1, &n) || n < 1 || n > PART_MAX || i < 1 || i > n)
        return cli_usage_error("convert", "bad --part '%s' (expected I/N with 1 <= I <= N <= %d, or auto)", arg,
                               PART_MAX);
    *index = (int)i;
    *count = (int)n;
    return CLI_OK;
}
