#!/usr/bin/env bash
# Stage-3 conditioning ablation: policy.condition=rtg|value|relabel on the same IPD-augmented data.
# Stages 1-2 are shared (same config hash), so only the distillation runs three times.
# Usage: bash benchmarks/ablation.sh <budget> <task> [<seed>...]
#   budget=cpu: the reduced CPU budget of the README figures (3000 distillation updates);
#   budget=paper: the full budgets (preset=paper).
# Each run is labelled ipd-<mode>-<budget> (logging.label), a column of `python scripts/results.py`.
set -euo pipefail
budget=${1:-cpu}; task=${2:-hopper-medium}; shift 2 || true
seeds=${*:-0}
export WANDB_MODE=${WANDB_MODE:-offline} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [ "$budget" = cpu ]; then
  common="logging.progress=false value.num_updates=100000 world_model.max_steps=6000 world_model.max_epochs=20"
  common="$common planner.num_samples=64 planner.horizon=5 planner.iterations=2 augment.rollout_length=10"
  common="$common augment.max_starts=1024 policy.train.num_updates=3000 policy.train.warmup_steps=300"
  common="$common policy.train.log_every=500"
  tag=3k
else
  common="preset=paper logging.progress=false"; tag=paper
fi
for seed in $seeds; do
  for mode in rtg value relabel; do
    python scripts/train.py task="$task" algo=ipd seed="$seed" policy.condition="$mode" \
      logging.label="ipd-$mode-$tag" $common
  done
done
