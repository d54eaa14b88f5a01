"""How much of a value-conditioned policy's score is its inference token? Re-evaluate, same env seeds.

IPD's stage-3 policy asks, at every step, for the return V*(s_t) its bundled value head
predicts (``policy.condition=value``). This script takes the finished train runs of one
(task, label), and evaluates each run's checkpoint twice on the run's own evaluation seeds:

1. ``learned``: as trained, with its V*(s_t) token; this must reproduce the run's score
   (printed side by side as a check that the re-evaluation is the same experiment);
2. ``target``: the same network with plain DT's hand-tuned token, a target return (default: the
   task config's ``target_return``, the DT paper's value) decremented by the rewards received.

If ``target`` scores much higher, the learned token is what holds the policy back; if they
match, the score is set by what the network learned (data, objective, seed). The ratio printed
is learned / target; throughput is env steps per second of the re-evaluations.

    python benchmarks/inference_token.py --task hopper-medium --label ipd-3k
    python benchmarks/inference_token.py --task hopper-medium --label ipd-noaug-3k --target 3000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from ipd.evaluation import evaluate_policy
from ipd.models.policies import DTPolicy, load_policy
from ipd.rundir import finished_runs
from ipd.tasks import get_task

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def task_target_return(task: str) -> float:
    path = CONFIGS / "task" / f"{task}.yaml"
    if not path.is_file():
        raise SystemExit(f"error: no task config {path}; pass --target explicitly")
    return float(yaml.safe_load(path.read_text())["target_return"])


def with_target_return(policy: DTPolicy, target: float) -> DTPolicy:
    """The same network and token encoding, conditioned like plain DT (decrementing target)."""
    cond = dataclasses.replace(policy.cond, mode="rtg", target_return=target)
    return DTPolicy(policy.model, policy.state_normalizer, cond, None, policy.device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=Path("runs"))
    ap.add_argument("--task", default="hopper-medium")
    ap.add_argument("--label", default="ipd-3k", help="logging.label of the runs (default: ipd-3k)")
    ap.add_argument("--target", type=float, default=None, help="target return (default: the task's)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    runs = [r for r in finished_runs(args.runs) if r["task"] == args.task and r["label"] == args.label]
    runs = sorted((r for r in runs if r.get("checkpoint") and r.get("eval")), key=lambda r: r["seed"])
    if not runs:
        raise SystemExit(f"error: no finished '{args.label}' runs of {args.task} under {args.runs}")
    target = args.target if args.target is not None else task_target_return(args.task)
    task = get_task(args.task)
    rows, steps, t0 = [], 0, time.perf_counter()
    for run in runs:
        policy = load_policy(run["checkpoint"]).policy
        if not isinstance(policy, DTPolicy) or policy.cond.mode != "value":
            raise SystemExit(f"error: {run['checkpoint']} is not a value-conditioned DT policy")
        episodes, seed = int(run["eval"]["episodes"]), int(run["eval"]["seed"])
        scores = {}
        for name, p in (("learned", policy), ("target", with_target_return(policy, target))):
            res = evaluate_policy(p, task, episodes, seed=seed, progress=False)
            scores[name], steps = res.normalized_mean, steps + int(res.lengths.sum())
        rows.append({"seed": run["seed"], "recorded": run["normalized_score"], **scores})
        print(
            f"seed {run['seed']}: recorded {run['normalized_score']:.1f}  learned {scores['learned']:.1f}"
            f"  target {target:g}: {scores['target']:.1f}"
        )
    learned, tuned = (float(np.mean([r[k] for r in rows])) for k in ("learned", "target"))
    wall = time.perf_counter() - t0
    print(
        f"mean over {len(rows)} seeds: learned {learned:.1f}  target {tuned:.1f}  "
        f"ratio learned/target {learned / max(tuned, 1e-9):.2f}  ({steps / wall:.0f} env steps/s)"
    )
    summary = {
        "task": args.task,
        "label": args.label,
        "target_return": target,
        "learned_mean": learned,
        "target_mean": tuned,
        "runs": rows,
        "env_steps_per_s": steps / wall,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
