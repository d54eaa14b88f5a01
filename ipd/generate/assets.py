"""The data the generator ships (``ipd/generate/assets/``, origin and licence in its NOTICE.md).

- ``policies/<env>-<level>.npz``: behaviour-policy weights (:mod:`ipd.generate.behaviour` format).
- ``replay/<env>.npz``: SAC replay buffers for ``medium-replay``, *packed*: observations, actions
  and rewards as lzma-compressed, byte-shuffled column planes; ``next_observations`` dropped except
  at the rows where the next row does not continue the episode (episode ends and the last row),
  since elsewhere ``next_observations[i] == observations[i + 1]``; terminals and timeouts as the
  indices of those rows. :func:`read_replay` rebuilds the full buffer and checks it against the
  SHA-256 of the original arrays stored in the pack, so a rebuilt buffer is the original, bit for bit.
"""

from __future__ import annotations

import hashlib
import lzma
import os
from pathlib import Path

import numpy as np

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
REPLAY_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
_PLANES = ("observations", "actions", "rewards")


class AssetError(ValueError):
    """A shipped or user-given asset is missing or does not hold what it should."""


def read_npz(
    path: str | os.PathLike, what: str, error: type[Exception] = AssetError
) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file; a missing or unreadable one raises ``error`` (AssetError)
    naming ``what`` it should have been."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise error(f"{path} is not a readable .npz {what.lower()} ({exc}).") from exc


def policy_path(env: str, level: str) -> Path:
    return ASSETS_DIR / "policies" / f"{env}-{level}.npz"


def replay_path(env: str) -> Path:
    return ASSETS_DIR / "replay" / f"{env}.npz"


def buffer_sha256(data: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in REPLAY_KEYS:
        arr = np.ascontiguousarray(data[key])
        h.update(f"{key}:{arr.dtype.str}:{arr.shape}".encode() + arr.tobytes())
    return h.hexdigest()


def _pack_plane(arr: np.ndarray) -> np.ndarray:
    cols = np.ascontiguousarray(np.asarray(arr, np.float32).reshape(len(arr), -1).T)
    shuffled = cols.view(np.uint8).reshape(-1, 4).T.tobytes()  # byte planes compress better
    return np.frombuffer(lzma.compress(shuffled, preset=9), np.uint8)


def _unpack_plane(blob: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    rows = shape[0]
    width = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
    planes = np.frombuffer(lzma.decompress(blob.tobytes()), np.uint8).reshape(4, -1)
    cols = np.ascontiguousarray(planes.T).view(np.float32).reshape(width, rows)
    return np.ascontiguousarray(cols.T).reshape(shape)


def boundary_rows(data: dict[str, np.ndarray]) -> np.ndarray:
    """Rows whose next state is not the next row's observation: episode ends and the last row."""
    ends = np.asarray(data["terminals"], bool) | np.asarray(data["timeouts"], bool)
    ends[-1] = True
    return np.flatnonzero(ends).astype(np.int64)


def pack_replay(data: dict[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Write ``data`` (the six :data:`REPLAY_KEYS`) packed to ``path``; refuses a buffer whose
    ``next_observations`` cannot be rebuilt (a row inside an episode not followed by its next state)."""
    data = {k: np.asarray(data[k]) for k in REPLAY_KEYS}
    rows = boundary_rows(data)
    inner = np.ones(len(data["observations"]), bool)
    inner[rows] = False
    nxt, obs = data["next_observations"], data["observations"]
    if not np.array_equal(nxt[:-1][inner[:-1]], obs[1:][inner[:-1]]):
        raise AssetError("replay buffer: next_observations differ from the next row inside an episode")
    blobs = {f"{k}.xz": _pack_plane(data[k]) for k in _PLANES}
    shapes = {f"{k}.shape": np.asarray(data[k].shape, np.int64) for k in _PLANES}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        **blobs,
        **shapes,
        boundary_rows=rows,
        boundary_next_observations=np.asarray(nxt[rows], np.float32),
        terminal_rows=np.flatnonzero(data["terminals"]).astype(np.int64),
        timeout_rows=np.flatnonzero(data["timeouts"]).astype(np.int64),
        sha256=np.frombuffer(buffer_sha256(data).encode(), np.uint8),
    )
    return path


def read_replay(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A replay buffer as the six :data:`REPLAY_KEYS`: a packed one (checked against its SHA-256) or
    a plain ``.npz`` holding those arrays."""
    path = Path(path)
    files = read_npz(path, "Replay buffer")
    if "observations.xz" in files:
        return _unpacked(path, files)
    missing = [k for k in REPLAY_KEYS if k not in files]
    if missing:
        # next_observations too: at an episode end the next state is not the next row's observation
        raise AssetError(f"Replay buffer {path} lacks {missing}; it needs {', '.join(REPLAY_KEYS)}.")
    return {k: files[k] for k in REPLAY_KEYS}


def _unpacked(path: Path, files: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    try:
        data = {k: _unpack_plane(files[f"{k}.xz"], tuple(files[f"{k}.shape"])) for k in _PLANES}
        n = len(data["observations"])
        rows = files["boundary_rows"]
        nxt = np.empty_like(data["observations"])
        nxt[:-1] = data["observations"][1:]
        nxt[rows] = files["boundary_next_observations"]
        data["next_observations"] = nxt
        for key in ("terminals", "timeouts"):
            flags = np.zeros(n, bool)
            flags[files[key[:-1] + "_rows"]] = True
            data[key] = flags
        expected = files["sha256"].tobytes().decode()
    except (KeyError, ValueError, IndexError, lzma.LZMAError) as exc:
        raise AssetError(f"Packed replay buffer {path} is corrupt ({type(exc).__name__}: {exc}).") from exc
    if buffer_sha256(data) != expected:
        raise AssetError(f"Packed replay buffer {path} does not rebuild its original (SHA-256 differs).")
    return data
