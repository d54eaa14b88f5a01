"""Stage 2: augment the dataset with imagined, planned continuations of suboptimal segments.

Steps (docs/design.md §1, stage 2):

1. **Score** every dataset step with the advantage ``A_t = Q(s_t, a_t) - V(s_t)`` and the
   return gap ``G_t = V(s_t) - RTG^γ_t``. ``RTG^γ`` is bootstrapped with ``V(s'_T)`` at a
   timeout, so a trajectory cut by the 1000-step limit is not mistaken for a poor one.
2. **Select** start states: the worst ``quantile`` of steps by A (low) and/or G (high), at most
   ``max_per_trajectory`` per episode, ``min_spacing`` steps apart. The budget ``max_starts`` is
   spread over trajectories: every suboptimal trajectory's worst start first, then each one's
   second worst, and so on.
3. **Plan** receding-horizon MPC rollouts of up to L steps in the world model from all selected
   states, in batches of ``batch_size`` (one batched planner call each). With
   ``cut_at_uncertainty`` a rollout stops at its first step whose U exceeds the threshold (that
   step is dropped), so long rollouts keep only their trusted part. Finished batches are saved,
   so an interrupted run resumes without re-planning them.
4. **Accept** a rollout when it ran at least ``min_rollout_length`` trusted steps, its max
   uncertainty stays under the threshold (a quantile of U over dataset transitions), and its
   imagined return ``Σγ^k r̂_k + γ^l V(ŝ_l)`` over its own length l beats the dataset's
   continuation over the same l steps ``Σγ^k r_{t+k} + γ^l V(s_{t+l})`` by ``min_improvement``
   plus ``min_relative_improvement`` × |continuation|. With ``acceptance="ensemble_min"`` (the
   default) the imagined return is the worst elite's when the planned actions are replayed under
   each elite (:mod:`ipd.planning.pessimism`), not the planner's sampled one.
5. **Stitch** accepted rollouts after their dataset prefix (at most ``max_prefix_length`` steps,
   by default the policy's context minus one, enough for a full first window) into new
   trajectories. Every row carries ``imagined`` (bool), ``source_episode``, ``start_index``
   (step within the source episode where imagination starts; -1 for original rows) and
   ``value`` (V(s)).

Deviation/assumption: the paper does not give its selection rule or acceptance margin;
comparing like-for-like L-step bootstrapped returns is our choice, as is keeping the
original trajectories alongside the stitched ones (so imagination only adds data).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ipd.data.transitions import Trajectories, Transitions, returns_to_go
from ipd.io import atomic_write
from ipd.planning.pessimism import member_returns
from ipd.utils import apply_in_chunks


@dataclass
class AugmentConfig:
    """Stage 2: which dataset steps are planned from, and which imagined rollouts are kept."""

    select_by: str = "either"  # advantage | gap | either: which suboptimality score picks start states
    quantile: float = 0.1  # the worst fraction of dataset steps by the score are candidates
    advantage_threshold: float | None = None  # absolute alternative to the quantile (env-return units)
    gap_threshold: float | None = None  # the same for the value/return gap
    max_per_trajectory: int = 4  # at most this many start states per dataset trajectory
    min_spacing: int = 25  # steps between two start states of one trajectory
    max_starts: int = 4096  # cap on planned start states (round-robin over trajectories, worst first)
    rollout_length: int = 30  # L: max imagined steps per rollout (receding-horizon MPC)
    min_rollout_length: int = 5  # shorter rollouts (cut early by uncertainty) are rejected
    cut_at_uncertainty: bool = True  # stop a rollout at its first step with U above the threshold
    uncertainty_quantile: float = 0.95  # reject rollouts whose max U exceeds this quantile of U over the data
    min_improvement: float = 0.0  # imagined return must beat the dataset continuation by this (env units)
    # Which predicted return must beat the data: "sampled" (the planner's rollout, one randomly drawn
    # elite per step) or "ensemble_min" (the planned actions replayed under every elite, the worst
    # return; ipd/planning/pessimism.py). Models without step_members (the simulator) use "sampled".
    acceptance: str = "ensemble_min"
    # ... and by this fraction of the continuation's |value| (scale-free margin: the same rule on every
    # task; the model's over-prediction grows with the value it bootstraps from)
    min_relative_improvement: float = 0.05
    max_prefix_length: int | None = 19  # dataset steps kept before the imagined part (null: all)
    batch_size: int = 1024  # start states planned per batched call (the resumable unit)
    # Oracle arm, NOT offline RL (needs the real simulator): replay each accepted rollout's actions in
    # the env and keep only real improvements (ipd/planning/simulator_check.py); out of the hash when false.
    simulator_check: bool = False
    dynamics: str = "model"  # model (the world model) | simulator (oracle arm, not offline: ipd/simulator.py)

    def __post_init__(self) -> None:
        if self.select_by not in ("advantage", "gap", "either"):
            raise ValueError(f"augment.select_by must be advantage|gap|either, got '{self.select_by}'")
        if not 0.0 < self.quantile <= 1.0:
            raise ValueError(f"augment.quantile must be in (0, 1], got {self.quantile}")
        if self.rollout_length < 1 or self.batch_size < 1:
            raise ValueError("augment.rollout_length and augment.batch_size must be >= 1")
        if self.min_rollout_length < 1:
            raise ValueError("augment.min_rollout_length must be >= 1 (it is capped at rollout_length)")
        if self.acceptance not in ("sampled", "ensemble_min"):
            raise ValueError(f"augment.acceptance must be sampled|ensemble_min, got '{self.acceptance}'")
        if self.min_relative_improvement < 0:
            raise ValueError("augment.min_relative_improvement must be >= 0")
        if self.dynamics not in ("model", "simulator"):
            raise ValueError(f"augment.dynamics must be model|simulator, got '{self.dynamics}'")
        if self.max_prefix_length is not None and self.max_prefix_length < 0:
            raise ValueError("augment.max_prefix_length must be >= 0 or null")


@dataclass
class StepScores:
    value: np.ndarray  # V(s_t)            [N]
    advantage: np.ndarray  # Q(s_t,a_t) - V(s_t) [N]
    gap: np.ndarray  # V(s_t) - RTG^γ_t    [N]
    next_value: np.ndarray  # V(s'_t) [N]


def score_steps(traj: Trajectories, value_fn, q_fn, gamma: float) -> StepScores:
    """Value, advantage and return gap for every row (the dataset continuation that a rollout must
    beat is computed per rollout, over its own length, by ``truncated_continuation``).

    ``value_fn(obs)`` and ``q_fn(obs, act)`` take numpy batches and return env-return units.
    """
    t = traj.transitions
    v = apply_in_chunks(value_fn, t.observations)
    v_next = apply_in_chunks(value_fn, t.next_observations)
    q = apply_in_chunks(q_fn, t.observations, t.actions)
    # Bootstrap value after the last step of an episode: 0 at a terminal, V(s') at a timeout.
    ends = t.episode_ends
    tail = np.where(ends & ~t.terminals, v_next, 0.0)
    rtg = returns_to_go(t.rewards, ends, gamma, tail=tail)
    return StepScores(v, q - v, v - rtg, v_next)


def truncated_continuation(
    traj: Trajectories, v_next: np.ndarray, gamma: float, rows: np.ndarray, horizons: np.ndarray
) -> np.ndarray:
    """Σ_{k<h} γ^k r_{t+k} + γ^h V(s_{t+h}) for each ``rows[i]`` with h = min(horizons[i], steps left).

    No bootstrap after a terminal. Vectorised over rows; the loop runs over horizon steps only.
    """
    t = traj.transitions
    n = len(t)
    ep_end = np.repeat(traj.starts + traj.lengths, traj.lengths)[rows]  # exclusive end row per row
    out = np.zeros(len(rows), np.float64)
    alive = np.ones(len(rows), bool)
    for k in range(int(horizons.max()) if len(rows) else 0):
        row = rows + k
        alive &= (row < ep_end) & (k < horizons)
        at = np.minimum(row, n - 1)
        out += np.where(alive, gamma**k * t.rewards[at], 0.0)
        last = alive & ((row + 1 >= ep_end) | (k == horizons - 1))
        boot = np.where(t.terminals[at], 0.0, v_next[at])
        out += np.where(last, gamma ** (k + 1) * boot, 0.0)
        alive &= ~last
    return out.astype(np.float32)


def select_starts(traj: Trajectories, scores: StepScores, cfg: AugmentConfig) -> np.ndarray:
    """Row indices of the selected start states, worst first (see module docstring)."""
    adv_cut = cfg.advantage_threshold
    if adv_cut is None:
        adv_cut = float(np.quantile(scores.advantage, cfg.quantile))
    gap_cut = cfg.gap_threshold
    if gap_cut is None:
        gap_cut = float(np.quantile(scores.gap, 1.0 - cfg.quantile))
    low_adv, big_gap = scores.advantage <= adv_cut, scores.gap >= gap_cut
    mask = {"advantage": low_adv, "gap": big_gap, "either": low_adv | big_gap}[cfg.select_by]
    # Rank by a scale-free badness: the larger of the two rank percentiles.
    badness = np.maximum(_rank01(-scores.advantage), _rank01(scores.gap))
    cand = np.flatnonzero(mask)
    cand = cand[np.argsort(-badness[cand], kind="stable")]  # worst first
    ep = traj.episode_ids
    chosen: dict[int, list[int]] = {}
    picked: list[int] = []
    for row in cand:  # greedy spacing per episode; O(candidates), not in a hot path
        rows = chosen.setdefault(int(ep[row]), [])
        if len(rows) >= cfg.max_per_trajectory or any(abs(row - r) < cfg.min_spacing for r in rows):
            continue
        rows.append(int(row))
        picked.append(int(row))
    # Spread the budget over trajectories: every suboptimal trajectory's worst start first, then
    # each one's second worst, ... (worst first within a round), cut at max_starts.
    rank_in_episode = {row: i for rows in chosen.values() for i, row in enumerate(rows)}
    order = sorted(range(len(picked)), key=lambda i: (rank_in_episode[picked[i]], i))
    return np.asarray([picked[i] for i in order[: cfg.max_starts]], np.int64)


def _rank01(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x, kind="stable"), kind="stable") / max(len(x) - 1, 1)


ROLLOUT_FIELDS = (
    "states",
    "actions",
    "rewards",
    "terminals",
    "uncertainty",
    "values",
    "alive",
    "lengths",
    "valid",
    "cut",
)


def plan_rollouts(
    planner,
    start_states: np.ndarray,
    cfg: AugmentConfig,
    work_dir: Path | None,
    device: torch.device,
    seed: int = 0,
    progress: bool = True,
    max_uncertainty: float | None = None,
) -> dict[str, np.ndarray]:
    """Plan L-step rollouts from all start states in batches; resumable via ``work_dir``.

    ``max_uncertainty`` stops each rollout at its first step whose U exceeds it (planner ``cut``).
    """
    n_batches = int(np.ceil(len(start_states) / cfg.batch_size))
    done = [
        b for b in range(n_batches) if work_dir is not None and (work_dir / f"batch_{b:05d}.npz").is_file()
    ]
    if done:
        print(f"[ipd] augment: resuming, {len(done)} of {n_batches} planned batches found in {work_dir}")
    parts = []
    for b in tqdm(range(n_batches), desc="augment: planning", disable=not progress):
        path = work_dir / f"batch_{b:05d}.npz" if work_dir is not None else None
        if path is not None and path.is_file():
            with np.load(path) as f:
                parts.append({k: f[k] for k in ROLLOUT_FIELDS + ("planned_return",) if k in f})
            continue
        chunk = torch.as_tensor(start_states[b * cfg.batch_size : (b + 1) * cfg.batch_size], device=device)
        gen = torch.Generator(device=device).manual_seed(seed * 100_003 + b)
        kwargs = {"max_uncertainty": max_uncertainty} if max_uncertainty is not None else {}
        ro = planner.rollout(chunk, cfg.rollout_length, generator=gen, **kwargs)
        part = {k: _np(getattr(ro, k)) for k in ROLLOUT_FIELDS + ("planned_return",) if hasattr(ro, k)}
        part.setdefault("valid", np.ones(len(chunk), bool))  # planners without NaN tracking
        if path is not None:
            atomic_write(path, lambda tmp, part=part: _savez(tmp, part))
        parts.append(part)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


def _savez(path: str, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as fh:  # closed before atomic_write renames it
        np.savez(fh, **arrays)


def _np(x) -> np.ndarray:
    return (
        x.detach().float().cpu().numpy()
        if isinstance(x, torch.Tensor) and x.is_floating_point()
        else (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x))
    )


def accept_rollouts(
    rollouts: dict[str, np.ndarray],
    continuation: np.ndarray,
    threshold: float,
    min_improvement: float | np.ndarray,
    min_length: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean accept mask and the predicted improvement of every rollout.

    A rollout is kept when it ran at least ``min_length`` trusted steps, its max uncertainty stays
    under ``threshold``, the model stayed finite, and its bootstrapped return beats the dataset's
    continuation over the same number of steps by more than ``min_improvement`` (per rollout or shared).
    """
    alive = rollouts["alive"].astype(bool)
    u = np.where(alive, rollouts["uncertainty"], 0.0)
    max_u = u.max(axis=1) if u.shape[1] else np.zeros(len(u))
    improvement = rollouts["planned_return"] - continuation
    long_enough = rollouts["lengths"] >= max(min_length, 1)
    reliable = np.isfinite(rollouts["planned_return"]) & (max_u <= threshold) & long_enough
    if "valid" in rollouts:  # the model produced NaN/inf while executing the rollout
        reliable &= rollouts["valid"].astype(bool)
    return reliable & (improvement > min_improvement), improvement


