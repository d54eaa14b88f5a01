"""How sure is "A beats B"? Interval estimates for score differences over a few seeds.

With 3–5 seeds per cell a mean ± std table hides how little a gap of a few points means. For a
pair of labels this module reports, per task and for the mean over tasks:

- the difference of mean scores, A − B;
- its 95% **stratified bootstrap** interval: the seeds of A and of B are resampled independently
  (within each task, for the mean over tasks), as in Agarwal et al., *Deep RL at the Edge of the
  Statistical Precipice* (NeurIPS 2021), which recommends interval estimates over point scores
  for few-run comparisons;
- the **probability of improvement** P(X_A > X_B) of a random seed of A over a random seed of B
  (ties count ½; the Mann–Whitney U statistic over n·m pairs), averaged over tasks for the mean, as
  in the same paper.

An interval that contains 0 means the runs do not separate the two labels. With 3 seeds a side
the bootstrap has only 10 distinct resamples per side, so the interval is coarse (and narrower
than a t-interval would be); read it as "how much the seeds we have disagree", not as a test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Comparison:
    task: str  # a task name, or "mean" for the mean over the tasks both labels have
    n_a: int  # seeds of A (for "mean": the smallest count over the tasks)
    n_b: int
    difference: float  # mean(A) - mean(B)
    ci_low: float
    ci_high: float
    prob_improvement: float  # P(a random seed of A scores above a random seed of B)


def probability_of_improvement(a: np.ndarray, b: np.ndarray) -> float:
    """P(X > Y) for X drawn from ``a`` and Y from ``b``, ties counted as one half."""
    a, b = _scores(a, "a"), _scores(b, "b")
    greater = (a[:, None] > b[None, :]).mean()
    ties = (a[:, None] == b[None, :]).mean()
    return float(greater + 0.5 * ties)


def bootstrap_mean_difference(
    pairs: list[tuple[np.ndarray, np.ndarray]], n_boot: int = 10_000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean over ``pairs`` (one (a, b) per task) of mean(a) − mean(b), and its percentile interval
    from resampling every a and every b independently (stratified by task and label)."""
    if not pairs:
        raise ValueError("bootstrap_mean_difference needs at least one (a, b) pair")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    pairs = [(_scores(a, "a"), _scores(b, "b")) for a, b in pairs]
    point = np.mean([a.mean() - b.mean() for a, b in pairs])
    boot = np.zeros(n_boot)
    for a, b in pairs:  # one vectorised draw per task and side; loops run over tasks only
        boot += rng.choice(a, (n_boot, len(a))).mean(1) - rng.choice(b, (n_boot, len(b))).mean(1)
    boot /= len(pairs)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(boot, [tail, 100 - tail])
    return float(point), float(low), float(high)


def compare_labels(
    scores_a: dict[str, list[float]], scores_b: dict[str, list[float]], n_boot: int = 10_000, seed: int = 0
) -> list[Comparison]:
    """One :class:`Comparison` per task that both labels have (sorted), then one for their mean."""
    tasks = sorted(set(scores_a) & set(scores_b))
    pairs = [(np.asarray(scores_a[t], float), np.asarray(scores_b[t], float)) for t in tasks]
    rows = []
    for task, (a, b) in zip(tasks, pairs, strict=True):
        diff, low, high = bootstrap_mean_difference([(a, b)], n_boot, seed=seed)
        rows.append(Comparison(task, len(a), len(b), diff, low, high, probability_of_improvement(a, b)))
    if len(tasks) > 1:
        diff, low, high = bootstrap_mean_difference(pairs, n_boot, seed=seed)
        prob = float(np.mean([r.prob_improvement for r in rows]))
        n_a, n_b = min(len(a) for a, _ in pairs), min(len(b) for _, b in pairs)
        rows.append(Comparison("mean", n_a, n_b, diff, low, high, prob))
    return rows


def _scores(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, float).ravel()
    if len(x) == 0 or not np.isfinite(x).all():
        raise ValueError(f"scores '{name}' must be a non-empty array of finite numbers, got {x}")
    return x
