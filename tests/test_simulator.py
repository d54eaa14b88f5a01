"""The real simulator behind the planner's dynamics interface (stage 2's oracle arm)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ipd.evaluation import make_eval_env
from ipd.planning import Planner, PlannerConfig
from ipd.planning.augment import AugmentConfig
from ipd.simulator import SimulatorDynamics
from ipd.tasks import get_task


def recorded_steps(task_name: str, n: int = 60, seed: int = 1, env_version: str = "v4"):
    """(obs, action, reward, next_obs, terminated) of a random-action rollout, resetting on falls."""
    env = make_eval_env(get_task(task_name).with_version(env_version))
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    rows = []
    for i in range(n):
        a = rng.uniform(-0.5, 0.5, env.action_space.shape)
        nxt, r, term, trunc, _ = env.step(a)
        rows.append((obs, a, r, nxt, term))
        obs = env.reset(seed=seed + i + 1)[0] if term or trunc else nxt
    return [np.asarray(col) for col in zip(*rows, strict=True)]


@pytest.mark.parametrize("env_version", ["v4", "v5"])  # v5 pays the healthy reward only while healthy
@pytest.mark.parametrize("task_name", ["hopper-medium", "walker2d-medium", "halfcheetah-medium"])
def test_batched_step_matches_the_env_on_exact_states(task_name, env_version):
    obs, act, rew, nxt, term = recorded_steps(task_name, env_version=env_version)
    assert term.any() or task_name.startswith("halfcheetah")  # the terminating step's reward is checked
    exact = (
        (np.abs(obs) < 9.999).all(1) if not task_name.startswith("halfcheetah") else np.ones(len(obs), bool)
    )
    task = get_task(task_name).with_version(env_version)
    out = SimulatorDynamics(task).step(torch.as_tensor(obs), torch.as_tensor(act))
    assert out.next_states.shape == obs.shape and out.rewards.shape == (len(obs),)
    np.testing.assert_allclose(out.next_states.numpy()[exact], nxt[exact], atol=1e-8)
    np.testing.assert_allclose(out.rewards.numpy()[exact], rew[exact], atol=1e-8)
    np.testing.assert_array_equal(out.terminals.numpy(), term)
    assert (out.uncertainty == 0).all()


def test_planner_in_the_simulator_beats_random_actions():
    # MPC with the true dynamics and no value must out-run random actions from the same states.
    obs = torch.as_tensor(recorded_steps("hopper-medium", n=8)[0][:4], dtype=torch.float32)
    sim = SimulatorDynamics(get_task("hopper-medium"))
    cfg = PlannerConfig(num_samples=64, num_elites=8, horizon=5, iterations=2, gamma=0.99, seed=0)
    ro = Planner(sim, cfg, act_dim=3).rollout(obs, 10)
    gen = torch.Generator().manual_seed(0)
    state, random_return = obs, torch.zeros(len(obs))
    for _ in range(10):
        step = sim.step(state, torch.rand(len(obs), 3, generator=gen) * 2 - 1)
        random_return += step.rewards
        state = step.next_states
    assert (ro.rewards.sum(1) > random_return).all()


def test_dynamics_knob_is_validated():
    with pytest.raises(ValueError, match="model|simulator"):
        AugmentConfig(dynamics="physics")
