#!/usr/bin/env bash
# Score benchmarks on the shared D4RL-protocol datasets (build them first:
#   python ../shared/datasets/build.py --only hopper-medium ...).
# Usage: bash benchmarks/scores.sh <budget> <task> [<seed>...]    budget: cpu | cpu3k | paper
#   (see benchmarks/budgets.sh; cpu runs one core each). Runs are labelled dt<suffix>, iql and
#   ipd<suffix> (cpu3k: dt-3k, ipd-value-3k, matching the ablation's arm); every run prints its JSON
#   line, and `python scripts/results.py --runs runs` tabulates them.
set -euo pipefail
budget=${1:-cpu}; task=${2:-hopper-medium}; shift 2 || true
seeds=${*:-0}
export WANDB_MODE=${WANDB_MODE:-offline} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
source "$(dirname "$0")/budgets.sh" "$budget"
ipd_label="ipd$suffix"
[ "$budget" = cpu3k ] && ipd_label="ipd-value-3k"
for seed in $seeds; do
  python scripts/train.py task="$task" algo=dt seed="$seed" logging.label="dt$suffix" $common $dt
  python scripts/train.py task="$task" algo=iql seed="$seed" $common $iql
  python scripts/train.py task="$task" algo=ipd seed="$seed" logging.label="$ipd_label" $common $dt $iql $wm $plan
done
