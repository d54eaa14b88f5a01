"""Unique run directories, and reading the finished runs back (:func:`finished_runs`).

Two runs started in the same second with the same task, algo and seed used to share
``runs/<task>/train/<algo>/<time>_seed<seed>/`` and overwrite each other's ``metrics.json``. Run
names now carry microseconds and a random suffix (:func:`run_stamp`), e.g.
``2026-03-04_12-00-00-123456_3fa9c2``:

- Hydra runs: ``configs/train.yaml`` names ``hydra.run.dir`` and ``hydra.sweep.dir`` with the
  ``${ipd.run_stamp:}`` resolver, registered when :mod:`ipd` is imported (every script imports
  :mod:`ipd.pipeline` before Hydra composes its config). Like Hydra's ``${now:...}`` it is cached
  per config, and Hydra copies that cache into multirun jobs, so a run resolves it once.
- Runs without Hydra (notebooks): :func:`make_unique_dir` creates the dir with
  ``exist_ok=False`` and retries with a new stamp, so it never hands out an existing dir.

The names still sort by start time.
"""

from __future__ import annotations

import json
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


def finished_runs(runs: str | os.PathLike) -> list[dict]:
    """The ``metrics.json`` rows of the scored train runs under ``runs``, plus ``label`` (the
    run's ``logging.label``, else its algo) and ``run_dir``. One row per (task, label, seed): the
    latest run (by its time-stamped dir), so a re-run or re-evaluation is not counted as a seed."""
    latest: dict[tuple, dict] = {}
    for path in sorted(Path(runs).rglob("metrics.json"), key=lambda p: p.parent.name):
        try:
            m = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(m, dict) and "normalized_score" in m and "algo" in m:
            row = {**m, "label": m.get("label") or m["algo"], "run_dir": str(path.parent)}
            latest[(row.get("task"), row["label"], row.get("seed"))] = row
    return list(latest.values())


# Stages whose artifact wall time a ledger row keeps (see scripts/results.py).
LEDGER_STAGES = ("world_model", "value", "augment", "policy", "bc")
# The fields of a run's metrics.json that the ledger keeps (plus ``run`` and ``stage_wall_s``):
# enough to rebuild every results table without the run dirs, which stay on the machine that
# made them (``runs/`` is not committed).
LEDGER_FIELDS = (
    "task", "label", "algo", "seed", "normalized_score", "normalized_score_std", "episodes",
    "env_id", "score_reference", "versions", "data_origin", "data",
)  # fmt: skip


def ledger_row(run: dict) -> dict:
    """One finished run (a :func:`finished_runs` row) as a ledger row: its score, its identity and
    the wall time of each stage artifact it used (read now, while the artifacts exist)."""
    walls, data = {}, None
    for stage, path in (run.get("artifacts") or {}).items():
        data = data or _artifact_data_fingerprint(Path(path))
        try:
            walls[stage] = float(json.loads((Path(path) / "metrics.json").read_text())["wall_time_s"])
        except (OSError, KeyError, ValueError, TypeError):
            continue
    row = {k: run[k] for k in LEDGER_FIELDS if k in run}
    if data and "data" not in row:  # which dataset build the run trained on (older runs: from artifacts)
        row["data"] = data
    return {**row, "run": Path(run["run_dir"]).name, "stage_wall_s": walls}  # run: the time-stamped dir


def _artifact_data_fingerprint(path: Path) -> str | None:
    """The dataset fingerprint recorded in a stage artifact's ``config.yaml`` (its ``data`` key)."""
    import yaml

    try:
        config = yaml.safe_load((path / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    data = config.get("data") if isinstance(config, dict) else None
    return str(data) if data else None


def read_ledger(path: str | os.PathLike) -> list[dict]:
    """The rows of a JSON-lines ledger (none if the file does not exist). A line that is not a
    JSON object with task, label and normalized_score is an error that names its line number."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i}: not a JSON line ({e}); fix or delete that line") from e
        if not isinstance(row, dict) or not {"task", "label", "normalized_score"} <= row.keys():
            raise ValueError(f"{path}:{i}: a ledger row needs task, label and normalized_score")
        rows.append(row)
    return rows


def merge_ledger(ledger: list[dict], runs: list[dict]) -> list[dict]:
    """Ledger rows updated with finished runs: one row per (task, label, seed), the latest by its
    run name (time-stamped; rows without one, e.g. back-filled ones, count as the oldest)."""
    latest: dict[tuple, dict] = {}
    for row in [*ledger, *(ledger_row(r) for r in runs)]:
        key = (row.get("task"), row["label"], row.get("seed"))
        if key not in latest or str(row.get("run") or "") >= str(latest[key].get("run") or ""):
            latest[key] = row
    return sorted(latest.values(), key=_ledger_order)


def _ledger_order(row: dict) -> tuple:
    """Task, label, then seed as a number (seed 10 after seed 2), non-integer seeds last."""
    seed = row.get("seed")
    numeric = isinstance(seed, int) and not isinstance(seed, bool)
    return (row["task"], row["label"], not numeric, seed if numeric else 0, str(seed))


def write_ledger(path: str | os.PathLike, rows: list[dict]) -> Path:
    """Write the ledger atomically, one sorted-key JSON object per line."""
    from ipd.io import atomic_write_text

    return atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
