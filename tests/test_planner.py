"""Batched MPPI/CEM planner on analytic models with known optima."""

from __future__ import annotations

import math

import pytest
import torch

from ipd.models.base import ModelStep
from ipd.planning import Planner, PlannerConfig, shift_mean

torch.set_num_threads(1)


class PointMass:
    """Perfect deterministic point mass: x' = x + 0.1 a, reward -|x'|_1 (optimum: x = 0)."""

    def __init__(self, uncertainty: float = 0.0) -> None:
        self.u = uncertainty

    def step(self, states, actions, generator=None) -> ModelStep:
        ns = states + 0.1 * actions
        zeros = torch.zeros(states.shape[0])
        return ModelStep(ns, -ns.abs().sum(-1), zeros.bool(), zeros + self.u)


class Clock:
    """State [x, t, k]: reward 1 per step, terminates at the step where t+1 >= k; uncertainty
    ``u_after`` from step ``u_from`` on (0 before)."""

    def __init__(self, u_from: int = 10**9, u_after: float = 0.0) -> None:
        self.u_from, self.u_after = u_from, u_after

    def step(self, states, actions, generator=None) -> ModelStep:
        ns = states.clone()
        ns[:, 0] += 0.1 * actions[:, 0]
        ns[:, 1] += 1
        term = ns[:, 1] >= ns[:, 2]
        u = torch.where(states[:, 1] >= self.u_from, self.u_after, 0.0)
        return ModelStep(ns, torch.ones(states.shape[0]), term, u)


def clock_states(b: int, k: float) -> torch.Tensor:
    return torch.tensor([[0.0, 0.0, k]]).repeat(b, 1)


def small_cfg(**kw) -> PlannerConfig:
    base = dict(horizon=8, num_samples=64, num_elites=8, iterations=3, seed=0)
    base.update(kw)
    return PlannerConfig(**base)


