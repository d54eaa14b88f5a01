"""Pessimistic acceptance: planned actions re-scored under every elite, the worst one kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ipd.planning import PlannerConfig
from ipd.planning.augment import AugmentConfig, augment_dataset
from ipd.planning.pessimism import member_returns
from tests.test_augment import CountingPlanner, chain_transitions


class LinearMembers:
    """K members on 1-D states: s' = s + a; member k pays reward (1 + k) * a; terminal past s = 5."""

    def __init__(self, k: int = 3):
        self.elites = torch.arange(k)

    def step_members(self, states, actions):
        nxt = states + actions[None]
        scale = 1.0 + self.elites.float()[:, None]
        return nxt, scale * actions[None, :, 0], nxt[..., 0] > 5


def test_member_returns_follow_each_member_and_stop_at_its_end():
    model = LinearMembers()
    starts = np.zeros((3, 1), np.float32)
    actions = np.ones((3, 4, 1), np.float32)
    lengths = np.array([4, 2, 0])
    out = member_returns(model, lambda s: 10.0 + s[:, 0], starts, actions, lengths, gamma=0.5)
    assert out.shape == (3, 3)
    for k in range(3):  # rollout 0: 4 steps of reward (1 + k), then V(s = 4) = 14 discounted by 0.5^4
        assert out[k, 0] == pytest.approx((1 + k) * (1 + 0.5 + 0.25 + 0.125) + 0.5**4 * 14)
        assert out[k, 1] == pytest.approx((1 + k) * 1.5 + 0.25 * 12)  # only its own 2 steps
        assert out[k, 2] == pytest.approx(10.0)  # no step: V(start)
    # a member that terminates stops collecting and is not bootstrapped
    far = member_returns(
        model, lambda s: 10.0 + s[:, 0], np.full((1, 1), 4.0, np.float32), actions[:1], lengths[:1], 0.5
    )
    assert far[:, 0] == pytest.approx([1.0 + 0.5, 2 * 1.5, 3 * 1.5])


class DisagreeingModel(LinearMembers):
    """Members agree on the states but one predicts a large loss: only pessimism sees it."""

    def step_members(self, states, actions):
        nxt, _, term = super().step_members(states, actions)
        rewards = torch.ones_like(nxt[..., 0])
        rewards[0] = -50.0
        return nxt, rewards, term


def accepted_count(planner, value: float, **cfg) -> int:
    """Rollouts stage 2 accepts on 5 chain episodes (one start each) with V = ``value`` everywhere."""
    cfg = AugmentConfig(quantile=0.3, max_per_trajectory=1, rollout_length=3, batch_size=8, **cfg)
    res = augment_dataset(
        chain_transitions(n_eps=5, length=30),
        planner,
        lambda s: np.full(len(s), value),
        lambda s, a: -s[:, 0],
        1.0,
        cfg,
        0.99,
        torch.device("cpu"),
        progress=False,
    )
    return res.stats["accepted"]


def stand_in_planner(model=None) -> CountingPlanner:
    planner = CountingPlanner(3)  # predicts a return of 100, far above the data's at V = 0
    planner.cfg = PlannerConfig(num_samples=4, num_elites=2, horizon=2, iterations=1)
    if model is not None:
        planner.model, planner.value_fn = model, None
    return planner


@pytest.mark.parametrize("acceptance, accepted", [("sampled", 5), ("ensemble_min", 0)])
def test_ensemble_min_acceptance_rejects_what_one_elite_disputes(acceptance, accepted):
    assert accepted_count(stand_in_planner(DisagreeingModel()), 0.0, acceptance=acceptance) == accepted


def test_relative_margin_scales_with_the_continuation_value():
    planner = stand_in_planner()
    # V = 1000 everywhere: the data's continuation is ~1000, the stand-in's return 100 never beats it
    for margin in (0.0, 0.05):
        assert accepted_count(planner, 1000.0, acceptance="sampled", min_relative_improvement=margin) == 0
    # V = 0: the continuation is 1-3 steps of reward 1; a 5% margin keeps them, 200x drops them
    for margin, accepted in ((0.05, 5), (200.0, 0)):
        assert accepted_count(planner, 0.0, acceptance="sampled", min_relative_improvement=margin) == accepted
    with pytest.raises(ValueError, match="min_relative_improvement"):
        AugmentConfig(min_relative_improvement=-1.0)
    with pytest.raises(ValueError, match="acceptance"):
        AugmentConfig(acceptance="optimistic")
