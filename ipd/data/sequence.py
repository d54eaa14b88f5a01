"""Decision-Transformer sequence sampler.

Samples windows of K steps from trajectories. Trajectories are drawn with probability
proportional to their length (as in the DT reference implementation) unless
``trajectory_probs`` says otherwise (stage 3 uses it to give imagined data a set share), a window start is
drawn uniformly inside the trajectory, and windows shorter than K are left-padded with
zeros and a 0 mask so that the *last* real token sits at position K-1. That keeps
training aligned with inference, where the history grows from the left.

The conditioning value per row is passed in (``conditioning``): undiscounted RTG for
plain DT, or one of IPD's value-based tokens (:mod:`ipd.distill`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ipd.data.transitions import Normalizer, Trajectories


@dataclass
class SequenceBatch:
    states: np.ndarray  # [B, K, obs]   (normalised)
    actions: np.ndarray  # [B, K, act]
    conditioning: np.ndarray  # [B, K, 1]  (scaled)
    timesteps: np.ndarray  # [B, K] int64
    mask: np.ndarray  # [B, K] float32: 1 for real tokens
    weights: np.ndarray  # [B, K] float32: per-token loss weight (imagined vs real)
    rows: np.ndarray  # [B, K] int64: dataset row of each token, -1 for padding


class SequenceSampler:
    """Batched sampler of fixed-length, left-padded trajectory windows."""

    def __init__(
        self,
        trajectories: Trajectories,
        context: int,
        conditioning: np.ndarray | None = None,
        conditioning_scale: float = 1.0,
        state_normalizer: Normalizer | None = None,
        row_weights: np.ndarray | None = None,
        max_timestep: int = 1000,
        seed: int = 0,
        trajectory_probs: np.ndarray | None = None,
    ) -> None:
        if context < 1:
            raise ValueError(f"context must be >= 1, got {context}")
        self.traj = trajectories
        self.context = context
        t = trajectories.transitions
        cond = trajectories.returns_to_go if conditioning is None else np.asarray(conditioning, np.float32)
        if len(cond) != len(t):
            raise ValueError(f"conditioning has {len(cond)} rows, dataset has {len(t)}")
        norm = state_normalizer or Normalizer.identity(t.obs_dim)
        # Padded copies: row index -1 maps to a zero row, so gathering needs no branches.
        self._states = np.concatenate([norm.normalize(t.observations), np.zeros((1, t.obs_dim), np.float32)])
        self._actions = np.concatenate([t.actions, np.zeros((1, t.act_dim), np.float32)])
        self._cond = np.concatenate([cond / conditioning_scale, [0.0]]).astype(np.float32)
        w = np.ones(len(t), np.float32) if row_weights is None else np.asarray(row_weights, np.float32)
        if w.shape != (len(t),):
            raise ValueError(f"row_weights has shape {w.shape}, expected ({len(t)},)")
        self._weights = np.concatenate([w, [0.0]]).astype(np.float32)
        self._timesteps = np.concatenate([np.minimum(trajectories.timesteps, max_timestep - 1), [0]])
        if trajectory_probs is None:
            self._probs = trajectories.lengths / trajectories.lengths.sum()
        else:
            p = np.asarray(trajectory_probs, np.float64)
            if p.shape != (len(trajectories),) or (p < 0).any() or p.sum() <= 0:
                raise ValueError(
                    f"trajectory_probs must be {len(trajectories)} non-negative numbers with a positive sum"
                )
            self._probs = p / p.sum()
        self.rng = np.random.default_rng(seed)

    def sample(self, batch_size: int) -> SequenceBatch:
        k = self.context
        ep = self.rng.choice(len(self._probs), size=batch_size, p=self._probs)
        starts, lengths = self.traj.starts[ep], self.traj.lengths[ep]
        offset = (self.rng.random(batch_size) * lengths).astype(np.int64)  # window start in episode
        valid_len = np.minimum(k, lengths - offset)  # real tokens in the window
        pos = np.arange(k)[None, :]
        pad = k - valid_len[:, None]
        rows = starts[:, None] + offset[:, None] + (pos - pad)
        mask = pos >= pad
        rows = np.where(mask, rows, -1)
        return SequenceBatch(
            states=self._states[rows],
            actions=self._actions[rows],
            conditioning=self._cond[rows][..., None],
            timesteps=self._timesteps[rows].astype(np.int64),
            mask=mask.astype(np.float32),
            weights=self._weights[rows] * mask,
            rows=rows,
        )
