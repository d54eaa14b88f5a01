"""Unique run directories (the finished runs are read back by :mod:`ipd.ledger`).

Two runs started in the same second with the same task, algo and seed used to share
``runs/<task>/train/<algo>/<time>_seed<seed>/`` and overwrite each other's ``metrics.json``. Run
names now carry microseconds and a random suffix (:func:`run_stamp`), e.g.
``2026-03-04_12-00-00-123456_3fa9c2``:

- Hydra runs: ``configs/train.yaml`` names ``hydra.run.dir`` and ``hydra.sweep.dir`` with the
  ``${ipd.run_stamp:}`` resolver, registered when :mod:`ipd` is imported (every script imports
  :mod:`ipd.cli` before Hydra composes its config). Like Hydra's ``${now:...}`` it is cached
  per config, and Hydra copies that cache into multirun jobs, so a run resolves it once.
- Runs without Hydra (notebooks): :func:`make_unique_dir` creates the dir with
  ``exist_ok=False`` and retries with a new stamp, so it never hands out an existing dir.

The names still sort by start time.
"""

from __future__ import annotations

import os
import secrets
from datetime import datetime
from pathlib import Path

RESOLVER = "ipd.run_stamp"


def run_stamp(now: datetime | None = None) -> str:
    """``YYYY-mm-dd_HH-MM-SS-ffffff_<6 hex>``: start time to the microsecond plus 24 random bits."""
    now = now or datetime.now()
    return f"{now:%Y-%m-%d_%H-%M-%S-%f}_{secrets.token_hex(3)}"


def make_unique_dir(parent: str | os.PathLike, suffix: str = "", attempts: int = 100) -> Path:
    """Create and return a new dir ``<parent>/<run_stamp()><suffix>`` that no other caller got."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    for _ in range(attempts):
        path = parent / f"{run_stamp()}{suffix}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"Could not create a new run dir under {parent} in {attempts} attempts.")


def current_run_dir(fallback_parent: str | os.PathLike = Path("runs") / "notebook") -> Path:
    """The Hydra run's output dir, or (outside a Hydra app, e.g. a notebook) a new unique dir."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except (ImportError, ValueError):
        return make_unique_dir(fallback_parent)


def register_resolvers() -> None:
    """Register ``${ipd.run_stamp:}`` with OmegaConf (idempotent)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, lambda: run_stamp(), use_cache=True)
