"""Flat transition arrays, episode structure, returns-to-go and normalisation stats.

Contract (docs/design.md §3): an episode ends at ``terminals | timeouts`` or at the last row;
``next_observations`` are the true next states and are never replaced by
``observations[i + 1]`` (which belongs to the next episode at a boundary).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

CORE_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")


class DatasetError(ValueError):
    """A dataset is missing, corrupt or violates the data contract."""


@dataclass
class Transitions:
    """Flat float32/bool arrays of N transitions; ``extras`` holds per-row annotations
    such as ``imagined``, ``source_episode``, ``start_index`` or ``value``."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.observations = np.asarray(self.observations, np.float32)
        self.actions = np.asarray(self.actions, np.float32)
        self.rewards = np.asarray(self.rewards, np.float32).reshape(-1)
        self.next_observations = np.asarray(self.next_observations, np.float32)
        self.terminals = np.asarray(self.terminals).reshape(-1).astype(bool)
        self.timeouts = np.asarray(self.timeouts).reshape(-1).astype(bool)
        self.validate()

    def validate(self, name: str = "dataset") -> None:
        """Check shapes, lengths and finiteness; raise :class:`DatasetError` naming the problem."""
        n = len(self.observations)
        if n == 0:
            raise DatasetError(f"{name} is empty (0 transitions).")
        if self.observations.ndim != 2 or self.actions.ndim != 2 or self.next_observations.ndim != 2:
            raise DatasetError(f"{name}: observations, next_observations and actions must be 2-D arrays.")
        for key in CORE_KEYS[1:]:
            if len(getattr(self, key)) != n:
                raise DatasetError(
                    f"{name}: '{key}' has {len(getattr(self, key))} rows but 'observations' has {n}. "
                    "The file is truncated or was written inconsistently; rebuild it."
                )
        if self.next_observations.shape[1] != self.observations.shape[1]:
            raise DatasetError(f"{name}: next_observations and observations differ in width.")
        for key, arr in self.extras.items():
            if len(arr) != n:
                raise DatasetError(f"{name}: extra field '{key}' has {len(arr)} rows, expected {n}.")
        for key in ("observations", "actions", "rewards", "next_observations"):
            arr = getattr(self, key)
            bad = ~np.isfinite(arr)
            if bad.any():
                rows = np.unique(np.nonzero(bad)[0])
                raise DatasetError(
                    f"{name}: '{key}' contains {int(bad.sum())} NaN/inf values in {len(rows)} rows "
                    f"(first rows: {rows[:5].tolist()}). Clean or drop those transitions before training."
                )

    def __len__(self) -> int:
        return len(self.observations)

    @property
    def obs_dim(self) -> int:
        return self.observations.shape[1]

    @property
    def act_dim(self) -> int:
        return self.actions.shape[1]

    @property
    def episode_ends(self) -> np.ndarray:
        """Bool [N]: row i is the last step of its episode."""
        ends = self.terminals | self.timeouts
        ends[-1] = True
        return ends

    def subset(self, index: np.ndarray) -> Transitions:
        return Transitions(
            *(getattr(self, k)[index] for k in CORE_KEYS),
            extras={k: v[index] for k, v in self.extras.items()},
        )

    def arrays(self) -> dict[str, np.ndarray]:
        return {**{k: getattr(self, k) for k in CORE_KEYS}, **self.extras}

    @classmethod
    def concatenate(cls, parts: list[Transitions]) -> Transitions:
        keys = set(parts[0].extras)
        if any(set(p.extras) != keys for p in parts):
            raise DatasetError("Cannot concatenate transitions with different extra fields.")
        return cls(
            *(np.concatenate([getattr(p, k) for p in parts]) for k in CORE_KEYS),
            extras={k: np.concatenate([p.extras[k] for p in parts]) for k in sorted(keys)},
        )


