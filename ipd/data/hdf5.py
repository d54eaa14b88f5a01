"""Read and write the D4RL hdf5 layout.

A D4RL file holds top-level datasets ``observations``, ``actions``, ``rewards``,
``next_observations``, ``terminals`` and ``timeouts`` (plus optional ``infos/*`` and
``metadata/*`` groups, which we ignore). Our writer uses the same layout, and stores
any extra per-row fields (``imagined``, ``source_episode`` ...) as further top-level
datasets so that augmented datasets stay readable by D4RL-format tools.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from ipd.data.transitions import CORE_KEYS, DatasetError, Transitions
from ipd.io import atomic_write

OPTIONAL_KEYS = ("next_observations", "timeouts")


def write_hdf5(
    path: str | os.PathLike, transitions: Transitions, attrs: dict | None = None, compress: bool = True
) -> Path:
    """Atomically write transitions (and their extras) in D4RL layout."""
    # gzip (zlib) streams carry an adler32 checksum, so bit rot in the data fails loudly on read.
    kwargs = {"compression": "gzip", "compression_opts": 4} if compress else {}

    def _write(tmp: str) -> None:
        with h5py.File(tmp, "w") as f:
            for key, arr in transitions.arrays().items():
                f.create_dataset(key, data=arr, **kwargs)
            for key, value in (attrs or {}).items():
                f.attrs[key] = value

    return atomic_write(path, _write)


def read_hdf5(path: str | os.PathLike, extras: bool = True) -> Transitions:
    """Load a D4RL-layout file, with a specific error for each way it can be broken."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"Dataset file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(
            f"Dataset file {path} is corrupt or truncated and cannot be opened as hdf5 ({exc}). "
            "Delete it and download or rebuild it."
        ) from exc
    with f:
        try:
            keys = sorted(f.keys())
            missing = [k for k in CORE_KEYS if k not in keys and k not in OPTIONAL_KEYS]
            if missing:
                raise DatasetError(
                    f"Dataset file {path} lacks the D4RL key(s) {missing}; found {keys}. Expected a "
                    "D4RL-layout hdf5 with observations, actions, rewards, terminals (and timeouts)."
                )
            data = {k: f[k][()] for k in CORE_KEYS if k in keys}
            extra = {}
            if extras:
                n = len(data["observations"])
                for k in keys:
                    if k not in CORE_KEYS and isinstance(f[k], h5py.Dataset) and f[k].shape[:1] == (n,):
                        extra[k] = f[k][()]
        except (OSError, KeyError, RuntimeError, TypeError) as exc:
            # h5py reports damaged metadata as KeyError/RuntimeError and bad chunks as OSError.
            raise DatasetError(
                f"Dataset file {path} is corrupt: reading failed ({type(exc).__name__}: {exc}). "
                "Delete it and download or rebuild it."
            ) from exc
    if "next_observations" not in data:
        raise DatasetError(
            f"Dataset file {path} has no 'next_observations'. ipd needs true next states (D4RL v2 files "
            "have them); using observations[i+1] would be wrong across episode ends."
        )
    if "timeouts" not in data:
        data["timeouts"] = np.zeros(len(data["observations"]), bool)
    try:
        return Transitions(**data, extras=extra)
    except DatasetError as exc:
        raise DatasetError(f"{path}: {exc}") from exc
