"""Are accepted imagined rollouts real improvements? Replay them in the real MuJoCo env.

Takes a finished Stage-2 artifact (``runs/<task>/augment/<hash>/augmented.hdf5``) and, for a
seeded sample of its accepted imagined continuations:

1. resets the real env to the start state with :func:`ipd.evaluation.reset_to_observation`
   (exact for the v4 locomotion envs: the observation is ``qpos[1:]`` and ``qvel``; the missing x
   position does not change rewards; a start whose velocity sits at the ±10 observation clip is
   reset approximately, with the clipped velocity, and reported as a separate group);
2. replays the *imagined action sequence* open loop and records the real return;
3. compares it with three references from the same state over the same number of steps:
   the model's predicted return, the dataset's own continuation, and uniformly random actions;
4. checks the reset itself: replaying the *dataset's actions* must reproduce the dataset rewards.

Returns are undiscounted L-step sums (stopping at a real termination) and, in brackets, the
augmenter's acceptance basis: ``Σ_k γ^k r_k + γ^L V(s_L)`` with the Stage-1 value (no bootstrap
after a termination), which is what it compared when it accepted the rollout. (Before 2026-12-06
the brackets added ``γ^L V(s_L)`` to the *undiscounted* sum; the improvements differ slightly.)
The model error is the state MSE between imagined and real trajectories, normalised by the
dataset's per-dimension state std. Prints a final JSON line.

    python benchmarks/augment.py --task hopper-medium                 # newest finished artifact
    python benchmarks/augment.py --artifact runs/hopper-medium/augment/<hash> --num 200
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from ipd.data import Trajectories, read_hdf5
from ipd.evaluation import make_eval_env
from ipd.models.value import IQLLearner
from ipd.models.world_model import EnsembleWorldModel
from ipd.planning.pessimism import member_returns
from ipd.simulator import replay_from_observation, reset_to_observation
from ipd.tasks import get_task


def newest_artifact(runs: Path, task: str) -> Path:
    done = sorted((runs / task / "augment").glob("*/DONE"), key=lambda p: p.stat().st_mtime)
    if not done:
        raise SystemExit(
            f"No finished augment artifact under {runs / task / 'augment'}: run "
            f"`python scripts/augment.py task={task}` first, or pass --artifact."
        )
    return done[-1].parent


def imagined_segments(data) -> list[dict]:
    """Each stitched trajectory's imagined tail: start row in the original data, actions, states."""
    traj = Trajectories.from_transitions(data)
    imagined = data.extras["imagined"].astype(bool)
    original = np.flatnonzero(~imagined & (data.extras["start_index"] < 0))
    orig_starts = Trajectories.from_transitions(data.subset(original)).starts
    segments = []
    for start, length in zip(traj.starts, traj.lengths, strict=True):
        rows = np.arange(start, start + length)[imagined[start : start + length]]
        if not len(rows):
            continue
        ep, t0 = int(data.extras["source_episode"][rows[0]]), int(data.extras["start_index"][rows[0]])
        segments.append(
            {
                "source_row": int(orig_starts[ep] + t0),
                "actions": data.actions[rows],
                "rewards": data.rewards[rows],
                "states": np.concatenate([data.observations[rows], data.next_observations[rows[-1:]]]),
                "terminal": bool(data.terminals[rows[-1]]),
            }
        )
    return segments


