"""Run dirs are unique: two runs started together with the same task, algo and seed never share one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import pytest

from ipd import rundir
from ipd.rundir import make_unique_dir, run_stamp

ROOT = Path(__file__).resolve().parent.parent


def test_run_stamp_is_unique_and_sorts_by_time():
    stamps = [run_stamp() for _ in range(2000)]
    assert len(set(stamps)) == len(stamps)
    first = run_stamp(datetime(2026, 3, 4, 12, 0, 0, 5))
    assert (
        first.startswith("2026-03-04_12-00-00-000005_")
        and len(first) == len("2026-03-04_12-00-00-000005_") + 6
    )
    assert first < run_stamp(datetime(2026, 3, 4, 12, 0, 0, 6))


def test_make_unique_dir_never_hands_out_a_dir_twice(tmp_path, monkeypatch):
    made: list[Path] = []

    def worker():
        for _ in range(50):
            made.append(make_unique_dir(tmp_path / "runs", suffix="_seed0"))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == len(set(made)) == 200 and all(p.is_dir() and p.name.endswith("_seed0") for p in made)
    # Even when the stamp repeats, the existing dir is skipped rather than reused.
    stamps = iter(["same", "same", "other"])
    monkeypatch.setattr(rundir, "run_stamp", lambda: next(stamps))
    assert make_unique_dir(tmp_path / "clash").name == "same"
    assert make_unique_dir(tmp_path / "clash").name == "other"


def test_notebook_run_dirs_are_new_each_time(tmp_path, monkeypatch):
    from ipd.rundir import current_run_dir

    monkeypatch.chdir(tmp_path)
    dirs = {current_run_dir() for _ in range(5)}
    assert len(dirs) == 5 and all(d.is_dir() and d.parent == Path("runs") / "notebook" for d in dirs)


def test_hydra_run_dir_carries_the_stamp_and_resolves_once():
    from hydra import compose, initialize_config_dir

    from ipd.config import CONFIG_DIR

    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        a = compose("train", overrides=["seed=3", "algo=dt"], return_hydra_config=True)
        b = compose("train", overrides=["seed=3", "algo=dt"], return_hydra_config=True)
    run_a, run_b = str(a.hydra.run.dir), str(b.hydra.run.dir)
    assert run_a.startswith("runs/hopper-medium/train/dt/") and run_a.endswith("_seed3")
    assert run_a != run_b and str(a.hydra.run.dir) == run_a  # unique per run, stable within one
    assert str(a.hydra.sweep.dir) != str(b.hydra.sweep.dir)


@pytest.mark.slow
def test_two_runs_started_together_get_their_own_run_dirs(data_dir, tmp_path):
    args = [
        "task=hopper-medium",
        "algo=iql",
        "seed=0",
        "preset=smoke",
        f"data.dir={data_dir}",
        f"paths.runs={tmp_path}",
        "data.download=false",
    ]
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "train.py"), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for _ in range(2)
    ]
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=400)
        assert p.returncode == 0, stderr[-3000:]
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    dirs = [Path(o["run_dir"]) for o in outs]
    assert dirs[0] != dirs[1]
    assert sorted(p.name for p in (tmp_path / "hopper-medium" / "train" / "iql").iterdir()) == sorted(
        d.name for d in dirs
    )
    for out, d in zip(outs, dirs, strict=True):
        metrics = json.loads((d / "metrics.json").read_text())
        assert metrics["run_dir"] == str(d) and metrics["normalized_score"] == out["normalized_score"]
