"""scripts/results.py: table and plots from run dirs."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_results_table_and_plots(tmp_path):
    runs = tmp_path / "runs"
    value_art = runs / "hopper-medium" / "value" / "abc"
    value_art.mkdir(parents=True)
    (value_art / "metrics.json").write_text(json.dumps({"wall_time_s": 900.0}))
    for algo, scores in {"dt": [40.0, 50.0], "ipd": [60.0, 70.0]}.items():
        for seed, score in enumerate(scores):
            d = runs / "hopper-medium" / "train" / algo / f"s{seed}"
            d.mkdir(parents=True)
            arts = {"value": str(value_art)} if algo == "ipd" else {}
            (d / "metrics.json").write_text(
                json.dumps(
                    {
                        "task": "hopper-medium",
                        "algo": algo,
                        "seed": seed,
                        "normalized_score": score,
                        "artifacts": arts,
                    }
                )
            )
            (d / "metrics.csv").write_text(
                "step,key,value\n100,policy/bc_loss,0.5\n200,policy/bc_loss,0.3\n"
                + ("200,policy/eval/normalized_score,61.0\n" if algo == "ipd" else "")
            )
    # An earlier run of the same (task, label, seed), e.g. before a re-evaluation: superseded, not a seed.
    older = runs / "hopper-medium" / "train" / "dt" / "a-earlier-s0"
    older.mkdir(parents=True)
    (older / "metrics.json").write_text(
        json.dumps({"task": "hopper-medium", "algo": "dt", "seed": 0, "normalized_score": 0.0})
    )
    ablation = runs / "hopper-medium" / "train" / "ipd" / "rtg-arm"
    ablation.mkdir(parents=True)
    (ablation / "metrics.json").write_text(
        json.dumps(
            {
                "task": "hopper-medium",
                "algo": "ipd",
                "label": "ipd-rtg",
                "normalized_score": 30.0,
                "normalized_score_std": 4.0,
            }
        )
    )
    (runs / "stage" / "metrics.json").parent.mkdir(parents=True)
    (runs / "stage" / "metrics.json").write_text(json.dumps({"loss": 1.0}))  # stage metrics are skipped
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "results.py"), "--runs", str(runs), "--out", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    md = (out / "results.md").read_text()
    assert "| task | dt | ipd | ipd-rtg |" in md  # a labelled run gets its own column
    assert "| hopper-medium | 45.0 ± 5.0 (n=2) | 65.0 ± 5.0 (n=2) | 30.0 (n=1, ±4.0 over episodes) |" in md
    assert "| **mean** | 45.0 (1 task) | 65.0 (1 task) | 30.0 (1 task) |" in md
    assert "final evaluation after the last update" in md
    assert "| hopper-medium | ipd | – | 15.0 | – | – | – |" in md  # stage wall time, minutes
    assert "| hopper-medium | dt | – | – | – | – | – |" in md
    assert (out / "scores.png").stat().st_size > 0 and (out / "curves.png").stat().st_size > 0
    assert "runs_with_loss_curve: 4, runs_with_eval_curve: 2" in proc.stdout
    assert "results.md" in proc.stdout
    # --main: the yardstick columns in the given order; other labels in a per-(task, label) table
    argv = [sys.executable, str(ROOT / "scripts" / "results.py"), "--runs", str(runs), "--out", str(out)]
    subprocess.run([*argv, "--main", "ipd,dt"], capture_output=True, text=True, check=True)
    md = (out / "results.md").read_text()
    assert "| task | ipd | dt |" in md and "| hopper-medium | 65.0 ± 5.0 (n=2) | 45.0 ± 5.0 (n=2) |" in md
    assert "| hopper-medium | ipd-rtg | 30.0 (n=1, ±4.0 over episodes) |" in md


def test_results_without_runs_fails_clearly(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "results.py"), "--runs", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "no finished runs" in proc.stderr