def replay(env, start_obs: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Real rewards [≤ len], visited states [len+1, obs] and termination of an open-loop action sequence."""
    states, rewards, terminated, _ = replay_from_observation(env, start_obs, actions)
    return np.asarray(rewards, np.float64), states, terminated


def dataset_continuation(
    data, traj: Trajectories, row: int, length: int
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Dataset actions and rewards for up to ``length`` steps from ``row`` (not crossing an episode end)."""
    ep = int(np.searchsorted(traj.starts, row, side="right") - 1)
    end = min(row + length, int(traj.starts[ep] + traj.lengths[ep]))
    rows = np.arange(row, end)
    return data.actions[rows], data.rewards[rows], bool(data.terminals[rows[-1]])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default=None, help="default: the artifact's task, else hopper-medium")
    p.add_argument("--runs", type=Path, default=Path("runs"))
    p.add_argument("--artifact", type=Path, default=None, help="augment artifact dir (default: newest)")
    p.add_argument("--num", type=int, default=200, help="accepted rollouts to replay")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--pessimism",
        action="store_true",
        help="also re-score each replayed rollout under every elite of the artifact's world model and "
        "split the report into rollouts that ensemble-min acceptance keeps and drops",
    )
    p.add_argument("--dump", type=Path, default=None, help="save the per-rollout columns to this .npz")
    p.add_argument(
        "--margins",
        type=lambda x: [float(v) for v in x.split(",")],
        default=None,
        help="with --pessimism: also report the exact resets that ensemble-min acceptance keeps at each of "
        "these relative margins (comma-separated, e.g. 0,0.02,0.05,0.1)",
    )
    args = p.parse_args()

    if args.artifact is not None:  # <runs>/<task>/augment/<hash>: the artifact names its task and store
        art = args.artifact
        task = get_task(args.task or art.resolve().parent.parent.name)
        args.runs = art.resolve().parent.parent.parent
    else:
        task = get_task(args.task or "hopper-medium")
        art = newest_artifact(args.runs, task.name)
    conf = yaml.safe_load((art / "config.yaml").read_text())
    gamma = float(conf["planner"]["gamma"])  # the discount the augmenter used to accept rollouts
    value_path = args.runs / task.name / "value" / conf["value_hash"] / "iql.pt"
    iql = IQLLearner.load(value_path, "cpu") if value_path.is_file() else None
    data = read_hdf5(art / "augmented.hdf5")
    original = data.subset(np.flatnonzero(data.extras["start_index"] < 0))
    orig_traj = Trajectories.from_transitions(original)
    state_std = original.observations.std(0) + 1e-6
    segments = imagined_segments(data)
    rng = np.random.default_rng(args.seed)
    picked = rng.permutation(len(segments))[: args.num]
    env = make_eval_env(task)
    act_lo, act_hi = env.action_space.low, env.action_space.high

    def bootstrap(rewards: np.ndarray, last: np.ndarray, terminated: bool) -> float:
        """The augmenter's basis: Σ_k γ^k r_k + γ^L V(s_L) (no bootstrap after a termination)."""
        ret = float((gamma ** np.arange(len(rewards)) * rewards).sum())
        if iql is None or terminated:
            return ret
        return ret + gamma ** len(rewards) * float(iql.value(np.asarray(last, np.float32)[None])[0])

    ensemble_min, continuation = (
        _ensemble_min_improvement(args.runs, task, conf, original, orig_traj, segments, picked, iql, gamma)
        if args.pessimism
        else (None, None)
    )
    rows, t0 = [], time.perf_counter()
    for i in picked:
        seg = segments[i]
        start = original.observations[seg["source_row"]]
        if not np.allclose(seg["states"][0], start, atol=1e-5):
            raise SystemExit(f"{art}: imagined segment {i} does not start at its dataset state")
        env.reset(seed=0)
        exact = reset_to_observation(env, start)
        length = len(seg["actions"])
        d_act, d_rew, d_term = dataset_continuation(original, orig_traj, seg["source_row"], length)
        d_replay = float(replay(env, start, d_act)[0].sum())
        real_rew, real_states, real_term = replay(env, start, seg["actions"])
        rand_rew, rand_states, rand_term = replay(
            env, start, rng.uniform(act_lo, act_hi, (length, len(act_lo)))
        )
        real, rand = float(real_rew.sum()), float(rand_rew.sum())
        n = min(len(real_states), len(seg["states"]))
        err = (((real_states[:n] - seg["states"][:n]) / state_std) ** 2).mean(-1)
        d_last = original.next_observations[seg["source_row"] + len(d_rew) - 1]
        model_ret = float(seg["rewards"].sum())
        rows.append(
            {
                "exact_reset": exact,
                "reset_error": abs(d_replay - float(d_rew.sum())) / len(d_rew),
                "model": model_ret,
                "model_max_step_reward": float(np.max(seg["rewards"])),
                "real": real,
                "dataset": float(d_rew.sum()),
                "random": rand,
                "model_boot": bootstrap(
                    np.asarray(seg["rewards"], np.float64), seg["states"][-1], seg["terminal"]
                ),
                "real_boot": bootstrap(real_rew, real_states[-1], real_term),
                "dataset_boot": bootstrap(np.asarray(d_rew, np.float64), d_last, d_term),
                "random_boot": bootstrap(rand_rew, rand_states[-1], rand_term),
                "real_terminated": real_term,
                "state_err_last": float(err[-1]),
                "state_err_mean": float(err[1:].mean()) if n > 1 else 0.0,
                "length": length,
                "ensemble_min_improvement": np.nan if ensemble_min is None else ensemble_min[len(rows)],
                "continuation": np.nan if continuation is None else continuation[len(rows)],
            }
        )
    wall = time.perf_counter() - t0
    if not rows:
        raise SystemExit(f"No accepted imagined rollouts in {art}.")
    col = {k: np.array([r[k] for r in rows], float) for k in rows[0]}
    exact = col["exact_reset"].astype(bool)
    if args.dump is not None:
        np.savez(args.dump, **col)
    summary = {
        "task": task.name,
        "artifact": str(art),
        "accepted_segments": len(segments),
        "replayed": len(rows),
        "mean_length": float(col["length"].mean()),
        "exact": summarise({k: v[exact] for k, v in col.items()}),
        "approximate": summarise({k: v[~exact] for k, v in col.items()}),
        "wall_time_s": wall,
        "env_steps_per_s": float(3 * col["length"].sum() / wall),
    }
    groups = [("exact", "exact reset"), ("approximate", "a velocity at the ±10 clip: approximate reset")]
    if ensemble_min is not None:  # the exact resets, split by what ensemble-min acceptance does
        margin = float(conf["augment"]["min_improvement"])
        relative = conf["augment"].get("min_relative_improvement", 0.0) if args.margins is None else 0.0
        kept = col["ensemble_min_improvement"] > margin + relative * np.abs(col["continuation"])
        summary["exact_kept_by_ensemble_min"] = summarise({k: v[exact & kept] for k, v in col.items()})
        summary["exact_dropped_by_ensemble_min"] = summarise({k: v[exact & ~kept] for k, v in col.items()})
        groups += [
            (
                "exact_kept_by_ensemble_min",
                f"exact reset, kept by ensemble-min acceptance (+{relative:g} relative)",
            ),
            ("exact_dropped_by_ensemble_min", "exact reset, dropped by ensemble-min acceptance"),
        ]
        for m in args.margins or []:  # screening: the kept share and its real gain per relative margin
            kept_m = exact & (col["ensemble_min_improvement"] > margin + m * np.abs(col["continuation"]))
            summary[f"exact_kept_at_relative_margin_{m:g}"] = summarise(
                {k: v[kept_m] for k, v in col.items()}
            )
            groups.append(
                (
                    f"exact_kept_at_relative_margin_{m:g}",
                    f"exact reset, worst elite beats the data by {m:g} x |continuation|",
                )
            )
    print(f"{task.name}: {len(rows)} accepted imagined rollouts replayed open loop in the real env")
    for name, why in groups:
        if summary[name]:
            report(summary[name], why)
    print(json.dumps(summary))