def random_return(model, x0: torch.Tensor, length: int, gamma: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    s, ret = x0, torch.zeros(x0.shape[0])
    for t in range(length):
        a = torch.rand(x0.shape, generator=g) * 2 - 1
        out = model.step(s, a)
        ret, s = ret + gamma**t * out.rewards, out.next_states
    return ret


@pytest.mark.parametrize("method", ["mppi", "cem"])
def test_planner_moves_to_optimum_and_beats_random(method):
    torch.manual_seed(0)
    x0 = torch.rand(32, 2) * 3 - 1.5
    model = PointMass()
    planner = Planner(model, small_cfg(method=method), act_dim=2)
    res = planner.plan(x0)
    # First action points towards the origin in (almost) every coordinate that is far from it.
    far = x0.abs() > 0.3
    assert (torch.sign(res.action[far]) == -torch.sign(x0[far])).float().mean() > 0.95
    ro = planner.rollout(x0, length=20)
    final = ro.states[:, -1].abs().sum(-1)
    assert (final < 0.5 * x0.abs().sum(-1) + 0.1).all()
    rand = random_return(model, x0, 20, planner.cfg.gamma)
    # Planner's realised return is much better than random actions (returns are negative).
    assert ro.planned_return.mean() > 0.4 * rand.mean()
    assert (ro.planned_return > rand).float().mean() > 0.95


def test_batched_equals_one_by_one_with_same_noise():
    torch.manual_seed(0)
    x0 = torch.randn(5, 2)

    def prior(s):
        return torch.tanh(-2 * s)

    def value(s):
        return -3 * s.abs().sum(-1)

    cfg = small_cfg(prior_fraction=0.25, max_batch=None)
    planner = Planner(PointMass(), cfg, act_dim=2, value_fn=value, prior=prior)
    noise = planner.draw_noise(5, torch.Generator().manual_seed(3), torch.device("cpu"))
    init = torch.randn(5, cfg.horizon, 2) * 0.3
    full = planner.plan(x0, init_mean=init, noise=noise)
    chunked = Planner(PointMass(), small_cfg(prior_fraction=0.25, max_batch=2), 2, value, prior).plan(
        x0, init_mean=init, noise=noise
    )
    for i in range(5):
        one = planner.plan(x0[i : i + 1], init_mean=init[i : i + 1], noise=noise[:, i : i + 1])
        for r in (full, chunked):
            torch.testing.assert_close(r.mean[i : i + 1], one.mean, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(r.std[i : i + 1], one.std, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(r.action[i : i + 1], one.action, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(r.best_return[i : i + 1], one.best_return, atol=1e-4, rtol=1e-5)


def test_same_seed_reproduces_and_generator_is_used():
    x0 = torch.randn(4, 2)
    a = Planner(PointMass(), small_cfg(seed=7), 2).plan(x0).mean
    b = Planner(PointMass(), small_cfg(seed=7), 2).plan(x0).mean
    c = Planner(PointMass(), small_cfg(seed=7), 2).plan(x0, generator=torch.Generator().manual_seed(8)).mean
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_termination_stops_reward_and_value():
    gamma, k = 0.9, 3
    value = lambda s: torch.full((s.shape[0],), 100.0)
    planner = Planner(Clock(), small_cfg(gamma=gamma, horizon=8), act_dim=1, value_fn=value)
    res = planner.plan(clock_states(2, k))
    expect = sum(gamma**j for j in range(k))  # terminating step's reward counts, nothing after
    torch.testing.assert_close(res.best_return, torch.full((2,), expect))
    torch.testing.assert_close(res.expected_return, torch.full((2,), expect))
    # Without termination inside the horizon the value is bootstrapped.
    res = planner.plan(clock_states(1, 100))
    expect = sum(gamma**j for j in range(8)) + gamma**8 * 100
    torch.testing.assert_close(res.best_return, torch.full((1,), expect))


def test_uncertainty_penalty_lowers_and_cut_cuts():
    gamma, h = 0.9, 6
    x0 = clock_states(3, 100)
    noise = Planner(Clock(), small_cfg(horizon=h), 1).draw_noise(3, torch.Generator(), torch.device("cpu"))
    clean = Planner(Clock(), small_cfg(horizon=h, gamma=gamma), 1).plan(x0, noise=noise)
    torch.testing.assert_close(clean.best_return, torch.full((3,), sum(gamma**j for j in range(h))))
    # Penalty: steps 2.. report U=5 > threshold 1 -> -lambda * U each (discounted).
    cfg = small_cfg(horizon=h, gamma=gamma, uncertainty_threshold=1.0, uncertainty_penalty=0.5)
    pen = Planner(Clock(u_from=2, u_after=5.0), cfg, 1).plan(x0, noise=noise)
    drop = sum(gamma**j * 0.5 * 5.0 for j in range(2, h))
    torch.testing.assert_close(pen.best_return, clean.best_return - drop)
    # Below the threshold nothing is penalised.
    below = Planner(Clock(u_from=2, u_after=0.5), cfg, 1).plan(x0, noise=noise)
    torch.testing.assert_close(below.best_return, clean.best_return)
    # Cut: the trajectory stops at the first unreliable step (its reward excluded, no terminal value).
    cfg = small_cfg(horizon=h, gamma=gamma, uncertainty_mode="cut", uncertainty_threshold=1.0)
    value = lambda s: torch.full((s.shape[0],), 100.0)
    cut = Planner(Clock(u_from=2, u_after=5.0), cfg, 1, value_fn=value).plan(x0, noise=noise)
    torch.testing.assert_close(cut.best_return, torch.full((3,), 1 + gamma))


def test_uncertainty_gate_steers_away_from_unreliable_region():
    """Reward grows to the right, but the model is unreliable for x > 0.3: gated planners stay left."""

    class Tempting:
        def step(self, states, actions, generator=None):
            ns = states + 0.1 * actions
            x = ns[:, 0]
            return ModelStep(ns, x, torch.zeros_like(x, dtype=torch.bool), torch.where(x > 0.3, 10.0, 0.0))

    x0 = torch.zeros(8, 1)
    free = Planner(Tempting(), small_cfg(horizon=10, uncertainty_penalty=0.0), 1).rollout(x0, 10)
    assert (free.states[:, -1, 0] > 0.8).all()
    for mode in ("penalty", "cut"):
        cfg = small_cfg(horizon=10, uncertainty_mode=mode, uncertainty_threshold=1.0, cut_penalty=10.0)
        ro = Planner(Tempting(), cfg, 1).rollout(x0, 10)
        assert (ro.uncertainty < 1.0).all(), mode
        assert (ro.states[:, -1, 0] > 0.15).all(), mode  # still goes right as far as it is reliable


def test_nan_returns_score_minus_inf_and_plan_stays_finite():
    class NaNRight:
        """Reward x' grows to the right, but is NaN for x' > 0.3 (or everywhere)."""

        def __init__(self, everywhere: bool = False) -> None:
            self.everywhere = everywhere

        def step(self, states, actions, generator=None):
            ns = states + 0.1 * actions
            r = ns[:, 0].clone()
            bad = torch.ones_like(r, dtype=torch.bool) if self.everywhere else ns[:, 0] > 0.3
            r[bad] = math.nan
            return ModelStep(ns, r, torch.zeros_like(bad), torch.zeros_like(r))

    x0 = torch.zeros(4, 1)
    res = Planner(NaNRight(), small_cfg(), 1).plan(x0)
    assert torch.isfinite(res.mean).all() and torch.isfinite(res.best_return).all()
    # No NaN-scored candidate became an elite: the refitted mean never enters the NaN region
    # (elite trajectories are linear in the actions, so their average stays where they all are).
    assert (0.1 * res.mean[..., 0].cumsum(1) <= 0.3 + 1e-6).all()
    assert (res.mean[:, 0] > 0).all()  # but it still moves right, towards the reward
    for method in ("mppi", "cem"):
        res = Planner(NaNRight(everywhere=True), small_cfg(method=method), 1).plan(x0)
        assert (res.best_return == -math.inf).all() and (res.expected_return == -math.inf).all()
        for t in (res.mean, res.std, res.action):
            assert torch.isfinite(t).all()
    # A NaN value function also scores -inf (not 0).
    res = Planner(PointMass(), small_cfg(), 1, value_fn=lambda s: torch.full((s.shape[0],), math.nan)).plan(
        x0
    )
    assert (res.best_return == -math.inf).all()


def test_prior_share_followed_exactly():
    def prior(s):
        return (-2.0 * s).clamp(-0.7, 0.7)

    cfg = small_cfg(prior_fraction=1.0, prior_noise=0.0, horizon=6)
    x0 = torch.tensor([[3.0, -0.2], [0.05, 1.0]])
    res = Planner(PointMass(), cfg, 2, prior=prior).plan(x0)
    s, expect = x0, []
    for _ in range(6):
        a = prior(s)
        expect.append(a)
        s = s + 0.1 * a
    torch.testing.assert_close(res.mean, torch.stack(expect, 1))
    torch.testing.assert_close(res.std, torch.full_like(res.std, cfg.min_std))


def test_warm_start_shift():
    m = torch.arange(12.0).view(1, 4, 3)
    sh = shift_mean(m)
    torch.testing.assert_close(sh[:, :3], m[:, 1:])
    assert (sh[:, 3] == 0).all()
    # With zero exploration noise every candidate is the initial mean: plan returns it unchanged.
    planner = Planner(PointMass(), small_cfg(horizon=4), 3)
    init = torch.rand(2, 4, 3) * 2 - 1
    res = planner.plan(torch.zeros(2, 3), init_mean=init, noise=torch.zeros(3, 2, 64, 4, 3))
    torch.testing.assert_close(res.mean, init)

    # The rollout passes the shifted previous mean to the next plan call.
    class Spy(Planner):
        calls: list = []

        def plan(self, states, init_mean=None, generator=None, noise=None):
            out = super().plan(states, init_mean, generator, noise)
            Spy.calls.append((init_mean.clone(), out.mean.clone()))
            return out

    Spy(PointMass(), small_cfg(horizon=4), 2).rollout(torch.randn(3, 2), 3)
    assert len(Spy.calls) == 3 and (Spy.calls[0][0] == 0).all()
    for (_, prev), (nxt, _) in zip(Spy.calls[:-1], Spy.calls[1:], strict=True):
        torch.testing.assert_close(nxt, shift_mean(prev))


def test_rollout_shapes_masks_lengths():
    gamma = 0.9
    x0 = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 5.0], [0.0, 0.0, 50.0]])  # terminate after 2, 5, never
    value = lambda s: 10.0 + s[:, 0]
    planner = Planner(Clock(), small_cfg(gamma=gamma, horizon=4), 1, value_fn=value)
    ro = planner.rollout(x0, length=7, progress=False)
    assert ro.states.shape == (3, 8, 3) and ro.actions.shape == (3, 7, 1)
    for t in (ro.rewards, ro.terminals, ro.uncertainty, ro.alive, ro.plan_returns):
        assert t.shape == (3, 7)
    assert ro.values.shape == (3, 8)
    assert ro.lengths.tolist() == [2, 5, 7]
    assert ro.terminated.tolist() == [True, True, False] and ro.valid.all()
    steps = torch.arange(7)
    assert (ro.alive == (steps[None] < ro.lengths[:, None])).all()
    assert ro.terminals.sum(1).tolist() == [1, 1, 0] and ro.terminals[0, 1] and ro.terminals[1, 4]
    assert (ro.rewards == ro.alive.float()).all() and (ro.actions[~ro.alive] == 0).all()
    assert torch.isnan(ro.plan_returns[~ro.alive]).all() and torch.isfinite(ro.plan_returns[ro.alive]).all()
    # Padded states repeat the last state; the step counter shows how many steps were executed.
    assert ro.states[:, -1, 1].tolist() == [2.0, 5.0, 7.0]
    torch.testing.assert_close(ro.states[0, 3:], ro.states[0, 2:3].expand(5, 3))
    # Values: V of reached non-terminal states, 0 at the terminal state and after.
    assert ro.values[0, 2:].abs().sum() == 0 and (ro.values[2] > 9).all()
    torch.testing.assert_close(ro.values[2, 3], value(ro.states[2, 3:4])[0])
    disc = gamma ** torch.arange(7.0)
    expect = torch.stack(
        [disc[:2].sum(), disc[:5].sum(), disc.sum() + gamma**7 * value(ro.states[2, 7:8])[0]]
    )
    torch.testing.assert_close(ro.planned_return, expect)


def test_rollout_stops_on_non_finite_model_output():
    class Explodes:
        def step(self, states, actions, generator=None):
            ns = states + 0.1 * actions
            ns[states[:, 1] >= 2] = math.nan
            ns[:, 1] = states[:, 1] + 1
            z = torch.zeros(states.shape[0])
            return ModelStep(ns, z, z.bool(), z)

    ro = Planner(Explodes(), small_cfg(horizon=3), 2).rollout(torch.zeros(2, 2), 5)
    assert ro.lengths.tolist() == [2, 2] and not ro.valid.any() and torch.isfinite(ro.states).all()


def test_value_bootstrap_drives_planner_to_bonus_region():
    """Zero reward; V gives a large bonus for x > 0.5 (or x < -0.5): the planner goes there."""

    class Free:
        def step(self, states, actions, generator=None):
            z = torch.zeros(states.shape[0])
            return ModelStep(states + 0.1 * actions, z, z.bool(), z)

    for sign in (1.0, -1.0):
        value = lambda s, sign=sign: 10.0 * (sign * s[:, 0] > 0.5).float()
        planner = Planner(Free(), small_cfg(horizon=10, num_samples=128), 1, value_fn=value)
        res = planner.plan(torch.zeros(4, 1))
        end = 0.1 * res.mean[..., 0].sum(1)  # where the planned mean sequence ends
        assert (sign * end > 0.5).all() and (sign * res.action[:, 0] > 0).all()
        torch.testing.assert_close(res.best_return, torch.full((4,), 10.0 * 0.99**10))


def test_rollout_cut_at_max_uncertainty_keeps_only_trusted_steps():
    """Clock's U jumps to 5 from step 3 on: with max_uncertainty=1 the rollout keeps steps 0-2."""
    gamma = 0.9
    value = lambda s: 10.0 + 0 * s[:, 0]
    planner = Planner(Clock(u_from=3, u_after=5.0), small_cfg(gamma=gamma, horizon=3), 1, value_fn=value)
    x0 = clock_states(2, 50.0)
    cut = planner.rollout(x0, length=8, max_uncertainty=1.0)
    assert cut.lengths.tolist() == [3, 3] and cut.cut.all() and cut.valid.all() and not cut.terminated.any()
    assert (cut.uncertainty[cut.alive] <= 1.0).all() and not cut.alive[:, 3:].any()
    expect = sum(gamma**k for k in range(3)) + gamma**3 * 10.0  # trusted part bootstrapped with V
    torch.testing.assert_close(cut.planned_return, torch.full((2,), expect))
    full = planner.rollout(x0, length=8)
    assert full.lengths.tolist() == [8, 8] and not full.cut.any()
