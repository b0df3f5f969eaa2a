#!/bin/sh
# Converts a source on a Slurm cluster: an array of N conversion tasks, then the merge once all of them
# succeeded (README.md, "Scaling out").
#
#   tools/slurm/submit.sh N LAYOUT ROOT OUT [convert options]
#
# The parts go to OUT.parts/ (keep it on a shared file system), the dataset to OUT. Prints the two job
# ids. sbatch options for both jobs come from sbatch's own environment variables (SBATCH_PARTITION,
# SBATCH_ACCOUNT, SBATCH_TIMELIMIT, ...); CPUs per conversion task from CPUS_PER_TASK (default 4).
# The same as the two lines:
#   jid=$(sbatch --parsable --array=1-N tools/slurm/convert.sbatch OUT.parts LAYOUT ROOT [options])
#   sbatch --parsable --dependency=afterok:${jid%%;*} tools/slurm/merge.sbatch OUT.parts OUT
set -eu
if [ $# -lt 4 ]; then
    echo "usage: $0 N LAYOUT ROOT OUT [convert options]" >&2
    exit 2
fi
n=$1
layout=$2
root=$3
out=$4
shift 4
case $n in
    '' | *[!0-9]*) echo "$0: N must be a number of parts, got '$n'" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
jid=$(sbatch --parsable --array=1-"$n" --cpus-per-task="${CPUS_PER_TASK:-4}" "$here/convert.sbatch" \
    "$out.parts" "$layout" "$root" "$@")
jid=${jid%%;*} # --parsable prints "id" or "id;cluster"
mid=$(sbatch --parsable --dependency=afterok:"$jid" "$here/merge.sbatch" "$out.parts" "$out")
mid=${mid%%;*}
echo "convert array job $jid ($n tasks), merge job $mid"
