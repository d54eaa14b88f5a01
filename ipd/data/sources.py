"""Where datasets come from: local D4RL-layout files, the D4RL download, or Minari.

:func:`open_dataset` returns the transitions *and* the task set up for them (the env to
evaluate in and the reference scores, see :mod:`ipd.tasks`). The way depends on ``source``:

- ``minari_id`` given (``data.minari_id=mujoco/hopper/medium-v0``), or ``source="minari"``
  (then the task's own Minari dataset, :attr:`ipd.tasks.TaskSpec.minari_id`): a Minari dataset
  through the optional ``minari`` package (:mod:`ipd.data.minari_source`). Evaluation then
  uses the env the dataset records (``Hopper-v5`` ...), and its reference scores when it has them.
- otherwise (``source="auto"`` or ``"d4rl"``), for task ``hopper-medium``:

  1. ``<data_dir>/hopper-medium.hdf5`` (for ``env_version="v5"``: ``hopper-medium-v5.hdf5``
     first) where ``data_dir`` is the argument, else ``$IPD_DATA_DIR``, else ``~/.cache/ipd-datasets``;
  2. ``<d4rl_dir>/hopper_medium-v2.hdf5`` where ``d4rl_dir`` is ``$D4RL_DATASET_DIR``,
     else ``~/.d4rl/datasets`` (D4RL's own cache);
  3. a download of the D4RL v2 file into ``data_dir`` (``download_missing=True``);
  4. only with ``source="auto"`` and ``minari`` installed: the task's Minari dataset, if Minari
     has one (from the local Minari store, or downloaded when ``download_missing``).

  D4RL files are evaluated in the ``*-v4`` envs unless ``env_version="v5"``. When none of these
  has the dataset, :class:`DatasetNotFoundError` lists what was tried and how to provide it;
  :mod:`ipd.generate.fallback` (above this module) then generates one locally if allowed.

``LoadedDataset.origin`` says where the data came from: ``d4rl`` (a D4RL download, D4RL's cache or
a file with D4RL's metadata), ``minari``, ``generated`` (a file made by :mod:`ipd.generate` or the
earlier benchmark builder, by its attributes) or ``file`` (any other D4RL-layout file). A generated
file records its env (``env_id``); loading it for another env version is refused.

We never import the ``d4rl`` package: it pins gym<0.25 and mujoco-py, which need MuJoCo
2.1 binaries from outside the package registries. The hdf5 format is read directly.
"""

from __future__ import annotations

import http.client
import importlib.util
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ipd.data import minari_source
from ipd.data.hdf5 import check_episode_order, read_hdf5, read_hdf5_attrs
from ipd.data.transitions import DatasetError, Transitions
from ipd.io import atomic_write
from ipd.tasks import D4RL_URL_BASE, TaskSpec, get_task

SOURCES = ("auto", "d4rl", "minari")


ORIGINS = ("d4rl", "minari", "generated", "file")


class DatasetNotFoundError(DatasetError):
    """No source has the task's dataset (as opposed to a dataset that is there but broken).
    ``tried``: what was looked at, without the advice on how to provide the dataset."""

    def __init__(self, message: str, tried: str = "") -> None:
        super().__init__(message)
        self.tried = tried


@dataclass
class LoadedDataset:
    """A dataset, the task set up for it (env and reference scores), and where it came from."""

    transitions: Transitions
    task: TaskSpec
    source: str  # the file read, or "minari:<dataset id>"
    origin: str = "file"  # one of ORIGINS


def file_origin(path: str | os.PathLike, attrs: dict | None = None) -> str:
    """``generated``, ``d4rl`` or ``file``, from a D4RL-layout file's attributes and name."""
    attrs = read_hdf5_attrs(path) if attrs is None else attrs
    if attrs.get("origin") == "generated" or "build.py" in str(attrs.get("source", "")):
        return "generated"
    if attrs.get("has_d4rl_metadata") or Path(path).name.endswith("-v2.hdf5"):
        return "d4rl"
    return "file"


def open_file(path: str | os.PathLike, task: TaskSpec) -> LoadedDataset:
    """A D4RL-layout file as ``task``'s dataset, with its origin; refuses a generated file of another env."""
    path = Path(path)
    attrs = read_hdf5_attrs(path)
    recorded = attrs.get("env_id")
    if attrs.get("origin") == "generated" and recorded and recorded != task.gym_id:
        raise DatasetError(
            f"{path} was generated in {recorded}, but this run evaluates in {task.gym_id}. Use "
            f"task.env_version={str(recorded).rpartition('-')[2]}, or generate the {task.gym_id} "
            f"dataset: python scripts/make_dataset.py task={task.name} task.env_version={task.env_version}."
        )
    transitions = read_hdf5(path)
    check_episode_order(path, transitions)
    return LoadedDataset(transitions, task, str(path), file_origin(path, attrs))


