#!/usr/bin/env bash
# Score benchmark: IPD, DT, IQL, BC and 10%BC on the given tasks and seeds at one named budget.
# Build the datasets first: python ../shared/datasets/build.py --only <task>.
# Usage: bash benchmarks/scores.sh <budget> "<task> <task> ..." [<seed>...]
#   budget: cpu3k | cpu | paper (benchmarks/budgets.sh). Runs go two at a time, one thread each
#   (OMP_NUM_THREADS=1), so both cores of a 2-core machine are used. Stage-1 artifacts are
#   shared: for each (task, seed) stage 1 runs first (world model + IQL), then every algorithm.
#   Labels: ipd<suffix>, dt<suffix>, iql, bc, bc10; every run prints its JSON line, and
#   `python scripts/results.py --runs runs --out results` tabulates them (final evaluation, mean ± std
#   over seeds) with the wall time of each stage.
set -euo pipefail
budget=${1:-cpu3k}; tasks=${2:-hopper-medium}; shift 2 || true
seeds=${*:-0 1 2}
export WANDB_MODE=${WANDB_MODE:-offline} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
source "$(dirname "$0")/budgets.sh" "$budget"
mkdir -p runs/logs
run() {  # run <log name> <overrides...>: one training run, output to runs/logs/<name>.log
  local name=$1; shift
  python scripts/train.py "$@" > "runs/logs/$name.log" 2>&1 && tail -n 1 "runs/logs/$name.log" \
    || echo "FAILED: $name (see runs/logs/$name.log)"
}
for task in $tasks; do
  for seed in $seeds; do
    # Stage 1 (world model and IQL value), once per task and seed, two jobs side by side.
    python scripts/train.py task="$task" seed="$seed" algo=iql $common $iql > "runs/logs/$task-iql-$seed.log" 2>&1 &
    python scripts/learn_models.py task="$task" seed="$seed" $common $iql $wm > /dev/null 2>&1 &
    wait
    tail -n 1 "runs/logs/$task-iql-$seed.log"
    run "$task-ipd-$seed" task="$task" seed="$seed" algo=ipd logging.label="ipd$suffix" $common $dt $iql $wm $plan &
    run "$task-dt-$seed" task="$task" seed="$seed" algo=dt logging.label="dt$suffix" $common $dt &
    wait
    run "$task-bc-$seed" task="$task" seed="$seed" algo=bc $common $bc &
    run "$task-bc10-$seed" task="$task" seed="$seed" algo=bc10 $common $bc &
    wait
  done
done
