"""Return-based episode filtering for "x% behaviour cloning" baselines.

CORL's any-percent BC (Tarasov et al., "CORL: Research-oriented Deep Offline Reinforcement
Learning Library", 2022; ``algorithms/offline/any_percent_bc.py``) clones only the episodes with
the highest returns: with ``frac = 0.1`` ("10%BC") it ranks the dataset's episodes by their
undiscounted return (``discount: 1.0`` in its ``bc_10`` configs) and keeps the best 10%.

Differences from CORL, all deliberate:

- Episodes end at ``terminals | timeouts`` (or the last row), the library's episode contract
  (:mod:`ipd.data.transitions`), instead of CORL's "terminal or 1000 rows".
- The number kept is ``max(1, round(fraction * n_episodes))``; CORL truncates
  (``int(frac * n)``), so the two can differ by one episode.
- Ties in return are broken by dataset order (earlier episode first), so the result is
  deterministic; CORL's reversed ``argsort`` leaves tie order unspecified.
- Kept rows stay in their original order, so episode boundaries (and the implicit end at
  the last row) remain valid for :class:`~ipd.data.transitions.Trajectories`.
"""

from __future__ import annotations

import numpy as np

from ipd.data.transitions import Trajectories, Transitions


def _check_fraction(fraction: float) -> float:
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}.") from None
    if not 0.0 < value <= 1.0:  # also rejects NaN
        raise ValueError(
            f"fraction must be in (0, 1] (e.g. 0.1 keeps the best 10% of episodes), got {fraction!r}."
        )
    return value


def top_episode_rows(transitions: Transitions, fraction: float) -> tuple[np.ndarray, int]:
    """Row indices (ascending) of the best ``fraction`` of episodes, and how many episodes that is.

    See :func:`top_episodes` for the selection rule.
    """
    fraction = _check_fraction(fraction)
    traj = Trajectories.from_transitions(transitions)
    n_episodes = len(traj)
    keep = min(n_episodes, max(1, round(fraction * n_episodes)))
    # Stable sort on the negated return: best first, ties in dataset order.
    ranked = np.argsort(-traj.episode_returns.astype(np.float64), kind="stable")
    kept = np.zeros(n_episodes, bool)
    kept[ranked[:keep]] = True
    rows = np.flatnonzero(np.repeat(kept, traj.lengths))
    return rows, keep


def top_episodes(transitions: Transitions, fraction: float) -> Transitions:
    """The episodes whose undiscounted return ranks in the top ``fraction`` (CORL's any-percent BC).

    Episodes are split at ``terminals | timeouts`` (see :class:`Trajectories`). Exactly
    ``max(1, round(fraction * n_episodes))`` episodes are kept (Python's ``round``: halves go to
    the even integer, e.g. 2.5 -> 2, 3.5 -> 4); among episodes with equal returns the earlier one
    ranks higher. Rows keep their original order and every ``extras`` field is carried along.
    ``fraction`` must be in (0, 1]; 1 returns all rows.
    """
    rows, _ = top_episode_rows(transitions, fraction)
    return transitions.subset(rows)
