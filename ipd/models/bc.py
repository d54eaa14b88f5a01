"""Behaviour cloning yardsticks: BC on all data and "x%BC" on the best episodes.

Follows CORL's any-percent BC (Tarasov et al., "CORL: Research-oriented Deep Offline
Reinforcement Learning Library", 2022; ``algorithms/offline/any_percent_bc.py``), the BC and
10%BC rows of most offline-RL tables:

- a deterministic ReLU MLP actor (256-256) with a tanh output, regressed onto the dataset
  actions with the mean squared error, Adam at lr 3e-4, batches of 256 drawn uniformly with
  replacement;
- 10%BC first keeps the episodes whose undiscounted return is in the top 10%
  (:func:`ipd.data.filtering.top_episodes`, ``top_fraction=0.1``); ``top_fraction=1`` is plain BC;
- states are normalised with the mean/std (eps 1e-3) of the data actually cloned, i.e. *after*
  filtering, as CORL does.

Why it is here: BC and 10%BC separate what a method gains from the data's best behaviour from
what it gains from values or planning, at the same network size and step budget.

Deviations/assumptions:
- Actions are assumed to lie in [-1, 1] (all D4RL locomotion tasks), so the tanh is not
  rescaled by a ``max_action``.
- ``weight_decay`` is Adam's coupled L2 penalty (``torch.optim.Adam(weight_decay=...)``); CORL
  uses none (the default 0).
- Optional ``dropout`` on the hidden layers (CORL's BC has none) draws from the learner's own
  ``torch.Generator``, and batches from its own numpy Generator, both seeded by ``cfg.seed`` and
  saved in :meth:`BCLearner.state_dict`, so a resumed run reproduces an uninterrupted one and
  training never touches the global RNGs.
- CORL trains for 1M updates; the default here is 100k (configs override it either way).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ipd import training
from ipd.data.filtering import top_episode_rows
from ipd.data.transitions import Normalizer, Transitions
from ipd.models.learner_checkpoint import CheckpointedLearner
from ipd.models.value_networks import relu_hidden

CHECKPOINT_NAME = "ipd.bc"
CHECKPOINT_VERSION = 1

ArrayLike = np.ndarray | torch.Tensor


@dataclass
class BCConfig:
    """Hyper-parameters of :class:`BCLearner` (defaults: CORL's BC for D4RL locomotion).

    hidden_dims: hidden layer widths of the actor MLP.
    lr: Adam learning rate (constant; CORL's BC has no schedule).
    batch_size: transitions per update, drawn uniformly with replacement.
    num_updates: total gradient steps (CORL: 1M; CPU runs override it).
    weight_decay: Adam's L2 penalty.
    dropout: dropout rate on the hidden layers during training; None = no dropout.
    normalize_states: normalise states with the cloned data's mean/std (stored in the checkpoint).
    log_every: default period (in updates) of ``fit``'s callback and metric logging.
    top_fraction: fraction of episodes, best return first, that are cloned: 1.0 = BC on all
        data, 0.1 = 10%BC.
    seed: seeds network init, batch sampling (numpy Generator) and dropout (torch Generator).
    """

    hidden_dims: tuple[int, ...] = (256, 256)
    lr: float = 3e-4
    batch_size: int = 256
    num_updates: int = 1_000_000
    weight_decay: float = 0.0
    dropout: float | None = None
    normalize_states: bool = True
    log_every: int = 5_000
    top_fraction: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.hidden_dims = tuple(int(h) for h in self.hidden_dims)
        if not self.hidden_dims or min(self.hidden_dims) < 1:
            raise ValueError(
                f"BCConfig.hidden_dims must be non-empty positive widths, got {self.hidden_dims}."
            )
        if not self.lr > 0:
            raise ValueError(f"BCConfig.lr must be > 0, got {self.lr}.")
        if self.batch_size < 1 or self.num_updates < 1 or self.log_every < 1:
            raise ValueError(
                "BCConfig.batch_size, num_updates and log_every must be >= 1, got "
                f"{self.batch_size}, {self.num_updates}, {self.log_every}."
            )
        if not self.weight_decay >= 0:
            raise ValueError(f"BCConfig.weight_decay must be >= 0, got {self.weight_decay}.")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"BCConfig.dropout must be None or in [0, 1), got {self.dropout}.")
        if not 0.0 < self.top_fraction <= 1.0:
            raise ValueError(
                f"BCConfig.top_fraction must be in (0, 1] (1.0 = BC on all data, 0.1 = 10%BC), "
                f"got {self.top_fraction}."
            )


class BCActor(nn.Module):
    """ReLU MLP with a tanh output: normalised states [B, obs] -> actions [B, act] in (-1, 1).

    Dropout is applied only when a ``generator`` is passed (training), so evaluation needs no
    train/eval mode switch and training randomness never comes from the global RNG.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden_dims: tuple[int, ...], dropout: float = 0.0):
        super().__init__()
        dims = (obs_dim, *hidden_dims)
        self.hidden = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims[:-1], dims[1:], strict=True))
        self.head = nn.Linear(dims[-1], act_dim)
        self.dropout = float(dropout)

    def forward(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.tanh(self.head(relu_hidden(self.hidden, obs, self.dropout, generator)))


class BCLearner(CheckpointedLearner):
    """Behaviour cloning with an optional best-episode filter; see the module docstring.

    Public methods take **raw** (un-normalised) states. Typical use::

        learner = BCLearner(obs_dim, act_dim, BCConfig(top_fraction=0.1), device="cuda")
        learner.fit(transitions, callback=lambda step, metrics: ...)
        learner.save("bc.pt"); policy = BCLearner.load("bc.pt", "cuda").policy()
    """

    checkpoint_name, checkpoint_version, config_cls = CHECKPOINT_NAME, CHECKPOINT_VERSION, BCConfig

    def __init__(
        self, obs_dim: int, act_dim: int, cfg: BCConfig | None = None, device: str | torch.device = "cpu"
    ) -> None:
        self.cfg = cfg = cfg or BCConfig()
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.device = torch.device(device)
        # Init on CPU from the config seed: the weights depend neither on the device nor on the
        # caller's global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.actor = BCActor(self.obs_dim, self.act_dim, cfg.hidden_dims, cfg.dropout or 0.0)
        self.actor.to(self.device)
        self.optimizer = torch.optim.Adam(
            self.actor.parameters(),
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            fused=self.device.type == "cuda",  # one kernel per step instead of one per tensor
        )
        self.step = 0
        self.rng = np.random.default_rng(cfg.seed)  # batch indices
        self.generator = torch.Generator(self.device)  # dropout masks
        self.generator.manual_seed(cfg.seed)
        self.set_normalizer(Normalizer.identity(self.obs_dim))
        self.data_stats_fitted = False

    # ------------------------------------------------------------------ data

    def set_normalizer(self, normalizer: Normalizer) -> None:
        """Set the state normaliser (``fit`` sets it from the cloned data on its first call)."""
        if normalizer.mean.shape != (self.obs_dim,) or normalizer.std.shape != (self.obs_dim,):
            raise ValueError(f"normalizer has dim {normalizer.mean.shape}, expected ({self.obs_dim},)")
        self.normalizer = normalizer
        self._mean = torch.as_tensor(normalizer.mean, device=self.device)
        self._std = torch.as_tensor(normalizer.std, device=self.device)
        self.data_stats_fitted = True

    def select_data(self, transitions: Transitions) -> tuple[Transitions, int, int]:
        """The rows ``fit`` clones (best ``cfg.top_fraction`` of episodes), kept and total episode counts."""
        if transitions.obs_dim != self.obs_dim or transitions.act_dim != self.act_dim:
            raise ValueError(
                f"dataset has obs/act dims {transitions.obs_dim}/{transitions.act_dim}, "
                f"learner expects {self.obs_dim}/{self.act_dim}"
            )
        n_episodes = int(transitions.episode_ends.sum())
        if self.cfg.top_fraction >= 1.0:
            return transitions, n_episodes, n_episodes
        rows, kept = top_episode_rows(transitions, self.cfg.top_fraction)
        return transitions.subset(rows), kept, n_episodes

    def _tensor(self, x: ArrayLike) -> torch.Tensor:
        return torch.as_tensor(x, dtype=torch.float32, device=self.device)

    def _norm(self, states: torch.Tensor) -> torch.Tensor:
        return (states - self._mean) / self._std

    # ------------------------------------------------------------------ training

    def fit(
        self,
        transitions: Transitions,
        num_updates: int | None = None,
        progress: bool = True,
        callback: Callable[[int, dict[str, float]], Any] | None = None,
        callback_every: int | None = None,
        state_path: str | os.PathLike | None = None,
        checkpoint_every: int | None = None,
    ) -> dict[str, Any]:
        """Train from ``self.step`` until ``self.step == num_updates`` (default ``cfg.num_updates``)
        with :func:`ipd.training.run`.

        ``num_updates`` is the *total* step count to reach, so after :meth:`load_state_dict`
        ``fit`` continues an interrupted run where it stopped; with ``state_path`` the training
        state is saved there every ``checkpoint_every`` (default ``callback_every``) updates and at
        the end, and a state found there is resumed. When ``cfg.top_fraction < 1`` only the best
        episodes are cloned (:func:`ipd.data.filtering.top_episodes`). The first call fits the
        state normaliser on the cloned rows (unless already set or restored).
        ``callback(step, metrics)`` runs every ``callback_every`` (default ``cfg.log_every``)
        updates and after the last one, with the loss averaged since the previous call.

        Returns ``{"loss", "step", "episodes_kept", "episodes_total", "rows_kept", "rows_total",
        "wall_time_s", "updates_per_s", "history"}``; ``loss`` is the mean over the last logging
        window (NaN if no update ran).
        """
        total = int(num_updates if num_updates is not None else self.cfg.num_updates)
        every = max(int(callback_every or self.cfg.log_every), 1)
        desc = "bc" if self.cfg.top_fraction >= 1 else f"bc-top{self.cfg.top_fraction:g}"
        training.load_state_if_any(self, state_path, desc, self.device)
        data, episodes_kept, episodes_total = self.select_data(transitions)
        if not self.data_stats_fitted:
            self.set_normalizer(
                Normalizer.fit(data.observations)
                if self.cfg.normalize_states
                else Normalizer.identity(self.obs_dim)
            )
        out = training.run(
            self, self.batch_sampler(data), total, stage=desc, log_every=every, progress=progress,
            on_log=callback and (lambda step, r: callback(step, training.metrics_of(r))),
            state_path=state_path, checkpoint_every=int(checkpoint_every or every),
            postfix=lambda r: {"loss": f"{r['loss']:.4g}"},
        )  # fmt: skip
        return {
            "loss": out.last.get("loss", float("nan")),
            "step": self.step,
            "episodes_kept": episodes_kept,
            "episodes_total": episodes_total,
            "rows_kept": len(data),
            "rows_total": len(transitions),
            "wall_time_s": out.wall_time_s,
            "updates_per_s": out.updates_per_s,
            "history": out.history,
        }

    def batch_sampler(self, data: Transitions) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
        """Uniform (normalised state, action) batches with replacement, from the learner's seeded RNG."""
        obs = self._norm(self._tensor(data.observations))
        act = self._tensor(data.actions)
        n, bs = len(data), self.cfg.batch_size

        def sample() -> tuple[torch.Tensor, torch.Tensor]:
            idx = torch.from_numpy(self.rng.integers(0, n, size=bs)).to(self.device, non_blocking=True)
            return obs[idx], act[idx]

        return sample

    def update(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One gradient step on a (normalised states, actions) batch; the loss stays on the device."""
        obs, act = batch
        loss = (self.actor(obs, self.generator if self.actor.dropout > 0 else None) - act).square().mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return {"loss": loss.detach()}

    # ------------------------------------------------------------------ inference

    def act(self, observations: ArrayLike) -> ArrayLike:
        """Deterministic actions [B, act] in (-1, 1) for raw observations [B, obs].

        numpy in -> float32 numpy out; a tensor in -> a tensor on the input's device (no grad).
        """
        if isinstance(observations, torch.Tensor):
            with torch.no_grad():
                return self.actor(self._norm(self._tensor(observations))).to(observations.device)
        with torch.inference_mode():
            out = self.actor(self._norm(self._tensor(np.asarray(observations, np.float32))))
            return out.cpu().numpy()

    def policy(self) -> BCPolicy:
        """The actor as an :class:`ipd.models.base.Policy` for :func:`ipd.evaluation.evaluate_policy`."""
        return BCPolicy(self)

    # ------------------------------------------------------------------ state / checkpoints

    def _meta(self) -> dict[str, Any]:
        return {
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "config": asdict(self.cfg),
            "normalizer": self.normalizer.state_dict(),
            "data_stats_fitted": self.data_stats_fitted,
            "step": self.step,
        }

    def state_dict(self) -> dict[str, Any]:
        """Full training state: actor, optimiser, step, RNGs, normaliser, dims and config.

        Tensors are the live ones (as ``nn.Module.state_dict``): ``torch.save`` it, or deep-copy
        it to keep a snapshot while training continues.
        """
        return {
            **self._meta(),
            "actor": self.actor.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "numpy_rng": self.rng.bit_generator.state,
            "torch_generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`, or the network part of a :meth:`save` checkpoint.

        With the optimiser and RNG states present, a following :meth:`fit` continues exactly
        where the saved run stopped.
        """
        if (state["obs_dim"], state["act_dim"]) != (self.obs_dim, self.act_dim):
            raise ValueError(
                f"state is for obs/act dims {state['obs_dim']}/{state['act_dim']}, "
                f"learner has {self.obs_dim}/{self.act_dim}"
            )
        self.actor.load_state_dict(state["actor"])
        self.set_normalizer(Normalizer.from_state_dict(state["normalizer"]))
        self.data_stats_fitted = bool(state["data_stats_fitted"])
        self.step = int(state["step"])
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
            self.rng.bit_generator.state = state["numpy_rng"]
            self.generator.set_state(state["torch_generator"].cpu())

    def _weights(self) -> dict[str, Any]:
        """A standalone ``ipd.bc`` v1 checkpoint: the actor, normaliser, dims, config and step."""
        return {**self._meta(), "actor": self.actor.state_dict()}


class BCPolicy:
    """:class:`ipd.models.base.Policy` running the BC actor: batched numpy observations in,
    float32 actions in (-1, 1) out. Memoryless, so ``reset`` and ``observe`` do nothing."""

    def __init__(self, learner: BCLearner) -> None:
        self.learner = learner

    def reset(self, num_envs: int) -> None:
        self.num_envs = num_envs

    def act(self, observations: np.ndarray) -> np.ndarray:
        return self.learner.act(np.asarray(observations, np.float32))

    def observe(self, rewards: np.ndarray, dones: np.ndarray) -> None:
        pass
