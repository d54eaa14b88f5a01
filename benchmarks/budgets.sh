# Shared budgets for benchmarks/scores.sh and benchmarks/ablation.sh (sourced, not run).
# Sets common, dt, iql, bc, wm, plan (overrides) and suffix (run-label suffix) for budget=$1:
#   cpu3k - preset=cpu (configs/preset/cpu.yaml), the named CPU budget of the README's tables
#           (one definition for both): 3k policy updates, IQL and BC 100k updates, world model 6k
#           steps, MPPI N=32 H=5 x1 iteration with half the candidates from the IQL actor;
#   cpu   - preset=cpu with 10k policy updates;
#   paper - preset=paper, the full budgets (GPU recommended).
# The per-stage variables stay for the scripts that splice them in; preset=cpu now holds their values.
iql=""; bc=""; wm=""; plan=""
common="preset=cpu logging.progress=false"
case "$1" in
  cpu)
    dt="policy.train.num_updates=10000 policy.train.warmup_steps=1000"; suffix="-10k" ;;
  cpu3k)  # the headline budget: plain labels (ipd, dt; the shared-builder tables called them ipd-3k, dt-3k)
    dt=""; suffix="" ;;
  paper)
    common="preset=paper logging.progress=false"; dt=""; suffix="-paper" ;;
  *)
    echo "unknown budget '$1': use cpu, cpu3k or paper" >&2; exit 2 ;;
esac
