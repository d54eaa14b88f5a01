"""Where datasets come from: local D4RL-layout files, the D4RL download, or Minari.

Lookup order for task ``hopper-medium`` (see :func:`find_dataset`):

1. ``<data_dir>/hopper-medium.hdf5`` where ``data_dir`` is the argument, else
   ``$IPD_DATA_DIR``, else ``~/.cache/ipd-datasets`` (where ``build.py`` writes);
2. ``<d4rl_dir>/hopper_medium-v2.hdf5`` where ``d4rl_dir`` is ``$D4RL_DATASET_DIR``,
   else ``~/.d4rl/datasets`` (D4RL's own cache);
3. a download of the D4RL v2 file into ``data_dir`` (``download=True``);
4. Minari, if the optional ``minari`` package is installed and ``minari_id`` is given.

We never import the ``d4rl`` package: it pins gym<0.25 and mujoco-py, which need MuJoCo
2.1 binaries from outside the package registries. The hdf5 format is read directly.
"""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from ipd.data.hdf5 import read_hdf5
from ipd.data.transitions import DatasetError, Transitions
from ipd.io import atomic_write
from ipd.tasks import D4RL_URL_BASE, TaskSpec, get_task


def default_data_dir() -> Path:
    return Path(os.environ.get("IPD_DATA_DIR") or Path.home() / ".cache" / "ipd-datasets").expanduser()


def default_d4rl_dir() -> Path:
    return Path(os.environ.get("D4RL_DATASET_DIR") or Path.home() / ".d4rl" / "datasets").expanduser()


def candidate_paths(task: TaskSpec, data_dir: str | os.PathLike | None = None) -> list[Path]:
    data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
    return [data_dir / f"{task.name}.hdf5", default_d4rl_dir() / task.d4rl_file]


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


def load_dataset(
    task: str | TaskSpec,
    data_dir: str | os.PathLike | None = None,
    download_missing: bool = True,
    url_base: str = D4RL_URL_BASE,
    minari_id: str | None = None,
) -> Transitions:
    """Load a task's dataset from the first source that has it (see module docstring)."""
    task = get_task(task) if isinstance(task, str) else task
    path = find_dataset(task, data_dir)
    if path is not None:
        return read_hdf5(path)
    looked = candidate_paths(task, data_dir)
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
            download(url, looked[0], check=_check)
            return loaded[0]
        except DatasetError as exc:
            errors.append(str(exc))
    if minari_id:
        try:
            return load_minari(minari_id)
        except (ImportError, DatasetError) as exc:
            errors.append(f"Minari '{minari_id}': {exc}")
    tried = "\n  ".join(str(p) for p in looked)
    why = ("\nAlso tried:\n  " + "\n  ".join(errors)) if errors else ""
    raise DatasetError(
        f"No dataset for task '{task.name}'. Looked for:\n  {tried}{why}\n"
        f"Provide it by one of: (a) build it with `python ../shared/datasets/build.py --only {task.name}` "
        f"(writes to $IPD_DATA_DIR or ~/.cache/ipd-datasets); (b) copy a D4RL-layout file to "
        f"{looked[0]}; (c) set data.dir=/path/with/<task>.hdf5; (d) allow the D4RL download "
        f"({task.d4rl_url(url_base)})."
    )


def load_minari(dataset_id: str) -> Transitions:
    """Flatten a Minari dataset into :class:`Transitions` (needs ``pip install minari``)."""
    try:
        import minari  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ImportError("Minari support needs the optional package: pip install 'ipd[minari]'") from exc
    import numpy as np

    ds = minari.load_dataset(dataset_id)
    parts: dict[str, list] = {k: [] for k in ("obs", "act", "rew", "nobs", "term", "trunc")}
    for ep in ds.iterate_episodes():
        obs = np.asarray(ep.observations)
        parts["obs"].append(obs[:-1])
        parts["nobs"].append(obs[1:])
        parts["act"].append(ep.actions)
        parts["rew"].append(ep.rewards)
        parts["term"].append(ep.terminations)
        parts["trunc"].append(ep.truncations)
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    return Transitions(cat["obs"], cat["act"], cat["rew"], cat["nobs"], cat["term"], cat["trunc"])
