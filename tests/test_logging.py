"""RunLogger: per-stage wandb x-axes so restarting stage counters never go backwards."""

from __future__ import annotations

import csv

import pytest

from ipd.logging import RunLogger, resolve_wandb_mode


class RecordingRun:
    """Stands in for a wandb run; wandb rejects ``log(step=s)`` with s below a previous step."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.axes: dict[str, str | None] = {}
        self.last_step = -1

    def define_metric(self, name: str, step_metric: str | None = None) -> None:
        self.axes[name] = step_metric

    def log(self, row: dict, step: int | None = None) -> None:
        if step is not None:
            assert step >= self.last_step, "wandb would drop this row"
            self.last_step = step
        self.rows.append(row)


def test_stages_get_their_own_step_axis(tmp_path):
    logger = RunLogger(tmp_path, wandb_mode="disabled")
    run = logger._wandb = RecordingRun()
    logger.log({"loss": 1.0}, 100_000, "value/")
    logger.log({"loss": 2.0}, 500, "policy/")  # counter restarts for the next stage
    logger.log({"loss": 3.0}, 1000, "policy/")
    assert run.axes == {
        "value/step": None,
        "value/*": "value/step",
        "policy/step": None,
        "policy/*": "policy/step",
    }
    assert run.rows == [
        {"value/loss": 1.0, "value/step": 100_000},
        {"policy/loss": 2.0, "policy/step": 500},
        {"policy/loss": 3.0, "policy/step": 1000},
    ]
    with open(tmp_path / "metrics.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows == [
        ["step", "key", "value"],
        ["100000", "value/loss", "1.0"],
        ["500", "policy/loss", "2.0"],
        ["1000", "policy/loss", "3.0"],
    ]


def test_unprefixed_metrics_use_wandb_step(tmp_path):
    logger = RunLogger(tmp_path, wandb_mode="disabled")
    run = logger._wandb = RecordingRun()
    logger.log({"x": 1}, 7)
    assert run.rows == [{"x": 1.0}] and run.axes == {}


def test_wandb_mode_validation(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert resolve_wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "k")
    assert resolve_wandb_mode("auto") == "online"
    with pytest.raises(ValueError, match="auto\\|online\\|offline\\|disabled"):
        resolve_wandb_mode("loud")
