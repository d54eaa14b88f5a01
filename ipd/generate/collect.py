"""Collect D4RL-protocol transitions with a behaviour policy in :class:`BatchedLocomotion` envs.

Protocol (D4RL's MuJoCo collection): the policy acts in the env; an episode ends when the env
terminates (``terminals``) or after ``max_episode_steps`` steps (``timeouts``); rows are stored
episode after episode. With ``num_envs`` envs stepped together, an episode is written when it ends,
in the order episodes end (ties by env index); collection stops once ``size`` rows are written,
and the last episode written is cut to fit, its last row marked a timeout (unless terminal), as
D4RL cut its last episode at 1M rows. Episodes still running then are dropped. The file therefore
depends on ``num_envs`` as well as the seed, so both are recorded in its attributes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from ipd.generate.locomotion import BatchedLocomotion


@dataclass
class Collected:
    arrays: dict[str, np.ndarray]  # the six D4RL keys, float32 / bool
    episode_returns: np.ndarray  # float64, one per episode in the file (the cut last one included)


class _EpisodeBuffers:
    """Each env's running episode, [num_envs, max_steps, ...]."""

    def __init__(self, num_envs: int, max_steps: int, obs_dim: int, act_dim: int) -> None:
        self.obs = np.zeros((num_envs, max_steps, obs_dim), np.float32)
        self.next_obs = np.zeros((num_envs, max_steps, obs_dim), np.float32)
        self.act = np.zeros((num_envs, max_steps, act_dim), np.float32)
        self.rew = np.zeros((num_envs, max_steps), np.float64)
        self.length = np.zeros(num_envs, np.int64)

    def push(self, obs, act, rew, next_obs) -> None:
        rows, t = np.arange(len(obs)), self.length
        self.obs[rows, t], self.act[rows, t], self.rew[rows, t], self.next_obs[rows, t] = (
            obs,
            act,
            rew,
            next_obs,
        )
        self.length += 1


def collect(
    env: BatchedLocomotion,
    policy,
    size: int,
    seed: int,
    max_episode_steps: int = 1000,
    progress: bool = True,
    desc: str = "collect",
) -> Collected:
    """``size`` transitions of ``policy`` (:class:`ipd.models.base.Policy`) in ``env``."""
    if size < 1:
        raise ValueError(f"size must be >= 1 transition, got {size}")
    n = env.num_envs
    reset_rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 0x5245])))
    obs = np.stack([env.reset(i, reset_rng) for i in range(n)])
    policy.reset(n)
    buf = _EpisodeBuffers(n, max_episode_steps, obs.shape[1], env.task.act_dim)
    out = {
        "observations": np.zeros((size, obs.shape[1]), np.float32),
        "actions": np.zeros((size, env.task.act_dim), np.float32),
        "rewards": np.zeros(size, np.float32),
        "next_observations": np.zeros((size, obs.shape[1]), np.float32),
        "terminals": np.zeros(size, bool),
        "timeouts": np.zeros(size, bool),
    }
    returns: list[float] = []
    written = 0
    with tqdm(total=size, desc=desc, unit="step", disable=not progress, smoothing=0.05) as bar:
        while written < size:
            actions = policy.act(obs)
            next_obs, rewards, terminated = env.step(actions)
            buf.push(obs, actions, rewards, next_obs)
            timed_out = (buf.length >= max_episode_steps) & ~terminated
            done = terminated | timed_out
            policy.observe(rewards, done)
            for i in np.flatnonzero(done):
                if written < size:
                    took = _write_episode(out, written, buf, i, bool(terminated[i]), size)
                    returns.append(float(buf.rew[i, :took].sum()))
                    written += took
                    bar.update(took)
                buf.length[i] = 0
                next_obs[i] = env.reset(i, reset_rng)
            obs = next_obs
    return Collected(out, np.asarray(returns))


def _write_episode(out: dict, start: int, buf: _EpisodeBuffers, i: int, terminal: bool, size: int) -> int:
    length = int(buf.length[i])
    take = min(length, size - start)
    rows = slice(start, start + take)
    out["observations"][rows] = buf.obs[i, :take]
    out["actions"][rows] = buf.act[i, :take]
    out["rewards"][rows] = buf.rew[i, :take]
    out["next_observations"][rows] = buf.next_obs[i, :take]
    last = start + take - 1
    if take == length and terminal:
        out["terminals"][last] = True
    else:  # the time limit, or the cut at `size`
        out["timeouts"][last] = True
    return take
