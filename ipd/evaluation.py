"""Vectorised policy evaluation in gymnasium MuJoCo envs, with D4RL-normalised scores.

:func:`evaluate_policy` runs exactly ``episodes`` episodes of a task's evaluation env
(``Hopper-v4`` by default; ``Hopper-v5`` with ``task.env_version=v5`` or for a Minari dataset
that records it, see :mod:`ipd.tasks`) over ``num_envs`` envs stepped together by a gymnasium
vector env, and returns per-episode returns, lengths and normalised scores
(``100 * (return - random) / (expert - random)``, docs/design.md §3) with D4RL's reference returns,
or a Minari dataset's own (``EvalResult.score_reference`` says which).

Scheme: episodes run in *rounds*. Round ``r`` resets every env, env ``i`` with seed
``seed + r * num_envs + i`` (so episode ``e`` always starts from ``seed + e`` whatever
``num_envs`` is), calls ``policy.reset(num_envs)`` and steps until every env of the round
has finished. That keeps the :class:`ipd.models.base.Policy` protocol simple (one
``reset`` for all envs) and makes results independent of how envs finish relative to
each other.

gymnasium 1.x vector envs autoreset in ``NEXT_STEP`` mode: the step after an env finishes
resets it and returns reward 0. We ignore everything an env returns after its episode
ended: its observation is frozen at the final one, its reward is masked to 0 and it is
reported as done. Envs of a last, partial round that have no episode to run are done from
the start. The wasted physics steps of finished envs are the price of lock-step batching.

Deviation/assumption: actions are clipped to the action space (``clip_actions=True``)
before stepping; the MuJoCo actuators clip anyway, but the control cost would otherwise
be computed on the unclipped action. D4RL scores are reported on gymnasium ``*-v4`` envs by
default, which share the D4RL v2 MuJoCo models (docs/design.md §3).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from ipd.envs import make_task_env
from ipd.models.base import Policy
from ipd.tasks import TaskSpec, get_task


@dataclass
class EvalResult:
    """Per-episode evaluation results (episode ``e`` was reset with seed ``seed + e``)."""

    task: str
    returns: np.ndarray  # [episodes] float64, undiscounted env return
    lengths: np.ndarray  # [episodes] int64, env steps until terminated or truncated
    normalized_scores: np.ndarray  # [episodes] D4RL-normalised (0 = random, 100 = expert)
    seed: int
    wall_time_s: float
    env_id: str = ""  # the gymnasium env evaluated in, e.g. Hopper-v4
    score_reference: str = "d4rl"  # whose reference returns normalised the scores: d4rl | minari
    # Envs stepped together. Recorded because the policy's batch size changes its float rounding, and
    # where episodes teeter between falling and running that can move a score: a re-evaluation that
    # must reproduce a run uses the same count.
    num_envs: int = 0

    @property
    def episodes(self) -> int:
        return len(self.returns)

    @property
    def normalized_mean(self) -> float:
        return float(np.mean(self.normalized_scores))

    @property
    def normalized_std(self) -> float:
        return float(np.std(self.normalized_scores))

    @property
    def return_mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def return_std(self) -> float:
        return float(np.std(self.returns))

    @property
    def env_steps(self) -> int:
        return int(np.sum(self.lengths))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (plain floats, ints and lists)."""
        return {
            "task": self.task,
            "env_id": self.env_id,
            "score_reference": self.score_reference,
            "episodes": self.episodes,
            "seed": self.seed,
            "num_envs": self.num_envs,
            "normalized_mean": self.normalized_mean,
            "normalized_std": self.normalized_std,
            "return_mean": self.return_mean,
            "return_std": self.return_std,
            "returns": [float(x) for x in self.returns],
            "lengths": [int(x) for x in self.lengths],
            "normalized_scores": [float(x) for x in self.normalized_scores],
            "env_steps": self.env_steps,
            "wall_time_s": float(self.wall_time_s),
        }


def make_eval_env(task: TaskSpec, max_episode_steps: int = 1000) -> gym.Env:
    """The task's evaluation env (``task.gym_id`` with ``task.env_kwargs``) with a time limit."""
    return make_task_env(task, max_episode_steps)


def make_vector_env(
    task: TaskSpec, num_envs: int, max_episode_steps: int = 1000, asynchronous: bool = False
) -> gym.vector.VectorEnv:
    """``num_envs`` copies of the evaluation env in a gymnasium vector env (NEXT_STEP autoreset)."""
    fns = [lambda: make_eval_env(task, max_episode_steps)] * num_envs
    if asynchronous:
        return gym.vector.AsyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)


