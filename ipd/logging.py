"""Run logging: wandb (offline unless an API key is set), a metrics CSV and metrics.json.

``wandb_mode``: ``auto`` → ``online`` when ``WANDB_API_KEY`` is set, else ``offline``;
``WANDB_MODE`` in the environment (e.g. ``disabled`` in tests) always wins. Runs are
grouped by ``<task>/<algo>`` so seeds of one configuration sit together in the UI.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

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
            self._wandb.log(row, step=step)
        path = self.run_dir / "metrics.csv"
        with open(path, "a", newline="") as fh:
            writer = csv.writer(fh)
            if not path.stat().st_size:
                writer.writerow(["step", "key", "value"])
            writer.writerows([step, k, v] for k, v in row.items())

    def update_summary(self, **values: Any) -> None:
        self.summary.update(values)
        atomic_write_json(self.run_dir / "metrics.json", self.summary)

    def finish(self) -> None:
        if self._wandb is not None:
            self._wandb.summary.update({k: v for k, v in self.summary.items() if isinstance(v, (int, float))})
            self._wandb.finish()
            self._wandb = None
