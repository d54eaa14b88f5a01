"""Hyper-parameters of the IQL learner and its expectile loss, shared by the learner
(:mod:`ipd.models.value`), its networks (:mod:`ipd.models.value_networks`) and the value head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch


@dataclass
class IQLConfig:
    """Hyper-parameters of :class:`IQLLearner` (defaults: IQL / CORL for D4RL locomotion).

    hidden_dims: hidden layer widths of the V, Q and actor MLPs.
    lr: Adam learning rate of V and the twin Qs.
    actor_lr: Adam learning rate of the actor at step 0 (cosine-decayed to 0 over
        ``actor_lr_schedule_updates``); None = ``lr``.
    actor_lr_schedule_updates: length of the actor's cosine schedule; None = ``num_updates``. A
        budget shorter than the schedule it was tuned with (IQL: 1M updates) can keep the schedule's
        length (truncated run) instead of compressing it, as d3rlpy's reproduction (500k) does.
    batch_size: transitions per update.
    gamma: discount.
    expectile: tau of V's expectile regression (0.7 locomotion, 0.9 antmaze; -> 1 approaches max_a Q).
    polyak: target-Q update rate, ``Q' <- (1 - polyak) Q' + polyak Q``.
    beta: AWR inverse temperature (advantages in internal, reward-normalised units).
    max_weight: clip of the AWR weight ``exp(beta * A)``.
    actor: "gaussian" (tanh mean + learned log-std, weighted log-likelihood) or "deterministic"
        (tanh output, weighted squared error).
    state_dependent_std: Gaussian actor only; predict log-std from the state instead of a
        state-independent parameter (CORL/IQL default: False).
    log_std_min / log_std_max: clamp of the Gaussian actor's log-std (CORL: -20, 2).
    dropout: dropout rate on the actor's hidden layers; None = no dropout.
    reward_normalization: "returns" (r * 1000 / (max - min episode return), IQL locomotion),
        "std" (r / std(r)) or "none".
    num_updates: total gradient steps; also the period of the actor's cosine schedule.
    log_every: default period (in updates) of ``fit``'s callback and metric logging.
    normalize_states: normalise states with the dataset mean/std (stored in the checkpoint).
    seed: seeds network init, batch sampling (numpy Generator) and dropout (torch Generator).
    """

    hidden_dims: tuple[int, ...] = (256, 256)
    lr: float = 3e-4
    actor_lr: float | None = None
    actor_lr_schedule_updates: int | None = None
    batch_size: int = 256
    gamma: float = 0.99
    expectile: float = 0.7
    polyak: float = 0.005
    beta: float = 3.0
    max_weight: float = 100.0
    actor: Literal["gaussian", "deterministic"] = "gaussian"
    state_dependent_std: bool = False
    log_std_min: float = -20.0
    log_std_max: float = 2.0
    dropout: float | None = None
    reward_normalization: Literal["returns", "std", "none"] = "returns"
    num_updates: int = 1_000_000
    log_every: int = 5_000
    normalize_states: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        self.hidden_dims = tuple(int(h) for h in self.hidden_dims)
        if self.actor not in ("gaussian", "deterministic"):
            raise ValueError(f"IQLConfig.actor must be 'gaussian' or 'deterministic', got '{self.actor}'.")
        if self.reward_normalization not in ("returns", "std", "none"):
            raise ValueError(
                f"IQLConfig.reward_normalization must be 'returns', 'std' or 'none', got "
                f"'{self.reward_normalization}'."
            )
        if not 0.0 < self.expectile < 1.0:
            raise ValueError(f"IQLConfig.expectile must be in (0, 1), got {self.expectile}.")
        if not 0.0 < self.polyak <= 1.0:
            raise ValueError(f"IQLConfig.polyak must be in (0, 1], got {self.polyak}.")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"IQLConfig.dropout must be None or in [0, 1), got {self.dropout}.")
        if self.actor_lr_schedule_updates is not None and self.actor_lr_schedule_updates < 1:
            raise ValueError("IQLConfig.actor_lr_schedule_updates must be >= 1 or None.")
        if self.num_updates < 1 or self.batch_size < 1:
            raise ValueError("IQLConfig.num_updates and batch_size must be >= 1.")


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """Asymmetric squared loss ``mean(|tau - 1(diff < 0)| * diff^2)`` with ``diff = target - prediction``.

    Minimising it over a constant prediction gives the tau-expectile of the targets: positive
    residuals (prediction too low) weigh tau, negative ones 1 - tau.
    """
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.square()).mean()
