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
import hashlib
import json
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ipd.data import Transitions
from ipd.io import atomic_write_json, atomic_write_text, file_lock

DONE = "DONE"


def config_hash(config: Any, length: int = 12) -> str:
    """Stable short hash of a JSON-able config (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


# Keys added after artifacts were stored: left out of their stage's hash at these values, so the
# stored artifacts stay valid (a key at any other value is hashed as usual).
HASH_NEUTRAL = {
    "augment": {"dynamics": "model", "acceptance": "sampled", "min_relative_improvement": 0.0},
    "value": {"actor_lr_schedule_updates": None},
    "policy": {"teacher_check_trust_quantile": None},
}


def without_neutral(section: str, plain: dict) -> dict:
    """``plain`` (a config section) without the keys that sit at their hash-neutral value."""
    neutral = HASH_NEUTRAL.get(section, {})
    return {k: v for k, v in plain.items() if not (k in neutral and v == neutral[k])}


def augment_hash_config(augment: dict) -> tuple[dict, bool]:
    """The ``augment`` section as stage 2 hashes it, and the ``simulator_check`` switch: the checked
    arm derives from the model-only artifact, whose hash leaves the switch out."""
    plain = without_neutral("augment", augment)
    simulator_check = bool(plain.pop("simulator_check", False))
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
        """Write metrics, then the DONE marker (last, atomically) holding every file's SHA-256."""
        atomic_write_json(self.path / "metrics.json", metrics)
        sums = {f.name: file_sha256(f) for f in sorted(self.path.iterdir()) if _is_content(f)}
        atomic_write_text(self.path / DONE, json.dumps({"sha256": sums}, indent=1, sort_keys=True) + "\n")

    def problems(self) -> list[str]:
        """What makes a finished artifact unusable: a file missing or changed since ``finish``
        (an artifact finished before checksums were recorded is trusted as it is)."""
        try:
            sums = json.loads((self.path / DONE).read_text()).get("sha256", {})
        except (OSError, ValueError, AttributeError):
            return []  # the earlier "ok" marker: nothing recorded to check against
        out = []
        for name, digest in sums.items():
            f = self.path / name
            if not f.is_file():
                out.append(f"{name} is missing")
            elif file_sha256(f) != digest:
                out.append(f"{name} changed since the stage finished")
        return out


def _is_content(f: Path) -> bool:
    return f.is_file() and f.name != DONE and not f.name.startswith(".")


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class ArtifactStore:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().resolve()

    def artifact(self, task: str, stage: str, config: dict) -> Artifact:
        """The (maybe not yet built) artifact for this stage config; writes config.yaml."""
        return _prepared(Artifact(self.root / task / stage / config_hash(config), config))

    @contextlib.contextmanager
    def lock(self, artifact: Artifact) -> Iterator[None]:
        """Exclusive lock so that parallel runs never build the same artifact twice. The lock file
        lives outside the artifact (``<root>/.locks/<task>/<stage>/<hash>.lock``), so moving a
        corrupt artifact aside keeps it. It is an ``fcntl.flock``: on a cluster, the runs must
        share a filesystem whose locks work across nodes (NFSv4, Lustre or GPFS with locking on)."""
        rel = artifact.path.relative_to(self.root)
        with file_lock(self.root / ".locks" / rel.parent / f"{rel.name}.lock"):
            yield

    def reusable(self, artifact: Artifact, stage: str) -> bool:
        """Whether a finished, intact artifact can be reused (call under :meth:`lock`). A finished
        artifact that fails its checksums is moved aside (``<hash>.corrupt-<time>``) with a warning,
        and an empty one takes its place: the stage then builds it again."""
        if not artifact.done:
            return False
        problems = artifact.problems()
        if not problems:
            print(f"[ipd] {stage}: reusing finished artifact {artifact.path}")
            return True
        aside = artifact.path.with_name(f"{artifact.hash}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(artifact.path, aside)
        warnings.warn(
            f"{stage}: the finished artifact {artifact.path} is damaged ({'; '.join(problems)}). "
            f"Moved it aside to {aside} and building the stage again.",
            stacklevel=2,
        )
        _prepared(artifact)
        return False


def _prepared(artifact: Artifact) -> Artifact:
    """Create the artifact's folder and its ``config.yaml`` if missing."""
    artifact.path.mkdir(parents=True, exist_ok=True)
    cfg_file = artifact.file("config.yaml")
    if not cfg_file.exists():
        import yaml

        plain = json.loads(json.dumps(artifact.config, default=str))
        atomic_write_text(cfg_file, yaml.safe_dump(plain, sort_keys=True))
    return artifact


def dataset_fingerprint(t: Transitions) -> str:
    """Cheap content hash: sizes plus a strided sample of the arrays."""
    h = hashlib.sha256()
    stride = max(1, len(t) // 4096)
    for arr in (t.observations[::stride], t.actions[::stride], t.rewards, t.terminals, t.timeouts):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update(str((len(t), t.obs_dim, t.act_dim)).encode())
    return h.hexdigest()[:16]
