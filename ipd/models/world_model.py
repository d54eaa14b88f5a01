"""Probabilistic ensemble world model with Gaussian Jensen-Shannon uncertainty (IPD stage 1).

An ensemble of ``E`` probabilistic MLPs (PETS: Chua et al., "Deep Reinforcement Learning in a
Handful of Trials using Probabilistic Dynamics Models", NeurIPS 2018, arXiv 1805.12114; MBPO:
Janner et al., "When to Trust Your Model", NeurIPS 2019, arXiv 1906.08253). Each member maps the
normalised ``(s, a)`` to a diagonal Gaussian over the normalised ``(Δs, r)``. All members run in
ONE batched pass: every layer is an :class:`EnsembleLinear` (weights ``[E, in, out]``, one
``torch.baddbmm``), so there is no Python loop over members anywhere.

- Log-variance is soft-clamped between learnable bounds (PETS/MBPO)::

      logvar = max_logvar - softplus(max_logvar - logvar)
      logvar = min_logvar + softplus(logvar - min_logvar)

  and the loss adds ``logvar_bound_coef * (sum(max_logvar) - sum(min_logvar))`` so the bounds
  tighten around the data instead of drifting apart.
- Loss: Gaussian NLL (without the constant) averaged over the batch and output dims, summed over
  members (each member's gradient is independent of ``E``), as in MBPO.
- Training (MBPO ``BNN.train``): a held-out split, per-member early stopping on holdout MSE where
  only improvements of at least ``improvement_threshold`` (relative, 1%) count, each member's best
  weights are kept and restored at the end, and the elites are the members with the lowest holdout
  MSE. Termination is not learned: the task's known rule (:mod:`ipd.tasks`) is applied to every
  imagined next state.
- Uncertainty ``U(s, a)``: see :mod:`ipd.models.uncertainty` (Gaussian Jensen-Shannon by default).
- Training lives in :mod:`ipd.models.world_model_training` (holdout, early stopping, elites).

Deviation/assumption (the IPD paper does not specify these):

- Holdout size: ``n_holdout = min(int(holdout_ratio * N), max_holdout)`` (at least 1), a random
  (seeded) subset of transitions as in MBPO. With the defaults this is 20% of N capped at 5000,
  i.e. docs/design.md's "min(20%, 1000..5000)" for any dataset above 5k transitions. Normalisers are
  fit on the training split only.
- Stopping: training stops after ``patience`` consecutive epochs in which no member improved its
  best holdout MSE by at least ``improvement_threshold`` (relative), or at ``max_epochs``,
  ``max_steps`` gradient steps or ``max_train_seconds`` (CPU budgets), whichever comes first.
- Weight decay is an L2 term on the weight matrices only (not biases / logvar bounds), applied by
  ``torch.optim.Adam(weight_decay=...)``: its gradient ``weight_decay * W`` equals MBPO's
  ``decay * tf.nn.l2_loss(W)`` term (MBPO uses per-layer decays 2.5e-5 .. 1e-4; one value here).
- Each member gets its own bootstrap resample of the training split (``bootstrap=True``, as PETS
  and MBPO) and its own shuffled batch order every epoch: the batch index tensor is ``[E, B]``.
- The logvar bounds are per member (``[E, 1, D]`` instead of MBPO's shared ``[1, D]``) so that
  restoring a member's best weights also restores its bounds.
- ``U`` is computed in the *normalised* target space (Δs and r divided by their training std), so
  every output dim contributes on a comparable scale; raw units would let the largest-scale
  velocity dims dominate. The threshold is a dataset quantile of ``U`` anyway (scale-free).
- ``U`` uses the elites only by default (``uncertainty_members="elites"``): imagined steps are drawn
  from the elites, and non-elite members fit worse by construction, so including them would mostly
  measure their fitting error. ``"all"`` is available.
- ``step`` default (``member_selection="random"``, ``sample_noise=False``): each sample uses a
  uniformly drawn elite (TS1-style, keeps epistemic diversity across candidates) and that member's
  *mean*. Aleatoric sampling noise would add variance to the planner's return estimates and noisy
  transitions to the stitched dataset; the aleatoric part is already accounted for by ``U`` (the
  GJS includes it), which the planner penalises / cuts on. ``sample_noise=True`` samples instead.
- ``predict``/``step``/``uncertainty`` run under ``torch.no_grad`` (not ``inference_mode``), so
  their outputs can still be stored and reused in autograd code (e.g. as DT training inputs).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ipd.data import Normalizer
from ipd.io import CheckpointError, load_checkpoint, save_checkpoint
from ipd.models.base import ModelStep
from ipd.models.uncertainty import UNCERTAINTY_KINDS, compute_uncertainty

TerminalFn = Callable[[torch.Tensor], torch.Tensor]  # raw next states [B, obs] -> bool [B]

CHECKPOINT_NAME = "ipd.world_model"
CHECKPOINT_VERSION = 1

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "swish": F.silu,
    "relu": F.relu,
    "gelu": F.gelu,
    "elu": F.elu,
    "tanh": torch.tanh,
}


@dataclass
class WorldModelConfig:
    """Ensemble world model hyper-parameters (Hydra group ``world_model``, keys map 1:1)."""

    # --- architecture
    ensemble_size: int = 7  # E: number of probabilistic MLP members (PETS/MBPO: 7)
    num_elites: int = 5  # members with the lowest holdout MSE used for prediction (MBPO: 5)
    hidden_dims: tuple[int, ...] = (200, 200, 200, 200)  # hidden layer widths (MBPO: 4 x 200)
    activation: str = "silu"  # silu (= swish, MBPO) | relu | gelu | elu | tanh
    init_max_logvar: float = 0.5  # initial upper log-variance bound (normalised targets; MBPO 0.5)
    init_min_logvar: float = -10.0  # initial lower log-variance bound (MBPO -10)
    learn_logvar_bounds: bool = True  # learn the bounds (PETS/MBPO) or keep them fixed
    logvar_bound_coef: float = 0.01  # weight of the bound penalty sum(max_logvar) - sum(min_logvar)
    # --- optimisation
    lr: float = 1e-3  # Adam learning rate
    weight_decay: float = 5e-5  # L2 on weight matrices (Adam's coupled decay = MBPO's l2 loss term)
    batch_size: int = 256  # transitions per member per gradient step
    bootstrap: bool = True  # each member trains on its own bootstrap resample of the training split
    # --- holdout / early stopping
    holdout_ratio: float = 0.2  # holdout fraction; n_holdout = min(int(ratio * N), max_holdout), >= 1
    max_holdout: int = 5000  # cap on the holdout size (MBPO: 5000)
    max_epochs: int | None = None  # cap on epochs (full passes); None: until early stopping
    max_steps: int | None = None  # cap on gradient steps (CPU budgets); None: no cap
    max_train_seconds: float | None = None  # wall-clock budget for training; None: no budget
    patience: int = 5  # stop after this many epochs in which no member improved (MBPO: 5)
    improvement_threshold: float = 0.01  # relative holdout-MSE improvement that counts (MBPO: 1%)
    eval_batch_size: int = 8192  # rows per forward pass when evaluating holdout MSE / uncertainty
    # --- uncertainty U(s, a)
    uncertainty: str = "gjs"  # gjs (pairwise Gaussian JS, the paper) | disagreement | aleatoric
    uncertainty_reduce: str = "max"  # max | mean over member pairs (gjs) or members (others)
    uncertainty_members: str = "elites"  # elites | all: which members U is computed over
    # --- imagined steps
    member_selection: str = "random"  # random (elite per sample) | fixed (one elite) | mean (of elites)
    fixed_elite: int = 0  # for "fixed": rank among the elites (0 = lowest holdout MSE)
    sample_noise: bool = False  # random mode: sample the member's Gaussian (True) or use its mean
    seed: int = 0  # seeds init, holdout split, bootstrap and batch order

    def __post_init__(self) -> None:
        self.hidden_dims = tuple(int(h) for h in self.hidden_dims)
        choices = {
            "activation": tuple(ACTIVATIONS),
            "uncertainty": UNCERTAINTY_KINDS,
            "uncertainty_reduce": ("max", "mean"),
            "uncertainty_members": ("elites", "all"),
            "member_selection": ("random", "fixed", "mean"),
        }
        for key, valid in choices.items():
            if getattr(self, key) not in valid:
                raise ValueError(f"{key} must be one of {valid}, got {getattr(self, key)!r}")
        if self.ensemble_size < 1 or not 1 <= self.num_elites <= self.ensemble_size:
            raise ValueError(
                f"need ensemble_size >= 1 and 1 <= num_elites <= ensemble_size, "
                f"got ensemble_size={self.ensemble_size}, num_elites={self.num_elites}"
            )
        if not 0 <= self.fixed_elite < self.num_elites:
            raise ValueError(
                f"fixed_elite must be in [0, num_elites={self.num_elites}), got {self.fixed_elite}"
            )
        if not self.hidden_dims or min(self.hidden_dims) < 1:
            raise ValueError(
                f"hidden_dims must be a non-empty list of positive widths, got {self.hidden_dims}"
            )
        if not 0.0 < self.holdout_ratio < 1.0:
            raise ValueError(f"holdout_ratio must be in (0, 1), got {self.holdout_ratio}")
        if self.init_min_logvar >= self.init_max_logvar:
            raise ValueError("init_min_logvar must be below init_max_logvar")
        for key in ("batch_size", "max_holdout", "patience", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("max_epochs", "max_steps"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1 or null, got {getattr(self, key)}")


# ----------------------------------------------------------------------------- layers
class EnsembleLinear(nn.Module):
    """E independent linear layers applied in one batched matmul: ``[E, B, in] -> [E, B, out]``."""

    def __init__(self, ensemble_size: int, in_dim: int, out_dim: int, generator: torch.Generator) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(ensemble_size, 1, out_dim))
        # MBPO init: truncated normal with std 1 / (2 sqrt(fan_in)), zero bias.
        std = 1.0 / (2.0 * math.sqrt(in_dim))
        nn.init.trunc_normal_(self.weight, std=std, a=-2 * std, b=2 * std, generator=generator)

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        """``members`` (indices) runs only those; ``x`` is ``[B, in]`` or ``[len(members), B, in]``."""
        weight, bias = (
            (self.weight, self.bias) if members is None else (self.weight[members], self.bias[members])
        )
        if x.dim() == 2:  # shared input for all members: broadcasting matmul, no copy per member
            return torch.matmul(x, weight) + bias
        return torch.baddbmm(bias, x, weight)


def soft_clamp_logvar(
    logvar: torch.Tensor, min_logvar: torch.Tensor, max_logvar: torch.Tensor
) -> torch.Tensor:
    """PETS/MBPO soft clamp: smooth in ``logvar``, so gradients reach the bounds."""
    logvar = max_logvar - F.softplus(max_logvar - logvar)
    return min_logvar + F.softplus(logvar - min_logvar)


# ----------------------------------------------------------------------------- model
class EnsembleWorldModel(nn.Module):
    """E probabilistic MLPs predicting a Gaussian over normalised ``(Δs, r)`` from normalised ``(s, a)``.

    Public APIs take and return raw (env-unit) tensors; normalisation is internal. Every parameter
    and the per-member buffers have the member axis first, so member-wise snapshots are slices.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        cfg: WorldModelConfig | None = None,
        terminal_fn: TerminalFn | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg = cfg if cfg is not None else WorldModelConfig()
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.out_dim = self.obs_dim + 1
        # The task's known termination rule (e.g. ``TaskSpec.is_terminal_torch``); None: never terminates.
        self.terminal_fn = terminal_fn
        self._act = ACTIVATIONS[cfg.activation]
        gen = torch.Generator().manual_seed(cfg.seed)
        dims = [self.obs_dim + self.act_dim, *cfg.hidden_dims]
        e = cfg.ensemble_size
        self.layers = nn.ModuleList(
            EnsembleLinear(e, i, o, gen) for i, o in zip(dims[:-1], dims[1:], strict=True)
        )
        self.head = EnsembleLinear(e, dims[-1], 2 * self.out_dim, gen)
        learn = cfg.learn_logvar_bounds
        self.max_logvar = nn.Parameter(
            torch.full((e, 1, self.out_dim), cfg.init_max_logvar), requires_grad=learn
        )
        self.min_logvar = nn.Parameter(
            torch.full((e, 1, self.out_dim), cfg.init_min_logvar), requires_grad=learn
        )
        in_dim = self.obs_dim + self.act_dim
        self.register_buffer("input_mean", torch.zeros(in_dim))
        self.register_buffer("input_std", torch.ones(in_dim))
        self.register_buffer("target_mean", torch.zeros(self.out_dim))
        self.register_buffer("target_std", torch.ones(self.out_dim))
        self.register_buffer("elites", torch.arange(cfg.num_elites))  # sorted by holdout MSE once trained
        self.register_buffer("holdout_mse", torch.full((e,), float("inf")))

    # ------------------------------------------------------------------ normalisers
    @property
    def device(self) -> torch.device:
        return self.input_mean.device

    @property
    def input_normalizer(self) -> Normalizer:
        return Normalizer(self.input_mean.cpu().numpy(), self.input_std.cpu().numpy())

    @property
    def target_normalizer(self) -> Normalizer:
        return Normalizer(self.target_mean.cpu().numpy(), self.target_std.cpu().numpy())

    def set_normalizers(self, inputs: Normalizer, targets: Normalizer) -> None:
        for name, arr in (
            ("input_mean", inputs.mean),
            ("input_std", inputs.std),
            ("target_mean", targets.mean),
            ("target_std", targets.std),
        ):
            getattr(self, name).copy_(torch.as_tensor(arr, dtype=torch.float32))

    def normalize_inputs(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        x = torch.cat([states, actions], dim=-1).to(self.input_mean.device, self.input_mean.dtype)
        return (x - self.input_mean) / self.input_std

    def normalize_targets(self, states: torch.Tensor, next_states: torch.Tensor, rewards: torch.Tensor):
        y = torch.cat([next_states - states, rewards.reshape(-1, 1)], dim=-1).to(self.target_mean)
        return (y - self.target_mean) / self.target_std

    # ------------------------------------------------------------------ forward
    def forward(
        self, x: torch.Tensor, members: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised inputs ``[B, in]`` (shared) or ``[E, B, in]`` -> mean, logvar ``[E, B, D]``.

        ``members`` restricts the computation to those members (output ``[len(members), B, D]``).
        """
        for layer in self.layers:
            x = self._act(layer(x, members))
        mean, logvar = self.head(x, members).chunk(2, dim=-1)
        lo, hi = (
            (self.min_logvar, self.max_logvar)
            if members is None
            else (self.min_logvar[members], self.max_logvar[members])
        )
        return mean, soft_clamp_logvar(logvar, lo, hi)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss on per-member batches ``x [E, B, in]``, ``y [E, B, D]`` (normalised)."""
        mean, logvar = self(x)
        sq = (mean - y).square()
        nll = (sq * torch.exp(-logvar) + logvar).mean(dim=(1, 2)).sum()  # mean per member, sum members
        bound = self.cfg.logvar_bound_coef * (self.max_logvar.sum() - self.min_logvar.sum())
        return nll + bound, {"nll": nll.detach() / mean.shape[0], "mse": sq.detach().mean()}

    def _normalized_predictions(self, states: torch.Tensor, actions: torch.Tensor):
        return self(self.normalize_inputs(states, actions))

    def _members_for_uncertainty(self) -> torch.Tensor | slice:
        return self.elites if self.cfg.uncertainty_members == "elites" else slice(None)

    def _uncertainty_from(self, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        m = self._members_for_uncertainty()
        return compute_uncertainty(mean[m], logvar[m], self.cfg.uncertainty, self.cfg.uncertainty_reduce)

    # ------------------------------------------------------------------ public prediction API
    @torch.no_grad()
    def predict(self, states: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every member's Gaussian in raw units: mean and variance ``[E, B, obs + 1]``.

        The first ``obs`` entries are the next state (``s + Δs``), the last is the reward.
        """
        mean, logvar = self._normalized_predictions(states, actions)
        raw_mean = mean * self.target_std + self.target_mean
        raw_mean[..., : self.obs_dim] += states.to(raw_mean)
        return raw_mean, torch.exp(logvar) * self.target_std.square()

    @torch.no_grad()
    def uncertainty(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``U(s, a)`` ``[B]`` in normalised target space (see ``cfg.uncertainty``)."""
        return self._uncertainty_from(*self._normalized_predictions(states, actions))

    @torch.no_grad()
    def step(
        self, states: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None = None
    ) -> ModelStep:
        """One imagined step for a batch: next states, rewards, terminals (task rule) and ``U``.

        When ``U`` is over the elites (the default) only the elites are computed: both ``U`` and the
        sampled member come from them, so the other members would be pure cost (5/7 of the FLOPs).
        """
        elites_only = self.cfg.uncertainty_members == "elites"
        mean, logvar = self(self.normalize_inputs(states, actions), self.elites if elites_only else None)
        u = compute_uncertainty(mean, logvar, self.cfg.uncertainty, self.cfg.uncertainty_reduce)
        # Rows of mean are the elites themselves (elites_only) or all members, of which the elites.
        pool = torch.arange(len(self.elites), device=mean.device) if elites_only else self.elites
        picked = self._select(mean, logvar, generator, pool)
        delta = picked * self.target_std + self.target_mean
        next_states = states.to(delta) + delta[:, : self.obs_dim]
        if self.terminal_fn is not None:
            terminals = self.terminal_fn(next_states)
        else:
            terminals = torch.zeros(len(next_states), dtype=torch.bool, device=next_states.device)
        return ModelStep(next_states, delta[:, -1], terminals, u)

    @torch.no_grad()
    def step_members(
        self, states: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step of every elite on its own state, with its mean prediction (no sampling).

        ``states`` ``[K, B, obs]`` (K = number of elites: elite k continues its own trajectory),
        ``actions`` ``[B, act]`` shared or ``[K, B, act]`` per elite -> next states ``[K, B, obs]``,
        rewards and terminals ``[K, B]``. Used to re-score a planned action sequence under each
        member (pessimistic acceptance) and to run a policy closed loop in each (the teacher check).
        """
        k, b = states.shape[0], states.shape[1]
        if k != len(self.elites):
            raise ValueError(f"step_members needs one state batch per elite ({len(self.elites)}), got {k}")
        x = self.normalize_inputs(states, actions.to(states).expand(k, b, actions.shape[-1]))
        mean, _ = self(x, self.elites)
        delta = mean * self.target_std + self.target_mean
        next_states = states.to(delta) + delta[..., : self.obs_dim]
        if self.terminal_fn is not None:
            terminals = self.terminal_fn(next_states.reshape(k * b, -1)).reshape(k, b)
        else:
            terminals = torch.zeros(k, b, dtype=torch.bool, device=next_states.device)
        return next_states, delta[..., -1], terminals

    def _select(
        self,
        mean: torch.Tensor,
        logvar: torch.Tensor,
        generator: torch.Generator | None,
        elites: torch.Tensor,
    ) -> torch.Tensor:
        """Pick each sample's normalised prediction ``[B, D]`` among ``elites`` (rows of ``mean``),
        following ``cfg.member_selection``."""
        mode = self.cfg.member_selection
        if mode == "mean":
            return mean[elites].mean(0)
        if mode == "fixed":
            return mean[elites[self.cfg.fixed_elite]]
        b, dev = mean.shape[1], mean.device
        gdev = generator.device if generator is not None else dev
        k = torch.randint(len(elites), (b,), generator=generator, device=gdev).to(dev)
        rows = torch.arange(b, device=dev)
        member = elites[k]
        out = mean[member, rows]
        if self.cfg.sample_noise:
            eps = torch.randn(out.shape, generator=generator, device=gdev, dtype=out.dtype).to(dev)
            out = out + torch.exp(0.5 * logvar[member, rows]) * eps
        return out

    # ------------------------------------------------------------------ checkpoint
    def save(self, path: str | Path, task: str | None = None) -> Path:
        """Atomically save weights, normalisers, elites, dims and config (``task`` is metadata only:
        the termination rule is code, passed again to :meth:`load`)."""
        payload = {
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            "normalizers": {
                "input": self.input_normalizer.state_dict(),
                "target": self.target_normalizer.state_dict(),
            },
            "elites": self.elites.cpu().tolist(),
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "config": asdict(self.cfg),
            "task": task,
        }
        return save_checkpoint(path, CHECKPOINT_NAME, CHECKPOINT_VERSION, payload)

    @classmethod
    def load(
        cls, path: str | Path, device: str | torch.device = "cpu", terminal_fn: TerminalFn | None = None
    ) -> EnsembleWorldModel:
        """Load :meth:`save`'s checkpoint; ``terminal_fn`` is the task's termination rule (None: none)."""
        blob = load_checkpoint(path, CHECKPOINT_NAME, CHECKPOINT_VERSION, map_location="cpu")
        missing = [k for k in ("state_dict", "obs_dim", "act_dim", "config") if k not in blob]
        if missing:
            raise CheckpointError(
                f"{path}: world-model checkpoint lacks {missing}; it is incomplete, re-train it."
            )
        names = {f.name for f in fields(WorldModelConfig)}
        unknown = sorted(set(blob["config"]) - names)
        if unknown:
            raise CheckpointError(
                f"{path}: config has unknown keys {unknown}; written by another ipd version?"
            )
        try:
            model = cls(blob["obs_dim"], blob["act_dim"], WorldModelConfig(**blob["config"]), terminal_fn)
            model.load_state_dict(blob["state_dict"])
        except (RuntimeError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{path}: world-model weights do not match its config ({exc}).") from exc
        return model.to(device).eval()