def _ensemble_min_improvement(runs, task, conf, original, orig_traj, segments, picked, iql, gamma):
    """Per picked segment: worst elite's discounted bootstrapped return minus the dataset's (the
    augmenter's comparison, ``augment.acceptance=ensemble_min``)."""
    from ipd.planning.augment import truncated_continuation

    wm = EnsembleWorldModel.load(
        runs / task.name / "world_model" / conf["world_model_hash"] / "world_model.pt",
        "cpu",
        task.is_terminal_torch,
    )
    segs = [segments[i] for i in picked]
    lengths = np.array([len(s["actions"]) for s in segs])
    actions = np.zeros((len(segs), lengths.max(), original.act_dim), np.float32)
    for j, s in enumerate(segs):
        actions[j, : lengths[j]] = s["actions"]
    starts = np.array([s["source_row"] for s in segs])
    pessimistic = member_returns(
        wm, iql.value_fn(), original.observations[starts], actions, lengths, gamma
    ).min(0)
    v_next = iql.value(original.next_observations)
    continuation = truncated_continuation(orig_traj, v_next, gamma, starts, lengths)
    return pessimistic - continuation, continuation


def summarise(col: dict[str, np.ndarray]) -> dict:
    if not len(col["real"]):
        return {}
    mean = {k: float(v.mean()) for k, v in col.items()}
    return {
        "n": len(col["real"]),
        "reset_check_reward_error_per_step": mean["reset_error"],
        **{f"return_{k}": mean[k] for k in ("model", "real", "dataset", "random")},
        **{f"bootstrapped_{k}": mean[f"{k}_boot"] for k in ("model", "real", "dataset", "random")},
        "real_beats_dataset_fraction": float((col["real_boot"] > col["dataset_boot"]).mean()),
        "real_improvement_mean": float((col["real_boot"] - col["dataset_boot"]).mean()),
        "predicted_improvement_mean": float((col["model_boot"] - col["dataset_boot"]).mean()),
        "ensemble_min_improvement_mean": float(np.nanmean(col["ensemble_min_improvement"]))
        if np.isfinite(col["ensemble_min_improvement"]).any()
        else None,
        "real_terminated_fraction": mean["real_terminated"],
        "model_state_err_mean": mean["state_err_mean"],
        "model_state_err_last": mean["state_err_last"],
    }


def report(s: dict, why: str) -> None:
    print(f"  {s['n']} rollouts with {why}")
    print(
        f"    reset check: replaying the dataset's actions reproduces its rewards to "
        f"{s['reset_check_reward_error_per_step']:.2e} per step"
    )
    print(
        f"    L-step return Σr (and Σγ^k r + γ^L V):  "
        f"model {s['return_model']:.1f} ({s['bootstrapped_model']:.1f})  "
        f"real {s['return_real']:.1f} ({s['bootstrapped_real']:.1f})  "
        f"dataset {s['return_dataset']:.1f} ({s['bootstrapped_dataset']:.1f})  "
        f"random {s['return_random']:.1f} ({s['bootstrapped_random']:.1f})"
    )
    print(
        f"    real beats dataset in {100 * s['real_beats_dataset_fraction']:.0f}% of rollouts; mean real "
        f"improvement {s['real_improvement_mean']:+.2f} vs predicted {s['predicted_improvement_mean']:+.2f}; "
        f"ratio real/dataset {s['bootstrapped_real'] / s['bootstrapped_dataset']:.3f}"
    )
    print(
        f"    model state error (normalised MSE): mean over steps {s['model_state_err_mean']:.4f}, "
        f"last step {s['model_state_err_last']:.4f}"
    )


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
