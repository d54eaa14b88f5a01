"""Planning in the learned world model: batched MPPI/CEM and receding-horizon imagined rollouts."""

from ipd.planning.planner import ImaginedRollout, Planner, PlannerConfig, PlanResult, shift_mean

__all__ = ["ImaginedRollout", "Planner", "PlannerConfig", "PlanResult", "shift_mean"]
