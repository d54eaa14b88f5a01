"""Oracle arm of stage 2: check the accepted imagined rollouts in the real simulator.

Not offline RL. This is a diagnostic that attributes IPD's result to the world model or to the
rest of the method. It takes a finished stage-2 dataset and, for every stitched trajectory:

1. resets the simulator to the dataset state where imagination starts, and replays the planned
   actions open loop (``simulate``: see :func:`ipd.simulator.replay_from_observation`);
2. replaces the imagined transitions with the simulator's (states, rewards, termination; the
   tail ends at a real termination) and re-annotates ``value`` with V of the real states;
3. keeps the trajectory only when the reset was exact and the real bootstrapped return
   ``Σγ^k r_k + γ^l V(s_l)`` beats the dataset's continuation over the same l steps by
   ``min_improvement``, the same test the augmenter applied to the model's predictions.

The plans are unchanged, so the result is what a world model that never errs on these action
sequences would have given: the same starts and plans, real outcomes, and only real
improvements kept. If IPD on this data beats IPD on the model's data, the world model's errors
are what holds stage 2 back; if not, the plans themselves leave nothing to distil.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ipd.data.transitions import Trajectories, Transitions
from ipd.planning.augment import truncated_continuation
from ipd.utils import apply_in_chunks

# simulate(start_obs, actions) -> (states [l+1, obs], rewards [l], terminated, exact_reset)
Simulate = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, bool, bool]]


def _bootstrapped(rewards: np.ndarray, last_value: float, terminated: bool, gamma: float) -> float:
    disc = gamma ** np.arange(len(rewards))
    return float((disc * rewards).sum() + (0.0 if terminated else gamma ** len(rewards) * last_value))


def _real_segment(prefix: Transitions, seg: Transitions, states, rewards, terminated, values) -> Transitions:
    """``prefix`` followed by the simulator's version of the imagined segment ``seg``."""
    n = len(rewards)
    terminals = np.zeros(n, bool)
    terminals[-1] = terminated
    tail = Transitions(
        states[:-1].astype(np.float32),
        seg.actions[:n],
        rewards.astype(np.float32),
        states[1:].astype(np.float32),
        terminals,
        ~terminals & (np.arange(n) == n - 1),
        extras={
            "imagined": np.ones(n, bool),
            "source_episode": seg.extras["source_episode"][:n],
            "start_index": seg.extras["start_index"][:n],
            "value": values[:n].astype(np.float32),
            "timestep": seg.extras["timestep"][:n],
        },
    )
    return Transitions.concatenate([prefix, tail])


def check_in_simulator(
    augmented: Transitions,
    simulate: Simulate,
    value_fn: Callable[[np.ndarray], np.ndarray],
    gamma: float,
    min_improvement: float = 0.0,
    min_length: int = 1,
    progress: Callable | None = None,
) -> tuple[Transitions, dict]:
    """The augmented dataset with every imagined tail replaced by its real outcome, or dropped.

    ``augmented`` is a stage-2 dataset (original rows first, marked ``start_index == -1``).
    Returns the new dataset and stats comparing the model's predicted improvement with the real one.
    """
    ext = augmented.extras
    original_rows = np.flatnonzero(ext["start_index"] < 0)
    original = augmented.subset(original_rows)
    orig_traj = Trajectories.from_transitions(original)
    next_value = apply_in_chunks(value_fn, original.next_observations)
    stitched = augmented.subset(np.flatnonzero(ext["start_index"] >= 0))
    traj = Trajectories.from_transitions(stitched) if len(stitched) else None
    segments = range(len(traj.starts)) if traj is not None else range(0)
    kept, rows, lengths, model_lengths, real, predicted, exact = [], [], [], [], [], [], []
    for i in progress(segments) if progress else segments:
        rows_i = np.arange(traj.starts[i], traj.starts[i] + traj.lengths[i])
        imag = stitched.extras["imagined"][rows_i].astype(bool)
        prefix, seg = stitched.subset(rows_i[~imag]), stitched.subset(rows_i[imag])
        states, rewards, terminated, exact_i = simulate(seg.observations[0], seg.actions)
        values = apply_in_chunks(value_fn, states.astype(np.float32))
        real.append(_bootstrapped(rewards, float(values[-1]), terminated, gamma))
        model_last = float(value_fn(seg.next_observations[-1:])[0])
        predicted.append(_bootstrapped(seg.rewards, model_last, bool(seg.terminals[-1]), gamma))
        ep, t0 = int(seg.extras["source_episode"][0]), int(seg.extras["start_index"][0])
        rows.append(orig_traj.starts[ep] + t0)
        lengths.append(len(rewards))
        model_lengths.append(len(seg))
        exact.append(exact_i)
        kept.append(_real_segment(prefix, seg, states, rewards, terminated, values))
    n = len(kept)
    rows_a, lengths_a = np.asarray(rows, np.int64), np.asarray(lengths, np.int64)
    real_a, pred_a, exact_a = np.asarray(real), np.asarray(predicted), np.asarray(exact, bool)
    if n:  # like the augmenter: the dataset continuation over each (real) rollout's own length
        cont_real = truncated_continuation(orig_traj, next_value, gamma, rows_a, np.maximum(lengths_a, 1))
        cont_model = truncated_continuation(orig_traj, next_value, gamma, rows_a, np.asarray(model_lengths))
    else:
        cont_real = cont_model = np.zeros(0)
    accept = exact_a & (real_a - cont_real > min_improvement) & (lengths_a >= max(min_length, 1))
    parts = [original] + [kept[i] for i in np.flatnonzero(accept)]
    dataset = Transitions.concatenate(parts)
    stats = _stats(n, exact_a, accept, real_a - cont_real, pred_a - cont_model, dataset)
    return dataset, stats


def _stats(n, exact, accept, real_gain, predicted_gain, dataset) -> dict:
    def mean(x):
        return float(x.mean()) if len(x) else 0.0

    imagined_rows = int(dataset.extras["imagined"].sum())
    return {
        "simulator_check": True,
        "checked": int(n),
        "exact_resets": int(exact.sum()),
        "accepted": int(accept.sum()),
        "acceptance_rate": float(accept.sum() / max(n, 1)),
        "mean_predicted_improvement": mean(predicted_gain[exact]),
        "mean_real_improvement": mean(real_gain[exact]),
        "real_beats_dataset": mean((real_gain[exact] > 0).astype(float)),
        "mean_improvement_accepted": mean(real_gain[accept]),
        "imagined_rows": imagined_rows,
        "imagined_row_share": imagined_rows / max(len(dataset), 1),
        "augmented_transitions": len(dataset),
    }
