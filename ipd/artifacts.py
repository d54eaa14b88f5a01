"""Content-addressed artifact store for pipeline stages.

Layout (docs/design.md §3)::

    <root>/<task>/<stage>/<config-hash>/
        config.yaml      # the exact config that produced the artifact
        <files>          # model checkpoints, datasets ...
        metrics.json
        DONE             # written last: a stage is reused only when it is complete

The hash covers the stage's own config *and* the hashes of the artifacts it consumes,
so changing the world model invalidates the augmented data and the policy, while a
stage-3 sweep over ``policy.*`` reuses stage 1 and 2. Concurrent runs of the same
stage (a Hydra multirun) serialise on an ``fcntl`` lock file in the artifact dir: the
first one builds, the others wait and then reuse. Unfinished dirs keep their partial
checkpoints so an interrupted stage resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ipd.data import Transitions
from ipd.io import atomic_write_json, atomic_write_text

DONE = "DONE"


def config_hash(config: Any, length: int = 12) -> str:
    """Stable short hash of a JSON-able config (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


# Stage-2 keys added after artifacts were stored: left out of the hash at their default, so the
# stored stage-2 artifacts stay valid.
AUGMENT_HASH_NEUTRAL = {"dynamics": "model"}


def augment_hash_config(augment: dict) -> tuple[dict, bool]:
    """The ``augment`` section as stage 2 hashes it, and the ``simulator_check`` switch: the checked
    arm derives from the model-only artifact, whose hash leaves the switch out."""
    plain = dict(augment)
    simulator_check = bool(plain.pop("simulator_check", False))
    for key, default in AUGMENT_HASH_NEUTRAL.items():
        if plain.get(key) == default:
            plain.pop(key)
    return plain, simulator_check


@dataclass(frozen=True)
class Artifact:
    path: Path
    config: dict

    @property
    def hash(self) -> str:
        return self.path.name

    @property
    def done(self) -> bool:
        return (self.path / DONE).is_file()

    def file(self, name: str) -> Path:
        return self.path / name

    def metrics(self) -> dict:
        p = self.path / "metrics.json"
        return json.loads(p.read_text()) if p.is_file() else {}

    def finish(self, metrics: dict) -> None:
        """Write metrics, then the DONE marker (last, atomically)."""
        atomic_write_json(self.path / "metrics.json", metrics)
        atomic_write_text(self.path / DONE, "ok\n")


class ArtifactStore:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().resolve()

    def artifact(self, task: str, stage: str, config: dict) -> Artifact:
        """The (maybe not yet built) artifact for this stage config; writes config.yaml."""
        path = self.root / task / stage / config_hash(config)
        path.mkdir(parents=True, exist_ok=True)
        cfg_file = path / "config.yaml"
        if not cfg_file.exists():
            import yaml

            atomic_write_text(
                cfg_file, yaml.safe_dump(json.loads(json.dumps(config, default=str)), sort_keys=True)
            )
        return Artifact(path, config)

    @staticmethod
    @contextlib.contextmanager
    def lock(artifact: Artifact) -> Iterator[None]:
        """Exclusive lock so that parallel runs never build the same artifact twice."""
        with open(artifact.path / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def dataset_fingerprint(t: Transitions) -> str:
    """Cheap content hash: sizes plus a strided sample of the arrays."""
    h = hashlib.sha256()
    stride = max(1, len(t) // 4096)
    for arr in (t.observations[::stride], t.actions[::stride], t.rewards, t.terminals, t.timeouts):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update(str((len(t), t.obs_dim, t.act_dim)).encode())
    return h.hexdigest()[:16]
