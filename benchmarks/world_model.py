"""World-model benchmark: batched-ensemble training throughput, one-step and open-loop rollout error.

1. Throughput. Our ensemble (``EnsembleLinear`` layers: one ``baddbmm`` per layer for all E members)
   against the straightforward baseline, a Python loop over E separate ``nn.Sequential`` MLPs of the
   same size (same soft-clamped Gaussian NLL, same ``[E, B]`` per-member batches, one Adam step
   over all parameters). Both run the same number of gradient steps in the same process; the
   timing rounds alternate and the best round of each is reported.
2. Accuracy. The dataset's episodes are split (seeded) into train and test episodes. The model is
   trained on the train episodes with ``train_world_model`` (its own holdout split, early stopping;
   bounded by ``--train-steps`` / ``--train-seconds``). On the test episodes we report the one-step
   MSE of next states / rewards against the "no change" baseline, and the open-loop rollout error
   after 5 and 10 steps: start at a test step t with at least h steps left in its episode, feed the
   dataset actions a_t .. a_{t+h-1} to the model (elite mean, and random elite per sample), and
   compare with the real next observations (rollouts never cross an episode end).
   Errors are MSE over state dims in raw units and normalised by the per-dim state std.

Prints a final JSON line with every figure.

    python benchmarks/world_model.py --device cuda --steps 500 --train-steps 50000
    python benchmarks/world_model.py --device cpu --steps 20 --batch-size 64 --hidden 64 \
        --train-steps 200 --max-transitions 20000          # smoke test
    python benchmarks/world_model.py --rollout-dataset 5000 ...   # no hdf5: random-policy rollouts
    python benchmarks/world_model.py --task hopper-medium --artifact runs/hopper-medium/world_model/<hash> \
        --horizons 5 10 30                                   # a pipeline model on its own data
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ipd.data import Transitions, episode_bounds, read_hdf5
from ipd.data.sources import default_data_dir
from ipd.envs import make_task_env
from ipd.models.value import IQLLearner
from ipd.models.world_model import EnsembleWorldModel, WorldModelConfig, soft_clamp_logvar
from ipd.models.world_model_training import train_world_model
from ipd.tasks import TaskSpec, get_task
from ipd.utils import resolve_device


# ----------------------------------------------------------------------------- data
def rollout_dataset(task: TaskSpec, n_steps: int, max_episode_steps: int = 200, seed: int = 0) -> Transitions:
    """Random-policy rollouts in D4RL layout (for machines without the shared hdf5 files), in the
    task's own env (``make_task_env``: its version and ``env_kwargs``)."""
    env = make_task_env(task)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    rows: dict[str, list] = {k: [] for k in ("o", "a", "r", "n", "te", "to")}
    t = 0
    for i in range(n_steps):
        act = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        nxt, r, term, _, _ = env.step(act)
        t += 1
        timeout = (not term) and (t >= max_episode_steps or i == n_steps - 1)
        for k, v in zip(rows, (obs, act, r, nxt, term, timeout), strict=True):
            rows[k].append(v)
        if term or timeout:
            (obs, _), t = env.reset(), 0
        else:
            obs = nxt
    env.close()
    return Transitions(*(np.asarray(rows[k]) for k in rows))


def load_data(args: argparse.Namespace) -> tuple[Transitions, str]:
    task = get_task(args.task)
    path = Path(args.data_dir).expanduser() / f"{task.name}.hdf5"
    if args.rollout_dataset or not path.is_file():
        n = args.rollout_dataset or 20_000
        print(
            f"[data] {'--rollout-dataset' if args.rollout_dataset else f'{path} missing'}: {n} random steps"
        )
        return rollout_dataset(task, n), f"random-policy rollouts ({n} steps)"
    return read_hdf5(path), str(path)


