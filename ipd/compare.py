"""How sure is "A beats B"? Interval estimates for score differences over a few seeds.

With 3–5 seeds per cell a mean ± std table hides how little a gap of a few points means. For a
pair of labels this module reports, per task and for the mean over tasks:

- the difference of mean scores, A − B;
- its 95% **stratified bootstrap** interval: the seeds of A and of B are resampled independently
  (within each task, for the mean over tasks) with ``rliable`` (Agarwal et al., *Deep RL at the
  Edge of the Statistical Precipice*, NeurIPS 2021), which recommends interval estimates over
  point scores for few-run comparisons;
- the **probability of improvement** P(X_A > X_B) of a random seed of A over a random seed of B
  (ties count ½; the Mann–Whitney U statistic over n·m pairs), averaged over tasks for the mean, as
  in the same paper.

:func:`aggregates` gives each label's interquartile mean (IQM) and mean over tasks x seeds with
rliable's interval estimates. rliable is the ``stats`` extra (``pip install 'ipd[stats]'``).

An interval that contains 0 means the runs do not separate the two labels. With 3 seeds a side
the bootstrap has only 10 distinct resamples per side, so the interval is coarse (and narrower
than a t-interval would be); read it as "how much the seeds we have disagree", not as a test.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
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


def _rliable():
    """rliable's ``library`` and ``metrics`` (the ``stats`` extra), or a clear error."""
    try:
        from rliable import library, metrics
    except ImportError as exc:
        raise ImportError(
            f"Interval estimates need rliable ({exc}); install it with `pip install 'ipd[stats]'`."
        ) from exc
    return library, metrics


@contextmanager
def seeded_numpy(seed: int):
    """rliable's bootstraps draw from numpy's global RNG (its ``random_state`` argument does not
    reach the index draws): seed it for reproducible tables, then restore the caller's state."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():  # arch deprecates the RandomState that rliable passes on
            warnings.simplefilter("ignore", FutureWarning)
            yield np.random.RandomState(seed)
    finally:
        np.random.set_state(state)


def probability_of_improvement(a: np.ndarray, b: np.ndarray) -> float:
    """P(X > Y) for X drawn from ``a`` and Y from ``b``, ties counted as one half (rliable's
    Mann-Whitney estimate for one task)."""
    a, b = _scores(a, "a"), _scores(b, "b")
    _, metrics = _rliable()
    return float(metrics.probability_of_improvement(a[:, None], b[:, None]))


def bootstrap_mean_difference(
    pairs: list[tuple[np.ndarray, np.ndarray]], n_boot: int = 10_000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean over ``pairs`` (one (a, b) per task) of mean(a) − mean(b), and its percentile interval
    from rliable's stratified bootstrap: every task's a and b are resampled independently (so tasks
    and labels may have different seed counts)."""
    if not pairs:
        raise ValueError("bootstrap_mean_difference needs at least one (a, b) pair")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    arrays = [_scores(x, name)[:, None] for a, b in pairs for x, name in ((a, "a"), (b, "b"))]

    def mean_difference(*xs: np.ndarray) -> float:
        return float(np.mean([xs[i].mean() - xs[i + 1].mean() for i in range(0, len(xs), 2)]))

    library, _ = _rliable()
    with seeded_numpy(seed) as random_state:
        boot = library.StratifiedIndependentBootstrap(*arrays, random_state=random_state)
        low, high = boot.conf_int(mean_difference, reps=n_boot, size=level, method="percentile")[:, 0]
    point = mean_difference(*arrays)
    # the percentile interval of a skewed few-seed bootstrap can miss the point estimate by a hair:
    # widen it to contain the point, so a table never shows a difference outside its own interval
    return point, float(min(low, point)), float(max(high, point))


def score_matrix(scores: dict[str, list[float]], tasks: list[str], runs: int) -> np.ndarray:
    """``runs x tasks`` matrix of the first ``runs`` scores of each task (rliable's layout)."""
    return np.array([[float(scores[t][r]) for t in tasks] for r in range(runs)])


@dataclass(frozen=True)
class Aggregate:
    label: str
    runs: int  # runs per task in the matrix (the smallest seed count over the tasks)
    iqm: float
    iqm_ci: tuple[float, float]
    mean: float
    mean_ci: tuple[float, float]


def aggregates(
    by_label: dict[str, dict[str, list[float]]], tasks: list[str], reps: int = 2000, seed: int = 0
) -> list[Aggregate]:
    """Interquartile mean and mean over ``tasks`` x seeds per label, with rliable's 95% stratified
    bootstrap intervals (Agarwal et al., 2021). Each label uses its first n seeds on every task,
    n = its smallest seed count over the tasks (rliable needs a full runs x tasks matrix)."""
    library, metrics = _rliable()
    out = []
    for label, scores in by_label.items():
        empty = [t for t in tasks if not scores.get(t)]
        if empty:
            raise ValueError(
                f"aggregates: label '{label}' has no scores on {empty}; pass only tasks every label has"
            )
        runs = min(len(scores[t]) for t in tasks)
        matrix = score_matrix(scores, tasks, runs)
        with seeded_numpy(seed) as random_state:
            point, ci = library.get_interval_estimates(
                {label: matrix},
                lambda x: np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)]),
                reps=reps,
                random_state=random_state,
            )
        (iqm, mean), ((iqm_lo, mean_lo), (iqm_hi, mean_hi)) = point[label], ci[label]
        out.append(
            Aggregate(
                label,
                runs,
                float(iqm),
                (float(iqm_lo), float(iqm_hi)),
                float(mean),
                (float(mean_lo), float(mean_hi)),
            )
        )
    return out


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
