"""Stage 3: distil the (augmented) dataset into a Decision-Transformer policy, without Hydra.

The twin of :mod:`ipd.planning.augment` for stage 3. :func:`distill_policy` takes explicit,
typed arguments (the dataset, the stage-1 value learner, the DT and trainer configs and a
:class:`DistillConfig`) and returns a :class:`DistillResult` that saves a standalone checkpoint.
``ipd.pipeline.distill`` only adds artifact bookkeeping around it. The conditioning token (what
it is, its encoding, the imagined windows' share) is :mod:`ipd.tokens`.

**Loss:** action regression minus ``alpha``·Q(s, π(s))/mean|Q| with the stage-1 critic (see
:mod:`ipd.models.sequence_trainer`); ``finetune_critic`` keeps training that critic on the
distillation data, one IQL step per policy update.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ipd.data import Normalizer, SequenceSampler, Trajectories, Transitions
from ipd.models.base import Policy
from ipd.models.policies import DTPolicy
from ipd.models.sequence_trainer import SequenceTrainConfig, SequenceTrainer
from ipd.models.transformer import ConditioningConfig, DecisionTransformer, DTConfig, save_dt
from ipd.models.value import IQLLearner
from ipd.models.value_head import ValueHeadConfig, fit_value_head
from ipd.tokens import (
    CONDITIONS,
    INFERENCE_VALUES,
    TOKEN_BOOTSTRAPS,
    TOKEN_SCALES,
    conditioning_tokens,
    data_bootstrap,
    token_encoding,
    window_sampling,
)
from ipd.utils import apply_in_chunks

Q_TERM_RULES = ("always", "teacher_check")
TEACHER_CHECK_KEYS = (
    "q_term_rule",
    "teacher_check_starts",
    "teacher_check_horizon",
    "teacher_check_trust_quantile",
)
EvalFn = Callable[[Policy, int], dict[str, float]]  # (policy, episodes) -> metrics


@dataclass
class DistillConfig:
    """What stage 3 trains on and how the policy is conditioned (Hydra group ``policy``).

    condition: the token (module docstring); inference_value: V* at test time for
    ``condition=value`` (expectile | iql); token_expectile: τ of the expectile head; token_gamma:
    discount of the value token (None: the critic's; 1: undiscounted, as DT's return-to-go);
    token_head_updates: its training steps; token_head_time: the head also sees the episode step
    (V*(s, t), :class:`ipd.models.value_head.TimedValue`); token_bootstrap: what G_t adds at a
    segment end that continues beyond the data, ``iql`` (the critic's V, converted) or ``data`` (a
    τ = ``token_bootstrap_expectile`` head V_data(s, t) fitted on the original episodes' returns-to-go,
    :func:`data_bootstrap`); token_scale: how value tokens enter the model, ``standardise`` (their
    training mean and std) or ``return_scale`` (divided by the task's return scale, as DT's RTG);
    imagined_share: probability of a window from a
    stitched trajectory (None: length-proportional); use_augmented: train on the stage-2 dataset
    (else the original); finetune_critic: keep training the stage-1 critic during distillation;
    eval_episodes: episodes of each periodic evaluation (0 = none); q_term_rule: when the Q-term
    (``train.alpha``) applies, ``always`` or ``teacher_check`` (only when the world model confirms
    that the stage-1 actor beats the data's behaviour, :mod:`ipd.planning.teacher_check`; the check
    runs the actor from ``teacher_check_starts`` episode starts for ``teacher_check_horizon`` steps;
    with ``teacher_check_trust_quantile`` q, only the rewards of steps whose model uncertainty stays
    at or under the q-quantile of U over the dataset count towards the teacher's return).
    """

    condition: str = "value"
    inference_value: str = "expectile"
    token_expectile: float = 0.99
    token_gamma: float | None = 1.0
    token_head_updates: int = 20_000
    token_head_time: bool = False
    token_bootstrap: str = "iql"
    token_bootstrap_expectile: float = 0.5
    token_scale: str = "standardise"
    imagined_share: float | None = 0.2
    use_augmented: bool = True
    finetune_critic: bool = False
    eval_episodes: int = 0
    q_term_rule: str = "teacher_check"
    teacher_check_starts: int = 100
    teacher_check_horizon: int = 1000
    teacher_check_trust_quantile: float | None = None

    def __post_init__(self) -> None:
        if self.condition not in CONDITIONS:
            raise ValueError(f"condition must be one of {'|'.join(CONDITIONS)}, got '{self.condition}'")
        if self.inference_value not in INFERENCE_VALUES:
            raise ValueError(
                f"inference_value must be one of {'|'.join(INFERENCE_VALUES)}, got '{self.inference_value}'"
            )
        if not 0.0 < self.token_expectile < 1.0:
            raise ValueError(f"token_expectile must be in (0, 1), got {self.token_expectile}")
        if self.token_bootstrap not in TOKEN_BOOTSTRAPS:
            raise ValueError(
                f"token_bootstrap must be one of {'|'.join(TOKEN_BOOTSTRAPS)}, got '{self.token_bootstrap}'"
            )
        if self.token_scale not in TOKEN_SCALES:
            raise ValueError(f"token_scale must be one of {'|'.join(TOKEN_SCALES)}, got '{self.token_scale}'")
        if not 0.0 < self.token_bootstrap_expectile < 1.0:
            raise ValueError(
                f"token_bootstrap_expectile must be in (0, 1), got {self.token_bootstrap_expectile}"
            )
        if self.imagined_share is not None and not 0.0 <= self.imagined_share < 1.0:
            raise ValueError(f"imagined_share must be in [0, 1) or null, got {self.imagined_share}")
        if self.token_gamma is not None and not 0.0 < self.token_gamma <= 1.0:
            raise ValueError(f"token_gamma must be in (0, 1] or null, got {self.token_gamma}")
        if self.eval_episodes < 0 or self.token_head_updates < 1:
            raise ValueError("eval_episodes must be >= 0 and token_head_updates >= 1")
        if self.q_term_rule not in Q_TERM_RULES:
            raise ValueError(f"q_term_rule must be one of {'|'.join(Q_TERM_RULES)}, got '{self.q_term_rule}'")
        if self.teacher_check_starts < 1 or self.teacher_check_horizon < 1:
            raise ValueError("teacher_check_starts and teacher_check_horizon must be >= 1")
        q = self.teacher_check_trust_quantile
        if q is not None and not 0.0 < q <= 1.0:
            raise ValueError(f"teacher_check_trust_quantile must be in (0, 1] or null, got {q}")

    @property
    def needs_value(self) -> bool:
        """Whether the token needs the stage-1 value function."""
        return self.condition != "rtg"

    @property
    def inference_mode(self) -> str:
        """The token's meaning at test time: a return-to-go or the current state's value."""
        return "rtg" if self.condition == "rtg" else "value"

    @property
    def uses_value_head(self) -> bool:
        return self.condition == "value" and self.inference_value == "expectile"


@dataclass
class DistillResult:
    """A trained stage-3 policy and everything needed to run or save it alone."""

    model: DecisionTransformer
    state_normalizer: Normalizer
    conditioning: ConditioningConfig
    metrics: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)  # bundled value network, if any
    value_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
    history: list[dict[str, float]] = field(default_factory=list)  # logged training metrics

    def policy(self, device: str | torch.device = "cpu") -> DTPolicy:
        return DTPolicy(self.model, self.state_normalizer, self.conditioning, self.value_fn, device)

    def save(self, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        """A standalone ``ipd.dt`` checkpoint (value-conditioned ones bundle the value network)."""
        meta = {**self.extra, **(extra or {})}
        return save_dt(path, self.model, self.state_normalizer, self.conditioning, meta)


def imagined_token_share(sampler: SequenceSampler, batches: int = 200, batch_size: int = 64) -> float:
    """Share of loss-carrying tokens in sampled windows that are imagined (a fresh RNG: no side effects)."""
    imagined = sampler.traj.transitions.extras.get("imagined")
    if imagined is None:
        return 0.0
    probe = copy.copy(sampler)
    probe.rng = np.random.default_rng(12345)
    flags = np.concatenate([imagined.astype(np.float64), [0.0]])
    num = den = 0.0
    for _ in range(batches):
        b = probe.sample(batch_size)
        num += float((flags[b.rows] * b.weights).sum())
        den += float(b.weights.sum())
    return num / max(den, 1e-12)


def critic_finetuner(
    value: IQLLearner, dataset: Transitions, batch_size: int, seed: int
) -> Callable[[int], dict[str, float]]:
    """One IQL step on ``dataset`` per policy update (``DistillConfig.finetune_critic``).

    The critic's state travels in the policy's training state (``SequenceTrainer(companions=...)``),
    so a resumed run continues with the fine-tuned critic, not the stage-1 one.
    """
    rng = np.random.default_rng(seed + 1)
    keys = ("observations", "actions", "rewards", "next_observations", "terminals")

    def step(update: int) -> dict[str, float]:
        idx = rng.integers(0, len(dataset), batch_size)
        metrics = value.update({k: getattr(dataset, k)[idx] for k in keys})
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
    ``distill_cfg.eval_episodes > 0``. ``checkpoint_dir`` holds ``train_state.pt`` (with a fine-tuned
    critic's state); an existing state there is resumed.
    """
    if distill_cfg.needs_value and value is None:
        raise ValueError(f"condition={distill_cfg.condition} needs the stage-1 value learner")
    tg = distill_cfg.token_gamma
    if distill_cfg.condition == "value" and tg not in (None, gamma) and distill_cfg.inference_value == "iql":
        raise ValueError(
            f"token_gamma={tg} differs from the critic's gamma={gamma}: the IQL V is on another scale "
            "than the tokens; use inference_value=expectile (a head fitted to the tokens)."
        )
    if train_cfg.alpha > 0 and value is None:
        raise ValueError("alpha > 0 needs the stage-1 critic (pass value=IQLLearner)")
    device = torch.device(device)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    traj = Trajectories.from_transitions(dataset)
    bootstrap, info = None, {}
    if distill_cfg.condition == "value" and distill_cfg.token_bootstrap == "data":
        bootstrap, info = data_bootstrap(
            traj,
            gamma if tg is None else float(tg),
            distill_cfg.token_bootstrap_expectile,
            dt_cfg.max_timestep,
            distill_cfg.token_head_updates,
            seed,
            device,
            progress,
        )
    tokens = conditioning_tokens(
        traj, distill_cfg.condition, value, gamma, distill_cfg.token_gamma, dt_cfg.max_timestep, bootstrap
    )
    imagined = dataset.extras.get("imagined")
    if imagined is not None and np.asarray(imagined).any():  # how the token ranks imagined vs real rows
        info["imagined_row_token_mean"] = float(tokens[np.asarray(imagined).astype(bool)].mean())
    norm = state_normalizer or Normalizer.fit(dataset.observations)
    conditioning = token_encoding(
        tokens, distill_cfg.condition, distill_cfg.token_scale, return_scale, target_return
    )
    probs, row_weights = window_sampling(traj, distill_cfg.imagined_share)
    sampler = SequenceSampler(
        traj,
        dt_cfg.context,
        tokens - conditioning.offset,
        conditioning.scale,
        norm,
        row_weights,
        dt_cfg.max_timestep,
        seed,
        probs,
    )
    info: dict[str, Any] = {**info, "imagined_token_share": imagined_token_share(sampler)}
    value_fn, value_state = None, None
    if distill_cfg.uses_value_head:  # V*(s): a τ-expectile of the training tokens given the state
        head_cfg = ValueHeadConfig(
            distill_cfg.token_expectile, num_updates=distill_cfg.token_head_updates, seed=seed
        )
        steps = traj.timesteps if distill_cfg.token_head_time else None
        value_fn, head_metrics = fit_value_head(
            traj.transitions.observations, tokens, head_cfg, device, progress, steps, dt_cfg.max_timestep
        )
        value_state = value_fn.state_dict()
        info |= head_metrics
    elif distill_cfg.inference_mode == "value":
        value_fn, value_state = value.value_fn(), value.value_state()
    if value_fn is not None:  # how optimistic the inference token is relative to the training tokens
        # A strided sample of at most ~65k states: the mean is a diagnostic, not worth 1M evaluations.
        stride = max(1, len(dataset.observations) // 65536)
        sample = [torch.as_tensor(traj.transitions.observations[::stride])]
        if getattr(value_fn, "takes_timestep", False):
            sample.append(torch.as_tensor(traj.timesteps[::stride]))
        v_star = apply_in_chunks(value_fn, *sample)
        info["token_mean"], info["inference_token_mean"] = float(tokens.mean()), float(v_star.mean())
    critic = value.q_torch if (value is not None and train_cfg.alpha > 0) else None
    after_update = None
    if distill_cfg.finetune_critic and critic is None:
        warnings.warn(
            "policy.finetune_critic is set but alpha = 0 (policy.train.alpha, or a failed teacher check): "
            "no Q-term, so no critic to fine-tune.",
            stacklevel=2,
        )
    companions = {}
    if critic is not None and distill_cfg.finetune_critic:
        after_update = critic_finetuner(value, dataset, critic_batch_size, seed)
        companions["critic"] = value
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
        companions=companions,
    )
    periodic = None
    if eval_fn is not None and distill_cfg.eval_episodes > 0:

        def periodic(model: DecisionTransformer, step: int) -> dict[str, float]:
            policy = DTPolicy(model, norm, conditioning, value_fn=value_fn, device=device)
            return eval_fn(policy, distill_cfg.eval_episodes)

    metrics = trainer.train(progress=progress, eval_fn=periodic)
    extra = {"value_model": value_state} if value_state is not None else {}
    summary = {**info, **{k: v for k, v in metrics.items() if k != "history"}}
    history = metrics.get("history", [])
    return DistillResult(trainer.policy_model, norm, conditioning, summary, extra, value_fn, history)
