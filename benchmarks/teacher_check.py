"""The teacher check on finished runs, and how well the world model ranks memoryless policies.

For every IPD run of ``--task`` under ``--runs`` this finds its stage-1 artifacts (world model
and IQL; for a seed without one, the finished stage-1 artifacts of that seed, e.g. from
``scripts/learn_models.py``), runs :func:`ipd.planning.teacher_check.teacher_check` exactly as
stage 3 does (same starts, horizon and seed), and prints the teacher's pessimistic model return
beside the data's mean episode return, both D4RL-normalised. With ``--policies`` it also runs
every memoryless policy checkpoint of that seed (the IQL actor, BC, 10%BC) closed loop in the
same world model and prints its model return (worst elite, mean elite) beside its real
evaluation score: the gate is only as good as that ranking. With ``--action-gap`` it also prints
two candidate gates that need no world model, on ``--gap-states`` dataset states: the teacher's
action deviation from the data's actions (mean squared, and relative to the data's
per-dimension action variance) and its Q gain (Q(s, teacher) - Q(s, data) over mean |Q|, and
the share of states where it is positive). With ``--trust-quantiles`` it reruns the teacher (and
every ``--policies`` checkpoint) with each step's model uncertainty compared with that quantile
of U over the dataset (stage 2's acceptance threshold is the 0.95 one): the share of steps above
it, the *trusted* return (only the rewards of steps at or under it) of the worst elite, and
whether the check passes with it (``policy.teacher_check_trust_quantile``): a gate that does not
credit the model's optimism where the model has no data.
One JSON line per row; the last line is the wall time.

    python benchmarks/teacher_check.py --task hopper-medium [--policies iql,bc,bc10] [--action-gap]
    python benchmarks/teacher_check.py --task halfcheetah-medium-expert --trust-quantiles 0.95,0.99
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from ipd.data import read_hdf5
from ipd.data.sources import default_data_dir
from ipd.data.transitions import Transitions
from ipd.models.policies import load_policy
from ipd.models.uncertainty import dataset_quantiles
from ipd.models.value import IQLLearner
from ipd.models.world_model import EnsembleWorldModel
from ipd.planning.teacher_check import (
    teacher_check,
)
from ipd.tasks import get_task


def runs_by_label(runs: Path, task: str) -> list[dict]:
    return [json.loads(f.read_text()) for f in sorted((runs / task / "train").glob("*/*/metrics.json"))]


def stage1_by_seed(rows: list[dict], runs: Path, task: str) -> dict[int, tuple[str, str]]:
    """(world model, value) artifact folders of each seed, from its IPD runs (the first one found);
    seeds without an IPD run (``scripts/learn_models.py`` alone) from the finished artifacts whose
    config has that seed, when exactly one world model and one value function do."""
    out: dict[int, tuple[str, str]] = {}
    for m in rows:
        arts = m.get("artifacts", {})
        if m["algo"] == "ipd" and "world_model" in arts:
            out.setdefault(m["seed"], (arts["world_model"], arts["value"]))
    found = {stage: finished_artifacts_by_seed(runs / task / stage) for stage in ("world_model", "value")}
    for seed in set(found["world_model"]) & set(found["value"]) - set(out):
        wms, values = found["world_model"][seed], found["value"][seed]
        if len(wms) == 1 and len(values) == 1:
            out[seed] = (str(wms[0]), str(values[0]))
    return out


def finished_artifacts_by_seed(stage_dir: Path) -> dict[int, list[Path]]:
    out: dict[int, list[Path]] = {}
    for done in sorted(stage_dir.glob("*/DONE")):
        seed = yaml.safe_load((done.parent / "config.yaml").read_text()).get("seed")
        out.setdefault(int(seed), []).append(done.parent)
    return out


def teacher_action_gap(iql: IQLLearner, data: Transitions, states: int, seed: int) -> dict[str, float]:
    """How far the IQL actor's actions are from the data's, and what Q says it gains by them."""
    idx = np.random.default_rng(seed).choice(len(data.observations), states, replace=False)
    obs, act = data.observations[idx], data.actions[idx]
    with torch.inference_mode():
        teacher = np.asarray(iql.act(obs))
        q_teacher, q_data = np.asarray(iql.q(obs, teacher)), np.asarray(iql.q(obs, act))
    mse = float(((teacher - act) ** 2).mean())
    return {
        "action_mse": round(mse, 4),
        "action_mse_over_data_var": round(mse / float(act.var(0).mean()), 3),
        "q_gain_over_mean_abs_q": round(float((q_teacher - q_data).mean() / np.abs(q_data).mean()), 4),
        "share_q_teacher_above_data": round(float((q_teacher > q_data).mean()), 3),
    }


def checks_of(wm, act, data: Transitions, args: argparse.Namespace, seed: int, thresholds) -> list:
    """The check on ``act``, once per trust threshold (or once without any): the plain returns do
    not depend on the threshold, so the first check also gives the untrusted figures."""
    return [
        teacher_check(wm, act, data, args.horizon, args.starts, seed, threshold)
        for threshold in (list(thresholds.values()) or [None])
    ]


def trusted_rows(checks: list, thresholds: dict, norm) -> list[dict]:
    """One row per uncertainty quantile: the untrusted share, trusted return and verdict."""
    return [
        {
            "quantile": float(q), "threshold": round(threshold, 4),
            "untrusted_share": round(check.untrusted_share, 3),
            "trusted_worst_elite": norm(check.trusted_return), "passed": check.passed,
        }
        for (q, threshold), check in zip(thresholds.items(), checks, strict=True)
    ]  # fmt: skip


def memoryless_act(checkpoint: str):
    policy = load_policy(checkpoint).policy

    def act(states: torch.Tensor) -> torch.Tensor:
        policy.reset(len(states))
        return torch.as_tensor(np.asarray(policy.act(states.cpu().numpy())), dtype=torch.float32)

    return act


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True)
    p.add_argument("--runs", type=Path, default=Path("runs"))
    p.add_argument("--data", type=Path, default=None, help="the task's hdf5 (default: the generated one)")
    p.add_argument("--starts", type=int, default=100)
    p.add_argument("--horizon", type=int, default=1000)
    p.add_argument("--policies", default="", help="labels of memoryless runs to rank, e.g. iql,bc,bc10")
    p.add_argument("--action-gap", action="store_true", help="also the model-free candidate gates")
    p.add_argument("--gap-states", type=int, default=20000)
    p.add_argument("--trust-quantiles", default="", help="e.g. 0.95,0.99: U quantiles over the data")
    args = p.parse_args()
    t0 = time.perf_counter()
    task = get_task(args.task)
    data = read_hdf5(args.data or default_data_dir() / f"{args.task}.hdf5")
    rows = runs_by_label(args.runs, args.task)
    norm = lambda x: round(float(task.normalize_score(x)), 1)  # noqa: E731
    for seed, (wm_dir, value_dir) in sorted(stage1_by_seed(rows, args.runs, args.task).items()):
        wm = EnsembleWorldModel.load(Path(wm_dir) / "world_model.pt", terminal_fn=task.is_terminal_torch)
        iql = IQLLearner.load(Path(value_dir) / "iql.pt")
        thresholds = {}
        if args.trust_quantiles:
            thresholds = dataset_quantiles(wm, data, tuple(float(q) for q in args.trust_quantiles.split(",")))
        checks = checks_of(wm, iql.actor_prior(), data, args, seed, thresholds)
        check = checks[0]  # the gate as stage 3 runs it: judged by the plain return
        print(json.dumps({
            "seed": seed, "teacher": norm(check.teacher_return), "teacher_mean_elite":
            norm(check.teacher_return_mean_elite), "data": norm(check.data_return),
            "passed": check.teacher_return > check.data_return,
        }), flush=True)  # fmt: skip
        for row in trusted_rows(checks, thresholds, norm):
            print(json.dumps({"seed": seed, "label": "teacher", **row}), flush=True)
        if args.action_gap:
            gap = teacher_action_gap(iql, data, min(args.gap_states, len(data.observations)), seed)
            print(json.dumps({"seed": seed, **gap}), flush=True)
        if not args.policies:
            continue
        for m in rows:
            if m["seed"] != seed or m.get("label") not in args.policies.split(","):
                continue
            policy_checks = checks_of(wm, memoryless_act(m["checkpoint"]), data, args, seed, thresholds)
            print(json.dumps({  # the check's own starts and horizon, on this policy
                "seed": seed, "label": m["label"], "real": round(m["normalized_score"], 1),
                "model_worst_elite": norm(policy_checks[0].teacher_return),
                "model_mean_elite": norm(policy_checks[0].teacher_return_mean_elite),
            }), flush=True)  # fmt: skip
            for row in trusted_rows(policy_checks, thresholds, norm):
                print(json.dumps({"seed": seed, "label": m["label"], **row}), flush=True)
    print(json.dumps({"wall_time_s": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
