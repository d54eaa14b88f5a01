"""Stage 3: distil the (augmented) dataset into a Decision-Transformer policy, without Hydra.

The twin of :mod:`ipd.planning.augment` for stage 3. :func:`distill_policy` takes explicit,
typed arguments (the dataset, the stage-1 value learner, the DT and trainer configs and a
:class:`DistillConfig`) and returns a :class:`DistillResult` that saves a standalone checkpoint.
``ipd.pipeline.distill`` only adds artifact bookkeeping around it.

**The conditioning token** (``DistillConfig.condition``):

- ``value`` (IPD default: ``token_gamma=1``, ``token_expectile=0.99``, chosen over three seeds).
  *Training:* the value-based return-to-go of the (enriched) trajectory,
  ``G_t = Σ_{k=t}^{T-1} γ^{k-t} r_k + γ^{T-t} (1 - terminal) V(s_T)``, bootstrapped with the IQL
  V at the end of every segment (a timeout, the end of an imagined continuation, or a cut), in the
  critic's units. A trajectory that falls gets low tokens before the fall; a stitched improvement
  gets higher ones. ``token_gamma`` changes the discount of G (e.g. 1 for the undiscounted return
  DT conditions on; the value bootstrap is converted to that discount, see
  :func:`value_returns_to_go`). *Inference:* the token is V*(s_t) of the current state, no target
  return is tuned; how optimistic V* is is ``inference_value``: ``expectile`` (a τ-expectile
  head fitted to G_t, :mod:`ipd.models.value_head`, τ = ``token_expectile``) or ``iql`` (the IQL V).
  ``token_head_time`` gives the head the episode step too, V*(s_t, t): the undiscounted G_t
  depends on the steps left, which the observation lacks, and a head on s alone asks late states
  for returns no episode had at that step (:mod:`ipd.models.value_head`).
  Measured on hopper-medium (cpu3k budget, README): with the critic's γ = 0.99 it failed (39.6
  over 30 episodes, seed 0; τ = 0.99 did not help, 37.2): that ~100-step horizon cannot tell an
  episode that falls at step 300 from one that runs 1000 steps. Undiscounted (``token_gamma=1``)
  it scored 55.9 / 53.7 (seeds 0, 1) with τ = 0.9 and 70.4 / 51.3 / 78.1 (seeds 0–2, mean 66.6; α = 0)
  with τ = 0.99, the default: asking for the near-best return seen from a state is what DT's
  high target return does, but learned per state instead of tuned per task. On the real rows of
  D4RL-protocol data the undiscounted G_t *is* DT's return-to-go: episodes end at a terminal
  (no bootstrap) or at the 1000-step limit (no steps left to bootstrap), except the one episode
  cut by the end of the file (hopper-medium: 2,118 terminal and 231 time-limit ends, 1 cut). The
  token differs from DT's only on stitched trajectories, so without imagined data IPD is DT with
  standardised tokens and a learned inference token.
- ``state_value``. V(s_t) from the IQL value in training and at inference, standardised. The
  token is a function of the state, so it adds no information the transformer could not compute
  (the policy is state-history cloning of the augmented data). On hopper-medium it scored 94.4,
  35.5 and 45.7 over seeds 0–2 (mean 58.5): good when it happens to clone the running mode.
- ``relabel`` (QDT-style): train on max(RTG^γ_t, V(s_t)), infer on V(s_t).
- ``rtg``: plain DT; undiscounted return-to-go, ``target_return`` at test time.

Why both value tokens exist: the paper's abstract says the learned value replaces the
hand-tuned return-to-go *during inference*; it does not say what the token is in training. G_t is
the reading in which the token varies with the trajectory's outcome (as DT's return-to-go does);
V(s_t) is the literal one. Which works better is an empirical question, answered for one task and
three seeds of one task so far (deviation/assumption).

**Imagined data at a share that matters.** ``imagined_share`` is the probability that a window
is drawn from a stitched (prefix + imagined) trajectory instead of an original one (each group
proportionally to length); ``None`` keeps DT's length-proportional sampling, under which a few
thousand imagined rows among a million real ones are never seen. The copied dataset prefix of a
stitched trajectory is context only (loss weight 0): those rows are already trained on in
their original trajectory. The measured share of imagined tokens is in the metrics.
On hopper-medium, where the accepted rollouts are no better than the data in the real env
(README, replay check), the length-proportional share (4.5–7.3% of trained tokens) with DT's token
scale is the per-task default: over seeds 0–4 of one dataset build, same stage-1/2 artifacts, it
scored 57.7 against 55.6 for standardised tokens at a 20% share (DT 57.3): level, not a
measured gain; it does not oversample rollouts that are no better. The other tasks keep 0.2.

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

from ipd.data import Normalizer, SequenceSampler, Trajectories, Transitions, returns_to_go
from ipd.models.base import Policy
from ipd.models.policies import DTPolicy
from ipd.models.sequence_trainer import SequenceTrainConfig, SequenceTrainer
from ipd.models.transformer import ConditioningConfig, DecisionTransformer, DTConfig, save_dt
from ipd.models.value import IQLLearner
from ipd.models.value_head import ValueHeadConfig, fit_value_head
from ipd.utils import apply_in_chunks

CONDITIONS = ("value", "state_value", "relabel", "rtg")
INFERENCE_VALUES = ("expectile", "iql")
TOKEN_BOOTSTRAPS = ("iql", "data")
TOKEN_SCALES = ("standardise", "return_scale")

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
    eval_episodes: episodes of each periodic evaluation (0 = none).
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


BootstrapFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (next states, their steps) -> token-unit value


def value_returns_to_go(
    traj: Trajectories,
    value: IQLLearner,
    gamma: float,
    token_gamma: float | None = None,
    episode_steps: int = 1000,
    bootstrap: BootstrapFn | None = None,
) -> np.ndarray:
    """G_t: reward-to-go of each segment plus a value bootstrap at its non-terminal end.

    With ``token_gamma`` None (or equal to the critic's ``gamma``) this is the critic-unit
    ``Σ γ^{k-t} r_k + γ^{T-t} V(s_T)``. Another ``token_gamma`` (e.g. 1: undiscounted, as DT's
    return-to-go) converts the bootstrap: V(s_T) is read as a constant reward rate
    r̄ = V (1 - γ) / (1 - γ^h) over the h = ``episode_steps`` - t steps the episode has left
    (0 at the time limit), and the tail is that rate summed with ``token_gamma`` over h steps.
    ``bootstrap(s_T, t_T)`` replaces the IQL V with a value already in token units
    (:func:`data_bootstrap`); it is still 0 where no steps are left.
    """
    t = traj.transitions
    ends = t.episode_ends
    boot = np.flatnonzero(ends & ~t.terminals)  # segment ends that continue beyond the data
    tail = np.zeros(len(t), np.float64)
    tg = gamma if token_gamma is None else float(token_gamma)
    left = np.maximum(episode_steps - (traj.timesteps[boot] + 1), 0).astype(np.float64)
    if len(boot) and bootstrap is not None:
        next_steps = np.minimum(traj.timesteps[boot] + 1, episode_steps)
        tail[boot] = np.where(left > 0, bootstrap(t.next_observations[boot], next_steps), 0.0)
    elif len(boot):
        tail[boot] = apply_in_chunks(value.value, t.next_observations[boot])
        if tg != gamma:
            rate = tail[boot] * (1 - gamma) / np.maximum(1 - gamma**left, 1e-12)
            steps = left if tg == 1.0 else (1 - tg**left) / (1 - tg)
            tail[boot] = np.where(left > 0, rate * steps, 0.0)
    return returns_to_go(t.rewards, ends, tg, tail=tail)


def data_bootstrap(
    traj: Trajectories,
    token_gamma: float,
    expectile: float = 0.5,
    episode_steps: int = 1000,
    num_updates: int = 20_000,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> tuple[BootstrapFn, dict[str, float]]:
    """V_data(s, t): a τ-expectile head on the original episodes' returns-to-go (``token_gamma``).

    Why: the IQL V converted to the steps left (:func:`value_returns_to_go`) reads V(s_T) as a
    reward rate kept until the time limit. With γ = 0.99 the critic sees ~100 steps, so it cannot
    know that most hopper-medium episodes fall hundreds of steps later: on seed 0's stage-2 data the
    converted bootstrap at imagined ends before step 200 averages 2,990 (the 1,000-step episodes'
    level) while the data's mean return from those states and steps is 1,583 (380 vs 1,125 at
    steps 200-399). Imagined fragments then carry the running episodes' tokens. V_data is what the
    data show happens after s_T at step t (τ = 0.5: the mean; higher τ: the better continuations),
    in the token's own units, with the step as input because G_t depends on the steps left.
    """
    t = traj.transitions
    original = ~stitched_rows(t)
    targets = traj.returns_to_go if token_gamma == 1.0 else traj.discounted_returns_to_go(token_gamma)
    head_cfg = ValueHeadConfig(expectile, num_updates=num_updates, seed=seed)
    head, metrics = fit_value_head(
        t.observations[original],
        targets[original],
        head_cfg,
        device,
        progress,
        traj.timesteps[original],
        episode_steps,
    )

    def score(states: np.ndarray, steps: np.ndarray) -> torch.Tensor:
        return head(torch.as_tensor(states), torch.as_tensor(steps))

    def bootstrap(states: np.ndarray, steps: np.ndarray) -> np.ndarray:
        return apply_in_chunks(score, states, steps).astype(np.float64)

    return bootstrap, {f"bootstrap_{k}": v for k, v in metrics.items()}


def state_values(traj: Trajectories, value: IQLLearner) -> np.ndarray:
    """V(s_t) per row (stage 2's annotation when present, else computed)."""
    t = traj.transitions
    values = t.extras.get("value")
    if values is None or t.extras.get("imagined") is None:
        values = apply_in_chunks(value.value, t.observations)
    return values


def conditioning_tokens(
    traj: Trajectories,
    cfg: DistillConfig,
    value: IQLLearner | None,
    gamma: float,
    episode_steps: int = 1000,
    bootstrap: BootstrapFn | None = None,
) -> np.ndarray:
    """Per-row training token in env-return units for ``cfg.condition`` (``bootstrap``: see
    :func:`value_returns_to_go`)."""
    if cfg.condition == "rtg":
        return traj.returns_to_go
    if value is None:
        raise ValueError(f"condition={cfg.condition} needs the stage-1 value function")
    if cfg.condition == "value":
        return value_returns_to_go(traj, value, gamma, cfg.token_gamma, episode_steps, bootstrap)
    if cfg.condition == "state_value":
        return state_values(traj, value)
    return np.maximum(traj.discounted_returns_to_go(gamma), state_values(traj, value))  # relabel


def token_encoding(
    tokens: np.ndarray, cfg: DistillConfig, return_scale: float, target_return: float | None
) -> ConditioningConfig:
    """How tokens enter the model. RTG: divided by ``return_scale`` (DT). Value tokens: standardised
    with their training mean and std, because discounted values span a narrow range (hopper: about
    0..330, a std near 60) that ``/ 1000`` would squeeze next to the timestep embedding; with
    ``token_scale=return_scale`` divided by ``return_scale`` like DT's RTG (undiscounted tokens are
    on that scale). On hopper-medium seed 0 without imagined data or Q-term, standardised: 34.3,
    DT's scale: 59.4 (DT 57.5); with both: 35.4 vs 36.5. Over seeds 0–4 with the imagined windows
    at their natural share it is hopper-medium's default (``task.token_scale``, README)."""
    if cfg.inference_mode == "rtg":
        return ConditioningConfig("rtg", return_scale, target_return)
    if cfg.token_scale == "return_scale":  # DT's encoding, for undiscounted tokens on the RTG scale
        return ConditioningConfig("value", return_scale, target_return)
    std = max(float(np.std(tokens, dtype=np.float64)), 1e-6)
    return ConditioningConfig("value", std, target_return, offset=float(np.mean(tokens, dtype=np.float64)))


def stitched_rows(transitions: Transitions) -> np.ndarray:
    """Rows of stitched (prefix + imagined) trajectories: ``start_index >= 0`` (none without it)."""
    start_index = transitions.extras.get("start_index")
    if start_index is None:
        return np.zeros(len(transitions), bool)
    return np.asarray(start_index) >= 0


def window_sampling(traj: Trajectories, imagined_share: float | None) -> tuple[np.ndarray | None, np.ndarray]:
    """Per-trajectory sampling probabilities and per-row loss weights for stitched data.

    Stitched trajectories (``start_index >= 0``) get ``imagined_share`` of the probability mass,
    originals the rest, each proportionally to length. Copied prefix rows (stitched, not imagined)
    get loss weight 0: they are context for the imagined rows, trained on in their original episode.
    """
    t = traj.transitions
    weights = np.ones(len(t), np.float32)
    start_index, imagined = t.extras.get("start_index"), t.extras.get("imagined")
    if start_index is None or imagined is None:
        return None, weights
    stitched_row = stitched_rows(t)
    weights[stitched_row & ~imagined.astype(bool)] = 0.0
    stitched = stitched_row[traj.starts]
    if imagined_share is None or not stitched.any() or stitched.all():
        return None, weights
    lengths = traj.lengths.astype(np.float64)
    probs = np.where(stitched, imagined_share * lengths / lengths[stitched].sum(), 0.0)
    probs += np.where(~stitched, (1 - imagined_share) * lengths / lengths[~stitched].sum(), 0.0)
    return probs, weights


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
    tokens = conditioning_tokens(traj, distill_cfg, value, gamma, dt_cfg.max_timestep, bootstrap)
    imagined = dataset.extras.get("imagined")
    if imagined is not None and np.asarray(imagined).any():  # how the token ranks imagined vs real rows
        info["imagined_row_token_mean"] = float(tokens[np.asarray(imagined).astype(bool)].mean())
    norm = state_normalizer or Normalizer.fit(dataset.observations)
    conditioning = token_encoding(tokens, distill_cfg, return_scale, target_return)
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
            "policy.finetune_critic is set but alpha = 0: no Q-term, so no critic to fine-tune.", stacklevel=2
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
