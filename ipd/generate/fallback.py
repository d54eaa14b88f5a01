"""The last step of ``data.source=auto``: generate the dataset locally when no source has it.

:func:`open_or_generate` tries :func:`ipd.data.open_dataset` (the local file, D4RL's cache, the D4RL
download, Minari). Only when that finds *nothing* (:class:`~ipd.data.sources.DatasetNotFoundError`;
a broken file is still an error) and generation is allowed, it generates the D4RL-protocol dataset
into the data dir (``<task>[-v5][-<size>].hdf5``, :func:`ipd.generate.generated_name`), with a
warning that it is not the D4RL release, and loads it. A generated file is reused by later runs.
Concurrent runs (a sweep) take a file lock, so one generates and the others wait and reuse.
"""

from __future__ import annotations

import os
import warnings

from ipd.data.sources import DatasetNotFoundError, LoadedDataset, data_dir_path, open_dataset, open_file
from ipd.generate.make import generated_name, make_dataset
from ipd.io import file_lock
from ipd.tasks import TaskSpec, get_task


class GeneratedDatasetWarning(UserWarning):
    """A run trains on a locally generated D4RL-protocol dataset, not on the D4RL release."""


def open_or_generate(
    task: str | TaskSpec,
    data_dir: str | os.PathLike | None = None,
    download_missing: bool = True,
    url_base: str | None = None,
    minari_id: str | None = None,
    source: str = "auto",
    env_version: str | None = None,
    generate: bool = True,
    generate_size: int | None = None,
    generate_seed: int = 0,
    progress: bool = True,
) -> LoadedDataset:
    """:func:`ipd.data.open_dataset`, then (``source="auto"``, ``generate=True``) local generation."""
    kwargs = {"url_base": url_base} if url_base else {}
    try:
        return open_dataset(
            task,
            data_dir,
            download_missing,
            minari_id=minari_id,
            source=source,
            env_version=env_version,
            **kwargs,
        )
    except DatasetNotFoundError as exc:
        if not generate or str(source).lower() != "auto" or minari_id:
            raise
        tried = exc.tried
    task = get_task(task) if isinstance(task, str) else task
    task = task.with_version(env_version) if env_version else task
    path = data_dir_path(data_dir) / generated_name(task, generate_size)
    with file_lock(path.parent / f".{path.name}.lock"):  # one process generates; the others reuse
        if not path.is_file():
            warnings.warn(
                f"No D4RL or Minari dataset for '{task.name}' was found, so ipd generates a "
                f"D4RL-protocol dataset locally at {path} ({task.gym_id}, shipped behaviour policy). "
                "It is not the D4RL release: its scores are not comparable with published D4RL tables. "
                "Set data.generate=false to fail instead.",
                GeneratedDatasetWarning,
                stacklevel=2,
            )
            print(f"[ipd] {tried}\n[ipd] generating {path} instead (first use; later runs reuse it)")
            make_dataset(task, size=generate_size, seed=generate_seed, path=path, progress=progress)
    return open_file(path, task)