def stitch(
    traj: Trajectories,
    starts: np.ndarray,
    rollouts: dict[str, np.ndarray],
    accepted: np.ndarray,
    values: np.ndarray,
    max_prefix_length: int | None = None,
) -> Transitions:
    """Original trajectories plus, per accepted rollout, dataset prefix + imagined continuation."""
    t = traj.transitions
    ep_ids, step_in_ep = traj.episode_ids, traj.timesteps
    n = len(t)
    original = t.subset(np.arange(n))
    original.extras = {
        "imagined": np.zeros(n, bool),
        "source_episode": ep_ids.astype(np.int64),
        "start_index": np.full(n, -1, np.int64),
        "value": values.astype(np.float32),
        "timestep": step_in_ep.astype(np.int64),
    }
    parts = [original]
    for i in np.flatnonzero(accepted):
        parts.append(
            _stitched_one(
                t, traj, int(starts[i]), {k: v[i] for k, v in rollouts.items()}, values, max_prefix_length
            )
        )
    return Transitions.concatenate(parts)


def _stitched_one(t: Transitions, traj: Trajectories, row: int, ro: dict, values, max_prefix_length):
    ep = int(traj.episode_ids[row])
    first = int(traj.starts[ep])
    if max_prefix_length is not None:
        first = max(first, row - max_prefix_length)
    prefix = np.arange(first, row)
    length = int(ro["lengths"])
    states = ro["states"][: length + 1]
    terminals = ro["terminals"][:length].astype(bool)
    timeouts = np.zeros(length, bool)
    timeouts[-1] = not terminals[-1]  # an imagined tail ends by truncation unless the model terminated
    k = len(prefix)
    t0 = int(traj.timesteps[row])
    return Transitions(
        np.concatenate([t.observations[prefix], states[:-1]]),
        np.concatenate([t.actions[prefix], ro["actions"][:length]]),
        np.concatenate([t.rewards[prefix], ro["rewards"][:length]]),
        np.concatenate([t.next_observations[prefix], states[1:]]),
        np.concatenate([np.zeros(k, bool), terminals]),
        np.concatenate([np.zeros(k, bool), timeouts]),
        extras={
            "imagined": np.concatenate([np.zeros(k, bool), np.ones(length, bool)]),
            "source_episode": np.full(k + length, ep, np.int64),
            "start_index": np.full(k + length, t0, np.int64),
            "value": np.concatenate([values[prefix], ro["values"][:length]]).astype(np.float32),
            "timestep": np.concatenate([traj.timesteps[prefix], t0 + np.arange(length)]).astype(np.int64),
        },
    )


