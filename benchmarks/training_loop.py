"""IQL and DT updates/s of the training loop: a git revision (before) against the working tree (after).

Both sides run the same snippet (``IQLLearner.fit`` and ``SequenceTrainer.train`` on synthetic
hopper-sized data, default network sizes, progress bars off) in fresh one-thread processes; the
``before`` side imports ``ipd`` from ``git archive <rev>`` in a temp dir. Rounds alternate
before/after so that load drifts hit both alike; the median of the rounds is reported.

    python benchmarks/training_loop.py --before b9b7d45            # the commit before the one loop
    python benchmarks/training_loop.py --before b9b7d45 --rounds 5 --iql-updates 3000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SNIPPET = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
import numpy as np, torch
torch.set_num_threads(1)
from ipd.data import Trajectories, Transitions, Normalizer, SequenceSampler
from ipd.models.value import IQLConfig, IQLLearner
from ipd.models.transformer import DecisionTransformer, DTConfig
from ipd.models.sequence_trainer import SequenceTrainConfig, SequenceTrainer
iql_updates, dt_updates = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
n, obs, act = 50_000, 11, 3
ends = np.zeros(n, bool); ends[999::1000] = True
t = Transitions(rng.standard_normal((n, obs)), rng.uniform(-1, 1, (n, act)), rng.standard_normal(n),
                rng.standard_normal((n, obs)), np.zeros(n, bool), ends)
iql = IQLLearner(obs, act, IQLConfig(num_updates=iql_updates, log_every=1000))
iql.fit(t, num_updates=50, progress=False)  # warm-up
t0 = time.perf_counter(); iql.fit(t, progress=False)
iql_rate = (iql_updates - 50) / (time.perf_counter() - t0)
traj = Trajectories.from_transitions(t)
norm = Normalizer.fit(t.observations)
sampler = SequenceSampler(traj, 20, traj.returns_to_go, 1000.0, norm, None, 1000, 0, None)
trainer = SequenceTrainer(DecisionTransformer(obs, act, DTConfig()), sampler,
                          SequenceTrainConfig(num_updates=dt_updates, log_every=100, checkpoint_every=0))

t0 = time.perf_counter(); trainer.train(progress=False)
dt_rate = dt_updates / (time.perf_counter() - t0)
print(json.dumps({"iql": iql_rate, "dt": dt_rate}))
"""


def measure(pythonpath: Path, iql_updates: int, dt_updates: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", SNIPPET, str(iql_updates), str(dt_updates)],
        env=env, capture_output=True, text=True, check=True, cwd=pythonpath,
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="git revision with the code before the change")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iql-updates", type=int, default=2000)
    ap.add_argument("--dt-updates", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "archive", args.before, "ipd"], cwd=ROOT, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
        for _ in range(args.rounds):
            runs["before"].append(measure(Path(tmp), args.iql_updates, args.dt_updates))
            runs["after"].append(measure(ROOT, args.iql_updates, args.dt_updates))
    print(f"one thread, {args.rounds} alternating rounds, median updates/s (before = {args.before})")
    for key in ("iql", "dt"):
        before = statistics.median(r[key] for r in runs["before"])
        after = statistics.median(r[key] for r in runs["after"])
        print(f"  {key:4s} before {before:8.1f}   after {after:8.1f}   after/before {after / before:5.3f}")


if __name__ == "__main__":
    main()
