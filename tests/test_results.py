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


def _run_row(task: str, label: str, seed: int, score: float, run: str | None) -> dict:
    return {"task": task, "label": label, "algo": label, "seed": seed, "normalized_score": score, "run": run}


def test_ledger_merge_keeps_the_latest_run_per_seed():
    from ipd.ledger import merge_ledger

    ledger = [
        _run_row("hopper-medium", "dt", 0, 10.0, None),  # back-filled: no run name, the oldest
        _run_row("hopper-medium", "dt", 1, 20.0, "2026-01-02_00-00-00-000000_aaaaaa"),
    ]
    runs = [
        {
            **_run_row("hopper-medium", "dt", 0, 11.0, None),
            "run_dir": "runs/x/2026-01-01_00-00-00-000000_bbbbbb",
        },
        {
            **_run_row("hopper-medium", "dt", 1, 21.0, None),
            "run_dir": "runs/x/2026-01-01_00-00-00-000000_cccccc",
        },
        {
            **_run_row("hopper-medium", "dt", 2, 30.0, None),
            "run_dir": "runs/x/2026-01-03_00-00-00-000000_dddddd",
        },
    ]
    merged = merge_ledger(ledger, runs)
    assert [(r["seed"], r["normalized_score"]) for r in merged] == [(0, 11.0), (1, 20.0), (2, 30.0)]
    assert merged[2]["run"] == "2026-01-03_00-00-00-000000_dddddd" and "run_dir" not in merged[2]


def test_ledger_rejects_a_bad_line_by_number(tmp_path):
    import pytest

    from ipd.ledger import read_ledger

    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps(_run_row("hopper-medium", "dt", 0, 1.0, None)) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"runs.jsonl:2: not a JSON line"):
        read_ledger(path)
    path.write_text('{"task": "hopper-medium"}\n')
    with pytest.raises(ValueError, match=r":1: a ledger row needs task, label and normalized_score"):
        read_ledger(path)
    assert read_ledger(tmp_path / "missing.jsonl") == []


