"""Does the inference head need the episode step? V*(s) vs V*(s, t) on a dataset's returns-to-go.

On the real rows of a D4RL-protocol dataset the undiscounted value token G_t is the return-to-go
(ipd/distill.py), which in a time-limited task depends on the steps left; MuJoCo observations do
not carry the step. This fits the 0.99-expectile head (``ipd.models.value_head``, the stage-3
default settings) twice on the dataset's G_t, once on s and once on (s, t), and prints per
100-step bin the largest G_t in the data, both heads' mean prediction, and the share of states
whose V*(s) exceeds every G_t seen in that bin (a token out of range for that timestep).
The ratio printed is V*(s) / V*(s, t) in the last bins; throughput is head updates per second.

    python benchmarks/value_head_time.py --task hopper-medium
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ipd.data import Trajectories, load_dataset
from ipd.models.value_head import ValueHeadConfig, fit_value_head


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="hopper-medium")
    ap.add_argument("--expectile", type=float, default=0.99)
    ap.add_argument("--updates", type=int, default=20_000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    traj = Trajectories.from_transitions(load_dataset(args.task))
    obs, steps = traj.transitions.observations, traj.timesteps
    returns = traj.returns_to_go.astype(np.float64)
    cfg = ValueHeadConfig(args.expectile, num_updates=args.updates, seed=0)
    t0 = time.perf_counter()
    state_head, _ = fit_value_head(obs, returns, cfg, progress=False)
    timed_head, _ = fit_value_head(obs, returns, cfg, progress=False, timesteps=steps, max_timestep=1000)
    wall = time.perf_counter() - t0
    with torch.no_grad():
        v_s = state_head(torch.as_tensor(obs)).numpy()
        v_st = timed_head(torch.as_tensor(obs), torch.as_tensor(steps)).numpy()
    print(f"{args.task}: {len(obs)} rows, tau {args.expectile}")
    print("steps      rows     max G_t  mean G_t  V*(s)  V*(s,t)  V*(s) > max G_t")
    for lo in range(0, int(steps.max()) + 1, 100):
        m = (steps >= lo) & (steps < lo + 100)
        if m.any():
            top = returns[m].max()
            print(
                f"{lo:3d}-{lo + 99:<3d} {m.sum():9d} {top:10.0f} {returns[m].mean():9.0f} "
                f"{v_s[m].mean():6.0f} {v_st[m].mean():8.0f} {(v_s[m] > top).mean():10.1%}"
            )
    late = steps >= 700
    print(
        f"steps >= 700: V*(s) / V*(s, t) = {v_s[late].mean() / max(v_st[late].mean(), 1e-9):.2f}; "
        f"{2 * args.updates / wall:.0f} head updates/s ({wall:.0f} s for both heads)"
    )


if __name__ == "__main__":
    main()