@dataclass
class AugmentResult:
    dataset: Transitions
    stats: dict


def augment_dataset(
    transitions: Transitions,
    planner,
    value_fn,
    q_fn,
    uncertainty_threshold: float,
    cfg: AugmentConfig,
    gamma: float,
    device: torch.device,
    work_dir: Path | None = None,
    seed: int = 0,
    progress: bool = True,
) -> AugmentResult:
    """Run steps 1-5 of the module docstring; returns the augmented dataset and its stats."""
    t_start = time.perf_counter()
    traj = Trajectories.from_transitions(transitions)
    scores = score_steps(traj, value_fn, q_fn, gamma)
    starts = select_starts(traj, scores, cfg)
    t_plan = time.perf_counter()
    cut_at = uncertainty_threshold if cfg.cut_at_uncertainty else None
    rollouts = plan_rollouts(
        planner, transitions.observations[starts], cfg, work_dir, device, seed, progress, cut_at
    )
    plan_time = time.perf_counter() - t_plan
    members = hasattr(getattr(planner, "model", None), "step_members")  # the simulator has one truth
    if len(starts) and cfg.acceptance == "ensemble_min" and members:
        rollouts["sampled_return"] = rollouts["planned_return"]
        rollouts["planned_return"] = member_returns(
            planner.model,
            planner.value_fn,
            transitions.observations[starts],
            rollouts["actions"],
            rollouts["lengths"],
            gamma,
            device,
        ).min(0)
    if len(starts):  # compare like with like: the dataset's continuation over each rollout's length
        continuation = truncated_continuation(traj, scores.next_value, gamma, starts, rollouts["lengths"])
        accepted, improvement = accept_rollouts(
            rollouts,
            continuation,
            uncertainty_threshold,
            cfg.min_improvement + cfg.min_relative_improvement * np.abs(continuation),
            min(cfg.min_rollout_length, cfg.rollout_length),
        )
    else:
        accepted, improvement = np.zeros(0, bool), np.zeros(0)
    dataset = stitch(traj, starts, rollouts, accepted, scores.value, cfg.max_prefix_length)
    imagined_steps = int(rollouts["lengths"].sum()) if len(starts) else 0
    stats = _stats(
        scores,
        starts,
        rollouts,
        accepted,
        improvement,
        dataset,
        uncertainty_threshold,
        traj.episode_ids[starts],
    )
    stats.update(
        wall_time_s=time.perf_counter() - t_start,
        planning_time_s=plan_time,
        imagined_transitions=imagined_steps,
        imagined_transitions_per_s=imagined_steps / max(plan_time, 1e-9),
    )
    pc = getattr(planner, "cfg", None)
    if pc is not None:  # every executed step costs N candidates x H steps x iterations model steps
        model_steps = imagined_steps * pc.num_samples * pc.horizon * pc.iterations
        stats.update(
            planner_model_steps=model_steps, planner_model_steps_per_s=model_steps / max(plan_time, 1e-9)
        )
    return AugmentResult(dataset, stats)


