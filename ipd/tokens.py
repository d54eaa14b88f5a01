"""The conditioning token of the stage-3 sequence policy: what it is in training, and its encoding.

Token maths with explicit arguments; :mod:`ipd.distill` wires it into stage 3. ``condition``:

- ``value`` (IPD default: ``token_gamma=1``, inference head ``token_expectile=0.99``).
  *Training:* the value-based return-to-go of the (enriched) trajectory,
  ``G_t = Σ_{k=t}^{T-1} γ^{k-t} r_k + γ^{T-t} (1 - terminal) V(s_T)``, bootstrapped with the IQL
  V at the end of every segment (a timeout, the end of an imagined continuation, or a cut), in the
  critic's units. A trajectory that falls gets low tokens before the fall; a stitched improvement
  gets higher ones. ``token_gamma`` changes the discount of G (1: the undiscounted return DT
  conditions on; the value bootstrap is converted to that discount, :func:`value_returns_to_go`).
  *Inference:* the token is V*(s_t) of the current state, so no target return is tuned; how
  optimistic V* is is the stage's ``inference_value``: ``expectile`` (a τ-expectile head fitted to
  G_t, :mod:`ipd.models.value_head`) or ``iql`` (the IQL V). With the episode step as a second input
  (``token_head_time``) the head is V*(s_t, t): the undiscounted G_t depends on the steps left,
  which the observation lacks. On the real rows of D4RL-protocol data the undiscounted G_t *is* DT's
  return-to-go (episodes end at a terminal, or at the time limit with no steps left to bootstrap),
  so the token differs from DT's only on stitched trajectories.
- ``state_value``: V(s_t) in training and at inference. A function of the state, so it adds no
  information the transformer could not compute (the policy reduces to cloning); an ablation arm.
- ``relabel`` (QDT-style): train on max(RTG^γ_t, V(s_t)), infer on V(s_t).
- ``rtg``: plain DT; undiscounted return-to-go, ``target_return`` at test time.

Why both value tokens exist: the paper's abstract says the learned value replaces the hand-tuned
return-to-go *during inference*; it does not say what the token is in training. G_t is the reading
in which the token varies with the trajectory's outcome (as DT's return-to-go does); V(s_t) is the
literal one (deviation/assumption). The measurements behind the defaults are in
``docs/experiments/`` (linked from the README).

**Imagined windows.** :func:`window_sampling` gives stitched (prefix + imagined) trajectories a set
share of the windows (``imagined_share``; None keeps DT's length-proportional sampling, under which
a few thousand imagined rows among a million real ones are never seen); the copied dataset prefix
of a stitched trajectory is context only (loss weight 0).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ipd.data import Trajectories, Transitions, returns_to_go
from ipd.models.transformer import ConditioningConfig
from ipd.models.value import IQLLearner
from ipd.models.value_head import ValueHeadConfig, fit_value_head
from ipd.utils import apply_in_chunks

CONDITIONS = ("value", "state_value", "relabel", "rtg")
INFERENCE_VALUES = ("expectile", "iql")
TOKEN_BOOTSTRAPS = ("iql", "data")
TOKEN_SCALES = ("standardise", "return_scale")


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
    know that an episode falls hundreds of steps later, and imagined fragments then carry the
    running episodes' tokens (measured on hopper-medium: docs/experiments/). V_data is what the
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
    condition: str,
    value: IQLLearner | None,
    gamma: float,
    token_gamma: float | None = None,
    episode_steps: int = 1000,
    bootstrap: BootstrapFn | None = None,
) -> np.ndarray:
    """Per-row training token in env-return units for ``condition`` (one of :data:`CONDITIONS`;
    ``token_gamma`` and ``bootstrap``: see :func:`value_returns_to_go`)."""
    if condition == "rtg":
        return traj.returns_to_go
    if value is None:
        raise ValueError(f"condition={condition} needs the stage-1 value function")
    if condition == "value":
        return value_returns_to_go(traj, value, gamma, token_gamma, episode_steps, bootstrap)
    if condition == "state_value":
        return state_values(traj, value)
    return np.maximum(traj.discounted_returns_to_go(gamma), state_values(traj, value))  # relabel


def token_encoding(
    tokens: np.ndarray, condition: str, token_scale: str, return_scale: float, target_return: float | None
) -> ConditioningConfig:
    """How tokens enter the model. RTG (``condition="rtg"``): divided by ``return_scale`` (DT).
    Value tokens: with ``token_scale="standardise"``, standardised with their training mean and std,
    because discounted values span a narrow range (hopper: about 0..330, a std near 60) that
    ``/ 1000`` would squeeze next to the timestep embedding; with ``"return_scale"``, divided by
    ``return_scale`` like DT's RTG (undiscounted tokens are on that scale). Measured comparisons:
    docs/experiments/."""
    if condition == "rtg":
        return ConditioningConfig("rtg", return_scale, target_return)
    if token_scale == "return_scale":  # DT's encoding, for undiscounted tokens on the RTG scale
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
