"""The analysis benchmarks that read finished runs, run on a smoke IPD run as a user would."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT, last_json, run_script


def run_benchmark(script: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=ROOT,
        env={**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def smoke_run(data_dir, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    args = [f"data.dir={data_dir}", f"paths.runs={runs}", "preset=smoke", "data.download=false"]
    out = last_json(run_script("train.py", "task=hopper-medium", *args).stdout)
    return runs, out


def test_inference_token_reproduces_the_run_and_refits_heads_from_one_token_build(smoke_run):
    runs, out = smoke_run
    proc = run_benchmark(
        "inference_token.py", "--runs", str(runs), "--task", "hopper-medium", "--label", "ipd",
        "--refit-head", "state", "--expectiles", "0.5", "0.9",
    )  # fmt: skip
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    (row,) = summary["runs"]
    assert row["learned"] == pytest.approx(out["normalized_score"], abs=1e-6)  # the same experiment
    assert set(row) >= {"target", "state", "tau=0.5", "tau=0.9"}
    assert summary["refit_mean"] == row["state"] and set(summary["expectile_means"]) == {"0.5", "0.9"}


def test_teacher_check_benchmark_reproduces_the_gate_and_reports_trusted_returns(smoke_run, data_dir):
    runs, out = smoke_run
    proc = run_benchmark(
        "teacher_check.py", "--task", "hopper-medium", "--runs", str(runs), "--data",
        str(data_dir / "hopper-medium.hdf5"), "--starts", "8", "--horizon", "50",
        "--trust-quantiles", "0.5,0.99",
    )  # fmt: skip
    rows = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    policy_metrics = json.loads(
        next((runs / "hopper-medium" / "policy").iterdir()).joinpath("metrics.json").read_text()
    )
    gate = next(r for r in rows if "passed" in r)
    assert gate["passed"] == policy_metrics["teacher_check"]["passed"]  # the run's own check, again
    trusted = {r["quantile"]: r for r in rows if r.get("label") == "teacher"}
    assert set(trusted) == {0.5, 0.99}
    # the rollouts are deterministic (elite means), so a lower threshold distrusts a superset of steps
    assert 1.0 >= trusted[0.5]["untrusted_share"] >= trusted[0.99]["untrusted_share"] >= 0.0
    assert trusted[0.5]["threshold"] <= trusted[0.99]["threshold"]
    assert all(math.isfinite(r["trusted_worst_elite"]) for r in trusted.values())


def test_world_model_benchmark_scores_a_pipeline_model_and_its_value_bias(smoke_run, data_dir):
    runs, _ = smoke_run
    (wm,) = (runs / "hopper-medium" / "world_model").iterdir()
    (value,) = (runs / "hopper-medium" / "value").iterdir()
    proc = run_benchmark(
        "world_model.py", "--task", "hopper-medium", "--data-dir", str(data_dir), "--artifact", str(wm),
        "--value", str(value), "--horizons", "1", "5", "--rollout-starts", "200", "--threads", "1",
    )  # fmt: skip
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["artifact"] == str(wm) and out["value_std"] > 0
    # one step from the data under the data's action: the model beats "no change" on the data it fitted
    assert out["rollout1_mean_state_mse_normalised"] < out["rollout1_no_change_state_mse_normalised"]
    assert out["rollout5_starts"] == 200
    for h in (1, 5):
        assert math.isfinite(out[f"rollout{h}_value_bias"]) and out[f"rollout{h}_value_abs_err_over_std"] >= 0


def test_stitched_tokens_match_every_copied_prefix_row_to_its_original(smoke_run):
    from ipd.data import read_hdf5

    runs, _ = smoke_run
    (art,) = (runs / "hopper-medium" / "augment").iterdir()
    out = json.loads(
        run_benchmark("stitched_tokens.py", "--artifact", str(art)).stdout.strip().splitlines()[-1]
    )
    data = read_hdf5(art / "augmented.hdf5")
    stitched = data.extras["start_index"] >= 0
    copied = int((stitched & ~data.extras["imagined"].astype(bool)).sum())
    assert out["imagined_rows"] == int(data.extras["imagined"].sum()) > 0
    assert out["prefix_rows"] == copied > 0  # every copied row is found on its original row
    assert out["original_rows"] == int((~stitched).sum()) and out["rows"] == len(data)
    assert math.isfinite(out["prefix_minus_original_mean"])
