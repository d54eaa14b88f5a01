"""How much of a value-conditioned policy's score is its inference token? Re-evaluate, same env seeds.

IPD's stage-3 policy asks, at every step, for the return V*(s_t) its bundled value head
predicts (``policy.condition=value``). This script takes the finished train runs of one
(task, label), and evaluates each run's checkpoint twice on the run's own evaluation seeds:

1. ``learned``: as trained, with its V*(s_t) token; this must reproduce the run's score
   (printed side by side as a check that the re-evaluation is the same experiment);
2. ``target``: the same network with plain DT's hand-tuned token, a target return (default: the
   task config's ``target_return``, the DT paper's value) decremented by the rewards received.

3. ``timed`` / ``state`` (with ``--refit-head timed|state``): the same network with its V* head
   refitted on the run's own training tokens (same τ, updates and seed as its bundled head), with
   the episode step as an input (V*(s, t), ``policy.token_head_time=true``) or without (V*(s)),
   rebuilt from the run's value and augment artifacts: the other head than the run's own.
4. ``tau=<τ>`` (with ``--expectiles τ ...``): the same network with a head of the run's own kind
   refitted at another expectile τ: a less optimistic token (τ = 0.5 asks for the mean return
   the data reached from s_t, the run's 0.99 for nearly the best).

If ``target`` scores much higher, the learned token is what holds the policy back; if they
match, the score is set by what the network learned (data, objective, seed). The ratio printed
is learned / target; throughput is env steps per second of the re-evaluations.

    python benchmarks/inference_token.py --task hopper-medium --label ipd-3k
    python benchmarks/inference_token.py --task hopper-medium --label ipd-noaug-3k --target 3000
    python benchmarks/inference_token.py --task hopper-medium --label ipd-3k --refit-head state
    python benchmarks/inference_token.py --task halfcheetah-medium-expert --label ipd-alpha0 \
        --expectiles 0.9 0.7 0.5
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

from ipd.config import section
from ipd.data import Trajectories, load_dataset, read_hdf5
from ipd.distill import DistillConfig
from ipd.evaluation import evaluate_policy
from ipd.ledger import finished_runs
from ipd.models.policies import DTPolicy, load_policy
from ipd.models.value import IQLLearner
from ipd.models.value_head import ValueHeadConfig, fit_value_head
from ipd.tasks import get_task
from ipd.tokens import conditioning_tokens

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


def eval_num_envs(run: dict) -> int:
    """The env count the run evaluated with (recorded since EvalResult.num_envs; older runs: their
    config's eval.num_envs, which evaluate_policy caps at the episode count), so that the
    ``learned`` re-evaluation reproduces the recorded score."""
    if run["eval"].get("num_envs"):
        return int(run["eval"]["num_envs"])
    cfg = yaml.safe_load((Path(run["run_dir"]) / ".hydra" / "config.yaml").read_text())
    return int(cfg["eval"]["num_envs"])


@dataclasses.dataclass(frozen=True)
class TrainingTokens:
    """A run's stage-3 training trajectories and value tokens, rebuilt from its artifacts."""

    traj: Trajectories
    tokens: np.ndarray
    head_cfg: ValueHeadConfig  # the run's own bundled head: τ, updates, seed
    head_time: bool  # whether the run's own head is V*(s, t)
    max_timestep: int


def training_tokens(run: dict) -> TrainingTokens:
    """Rebuild ``run``'s training tokens (its dataset, G_t under its value function) once, so that
    every refitted head of the run is fitted to the same targets."""
    arts = run.get("artifacts") or {}
    if "value" not in arts or "policy" not in arts:
        raise SystemExit(
            f"error: {run['run_dir']} records no value/policy artifacts to rebuild its tokens from"
        )
    pol_cfg = yaml.safe_load((Path(arts["policy"]) / "config.yaml").read_text())["policy"]
    val_cfg = yaml.safe_load((Path(arts["value"]) / "config.yaml").read_text())["value"]
    dcfg = section({"policy": pol_cfg}, "policy", DistillConfig)  # the run's own stage-3 config
    if "augment" in arts and dcfg.use_augmented:
        dataset = read_hdf5(Path(arts["augment"]) / "augmented.hdf5")
    else:
        dataset = load_dataset(run["task"])
    iql = IQLLearner.load(Path(arts["value"]) / "iql.pt")
    traj = Trajectories.from_transitions(dataset)
    max_t = int(pol_cfg["model"]["max_timestep"])
    tokens = conditioning_tokens(traj, dcfg.condition, iql, float(val_cfg["gamma"]), dcfg.token_gamma, max_t)
    head_cfg = ValueHeadConfig(
        dcfg.token_expectile, num_updates=dcfg.token_head_updates, seed=int(run["seed"])
    )
    return TrainingTokens(traj, tokens, head_cfg, dcfg.token_head_time, max_t)


def refitted_head_policy(
    policy: DTPolicy, training: TrainingTokens, timed: bool, expectile: float
) -> DTPolicy:
    """``policy`` with a V* head refitted to the run's training tokens at ``expectile``:
    V*(s, t) if ``timed``, V*(s) if not."""
    cfg = dataclasses.replace(training.head_cfg, expectile=float(expectile))
    steps = training.traj.timesteps if timed else None
    obs = training.traj.transitions.observations
    head, _ = fit_value_head(obs, training.tokens, cfg, "cpu", False, steps, training.max_timestep)
    return DTPolicy(policy.model, policy.state_normalizer, policy.cond, head, policy.device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=Path("runs"))
    ap.add_argument("--task", default="hopper-medium")
    ap.add_argument("--label", default="ipd-3k", help="logging.label of the runs (default: ipd-3k)")
    ap.add_argument("--target", type=float, default=None, help="target return (default: the task's)")
    ap.add_argument("--seeds", type=int, nargs="*", default=None, help="only these seeds (default: all)")
    ap.add_argument(
        "--refit-head",
        choices=("timed", "state"),
        default=None,
        help="also evaluate with a refitted V*(s, t) (timed) or V*(s) (state) head",
    )
    ap.add_argument(
        "--expectiles",
        type=float,
        nargs="+",
        default=None,
        help="also evaluate with heads of the run's own kind refitted at these expectiles τ",
    )
    args = ap.parse_args()
    if args.expectiles and not all(0.0 < t < 1.0 for t in args.expectiles):
        ap.error(f"--expectiles must lie in (0, 1), got {args.expectiles}")
    torch.set_num_threads(1)
    runs = [r for r in finished_runs(args.runs) if r["task"] == args.task and r["label"] == args.label]
    runs = sorted((r for r in runs if r.get("checkpoint") and r.get("eval")), key=lambda r: r["seed"])
    runs = [r for r in runs if args.seeds is None or r["seed"] in args.seeds]
    if not runs:
        raise SystemExit(f"error: no finished '{args.label}' runs of {args.task} under {args.runs}")
    target = args.target if args.target is not None else task_target_return(args.task)
    task = get_task(args.task)
    rows, steps, t0 = [], 0, time.perf_counter()
    for run in runs:
        policy = load_policy(run["checkpoint"]).policy
        if not isinstance(policy, DTPolicy) or policy.cond.mode != "value":
            raise SystemExit(f"error: {run['checkpoint']} is not a value-conditioned DT policy")
        episodes, seed, num_envs = int(run["eval"]["episodes"]), int(run["eval"]["seed"]), eval_num_envs(run)
        scores = {}
        arms = [("learned", policy), ("target", with_target_return(policy, target))]
        training = training_tokens(run) if args.refit_head or args.expectiles else None
        if args.refit_head:
            own_tau = training.head_cfg.expectile
            refit = refitted_head_policy(policy, training, args.refit_head == "timed", own_tau)
            arms.append((args.refit_head, refit))
        for tau in args.expectiles or []:  # heads of the run's own kind
            arms.append((f"tau={tau:g}", refitted_head_policy(policy, training, training.head_time, tau)))
        for name, p in arms:
            res = evaluate_policy(p, task, episodes, num_envs, seed=seed, progress=False)
            scores[name], steps = res.normalized_mean, steps + int(res.lengths.sum())
        rows.append({"seed": run["seed"], "recorded": run["normalized_score"], **scores})
        print(
            f"seed {run['seed']}: recorded {run['normalized_score']:.1f}  learned {scores['learned']:.1f}"
            f"  target {target:g}: {scores['target']:.1f}"
            + (f"  refitted {args.refit_head} head: {scores[args.refit_head]:.1f}" if args.refit_head else "")
            + "".join(f"  {k}: {v:.1f}" for k, v in scores.items() if k.startswith("tau="))
        )
    learned, tuned = (float(np.mean([r[k] for r in rows])) for k in ("learned", "target"))
    wall = time.perf_counter() - t0
    print(
        f"mean over {len(rows)} seeds: learned {learned:.1f}  target {tuned:.1f}  "
        f"ratio learned/target {learned / max(tuned, 1e-9):.2f}  ({steps / wall:.0f} env steps/s)"
    )
    refit = float(np.mean([r[args.refit_head] for r in rows])) if args.refit_head else None
    if refit is not None:
        ratio = refit / max(learned, 1e-9)
        print(
            f"mean over {len(rows)} seeds: {args.refit_head} head {refit:.1f}  ratio to learned {ratio:.2f}"
        )
    summary = {
        "task": args.task,
        "label": args.label,
        "target_return": target,
        "learned_mean": learned,
        "target_mean": tuned,
        "refit_head": args.refit_head,
        "refit_mean": refit,
        "expectile_means": {
            f"{t:g}": float(np.mean([r[f"tau={t:g}"] for r in rows])) for t in args.expectiles or []
        },
        "runs": rows,
        "env_steps_per_s": steps / wall,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
