"""Task registry: D4RL MuJoCo locomotion tasks and everything known about them.

A task name is ``<env>-<level>`` (``hopper-medium``, ``halfcheetah-medium-replay`` ...).
Each :class:`TaskSpec` carries the gymnasium env id used for evaluation, the D4RL v2
dataset name / file name / URL, D4RL's reference returns for score normalisation,
observation and action sizes, and the termination rule as batched numpy and torch
functions (the world model applies it to every imagined step).

Termination rules are the gymnasium ``*-v4`` healthy-state checks written on the
*observation* (which omits the x position):

- hopper: ``obs[0]`` (torso height) > 0.7, ``|obs[1]|`` (torso angle) < 0.2 and every
  other entry in (-100, 100) (the env checks unclipped joint velocities, the observation
  holds them clipped to ±10, so that part of the rule cannot fire from observations; real
  rollouts never reach |qvel| > 100, see tests/test_tasks.py);
- walker2d: 0.8 < ``obs[0]`` < 2.0 and -1 < ``obs[1]`` < 1;
- halfcheetah: never terminates.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import numpy as np
import torch

D4RL_URL_BASE = "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2"

LEVELS = ("random", "medium", "medium-replay", "medium-expert", "expert")


class UnknownTaskError(ValueError):
    """Raised for a task name that is not in the registry."""


@dataclass(frozen=True)
class EnvSpec:
    name: str
    gym_id: str
    obs_dim: int
    act_dim: int
    ref_min_score: float  # D4RL REF_MIN_SCORE (random policy)
    ref_max_score: float  # D4RL REF_MAX_SCORE (expert policy)


ENVS: dict[str, EnvSpec] = {
    "hopper": EnvSpec("hopper", "Hopper-v4", 11, 3, -20.272305, 3234.3),
    "halfcheetah": EnvSpec("halfcheetah", "HalfCheetah-v4", 17, 6, -280.178953, 12135.0),
    "walker2d": EnvSpec("walker2d", "Walker2d-v4", 17, 6, 1.629008, 4592.3),
}


def _alive_np(env: str, obs: np.ndarray) -> np.ndarray:
    finite = np.isfinite(obs).all(axis=-1)
    if env == "hopper":
        height, angle = obs[..., 0], obs[..., 1]
        in_range = (np.abs(obs[..., 1:]) < 100.0).all(axis=-1)
        return finite & in_range & (height > 0.7) & (np.abs(angle) < 0.2)
    if env == "walker2d":
        height, angle = obs[..., 0], obs[..., 1]
        return finite & (height > 0.8) & (height < 2.0) & (angle > -1.0) & (angle < 1.0)
    return finite


def _alive_torch(env: str, obs: torch.Tensor) -> torch.Tensor:
    finite = torch.isfinite(obs).all(dim=-1)
    if env == "hopper":
        height, angle = obs[..., 0], obs[..., 1]
        in_range = (obs[..., 1:].abs() < 100.0).all(dim=-1)
        return finite & in_range & (height > 0.7) & (angle.abs() < 0.2)
    if env == "walker2d":
        height, angle = obs[..., 0], obs[..., 1]
        return finite & (height > 0.8) & (height < 2.0) & (angle > -1.0) & (angle < 1.0)
    return finite


@dataclass(frozen=True)
class TaskSpec:
    """One dataset task, e.g. ``hopper-medium``."""

    name: str
    env: EnvSpec
    level: str

    @property
    def gym_id(self) -> str:
        return self.env.gym_id

    @property
    def obs_dim(self) -> int:
        return self.env.obs_dim

    @property
    def act_dim(self) -> int:
        return self.env.act_dim

    @property
    def d4rl_name(self) -> str:
        return f"{self.name}-v2"

    @property
    def d4rl_file(self) -> str:
        """File name used by D4RL's cache, e.g. ``hopper_medium_replay-v2.hdf5``."""
        return f"{self.env.name}_{self.level.replace('-', '_')}-v2.hdf5"

    def d4rl_url(self, url_base: str = D4RL_URL_BASE) -> str:
        return f"{url_base.rstrip('/')}/{self.d4rl_file}"

    def normalize_score(self, returns: np.ndarray | float) -> np.ndarray:
        """D4RL normalised score: 100 * (return - random) / (expert - random)."""
        lo, hi = self.env.ref_min_score, self.env.ref_max_score
        return 100.0 * (np.asarray(returns, dtype=np.float64) - lo) / (hi - lo)

    def is_terminal_np(self, next_obs: np.ndarray) -> np.ndarray:
        """Batched termination on next observations ``[..., obs_dim]`` -> bool ``[...]``."""
        return ~_alive_np(self.env.name, next_obs)

    def is_terminal_torch(self, next_obs: torch.Tensor) -> torch.Tensor:
        return ~_alive_torch(self.env.name, next_obs)


TASKS: dict[str, TaskSpec] = {
    f"{env}-{level}": TaskSpec(f"{env}-{level}", spec, level)
    for env, spec in ENVS.items()
    for level in LEVELS
}


def get_task(name: str) -> TaskSpec:
    """Look up a task; an unknown name lists the known ones and the closest match."""
    key = name.strip().lower()
    if key.endswith("-v2"):
        key = key[:-3]
    if key in TASKS:
        return TASKS[key]
    close = difflib.get_close_matches(key, TASKS.keys(), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise UnknownTaskError(f"Unknown task '{name}'.{hint} Known tasks: {', '.join(sorted(TASKS))}.")
