"""Stage 3: distil the (augmented) dataset into a Decision-Transformer policy, without Hydra.

The twin of :mod:`ipd.planning.augment` for stage 3. :func:`distill_policy` takes explicit,
typed arguments (the dataset, the stage-1 value learner, the DT and trainer configs and a
:class:`DistillConfig`) and returns a :class:`DistillResult` that saves a standalone checkpoint.
``ipd.pipeline.distill`` only adds artifact bookkeeping around it.

Conditioning token (``DistillConfig.condition``):

- ``rtg``: plain DT; the token is the undiscounted return-to-go, ``target_return`` at test time.
- ``value``: the token is V(s_t) from the IQL value, in training and at inference.
- ``relabel``: QDT-style relabelling; train on max(RTG^γ_t, V(s_t)) (the critic's discount, so both
  terms share a scale), infer on V(s_t).

Loss: action regression minus ``alpha``·Q(s, π(s))/mean|Q| with the stage-1 critic (see
:mod:`ipd.models.sequence_trainer`); ``finetune_critic`` keeps training that critic on the
distillation data, one IQL step per policy update.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ipd.data import Normalizer, SequenceSampler, Trajectories, Transitions
from ipd.io import atomic_write, torch_load
from ipd.models.base import Policy
from ipd.models.policies import DTPolicy
from ipd.models.sequence_trainer import SequenceTrainConfig, SequenceTrainer
from ipd.models.transformer import ConditioningConfig, DecisionTransformer, DTConfig, save_dt
from ipd.models.value import IQLLearner
from ipd.utils import apply_in_chunks

CONDITIONS = ("rtg", "value", "relabel")

EvalFn = Callable[[Policy, int], dict[str, float]]  # (policy, episodes) -> metrics


@dataclass
class DistillConfig:
    """What stage 3 trains on and how the policy is conditioned (Hydra group ``policy``).

    condition: the conditioning token (see the module docstring); use_augmented: train on the
    stage-2 dataset (else the original); finetune_critic: keep training the stage-1 critic during
    distillation; eval_episodes: episodes of each periodic evaluation (0 = none).
    """

    condition: str = "value"
    use_augmented: bool = True
    finetune_critic: bool = False
    eval_episodes: int = 0

    def __post_init__(self) -> None:
        if self.condition not in CONDITIONS:
            raise ValueError(f"condition must be one of {'|'.join(CONDITIONS)}, got '{self.condition}'")
        if self.eval_episodes < 0:
            raise ValueError(f"eval_episodes must be >= 0, got {self.eval_episodes}")

    @property
    def needs_value(self) -> bool:
        """Whether the token needs the stage-1 value function."""
        return self.condition != "rtg"

    @property
    def inference_mode(self) -> str:
        """The token's meaning at test time: a return-to-go or the current state's value."""
        return "rtg" if self.condition == "rtg" else "value"


@dataclass
class DistillResult:
    """A trained stage-3 policy and everything needed to run or save it alone."""

    model: DecisionTransformer
    state_normalizer: Normalizer
    conditioning: ConditioningConfig
    metrics: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)  # bundled value network, if any
    value_fn: Callable[[torch.Tensor], torch.Tensor] | None = None

    def policy(self, device: str | torch.device = "cpu") -> DTPolicy:
        return DTPolicy(self.model, self.state_normalizer, self.conditioning, self.value_fn, device)

    def save(self, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        """A standalone ``ipd.dt`` checkpoint (value-conditioned ones bundle the value network)."""
        meta = {**self.extra, **(extra or {})}
        return save_dt(path, self.model, self.state_normalizer, self.conditioning, meta)


def conditioning_tokens(
    traj: Trajectories, cfg: DistillConfig, value: IQLLearner | None, gamma: float
) -> np.ndarray:
    """Per-row training token in env-return units for ``cfg.condition``."""
    if cfg.condition == "rtg":
        return traj.returns_to_go
    if value is None:
        raise ValueError(f"condition={cfg.condition} needs the stage-1 value function")
    t = traj.transitions
    values = t.extras.get("value")
    if values is None or t.extras.get("imagined") is None:
        values = apply_in_chunks(value.value, t.observations)
    if cfg.condition == "value":
        return values
    return np.maximum(traj.discounted_returns_to_go(gamma), values)  # relabel


def critic_finetuner(
    value: IQLLearner,
    dataset: Transitions,
    batch_size: int,
    state_path: Path | None,
    checkpoint_every: int,
    seed: int,
) -> Callable[[int], dict[str, float]]:
    """One IQL step on ``dataset`` per policy update (``DistillConfig.finetune_critic``).

    The critic state is checkpointed with the policy's training state (same period) so that a
    resumed run continues with the fine-tuned critic, not the stage-1 one.
    """
    rng = np.random.default_rng(seed + 1)
    keys = ("observations", "actions", "rewards", "next_observations", "terminals")

    def step(update: int) -> dict[str, float]:
        idx = rng.integers(0, len(dataset), batch_size)
        metrics = value.update({k: getattr(dataset, k)[idx] for k in keys})
        if state_path is not None and checkpoint_every and update % checkpoint_every == 0:
            atomic_write(state_path, lambda tmp: torch.save(value.state_dict(), tmp))
        return {k: metrics[k] for k in ("q_loss", "v_loss") if k in metrics}

    return step


def distill_policy(
    dataset: Transitions,
    value: IQLLearner | None,
    dt_cfg: DTConfig,
    train_cfg: SequenceTrainConfig,
    distill_cfg: DistillConfig,
    *,
    return_scale: float = 1000.0,
    target_return: float | None = None,
    gamma: float = 0.99,
    state_normalizer: Normalizer | None = None,
    eval_fn: EvalFn | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    critic_batch_size: int = 256,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    log_fn: Callable[[dict[str, float], int], None] | None = None,
) -> DistillResult:
    """Train the stage-3 sequence policy on ``dataset``; resumable through ``checkpoint_dir``.

    ``value`` is the stage-1 IQL learner (tokens, Q-term, bundled value net); it may be None for
    ``condition=rtg`` without a Q-term. ``state_normalizer`` defaults to the dataset's statistics.
    ``eval_fn(policy, episodes)`` runs every ``train_cfg.eval_every`` updates when
    ``distill_cfg.eval_episodes > 0``. ``checkpoint_dir`` holds ``train_state.pt`` (and
    ``critic_state.pt``); an existing state there is resumed.
    """
    if distill_cfg.needs_value and value is None:
        raise ValueError(f"condition={distill_cfg.condition} needs the stage-1 value learner")
    if train_cfg.alpha > 0 and value is None:
        raise ValueError("alpha > 0 needs the stage-1 critic (pass value=IQLLearner)")
    device = torch.device(device)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    traj = Trajectories.from_transitions(dataset)
    tokens = conditioning_tokens(traj, distill_cfg, value, gamma)
    norm = state_normalizer or Normalizer.fit(dataset.observations)
    sampler = SequenceSampler(
        traj, dt_cfg.context, tokens, return_scale, norm, None, dt_cfg.max_timestep, seed
    )
    critic = value.q_torch if (value is not None and train_cfg.alpha > 0) else None
    after_update = None
    if critic is not None and distill_cfg.finetune_critic:
        critic_state = ckpt_dir / "critic_state.pt" if ckpt_dir is not None else None
        if critic_state is not None and critic_state.is_file() and (ckpt_dir / "train_state.pt").is_file():
            value.load_state_dict(torch_load(critic_state, device))
        after_update = critic_finetuner(
            value, dataset, critic_batch_size, critic_state, train_cfg.checkpoint_every, seed
        )
    trainer = SequenceTrainer(
        DecisionTransformer(dataset.obs_dim, dataset.act_dim, dt_cfg),
        sampler,
        train_cfg,
        device,
        critic=critic,
        state_normalizer=norm,
        checkpoint_path=ckpt_dir / "train_state.pt" if ckpt_dir is not None else None,
        log_fn=log_fn,
        after_update=after_update,
    )
    conditioning = ConditioningConfig(distill_cfg.inference_mode, return_scale, target_return)
    value_fn = value.value_fn() if conditioning.mode == "value" else None
    periodic = None
    if eval_fn is not None and distill_cfg.eval_episodes > 0:

        def periodic(model: DecisionTransformer, step: int) -> dict[str, float]:
            policy = DTPolicy(model, norm, conditioning, value_fn=value_fn, device=device)
            return eval_fn(policy, distill_cfg.eval_episodes)

    metrics = trainer.train(progress=progress, eval_fn=periodic)
    extra = {"value_model": value.value_state()} if conditioning.mode == "value" else {}
    summary = {k: v for k, v in metrics.items() if k != "history"}
    return DistillResult(trainer.policy_model, norm, conditioning, summary, extra, value_fn)
