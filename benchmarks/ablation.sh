#!/usr/bin/env bash
# Stage-3 ablation on one task: the IPD token with its inference optimism settings (expectile head
# tau 0.7 / 0.9 (default) / 0.99, the IQL V), the earlier state-value token, RTG on the augmented data,
# and the Q-term weight alpha = 0 / 1 (default) / 3 / 10. Stages 1-2 are shared (same config
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
  [value-tau0.7]="policy.condition=value policy.inference_value=expectile policy.token_expectile=0.7"
  [value-tau0.9]="policy.condition=value policy.inference_value=expectile policy.token_expectile=0.9"
  [value-tau0.99]="policy.condition=value policy.inference_value=expectile policy.token_expectile=0.99"
  [value-iql]="policy.condition=value policy.inference_value=iql"
  [state_value]="policy.condition=state_value"
  [rtg]="policy.condition=rtg"
  [value-alpha0]="policy.condition=value policy.train.alpha=0"
  [value-alpha3]="policy.condition=value policy.train.alpha=3"
  [value-alpha10]="policy.condition=value policy.train.alpha=10"
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
