#!/bin/bash
# Submits an engine study as a Slurm job array (one task per trial) and its
# report as a job that runs after every task has ended, however it ended.
#
#   RECORDS=/shared/records OUT=/shared/sweep examples/slurm/submit.sh
set -euo pipefail
here=$(dirname "$0")
: "${RECORDS:?set RECORDS to the records folder}"
: "${OUT:?set OUT to a sweep folder every node sees}"
# The number of trials, from the same options the tasks use.
# shellcheck disable=SC2086
n=$(engine compare "$RECORDS" --out "$OUT" --axis lr --preset paper --dry-run --json ${ENGINE_ARGS:-} \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["count"])')
job=$(sbatch --parsable --array=0-$((n - 1)) --export=ALL "$here/compare.sbatch")
sbatch --dependency=afterany:"$job" --job-name=engine-report --output=engine-report-%j.out \
    --wrap "engine report $OUT"
echo "submitted $n trials as job $job; engine report $OUT runs after them"
