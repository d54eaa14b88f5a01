#!/usr/bin/env bash
# Stage-3 ablation on one task: the default state-value token without the imagined data, without
# the Q-term and with the natural imagined share; the G_t token (critic gamma, undiscounted, a more
# optimistic tau, the IQL V at inference); and RTG conditioning on the augmented data. Stages 1-2 are shared (same config
# hash), so only the distillation runs again. Runs go two at a time, one thread each.
# Usage: bash benchmarks/ablation.sh <budget> <task> [<seed>...]    budget: cpu3k | cpu | paper
# Each run is labelled ipd-<arm><suffix> (logging.label), a column of `python scripts/results.py`.
set -euo pipefail
budget=${1:-cpu3k}; task=${2:-hopper-medium}; shift 2 || true
seeds=${*:-0}
export WANDB_MODE=${WANDB_MODE:-offline} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
source "$(dirname "$0")/budgets.sh" "$budget"
mkdir -p runs/logs
declare -A arms=(
  [state_value]="policy.condition=state_value"
  [state_value-noaug]="policy.condition=state_value policy.use_augmented=false"
  [state_value-alpha0]="policy.condition=state_value policy.train.alpha=0"
  [state_value-share-natural]="policy.condition=state_value policy.imagined_share=null"
  [value]="policy.condition=value"
  [value-gamma1]="policy.condition=value policy.token_gamma=1.0"
  [value-tau0.99]="policy.condition=value policy.token_expectile=0.99"
  [value-iql]="policy.condition=value policy.inference_value=iql"
  [rtg]="policy.condition=rtg"
)
for seed in $seeds; do
  n=0
  for arm in $(printf '%s\n' "${!arms[@]}" | sort); do
    log="runs/logs/$task-ipd-$arm-$seed.log"
    # shellcheck disable=SC2086
    (python scripts/train.py task="$task" algo=ipd seed="$seed" ${arms[$arm]} logging.label="ipd-$arm$suffix" \
      $common $dt $iql $wm $plan > "$log" 2>&1 && tail -n 1 "$log" || echo "FAILED: $log") &
    n=$((n + 1))
    if [ $((n % 2)) -eq 0 ]; then wait; fi
  done
  wait
done
