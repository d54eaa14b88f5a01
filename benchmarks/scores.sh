#!/usr/bin/env bash
# Score benchmark: IPD, DT, IQL, BC and 10%BC on the given tasks and seeds at one named budget.
# Datasets: a missing one is generated on first use (ipd.generate); or first run
# python scripts/make_dataset.py task=<task> once per task, so parallel jobs never wait on it.
# Usage: bash benchmarks/scores.sh <budget> "<task> <task> ..." [<seed>...]
#   budget: cpu3k | cpu | paper (benchmarks/budgets.sh). JOBS runs (default 2) go side by side, one
#   thread each (OMP_NUM_THREADS=1), from one job list, so a core that finishes early takes the next
#   run instead of waiting for its partner. Stage-1 artifacts are shared through the artifact store:
#   the IQL run trains the value function, and the IPD run (listed after it) trains the world model,
#   then reuses that value function (it waits on the artifact's lock if the IQL run still holds it).
#   Labels: ipd<suffix>, dt<suffix>, iql, bc, bc10, each followed by $LABEL_SUFFIX when set; every run prints its JSON line (or FAILED), and
#   `python scripts/results.py --runs runs --out results --ledger results/runs.jsonl` records them in
#   the committed ledger and tabulates them (final evaluation, mean ± std
#   over seeds) with the wall time of each stage.
set -euo pipefail
budget=${1:-cpu3k}; tasks=${2:-hopper-medium}; shift 2 || true
seeds=${*:-0 1 2}
export WANDB_MODE=${WANDB_MODE:-offline} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
source "$(dirname "$0")/budgets.sh" "$budget"
mkdir -p runs/logs
joblist=$(mktemp)
trap 'rm -f "$joblist"' EXIT
job() {  # job <task> <seed> <name> <overrides...>: one line of the job list
  local task=$1 seed=$2 name=$3; shift 3
  local log="runs/logs/$task-$name-$seed.log"
  echo "python scripts/train.py task=$task seed=$seed $* > $log 2>&1 && tail -n 1 $log || echo 'FAILED: $log'"
}
for task in $tasks; do
  for seed in $seeds; do
    job "$task" "$seed" iql algo=iql logging.label="iql${LABEL_SUFFIX:-}" $common $iql
    job "$task" "$seed" dt algo=dt logging.label="dt$suffix${LABEL_SUFFIX:-}" $common $dt
    job "$task" "$seed" bc algo=bc logging.label="bc${LABEL_SUFFIX:-}" $common $bc
    job "$task" "$seed" bc10 algo=bc10 logging.label="bc10${LABEL_SUFFIX:-}" $common $bc
    job "$task" "$seed" ipd algo=ipd logging.label="ipd$suffix${LABEL_SUFFIX:-}" $common $dt $iql $wm $plan
  done
done > "$joblist"
xargs -d '\n' -P "${JOBS:-2}" -I{} bash -c '{}' < "$joblist"
