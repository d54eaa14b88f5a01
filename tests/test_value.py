"""IQL value learner: expectile loss, chain-MDP values, env-unit scaling, AWR, checkpoints, resume."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch

from ipd.data import Transitions
from ipd.data.transitions import reward_scale_for
from ipd.evaluation import evaluate_policy
from ipd.io import torch_load
from ipd.models.value import IQLConfig, IQLLearner, expectile_loss
from ipd.models.value_networks import IQLValue

GAMMA, N_CHAIN = 0.9, 6
SMALL = IQLConfig(hidden_dims=(32, 32), batch_size=64, num_updates=1000, log_every=1000)


def chain(
    n: int = N_CHAIN, per_state: int = 200, reward: float = 1.0, timeout_frac: float = 0.3, seed: int = 0
):
    """Deterministic 1-D chain: one-hot states 0..n-1, a > 0 moves right, a <= 0 left (0 stays).

    Entering the goal n-1 gives ``reward`` and terminates, so V*(s) = reward * gamma^(n-2-s).
    A fraction of non-terminal rows is flagged as timeouts: they must still bootstrap.
    """
    rng = np.random.default_rng(seed)
    s = np.repeat(np.arange(n - 1), per_state)
    sign = np.tile([1.0, -1.0], len(s) // 2)
    a = (sign * rng.uniform(0.2, 1.0, len(s)))[:, None]
    s2 = np.where(a[:, 0] > 0, s + 1, np.maximum(s - 1, 0))
    term = s2 == n - 1
    tout = ~term & (rng.random(len(s)) < timeout_frac)
    eye = np.eye(n, dtype=np.float32)
    return Transitions(eye[s], a, reward * term, eye[s2], term, tout)


def chain_states(n: int = N_CHAIN) -> tuple[np.ndarray, np.ndarray]:
    return np.eye(n, dtype=np.float32)[: n - 1], GAMMA ** (n - 2 - np.arange(n - 1))


def chain_cfg(**kw) -> IQLConfig:
    base = dict(
        hidden_dims=(64, 64),
        lr=1e-3,
        gamma=GAMMA,
        expectile=0.99,
        polyak=0.05,
        num_updates=600,
        reward_normalization="none",
        normalize_states=False,
    )
    return IQLConfig(**(base | kw))


def params(learner: IQLLearner) -> list[torch.Tensor]:
    return [p for m in learner._networks().values() for p in m.state_dict().values()]


# ----------------------------------------------------------------------------- expectile loss


def test_expectile_loss_weights_and_minimiser():
    assert expectile_loss(torch.tensor([2.0]), 0.7).item() == pytest.approx(0.7 * 4)
    assert expectile_loss(torch.tensor([-2.0]), 0.7).item() == pytest.approx(0.3 * 4)
    # Minimising over a constant m gives the tau-expectile e: tau E[(x-e)+] = (1-tau) E[(e-x)+].
    x = torch.from_numpy(np.random.default_rng(0).exponential(size=2000)).float()
    for tau in (0.5, 0.7, 0.9):
        m = torch.zeros((), requires_grad=True)
        opt = torch.optim.LBFGS([m], max_iter=200, line_search_fn="strong_wolfe")

        def closure(m=m, opt=opt, tau=tau):
            opt.zero_grad()
            loss = expectile_loss(x - m, tau)
            loss.backward()
            return loss

        opt.step(closure)
        lo, hi = 0.0, 20.0  # bisection on the first-order condition
        for _ in range(60):
            e = (lo + hi) / 2
            pos, neg = (x - e).clamp(min=0).mean(), (e - x).clamp(min=0).mean()
            lo, hi = (e, hi) if tau * pos > (1 - tau) * neg else (lo, e)
        assert m.item() == pytest.approx(e, abs=1e-3)
        if tau == 0.5:
            assert m.item() == pytest.approx(x.mean().item(), abs=1e-3)


# ----------------------------------------------------------------------------- learning signal


def test_chain_values_approach_optimal_and_timeouts_bootstrap():
    states, v_star = chain_states()
    learner = IQLLearner(N_CHAIN, 1, chain_cfg())
    err0 = np.abs(learner.value(states) - v_star).max()
    learner.fit(chain(), progress=False)
    v = learner.value(states)
    err = np.abs(v - v_star).max()
    assert err < 0.05 and err < 0.1 * err0, (v, v_star)
    # Q(s, right) = r + gamma V*(s+1) = V*(s); Q(s, left) is lower; A(s, right) ~ 0.
    right, left = np.ones((N_CHAIN - 1, 1), np.float32), -np.ones((N_CHAIN - 1, 1), np.float32)
    np.testing.assert_allclose(learner.q(states, right), v_star, atol=0.05)
    assert (learner.q(states, left)[1:] < learner.q(states, right)[1:] - 0.05).all()
    assert np.abs(learner.advantage(states, right)).max() < 0.05
    assert (learner.act(states) > 0).all()  # AWR prefers moving right


def test_values_are_in_env_return_units():
    big = chain(reward=50.0)
    states, v_star = chain_states()
    # Episodes end with reward 50 (goal) or 0 (a timeout before it): "returns" scale = 1000 / 50.
    assert reward_scale_for(big, "returns") == pytest.approx(1000.0 / 50.0)
    assert reward_scale_for(big, "std") == pytest.approx(1.0 / np.std(big.rewards), rel=1e-5)
    assert reward_scale_for(big, "none") == 1.0
    learner = IQLLearner(N_CHAIN, 1, chain_cfg(reward_normalization="std"))
    learner.fit(big, progress=False)
    assert learner.reward_scale == pytest.approx(1.0 / np.std(big.rewards), rel=1e-5)
    np.testing.assert_allclose(learner.value(states), 50.0 * v_star, rtol=0.05)
    np.testing.assert_allclose(learner.value_fn()(torch.from_numpy(states)).numpy(), learner.value(states))

    # Same data in other reward units: identical internal training, outputs scale exactly.
    cfg = chain_cfg(reward_normalization="returns", num_updates=30)
    small, large = IQLLearner(N_CHAIN, 1, cfg), IQLLearner(N_CHAIN, 1, cfg)
    small.fit(chain(reward=1.0), progress=False)
    large.fit(chain(reward=50.0), progress=False)
    act = np.full((N_CHAIN - 1, 1), 0.5, np.float32)
    np.testing.assert_allclose(large.value(states), 50 * small.value(states), rtol=1e-4)
    np.testing.assert_allclose(large.q(states, act), 50 * small.q(states, act), rtol=1e-4)
    np.testing.assert_allclose(
        large.advantage(states, act), 50 * small.advantage(states, act), rtol=1e-3, atol=1e-5
    )
    qt = large.q_torch(torch.from_numpy(states), torch.from_numpy(act)).detach().numpy()
    np.testing.assert_allclose(qt, large.q(states, act), rtol=1e-6)


@pytest.mark.parametrize("actor", ["deterministic", "gaussian"])
def test_awr_actor_moves_towards_high_advantage(actor):
    """One-step bandit, r = -(a - 0.5)^2, behaviour actions uniform: AWR shifts the mean towards 0.5."""
    rng = np.random.default_rng(0)
    n = 2000
    obs = rng.normal(size=(n, 2)).astype(np.float32)
    act = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    data = Transitions(obs, act, -((act[:, 0] - 0.5) ** 2), obs, np.ones(n, bool), np.zeros(n, bool))
    means = {}
    for beta in (0.0, 3.0):
        cfg = dataclasses.replace(
            SMALL, actor=actor, beta=beta, lr=1e-3, reward_normalization="none", num_updates=400
        )
        learner = IQLLearner(2, 1, cfg)
        learner.fit(data, progress=False)
        means[beta] = float(learner.act(obs[:200]).mean())
    assert abs(means[0.0]) < 0.15  # beta = 0 is behaviour cloning
    assert means[3.0] > 0.3, means


# ----------------------------------------------------------------------------- API


def test_shapes_types_and_gradients(hopper_transitions):
    t = hopper_transitions
    calls: list = []
    learner = IQLLearner(t.obs_dim, t.act_dim, dataclasses.replace(SMALL, num_updates=5))
    out = learner.fit(t, progress=False, callback=lambda s, m: calls.append((s, m)), callback_every=2)
    assert [s for s, _ in calls] == [2, 4, 5] and out["step"] == 5 and "q_loss" in calls[0][1]
    assert np.isfinite(out["v_loss"]) and out["reward_scale"] > 0
    obs, actions = t.observations[:7], t.actions[:7]
    for fn in (learner.value(obs), learner.q(obs, actions), learner.advantage(obs, actions)):
        assert isinstance(fn, np.ndarray) and fn.shape == (7,)
    a = learner.act(obs)
    assert a.shape == (7, t.act_dim) and np.abs(a).max() <= 1
    a_s = learner.act(obs, deterministic=False)
    assert a_s.shape == (7, t.act_dim) and np.abs(a_s).max() <= 1 and not np.allclose(a_s, a)
    s = torch.from_numpy(obs)
    assert isinstance(learner.value(s), torch.Tensor) and learner.value(s).shape == (7,)
    assert learner.value_fn()(s).shape == (7,)
    prior = learner.actor_prior()(s)
    np.testing.assert_allclose(prior.numpy(), a, rtol=1e-6)
    np.testing.assert_allclose(
        learner.advantage(obs, actions), learner.q(obs, actions) - learner.value(obs), atol=1e-4
    )
    # q_torch: gradients reach the actions, never the critic's parameters.
    learner.critic_optimizer.zero_grad(set_to_none=True)
    acts = torch.from_numpy(actions).requires_grad_(True)
    learner.q_torch(s, acts).sum().backward()
    assert acts.grad is not None and acts.grad.abs().sum() > 0
    assert all(p.grad is None for p in [*learner.q_net.parameters(), *learner.q_target.parameters()])
    upd = learner.update(t.subset(np.arange(32)))
    assert learner.step == 6 and set(upd) >= {"v_loss", "q_loss", "actor_loss", "actor_lr"}


def test_deterministic_given_seed(hopper_transitions):
    t = hopper_transitions
    cfg = dataclasses.replace(SMALL, num_updates=10, dropout=0.1)
    runs = [IQLLearner(t.obs_dim, t.act_dim, dataclasses.replace(cfg, seed=s)) for s in (0, 0, 1)]
    for r in runs:
        r.fit(t, progress=False)
    assert all(torch.equal(x, y) for x, y in zip(params(runs[0]), params(runs[1]), strict=True))
    assert not torch.equal(params(runs[0])[0], params(runs[2])[0])


def test_resume_equals_uninterrupted(hopper_transitions, tmp_path):
    t = hopper_transitions
    cfg = dataclasses.replace(SMALL, num_updates=60, dropout=0.1)
    full = IQLLearner(t.obs_dim, t.act_dim, cfg)
    full.fit(t, progress=False)

    part = IQLLearner(t.obs_dim, t.act_dim, cfg)
    part.fit(t, num_updates=25, progress=False)
    torch.save(part.state_dict(), tmp_path / "state.pt")
    resumed = IQLLearner(t.obs_dim, t.act_dim, cfg)
    resumed.load_state_dict(torch_load(tmp_path / "state.pt"))
    assert resumed.step == 25
    resumed.fit(t, progress=False)
    assert resumed.step == 60
    for x, y in zip(params(full), params(resumed), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6)
    assert resumed.actor_scheduler.get_last_lr() == full.actor_scheduler.get_last_lr()
    # A checkpoint saved with the training state continues the same way.
    part.save(tmp_path / "train.pt", training_state=True)
    again = IQLLearner.load(tmp_path / "train.pt")
    again.fit(t, progress=False)
    for x, y in zip(params(full), params(again), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- checkpoints


def test_standalone_value_state_reproduces_v(hopper_transitions):
    """The value state bundled in DT checkpoints gives the learner's V exactly."""
    t = hopper_transitions
    learner = IQLLearner(t.obs_dim, t.act_dim, dataclasses.replace(SMALL, num_updates=5))
    learner.fit(t, progress=False)
    obs = t.observations[:50]
    v = IQLValue.from_state_dict(learner.value_state())
    np.testing.assert_array_equal(v(torch.from_numpy(obs)).numpy(), learner.value(obs))


