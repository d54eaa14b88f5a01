"""Atomic file writes and versioned checkpoints shared by every learned component.

Every checkpoint is a ``torch.save`` dict with a ``format`` header::

    {"format": {"name": "ipd.world_model", "version": 1, "ipd_version": "0.1.0"}, ...payload}

Loading checks the component name and version so that a checkpoint from another
component or an incompatible release fails with a message instead of a shape error.
Loading never unpickles arbitrary objects: :func:`torch_load` uses ``weights_only=True``
and allows only the numpy array types that our normalisers store.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pickle
import tempfile
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

try:  # one source of truth: pyproject.toml's version, via the installed package metadata
    IPD_VERSION = metadata.version("ipd")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    IPD_VERSION = "0+unknown"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, of another component or of an incompatible version."""


T = TypeVar("T")


def atomic_write(path: str | os.PathLike, write_fn: Callable[[str], None]) -> Path:
    """Call ``write_fn(tmp_path)`` then rename onto ``path``: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write_fn(tmp)
        # mkstemp creates the file 0600; give it the mode a plain open() would have.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask can only be read by setting it


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``path`` (created, with its folder, if missing). On a
    cluster the processes must share a filesystem whose locks work across nodes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    def _write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    return atomic_write(path, _write)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def save_checkpoint(path: str | os.PathLike, name: str, version: int, payload: dict[str, Any]) -> Path:
    """Atomically save ``payload`` with a format header (component ``name``, format ``version``)."""
    blob = {"format": {"name": name, "version": version, "ipd_version": IPD_VERSION}, **payload}
    return atomic_write(path, lambda tmp: torch.save(blob, tmp))


# numpy arrays (normaliser stats, recorded arrays) are the only non-torch objects we save.
_multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray  # numpy 2 | 1.x
_NUMPY_GLOBALS = [_multiarray._reconstruct, np.ndarray, np.dtype] + [
    type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int32, np.int64, np.uint32, np.bool_)
]


def torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True`` plus numpy arrays: no arbitrary code runs on load."""
    with torch.serialization.safe_globals(_NUMPY_GLOBALS):
        return torch.load(path, map_location=map_location, weights_only=True)


def _load_or_explain(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """:func:`torch_load`, turning every failure into a :class:`CheckpointError` that says what to do."""
    try:
        return torch_load(path, map_location)
    except pickle.UnpicklingError as exc:
        unsafe = [line.strip() for line in str(exc).splitlines() if "Unsupported global" in line]
        if unsafe:
            raise CheckpointError(
                f"Checkpoint {path} holds objects other than tensors, numpy arrays and plain containers, "
                f"which ipd refuses to unpickle ({unsafe[0]}). Only load checkpoints written by ipd; "
                "if you trust this file, torch.load(weights_only=False) it and re-save the tensors."
            ) from exc
        reason = "not a pickle/zip torch file"  # garbage bytes fail the same restricted unpickler
    except Exception as exc:  # torch raises many types for truncated/corrupt zip files
        reason = f"{type(exc).__name__}: {exc}"
    raise CheckpointError(
        f"Checkpoint {path} is corrupt or not a torch file ({reason}). Delete it and run the same "
        "command again: a stage artifact missing a file is built again."
    )


def read_state(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """A training-state file (any torch-saved object); a damaged one is a :class:`CheckpointError`."""
    return _load_or_explain(Path(path), map_location)


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read an ipd checkpoint once (safely) and return its dict; the header is checked by the caller."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint not found: {path}. Check the path, or train the model first.")
    blob = _load_or_explain(path, map_location)
    if not isinstance(blob, dict) or not isinstance(blob.get("format"), dict) or "name" not in blob["format"]:
        raise CheckpointError(f"{path} is not an ipd checkpoint (no format header).")
    return blob


def check_format(blob: Any, name: str, version: int, where: str | os.PathLike) -> None:
    """The one format-header check: ``blob["format"]`` must name component ``name`` at ``version``.

    ``where`` names the file (or the embedding checkpoint) in the error message.
    """
    header = blob.get("format") if isinstance(blob, dict) else None
    if not isinstance(header, dict) or "name" not in header:
        raise CheckpointError(f"{where} is not an ipd '{name}' checkpoint (no format header).")
    if header["name"] != name:
        raise CheckpointError(f"{where} holds a '{header['name']}' checkpoint, expected '{name}'.")
    if header.get("version") != version:
        raise CheckpointError(
            f"{where} is a '{name}' checkpoint of format version {header.get('version')} "
            f"(written by ipd {header.get('ipd_version')}); this ipd {IPD_VERSION} reads version {version}. "
            "Re-train it with this version, or check out the ipd release that wrote it."
        )


def load_checkpoint(
    path: str | os.PathLike, name: str, version: int, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, checking component and version."""
    blob = read_checkpoint(path, map_location)
    check_format(blob, name, version, path)
    return blob


def build_from_checkpoint(build: Callable[[], T], name: str, where: str | os.PathLike) -> T:
    """``build()``, which turns a format-checked payload into an object; a payload that does not fit
    (missing key, wrong shape or type) becomes a :class:`CheckpointError` naming the file, rather
    than a bare ``KeyError`` from deep inside a constructor."""
    try:
        return build()
    except CheckpointError:
        raise
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{where}: malformed '{name}' checkpoint ({exc}).") from exc


def checkpoint_task(blob: dict[str, Any]) -> str | None:
    """The task a checkpoint records, wherever its component keeps it."""
    extra = blob.get("extra") if isinstance(blob.get("extra"), dict) else {}
    return blob.get("task") or blob.get("task_name") or extra.get("task")


def checkpoint_eval_task(blob: dict[str, Any]) -> dict[str, Any] | None:
    """The evaluation env and reference scores a checkpoint records (``TaskSpec.eval_record``),
    or None for checkpoints written before they were recorded."""
    extra = blob.get("extra") if isinstance(blob.get("extra"), dict) else {}
    record = blob.get("eval_task") or extra.get("eval_task")
    return record if isinstance(record, dict) else None


def to_cpu(x: Any) -> Any:
    """Tensors (also nested in dicts/lists) moved to the CPU and detached, ready for ``torch.save``."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, dict):
        return {k: to_cpu(v) for k, v in x.items()}
    if isinstance(x, list):
        return [to_cpu(v) for v in x]
    return x
