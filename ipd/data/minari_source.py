"""Minari datasets as :class:`Transitions`, and the task setting they record.

Needs the optional package: ``pip install 'ipd[minari]'``. A Minari episode holds ``T + 1``
observations and ``T`` actions, rewards, terminations and truncations; we flatten episodes into
the D4RL contract (DESIGN.md §3): ``observations = obs[:-1]``, ``next_observations = obs[1:]``,
``terminals = terminations``, ``timeouts = truncations``. An episode whose last step has neither
flag (a collection stopped mid-episode) gets ``timeouts`` there, so episodes never run together.

The dataset also fixes the evaluation setting (:func:`task_for_minari`): the env it records
(its eval env spec if it has one, else its env spec: ``Hopper-v5`` ...) and, when its metadata
has ``ref_min_score``/``ref_max_score``, the reference returns for normalised scores.

Network: a dataset already in the local Minari store (``$MINARI_DATASETS_PATH``, else
``~/.minari/datasets``) is always read from there; Minari is asked to download only when it is
not local and ``download=True``.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ipd.data.transitions import DatasetError, Transitions
from ipd.tasks import TaskSpec

INSTALL_HINT = "pip install 'ipd[minari]'"


def _import_minari():
    try:
        import minari  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ImportError(f"Minari datasets need the optional package: {INSTALL_HINT}") from exc
    return minari


def minari_root() -> Path:
    """The local Minari store: ``$MINARI_DATASETS_PATH``, else ``~/.minari/datasets``."""
    return Path(os.environ.get("MINARI_DATASETS_PATH") or Path.home() / ".minari" / "datasets").expanduser()


def is_local(dataset_id: str) -> bool:
    """Whether ``dataset_id`` is in the local Minari store (Minari keeps it in ``<root>/<id>/data``)."""
    return (minari_root() / dataset_id / "data").is_dir()


def open_minari(dataset_id: str, download: bool = False):
    """The ``MinariDataset`` for ``dataset_id``: local if it is there, else downloaded if allowed."""
    minari = _import_minari()
    local = is_local(dataset_id)
    if not local and not download:
        raise DatasetError(
            f"Minari dataset '{dataset_id}' is not in the local Minari store ({minari_root()}, set by "
            f"$MINARI_DATASETS_PATH). Allow the download (data.download=true) or fetch it first with "
            f"`minari download {dataset_id}`."
        )
    try:
        # download=False for a local dataset: Minari then never touches the network.
        return minari.load_dataset(dataset_id, download=not local)
    except Exception as exc:  # Minari raises many kinds (unknown id, HTTP errors, bad files)
        what = "could not be read" if local else "could not be downloaded"
        raise DatasetError(f"Minari dataset '{dataset_id}' {what}: {type(exc).__name__}: {exc}") from exc


def _env_spec(ds):
    """The env to evaluate in: the dataset's eval env spec if it records one, else its env spec."""
    return getattr(ds, "_eval_env_spec", None) or ds.env_spec


def reference_scores(ds) -> tuple[float, float] | None:
    """(ref_min_score, ref_max_score) from the dataset's metadata, if it has both."""
    meta = ds.storage.metadata
    lo, hi = meta.get("ref_min_score"), meta.get("ref_max_score")
    if lo is None or hi is None:
        return None
    lo, hi = float(np.asarray(lo).reshape(-1)[0]), float(np.asarray(hi).reshape(-1)[0])
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        return None
    return lo, hi


def task_for_minari(task: TaskSpec, ds, env_version: str | None = None) -> TaskSpec:
    """``task`` set up as ``ds`` records it: its env (version and kwargs) and reference scores.

    ``env_version`` (e.g. from ``task.env_version``) must agree with the recorded env, if given.
    """
    dataset_id = ds.spec.dataset_id
    spec = _env_spec(ds)
    if spec is None:
        version = env_version or task.env_version
        warnings.warn(
            f"Minari dataset '{dataset_id}' records no env spec; evaluating in "
            f"{task.with_version(version).gym_id}.",
            stacklevel=2,
        )
        task = task.with_version(version)
    else:
        kwargs: dict[str, Any] = dict(spec.kwargs or {})
        try:
            adapted = task.with_env(spec.id, kwargs)
        except ValueError as exc:
            raise DatasetError(f"Minari dataset '{dataset_id}' records env '{spec.id}': {exc}") from exc
        if env_version and task.with_version(env_version).env_version != adapted.env_version:
            raise DatasetError(
                f"task.env_version={env_version} conflicts with Minari dataset '{dataset_id}', which "
                f"records {spec.id}: evaluation must use the dataset's env (leave task.env_version unset)."
            )
        task = adapted
    ref = reference_scores(ds)
    return task.with_reference_scores(*ref, source="minari") if ref else task


def minari_transitions(ds) -> Transitions:
    """Flatten every episode of a ``MinariDataset`` into :class:`Transitions`."""
    dataset_id = ds.spec.dataset_id
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "nobs", "act", "rew", "term", "trunc")}
    for ep in ds.iterate_episodes():
        if not isinstance(ep.observations, np.ndarray) or not isinstance(ep.actions, np.ndarray):
            raise DatasetError(
                f"Minari dataset '{dataset_id}' has {type(ep.observations).__name__} observations or "
                f"{type(ep.actions).__name__} actions; ipd needs flat Box spaces (MuJoCo locomotion)."
            )
        n = len(ep.rewards)
        obs = np.asarray(ep.observations).reshape(n + 1, -1)
        term = np.asarray(ep.terminations, bool).reshape(n)
        trunc = np.asarray(ep.truncations, bool).reshape(n).copy()
        if n and not (term[-1] or trunc[-1]):
            trunc[-1] = True  # an unfinished episode still ends here
        parts["obs"].append(obs[:-1])
        parts["nobs"].append(obs[1:])
        parts["act"].append(np.asarray(ep.actions).reshape(n, -1))
        parts["rew"].append(np.asarray(ep.rewards).reshape(n))
        parts["term"].append(term)
        parts["trunc"].append(trunc)
    if not parts["obs"]:
        raise DatasetError(f"Minari dataset '{dataset_id}' has no episodes.")
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    try:
        return Transitions(cat["obs"], cat["act"], cat["rew"], cat["nobs"], cat["term"], cat["trunc"])
    except DatasetError as exc:
        raise DatasetError(f"Minari dataset '{dataset_id}': {exc}") from exc


def load_minari(dataset_id: str, download: bool = False) -> Transitions:
    """The transitions of a Minari dataset (local first; see :func:`open_minari`)."""
    return minari_transitions(open_minari(dataset_id, download))
