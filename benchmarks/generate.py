"""Dataset generator: throughput against a one-env gymnasium loop, and CPU independence.

Throughput (default). Both sides collect the same task with the same shipped behaviour policy,
in the same process, on one thread:

* baseline: the straightforward loop D4RL's collection used: one gymnasium env, ``env.step``
  per transition, a float32 numpy forward of the policy per step, ``rng.standard_normal`` noise;
* ipd: :func:`ipd.generate.make_dataset` (``--num-envs`` envs stepped together, one batched
  CPU-independent policy forward per step, the hdf5 write included).

    python benchmarks/generate.py                           # hopper-medium, 20k baseline vs 200k ipd
    python benchmarks/generate.py --size 1000000            # the full 1M-transition file

Dispatch check (``--dispatch``): do the bits of a build depend on the CPU? Each run builds the same
``--size`` transitions in a fresh process under settings that make numpy and OpenBLAS take the code
paths of other CPUs (``OPENBLAS_CORETYPE`` picks BLAS kernels as on older cores,
``NPY_DISABLE_CPU_FEATURES=X86_V3`` the non-AVX2 loops of exp/tanh), once with ipd's exact policy
and once with the float32 forward the reference builder used (same envs, same collection). It prints
the fingerprint of each build: equal fingerprints under every setting mean a CPU-independent build.

    python benchmarks/generate.py --dispatch --size 50000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

DISPATCH_SETTINGS = {
    "default": {},
    "blas=Prescott": {"OPENBLAS_CORETYPE": "Prescott"},
    "blas=Sandybridge": {"OPENBLAS_CORETYPE": "Sandybridge"},
    "numpy without AVX2": {"NPY_DISABLE_CPU_FEATURES": "X86_V3"},
}


class Float32Policy:
    """The reference builder's forward: float32 BLAS, numpy exp/tanh, ziggurat normals."""

    def __init__(self, path: str, seed: int) -> None:
        with np.load(path) as z:
            self.w = {k: z[k].astype(np.float32) for k in z.files}
        self.rng = np.random.default_rng(seed)

    def reset(self, num_envs: int) -> None:
        pass

    def observe(self, rewards, dones) -> None:
        pass

    def act(self, obs: np.ndarray) -> np.ndarray:
        w, h = self.w, np.asarray(obs, np.float32)
        for i in (0, 1):
            h = np.maximum(h @ w[f"W{i}"].T + w[f"b{i}"], 0.0)
        mu = h @ w["Wmu"].T + w["bmu"]
        std = np.exp(np.clip(h @ w["Wls"].T + w["bls"], -20, 2))
        return np.tanh(mu + std * self.rng.standard_normal(mu.shape)).astype(np.float32)


def one_env_loop(task, steps: int, seed: int = 0) -> float:
    """Transitions/s of the one-env gymnasium loop (rows stored as a builder would)."""
    from ipd.envs import make_task_env
    from ipd.generate.assets import policy_path

    env = make_task_env(task)  # the env BatchedLocomotion reproduces, task.env_kwargs included
    policy = Float32Policy(str(policy_path(task.env.name, task.level)), seed)
    rows = np.zeros((steps, 2 * task.obs_dim + task.act_dim + 1), np.float32)
    obs, _ = env.reset(seed=seed)
    t0 = time.perf_counter()
    for i in range(steps):
        a = policy.act(obs[None])[0]
        nxt, r, term, trunc, _ = env.step(a)
        rows[i] = np.concatenate([obs, a, [r], nxt])
        obs = env.reset()[0] if term or trunc else nxt
    return steps / (time.perf_counter() - t0)


def throughput(args) -> None:
    from ipd.generate import make_dataset
    from ipd.tasks import get_task

    task = get_task(args.task)
    base = one_env_loop(task, args.baseline_steps)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        make_dataset(task, size=args.size, out_dir=tmp, num_envs=args.num_envs, progress=False)
        ours = args.size / (time.perf_counter() - t0)
    print(f"{task.name}, one thread, {os.cpu_count()} cores visible")
    print(f"  one-env gymnasium loop : {base:8.0f} transitions/s ({args.baseline_steps} transitions)")
    size = f"{args.size} transitions, {args.num_envs} envs"
    print(f"  ipd make_dataset       : {ours:8.0f} transitions/s ({size})")
    print(f"  ratio                  : {ours / base:8.2f}x")
    print(f"  1M transitions         : {1e6 / ours / 60:5.1f} min (baseline {1e6 / base / 60:.1f} min)")


_CHILD = """
import sys, numpy as np
from ipd.artifacts import dataset_fingerprint
from ipd.data.transitions import Transitions
from ipd.generate.collect import collect
from ipd.generate.locomotion import BatchedLocomotion
from ipd.generate.behaviour import TanhGaussianMLP
from ipd.generate.assets import policy_path
from ipd.generate.make import part_seed
sys.path.insert(0, "benchmarks")
from generate import Float32Policy
from ipd.tasks import get_task
task, size, kind = get_task(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
seed = part_seed(0, task.env.name, task.level)
path = policy_path(task.env.name, task.level)
policy = TanhGaussianMLP.from_file(path, seed) if kind == "exact" else Float32Policy(str(path), seed)
got = collect(BatchedLocomotion(task, 32), policy, size, seed + 1, progress=False)
print(dataset_fingerprint(Transitions(**got.arrays)), float(got.episode_returns.mean()))
"""


def dispatch(args) -> None:
    print(f"{args.task}, {args.size} transitions per build; fingerprint (mean episode return)")
    print(f"{'setting':22s} {'exact (ipd)':30s} {'float32 (reference builder)':30s}")
    seen: dict[str, set] = {"exact": set(), "float32": set()}
    for name, extra in DISPATCH_SETTINGS.items():
        cells = []
        for kind in ("exact", "float32"):
            env = {**os.environ, **extra}
            out = subprocess.run(
                [sys.executable, "-W", "ignore", "-c", _CHILD, args.task, str(args.size), kind],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            seen[kind].add(out[0])
            cells.append(f"{out[0]} ({float(out[1]):.1f})")
        print(f"{name:22s} {cells[0]:30s} {cells[1]:30s}")
    for kind, prints in seen.items():
        verdict = "identical under every setting" if len(prints) == 1 else f"{len(prints)} different builds"
        print(f"{kind}: {verdict}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="hopper-medium")
    ap.add_argument("--size", type=int, default=200_000)
    ap.add_argument("--baseline-steps", type=int, default=20_000)
    ap.add_argument("--num-envs", type=int, default=32)
    ap.add_argument("--dispatch", action="store_true", help="check CPU independence instead of speed")
    args = ap.parse_args()
    dispatch(args) if args.dispatch else throughput(args)


if __name__ == "__main__":
    main()
