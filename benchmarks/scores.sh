#!/usr/bin/env bash
# Score benchmarks on the shared D4RL-protocol datasets (build them first:
#   python ../shared/datasets/build.py --only hopper-medium ...).
# Usage: bash benchmarks/scores.sh <budget> <task> [<seed>...]
#   budget=cpu: the reduced CPU budgets used for the figures in the README (one core each);
#   budget=paper: the full budgets (preset=paper; GPU recommended).
# Every run prints its JSON line; `python scripts/results.py --runs runs` tabulates them.
set -euo pipefail
budget=${1:-cpu}; task=${2:-hopper-medium}; shift 2 || true
seeds=${*:-0}
export WANDB_MODE=${WANDB_MODE:-offline} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [ "$budget" = cpu ]; then
  common="logging.progress=false"
  dt="policy.train.num_updates=10000 policy.train.warmup_steps=1000 policy.train.log_every=500"
  iql="value.num_updates=100000"
  wm="world_model.max_steps=6000 world_model.max_epochs=20"
  plan="planner.num_samples=64 planner.horizon=5 planner.iterations=2 augment.rollout_length=10 augment.max_starts=1024"
else
  common="preset=paper logging.progress=false"; dt=""; iql=""; wm=""; plan=""
fi
for seed in $seeds; do
  python scripts/train.py task="$task" algo=dt seed="$seed" $common $dt
  python scripts/train.py task="$task" algo=iql seed="$seed" $common $iql
  python scripts/train.py task="$task" algo=ipd seed="$seed" $common $dt $iql $wm $plan
done
