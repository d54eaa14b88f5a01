"""d3rlpy's IQL and DT on our generated files, evaluated exactly as ipd evaluates its own runs.

Why: a baseline weaker than a peer's makes every margin over it suspect, and IPD's value function
is its IQL. This trains d3rlpy 2.8.1's ``IQL`` (and ``DecisionTransformer``) with the settings of
its D4RL reproduction scripts (``reproductions/offline/iql.py``, ``decision_transformer.py``) on
the same hdf5 file, seed and update count as an ipd run, then evaluates the result with
:func:`ipd.evaluation.evaluate_with_config` (the same envs, episodes and env seeds as
``scripts/train.py``), and prints it beside ipd's own score for that task, seed and dataset
fingerprint from the runs found under ``--runs`` (or the committed ledger).

d3rlpy is not a dependency of ipd; install it for this benchmark only:
``pip install --no-deps d3rlpy==2.8.1 gym==0.26.2 gym-notices structlog colorama dataclasses-json
marshmallow typing-inspect mypy-extensions scikit-learn`` (``--no-deps`` keeps ipd's gymnasium).

    python benchmarks/d3rlpy_baselines.py --task hopper-medium --algo iql --seeds 0 1 2
    python benchmarks/d3rlpy_baselines.py --task hopper-medium --algo dt --seeds 0 --updates 3000

Each finished run appends a JSON line to ``--out`` (default ``results/d3rlpy.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from ipd.artifacts import dataset_fingerprint
from ipd.data.sources import open_dataset
from ipd.evaluation import evaluate_with_config
from ipd.ledger import read_ledger
from ipd.tasks import get_task

# D4RL reproduction settings of d3rlpy 2.8.1 (reproductions/offline/iql.py and decision_transformer.py).
IQL_SETTINGS = {
    "actor_learning_rate": 3e-4,
    "critic_learning_rate": 3e-4,
    "batch_size": 256,
    "weight_temp": 3.0,
    "max_weight": 100.0,
    "expectile": 0.7,
    # its script's schedule length (it trains 500k steps): at 100k updates the actor's learning rate
    # has decayed only to 0.9x, where ipd's cosine over its own num_updates reaches 0
    "actor_cosine_t_max": 500_000,
    "return_scale_multiplier": 1000.0,
}
DT_SETTINGS = {
    "batch_size": 64,
    "learning_rate": 1e-4,
    "weight_decay": 1e-4,
    "clip_grad_norm": 0.25,
    "warmup_fraction": 0.1,  # its script warms up 10k of 100k steps; scaled to the updates run here
    "context_size": 20,
    "num_heads": 1,
    "num_layers": 3,
    "encoder_hidden": 128,
    "reward_multiplier": 0.001,
    "max_timestep": 1000,
}


def mdp_dataset(task: str, data_dir: str | None):
    """The task's file as a d3rlpy ``MDPDataset`` (episodes end at terminals or timeouts), and its
    origin and fingerprint as ipd records them."""
    import d3rlpy

    opened = open_dataset(task, data_dir, download_missing=False)
    t = opened.transitions
    timeouts = t.timeouts.copy()
    timeouts[-1] |= not t.terminals[-1]  # a file may end mid-episode: close the last one
    dataset = d3rlpy.dataset.MDPDataset(
        observations=t.observations,
        actions=t.actions,
        rewards=t.rewards,
        terminals=t.terminals.astype(np.float32),
        timeouts=timeouts.astype(np.float32),
    )
    return dataset, opened.origin, dataset_fingerprint(t)


def make_iql(seed: int):
    import d3rlpy

    d3rlpy.seed(seed)
    s = IQL_SETTINGS
    optim = d3rlpy.optimizers.AdamFactory(
        lr_scheduler_factory=d3rlpy.optimizers.CosineAnnealingLRFactory(T_max=s["actor_cosine_t_max"])
    )
    return d3rlpy.algos.IQLConfig(
        actor_learning_rate=s["actor_learning_rate"],
        critic_learning_rate=s["critic_learning_rate"],
        batch_size=s["batch_size"],
        weight_temp=s["weight_temp"],
        max_weight=s["max_weight"],
        expectile=s["expectile"],
        reward_scaler=d3rlpy.preprocessing.ReturnBasedRewardScaler(multiplier=s["return_scale_multiplier"]),
        actor_optim_factory=optim,
    ).create(device="cpu")


def make_dt(seed: int, updates: int):
    import d3rlpy

    d3rlpy.seed(seed)
    s = DT_SETTINGS
    optim = d3rlpy.optimizers.AdamWFactory(
        weight_decay=s["weight_decay"],
        clip_grad_norm=s["clip_grad_norm"],
        lr_scheduler_factory=d3rlpy.optimizers.WarmupSchedulerFactory(
            warmup_steps=max(1, int(s["warmup_fraction"] * updates))
        ),
    )
    return d3rlpy.algos.DecisionTransformerConfig(
        batch_size=s["batch_size"],
        learning_rate=s["learning_rate"],
        optim_factory=optim,
        encoder_factory=d3rlpy.models.VectorEncoderFactory(
            [s["encoder_hidden"]], exclude_last_activation=True
        ),
        observation_scaler=d3rlpy.preprocessing.StandardObservationScaler(),
        reward_scaler=d3rlpy.preprocessing.MultiplyRewardScaler(s["reward_multiplier"]),
        position_encoding_type=d3rlpy.PositionEncodingType.SIMPLE,
        context_size=s["context_size"],
        num_heads=s["num_heads"],
        num_layers=s["num_layers"],
        max_timestep=s["max_timestep"],
    ).create(device="cpu")


class GreedyPolicy:
    """A d3rlpy Q-learning algo as an ipd :class:`~ipd.models.base.Policy` (its deterministic action)."""

    def __init__(self, algo) -> None:
        self.algo = algo

    def reset(self, num_envs: int) -> None:
        pass

    def act(self, observations: np.ndarray) -> np.ndarray:
        return self.algo.predict(np.asarray(observations, np.float32))

    def observe(self, rewards: np.ndarray, dones: np.ndarray) -> None:
        pass


class TransformerPolicy:
    """d3rlpy's DT, one stateful wrapper per env (its wrapper acts on one episode at a time)."""

    def __init__(self, algo, target_return: float) -> None:
        self.algo, self.target_return = algo, target_return

    def reset(self, num_envs: int) -> None:
        self.wrappers = [self.algo.as_stateful_wrapper(self.target_return) for _ in range(num_envs)]
        self.rewards = np.zeros(num_envs, np.float32)
        self.done = np.zeros(num_envs, bool)

    def act(self, observations: np.ndarray) -> np.ndarray:
        out = np.zeros((len(observations), self.algo.impl.action_size), np.float32)
        for i, w in enumerate(self.wrappers):
            if not self.done[i]:
                out[i] = w.predict(np.asarray(observations[i], np.float32), float(self.rewards[i]))
        return out

    def observe(self, rewards: np.ndarray, dones: np.ndarray) -> None:
        self.rewards = np.asarray(rewards, np.float32)
        self.done = np.asarray(dones, bool)


