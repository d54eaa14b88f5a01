#!/usr/bin/env bash
# Stage-3 ablation: policy.condition=rtg|value|relabel on the same IPD-augmented data, plus value
# conditioning without the Q-term (policy.train.alpha=0).
# Stages 1-2 are shared (same config hash), so only the distillation runs three times.
# Usage: bash benchmarks/ablation.sh <budget> <task> [<seed>...]    budget: cpu3k | cpu | paper
#   (see benchmarks/budgets.sh; the README's ablation is cpu3k: 3,000 distillation updates).
# Each run is labelled ipd-<mode><suffix> (logging.label), a column of `python scripts/results.py`.
set -euo pipefail
budget=${1:-cpu3k}; task=${2:-hopper-medium}; shift 2 || true
seeds=${*:-0}
export WANDB_MODE=${WANDB_MODE:-offline} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
source "$(dirname "$0")/budgets.sh" "$budget"
for seed in $seeds; do
  for mode in rtg value relabel; do
    python scripts/train.py task="$task" algo=ipd seed="$seed" policy.condition="$mode" \
      logging.label="ipd-$mode$suffix" $common $dt $iql $wm $plan
  done
  # Is the Q-term what moves the score? The value arm without it.
  python scripts/train.py task="$task" algo=ipd seed="$seed" policy.condition=value policy.train.alpha=0 \
    logging.label="ipd-value-noq$suffix" $common $dt $iql $wm $plan
done
