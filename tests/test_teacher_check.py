"""Teacher check: the stage-1 actor run closed loop in every elite, against the data's returns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ipd.data import Transitions
from ipd.models.world_model import EnsembleWorldModel, WorldModelConfig
from ipd.planning.pessimism import member_returns
from ipd.planning.teacher_check import (
    closed_loop_rollouts,
    episode_starts_and_returns,
    member_returns_closed_loop,
    teacher_check,
)
from tests.test_augment import chain_transitions


class LinearElites:
    """The EnsembleWorldModel surface the check uses, on 1-D states: elite k steps s' = s + a and
    pays (1 + k)·a; a state past 5 terminates."""

    def __init__(self, k: int = 3):
        self.elites, self.device = torch.arange(k), torch.device("cpu")

    def step_members(self, states, actions):
        nxt = states + actions
        rewards = (1.0 + self.elites.float()[:, None]) * actions[..., 0]
        return nxt, rewards, nxt[..., 0] > 5


def step_actor(s: torch.Tensor) -> torch.Tensor:
    return torch.ones(len(s), 1)


def test_each_elite_runs_its_own_trajectory_until_its_termination():
    out = member_returns_closed_loop(LinearElites(), step_actor, np.array([[0.0], [4.0]]), horizon=20)
    assert out.shape == (3, 2)
    # from 0: six steps reach s = 6 > 5 (the terminating step's reward counts), from 4: two
    assert out[:, 0] == pytest.approx([6.0, 12.0, 18.0])
    assert out[:, 1] == pytest.approx([2.0, 4.0, 6.0])
    assert member_returns_closed_loop(LinearElites(), step_actor, np.zeros((1, 1)), 3)[:, 0] == pytest.approx(
        [3.0, 6.0, 9.0]
    )  # the horizon cuts a trajectory that has not ended


class UncertainLinearElites(LinearElites):
    """LinearElites whose uncertainty is the state itself: steps from s > 2 are untrusted."""

    def uncertainty(self, states, actions):
        return states[:, 0]


def test_trusted_return_drops_the_rewards_of_steps_above_the_threshold():
    r = closed_loop_rollouts(UncertainLinearElites(), step_actor, np.array([[0.0], [4.0]]), 20, threshold=2.0)
    assert r.returns[:, 0] == pytest.approx([6.0, 12.0, 18.0])  # the plain return is unchanged
    # from 0 the steps leave s = 0, 1, 2 (trusted) and 3, 4, 5 (untrusted); from 4 both are untrusted
    assert r.trusted_returns[:, 0] == pytest.approx([3.0, 6.0, 9.0])
    assert r.trusted_returns[:, 1] == pytest.approx([0.0, 0.0, 0.0])
    assert r.untrusted_steps.tolist() == [[3, 2]] * 3 and r.steps.tolist() == [[6, 2]] * 3
    plain = closed_loop_rollouts(UncertainLinearElites(), step_actor, np.array([[0.0]]), 20)
    assert (plain.trusted_returns == plain.returns).all() and not plain.untrusted_steps.any()


def test_closed_loop_matches_open_loop_rescoring_on_a_real_ensemble():
    """A constant actor makes closed and open loop the same plan: both paths must agree."""
    torch.manual_seed(0)
    model = EnsembleWorldModel(3, 2, WorldModelConfig(ensemble_size=4, num_elites=3, hidden_dims=(16,)))
    model.terminal_fn = lambda s: s[:, 0] > 2.0
    action = torch.tensor([0.3, -0.5])
    starts = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    closed = member_returns_closed_loop(model, lambda s: action.expand(len(s), 2), starts, horizon=7)
    plans = np.broadcast_to(action.numpy(), (5, 7, 2)).copy()
    open_loop = member_returns(model, None, starts, plans, np.full(5, 7), gamma=1.0)
    np.testing.assert_allclose(closed, open_loop, rtol=1e-5, atol=1e-5)


def test_episode_starts_and_returns_skip_stitched_rows_and_a_cut_off_episode():
    data = chain_transitions(n_eps=3, length=4)  # returns 4 each, starts at s = 0
    cut = Transitions.concatenate([data, chain_transitions(n_eps=1, length=2, timeout_last=False)])
    cut.terminals[-1] = False  # the last episode has no end: left out
    stitched = Transitions.concatenate([data, chain_transitions(n_eps=1, length=4)])
    # a stage-2 dataset: original rows have start_index -1, a stitched trajectory's rows >= 0
    stitched.extras["start_index"] = np.where(np.arange(len(stitched)) < len(data), -1, 2)
    stitched.rewards[len(data) :] = 100.0
    for d in (cut, stitched):
        starts, returns = episode_starts_and_returns(d)
        assert starts[:, 0] == pytest.approx([0, 0, 0]) and returns == pytest.approx([4, 4, 4])
    # over a horizon shorter than the episodes, only their first steps count (as for the teacher)
    assert episode_starts_and_returns(data, horizon=3)[1] == pytest.approx([3, 3, 3])
    endless = chain_transitions(n_eps=1, length=3)
    endless.timeouts[:] = False
    with pytest.raises(ValueError, match="no episode end"):
        episode_starts_and_returns(endless)


class DivergingElites(LinearElites):
    """Elite 2 predicts NaN from its third step on (a state that blew up)."""

    def step_members(self, states, actions):
        nxt, rewards, terminals = super().step_members(states, actions)
        if states[2, 0, 0] >= 2:
            nxt[2], rewards[2] = float("nan"), float("nan")
        return nxt, rewards, terminals


def test_a_diverging_elite_stops_without_poisoning_the_return():
    out = member_returns_closed_loop(DivergingElites(), step_actor, np.zeros((1, 1)), horizon=20)
    assert np.isfinite(out).all()
    assert out[:, 0] == pytest.approx([6.0, 12.0, 6.0])  # elite 2: two steps of 3, then it stops


@pytest.mark.parametrize("data_return, passed", [(5.0, True), (6.0, False)])
def test_teacher_passes_only_when_its_worst_elite_beats_the_data(data_return, passed):
    data = chain_transitions(n_eps=4, length=4)  # all episodes start at s = 0
    data.rewards[:] = data_return / 4
    check = teacher_check(LinearElites(), step_actor, data, horizon=20, num_starts=10)
    assert check.starts == 4 and check.horizon == 20  # no more starts than episodes
    assert check.teacher_return == pytest.approx(6.0)  # the worst elite, not the mean (12)
    assert check.teacher_return_mean_elite == pytest.approx(12.0)
    assert check.data_return == pytest.approx(data_return)
    assert check.passed is passed and check.to_dict()["passed"] is passed


def test_a_trust_threshold_judges_the_teacher_by_its_trusted_return_only():
    """The teacher reaches states the model cannot vouch for: its plain return beats the data,
    its trusted return does not."""
    data = chain_transitions(n_eps=4, length=4)  # all episodes start at s = 0
    data.rewards[:] = 5.0 / 4
    plain = teacher_check(UncertainLinearElites(), step_actor, data, horizon=20, num_starts=10)
    trusted = teacher_check(UncertainLinearElites(), step_actor, data, 20, 10, trust_threshold=2.0)
    assert plain.passed and plain.trusted_return is None and plain.to_dict()["trusted_return"] is None
    assert trusted.teacher_return == pytest.approx(6.0)  # unchanged: the check only adds a judgement
    assert trusted.trusted_return == pytest.approx(3.0)  # s = 0, 1, 2 -> three trusted unit steps
    assert trusted.untrusted_share == pytest.approx(0.5) and trusted.trust_threshold == 2.0
    assert not trusted.passed and trusted.to_dict()["passed"] is False
    lenient = teacher_check(UncertainLinearElites(), step_actor, data, 20, 10, trust_threshold=10.0)
    assert lenient.trusted_return == pytest.approx(6.0) and lenient.untrusted_share == 0 and lenient.passed
