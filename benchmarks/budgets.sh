# Shared budgets for benchmarks/scores.sh and benchmarks/ablation.sh (sourced, not run).
# Sets common, dt, iql, wm, plan (overrides) and suffix (run-label suffix) for budget=$1:
#   cpu   - the reduced CPU budgets of the README: 10k policy updates, IQL 100k, world model 6k steps,
#           MPPI N=64 H=5 x2 iterations, 10-step rollouts from <= 1,024 start states;
#   cpu3k - the same with 3k policy updates (labels end in -3k);
#   paper - preset=paper, the full budgets (GPU recommended).
iql="value.num_updates=100000"
wm="world_model.max_steps=6000 world_model.max_epochs=20"
plan="planner.num_samples=64 planner.horizon=5 planner.iterations=2 augment.rollout_length=10"
plan="$plan augment.max_starts=1024"
common="logging.progress=false"
case "$1" in
  cpu)
    dt="policy.train.num_updates=10000 policy.train.warmup_steps=1000 policy.train.log_every=500"; suffix="" ;;
  cpu3k)
    dt="policy.train.num_updates=3000 policy.train.warmup_steps=300 policy.train.log_every=500"; suffix="-3k" ;;
  paper)
    common="preset=paper logging.progress=false"; dt=""; iql=""; wm=""; plan=""; suffix="-paper" ;;
  *)
    echo "unknown budget '$1': use cpu, cpu3k or paper" >&2; exit 2 ;;
esac
