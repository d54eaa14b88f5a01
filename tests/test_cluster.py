"""The cluster path: a Hydra multirun through the submitit launcher (its local executor stands in for
SLURM), two jobs sharing one artifact store: one trains the shared artifact, the other waits on its
lock and reuses it; both print their JSON line, and no artifact is built twice or left half-done."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_submitit_multirun_shares_one_artifact_store(data_dir, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    runs = tmp_path / "runs"
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"}
    args = [
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        "task=hopper-medium",
        "algo=bc",
        "logging.label=first,second",
        "preset=smoke",
        f"data.dir={data_dir}",
        "data.download=false",
        f"paths.runs={runs}",
    ]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = [p.read_text() for p in runs.rglob("*_log.out")]
    results = [json.loads(line) for log in logs for line in log.splitlines() if line.startswith('{"task"')]
    assert len(logs) == 2 and len(results) == 2 and {r["algo"] for r in results} == {"bc"}
    assert sum("bc: reusing finished artifact" in log for log in logs) == 1  # one trained, one reused
    artifacts = list((runs / "hopper-medium" / "bc").iterdir())
    assert len(artifacts) == 1
    built = artifacts[0]
    assert (built / "DONE").is_file() and "sha256" in json.loads((built / "DONE").read_text())
    assert results[0]["normalized_score"] == results[1]["normalized_score"]
