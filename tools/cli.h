/* Shared pieces of the cirrdata command-line tool. */
#ifndef CD_TOOLS_CLI_H
#define CD_TOOLS_CLI_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include <cirrdata/cirrdata.h>

/* Exit codes: 0 success, 1 bad input or failure, 2 wrong usage. */
enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

typedef struct cli_command {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
} cli_command;

/* Prints "cirrdata: <message>" on one line to stderr and returns CLI_FAIL. */
int cli_fail_error(const cd_error *err);
/* Prints "cirrdata <cmd>: <message>" plus a hint to stderr and returns CLI_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

bool cli_parse_int64(const char *s, int64_t *out);

/* JSON helpers. */
json_t *cli_json_matrix4(const double m[4][4]);
json_t *cli_json_doubles(const double *v, int n);
json_t *cli_json_int64s(const int64_t *v, int n);
/* Finite numbers as reals, non-finite ones as null (JSON has no NaN). */
json_t *cli_json_real(double v);
/* Prints obj (indented) to stdout with a newline; steals the reference. */
void cli_json_print(json_t *obj);

int cmd_info(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_resample(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_preview(int argc, char **argv);
int cmd_devices(int argc, char **argv);
int cmd_limits(int argc, char **argv);
int cmd_stage(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_export_batch(int argc, char **argv);
int cmd_export_nnunet(int argc, char **argv);
int cmd_verify_raw(int argc, char **argv);

/* The monotonic clock, in seconds (timings the commands print). */
double cli_now_s(void);

#endif
