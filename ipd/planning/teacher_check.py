"""Teacher check: does the world model confirm that the stage-1 actor beats the data's behaviour?

Stage 3's Q-term (``policy.train.alpha``) pulls the distilled policy towards actions the stage-1
critic rates higher, i.e. towards what IQL's own actor does. That helps when the critic's
preferences are sound and hurts when they are not. Measured on generated data (docs/experiments/
alpha-rule.md): on halfcheetah-medium the actor beats the data's behaviour and the Q-term lifts
IPD above DT; on hopper-medium the actor falls early on every seed, and the Q-term drags IPD down
to the actor's level.

The rule decides this from the training data and the stage-1 models only, never from evaluation
returns. From the first states of the dataset's episodes it runs the actor closed loop in every
elite of the world model, each elite following its own trajectory with its mean prediction and
the task's termination rule, for ``horizon`` steps (default 1,000, an evaluation episode). The
teacher's *model return* is the mean over starts of the worst elite's return (ensemble pessimism
as in MOPO, Yu et al., 2020, applied to policy evaluation). The teacher passes when this return
beats the mean return of the dataset's complete episodes over their first ``horizon`` steps. Both
numbers are undiscounted returns on the same reward scale and horizon, so the rule needs no
reference scores and no threshold to tune.

A pessimistic model return is a biased estimate, and the world model can be wrong: on
hopper-medium it does not rank BC policies correctly. So the check is a gate on a single term of
the loss, not a policy-selection method. Failing it leaves the value-conditioned distillation
without the Q-term (``alpha = 0``), which is the Decision Transformer's level on both tasks above.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ipd.data.transitions import Transitions, episode_bounds

ActFn = Callable[[torch.Tensor], torch.Tensor]  # raw states [B, obs] -> actions [B, act] in [-1, 1]


@dataclass(frozen=True)
class TeacherCheck:
    """The teacher check's outcome. Returns are undiscounted, in env reward units."""

    teacher_return: float  # mean over starts of the worst elite's return
    teacher_return_mean_elite: float  # the same with the elites averaged (how optimistic the model is)
    data_return: float  # mean return of the dataset's complete episodes (their first `horizon` steps)
    starts: int
    horizon: int
    # With an uncertainty threshold (trust quantile): the worst elite's return over trusted steps
    # only (U(s, a) at or under the threshold), and the share of steps above it.
    trust_threshold: float | None = None
    trusted_return: float | None = None
    untrusted_share: float | None = None

    @property
    def passed(self) -> bool:
        judged = self.teacher_return if self.trusted_return is None else self.trusted_return
        return judged > self.data_return

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


@dataclass(frozen=True)
class ClosedLoopRollouts:
    """Per elite and start ``[K, N]``: the return, and how much of it the model can vouch for.

    ``trusted_return`` sums only the rewards of steps whose ``U(s, a)`` stays at or under
    ``threshold``; ``untrusted_steps`` counts the other steps. Without a threshold both equal the
    plain return and zero.
    """

    returns: np.ndarray
    trusted_returns: np.ndarray
    untrusted_steps: np.ndarray
    steps: np.ndarray


@torch.inference_mode()
def closed_loop_rollouts(
    model: Any, act: ActFn, starts: np.ndarray, horizon: int, threshold: float | None = None
) -> ClosedLoopRollouts:
    """Run ``act`` closed loop from each of ``starts`` ``[N, obs]`` under each elite.

    ``model`` is an :class:`ipd.models.world_model.EnsembleWorldModel`: elite k steps its own
    trajectory with its mean prediction (``step_members``); a trajectory stops at the model's
    termination rule. Batched over elites and starts (one actor call per step for all K·N
    states). A trajectory whose prediction turns non-finite stops at that step. With
    ``threshold``, each step's ``U(s, a)`` (the ensemble's, at that elite's state) is compared
    with it, as stage 2 compares an imagined step with its acceptance threshold.
    """
    k, n = len(model.elites), len(starts)
    states = torch.as_tensor(starts, dtype=torch.float32, device=model.device).expand(k, n, -1).clone()
    alive = torch.ones(k, n, dtype=torch.bool, device=states.device)
    ret, trusted = torch.zeros(k, n, device=states.device), torch.zeros(k, n, device=states.device)
    untrusted, steps = (torch.zeros(k, n, dtype=torch.long, device=states.device) for _ in range(2))
    for _ in range(horizon):
        actions = act(states.reshape(k * n, -1)).reshape(k, n, -1).to(states)
        nxt, rewards, terminals = model.step_members(states, actions)
        # A trajectory that diverges to inf/NaN stops there, without that step's reward.
        alive &= torch.isfinite(nxt).all(-1) & torch.isfinite(rewards)
        earned = torch.where(alive, rewards, 0.0)
        ret += earned
        steps += alive
        if threshold is not None:
            over = (
                model.uncertainty(states.reshape(k * n, -1), actions.reshape(k * n, -1)).reshape(k, n)
                > threshold
            )
            trusted += torch.where(over, 0.0, earned)
            untrusted += alive & over
        alive &= ~terminals
        states = torch.where(alive[..., None], nxt, states)
        if not alive.any():
            break
    if threshold is None:
        trusted = ret
    return ClosedLoopRollouts(*(x.cpu().numpy() for x in (ret, trusted, untrusted, steps)))