def _stats(scores, starts, rollouts, accepted, improvement, dataset, threshold, episode_of_starts) -> dict:
    n_sel = len(starts)
    imagined_rows = int(dataset.extras["imagined"].sum())
    alive = rollouts["alive"].astype(bool) if n_sel else np.zeros((0, 0), bool)
    u = rollouts["uncertainty"][alive] if n_sel else np.zeros(0)
    qs = (0.5, 0.9, 0.95, 0.99)
    hist = np.histogram(u, bins=20) if len(u) else (np.zeros(0), np.zeros(0))
    return {
        "scored": int(len(scores.value)),
        "selected": n_sel,
        "accepted": int(accepted.sum()),
        "acceptance_rate": float(accepted.mean()) if n_sel else 0.0,
        "mean_improvement_accepted": float(improvement[accepted].mean()) if accepted.any() else 0.0,
        "mean_improvement_all": float(np.nanmean(improvement)) if n_sel else 0.0,
        # the planner's own (sampled-member) prediction, where acceptance used the ensemble minimum
        **(
            {
                "mean_sampled_return_gap_accepted": float(
                    (rollouts["sampled_return"] - rollouts["planned_return"])[accepted].mean()
                )
            }
            if accepted.any() and "sampled_return" in rollouts
            else {}
        ),
        "uncertainty_threshold": float(threshold),
        "rollout_uncertainty_quantiles": {str(q): float(np.quantile(u, q)) for q in qs} if len(u) else {},
        "rollout_uncertainty_histogram": {"counts": hist[0].tolist(), "edges": hist[1].tolist()},
        "mean_rollout_length": float(rollouts["lengths"].mean()) if n_sel else 0.0,
        "mean_rollout_length_accepted": float(rollouts["lengths"][accepted].mean())
        if accepted.any()
        else 0.0,
        "cut_by_uncertainty": int(rollouts["cut"].sum()) if n_sel and "cut" in rollouts else 0,
        "trajectories_with_starts": int(len(np.unique(episode_of_starts))) if n_sel else 0,
        "augmented_transitions": int(len(dataset)),
        "imagined_rows": imagined_rows,
        # shares of the augmented dataset's rows (stage 3 sets the share of *sampled windows*
        # with policy.imagined_share and reports the resulting imagined-token share)
        "imagined_row_share": imagined_rows / max(len(dataset), 1),
        "stitched_row_share": int((dataset.extras["start_index"] >= 0).sum()) / max(len(dataset), 1),
    }