def default_data_dir() -> Path:
    return Path(os.environ.get("IPD_DATA_DIR") or Path.home() / ".cache" / "ipd-datasets").expanduser()


def data_dir_path(data_dir: str | os.PathLike | None = None) -> Path:
    return Path(data_dir).expanduser() if data_dir else default_data_dir()


def default_d4rl_dir() -> Path:
    return Path(os.environ.get("D4RL_DATASET_DIR") or Path.home() / ".d4rl" / "datasets").expanduser()


def candidate_paths(task: TaskSpec, data_dir: str | os.PathLike | None = None) -> list[Path]:
    data_dir = data_dir_path(data_dir)
    versioned = [data_dir / f"{task.name}-{task.env_version}.hdf5"] if task.env_version != "v4" else []
    return [*versioned, data_dir / f"{task.name}.hdf5", default_d4rl_dir() / task.d4rl_file]


def download(
    url: str,
    dest: str | os.PathLike,
    timeout: float = 30.0,
    chunk: int = 1 << 20,
    check: Callable[[str], None] | None = None,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` with a progress bar; the file appears only when complete.

    The body is streamed into a temp file in the destination folder and renamed at the end.
    A short body (fewer bytes than Content-Length), any network or HTTP error, or a failing
    ``check(tmp_path)`` (e.g. "is this a readable D4RL file?") removes the temp file and
    raises :class:`DatasetError`, so ``dest`` never holds a partial or invalid download.
    """
    dest = Path(dest)
    # http.client.HTTPException (IncompleteRead in chunked bodies, BadStatusLine ...) is not an
    # OSError; ValueError covers malformed URLs and Content-Length headers.
    net_errors = (urllib.error.URLError, OSError, http.client.HTTPException, ValueError)

    def _fetch(tmp: str) -> None:
        try:
            resp = urllib.request.urlopen(url, timeout=timeout)
        except net_errors as exc:
            raise DatasetError(f"Download of {url} failed: {exc}") from exc
        got = 0
        with resp:
            try:
                total = int(resp.headers.get("Content-Length") or 0)
            except ValueError:
                total = 0
            with (
                open(tmp, "wb") as f,
                tqdm(
                    total=total or None, unit="B", unit_scale=True, desc=dest.name, disable=not progress
                ) as bar,
            ):
                while True:
                    try:
                        block = resp.read(chunk)
                    except net_errors as exc:
                        why = f"{type(exc).__name__}: {exc}"
                        raise DatasetError(
                            f"Download of {url} was interrupted after {got} bytes: {why}"
                        ) from exc
                    if not block:
                        break
                    f.write(block)
                    got += len(block)
                    bar.update(len(block))
        if total and got != total:
            raise DatasetError(f"Download of {url} is incomplete: got {got} of {total} bytes.")
        if check is not None:
            check(tmp)

    try:
        return atomic_write(dest, _fetch)
    except OSError as exc:  # the destination folder cannot be created or written
        raise DatasetError(f"Cannot write the download of {url} to {dest}: {exc}") from exc


def find_dataset(task: TaskSpec, data_dir: str | os.PathLike | None = None) -> Path | None:
    return next((p for p in candidate_paths(task, data_dir) if p.is_file()), None)


def open_dataset(
    task: str | TaskSpec,
    data_dir: str | os.PathLike | None = None,
    download_missing: bool = True,
    url_base: str = D4RL_URL_BASE,
    minari_id: str | None = None,
    source: str = "auto",
    env_version: str | None = None,
) -> LoadedDataset:
    """Load a task's dataset (see the module docstring for the order) and set the task up for it.

    ``env_version`` (``v4`` | ``v5``; ``None``: v4 for D4RL files, the recorded env for Minari)
    picks the evaluation env. For a Minari dataset it must agree with the env the dataset records.
    """
    task = get_task(task) if isinstance(task, str) else task
    source = str(source or "auto").strip().lower()
    if source not in SOURCES:
        raise DatasetError(f"data.source must be one of {'|'.join(SOURCES)}, got '{source}'.")
    if minari_id and source == "d4rl":
        raise DatasetError(f"data.minari_id={minari_id} and data.source=d4rl contradict each other.")
    if source == "minari" and not minari_id:
        minari_id = task.minari_id
        if not minari_id:
            raise DatasetError(
                f"data.source=minari, but Minari has no dataset for level '{task.level}' (it has "
                "medium and expert for hopper, halfcheetah and walker2d): set data.minari_id=<id>."
            )
    if minari_id:
        return _open_minari(task, minari_id, download_missing, env_version)
    if env_version:
        task = task.with_version(env_version)
    path = find_dataset(task, data_dir)
    if path is not None:
        return open_file(path, task)
    looked = candidate_paths(task, data_dir)
    dest = data_dir_path(data_dir) / f"{task.name}.hdf5"
    errors: list[str] = []
    if download_missing and url_base:
        url = task.d4rl_url(url_base)
        loaded: list[Transitions] = []

        def _check(tmp: str) -> None:
            # Parse before the rename: an HTML error page or a damaged file never lands in data_dir.
            try:
                loaded.append(read_hdf5(tmp))
            except DatasetError as exc:
                raise DatasetError(f"Downloaded {url} is not a valid D4RL-layout file: {exc}") from exc

        try:
            download(url, dest, check=_check)
            return LoadedDataset(loaded[0], task, str(dest), "d4rl")
        except DatasetError as exc:
            errors.append(str(exc))
    if source == "auto" and task.minari_id and importlib.util.find_spec("minari") is not None:
        try:
            return _open_minari(task, task.minari_id, download_missing, env_version)
        except (ImportError, DatasetError) as exc:
            errors.append(str(exc))
    tried = _tried(task, looked, errors)
    raise DatasetNotFoundError(_missing_message(task, tried, looked, url_base), tried)


def _open_minari(task: TaskSpec, minari_id: str, download: bool, env_version: str | None) -> LoadedDataset:
    ds = minari_source.open_minari(minari_id, download)
    adapted = minari_source.task_for_minari(task, ds, env_version)
    return LoadedDataset(minari_source.minari_transitions(ds), adapted, f"minari:{minari_id}", "minari")


def _tried(task: TaskSpec, looked: list[Path], errors: list[str]) -> str:
    paths = "\n  ".join(str(p) for p in looked)
    why = ("\nAlso tried:\n  " + "\n  ".join(errors)) if errors else ""
    return f"No dataset for task '{task.name}'. Looked for:\n  {paths}{why}"


def _missing_message(task: TaskSpec, tried: str, looked: list[Path], url_base: str) -> str:
    minari = (
        f"data.minari_id={task.minari_id} (this task's Minari dataset, evaluated in "
        f"{task.env.gym_id('v5')}), or data.minari_id=<any Minari id>"
        if task.minari_id
        else "data.minari_id=<a Minari dataset id> (Minari has no dataset of this level)"
    )
    return (
        f"{tried}\n"
        "Provide it by one of:\n"
        f"  (a) the D4RL download: data.download=true fetches {task.d4rl_url(url_base)} "
        "(data.url_base=... for a mirror);\n"
        f"  (b) a D4RL-layout hdf5 file you already have: copy it to {looked[-2]} or to D4RL's cache "
        f"{looked[-1]}, or set data.dir=/path/with/{task.name}.hdf5;\n"
        f"  (c) Minari: {minari_source.INSTALL_HINT}, then {minari};\n"
        "  (d) generate a D4RL-protocol dataset locally (not the D4RL release): data.generate=true "
        f"(the default with data.source=auto), or `python scripts/make_dataset.py task={task.name}`."
    )


def load_dataset(
    task: str | TaskSpec,
    data_dir: str | os.PathLike | None = None,
    download_missing: bool = True,
    url_base: str = D4RL_URL_BASE,
    minari_id: str | None = None,
    source: str = "auto",
) -> Transitions:
    """Load a task's dataset from the first source that has it (see the module docstring)."""
    return open_dataset(task, data_dir, download_missing, url_base, minari_id, source).transitions


def resolve_task(
    task: str | TaskSpec,
    env_version: str | None = None,
    minari_id: str | None = None,
    download: bool = False,
) -> TaskSpec:
    """The task as a run on this data evaluates it, without loading the transitions.

    For a Minari id, reads the dataset's metadata (env spec, reference scores); else applies
    ``env_version``. ``scripts/evaluate.py`` uses it so that a checkpoint is evaluated in the env,
    and scored with the reference returns, that its training data implies.
    """
    task = get_task(task) if isinstance(task, str) else task
    if minari_id:
        ds = minari_source.open_minari(minari_id, download)
        return minari_source.task_for_minari(task, ds, env_version)
    return task.with_version(env_version) if env_version else task


def load_minari(dataset_id: str, download: bool = False) -> Transitions:
    """Flatten a Minari dataset into :class:`Transitions` (needs ``pip install 'ipd[minari]'``)."""
    return minari_source.load_minari(dataset_id, download)