def episode_bounds(episode_ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start offsets and lengths of the episodes given by a bool end-marker array."""
    ends = np.flatnonzero(episode_ends)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return starts.astype(np.int64), (ends - starts + 1).astype(np.int64)


def returns_to_go(
    rewards: np.ndarray,
    episode_ends: np.ndarray,
    gamma: float = 1.0,
    tail: np.ndarray | None = None,
) -> np.ndarray:
    """Discounted reward-to-go within each episode, accumulated in float64, returned as float32.

    ``tail`` (optional, [N]) bootstraps each episode: at an end row i the return is
    ``r[i] + gamma * tail[i]`` (e.g. ``V(s'_i)`` at a timeout, 0 at a terminal); other rows
    ignore it.

    Solves ``y[i] = r[i] + a[i] * y[i + 1]`` with ``a[i] = 0`` at episode ends (else ``gamma``)
    by a doubling scan: each pass doubles the look-ahead, so ``ceil(log2(longest episode))``
    vectorised passes over the array replace a Python loop over rows.
    """
    y = np.asarray(rewards, np.float64).reshape(-1).copy()
    ends = np.asarray(episode_ends, bool).reshape(-1).copy()
    if len(ends) != len(y):
        raise ValueError(f"rewards has {len(y)} rows but episode_ends has {len(ends)}")
    if len(ends):
        ends[-1] = True  # the last row always ends an episode
    if tail is not None:
        tail = np.asarray(tail, np.float64).reshape(-1)
        if len(tail) != len(y):
            raise ValueError(f"rewards has {len(y)} rows but tail has {len(tail)}")
        y += np.where(ends, float(gamma) * tail, 0.0)
    a = np.where(ends, 0.0, float(gamma))
    d = 1
    while d < len(y) and a.any():
        # Invariant: y[i] sums r[i .. i + d - 1] (discounted, cut at the episode end) and
        # a[i] is the discount carried past that window (0 once the window hits an end).
        y[:-d] = y[:-d] + a[:-d] * y[d:]
        a[:-d] = a[:-d] * a[d:]
        a[-d:] = 0.0
        d *= 2
    return y.astype(np.float32)


@dataclass
class Trajectories:
    """Episode view over :class:`Transitions` with precomputed (undiscounted) returns-to-go."""

    transitions: Transitions
    starts: np.ndarray
    lengths: np.ndarray
    returns_to_go: np.ndarray  # [N], undiscounted, per row
    timesteps: np.ndarray  # [N], step index within the episode

    @classmethod
    def from_transitions(cls, transitions: Transitions) -> Trajectories:
        ends = transitions.episode_ends
        starts, lengths = episode_bounds(ends)
        timesteps = np.arange(len(transitions)) - np.repeat(starts, lengths)
        if "timestep" in transitions.extras:  # stitched trajectories may start mid-episode
            timesteps = transitions.extras["timestep"].astype(np.int64)
        return cls(transitions, starts, lengths, returns_to_go(transitions.rewards, ends), timesteps)

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def episode_returns(self) -> np.ndarray:
        return self.returns_to_go[self.starts]

    @property
    def episode_ids(self) -> np.ndarray:
        """Episode index of every row [N]."""
        return np.repeat(np.arange(len(self.starts)), self.lengths)

    def discounted_returns_to_go(self, gamma: float) -> np.ndarray:
        return returns_to_go(self.transitions.rewards, self.transitions.episode_ends, gamma)


@dataclass
class Normalizer:
    """Per-feature affine normaliser ``(x - mean) / std`` usable on numpy arrays and tensors."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, eps: float = 1e-3) -> Normalizer:
        x = np.asarray(x, np.float64)
        return cls(x.mean(0).astype(np.float32), (x.std(0) + eps).astype(np.float32))

    @classmethod
    def identity(cls, dim: int) -> Normalizer:
        return cls(np.zeros(dim, np.float32), np.ones(dim, np.float32))

    def normalize(self, x):
        if isinstance(x, torch.Tensor):
            return (x - torch.as_tensor(self.mean, device=x.device)) / torch.as_tensor(
                self.std, device=x.device
            )
        return (x - self.mean) / self.std

    def denormalize(self, x):
        if isinstance(x, torch.Tensor):
            return x * torch.as_tensor(self.std, device=x.device) + torch.as_tensor(
                self.mean, device=x.device
            )
        return x * self.std + self.mean

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_state_dict(cls, d: dict[str, np.ndarray]) -> Normalizer:
        return cls(np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32))


def reward_scale_for(transitions: Transitions, mode: str) -> float:
    """Reward multiplier for a value learner's ``reward_normalization`` ``mode`` (returns | std | none).

    ``returns`` is IQL's locomotion rule ``1000 / (max - min episode return)``.
    """
    if mode == "none":
        return 1.0
    if mode == "std":
        std = float(np.std(transitions.rewards, dtype=np.float64))
        if std < 1e-8:
            warnings.warn("reward std is ~0; reward_normalization='std' falls back to scale 1.", stacklevel=3)
            return 1.0
        return 1.0 / std
    if mode == "returns":
        returns = Trajectories.from_transitions(transitions).episode_returns.astype(np.float64)
        spread = float(returns.max() - returns.min())
        if spread < 1e-6:
            warnings.warn(
                "all episodes have the same return; reward_normalization='returns' falls back to scale 1.",
                stacklevel=3,
            )
            return 1.0
        return 1000.0 / spread
    raise ValueError(f"reward_normalization must be 'returns', 'std' or 'none', got '{mode}'")
