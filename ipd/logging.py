"""Run logging: wandb (offline unless an API key is set), a metrics CSV and metrics.json.

``wandb_mode``: ``auto`` → ``online`` when ``WANDB_API_KEY`` is set, else ``offline``;
``WANDB_MODE`` in the environment (e.g. ``disabled`` in tests) always wins. Runs are
grouped by ``<task>/<label>`` so seeds of one configuration sit together in the UI.

One run logs several stages whose counters restart (value updates, then policy updates), but
wandb's own ``step`` must only grow. So each prefix ``<stage>/`` gets its own x-axis
``<stage>/step`` through ``define_metric`` and rows are logged without ``step=``.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ipd.io import atomic_write_json


def resolve_wandb_mode(mode: str = "auto") -> str:
    env = os.environ.get("WANDB_MODE")
    if env:
        return env
    if mode == "auto":
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"
    if mode not in ("online", "offline", "disabled"):
        raise ValueError(f"logging.wandb_mode must be auto|online|offline|disabled, got '{mode}'")
    return mode


class RunLogger:
    """Logs scalar metrics to wandb and ``<run_dir>/metrics.csv``; keeps a summary for metrics.json."""

    def __init__(
        self,
        run_dir: str | os.PathLike,
        config: dict | None = None,
        project: str = "ipd",
        group: str | None = None,
        name: str | None = None,
        wandb_mode: str = "auto",
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.summary: dict[str, Any] = {}
        self._csv_keys: list[str] | None = None
        self._wandb = None
        self._stage_axes: set[str] = set()
        mode = resolve_wandb_mode(wandb_mode)
        if mode != "disabled":
            import wandb

            self._wandb = wandb.init(
                project=project,
                group=group,
                name=name,
                config=config,
                dir=str(self.run_dir),
                mode=mode,
                reinit="finish_previous",
            )

    def log(self, metrics: dict[str, float], step: int, prefix: str = "") -> None:
        row = {f"{prefix}{k}": float(v) for k, v in metrics.items()}
        if self._wandb is not None:
            self._wandb.log(self._with_stage_axis(row, step, prefix))
        path = self.run_dir / "metrics.csv"
        with open(path, "a", newline="") as fh:
            writer = csv.writer(fh)
            if not path.stat().st_size:
                writer.writerow(["step", "key", "value"])
            writer.writerows([step, k, v] for k, v in row.items())

    def _with_stage_axis(self, row: dict[str, float], step: int, prefix: str) -> dict[str, float]:
        stage = prefix.rstrip("/")
        if not stage:  # unprefixed metrics stay on wandb's own step
            return row
        axis = f"{stage}/step"
        if stage not in self._stage_axes:
            self._wandb.define_metric(axis)
            self._wandb.define_metric(f"{stage}/*", step_metric=axis)
            self._stage_axes.add(stage)
        return {**row, axis: step}

    def update_summary(self, **values: Any) -> None:
        self.summary.update(values)
        atomic_write_json(self.run_dir / "metrics.json", self.summary)

    def finish(self) -> None:
        if self._wandb is not None:
            self._wandb.summary.update({k: v for k, v in self.summary.items() if isinstance(v, (int, float))})
            self._wandb.finish()
            self._wandb = None


def run_label(cfg: Any) -> str:
    """The run's variant name: ``logging.label`` (e.g. an ablation arm), else the algo."""
    label = cfg.logging.get("label")
    return str(label) if label else str(cfg.algo)


def run_logger(cfg: Any, run_dir: str | os.PathLike) -> RunLogger:
    """The :class:`RunLogger` of a composed config: wandb group ``<task>/<label>``, one run per seed."""
    return RunLogger(
        run_dir,
        config=OmegaConf.to_container(cfg, resolve=True),
        project=str(cfg.logging.project),
        group=f"{cfg.task.name}/{run_label(cfg)}",
        name=f"{cfg.task.name}-{run_label(cfg)}-seed{cfg.seed}",
        wandb_mode=str(cfg.logging.wandb_mode),
    )
