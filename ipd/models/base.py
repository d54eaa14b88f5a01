"""Interfaces shared between learned models, the planner and evaluation.

These are structural (``typing.Protocol``) so that tests can plug in analytic models,
and so that ``planning`` depends only on these shapes, not on a concrete network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch


@dataclass
class ModelStep:
    """One batched imagined step. All tensors share the leading batch dim B."""

    next_states: torch.Tensor  # [B, obs]
    rewards: torch.Tensor  # [B], env reward units
    terminals: torch.Tensor  # [B] bool, from the task's termination rule
    uncertainty: torch.Tensor  # [B], >= 0 (0 for a perfect model)


class DynamicsModel(Protocol):
    def step(
        self, states: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None = None
    ) -> ModelStep: ...


class ValueFunction(Protocol):
    """V(s) in env-return units, batched: [B, obs] -> [B]."""

    def __call__(self, states: torch.Tensor) -> torch.Tensor: ...


class ActionPrior(Protocol):
    """A policy proposing actions for planning: [B, obs] -> [B, act] in [-1, 1]."""

    def __call__(self, states: torch.Tensor) -> torch.Tensor: ...


class Policy(Protocol):
    """What :func:`ipd.evaluation.evaluate_policy` drives, over ``num_envs`` parallel envs.

    ``reset`` starts fresh episodes in every env; ``act`` maps a batch of raw observations
    to actions in the env's action space; ``observe`` feeds back the rewards of that step
    and which envs finished (sequence policies update their histories / return-to-go).
    """

    def reset(self, num_envs: int) -> None: ...

    def act(self, observations: np.ndarray) -> np.ndarray: ...

    def observe(self, rewards: np.ndarray, dones: np.ndarray) -> None: ...