def split_episodes(data: Transitions, test_frac: float, max_transitions: int | None, seed: int = 0):
    """Whole episodes to train / test (seeded); optionally keep only the first ``max_transitions`` rows."""
    starts, lengths = episode_bounds(data.episode_ends)
    if max_transitions is not None:  # keep whole episodes only
        keep = np.cumsum(lengths) <= max_transitions
        keep[0] = True
        starts, lengths = starts[keep], lengths[keep]
    test = np.zeros(len(starts), bool)
    test[
        np.random.default_rng(seed).permutation(len(starts))[: max(1, int(round(test_frac * len(starts))))]
    ] = True
    rows = lambda sel: np.concatenate(
        [np.arange(s, s + n) for s, n in zip(starts[sel], lengths[sel], strict=True)]
    )
    return data.subset(rows(~test)), data.subset(rows(test))


# ----------------------------------------------------------------------------- throughput
class LoopEnsemble(nn.Module):
    """Baseline: E independent ``nn.Sequential`` MLPs run one after the other."""

    def __init__(self, e: int, in_dim: int, out_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        dims = [in_dim, *hidden]
        self.members = nn.ModuleList(
            nn.Sequential(
                *[m for i, o in zip(dims[:-1], dims[1:], strict=True) for m in (nn.Linear(i, o), nn.SiLU())],
                nn.Linear(dims[-1], 2 * out_dim),
            )
            for _ in range(e)
        )
        self.max_logvar = nn.Parameter(torch.full((e, 1, out_dim), 0.5))
        self.min_logvar = nn.Parameter(torch.full((e, 1, out_dim), -10.0))

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = x.new_zeros(())
        for e, mlp in enumerate(self.members):
            mean, logvar = mlp(x[e]).chunk(2, -1)
            logvar = soft_clamp_logvar(logvar, self.min_logvar[e], self.max_logvar[e])
            total = total + ((mean - y[e]).square() * torch.exp(-logvar) + logvar).mean()
        return total + 0.01 * (self.max_logvar.sum() - self.min_logvar.sum())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(loss_fn, params, x, y, idx: torch.Tensor, steps: int, warmup: int, device) -> float:
    """Seconds per step for ``steps`` Adam steps on the pre-drawn ``[steps, E, B]`` batch indices."""
    opt = torch.optim.Adam(params, lr=1e-3)

    def one(i: int) -> None:
        b = idx[i % len(idx)]
        loss = loss_fn(x[b], y[b])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(warmup):
        one(i)
    sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        one(i)
    sync(device)
    return (time.perf_counter() - t0) / steps


def throughput(args, data: Transitions, cfg: WorldModelConfig, device: torch.device) -> dict:
    e, b = cfg.ensemble_size, args.batch_size
    od, ad = data.obs_dim, data.act_dim
    ours = EnsembleWorldModel(od, ad, cfg).to(device)
    torch.manual_seed(0)
    base = LoopEnsemble(e, od + ad, od + 1, cfg.hidden_dims).to(device)
    n = min(len(data), 200_000)
    s, a = torch.as_tensor(data.observations[:n]), torch.as_tensor(data.actions[:n])
    s2, r = torch.as_tensor(data.next_observations[:n]), torch.as_tensor(data.rewards[:n])
    x = torch.cat([s, a], 1)
    x = ((x - x.mean(0)) / (x.std(0) + 1e-3)).to(device)
    y = torch.cat([s2 - s, r[:, None]], 1)
    y = ((y - y.mean(0)) / (y.std(0) + 1e-3)).to(device)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(n, (min(args.steps, 1000), e, b), generator=g).to(device)
    best = {"batched": float("inf"), "loop": float("inf")}
    for _ in range(args.rounds):  # alternate so both see the same machine state
        best["batched"] = min(
            best["batched"],
            time_training(
                lambda xx, yy: ours.loss(xx, yy)[0], ours.parameters(), x, y, idx, args.steps, 5, device
            ),
        )
        best["loop"] = min(
            best["loop"], time_training(base.loss, base.parameters(), x, y, idx, args.steps, 5, device)
        )
    sps = {k: e * b / v for k, v in best.items()}  # member-samples per second
    out = {
        "batched_samples_per_s": sps["batched"],
        "loop_samples_per_s": sps["loop"],
        "speedup_batched_vs_loop": sps["batched"] / sps["loop"],
        "batched_ms_per_step": 1e3 * best["batched"],
        "loop_ms_per_step": 1e3 * best["loop"],
    }
    print(
        f"[throughput] E={e} B={b} {'x'.join(map(str, cfg.hidden_dims))}: batched {sps['batched']:,.0f} "
        f"samples/s ({out['batched_ms_per_step']:.2f} ms/step) | loop over members {sps['loop']:,.0f} "
        f"samples/s "
        f"({out['loop_ms_per_step']:.2f} ms/step) | speedup x{out['speedup_batched_vs_loop']:.2f}"
    )
    return out


# ----------------------------------------------------------------------------- accuracy
@torch.no_grad()
def one_step_errors(model: EnsembleWorldModel, test: Transitions, device, std: torch.Tensor) -> dict:
    s, a = torch.as_tensor(test.observations, device=device), torch.as_tensor(test.actions, device=device)
    s2, r = (
        torch.as_tensor(test.next_observations, device=device),
        torch.as_tensor(test.rewards, device=device),
    )
    m = dataclasses.replace(model.cfg, member_selection="mean")
    model.cfg, old = m, model.cfg
    out = model.step(s, a)
    model.cfg = old
    return {
        "one_step_state_mse": float((out.next_states - s2).square().mean()),
        "one_step_state_mse_normalised": float(((out.next_states - s2) / std).square().mean()),
        "no_change_state_mse": float((s - s2).square().mean()),
        "no_change_state_mse_normalised": float(((s - s2) / std).square().mean()),
        "one_step_reward_mse": float((out.rewards - r).square().mean()),
        "reward_variance": float(r.var()),
        "terminal_accuracy": float((out.terminals.cpu().numpy() == test.terminals).mean()),
    }


@torch.no_grad()
def rollout_errors(
    model, test: Transitions, horizons, max_starts: int, device, std, selection: str, value_fn=None
) -> dict:
    """Open-loop errors under the data's actions (module docstring). With ``value_fn`` also the
    value at the predicted end state against the value at the real one: the bias that a
    bootstrapped rollout return ``... + γ^h V(ŝ_h)`` inherits from the model's state error."""
    starts, lengths = episode_bounds(test.episode_ends)
    ep_end = np.repeat(starts + lengths, lengths)  # one past the episode's last row, per row
    rng = np.random.default_rng(0)
    old = model.cfg
    model.cfg = dataclasses.replace(old, member_selection=selection)
    gen = torch.Generator(device=device).manual_seed(0)
    out = {}
    for h in horizons:
        t0 = np.flatnonzero(np.arange(len(test)) + h <= ep_end)  # h steps fit inside the episode
        if len(t0) == 0:
            continue
        t0 = np.sort(rng.choice(t0, min(max_starts, len(t0)), replace=False))
        s = torch.as_tensor(test.observations[t0], device=device)
        ret_err = torch.zeros(len(t0), device=device)
        for k in range(h):
            a = torch.as_tensor(test.actions[t0 + k], device=device)
            step = model.step(s, a, gen)
            s = step.next_states
            ret_err += step.rewards - torch.as_tensor(test.rewards[t0 + k], device=device)
        real = torch.as_tensor(test.next_observations[t0 + h - 1], device=device)
        out[f"rollout{h}_{selection}_state_mse"] = float((s - real).square().mean())
        out[f"rollout{h}_{selection}_state_mse_normalised"] = float(((s - real) / std).square().mean())
        out[f"rollout{h}_{selection}_return_abs_err"] = float(ret_err.abs().mean())
        start = torch.as_tensor(test.observations[t0], device=device)  # "no change" baseline
        out[f"rollout{h}_no_change_state_mse_normalised"] = float(((start - real) / std).square().mean())
        out[f"rollout{h}_starts"] = len(t0)
        if value_fn is not None:
            gap = value_fn(s.cpu().numpy()) - value_fn(test.next_observations[t0 + h - 1])
            out[f"rollout{h}_value_bias"] = float(gap.mean())
            out[f"rollout{h}_value_abs_err"] = float(np.abs(gap).mean())
    model.cfg = old
    return out


def artifact_errors(args: argparse.Namespace, data: Transitions, device: torch.device) -> dict:
    """One-step and open-loop errors of a pipeline world model on its own task's dataset.

    In-sample: the model trained on these rows (all but its random holdout), so this measures how
    errors compound over a rollout from the data's states under the data's actions, the regime of
    stage 2's imagined rollouts, not generalisation to unseen episodes.
    """
    terminal_fn = get_task(args.task).is_terminal_torch
    model = EnsembleWorldModel.load(args.artifact / "world_model.pt", device=device, terminal_fn=terminal_fn)
    std = torch.as_tensor(data.observations.std(0) + 1e-3, device=device)
    out = {"task": args.task, "artifact": str(args.artifact)}
    rows = np.random.default_rng(args.seed).choice(len(data), min(len(data), 20_000), replace=False)
    out.update(one_step_errors(model, data.subset(np.sort(rows)), device, std))
    value_fn = IQLLearner.load(args.value / "iql.pt").value if args.value is not None else None
    for sel in ("mean", "random"):
        v = value_fn if sel == "mean" else None  # the value bias of the elites' mean prediction
        out.update(
            rollout_errors(model, data, tuple(args.horizons), args.rollout_starts, device, std, sel, v)
        )
    if value_fn is not None:  # the bias on the scale of V over the data
        out["value_std"] = v_std = float(np.std(value_fn(data.observations[np.sort(rows)])))
        for h in args.horizons:
            out[f"rollout{h}_value_bias_over_std"] = out[f"rollout{h}_value_bias"] / v_std
            out[f"rollout{h}_value_abs_err_over_std"] = out.pop(f"rollout{h}_value_abs_err") / v_std
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="hopper-medium")
    p.add_argument("--data-dir", default=str(default_data_dir()))
    p.add_argument("--rollout-dataset", type=int, default=0, help="use N random-policy steps instead of hdf5")
    p.add_argument(
        "--max-transitions", type=int, default=None, help="keep only the first N rows (whole episodes)"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=200, help="gradient steps per throughput round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--ensemble-size", type=int, default=7)
    p.add_argument("--elites", type=int, default=5)
    p.add_argument("--hidden", type=int, default=200)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--train-steps", type=int, default=20_000, help="cap on world-model gradient steps")
    p.add_argument("--train-seconds", type=float, default=None, help="wall-clock cap on training")
    p.add_argument("--test-frac", type=float, default=0.1, help="fraction of episodes held out for testing")
    p.add_argument("--rollout-starts", type=int, default=2000)
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--artifact",
        type=Path,
        default=None,
        help="instead: score a stage-1 world model (runs/<task>/world_model/<hash>) on the task's data",
    )
    p.add_argument("--horizons", type=int, nargs="+", default=[5, 10])
    p.add_argument("--value", type=Path, default=None, help="with --artifact: a stage-1 value artifact dir")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    data, source = load_data(args)
    print(f"[data] {source}: {len(data)} transitions, device {device}")
    if args.artifact is not None:
        print(json.dumps(artifact_errors(args, data, device)))
        return
    cfg = WorldModelConfig(
        ensemble_size=args.ensemble_size,
        num_elites=args.elites,
        hidden_dims=(args.hidden,) * args.layers,
        batch_size=args.batch_size,
        max_steps=args.train_steps,
        max_train_seconds=args.train_seconds,
        seed=args.seed,
    )
    result = {"task": args.task, "data": source, "device": str(device), "config": dataclasses.asdict(cfg)}
    result.update(throughput(args, data, cfg, device))
    if not args.skip_accuracy:
        train, test = split_episodes(data, args.test_frac, args.max_transitions, args.seed)
        print(f"[accuracy] train {len(train)} / test {len(test)} transitions (whole episodes)")
        model, metrics = train_world_model(train, cfg, get_task(args.task).is_terminal_torch, device)
        std = torch.as_tensor(train.observations.std(0) + 1e-3, device=device)
        result.update(
            {k: metrics[k] for k in ("epochs", "steps", "train_time_s", "samples_per_s", "stopped_by")},
            holdout_mse_normalised=metrics["elite_holdout_mse"],
        )
        result.update(one_step_errors(model, test, device, std))
        for sel in ("mean", "random"):
            result.update(rollout_errors(model, test, (5, 10), args.rollout_starts, device, std, sel))
        for k, v in result.items():
            if isinstance(v, float):
                print(f"  {k}: {v:.5g}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
