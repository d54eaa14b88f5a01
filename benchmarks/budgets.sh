# Shared budgets for benchmarks/scores.sh and benchmarks/ablation.sh (sourced, not run).
# Sets common, dt, iql, bc, wm, plan (overrides) and suffix (run-label suffix) for budget=$1:
#   cpu3k - the named CPU budget of the README's tables (one core per run): 3k policy updates,
#           IQL and BC 100k updates, world model 6k steps, MPPI N=32 H=5 x1 iteration with half the
#           candidates from the IQL actor, rollouts of up to 30 steps (cut by uncertainty) from
#           <= 4,096 start states (about 100k imagined steps, ~10 min of planning on one core);
#   cpu   - the same with 10k policy updates;
#   paper - preset=paper, the full budgets (GPU recommended).
iql="value.num_updates=100000"
bc="bc.num_updates=100000"
wm="world_model.max_steps=6000 world_model.max_epochs=20"
plan="planner.num_samples=32 planner.horizon=5 planner.iterations=1 planner.prior_fraction=0.5"
common="logging.progress=false"
case "$1" in
  cpu)
    dt="policy.train.num_updates=10000 policy.train.warmup_steps=1000 policy.train.log_every=500"; suffix="" ;;
  cpu3k)
    dt="policy.train.num_updates=3000 policy.train.warmup_steps=300 policy.train.log_every=500"; suffix="-3k" ;;
  paper)
    common="preset=paper logging.progress=false"; dt=""; iql=""; bc=""; wm=""; plan=""; suffix="-paper" ;;
  *)
    echo "unknown budget '$1': use cpu, cpu3k or paper" >&2; exit 2 ;;
esac
