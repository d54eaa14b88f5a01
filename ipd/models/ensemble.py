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
- Uncertainty ``U(s, a)`` (IPD paper): pairwise Gaussian Jensen-Shannon divergence between the
  members' predicted Gaussians, geometric-mean form (Nielsen, "On the Jensen-Shannon symmetrization
  of distances relying on abstract means", Entropy 2019; Deasy et al., "Constraining Variational
  Inference with Geometric Jensen-Shannon Divergence", NeurIPS 2020). For diagonal Gaussians p, q
  with precisions a = 1/σp², b = 1/σq², the geometric mean m has precision (a + b)/2 and mean
  σm²(aμp + bμq)/2, and ``JS_G = ½ KL(p‖m) + ½ KL(q‖m)`` simplifies per dimension to::

      JS_G = ½ [sinh²(d/2) - log cosh(d/2)] + (a² + b²)(μp - μq)² / (8 (a + b)),  d = log(a / b)

  (derivation: with t = (a + b)² / (4ab) = cosh²(d/2) the two KLs sum to ½[2(t - 1) - log t]
  plus the mean term), summed over output dims and reduced over all member pairs at once (max or
  mean). It is zero iff the members agree, symmetric, and grows with both mean disagreement
  (epistemic) and variance mismatch; the mean term is weighted by the precisions, so confident
  members that disagree score high (aleatoric and epistemic together).

Deviation/assumption (the IPD paper does not specify these):

- Holdout size: ``n_holdout = min(int(holdout_ratio * N), max_holdout)`` (at least 1), a random
  (seeded) subset of transitions as in MBPO. With the defaults this is 20% of N capped at 5000,
  i.e. DESIGN.md's "min(20%, 1000..5000)" for any dataset above 5k transitions. Normalisers are
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
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ipd.data import Normalizer, Transitions
from ipd.io import CheckpointError, load_checkpoint, save_checkpoint
from ipd.models.base import ModelStep
from ipd.tasks import get_task

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
            "uncertainty": ("gjs", "disagreement", "aleatoric"),
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


# ----------------------------------------------------------------------------- uncertainty measures
def _log_cosh(x: torch.Tensor) -> torch.Tensor:
    x = x.abs()
    return x + F.softplus(-2.0 * x) - math.log(2.0)


def pairwise_gjs(
    mean_p: torch.Tensor, logvar_p: torch.Tensor, mean_q: torch.Tensor, logvar_q: torch.Tensor
) -> torch.Tensor:
    """Geometric Jensen-Shannon divergence of diagonal Gaussians, per dim (closed form, see module doc)."""
    d = logvar_p - logvar_q  # log(a / b) with a = 1/var_p, b = 1/var_q; the shape term is even in d
    shape = 0.5 * (torch.sinh(0.5 * d).square() - _log_cosh(0.5 * d))
    a, b = torch.exp(-logvar_p), torch.exp(-logvar_q)
    location = (a.square() + b.square()) * (mean_p - mean_q).square() / (8.0 * (a + b))
    return shape + location


def gjs_uncertainty(mean: torch.Tensor, logvar: torch.Tensor, reduce: str = "max") -> torch.Tensor:
    """Pairwise GJS over all member pairs at once: ``[E, B, D] -> [B]`` (sum over D, reduce pairs)."""
    e = mean.shape[0]
    if e < 2:
        return mean.new_zeros(mean.shape[1])
    i, j = torch.triu_indices(e, e, offset=1, device=mean.device)
    js = pairwise_gjs(mean[i], logvar[i], mean[j], logvar[j]).sum(-1)  # [P, B]
    js = js.clamp_min(0.0)  # exact value is >= 0; guards float round-off
    return js.amax(0) if reduce == "max" else js.mean(0)


def disagreement_uncertainty(mean: torch.Tensor, reduce: str = "max") -> torch.Tensor:
    """Deviation of each member's mean from the ensemble mean (L2 over dims), max/mean over members."""
    dev = (mean - mean.mean(0, keepdim=True)).norm(dim=-1)  # [E, B]
    return dev.amax(0) if reduce == "max" else dev.mean(0)


