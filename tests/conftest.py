"""Shared fixtures: small D4RL-layout datasets made from real gymnasium MuJoCo rollouts."""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
import pytest
import torch

from ipd.data import Transitions, write_hdf5

os.environ.setdefault("WANDB_MODE", "disabled")
torch.set_num_threads(1)


def rollout_transitions(gym_id: str, n_steps: int, max_episode_steps: int = 60, seed: int = 0) -> Transitions:
    """Random-policy rollouts with D4RL semantics: `terminals` at env termination,
    `timeouts` at `max_episode_steps` (so both kinds of episode end occur)."""
    env = gym.make(gym_id)
    rng = np.random.default_rng(seed)
    od, ad = env.observation_space.shape[0], env.action_space.shape[0]
    obs_buf = np.zeros((n_steps, od), np.float32)
    next_buf = np.zeros((n_steps, od), np.float32)
    act_buf = rng.uniform(-1, 1, (n_steps, ad)).astype(np.float32)
    rew, term, tout = np.zeros(n_steps, np.float32), np.zeros(n_steps, bool), np.zeros(n_steps, bool)
    obs, _ = env.reset(seed=seed)
    t = 0
    for i in range(n_steps):
        nxt, r, te, _, _ = env.step(act_buf[i])
        t += 1
        obs_buf[i], next_buf[i], rew[i], term[i] = obs, nxt, r, te
        tout[i] = (not te) and (t >= max_episode_steps or i == n_steps - 1)
        if te or tout[i]:
            obs, _ = env.reset()
            t = 0
        else:
            obs = nxt
    env.close()
    return Transitions(obs_buf, act_buf, rew, next_buf, term, tout)


@pytest.fixture(scope="session", autouse=True)
def _isolated_minari_store(tmp_path_factory):
    """Tests never see (or write) the user's Minari datasets: an empty store per session."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(tmp_path_factory.mktemp("minari-store")))
        yield


@pytest.fixture(scope="session")
def hopper_transitions() -> Transitions:
    return rollout_transitions("Hopper-v4", 3000, max_episode_steps=60, seed=0)


@pytest.fixture(scope="session")
def halfcheetah_transitions() -> Transitions:
    return rollout_transitions("HalfCheetah-v4", 2000, max_episode_steps=100, seed=0)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, hopper_transitions, halfcheetah_transitions):
    """A data.dir holding hopper-medium.hdf5 and halfcheetah-medium.hdf5 (tiny, random-policy)."""
    d = tmp_path_factory.mktemp("datasets")
    write_hdf5(d / "hopper-medium.hdf5", hopper_transitions)
    write_hdf5(d / "halfcheetah-medium.hdf5", halfcheetah_transitions)
    return d
