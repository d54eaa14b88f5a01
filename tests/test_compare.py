"""ipd.compare: score differences with bootstrap intervals and the probability of improvement."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ipd.compare import bootstrap_mean_difference, compare_labels, probability_of_improvement

ROOT = Path(__file__).resolve().parent.parent


def test_probability_of_improvement_counts_pairs_and_half_ties():
    assert probability_of_improvement([1.0, 2.0], [0.0, 3.0]) == 0.5  # 2 of 4 pairs
    assert probability_of_improvement([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert probability_of_improvement([1.0], [1.0]) == 0.5
    assert probability_of_improvement([2.0, 1.0, 1.0], [1.0]) == pytest.approx((1 + 0.5 + 0.5) / 3)


def test_bootstrap_interval_brackets_the_point_and_separates_only_separated_samples():
    point, low, high = bootstrap_mean_difference([(np.array([5.0, 5.0]), np.array([2.0, 2.0]))])
    assert point == low == high == 3.0  # no spread, no interval
    rng = np.random.default_rng(1)
    apart = bootstrap_mean_difference([(rng.normal(10, 1, 5), rng.normal(0, 1, 5))])
    assert apart[1] > 0 and apart[1] <= apart[0] <= apart[2]
    same = bootstrap_mean_difference([(rng.normal(0, 5, 5), rng.normal(0, 5, 5))])
    assert same[1] < 0 < same[2]
    # The same seed gives the same interval (the tables are reproducible).
    x = [(np.array([1.0, 4.0, 9.0]), np.array([2.0, 3.0, 5.0]))]
    assert bootstrap_mean_difference(x, seed=3) == bootstrap_mean_difference(x, seed=3)


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_mean_difference([])
    with pytest.raises(ValueError, match="finite"):
        bootstrap_mean_difference([(np.array([1.0, np.nan]), np.array([1.0]))])
    with pytest.raises(ValueError, match="level"):
        bootstrap_mean_difference([(np.array([1.0]), np.array([1.0]))], level=95)


def test_compare_labels_uses_common_tasks_and_averages_them():
    a = {"t1": [10.0, 12.0], "t2": [0.0, 0.0, 3.0], "only-a": [1.0]}
    b = {"t1": [8.0, 8.0], "t2": [1.0, 1.0]}
    rows = compare_labels(a, b, n_boot=2000)
    assert [r.task for r in rows] == ["t1", "t2", "mean"]
    t1, t2, mean = rows
    assert t1.difference == pytest.approx(3.0) and t1.prob_improvement == 1.0 and (t1.n_a, t1.n_b) == (2, 2)
    assert t2.difference == pytest.approx(0.0) and t2.prob_improvement == pytest.approx(1 / 3)
    assert mean.difference == pytest.approx(1.5) and mean.prob_improvement == pytest.approx((1 + 1 / 3) / 2)
    assert (mean.n_a, mean.n_b) == (2, 2)
    assert mean.ci_low <= mean.difference <= mean.ci_high
    assert len(compare_labels({"t1": [1.0]}, {"t1": [0.0]})) == 1  # one task: no mean row


def test_results_compare_section_and_bad_spec(tmp_path):
    ledger = tmp_path / "runs.jsonl"
    rows = [
        {"task": "hopper-medium", "label": label, "algo": label, "seed": s, "normalized_score": score}
        for label, scores in {"ipd": [60.0, 70.0], "dt": [40.0, 50.0]}.items()
        for s, score in enumerate(scores)
    ]
    ledger.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = [sys.executable, str(ROOT / "scripts" / "results.py"), "--runs", str(tmp_path / "none")]
    argv += ["--out", str(tmp_path / "out"), "--ledger", str(ledger)]
    subprocess.run([*argv, "--compare", "ipd:dt"], capture_output=True, text=True, check=True)
    md = (tmp_path / "out" / "results.md").read_text()
    assert "## Comparisons" in md
    assert (
        "| ipd vs dt | hopper-medium | 2 / 2 | +20.0 | [+10.0, +30.0] | 1.00 | ? |" in md
    )  # no fingerprints
    # runs that recorded their dataset build: the same build, or two different ones
    for build_b, expected in (("d1", "yes"), ("d2", "no")):
        rows_fp = [{**r, "data": "d1" if r["label"] == "ipd" else build_b} for r in rows]
        ledger.write_text("".join(json.dumps(r) + "\n" for r in rows_fp))
        subprocess.run([*argv, "--compare", "ipd:dt"], capture_output=True, text=True, check=True)
        md = (tmp_path / "out" / "results.md").read_text()
        assert f"| 1.00 | {expected} |" in md
    proc = subprocess.run([*argv, "--compare", "ipd-dt"], capture_output=True, text=True)
    assert proc.returncode != 0 and "A:B pairs" in proc.stderr