def aleatoric_uncertainty(logvar: torch.Tensor, reduce: str = "max") -> torch.Tensor:
    """L2 norm of each member's predicted std (as in MOPO), max/mean over members."""
    norm = torch.exp(0.5 * logvar).norm(dim=-1)  # [E, B]
    return norm.amax(0) if reduce == "max" else norm.mean(0)


def compute_uncertainty(mean: torch.Tensor, logvar: torch.Tensor, kind: str, reduce: str) -> torch.Tensor:
    if kind == "gjs":
        return gjs_uncertainty(mean, logvar, reduce)
    if kind == "disagreement":
        return disagreement_uncertainty(mean, reduce)
    if kind == "aleatoric":
        return aleatoric_uncertainty(logvar, reduce)
    raise ValueError(f"unknown uncertainty {kind!r}; use gjs | disagreement | aleatoric")


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
        task_name: str | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg = cfg if cfg is not None else WorldModelConfig()
        self.obs_dim, self.act_dim, self.task_name = int(obs_dim), int(act_dim), task_name
        self.out_dim = self.obs_dim + 1
        self._terminal_fn = get_task(task_name).is_terminal_torch if task_name is not None else None
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
        if self._terminal_fn is not None:
            terminals = self._terminal_fn(next_states)
        else:
            terminals = torch.zeros(len(next_states), dtype=torch.bool, device=next_states.device)
        return ModelStep(next_states, delta[:, -1], terminals, u)

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
    def save(self, path: str | Path) -> Path:
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
            "task_name": self.task_name,
        }
        return save_checkpoint(path, CHECKPOINT_NAME, CHECKPOINT_VERSION, payload)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> EnsembleWorldModel:
        blob = load_checkpoint(path, CHECKPOINT_NAME, CHECKPOINT_VERSION, map_location="cpu")
        missing = [k for k in ("state_dict", "obs_dim", "act_dim", "config", "task_name") if k not in blob]
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
            model = cls(
                blob["obs_dim"], blob["act_dim"], WorldModelConfig(**blob["config"]), blob["task_name"]
            )
            model.load_state_dict(blob["state_dict"])
        except (RuntimeError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{path}: world-model weights do not match its config ({exc}).") from exc
        return model.to(device).eval()


# ----------------------------------------------------------------------------- training
def holdout_size(n: int, cfg: WorldModelConfig) -> int:
    """``min(int(holdout_ratio * n), max_holdout)``, at least 1 and leaving at least 1 training row."""
    if n < 2:
        raise ValueError(f"need at least 2 transitions to train a world model, got {n}")
    return int(min(max(1, min(int(cfg.holdout_ratio * n), cfg.max_holdout)), n - 1))


def split_holdout(n: int, cfg: WorldModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random (train, holdout) row indices, exactly as :func:`train_world_model` uses them."""
    perm = np.random.default_rng(cfg.seed).permutation(n)
    k = holdout_size(n, cfg)
    return np.sort(perm[k:]), np.sort(perm[:k])


@torch.no_grad()
def member_mse(model: EnsembleWorldModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-member MSE ``[E]`` of the predicted means on normalised ``x [N, in]``, ``y [N, D]`` (batched)."""
    total = torch.zeros(model.cfg.ensemble_size, device=x.device, dtype=torch.float64)
    for start in range(0, len(x), model.cfg.eval_batch_size):
        stop = start + model.cfg.eval_batch_size
        mean, _ = model(x[start:stop])
        total += (mean - y[start:stop]).square().sum(dim=(1, 2), dtype=torch.float64)
    return (total / (len(x) * y.shape[-1])).float()


class _BestWeights:
    """Per-member snapshot of all parameters (member axis first) and its holdout MSE."""

    def __init__(self, model: EnsembleWorldModel) -> None:
        self.params = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.mse = torch.full((model.cfg.ensemble_size,), float("inf"), device=model.device)

    def update(self, model: EnsembleWorldModel, mse: torch.Tensor, threshold: float) -> torch.Tensor:
        improved = (self.mse - mse) / self.mse > threshold  # inf best: first finite value improves
        improved |= torch.isinf(self.mse) & torch.isfinite(mse)
        if improved.any():
            for n, p in model.named_parameters():
                mask = improved.view(-1, *([1] * (p.dim() - 1)))
                self.params[n] = torch.where(mask, p.detach(), self.params[n])
            self.mse = torch.where(improved, mse, self.mse)
        return improved

    @torch.no_grad()
    def restore(self, model: EnsembleWorldModel) -> None:
        for n, p in model.named_parameters():
            p.copy_(self.params[n])


def _tensors(t: Transitions, device: torch.device) -> tuple[torch.Tensor, ...]:
    f = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)
    return f(t.observations), f(t.actions), f(t.next_observations), f(t.rewards)


def _batch_orders(n: int, cfg: WorldModelConfig, base: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``[E, n]`` row order for one epoch: each member shuffles its own (bootstrap) index set."""
    perm = torch.argsort(torch.rand(cfg.ensemble_size, n, generator=gen), dim=1)
    return torch.gather(base, 1, perm)


def train_world_model(
    transitions: Transitions,
    cfg: WorldModelConfig | None = None,
    task_name: str | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[EnsembleWorldModel, dict[str, Any]]:
    """Fit the ensemble on ``transitions`` (holdout split, early stopping, best-weight restore, elites).

    ``callback(record)`` is called after every epoch with that epoch's record (also in
    ``metrics["history"]``). Returns the trained model (in eval mode) and a metrics dict:
    ``holdout_mse`` per member (normalised target space), ``elites``, ``epochs``, ``steps``,
    ``train_time_s``, ``samples_per_s`` (member-samples, i.e. ``steps * batch_size * E / time``),
    ``stopped_by`` and the per-epoch ``history``.
    """
    cfg = cfg if cfg is not None else WorldModelConfig()
    device = torch.device(device)
    train_idx, hold_idx = split_holdout(len(transitions), cfg)
    train, hold = transitions.subset(train_idx), transitions.subset(hold_idx)
    model = EnsembleWorldModel(transitions.obs_dim, transitions.act_dim, cfg, task_name)
    model.set_normalizers(
        Normalizer.fit(np.concatenate([train.observations, train.actions], axis=1)),
        Normalizer.fit(
            np.concatenate([train.next_observations - train.observations, train.rewards[:, None]], 1)
        ),
    )
    model.to(device)
    s, a, s2, r = _tensors(train, device)
    x_tr, y_tr = model.normalize_inputs(s, a), model.normalize_targets(s, s2, r)
    s, a, s2, r = _tensors(hold, device)
    x_ho, y_ho = model.normalize_inputs(s, a), model.normalize_targets(s, s2, r)
    history = fit(model, x_tr, y_tr, x_ho, y_ho, progress=progress, callback=callback)
    metrics = {
        "holdout_mse": model.holdout_mse.cpu().tolist(),
        "elites": model.elites.cpu().tolist(),
        "elite_holdout_mse": float(model.holdout_mse[model.elites].mean()),
        "n_train": len(train),
        "n_holdout": len(hold),
        **{k: v for k, v in history[-1].items() if k in ("epochs", "steps", "train_time_s", "samples_per_s")},
        "stopped_by": history[-1]["stopped_by"],
        "history": history,
    }
    return model, metrics


def fit(
    model: EnsembleWorldModel,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_holdout: torch.Tensor,
    y_holdout: torch.Tensor,
    progress: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train on normalised tensors with an explicit holdout; restore best weights, set elites.

    Used by :func:`train_world_model` (which does the split and normalisation); callable directly
    to control the holdout set. Returns the per-epoch history; the last record has ``stopped_by``.
    """
    cfg, e = model.cfg, model.cfg.ensemble_size
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # batch order; CPU so CUDA runs draw the same
    n = len(x_train)
    base = torch.randint(n, (e, n), generator=gen) if cfg.bootstrap else torch.arange(n).expand(e, n)
    decay = [layer.weight for layer in (*model.layers, model.head)]  # L2 on weight matrices only
    rest = [p for p in model.parameters() if all(p is not q for q in decay)]
    opt = torch.optim.Adam(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=cfg.lr,
    )
    best = _BestWeights(model)
    history: list[dict[str, Any]] = []
    steps, epoch, since_update, stopped_by = 0, 0, 0, None
    t0 = time.perf_counter()
    bar = tqdm(total=cfg.max_epochs, desc="world model", unit="epoch", disable=not progress)
    while stopped_by is None:
        model.train()
        order = _batch_orders(n, cfg, base, gen).to(x_train.device)
        nll_sum, mse_sum, n_batches = 0.0, 0.0, 0
        for start in range(0, n, cfg.batch_size):
            idx = order[:, start : start + cfg.batch_size]  # [E, B]: each member its own batch
            loss, stats = model.loss(x_train[idx], y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            nll_sum, mse_sum, n_batches = nll_sum + stats["nll"], mse_sum + stats["mse"], n_batches + 1
            if cfg.max_steps is not None and steps >= cfg.max_steps:
                stopped_by = "max_steps"
            elif cfg.max_train_seconds is not None and time.perf_counter() - t0 >= cfg.max_train_seconds:
                stopped_by = "time"
            if stopped_by is not None:
                break
        epoch += 1
        model.eval()
        mse = member_mse(model, x_holdout, y_holdout)
        improved = best.update(model, mse, cfg.improvement_threshold)
        since_update = 0 if improved.any() else since_update + 1
        if stopped_by is None and since_update >= cfg.patience:
            stopped_by = "patience"
        if stopped_by is None and cfg.max_epochs is not None and epoch >= cfg.max_epochs:
            stopped_by = "max_epochs"
        elapsed = time.perf_counter() - t0
        record = {
            "epoch": epoch,
            "steps": steps,
            "train_nll": float(nll_sum / n_batches),
            "train_mse": float(mse_sum / n_batches),
            "holdout_mse": mse.cpu().tolist(),
            "holdout_mse_mean": float(mse.mean()),
            "improved": improved.cpu().tolist(),
            "epochs_since_update": since_update,
            "time_s": elapsed,
        }
        history.append(record)
        if callback is not None:
            callback(record)
        bar.update(1)
        bar.set_postfix(train_mse=f"{record['train_mse']:.4f}", holdout=f"{record['holdout_mse_mean']:.4f}")
    bar.close()
    train_time = time.perf_counter() - t0
    best.restore(model)
    final = member_mse(model, x_holdout, y_holdout)
    model.holdout_mse.copy_(final)
    model.elites.copy_(torch.argsort(final, stable=True)[: cfg.num_elites])
    history[-1].update(
        epochs=epoch,
        steps=steps,
        train_time_s=train_time,
        samples_per_s=steps * cfg.batch_size * e / max(train_time, 1e-9),
        stopped_by=stopped_by,
    )
    return history


# ----------------------------------------------------------------------------- dataset quantiles
@torch.no_grad()
def uncertainty_values(
    model: EnsembleWorldModel,
    transitions: Transitions,
    batch_size: int = 8192,
    max_samples: int | None = None,
) -> np.ndarray:
    """``U(s, a)`` over dataset transitions (a seeded subsample of ``max_samples`` rows if set)."""
    n = len(transitions)
    rows = np.arange(n)
    if max_samples is not None and n > max_samples:
        rows = np.sort(np.random.default_rng(0).choice(n, max_samples, replace=False))
    out = []
    for start in range(0, len(rows), batch_size):
        r = rows[start : start + batch_size]
        s = torch.as_tensor(transitions.observations[r], device=model.device)
        a = torch.as_tensor(transitions.actions[r], device=model.device)
        out.append(model.uncertainty(s, a).float().cpu().numpy())
    return np.concatenate(out)


def uncertainty_quantiles(
    model: EnsembleWorldModel,
    transitions: Transitions,
    quantiles: tuple[float, ...] = (0.5, 0.9, 0.95, 0.99),
    batch_size: int = 8192,
    max_samples: int | None = None,
) -> dict[float, float]:
    """Quantiles of ``U`` over dataset transitions, ``{q: value}`` (the planner's threshold source)."""
    u = uncertainty_values(model, transitions, batch_size, max_samples)
    return {float(q): float(np.quantile(u, q)) for q in quantiles}