def test_results_ledger_combines_committed_and_local_runs(tmp_path):
    """A seed recorded in the ledger (e.g. on another machine) and a seed run here make one cell,
    with stage wall times from the ledger row and from the local run's artifact; the merged
    ledger is written back."""
    ledger = tmp_path / "runs.jsonl"
    old = {**_run_row("hopper-medium", "ipd", 0, 60.0, None), "stage_wall_s": {"value": 600.0}}
    ledger.write_text(json.dumps(old) + "\n")
    runs = tmp_path / "runs"
    art = runs / "hopper-medium" / "value" / "h"
    art.mkdir(parents=True)
    (art / "metrics.json").write_text(json.dumps({"wall_time_s": 1200.0}))
    (art / "config.yaml").write_text("data: a5749f1dd98df165\nseed: 1\n")  # the dataset fingerprint
    d = runs / "hopper-medium" / "train" / "ipd" / "2026-01-01_00-00-00-000000_abcdef_seed1"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(
        json.dumps(
            {
                **_run_row("hopper-medium", "ipd", 1, 70.0, None),
                "artifacts": {"value": str(art)},
                "versions": {"mujoco": "4.0.0"},
            }
        )
    )
    out = tmp_path / "results"
    argv = [sys.executable, str(ROOT / "scripts" / "results.py"), "--runs", str(runs), "--out", str(out)]
    proc = subprocess.run([*argv, "--ledger", str(ledger)], capture_output=True, text=True, check=True)
    md = (out / "results.md").read_text()
    assert "| hopper-medium | 65.0 ± 5.0 (n=2) |" in md
    assert "| hopper-medium | ipd | – | 15.0 | – | – | – |" in md  # mean of 10 and 20 minutes
    rows = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert [(r["seed"], r["stage_wall_s"]) for r in rows] == [(0, {"value": 600.0}), (1, {"value": 1200.0})]
    assert "data" not in rows[0] and rows[1]["data"] == "a5749f1dd98df165"  # recorded from the artifact
    assert rows[1]["versions"] == {"mujoco": "4.0.0"}  # the software the run used, kept in the ledger
    assert "(2 rows)" in proc.stdout
    # Without local runs the ledger alone rebuilds the same table, and curves.png (drawn from
    # local runs' metrics.csv) is left as it was instead of replaced by empty axes.
    (out / "curves.png").write_bytes(b"earlier figure")
    proc = subprocess.run(
        [*argv[:2], "--runs", str(tmp_path / "none"), "--out", str(out), "--ledger", str(ledger)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "| hopper-medium | 65.0 ± 5.0 (n=2) |" in (out / "results.md").read_text()
    assert (out / "curves.png").read_bytes() == b"earlier figure"
    assert "curves.png" not in proc.stdout.splitlines()[-1]


def test_ledger_sorts_seeds_as_numbers():
    from ipd.ledger import merge_ledger

    rows = [_run_row("hopper-medium", "dt", s, float(s), None) for s in (10, 2, 0)]
    assert [r["seed"] for r in merge_ledger(rows, [])] == [0, 2, 10]


def test_a_cell_never_pools_datasets_of_different_origin_or_build():
    sys.path.insert(0, str(ROOT / "scripts"))
    import results

    rows = [
        {
            "task": "hopper-medium",
            "label": "ipd",
            "seed": 0,
            "normalized_score": 50.0,
            "data_origin": "generated",
            "data": "aaaaaa11",
        },
        {
            "task": "hopper-medium",
            "label": "ipd",
            "seed": 1,
            "normalized_score": 60.0,
            "data_origin": "generated",
            "data": "aaaaaa11",
        },
        {
            "task": "hopper-medium",
            "label": "ipd",
            "seed": 0,
            "normalized_score": 70.0,
            "data_origin": "d4rl",
            "data": "bbbbbb22",
        },
        {
            "task": "hopper-medium",
            "label": "dt",
            "seed": 0,
            "normalized_score": 40.0,
            "data_origin": "generated",
            "data": "aaaaaa11",
        },
    ]
    md = results.table(rows)
    assert "| task | dt | ipd @d4rl:bbbbbb | ipd @generated:aaaaaa |" in md
    assert "| hopper-medium | 40.0 (n=1) | 70.0 (n=1) | 55.0 ± 5.0 (n=2) |" in md


def test_aggregate_section_iqm_with_intervals_final_and_best_and_profiles(tmp_path):
    """--main adds rliable's IQM / mean with 95% intervals (final and best) and profiles.png."""
    ledger = tmp_path / "runs.jsonl"
    scores = {"ipd": {"hopper-medium": [60.0, 70.0, 80.0], "halfcheetah-medium": [40.0, 42.0, 44.0]}}
    scores["dt"] = {"hopper-medium": [50.0, 50.0, 50.0], "halfcheetah-medium": [40.0, 40.0, 40.0]}
    rows = [
        {"task": t, "label": a, "algo": a, "seed": s, "normalized_score": x, "best_normalized_score": x + 5}
        for a, by_task in scores.items()
        for t, xs in by_task.items()
        for s, x in enumerate(xs)
    ]
    rows.append(
        {"task": "walker2d-medium", "label": "ipd", "algo": "ipd", "seed": 0, "normalized_score": 1.0}
    )
    for a in ("ipd", "dt"):  # one seed only: left out rather than cutting the others to one seed
        rows.append({"task": "hopper-expert", "label": a, "algo": a, "seed": 0, "normalized_score": 99.0})
    ledger.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    argv = [sys.executable, str(ROOT / "scripts" / "results.py"), "--runs", str(tmp_path / "none")]
    subprocess.run(
        [*argv, "--out", str(out), "--ledger", str(ledger), "--main", "ipd,dt"],
        check=True,
        capture_output=True,
    )
    md = (out / "results.md").read_text()
    assert "## Aggregate over tasks (rliable)" in md
    assert "Over 2 task(s) where every label has runs: halfcheetah-medium, hopper-medium." in md  # not walker
    assert "Left out for fewer seeds than these: hopper-expert." in md
    # dt: every score is 40 or 50 -> IQM 45 with a degenerate interval; best = final + 5
    assert "| dt | 3 | 45.0 [45.0, 45.0] | 45.0 [45.0, 45.0] | 50.0 [50.0, 50.0] |" in md
    ipd_line = next(line for line in md.splitlines() if line.startswith("| ipd | 3 |"))
    iqm, lo, hi = (
        float(x) for x in ipd_line.split("|")[3].replace("[", " ").replace(",", " ").replace("]", " ").split()
    )
    assert lo < iqm < hi and iqm == 54.0  # {40, 42, 44, 60, 70, 80} trimmed by one each end
    assert (out / "profiles.png").stat().st_size > 0


def test_best_score_reads_the_periodic_evaluations_of_the_policy_artifact(tmp_path):
    from ipd.cli import best_score

    (tmp_path / "metrics.json").write_text(
        json.dumps(
            {"evals": [{"step": 1000, "normalized_score": 70.0}, {"step": 2000, "normalized_score": 40.0}]}
        )
    )
    assert best_score(50.0, {"policy": str(tmp_path)}) == 70.0
    assert best_score(80.0, {"policy": str(tmp_path)}) == 80.0  # the final one counts too
    assert best_score(50.0, {"value": str(tmp_path)}) == 50.0  # no policy artifact (IQL): the final


def test_ledger_row_keeps_the_q_term_weight_stage_3_used(tmp_path):
    from ipd.ledger import ledger_row

    policy = tmp_path / "policy" / "p"
    policy.mkdir(parents=True)
    (policy / "metrics.json").write_text(json.dumps({"wall_time_s": 60.0, "alpha": 0.0}))
    run = {**_run_row("hopper-medium", "ipd", 0, 50.0, None), "run_dir": str(tmp_path / "r")}
    row = ledger_row({**run, "artifacts": {"policy": str(policy)}})
    assert row["q_term_alpha"] == 0.0 and row["stage_wall_s"] == {"policy": 60.0}
    assert "q_term_alpha" not in ledger_row(run)  # runs without a stage 3 (IQL, BC) have none


def test_imagined_volume_from_the_augment_artifact_and_its_table(tmp_path):
    """The ledger records how many imagined rows stage 3 trained on (0 without stage 2), and the
    results table orders each task's labels by that volume; a task with one volume gets no table."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from ipd.ledger import ledger_row
    from results import imagined_volume_table

    augment = tmp_path / "augment" / "a"
    augment.mkdir(parents=True)
    (augment / "metrics.json").write_text(json.dumps({"wall_time_s": 30.0, "imagined_rows": 1200}))
    run = {**_run_row("hopper-medium", "ipd", 0, 50.0, None), "run_dir": str(tmp_path / "r")}
    assert ledger_row({**run, "artifacts": {"augment": str(augment)}})["imagined_rows"] == 1200
    assert ledger_row({**run, "artifacts": {"value": str(augment)}})["imagined_rows"] == 0  # noaug
    assert "imagined_rows" not in ledger_row({**run, "algo": "dt"})  # DT: not an IPD volume

    rows = [
        {**_run_row("hopper-medium", "ipd", s, 60.0 + s, None), "imagined_rows": 1200 + s} for s in (0, 1)
    ] + [
        {**_run_row("hopper-medium", "ipd-noaug", 0, 40.0, None), "imagined_rows": 0},
        {**_run_row("hopper-medium", "ipd-starts256", 0, 45.0, None), "imagined_rows": 90},
        {**_run_row("halfcheetah-medium", "ipd", 0, 44.0, None), "imagined_rows": 3000},
    ]
    text = imagined_volume_table(rows)
    body = [line for line in text.splitlines() if line.startswith("| hopper")]
    assert [line.split(" | ")[1] for line in body] == ["ipd-noaug", "ipd-starts256", "ipd"]
    assert "1,200" in body[-1] and "60.5" in body[-1]  # mean volume and mean score over the seeds
    assert "halfcheetah" not in text  # one volume only: nothing to compare
    assert imagined_volume_table(rows[-1:]) == ""
