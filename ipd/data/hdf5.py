"""Read and write the D4RL hdf5 layout.

A D4RL file holds top-level datasets ``observations``, ``actions``, ``rewards``,
``next_observations``, ``terminals`` and ``timeouts`` (plus optional ``infos/*`` and
``metadata/*`` groups, which we ignore). Our writer uses the same layout, and stores
any extra per-row fields (``imagined``, ``source_episode`` ...) as further top-level
datasets so that augmented datasets stay readable by D4RL-format tools.

A file without ``timeouts`` (older D4RL-style files) would otherwise split episodes only at
terminals, running time-limited episodes into the next one and corrupting their returns-to-go.
:func:`read_hdf5` therefore infers episode ends from ``next_observations``: row ``i`` ends an
episode where ``next_observations[i] != observations[i + 1]`` (the next row starts elsewhere);
those rows that are not terminals become timeouts, and a :class:`DatasetWarning` says so.
Without ``next_observations`` the episode ends cannot be recovered and reading fails.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import h5py
import numpy as np

from ipd.data.transitions import CORE_KEYS, DatasetError, Transitions
from ipd.io import atomic_write

OPTIONAL_KEYS = ("next_observations", "timeouts")


class DatasetWarning(UserWarning):
    """The dataset loaded, but something about it was inferred or repaired."""


def infer_timeouts(
    observations: np.ndarray, next_observations: np.ndarray, terminals: np.ndarray
) -> np.ndarray:
    """Bool [N]: rows that end an episode without a terminal, i.e. where the next row does not
    continue from this row's next state (``next_observations[i] != observations[i + 1]``).

    The last row is not flagged: it ends its episode anyway (DESIGN.md §3).
    """
    n = len(observations)
    ends = np.zeros(n, bool)
    if n > 1:
        ends[:-1] = np.any(next_observations[:-1] != observations[1:], axis=-1)
    return ends & ~np.asarray(terminals, bool).reshape(-1)


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


def read_hdf5_attrs(path: str | os.PathLike) -> dict:
    """A file's top-level attributes as plain Python values, plus ``has_d4rl_metadata`` (D4RL's
    release files carry a ``metadata`` group). Empty for a file that cannot be opened."""
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: v.item() if isinstance(v, np.generic) else v for k, v in f.attrs.items()}
            attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
            attrs["has_d4rl_metadata"] = "metadata" in f
            return attrs
    except OSError:
        return {}


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
        lacks = "'next_observations' or 'timeouts'" if "timeouts" not in data else "'next_observations'"
        raise DatasetError(
            f"Dataset file {path} has no {lacks}. ipd needs true next states (D4RL v2 files "
            "have them); using observations[i+1] would be wrong across episode ends"
            + (", and without either the episode ends cannot be told." if "timeouts" not in data else ".")
        )
    _warn_integer_arrays(path, data)
    infer = "timeouts" not in data
    if infer:
        data["timeouts"] = np.zeros(len(data["observations"]), bool)
    try:
        t = Transitions(**data, extras=extra)
    except DatasetError as exc:
        raise DatasetError(f"{path}: {exc}") from exc
    if infer:  # on validated arrays: equal lengths, finite values
        t.timeouts = _inferred_timeouts(path, t)
    return t


def _warn_integer_arrays(path: Path, data: dict[str, np.ndarray]) -> None:
    """One warning per file that names every integer array ipd casts to float32."""
    keys = ("observations", "actions", "rewards", "next_observations")
    cast = [f"'{k}' ({data[k].dtype})" for k in keys if k in data and data[k].dtype.kind in "iub"]
    if cast:
        stored = f"{cast[0]} is" if len(cast) == 1 else f"{', '.join(cast)} are"
        warnings.warn(
            f"Dataset file {path}: {stored} stored as integers, and ipd casts them to float32. "
            "If these are discrete codes rather than quantities, ipd's continuous-control models do not "
            "fit this data.",
            DatasetWarning,
            stacklevel=3,
        )


def check_episode_order(path: str | os.PathLike, t: Transitions) -> None:
    """Refuse a dataset whose rows are not stored episode after episode: inside an episode the next
    row must continue from this row's next state (up to 1% of mismatches pass: float noise). The
    loaders run it on every task dataset (:func:`ipd.data.sources.open_file`)."""
    n = len(t)
    if n < 10:
        return
    inner = ~(t.terminals | t.timeouts)[:-1]
    broken = int(np.any(t.next_observations[:-1] != t.observations[1:], axis=-1)[inner].sum())
    if broken > max(1, inner.sum() // 100):
        raise DatasetError(
            f"Dataset file {path}: in {broken} of {int(inner.sum())} rows inside an episode the next row "
            "does not start from this row's next_observations, so the rows are not stored in episode "
            "order (or 'timeouts' misses episode ends). Store each episode's rows consecutively, "
            "with terminals or timeouts marking every episode end."
        )


def _inferred_timeouts(path: Path, t: Transitions) -> np.ndarray:
    timeouts = infer_timeouts(t.observations, t.next_observations, t.terminals)
    n, n_term, n_cut = len(t), int(t.terminals.sum()), int(timeouts.sum())
    if n >= 10 and n_cut + n_term > n // 2:
        raise DatasetError(
            f"Dataset file {path} has no 'timeouts', and its episode ends cannot be inferred: "
            f"next_observations[i] != observations[i+1] in {n_cut} of {n} rows, so the rows are not "
            "stored in episode order. Add a 'timeouts' array (True where an episode is cut without a "
            "terminal)."
        )
    warnings.warn(
        f"Dataset file {path} has no 'timeouts': inferred {n_cut} episode end(s) without a terminal "
        f"where next_observations[i] != observations[i+1] (besides {n_term} terminal(s)). "
        "Add a 'timeouts' array to the file to silence this.",
        DatasetWarning,
        stacklevel=3,
    )
    return timeouts
