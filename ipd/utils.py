"""Small shared helpers: seeding, device selection and chunked evaluation over big arrays."""

from __future__ import annotations

import platform
import random
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

import numpy as np
import torch


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) for reproducible runs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# Packages whose versions change results: the dataset builder's output depends on the MuJoCo
# version (two builds of hopper-medium with different episode counts were seen), and training
# numerics on torch/numpy.
RESULT_PACKAGES = ("ipd", "torch", "numpy", "gymnasium", "mujoco")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``): dataset
    builds and float results can differ between CPU kinds, so runs record it."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_versions() -> dict[str, str]:
    """Python's and :data:`RESULT_PACKAGES`' installed versions (``"absent"`` if not installed) and
    the CPU model, recorded with every run so scores can be traced to what made them."""
    versions = {"python": platform.python_version(), "cpu": cpu_model()}
    for name in RESULT_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


@dataclass(frozen=True)
class UnmetRequirement:
    """One requirement of ``distribution`` that this environment does not meet."""

    name: str
    found: str | None  # the installed version; None when not installed
    wanted: str  # the requirement as pip takes it, e.g. ``gymnasium[mujoco]>=1.1``
    distribution: str = "ipd"

    def __str__(self) -> str:
        have = (
            f"{self.name} is not installed"
            if self.found is None
            else f"{self.name} {self.found} is installed"
        )
        return f"{have}; {self.distribution} needs {self.wanted}"


def unmet_requirements(distribution: str = "ipd") -> list[UnmetRequirement]:
    """The installed ``distribution``'s own requirements (not its extras') that this environment does
    not meet; empty when all are met, or when ``distribution`` is not installed (a source tree used
    without ``pip install -e .``).

    Another package's pin can move a dependency below ipd's floor after ipd was installed (d3rlpy
    2.8.1 pins gymnasium 1.0.0, which lacks the vector evaluation's ``AutoresetMode``); without this
    check the run would train for its whole budget and fail at its first evaluation."""
    from packaging.requirements import Requirement  # noqa: PLC0415

    try:
        requires = metadata.requires(distribution) or []
    except metadata.PackageNotFoundError:
        return []
    problems = []
    for line in requires:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an extra's requirement, or one for another platform or Python
        extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
        wanted = f"{req.name}{extras}{req.specifier}"
        try:
            found = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            problems.append(UnmetRequirement(req.name, None, wanted, distribution))
            continue
        if not req.specifier.contains(found, prereleases=True):
            problems.append(UnmetRequirement(req.name, found, wanted, distribution))
    return problems


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available; anything else is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device} requested but CUDA is not available; use device=cpu or device=auto."
        )
    return dev


def apply_in_chunks(fn: Callable[..., object], *arrays: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """``fn`` over row-aligned ``arrays`` in chunks of ``chunk`` rows, concatenated as float32 ``[N]``.

    Keeps peak memory bounded when a network scores a million dataset rows; ``fn`` may return
    numpy arrays or tensors (anything ``np.asarray`` takes).
    """
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"apply_in_chunks: arrays have different lengths {[len(a) for a in arrays]}")
    parts = [
        np.asarray(fn(*(a[i : i + chunk] for a in arrays)), np.float32).reshape(-1)
        for i in range(0, n, chunk)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)
