"""Do accepted rollouts leave the agent better off in the real env? Follow one policy from their ends.

Stage 2 accepts a rollout of L steps when ``Σγ^k r_k + γ^L V(s_L)`` beats the dataset's
continuation over the same L steps. With exact dynamics (``augment.dynamics=simulator``) or real
tails (``augment.simulator_check=true``) the rewards are real, so the test can only be fooled
through the terminal value V(s_L). This script checks that last term in the real env: from each
accepted rollout's end state s_L, and from the dataset's state L steps after the same start
(same episode, when it is still running), it runs one fixed policy (the stage-1 IQL actor,
deterministic) for ``--steps`` steps, all states at once in
:class:`ipd.simulator.SimulatorDynamics`, and compares how long each survives and what it earns.

If V(s_L) > V(s'_L) but the rollout ends survive *shorter* under the same policy, the planner
found states the value function over-rates: the critic, not the dynamics, is what the
improvement rests on. Rollouts whose dataset continuation fell within L steps are reported as a
separate group (the rollout avoided a fall the data made). Prints a final JSON line.

    python benchmarks/rollout_ends.py --artifact runs/hopper-medium/augment/<hash> [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from augment import dataset_continuation, imagined_segments  # benchmarks/augment.py, the script's own dir

from ipd.data import Trajectories, read_hdf5
from ipd.models.value import IQLLearner
from ipd.simulator import SimulatorDynamics
from ipd.tasks import get_task


@torch.inference_mode()
def follow(
    dyn: SimulatorDynamics, iql: IQLLearner, states: np.ndarray, steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """Steps survived (≤ ``steps``) and return earned by the IQL actor from every row of ``states``."""
    obs = torch.as_tensor(states, dtype=torch.float32)
    alive = torch.ones(len(obs), dtype=torch.bool)
    survived = torch.zeros(len(obs))
    ret = torch.zeros(len(obs))
    for _ in range(steps):
        out = dyn.step(obs, torch.as_tensor(iql.act(obs.numpy()), dtype=torch.float32))
        ret += torch.where(alive, out.rewards, 0.0)
        survived += alive.float()
        alive &= ~out.terminals
        obs = out.next_states
        if not alive.any():
            break
    return survived.numpy(), ret.numpy()


def end_pairs(data, segments: list[dict]) -> dict[str, np.ndarray]:
    """For every segment that did not terminate: its end state, the dataset's state after as many
    steps from the same start, and whether the dataset's episode fell before that. Segments whose
    dataset episode reaches its time limit within the segment's length are left out (``cut``)."""
    original = data.subset(np.flatnonzero(data.extras["start_index"] < 0))
    traj = Trajectories.from_transitions(original)
    ends, data_ends, data_fell, cut = [], [], [], 0
    for seg in segments:
        if seg["terminal"]:
            continue
        row, length = seg["source_row"], len(seg["actions"])
        _, rewards, fell = dataset_continuation(original, traj, row, length)
        if len(rewards) < length and not fell:
            cut += 1
            continue
        ends.append(seg["states"][-1])
        data_ends.append(original.next_observations[row + len(rewards) - 1])
        data_fell.append(fell)
    return {
        "end": np.array(ends), "data_end": np.array(data_ends), "data_fell": np.array(data_fell, bool),
        "cut": cut,
    }  # fmt: skip


def group_summary(mask: np.ndarray, res: dict, steps: int) -> dict:
    if not mask.any():
        return {"n": 0}
    r = {k: v[mask] for k, v in res.items()}
    return {
        "n": int(mask.sum()),
        "V_end_rollout": float(r["v_end"].mean()),
        "V_end_data": float(r["v_data"].mean()),
        "survived_rollout": float(r["surv_end"].mean()),
        "survived_data": float(r["surv_data"].mean()),
        "full_rollout": float((r["surv_end"] >= steps).mean()),
        "full_data": float((r["surv_data"] >= steps).mean()),
        "return_rollout": float(r["ret_end"].mean()),
        "return_data": float(r["ret_data"].mean()),
        "rollout_survives_longer": float((r["surv_end"] > r["surv_data"]).mean()),
        "rollout_survives_shorter": float((r["surv_end"] < r["surv_data"]).mean()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", type=Path, required=True, help="runs/<task>/augment/<hash>")
    p.add_argument("--steps", type=int, default=200, help="steps to follow the policy from each end state")
    args = p.parse_args()
    art = args.artifact.resolve()
    task, runs = get_task(art.parent.parent.name), art.parent.parent.parent
    conf = yaml.safe_load((art / "config.yaml").read_text())
    if conf["augment"].get("dynamics", "model") != "simulator" and not conf.get("simulator_check"):
        print("note: this artifact's tails are the world model's; end states are imagined, not real")
    iql = IQLLearner.load(runs / task.name / "value" / conf["value_hash"] / "iql.pt", "cpu")
    data = read_hdf5(art / "augmented.hdf5")
    pairs = end_pairs(data, imagined_segments(data))
    if not len(pairs["end"]):
        raise SystemExit(f"{art}: no accepted rollout that did not terminate")
    dyn, t0 = SimulatorDynamics(task), time.perf_counter()
    surv_end, ret_end = follow(dyn, iql, pairs["end"], args.steps)
    surv_data, ret_data = follow(dyn, iql, pairs["data_end"], args.steps)
    res = {
        "v_end": np.asarray(iql.value(pairs["end"].astype(np.float32))),
        "v_data": np.asarray(iql.value(pairs["data_end"].astype(np.float32))),
        "surv_end": surv_end, "ret_end": ret_end, "surv_data": surv_data, "ret_data": ret_data,
    }  # fmt: skip
    fell = pairs["data_fell"]
    summary = {
        "task": task.name,
        "artifact": str(art),
        "steps": args.steps,
        "data_running": group_summary(~fell, res, args.steps),
        "data_fell": group_summary(fell, res, args.steps),
        "left_out_time_limit": pairs["cut"],
        "wall_time_s": time.perf_counter() - t0,
    }
    groups = (("data_running", "the dataset's episode still running"), ("data_fell", "the data fell"))
    for name, why in groups:
        g = summary[name]
        if g["n"]:
            print(
                f"{name} ({why}; n={g['n']}): V(end) rollout {g['V_end_rollout']:.1f} vs data "
                f"{g['V_end_data']:.1f}; IQL actor survives {g['survived_rollout']:.0f} vs "
                f"{g['survived_data']:.0f} of {args.steps} steps, returns {g['return_rollout']:.0f} vs "
                f"{g['return_data']:.0f}; rollout end survives longer in "
                f"{g['rollout_survives_longer']:.0%}, shorter in {g['rollout_survives_shorter']:.0%}"
            )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
