"""Imagined-transition throughput of the batched MPPI/CEM planner vs planning one state at a time.

Both sides run the *same* :class:`ipd.planning.Planner` with the same world model in the same process:

* batched: one ``planner.plan(states[B])`` call (chunked by ``--max-batch`` start states);
* baseline: the straightforward per-state Python loop, ``planner.plan(states[i:i+1])`` for each i.
  The loop is timed on a subset of ``--loop-states`` states and its per-state cost is extrapolated to B
  (printed as such).

Throughput counts imagined model transitions: B * N * H * iterations per plan call.

The world model is a 7-member probabilistic ensemble MLP (4 x 200 SiLU, obs 11, act 3 as in Hopper;
members batched via einsum, one member sampled per row, Gaussian next-state/reward sample, disagreement
uncertainty, Hopper termination rule) with random weights (``--model random``), or the project's
untrained ``ipd.models.world_model.EnsembleWorldModel`` (``--model ensemble``, the default; planning cost
does not depend on the weights). Start states are real hopper-medium observations when
``$IPD_DATA_DIR/hopper-medium.hdf5`` (default ``~/.cache/ipd-datasets``) exists,
otherwise standard-normal vectors (planning cost does not depend on them).

    python benchmarks/planner.py                                  # CPU defaults, a few minutes
    python benchmarks/planner.py --rollout --threads 1            # stage-2 budget: executed steps/s

``--rollout`` times the stage-2 workload instead: receding-horizon ``planner.rollout`` from
``--rollout-starts`` states for ``--rollout-length`` executed steps, with an IQL-actor-sized prior
(a random 256-256 tanh MLP), at the ``cpu3k`` budget (N=32, H=5, 1 iteration, half the candidates
from the prior) against the earlier budget (N=64, H=5, 2 iterations, a quarter from the prior) in
the same run, and reports the minutes that 100k executed imagined steps take.
    python benchmarks/planner.py --batch-sizes 1 64 --loop-states 4   # smoke test
    python benchmarks/planner.py --device cuda --num-samples 256 --horizon 10 --iterations 4 --max-batch 1024
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from ipd.data.sources import default_data_dir
from ipd.models.base import ModelStep
from ipd.models.world_model import EnsembleWorldModel
from ipd.planning import Planner, PlannerConfig
from ipd.tasks import get_task
from ipd.utils import resolve_device


class RandomEnsembleModel:
    """Random-init ensemble dynamics with realistic cost; implements the DynamicsModel protocol."""

    def __init__(
        self,
        obs_dim: int = 11,
        act_dim: int = 3,
        members: int = 7,
        hidden: int = 200,
        layers: int = 4,
        device: torch.device | str = "cpu",
        seed: int = 0,
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        dims = [obs_dim + act_dim] + [hidden] * layers + [2 * (obs_dim + 1)]
        self.weights = [
            (torch.randn(members, i, o, generator=g) / math.sqrt(i)).to(device)
            for i, o in zip(dims[:-1], dims[1:], strict=True)
        ]
        self.biases = [torch.zeros(members, 1, o, device=device) for o in dims[1:]]
        self.members, self.obs_dim = members, obs_dim
        self.terminal = get_task("hopper-medium").is_terminal_torch

    def step(self, states: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None = None):
        x = torch.cat([states, actions], -1).unsqueeze(0).expand(self.members, -1, -1)  # [E, R, in]
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(b, x, w)  # einsum("eri,eio->ero") + bias, one batched GEMM
            if i < len(self.weights) - 1:
                x = torch.nn.functional.silu(x)
        mu, logvar = x.chunk(2, dim=-1)
        std = (0.5 * logvar.clamp(-10.0, 0.5)).exp()
        rows = torch.arange(states.shape[0], device=states.device)
        k = torch.randint(self.members, (states.shape[0],), device=states.device, generator=generator)
        eps = torch.randn(mu.shape[1:], device=states.device, generator=generator)
        sample = mu[k, rows] + std[k, rows] * eps
        next_states = states + sample[:, : self.obs_dim]
        uncertainty = (mu - mu.mean(0)).norm(dim=-1).amax(0)  # max member deviation from the mean
        return ModelStep(next_states, sample[:, -1], self.terminal(next_states), uncertainty)


def make_model(args: argparse.Namespace, obs_dim: int, act_dim: int, device: torch.device):
    """``ensemble``: an untrained ``EnsembleWorldModel`` (default config: 7 members, 4 x 200);
    ``random``: the stand-alone random ensemble MLP above."""
    if args.model == "ensemble":
        terminal = get_task("hopper-medium").is_terminal_torch
        model = EnsembleWorldModel(obs_dim, act_dim, terminal_fn=terminal).to(device).eval()
        return model, "ensemble"
    model = RandomEnsembleModel(obs_dim, act_dim, args.members, args.hidden, args.layers, device=device)
    return model, f"random(E={args.members},{args.layers}x{args.hidden})"


def start_states(n: int, obs_dim: int, device: torch.device) -> tuple[torch.Tensor, str]:
    path = default_data_dir() / "hopper-medium.hdf5"
    if path.exists():
        import h5py  # noqa: PLC0415

        with h5py.File(path, "r") as f:
            obs = np.asarray(f["observations"][: max(n, 1) * 10 : 10], dtype=np.float32)
        if len(obs) >= n and obs.shape[1] == obs_dim:
            return torch.from_numpy(obs[:n]).to(device), "hopper-medium observations"
    return torch.randn(n, obs_dim, generator=torch.Generator().manual_seed(0)).to(device), "randn"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCK = time.perf_counter


def timed(fn, device: torch.device, repeats: int = 1) -> float:
    sync(device)
    t0 = CLOCK()
    for _ in range(repeats):
        fn()
    sync(device)
    return (CLOCK() - t0) / repeats


def rollout_benchmark(model, args, device: torch.device, obs_dim: int, act_dim: int) -> None:
    """Executed imagined steps per second of receding-horizon rollouts (the stage-2 cost)."""
    gen = torch.Generator().manual_seed(0)
    prior_net = torch.nn.Sequential(
        torch.nn.Linear(obs_dim, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, act_dim),
        torch.nn.Tanh(),
    ).to(device)
    value_net = torch.nn.Sequential(
        torch.nn.Linear(obs_dim, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 1),
    ).to(device)
    prior = lambda s: prior_net(s)  # noqa: E731
    value = lambda s: value_net(s).squeeze(-1)  # noqa: E731
    budgets = {
        "previous (N=64 H=5 x2, prior 0.25)": dict(
            num_samples=64, horizon=5, iterations=2, prior_fraction=0.25
        ),
        "cpu3k (N=32 H=5 x1, prior 0.5)": dict(num_samples=32, horizon=5, iterations=1, prior_fraction=0.5),
    }
    states, src = start_states(args.rollout_starts, obs_dim, device)
    results = {}
    for name, kw in budgets.items():
        cfg = PlannerConfig(num_elites=8, max_batch=args.max_batch, seed=0, **kw)
        planner = Planner(model, cfg, act_dim, value_fn=value, prior=prior)
        planner.rollout(states[:2], 2, generator=gen)  # warm-up
        with torch.no_grad():
            t = timed(lambda p=planner: p.rollout(states, args.rollout_length, generator=gen), device)
        steps = args.rollout_starts * args.rollout_length
        results[name] = {"executed_steps_per_s": steps / t, "minutes_per_100k": 1e5 / (steps / t) / 60}
        print(
            f"{name}: {steps / t:.1f} executed steps/s -> "
            f"{results[name]['minutes_per_100k']:.1f} min per 100k"
        )
    base, new = (results[k]["executed_steps_per_s"] for k in budgets)
    print(f"cpu3k vs previous budget: x{new / base:.2f} executed steps/s (start states: {src})")
    print(
        json.dumps({"benchmark": "planner-rollout", "threads": torch.get_num_threads(), "results": results})
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", choices=["ensemble", "random"], default="ensemble")
    p.add_argument("--method", choices=["mppi", "cem"], default="mppi")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64, 1024, 8192])
    p.add_argument("--num-samples", type=int, default=32, help="N candidates per state (CPU-sized default)")
    p.add_argument("--num-elites", type=int, default=8)
    p.add_argument("--horizon", type=int, default=5)
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--max-batch", type=int, default=64, help="start states per chunk (64 suits CPU caches)")
    p.add_argument("--members", type=int, default=7, help="random model: ensemble members")
    p.add_argument("--hidden", type=int, default=200, help="random model: hidden width")
    p.add_argument("--layers", type=int, default=4, help="random model: hidden layers")
    p.add_argument("--loop-states", type=int, default=16, help="states timed in the per-state baseline")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    p.add_argument("--rollout", action="store_true", help="time stage-2 rollouts (executed steps/s)")
    p.add_argument("--rollout-starts", type=int, default=512)
    p.add_argument("--rollout-length", type=int, default=10)
    p.add_argument(
        "--clock",
        choices=["wall", "process"],
        default="wall",
        help="process: CPU time of this process (robust to other jobs on a shared CPU; CPU device only)",
    )
    args = p.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "process" else time.perf_counter

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    obs_dim, act_dim = 11, 3
    model, model_kind = make_model(args, obs_dim, act_dim, device)
    if args.rollout:
        rollout_benchmark(model, args, device, obs_dim, act_dim)
        return
    cfg = PlannerConfig(
        method=args.method,
        horizon=args.horizon,
        num_samples=args.num_samples,
        num_elites=args.num_elites,
        iterations=args.iterations,
        max_batch=args.max_batch,
        uncertainty_threshold=None,
        seed=0,
    )
    planner = Planner(model, cfg, act_dim)
    states_all, src = start_states(max(args.batch_sizes), obs_dim, device)
    per_state = cfg.num_samples * cfg.horizon * cfg.iterations  # imagined transitions per start state
    print(
        f"device={device} threads={torch.get_num_threads()} clock={args.clock} model={model_kind} "
        f"method={cfg.method} "
        f"N={cfg.num_samples} H={cfg.horizon} iters={cfg.iterations} max_batch={cfg.max_batch} "
        f"start states: {src}"
    )
    planner.plan(states_all[:2])  # warm-up (allocator, kernels)

    # Per-state baseline: cost per state measured once on a subset, extrapolated to every B.
    n_loop = min(args.loop_states, len(states_all))

    def loop() -> None:
        for i in range(n_loop):
            planner.plan(states_all[i : i + 1])

    loop_per_state = timed(loop, device) / n_loop
    print(
        f"per-state loop baseline: timed on {n_loop} states ({loop_per_state * 1e3:.2f} ms/state), "
        "extrapolated linearly to each B below"
    )

    rows = []
    for b in args.batch_sizes:
        states = states_all[:b]
        t_batched = timed(lambda states=states: planner.plan(states), device, repeats=3 if b <= 64 else 1)
        t_loop = loop_per_state * b
        row = {
            "B": b,
            "batched_s": t_batched,
            "loop_s_extrapolated": t_loop,
            "batched_transitions_per_s": b * per_state / t_batched,
            "loop_transitions_per_s": b * per_state / t_loop,
            "speedup": t_loop / t_batched,
        }
        rows.append(row)
        print(
            f"B={b:6d}  batched {t_batched:8.3f}s ({row['batched_transitions_per_s']:.3e} trans/s)  "
            f"loop {t_loop:8.3f}s extrapolated ({row['loop_transitions_per_s']:.3e} trans/s)  "
            f"speedup x{row['speedup']:.1f}"
        )
    print(
        json.dumps(
            {
                "benchmark": "planner",
                "device": str(device),
                "threads": torch.get_num_threads(),
                "clock": args.clock,
                "model": model_kind,
                "method": cfg.method,
                "num_samples": cfg.num_samples,
                "horizon": cfg.horizon,
                "iterations": cfg.iterations,
                "max_batch": cfg.max_batch,
                "loop_states_timed": n_loop,
                "results": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