def member_returns_closed_loop(model: Any, act: ActFn, starts: np.ndarray, horizon: int) -> np.ndarray:
    """Undiscounted return of ``act`` from each of ``starts`` under each elite, ``[K, N]``
    (:func:`closed_loop_rollouts` without a threshold)."""
    return closed_loop_rollouts(model, act, starts, horizon).returns


def episode_starts_and_returns(
    data: Transitions, horizon: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """First state and return of every complete episode (one that ends in a terminal or a
    timeout; a trailing cut-off one is left out), summed over at most ``horizon`` steps, as the
    teacher's model return is. Only original rows count: a stage-2 dataset's stitched trajectories
    (``start_index >= 0``: copied prefixes and imagined tails) are left out."""
    if "start_index" in data.extras:
        data = data.subset(np.flatnonzero(np.asarray(data.extras["start_index"]) < 0))
    ends = data.terminals | data.timeouts
    if not ends.any():
        raise ValueError("the teacher check needs complete episodes; the dataset marks no episode end.")
    firsts, lengths = episode_bounds(ends)
    stops = firsts + (lengths if horizon is None else np.minimum(lengths, horizon))
    cumulative = np.concatenate([[0.0], np.cumsum(data.rewards.astype(np.float64))])
    return data.observations[firsts], cumulative[stops] - cumulative[firsts]


def draw_starts(num_episodes: int, num_starts: int, seed: int) -> np.ndarray:
    """Indices of the episodes the check starts from (stage 3 and ``benchmarks/teacher_check.py``)."""
    return np.random.default_rng(seed).choice(num_episodes, min(num_starts, num_episodes), replace=False)


def teacher_check(
    model: Any,
    act: ActFn,
    data: Transitions,
    horizon: int = 1000,
    num_starts: int = 100,
    seed: int = 0,
    trust_threshold: float | None = None,
) -> TeacherCheck:
    """Run the check (module docstring) from ``num_starts`` episode starts drawn with ``seed``.

    With ``trust_threshold`` the teacher is judged by its *trusted* return: a step whose model
    uncertainty ``U(s, a)`` exceeds the threshold earns nothing, as an imagined step above stage
    2's threshold is not accepted. A teacher the model rates highly only where it has no data
    then fails (``policy.teacher_check_trust_quantile``).
    """
    if horizon < 1 or num_starts < 1:
        raise ValueError(f"horizon and num_starts must be >= 1, got {horizon} and {num_starts}")
    starts, returns = episode_starts_and_returns(data, horizon)
    pick = draw_starts(len(starts), num_starts, seed)
    r = closed_loop_rollouts(model, act, starts[pick], horizon, trust_threshold)
    trusted = {}
    if trust_threshold is not None:
        trusted = {
            "trust_threshold": float(trust_threshold),
            "trusted_return": float(r.trusted_returns.min(0).mean()),
            "untrusted_share": float(r.untrusted_steps.sum() / max(int(r.steps.sum()), 1)),
        }
    return TeacherCheck(
        teacher_return=float(r.returns.min(0).mean()),
        teacher_return_mean_elite=float(r.returns.mean()),
        data_return=float(returns.mean()),
        starts=len(pick),
        horizon=horizon,
        **trusted,
    )