def evaluate_policy(
    policy: Policy,
    task: str | TaskSpec,
    episodes: int = 10,
    num_envs: int | None = None,
    seed: int = 0,
    max_episode_steps: int = 1000,
    progress: bool = True,
    asynchronous: bool = False,
    clip_actions: bool = True,
) -> EvalResult:
    """Run ``episodes`` episodes of ``policy`` in ``task``'s env, ``num_envs`` at a time.

    Args:
        policy: an :class:`ipd.models.base.Policy`. Per round it gets ``reset(num_envs)``, then
            per step ``act(obs [num_envs, obs_dim]) -> [num_envs, act_dim]`` and
            ``observe(rewards [num_envs], dones [num_envs])``. ``dones[i]`` is True from the step
            env ``i``'s episode ended (terminated or truncated) on; rewards of finished envs are 0.
        task: task name (``hopper-medium``) or :class:`TaskSpec`; fixes the env and the score scale.
        episodes: number of episodes, exactly.
        num_envs: envs stepped together; default ``min(episodes, 10)``.
        seed: episode ``e`` is reset with seed ``seed + e``, so results reproduce for a
            deterministic policy and do not depend on ``num_envs``.
        max_episode_steps: time limit per episode (D4RL: 1000).
        progress: show a tqdm bar over vector steps.
        asynchronous: step envs in subprocesses (``AsyncVectorEnv``) instead of in-process.
        clip_actions: clip actions to the action space before stepping.
    """
    task = get_task(task) if isinstance(task, str) else task
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    num_envs = min(episodes, 10) if num_envs is None else int(num_envs)
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    num_envs = min(num_envs, episodes)  # extra envs would never run an episode
    rounds = -(-episodes // num_envs)
    returns = np.zeros(rounds * num_envs, np.float64)
    lengths = np.zeros(rounds * num_envs, np.int64)
    t0 = time.perf_counter()
    envs = make_vector_env(task, num_envs, max_episode_steps, asynchronous)
    low, high = envs.single_action_space.low, envs.single_action_space.high
    try:
        with (
            torch.inference_mode(),
            tqdm(
                total=rounds * max_episode_steps, desc=f"eval {task.name}", unit="step", disable=not progress
            ) as bar,
        ):
            for r in range(rounds):
                first = r * num_envs
                active = np.arange(first, first + num_envs) < episodes  # env has an episode to run
                obs, _ = envs.reset(seed=[seed + first + i for i in range(num_envs)])
                policy.reset(num_envs)
                ret, length = _run_round(
                    policy, envs, obs, active, max_episode_steps, low, high, clip_actions, task, bar
                )
                returns[first : first + num_envs], lengths[first : first + num_envs] = ret, length
    finally:
        envs.close()
    returns, lengths = returns[:episodes], lengths[:episodes]
    return EvalResult(
        task=task.name,
        returns=returns,
        lengths=lengths,
        normalized_scores=np.asarray(task.normalize_score(returns), np.float64),
        seed=seed,
        wall_time_s=time.perf_counter() - t0,
        env_id=task.gym_id,
        score_reference=task.score_reference,
        num_envs=num_envs,
    )


def _run_round(
    policy: Policy,
    envs: gym.vector.VectorEnv,
    obs: np.ndarray,
    active: np.ndarray,
    max_episode_steps: int,
    low: np.ndarray,
    high: np.ndarray,
    clip_actions: bool,
    task: TaskSpec,
    bar: tqdm,
) -> tuple[np.ndarray, np.ndarray]:
    """Step all envs until every active one has finished; returns (returns, lengths) per env."""
    n = len(active)
    done = ~active
    ret = np.zeros(n, np.float64)
    length = np.zeros(n, np.int64)
    for step in range(max_episode_steps):
        actions = np.asarray(policy.act(obs))
        if actions.shape != (n, task.act_dim):
            raise ValueError(f"policy.act returned shape {actions.shape}, expected ({n}, {task.act_dim})")
        if not np.isfinite(actions[~done]).all():
            raise ValueError("policy.act returned NaN/inf actions for running episodes.")
        if clip_actions:
            actions = np.clip(actions, low, high)
        actions = np.where(done[:, None], 0.0, actions).astype(low.dtype)  # finished envs: harmless action
        next_obs, rewards, terminated, truncated, _ = envs.step(actions)
        running = ~done
        ret += np.where(running, rewards, 0.0)
        length += running
        # Belt and braces: the TimeLimit wrapper truncates at max_episode_steps already.
        ended = running & (terminated | truncated | (step + 1 >= max_episode_steps))
        done = done | ended
        # Finished envs keep their final observation; the autoreset one belongs to no episode.
        obs = np.where(running[:, None], next_obs, obs)
        policy.observe(np.where(running, rewards, 0.0).astype(np.float32), done.copy())
        bar.update(1)
        if done.all():
            bar.update(max_episode_steps - step - 1)  # the bar counts the worst case per round
            break
    return ret, length


EVAL_SEED_OFFSET = 10_000  # evaluation env seeds never coincide with a run's training seed


def evaluate_with_config(
    policy: Policy,
    task: TaskSpec,
    eval_cfg: Any,
    seed: int,
    episodes: int | None = None,
    progress: bool = True,
) -> EvalResult:
    """The one evaluation rule of the scripts: ``eval.*`` settings (episodes, num_envs,
    max_episode_steps) and env seeds at ``seed + EVAL_SEED_OFFSET``."""
    episodes = int(episodes or eval_cfg.episodes)
    return evaluate_policy(
        policy,
        task,
        episodes=episodes,
        num_envs=min(int(eval_cfg.num_envs), episodes),
        seed=seed + EVAL_SEED_OFFSET,
        max_episode_steps=int(eval_cfg.max_episode_steps),
        progress=progress,
    )
