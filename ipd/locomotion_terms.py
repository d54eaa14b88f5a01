"""The reward and observation terms of gymnasium's MuJoCo locomotion envs, read from an env.

Two parts of ipd step these envs without gymnasium's ``step``: the dataset generator
(:class:`ipd.generate.locomotion.BatchedLocomotion`, float for float with gymnasium) and stage 2's
oracle (:class:`ipd.simulator.SimulatorDynamics`). Both compute what gymnasium's hopper, walker2d
and halfcheetah envs compute (v4 and v5):

- reward ``forward_weight * dx/dt + healthy_reward - ctrl_weight * |a|^2``, where v4 pays the
  healthy reward on every step (its envs terminate when unhealthy) and v5 only while healthy;
- observation ``qpos[1:]`` and ``qvel``, the velocities clipped to ±10 for hopper and walker2d.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ipd.tasks import QVEL_CLIP, TaskSpec


@dataclass(frozen=True)
class LocomotionTerms:
    forward_weight: float
    ctrl_weight: float
    healthy_weight: float  # 0 for halfcheetah, which has no healthy reward
    healthy_only_while_healthy: bool  # v5
    clips_velocity: bool  # hopper and walker2d

    @classmethod
    def of(cls, task: TaskSpec, sim: Any) -> LocomotionTerms:
        """The terms of ``task``'s env; ``sim`` is that env's ``unwrapped`` MuJoCo env."""
        return cls(
            forward_weight=float(sim._forward_reward_weight),
            ctrl_weight=float(sim._ctrl_cost_weight),
            healthy_weight=float(getattr(sim, "_healthy_reward", 0.0)),
            healthy_only_while_healthy=task.env_version != "v4",
            clips_velocity=task.env.name in ("hopper", "walker2d"),
        )

    def rewards(self, x_velocity: np.ndarray, actions: np.ndarray, terminated: np.ndarray) -> np.ndarray:
        """Per-row reward from the x velocity, the actions and whether the next state is unhealthy."""
        healthy = np.full(len(x_velocity), self.healthy_weight)
        if self.healthy_only_while_healthy:
            healthy = np.where(terminated, 0.0, healthy)
        # A Python float weight, as gymnasium's: the cost keeps the actions' dtype (float32 for the
        # generator's actions, bit for bit with gymnasium; float64 for the simulator oracle's).
        ctrl_cost = self.ctrl_weight * np.sum(np.square(actions), axis=1)
        return (self.forward_weight * x_velocity + healthy) - ctrl_cost

    def observation(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        if self.clips_velocity:
            qvel = np.clip(qvel, -QVEL_CLIP, QVEL_CLIP)
        return np.concatenate([qpos[..., 1:], qvel], -1)