def ours(runs: Path, ledger: Path, task: str, algo: str, seed: int, fingerprint: str | None) -> float | None:
    """ipd's own final score for (task, label ``algo``, seed) on the same dataset build: the newest
    run (time-stamped run dirs sort by start time), from ``runs`` or the ledger."""
    found = [(p.parent.name, json.loads(p.read_text())) for p in runs.glob(f"{task}/train/*/*/metrics.json")]
    found += [(str(r.get("run", "")), r) for r in (read_ledger(ledger) if ledger.is_file() else [])]
    rows = [
        (run, r)
        for run, r in found
        if r.get("task") == task
        and (r.get("label") or r.get("algo")) == algo
        and r.get("seed") == seed
        and "normalized_score" in r
        and r.get("data") == fingerprint  # same build only
    ]
    return float(max(rows, key=lambda x: x[0])[1]["normalized_score"]) if rows else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="hopper-medium")
    p.add_argument("--algo", choices=("iql", "dt"), default="iql")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--updates", type=int, default=None, help="default: the cpu preset's (IQL 100k, DT 3k)")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--runs", type=Path, default=Path("runs"))
    p.add_argument("--ledger", type=Path, default=Path("results/runs.jsonl"))
    p.add_argument("--out", type=Path, default=Path("results/d3rlpy.jsonl"))
    args = p.parse_args()
    task = get_task(args.task)
    updates = args.updates or (100_000 if args.algo == "iql" else 3_000)
    dataset, origin, fingerprint = mdp_dataset(task.name, args.data_dir)
    eval_cfg = OmegaConf.create(
        {"episodes": args.episodes, "num_envs": args.episodes, "max_episode_steps": 1000}
    )
    for seed in args.seeds:
        algo = make_iql(seed) if args.algo == "iql" else make_dt(seed, updates)
        t0 = time.perf_counter()
        algo.fit(
            dataset,
            n_steps=updates,
            n_steps_per_epoch=min(updates, 10_000),
            show_progress=True,
            save_interval=10**9,
            experiment_name=f"d3rlpy_{args.algo}_{task.name}_s{seed}",
            with_timestamp=True,
            logger_adapter=__import__("d3rlpy").logging.NoopAdapterFactory(),
        )
        train_s = time.perf_counter() - t0
        policy = GreedyPolicy(algo) if args.algo == "iql" else TransformerPolicy(algo, task.target_return)
        t1 = time.perf_counter()
        res = evaluate_with_config(policy, task, eval_cfg, seed)
        row = {
            "task": task.name,
            "algo": f"d3rlpy-{args.algo}",
            "seed": seed,
            "updates": updates,
            "normalized_score": res.normalized_mean,
            "normalized_score_std": res.normalized_std,
            "episodes": res.episodes,
            "ipd_score": ours(args.runs, args.ledger, task.name, args.algo, seed, fingerprint),
            "data_origin": origin,
            "data": fingerprint,
            "train_s": train_s,
            "updates_per_s": updates / train_s,
            "eval_s": time.perf_counter() - t1,
            "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__,
        }
        print(json.dumps(row), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as fh:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