# ----------------------------------------------------------------------------- evaluation


def test_policy_runs_in_hopper(hopper_transitions):
    t = hopper_transitions
    learner = IQLLearner(t.obs_dim, t.act_dim, dataclasses.replace(SMALL, num_updates=5))
    learner.fit(t, progress=False)
    policy = learner.policy()
    env = gym.make("Hopper-v4")
    obs, _ = env.reset(seed=0)
    policy.reset(1)
    for _ in range(3):
        a = policy.act(obs[None])
        assert a.shape == (1, 3) and a.dtype == np.float32 and np.abs(a).max() <= 1
        obs, r, term, trunc, _ = env.step(a[0])
        policy.observe(np.array([r]), np.array([term or trunc]))
    env.close()
    res = evaluate_policy(
        policy, "hopper-medium", episodes=2, num_envs=2, max_episode_steps=5, progress=False
    )
    assert res.lengths.shape == (2,) and (res.lengths <= 5).all() and np.isfinite(res.returns).all()


def test_actor_lr_schedule_length_is_its_own_setting(hopper_transitions):
    """By default the actor's cosine reaches 0 at num_updates; actor_lr_schedule_updates keeps a
    longer schedule's length, so a short budget is a truncated long run (d3rlpy's reproduction)."""
    t = hopper_transitions
    lrs = {}
    for length in (None, 100):
        cfg = dataclasses.replace(SMALL, num_updates=10, actor_lr_schedule_updates=length)
        learner = IQLLearner(t.obs_dim, t.act_dim, cfg)
        learner.fit(t, progress=False)
        lrs[length] = learner.actor_scheduler.get_last_lr()[0]
    assert lrs[None] == pytest.approx(0.0, abs=1e-12)
    assert lrs[100] == pytest.approx(SMALL.lr * 0.5 * (1 + np.cos(np.pi * 10 / 100)))
    with pytest.raises(ValueError, match="actor_lr_schedule_updates"):
        IQLConfig(actor_lr_schedule_updates=0)


def test_new_keys_at_their_neutral_value_keep_stored_artifacts_valid():
    from ipd.artifacts import augment_hash_config, without_neutral

    assert without_neutral("value", {"lr": 3e-4, "actor_lr_schedule_updates": None}) == {"lr": 3e-4}
    assert without_neutral("value", {"actor_lr_schedule_updates": 10**6}) == {
        "actor_lr_schedule_updates": 10**6
    }
    plain, check = augment_hash_config({"quantile": 0.1, "acceptance": "sampled", "simulator_check": True})
    assert plain == {"quantile": 0.1} and check
    assert augment_hash_config({"acceptance": "ensemble_min"})[0] == {"acceptance": "ensemble_min"}
