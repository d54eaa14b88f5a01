"""Behaviour cloning: best-episode filtering, learning signal, 10%BC data selection, checkpoints, resume."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ipd.data import Normalizer, Trajectories, Transitions, top_episode_rows, top_episodes
from ipd.evaluation import evaluate_policy
from ipd.io import torch_load
from ipd.models.bc import BCConfig, BCLearner

SMALL = BCConfig(hidden_dims=(32, 32), batch_size=64, num_updates=20, log_every=10)


def params(learner: BCLearner) -> list[torch.Tensor]:
    return list(learner.actor.state_dict().values())


def episodes(returns_and_ends: list[tuple[list[float], str]], obs_dim: int = 3) -> Transitions:
    """Hand-made transitions: one (rewards, end) per episode, end in terminal|timeout|none."""
    rewards = np.concatenate([np.asarray(r, np.float32) for r, _ in returns_and_ends])
    n = len(rewards)
    term, tout = np.zeros(n, bool), np.zeros(n, bool)
    i = -1
    for r, end in returns_and_ends:
        i += len(r)
        term[i], tout[i] = end == "terminal", end == "timeout"
    obs = np.arange(n * obs_dim, dtype=np.float32).reshape(n, obs_dim)
    act = np.tanh(obs[:, :2] / n)
    return Transitions(obs, act, rewards, obs + 1, term, tout, extras={"row": np.arange(n)})


# ----------------------------------------------------------------------------- filtering

HAND = [
    ([1, 1, 1], "timeout"),  # ep0: return 3, rows 0-2
    ([5, 5], "terminal"),  # ep1: return 10, rows 3-4
    ([0, 0, 0, 1], "timeout"),  # ep2: return 1, rows 5-8
    ([7], "terminal"),  # ep3: return 7, row 9
    ([2, 2], "none"),  # ep4: return 4, rows 10-11, ends only at the last row
]


@pytest.mark.parametrize(
    "fraction, kept_episodes",
    [
        (0.1, [1]),  # round(0.5) = 0 -> at least one episode
        (0.4, [1, 3]),  # round(2.0) = 2
        (0.5, [1, 3]),  # round(2.5) = 2 (half to even)
        (0.7, [0, 1, 3, 4]),  # round(3.5) = 4
        (1.0, [0, 1, 2, 3, 4]),
    ],
)
def test_top_episodes_keeps_exactly_the_best(fraction, kept_episodes):
    t = episodes(HAND)
    rows_of = {0: [0, 1, 2], 1: [3, 4], 2: [5, 6, 7, 8], 3: [9], 4: [10, 11]}
    want = [r for e in kept_episodes for r in rows_of[e]]
    kept = top_episodes(t, fraction)
    np.testing.assert_array_equal(kept.extras["row"], want)  # extras carried, original order kept
    np.testing.assert_array_equal(kept.observations, t.observations[want])
    np.testing.assert_array_equal(kept.terminals, t.terminals[want])
    np.testing.assert_array_equal(kept.timeouts, t.timeouts[want])
    rows, n_kept = top_episode_rows(t, fraction)
    np.testing.assert_array_equal(rows, want)
    assert n_kept == len(kept_episodes)
    # Boundaries survive: the result splits back into the kept episodes with their returns.
    returns = {0: 3, 1: 10, 2: 1, 3: 7, 4: 4}
    traj = Trajectories.from_transitions(kept)
    np.testing.assert_allclose(traj.episode_returns, [returns[e] for e in kept_episodes])


def test_top_episodes_ties_and_bad_fractions():
    t = episodes([([2, 2], "timeout"), ([1], "terminal"), ([4], "timeout"), ([3, 1], "terminal")])
    # Returns 4, 1, 4, 4: the three-way tie at the top is broken by dataset order.
    np.testing.assert_array_equal(top_episodes(t, 0.5).extras["row"], [0, 1, 3])
    np.testing.assert_array_equal(top_episodes(t, 0.75).extras["row"], [0, 1, 3, 4, 5])
    for bad in (0.0, -0.1, 1.5, float("nan"), "most"):
        with pytest.raises(ValueError, match="fraction"):
            top_episodes(t, bad)


# ----------------------------------------------------------------------------- config / API


def test_config_validation():
    for kw in (
        dict(top_fraction=0.0),
        dict(top_fraction=1.1),
        dict(dropout=1.0),
        dict(lr=0.0),
        dict(batch_size=0),
        dict(num_updates=0),
        dict(weight_decay=-1.0),
        dict(hidden_dims=()),
    ):
        with pytest.raises(ValueError, match="BCConfig"):
            BCConfig(**kw)
    assert BCConfig(hidden_dims=[64, 64]).hidden_dims == (64, 64)


def test_shapes_callback_policy_and_global_rng(hopper_transitions):
    t = hopper_transitions
    calls: list = []
    learner = BCLearner(t.obs_dim, t.act_dim, dataclasses.replace(SMALL, num_updates=5, dropout=0.1))
    rng_before = torch.random.get_rng_state()
    out = learner.fit(t, progress=False, callback=lambda s, m: calls.append((s, m)), callback_every=2)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # own generators only
    assert [s for s, _ in calls] == [2, 4, 5] and "loss" in calls[0][1]
    assert out["step"] == 5 and np.isfinite(out["loss"]) and out["wall_time_s"] > 0
    assert out["rows_kept"] == out["rows_total"] == len(t)
    assert out["episodes_kept"] == out["episodes_total"] == len(Trajectories.from_transitions(t))
    np.testing.assert_allclose(learner.normalizer.mean, Normalizer.fit(t.observations).mean)

    a = learner.act(t.observations[:7])
    assert isinstance(a, np.ndarray) and a.shape == (7, t.act_dim) and a.dtype == np.float32
    assert np.abs(a).max() < 1
    a_t = learner.act(torch.from_numpy(t.observations[:7]))
    assert isinstance(a_t, torch.Tensor) and not a_t.requires_grad
    np.testing.assert_array_equal(a_t.numpy(), a)  # no dropout at inference

    policy = learner.policy()
    policy.reset(7)
    np.testing.assert_array_equal(policy.act(t.observations[:7].astype(np.float64)), a)
    policy.observe(np.zeros(7), np.zeros(7, bool))
    res = evaluate_policy(
        policy, "hopper-medium", episodes=2, num_envs=2, max_episode_steps=5, progress=False
    )
    assert res.lengths.shape == (2,) and (res.lengths <= 5).all() and np.isfinite(res.returns).all()

    with pytest.raises(ValueError, match="dims"):
        BCLearner(t.obs_dim + 1, t.act_dim, SMALL).fit(t, progress=False)


# ----------------------------------------------------------------------------- learning signal


def test_learns_a_linear_action_map():
    rng = np.random.default_rng(0)
    w = np.array([[0.3, -0.2], [-0.25, 0.1], [0.2, 0.3], [0.1, -0.2]], np.float32)  # |a| <= 0.85
    obs = rng.uniform(-1, 1, (2000, 4)).astype(np.float32)
    data = Transitions(obs, obs @ w, np.zeros(2000), obs, np.zeros(2000, bool), np.zeros(2000, bool))
    learner = BCLearner(4, 2, BCConfig(hidden_dims=(64, 64), lr=1e-3, batch_size=128, num_updates=1500))
    test_obs = rng.uniform(-1, 1, (500, 4)).astype(np.float32)
    mse0 = float(np.mean((learner.act(test_obs) - test_obs @ w) ** 2))
    out = learner.fit(data, progress=False, callback_every=100)
    mse = float(np.mean((learner.act(test_obs) - test_obs @ w) ** 2))
    assert mse < 1e-3 and mse < 0.02 * mse0, (mse, mse0)
    assert out["history"][-1]["loss"] < 0.05 * out["history"][0]["loss"]


def test_top_fraction_clones_only_the_best_episodes(hopper_transitions):
    # Behaviour: 20 episodes with the same states; the two best push +0.6, the rest -0.6.
    rng = np.random.default_rng(0)
    n_ep, length = 20, 25
    obs = rng.normal(size=(n_ep * length, 3)).astype(np.float32)
    good = np.repeat(np.arange(n_ep) < 2, length)
    act = np.where(good, 0.6, -0.6)[:, None].astype(np.float32)
    ends = np.tile(np.arange(length) == length - 1, n_ep)
    data = Transitions(obs, act, np.where(good, 1.0, 0.0), obs, np.zeros(len(obs), bool), ends)
    cfg = BCConfig(hidden_dims=(32, 32), lr=1e-3, batch_size=64, num_updates=300)
    bc10 = BCLearner(3, 1, dataclasses.replace(cfg, top_fraction=0.1))
    out = bc10.fit(data, progress=False)
    bc = BCLearner(3, 1, cfg)
    bc.fit(data, progress=False)
    assert out["episodes_kept"] == 2 and out["episodes_total"] == 20 and out["rows_kept"] == 2 * length
    assert bc10.act(obs).mean() > 0.5 and bc.act(obs).mean() < -0.3

    # Exactly the kept rows: same batches, normaliser and weights as plain BC on the filtered data.
    t = hopper_transitions
    small = dataclasses.replace(SMALL, top_fraction=0.1)
    filtered = BCLearner(t.obs_dim, t.act_dim, small)
    out = filtered.fit(t, progress=False)
    kept = top_episodes(t, 0.1)
    manual = BCLearner(t.obs_dim, t.act_dim, dataclasses.replace(small, top_fraction=1.0))
    manual.fit(kept, progress=False)
    assert out["rows_kept"] == len(kept) < len(t)
    np.testing.assert_array_equal(filtered.normalizer.mean, Normalizer.fit(kept.observations).mean)
    for x, y in zip(params(filtered), params(manual), strict=True):
        assert torch.equal(x, y)


# ----------------------------------------------------------------------------- resume / checkpoints


def test_resume_equals_uninterrupted(hopper_transitions, tmp_path):
    t = hopper_transitions
    cfg = dataclasses.replace(SMALL, num_updates=40, dropout=0.1, top_fraction=0.5, weight_decay=1e-4)
    full = BCLearner(t.obs_dim, t.act_dim, cfg)
    full.fit(t, progress=False)

    part = BCLearner(t.obs_dim, t.act_dim, cfg)
    part.fit(t, num_updates=20, progress=False)
    torch.save(part.state_dict(), tmp_path / "state.pt")
    resumed = BCLearner(t.obs_dim, t.act_dim, cfg)
    resumed.load_state_dict(torch_load(tmp_path / "state.pt"))
    assert resumed.step == 20
    out = resumed.fit(t, progress=False)
    assert out["step"] == 40
    for x, y in zip(params(full), params(resumed), strict=True):
        assert torch.equal(x, y)
    # A checkpoint saved with the training state continues the same way.
    part.save(tmp_path / "train.pt", training_state=True)
    again = BCLearner.load(tmp_path / "train.pt")
    again.fit(t, progress=False)
    for x, y in zip(params(full), params(again), strict=True):
        assert torch.equal(x, y)
    # Another seed gives other weights.
    other = BCLearner(t.obs_dim, t.act_dim, dataclasses.replace(cfg, seed=1))
    assert not torch.equal(params(other)[0], params(full)[0])
