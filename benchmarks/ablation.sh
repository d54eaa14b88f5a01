#!/usr/bin/env bash
# Stage-3 ablation on one task. The default token (G_t undiscounted, 0.99-expectile V* at inference)
# without the imagined data, without the Q-term, or with alpha 1, 3 or 10 (the alpha sweep); the
# G_t token with the critic's gamma and/or the 0.9 expectile, or with the IQL V at inference (which
# needs the critic's gamma); the state-value token (with and without the imagined data, the Q-term,
# the 20% imagined share); RTG conditioning on the augmented data; an EMA (decay 0.998) of the
# policy weights; the inference head on the state alone, V*(s), or on (s, t) (statehead, timedhead);
# G_t bootstrapped at imagined ends with the data's mean return V_data(s, t) instead of the IQL V (bootdata);
# value tokens divided by task.return_scale as DT's RTG instead of standardised (scaled); and that
# with the imagined windows at their natural, length-proportional share instead of 20% (scaled-natural);
# and the oracle arm simcheck (not offline): the accepted rollouts replayed in the real simulator,
# only real improvements kept (augment.simulator_check, ipd/planning/simulator_check.py); and simdyn
# (not offline): stage 2 plans and executes in the real simulator instead of the world model
# (augment.dynamics=simulator, ipd/simulator.py). starts256/1024/16384 cap stage 2's planned start states
# (preset=cpu plans at most 4,096), for the curve of score against imagined data volume.
# Stages 1-2 are shared (same config hash), so only the distillation runs again.
# Runs go two at a time, one thread each. Every arm spells out the knobs it changes, so arms keep
# their meaning when defaults move.
# Usage: [ARMS="noaug ema0.998"] bash benchmarks/ablation.sh <budget> <task> [<seed>...]
#   budget: cpu3k | cpu | paper; ARMS: a subset of the arms below (default: all).
# Each run is labelled ipd-<arm><suffix>$LABEL_SUFFIX (logging.label), a column of
# `python scripts/results.py`; set LABEL_SUFFIX (e.g. -a5749f, the dataset fingerprint's head) to keep
# runs on another dataset build apart from the README table's.
set -euo pipefail
budget=${1:-cpu3k}; task=${2:-hopper-medium}; shift 2 || true
seeds=${*:-0}
export WANDB_MODE=${WANDB_MODE:-offline} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
source "$(dirname "$0")/budgets.sh" "$budget"
mkdir -p runs/logs
declare -A arms=(
  [noaug]="policy.use_augmented=false"
  [alpha0]="policy.train.alpha=0"
  [alpha1]="policy.train.alpha=1.0"
  [alpha3]="policy.train.alpha=3.0"
  [alpha10]="policy.train.alpha=10.0"
  [value-iql]="policy.condition=value policy.token_gamma=null policy.inference_value=iql"
  [value]="policy.condition=value policy.token_gamma=null policy.token_expectile=0.9"
  [value-gamma1]="policy.condition=value policy.token_gamma=1.0 policy.token_expectile=0.9"
  [value-tau0.99]="policy.condition=value policy.token_gamma=null policy.token_expectile=0.99"
  [state_value]="policy.condition=state_value"
  [state_value-noaug]="policy.condition=state_value policy.use_augmented=false"
  [state_value-alpha0]="policy.condition=state_value policy.train.alpha=0"
  [state_value-share-natural]="policy.condition=state_value policy.imagined_share=null"
  [rtg]="policy.condition=rtg"
  [ema0.998]="policy.train.ema=0.998"
  [statehead]="policy.token_head_time=false"
  [timedhead]="policy.token_head_time=true"
  [scaled]="policy.token_scale=return_scale"
  [scaled-noaug]="policy.token_scale=return_scale policy.use_augmented=false"
  [scaled-alpha0]="policy.token_scale=return_scale policy.train.alpha=0"
  [scaled-noaug-alpha0]="policy.token_scale=return_scale policy.use_augmented=false policy.train.alpha=0"
  [noaug-alpha0]="policy.use_augmented=false policy.train.alpha=0"
  [bootdata]="policy.token_bootstrap=data policy.token_bootstrap_expectile=0.5"
  [scaled-natural]="policy.token_scale=return_scale policy.imagined_share=null"
  [simcheck]="augment.simulator_check=true"
  [simdyn]="augment.dynamics=simulator"
  # the imagined-data volume curve (with noaug: 0 rows; results.py tabulates score vs imagined rows)
  [starts256]="augment.max_starts=256"
  [starts1024]="augment.max_starts=1024"
  [starts16384]="augment.max_starts=16384"
)
selected=${ARMS:-${!arms[*]}}
for arm in $selected; do
  [[ -v "arms[$arm]" ]] || { echo "unknown arm '$arm'; arms: ${!arms[*]}" >&2; exit 2; }
done
for seed in $seeds; do
  n=0
  for arm in $(printf '%s\n' $selected | sort); do
    log="runs/logs/$task-ipd-$arm-$seed.log"
    # shellcheck disable=SC2086
    (python scripts/train.py task="$task" algo=ipd seed="$seed" ${arms[$arm]} logging.label="ipd-$arm$suffix${LABEL_SUFFIX:-}" \
      $common $dt $iql $wm $plan > "$log" 2>&1 && tail -n 1 "$log" || echo "FAILED: $log") &
    n=$((n + 1))
    if [ $((n % 2)) -eq 0 ]; then wait; fi
  done
  wait
done
