"""What value tokens do stage 2's stitched trajectories attach to the dataset's own actions?

A stitched trajectory copies up to ``context - 1`` dataset steps (the *prefix*) before its
imagined tail. Its rows keep the dataset's states and actions, but their token G_t now sums the
imagined rewards and bootstraps the value function at the imagined end state. If the model and V
are wrong together there, the copied actions are relabelled with a return they do not earn, and
the policy learns that a high token asks for those actions.

For a finished stage-2 artifact this rebuilds the tokens stage 3 trains on (``policy.condition=
value``, undiscounted G_t, the IQL bootstrap or with ``--bootstrap data`` the data head of
``policy.token_bootstrap=data``; :func:`ipd.tokens.conditioning_tokens`) and, for
every prefix row, compares its token with the token of the same state on its original row (matched
by exact observation). Prints one JSON line.

    python benchmarks/stitched_tokens.py --artifact runs/halfcheetah-medium-expert/augment/<hash>
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import yaml

from ipd.data import Trajectories, read_hdf5
from ipd.models.value import IQLLearner
from ipd.tokens import conditioning_tokens, data_bootstrap


def quantiles(x: np.ndarray) -> list[float]:
    return [round(float(v), 1) for v in np.quantile(x, [0.1, 0.5, 0.9])] if len(x) else []


def prefix_rows_and_originals(
    data, is_original: np.ndarray, imagined: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(prefix rows, their original rows) matched by exact observation; unmatched rows dropped."""
    original = np.flatnonzero(is_original)
    prefix = np.flatnonzero(~is_original & ~imagined)
    index = {data.observations[r].tobytes(): r for r in original}
    match = np.array([index.get(data.observations[r].tobytes(), -1) for r in prefix], dtype=np.int64)
    return prefix[match >= 0], match[match >= 0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", type=Path, required=True, help="runs/<task>/augment/<hash>")
    p.add_argument(
        "--token-gamma", type=float, default=1.0, help="the token's discount (stage 3's default: 1)"
    )
    p.add_argument("--episode-steps", type=int, default=1000, help="the policy's max_timestep")
    p.add_argument("--bootstrap", choices=("iql", "data"), default="iql", help="policy.token_bootstrap")
    p.add_argument("--seed", type=int, default=0, help="with --bootstrap data: the head's seed (the run's)")
    args = p.parse_args()
    t0 = time.perf_counter()
    conf = yaml.safe_load((args.artifact / "config.yaml").read_text())
    runs = args.artifact.resolve().parent.parent
    iql = IQLLearner.load(runs / "value" / conf["value_hash"] / "iql.pt")
    data = read_hdf5(args.artifact / "augmented.hdf5")
    traj = Trajectories.from_transitions(data)
    gamma = float(conf["planner"]["gamma"])
    boot = None
    if args.bootstrap == "data":  # DistillConfig's defaults: τ = 0.5, 20k updates
        boot, _ = data_bootstrap(traj, args.token_gamma, episode_steps=args.episode_steps, seed=args.seed)
    tokens = conditioning_tokens(traj, "value", iql, gamma, args.token_gamma, args.episode_steps, boot)
    rows = traj.transitions  # tokens are in this (trajectory) order
    is_original = np.asarray(rows.extras["start_index"]) < 0
    imagined = np.asarray(rows.extras["imagined"]).astype(bool)
    prefix, original = prefix_rows_and_originals(rows, is_original, imagined)
    gap = tokens[prefix] - tokens[original]
    print(json.dumps({
        "artifact": str(args.artifact), "bootstrap": args.bootstrap,
        "rows": len(rows), "original_rows": int(is_original.sum()),
        "prefix_rows": len(prefix), "imagined_rows": int(imagined.sum()),
        "token_original_rows_q10_50_90": quantiles(tokens[is_original]),
        "token_prefix_states_original_mean": float(tokens[original].mean()) if len(prefix) else None,
        "token_prefix_rows_mean": float(tokens[prefix].mean()) if len(prefix) else None,
        "prefix_minus_original_mean": float(gap.mean()) if len(gap) else None,
        "prefix_minus_original_q10_50_90": quantiles(gap),
        "token_imagined_rows_mean": float(tokens[imagined].mean()) if imagined.any() else None,
        "wall_time_s": round(time.perf_counter() - t0, 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
