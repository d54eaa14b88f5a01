#!/usr/bin/env python
"""Collect finished runs into a results table and plots.

    python scripts/results.py [--runs runs] [--out results] [--main ipd-3k,dt-3k,iql,bc,bc10]
                              [--ledger results/runs.jsonl] [--compare ipd-3k:dt-3k,ipd-3k:bc10]

Reads every ``metrics.json`` under ``--runs`` that has a ``normalized_score`` (written by
``scripts/train.py``), groups by (task, label) -- the label is ``logging.label`` when a run set
one (e.g. ablation arms), else the algo -- and writes
``<out>/results.md`` (mean ± std over seeds of the D4RL-normalised score, one row per task,
one column per algo), the mean wall time of each stage per (task, label) from the artifacts the
runs used, ``<out>/scores.png`` (per-task bars) and ``<out>/curves.png`` (action-regression loss
and periodic-evaluation curves from each run's ``metrics.csv``).

``--ledger`` keeps every run's score and stage wall times in a committed JSON-lines file and
tabulates the ledger merged with the runs found now, so a table can combine seeds run on
different machines (``runs/`` stays on the machine that made it). One row per (task, label,
seed): the latest run.

``--compare A:B,...`` adds, per task and for the mean over tasks, the difference A − B with a 95%
stratified bootstrap interval over seeds and the probability of improvement (``ipd.compare``).

With ``--main``, an aggregate section gives each main label's interquartile mean and mean over
tasks x seeds with rliable's 95% stratified bootstrap intervals, final and best side by side, and
``<out>/profiles.png`` its performance profiles (rliable; the ``stats`` extra).

The score of a run is its **final** evaluation, after the last update (not the best periodic one;
CORL reports the last, QT the best).
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from ipd.compare import aggregates, compare_labels, score_matrix, seeded_numpy
from ipd.ledger import LEDGER_STAGES, finished_runs, merge_ledger, read_ledger, write_ledger


def data_build(row: dict) -> str:
    """``<origin>:<fingerprint>`` of the dataset a run trained on (``?`` where not recorded)."""
    return f"{row.get('data_origin') or '?'}:{row.get('data') or '?'}"


def _group(rows: list[dict]) -> tuple[dict[tuple[str, str], list[dict]], list[str], list[str]]:
    """Runs by (task, label), and the sorted tasks and labels. A cell never pools datasets: where
    one (task, label) holds runs on different data (two recorded origins or two recorded
    fingerprints differ), each build becomes a label of its own, ``<label> @<origin>:<fingerprint[:6]>``.
    A run that predates the record (``?``) pools with the others."""
    by = defaultdict(list)
    for r in rows:
        by[(r["task"], r["label"])].append(r)
    cells = defaultdict(list)
    for (task, label), runs in by.items():
        origins = {r["data_origin"] for r in runs if r.get("data_origin")}
        mixed = len(origins) > 1 or len({r["data"] for r in runs if r.get("data")}) > 1
        for r in runs:
            origin, _, fingerprint = data_build(r).partition(":")
            cells[(task, f"{label} @{origin}:{fingerprint[:6]}" if mixed else label)].append(r)
    return cells, sorted({t for t, _ in cells}), sorted({a for _, a in cells})


def _score_and_spread(runs: list[dict]) -> tuple[float, float | None]:
    """Mean score and its spread: std over seeds, or over episodes for a single seed (None if unknown)."""
    scores = [float(r["normalized_score"]) for r in runs]
    if len(scores) > 1:
        return float(np.mean(scores)), float(np.std(scores))
    episode_std = runs[0].get("normalized_score_std")
    return scores[0], None if episode_std is None else float(episode_std)


def _cell(runs: list[dict]) -> str:
    mean, spread = _score_and_spread(runs)
    if len(runs) > 1:
        return f"{mean:.1f} ± {spread:.1f} (n={len(runs)})"
    # One seed has no seed spread; show the spread over its evaluation episodes instead.
    return f"{mean:.1f} (n=1" + (f", ±{spread:.1f} over episodes" if spread is not None else "") + ")"


def _mean_cell(task_means: list[float]) -> str:
    if not task_means:
        return "–"
    k = len(task_means)
    return f"{np.mean(task_means):.1f} ({k} task{'s' * (k > 1)})"


def table(rows: list[dict], labels: list[str] | None = None) -> str:
    """Tasks × labels (all labels, or ``labels`` in that order), with a mean row."""
    by, tasks, algos = _group(rows)
    if labels:
        algos = [a for a in labels if a in algos]
    lines = ["| task | " + " | ".join(algos) + " |", "| --- |" + " --- |" * len(algos)]
    means = defaultdict(list)
    for t in tasks:
        cells = []
        for a in algos:
            runs = by.get((t, a))
            cells.append(_cell(runs) if runs else "–")
            if runs:
                means[a].append(_score_and_spread(runs)[0])
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    # A column averaged over fewer tasks is not comparable, so the count is shown.
    mean_cells = [_mean_cell(means[a]) for a in algos]
    lines.append("| **mean** | " + " | ".join(mean_cells) + " |")
    note = (
        "\nScore: the final evaluation after the last update (not the best one). "
        "n = seeds; ± is the std over seeds (over evaluation episodes when n=1).\n"
    )
    return "\n".join(lines) + "\n" + note


def arms_table(rows: list[dict], exclude: list[str]) -> str:
    """One line per (task, label) not in ``exclude``: the ablation arms, which would make the main
    table too wide to read."""
    by, tasks, labels = _group(rows)
    lines = ["| task | label | score |", "| --- | --- | --- |"]
    lines += [
        f"| {t} | {a} | {_cell(by[(t, a)])} |"
        for t in tasks
        for a in labels
        if a not in exclude and by.get((t, a))
    ]
    return "\n".join(lines) + "\n"


def imagined_volume_table(rows: list[dict]) -> str:
    """Score against the imagined data volume (ledger ``imagined_rows``: the distinct imagined rows
    stage 3 trained on, 0 without stage 2) per task, for the tasks where at least two labels
    recorded different volumes (e.g. the ``starts*`` and ``noaug`` arms of benchmarks/ablation.sh).
    Empty when no task has such a pair."""
    by, tasks, labels = _group(rows)
    lines = []
    for t in tasks:
        cells = []
        for a in labels:
            runs = [r for r in by.get((t, a), []) if "imagined_rows" in r]
            if runs:
                cells.append((float(np.mean([r["imagined_rows"] for r in runs])), a, runs))
        if len({round(v) for v, _, _ in cells}) < 2:
            continue
        cells.sort(key=lambda c: c[0])
        lines += [f"| {t} | {a} | {v:,.0f} | {_cell(runs)} |" for v, a, runs in cells]
    if not lines:
        return ""
    head = ["| task | label | imagined rows (mean over seeds) | score |", "| --- | --- | --- | --- |"]
    note = (
        "\nImagined rows: the distinct imagined rows in the training data (`imagined_rows` of the stage-2 "
        "artifact; 0 with `policy.use_augmented=false`). Stage 3 samples them at `policy.imagined_share` of "
        "its windows whatever their number, so fewer rows are repeated more.\n"
    )
    return "\n".join(head + lines) + "\n" + note


def stage_times(rows: list[dict]) -> str:
    """Mean wall time (minutes) of each stage's artifact per (task, label) (ledger rows'
    ``stage_wall_s``); a shared artifact is counted in every run that used it, since that is what
    one run of that label costs."""
    by, tasks, labels = _group(rows)
    lines = [
        "| task | label | " + " | ".join(LEDGER_STAGES) + " |",
        "| --- | --- |" + " --- |" * len(LEDGER_STAGES),
    ]
    for t in tasks:
        for a in labels:
            runs = by.get((t, a))
            if not runs:
                continue
            cells = []
            for stage in LEDGER_STAGES:
                times = [r["stage_wall_s"][stage] for r in runs if stage in (r.get("stage_wall_s") or {})]
                cells.append(f"{np.mean(times) / 60:.1f}" if times else "–")
            lines.append(f"| {t} | {a} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nWall time in minutes per stage (one CPU core per run).\n"


def comparisons_table(rows: list[dict], pairs: list[tuple[str, str]]) -> str:
    """Per pair (A, B) and task: mean(A) − mean(B) with its 95% stratified bootstrap interval and
    the probability of improvement (``ipd.compare``), then the same for the mean over tasks."""
    by, _, _ = _group(rows)
    lines = [
        "| A vs B | task | seeds A / B | A − B | 95% bootstrap CI | P(A > B) | same data |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    def scores(label: str) -> dict[str, list[float]]:
        return {t: [float(r["normalized_score"]) for r in rs] for (t, lab), rs in by.items() if lab == label}

    def builds(task: str, label: str) -> set[str]:
        tasks = {t for t, _ in by} if task == "mean" else {task}
        return {str(r.get("data") or "?") for t in tasks for r in by.get((t, label), [])}

    def same_data(task: str, a: str, b: str) -> str:
        """yes: one recorded dataset build for both; no: different builds; ?: not recorded."""
        da, db = builds(task, a), builds(task, b)
        if "?" in da | db:
            return "?"
        return "yes" if da == db and len(da) == 1 else "no"

    for a, b in pairs:
        for c in compare_labels(scores(a), scores(b)):
            lines.append(
                f"| {a} vs {b} | {c.task} | {c.n_a} / {c.n_b} | {c.difference:+.1f} "
                f"| [{c.ci_low:+.1f}, {c.ci_high:+.1f}] | {c.prob_improvement:.2f} "
                f"| {same_data(c.task, a, b)} |"
            )
    note = (
        "\nCI: percentile interval of 10,000 stratified bootstrap resamples of the seeds (each label and "
        "task resampled on its own); P(A > B): the share of (seed of A, seed of B) pairs where A scores "
        "higher, ties ½, averaged over tasks for the mean (Agarwal et al., 2021). An interval that "
        "contains 0 does not separate A from B. same data: whether both labels' runs recorded the "
        "same dataset fingerprint (ledger field `data`; ? where a run predates it).\n"
    )
    return "\n".join(lines) + "\n" + note


def _seed_order(runs: list[dict]) -> list[dict]:
    return sorted(runs, key=lambda r: (r.get("seed") is None, r.get("seed") or 0))


def _final_or_best(run: dict, which: str) -> float:
    if which == "best":  # runs before the record have no best: their final stands in
        return float(run.get("best_normalized_score", run["normalized_score"]))
    return float(run["normalized_score"])


def _aggregate_tasks(by: dict, tasks: list[str], labels: list[str]) -> tuple[list[str], list[str]]:
    """The tasks where every label has runs, split into those the aggregate uses and those it leaves
    out: rliable needs the same number of runs on every task, so a task whose labels have fewer seeds
    than the best-covered task would cut every other task down to its count."""
    common = [t for t in tasks if all(by.get((t, a)) for a in labels)]
    seeds = {t: min(len(by[(t, a)]) for a in labels) for t in common}
    full = max(seeds.values(), default=0)
    return [t for t in common if seeds[t] >= full], [t for t in common if seeds[t] < full]


def label_scores(rows: list[dict], labels: list[str], which: str = "final") -> tuple[dict, list[str]]:
    """{label: {task: scores in seed order}} over the tasks the aggregate uses (``_aggregate_tasks``),
    and those tasks."""
    by, tasks, _ = _group(rows)
    kept, _ = _aggregate_tasks(by, tasks, labels)
    scores = {
        a: {t: [_final_or_best(r, which) for r in _seed_order(by[(t, a)])] for t in kept} for a in labels
    }
    return scores, kept


def aggregate_table(rows: list[dict], labels: list[str]) -> str:
    """Per label: IQM and mean over tasks x seeds with rliable's 95% stratified bootstrap intervals,
    for the final evaluation (headline) and for the best periodic one beside it."""
    scores, tasks = label_scores(rows, labels)
    if not tasks:
        return "No task has runs of every label: no aggregate.\n"
    best, _ = label_scores(rows, labels, "best")
    lines = [
        "| label | seeds per task | IQM, final [95% CI] | mean, final [95% CI] | IQM, best [95% CI] |",
        "| --- | --- | --- | --- | --- |",
    ]
    for final, top in zip(aggregates(scores, tasks), aggregates(best, tasks), strict=True):
        cells = [(final.iqm, final.iqm_ci), (final.mean, final.mean_ci), (top.iqm, top.iqm_ci)]
        lines.append(
            f"| {final.label} | {final.runs} | "
            + " | ".join(f"{x:.1f} [{lo:.1f}, {hi:.1f}]" for x, (lo, hi) in cells)
            + " |"
        )
    by, all_tasks, _ = _group(rows)
    _, short = _aggregate_tasks(by, all_tasks, labels)
    left_out = f" Left out for fewer seeds than these: {', '.join(short)}." if short else ""
    note = (
        f"\nOver {len(tasks)} task(s) where every label has runs: {', '.join(tasks)}.{left_out} "
        "IQM: the mean of all (task, seed) scores left after trimming the lowest and highest 25%; "
        "intervals: rliable's stratified bootstrap (2,000 resamples of the seeds within each task). "
        "Each label uses its first n seeds on every task, n its smallest seed count. Final: the "
        "evaluation after the last update (the headline, as CORL reports); best: the highest of the "
        "periodic evaluations (`policy.eval_episodes` each) and the final one, which flatters a run "
        "(it picks a maximum of noisy evaluations), shown for comparison with papers that report it.\n"
    )
    return "\n".join(lines) + "\n" + note


def plot_profiles(rows: list[dict], labels: list[str], out: Path) -> bool:
    """profiles.png: rliable's performance profiles (share of runs scoring above tau) with 95% bands."""
    scores, tasks = label_scores(rows, labels)
    if not tasks:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import library

    matrices = {a: score_matrix(s, tasks, min(len(v) for v in s.values())) for a, s in scores.items()}
    taus = np.linspace(0, max(110.0, max(m.max() for m in matrices.values())), 111)
    with seeded_numpy(0):  # rliable bootstraps with numpy's global RNG: a reproducible band
        profiles, cis = library.create_performance_profile(matrices, taus, reps=2000)
    fig, ax = plt.subplots(figsize=(6, 4))
    for a in labels:
        ax.plot(taus, profiles[a], label=a)
        ax.fill_between(taus, cis[a][0], cis[a][1], alpha=0.2)
    ax.set_xlabel("D4RL-normalised score τ")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.set_title(f"performance profiles over {len(tasks)} task(s)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "profiles.png", dpi=120)
    plt.close(fig)
    return True


def _pairs(spec: str | None) -> list[tuple[str, str]]:
    pairs = []
    for item in (spec or "").split(","):
        if not item.strip():
            continue
        a, sep, b = item.strip().partition(":")
        if not sep or not a or not b or ":" in b:
            raise SystemExit(f"error: --compare takes A:B pairs separated by commas, got '{item.strip()}'")
        pairs.append((a, b))
    return pairs


def read_curve(run_dir: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return np.zeros(0), np.zeros(0)
    steps, vals = [], []
    with open(path) as fh:
        for row in csv.DictReader(fh):
            if row["key"] == key:
                steps.append(int(row["step"]))
                vals.append(float(row["value"]))
    return np.asarray(steps), np.asarray(vals)


# metrics.csv keys written by the stage-3 trainer (logged under the "policy/" prefix).
LOSS_KEY = "policy/bc_loss"  # action regression, comparable across dt / ipd (ipd's total adds -alpha*Q)
EVAL_KEY = "policy/eval/normalized_score"  # periodic evaluation (policy.eval_episodes > 0)


def plot(
    rows: list[dict], local_runs: list[dict], out: Path, labels: list[str] | None = None
) -> dict[str, int]:
    """Write scores.png (``rows``: all labels, or ``labels``) and curves.png (the ``metrics.csv`` of
    the runs present here); return how many runs each curve panel found. Where no run here logged
    a curve (a table rebuilt from the ledger alone), an existing curves.png is left as it is
    rather than replaced by empty axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by, tasks, algos = _group(rows)
    if labels:
        algos = [a for a in labels if a in algos]
    fig, ax = plt.subplots(figsize=(max(6, 2 * len(tasks)), 4))
    width = 0.8 / max(len(algos), 1)
    colors = plt.get_cmap("tab20" if len(algos) > 10 else "tab10")  # one distinct colour per label
    for i, a in enumerate(algos):
        stats = [_score_and_spread(by[(t, a)]) if by.get((t, a)) else (np.nan, np.nan) for t in tasks]
        m, s = zip(*((mean, np.nan if spread is None else spread) for mean, spread in stats), strict=True)
        x = np.arange(len(tasks)) + i * width
        ax.bar(x, m, width, yerr=s, label=a, capsize=3, color=colors(i % colors.N))  # NaN: no bar
    ax.set_xticks(np.arange(len(tasks)) + width * (len(algos) - 1) / 2, tasks, rotation=20)
    ax.set_ylabel("D4RL-normalised score")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "scores.png", dpi=120)
    plt.close(fig)

    curves = {key: [] for key in (LOSS_KEY, EVAL_KEY)}
    for r in local_runs:
        label = f"{r['task']}/{r['label']}/s{r.get('seed', '?')}"
        for key, found_curves in curves.items():
            x, y = read_curve(Path(r["run_dir"]), key)
            if len(x):
                found_curves.append((x, y, label))
    found = {key: len(c) for key, c in curves.items()}
    if not any(found.values()):
        return {"runs_with_loss_curve": 0, "runs_with_eval_curve": 0}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, found_curves in zip(axes, curves.values(), strict=True):
        for x, y, label in found_curves:
            ax.plot(x, y, label=label)
    axes[0].set_title("policy action-regression loss")
    axes[1].set_title("periodic evaluation (normalised score)")
    if not found[EVAL_KEY]:
        axes[1].text(0.5, 0.5, "no periodic evaluation logged\n(policy.eval_episodes=0)", ha="center")
    for ax in axes:
        ax.set_xlabel("update")
    if found[LOSS_KEY]:
        axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)
    return {"runs_with_loss_curve": found[LOSS_KEY], "runs_with_eval_curve": found[EVAL_KEY]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs", type=Path)
    ap.add_argument("--out", default="results", type=Path)
    ap.add_argument(
        "--main",
        default=None,
        help="comma-separated labels of the main table and scores.png (e.g. ipd-3k,dt-3k,iql,bc,bc10); "
        "the other labels go to a second table, one line per (task, label). Default: all in one table.",
    )
    ap.add_argument(
        "--ledger",
        default=None,
        type=Path,
        help="JSON-lines ledger of runs (e.g. results/runs.jsonl): read, merged with the runs under --runs "
        "(the latest run per task, label and seed) and written back; the tables come from the merge.",
    )
    ap.add_argument(
        "--compare",
        default=None,
        help="comma-separated A:B label pairs (e.g. ipd-3k:dt-3k,ipd-3k:bc10): per task and for the mean "
        "over tasks, A − B with a 95%% bootstrap interval over seeds and P(A > B).",
    )
    args = ap.parse_args()
    pairs = _pairs(args.compare)
    local_runs = finished_runs(args.runs)
    try:
        ledger = read_ledger(args.ledger) if args.ledger else []
    except ValueError as e:
        raise SystemExit(f"error: {e}") from e
    rows = merge_ledger(ledger, local_runs)
    if not rows:
        raise SystemExit(
            f"error: no finished runs (metrics.json with normalized_score) under {args.runs}"
            + (f" and no rows in {args.ledger}" if args.ledger else "")
        )
    if args.ledger:
        write_ledger(args.ledger, rows)
    args.out.mkdir(parents=True, exist_ok=True)
    main_labels = [s.strip() for s in args.main.split(",") if s.strip()] if args.main else None
    md = table(rows, main_labels)
    if main_labels:
        md += "\n## Aggregate over tasks (rliable)\n\n" + aggregate_table(rows, main_labels)
        arms = arms_table(rows, main_labels)
        if arms.count("\n") > 2:  # header and separator only: no other label
            md += "\n## Other labels (ablation arms)\n\n" + arms
    if pairs:
        md += "\n## Comparisons\n\n" + comparisons_table(rows, pairs)
    volume = imagined_volume_table(rows)
    if volume:
        md += "\n## Imagined data volume\n\n" + volume
    md += "\n" + stage_times(rows)
    (args.out / "results.md").write_text(md)
    curves = plot(rows, local_runs, args.out, main_labels)
    if main_labels and plot_profiles(rows, main_labels, args.out):
        curves["profiles.png"] = 1
    print(md)
    print(", ".join(f"{k}: {v}" for k, v in curves.items()))
    ledger_note = f", {args.ledger} ({len(rows)} rows)" if args.ledger else ""
    written = [args.out / "results.md", args.out / "scores.png"]
    if curves["runs_with_loss_curve"] or curves["runs_with_eval_curve"]:  # else curves.png is left as it was
        written.append(args.out / "curves.png")
    print(f"wrote {', '.join(map(str, written))}{ledger_note}")


if __name__ == "__main__":
    main()
