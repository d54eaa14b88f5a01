"""The run ledger behind the results tables: finished runs' scores, identity and stage wall times.

:func:`finished_runs` reads the ``metrics.json`` of scored train runs under a runs dir;
:func:`ledger_row` keeps what the tables need (so the committed ``results/runs.jsonl`` rebuilds
them without the run dirs); :func:`merge_ledger` keeps one row per (task, label, seed), the latest.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


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
    "env_id", "score_reference", "versions", "data_origin", "data", "best_normalized_score",
)  # fmt: skip


def ledger_row(run: dict) -> dict:
    """One finished run (a :func:`finished_runs` row) as a ledger row: its score, its identity and
    the wall time of each stage artifact it used (read now, while the artifacts exist)."""
    walls, data, extra = {}, None, {}
    for stage, path in (run.get("artifacts") or {}).items():
        data = data or _artifact_data_fingerprint(Path(path))
        try:
            metrics = json.loads((Path(path) / "metrics.json").read_text())
            walls[stage] = float(metrics["wall_time_s"])
        except (OSError, KeyError, ValueError, TypeError):
            continue
        if stage == "policy" and "alpha" in metrics:  # the Q-term weight stage 3 used (teacher check)
            extra["q_term_alpha"] = float(metrics["alpha"])
        if stage == "augment" and "imagined_rows" in metrics:  # the imagined data volume it trained on
            extra["imagined_rows"] = int(metrics["imagined_rows"])
    if run.get("algo") == "ipd" and "augment" not in (run.get("artifacts") or {}):
        extra["imagined_rows"] = 0  # policy.use_augmented=false: the dataset alone
    row = {k: run[k] for k in LEDGER_FIELDS if k in run}
    if data and "data" not in row:  # which dataset build the run trained on (older runs: from artifacts)
        row["data"] = data
    return {**row, **extra, "run": Path(run["run_dir"]).name, "stage_wall_s": walls}  # run: time-stamped dir


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
