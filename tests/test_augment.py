"""Stage 2 augmenter: scoring, selection, acceptance gates, stitching, resume."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ipd.data import Trajectories, Transitions, read_hdf5, write_hdf5
from ipd.planning import PlannerConfig
from ipd.planning.augment import (
    AugmentConfig,
    accept_rollouts,
    augment_dataset,
    plan_rollouts,
    score_steps,
    select_starts,
    stitch,
    truncated_continuation,
)


def chain_transitions(n_eps: int = 4, length: int = 10, timeout_last: bool = True) -> Transitions:
    """1-D states s=k, reward 1 per step; episodes end by timeout (or terminal)."""
    obs = np.concatenate([np.arange(length, dtype=np.float32)] * n_eps)[:, None]
    nxt = obs + 1
    ends = np.tile(np.arange(length) == length - 1, n_eps)
    terminals = ends & (not timeout_last)
    timeouts = ends & timeout_last
    return Transitions(obs, np.zeros((len(obs), 1)), np.ones(len(obs)), nxt, terminals, timeouts)


def test_continuation_is_l_step_bootstrapped_return():
    t = chain_transitions(n_eps=1, length=10, timeout_last=False)
    traj = Trajectories.from_transitions(t)
    gamma = 0.5
    v_next = np.full(len(t), 4.0, np.float32)
    cont = truncated_continuation(traj, v_next, gamma, np.array([0, 9, 8]), np.full(3, 3))
    # mid-episode: 1 + .5 + .25 + .125 * V(s_{t+3})
    assert cont[0] == pytest.approx(1 + 0.5 + 0.25 + 0.125 * 4.0)
    # last step of a terminal episode: only its reward, no bootstrap
    assert cont[1] == pytest.approx(1.0)
    # two steps before the terminal: 1 + .5, no bootstrap
    assert cont[2] == pytest.approx(1.5)


def test_gap_bootstraps_at_timeouts_but_not_terminals():
    v = lambda s: np.full(len(s), 10.0)
    q = lambda s, a: np.full(len(s), 10.0)
    for timeout, expect_last in ((True, 1 + 0.9 * 10.0), (False, 1.0)):
        traj = Trajectories.from_transitions(chain_transitions(1, 5, timeout_last=timeout))
        s = score_steps(traj, v, q, 0.9)
        assert s.gap[4] == pytest.approx(10.0 - expect_last)
        assert np.allclose(s.advantage, 0.0)


def test_select_starts_respects_per_trajectory_cap_and_spacing():
    t = chain_transitions(n_eps=3, length=50)
    traj = Trajectories.from_transitions(t)
    rng = np.random.default_rng(0)
    n = len(t)
    scores = SimpleNamespace(advantage=rng.normal(size=n), gap=rng.normal(size=n))
    cfg = AugmentConfig(quantile=0.5, max_per_trajectory=2, min_spacing=10, max_starts=100)
    starts = select_starts(traj, scores, cfg)
    ep = traj.episode_ids[starts]
    assert len(starts) > 0
    for e in np.unique(ep):
        rows = np.sort(starts[ep == e])
        assert len(rows) <= 2
        assert np.all(np.diff(rows) >= 10)
    # capped globally, worst first
    assert len(select_starts(traj, scores, AugmentConfig(quantile=0.5, max_starts=1))) == 1


def test_select_by_advantage_picks_low_advantage_rows():
    t = chain_transitions(n_eps=1, length=100)
    traj = Trajectories.from_transitions(t)
    adv = np.zeros(100)
    adv[[10, 60]] = -5.0
    scores = SimpleNamespace(advantage=adv, gap=np.zeros(100))
    cfg = AugmentConfig(select_by="advantage", advantage_threshold=-1.0, max_per_trajectory=5, min_spacing=1)
    assert sorted(select_starts(traj, scores, cfg).tolist()) == [10, 60]


def _rollouts(b: int, length: int, unc: float = 0.0, ret: float = 5.0, obs_dim: int = 1):
    return {
        "states": np.arange(b * (length + 1) * obs_dim, dtype=np.float32).reshape(b, length + 1, obs_dim)
        + 100,
        "actions": np.zeros((b, length, 1), np.float32),
        "rewards": np.full((b, length), 2.0, np.float32),
        "terminals": np.zeros((b, length), bool),
        "uncertainty": np.full((b, length), unc, np.float32),
        "values": np.ones((b, length + 1), np.float32),
        "alive": np.ones((b, length), bool),
        "lengths": np.full(b, length),
        "planned_return": np.full(b, ret, np.float32),
    }


def test_uncertainty_gate_and_improvement_gate():
    ro = _rollouts(3, 4)
    ro["uncertainty"][1, 2] = 9.0  # one unreliable step
    ro["planned_return"][2] = 1.0  # not better than the dataset
    ro["planned_return"][0] = np.nan
    ok, imp = accept_rollouts(ro, continuation=np.full(3, 2.0), threshold=1.0, min_improvement=0.0)
    assert ok.tolist() == [False, False, False]
    ro["planned_return"][0] = 5.0
    ok, imp = accept_rollouts(ro, continuation=np.full(3, 2.0), threshold=1.0, min_improvement=0.0)
    assert ok.tolist() == [True, False, False]
    assert imp[0] == pytest.approx(3.0)
    # uncertainty after termination (alive=False) is ignored
    ro["alive"][1, 2:] = False
    ok, _ = accept_rollouts(ro, continuation=np.full(3, 2.0), threshold=1.0, min_improvement=0.0)
    assert ok[1]


def test_stitched_trajectories_are_contiguous_and_flagged(tmp_path):
    t = chain_transitions(n_eps=2, length=10)
    traj = Trajectories.from_transitions(t)
    starts = np.array([3, 15])  # episode 0 step 3, episode 1 step 5
    ro = _rollouts(2, 4)
    ro["states"][:, 0, :] = t.observations[starts]  # rollouts start at the dataset state
    ro["terminals"][1, 2] = True
    ro["lengths"][1] = 3
    values = np.arange(len(t), dtype=np.float32)
    out = stitch(traj, starts, ro, np.array([True, True]), values)
    n = len(t)
    assert len(out) == n + (3 + 4) + (5 + 3)
    assert not out.extras["imagined"][:n].any()
    new = Trajectories.from_transitions(out)
    assert len(new) == 4
    s1, l1 = new.starts[2], new.lengths[2]
    assert l1 == 7
    rows = np.arange(s1, s1 + l1)
    assert out.extras["imagined"][rows].tolist() == [False] * 3 + [True] * 4
    assert (out.extras["source_episode"][rows] == 0).all() and (out.extras["start_index"][rows] == 3).all()
    # contiguity: the prefix's last next state is the first imagined state
    assert np.array_equal(out.next_observations[rows[2]], out.observations[rows[3]])
    assert np.array_equal(out.next_observations[rows[3:-1]], out.observations[rows[4:]])
    assert out.timeouts[rows[-1]] and not out.terminals[rows[-1]]
    # second rollout terminated in the model: ends with a terminal, not a timeout
    s2, l2 = new.starts[3], new.lengths[3]
    assert l2 == 8 and out.terminals[s2 + l2 - 1] and not out.timeouts[s2 + l2 - 1]
    assert out.extras["timestep"][s2 + 5] == 5  # timesteps continue from the dataset prefix
    # round trip through the data layer
    write_hdf5(tmp_path / "aug.hdf5", out)
    back = read_hdf5(tmp_path / "aug.hdf5")
    assert set(back.extras) == {"imagined", "source_episode", "start_index", "value", "timestep"}
    assert np.array_equal(back.extras["imagined"], out.extras["imagined"])


class CountingPlanner:
    """Stands in for the MPC planner: counts planned states, returns fixed-improvement rollouts."""

    def __init__(self, length: int):
        self.planned = 0
        self.length = length

    def rollout(self, start_states, length, generator=None, max_uncertainty=None):
        b = len(start_states)
        self.planned += b
        ro = _rollouts(b, length, ret=100.0)
        ro["states"][:, 0] = start_states.numpy()
        return SimpleNamespace(**{k: torch.as_tensor(v) for k, v in ro.items()})


def test_plan_rollouts_resumes_without_replanning(tmp_path):
    starts = np.random.default_rng(0).normal(size=(10, 1)).astype(np.float32)
    cfg = AugmentConfig(batch_size=4, rollout_length=3)
    first = CountingPlanner(3)
    out1 = plan_rollouts(first, starts, cfg, tmp_path, torch.device("cpu"), progress=False)
    assert first.planned == 10 and len(list(tmp_path.glob("batch_*.npz"))) == 3
    # simulate an interruption after two batches: drop the last batch file
    (tmp_path / "batch_00002.npz").unlink()
    second = CountingPlanner(3)
    out2 = plan_rollouts(second, starts, cfg, tmp_path, torch.device("cpu"), progress=False)
    assert second.planned == 2  # only the missing batch is planned again
    for k in out1:
        assert np.array_equal(out1[k], out2[k])


def test_augment_dataset_end_to_end_with_stand_in_planner():
    t = chain_transitions(n_eps=5, length=30)
    cfg = AugmentConfig(
        quantile=0.3, max_per_trajectory=1, rollout_length=3, batch_size=8, max_prefix_length=None
    )
    planner = CountingPlanner(3)
    planner.cfg = PlannerConfig(num_samples=4, num_elites=2, horizon=2, iterations=1)
    res = augment_dataset(
        t,
        planner,
        value_fn=lambda s: np.zeros(len(s)),
        q_fn=lambda s, a: -s[:, 0],
        uncertainty_threshold=1.0,
        cfg=cfg,
        gamma=0.99,
        device=torch.device("cpu"),
        progress=False,
    )
    st = res.stats
    assert st["selected"] == 5 and st["accepted"] == 5 and st["acceptance_rate"] == 1.0
    assert st["imagined_rows"] == 15
    assert st["planner_model_steps"] == 15 * 4 * 2 * 1 and st["planner_model_steps_per_s"] > 0
    assert st["mean_improvement_accepted"] > 0
    extra = res.dataset.extras
    stitched = np.arange(len(res.dataset)) >= len(t)
    # each stitched trajectory holds its dataset prefix (start_index rows) then 3 imagined rows
    prefix_rows = (stitched & ~extra["imagined"]).sum()
    starts_of_new = np.unique(extra["start_index"][stitched])
    assert prefix_rows == extra["start_index"][stitched & extra["imagined"]][::3].sum()
    assert (starts_of_new >= 0).all()
    assert np.allclose(extra["value"][~stitched], 0.0)
    assert st["imagined_row_share"] == pytest.approx(15 / len(res.dataset))
    assert st["stitched_row_share"] == pytest.approx(stitched.mean())
    assert st["trajectories_with_starts"] == 5


def test_prefix_is_capped_at_max_prefix_length():
    t = chain_transitions(n_eps=1, length=40)
    traj = Trajectories.from_transitions(t)
    starts = np.array([30, 3])
    ro = _rollouts(2, 4, ret=1.0)
    values = np.zeros(len(t), np.float32)
    out = stitch(traj, starts, ro, np.array([True, True]), values, max_prefix_length=19)
    extra = out.extras
    first, second = (extra["start_index"] == 30), (extra["start_index"] == 3)
    assert (first & ~extra["imagined"]).sum() == 19 and (second & ~extra["imagined"]).sum() == 3
    # the capped prefix is the last 19 dataset steps before the start, in order
    np.testing.assert_array_equal(out.observations[first & ~extra["imagined"], 0], np.arange(11, 30))
    assert AugmentConfig().max_prefix_length == 19  # context (20) - 1


def test_selection_spreads_the_budget_over_trajectories():
    t = chain_transitions(n_eps=4, length=100)
    traj = Trajectories.from_transitions(t)
    rng = np.random.default_rng(0)
    adv = rng.normal(size=len(t))
    adv[:100] -= 10.0  # episode 0 is by far the worst: a global worst-first pick would fill up on it
    scores = score_steps(traj, lambda s: np.zeros(len(s)), lambda s, a: np.zeros(len(s)), 0.9)
    scores.advantage[:] = adv
    cfg = AugmentConfig(
        select_by="advantage", quantile=0.5, max_per_trajectory=4, min_spacing=5, max_starts=4
    )
    picked = select_starts(traj, scores, cfg)
    assert sorted(traj.episode_ids[picked].tolist()) == [0, 1, 2, 3]  # one per trajectory first
    assert picked[0] == int(np.argmin(adv))  # the worst start of all comes first


def test_acceptance_compares_with_the_dataset_over_the_rollout_own_length():
    t = chain_transitions(n_eps=1, length=20)
    traj = Trajectories.from_transitions(t)
    v_next = np.full(len(t), 10.0, np.float32)
    rows, lengths = np.array([0, 0, 18]), np.array([2, 5, 5])
    cont = truncated_continuation(traj, v_next, 0.5, rows, lengths)
    assert cont[0] == pytest.approx(1 + 0.5 + 0.25 * 10)
    assert cont[1] == pytest.approx(sum(0.5**k for k in range(5)) + 0.5**5 * 10)
    assert cont[2] == pytest.approx(1 + 0.5 + 0.25 * 10)  # only two steps left, then the timeout's V
    ro = _rollouts(3, 5, ret=100.0)
    ro["lengths"] = np.array([2, 5, 4])
    accepted, _ = accept_rollouts(ro, cont, threshold=10.0, min_improvement=0.0, min_length=3)
    assert accepted.tolist() == [False, True, True]  # too short to count: rejected


def test_simulator_check_keeps_real_outcomes_and_only_real_gains():
    from ipd.planning.simulator_check import check_in_simulator

    t = chain_transitions(n_eps=1, length=40)  # reward 1 per step, V = 0: continuation = Σγ^k
    traj = Trajectories.from_transitions(t)
    starts = np.array([5, 10, 20, 30])
    ro = _rollouts(4, 4)  # the model predicts reward 2 per step
    ro["states"][:, :, 0] = starts[:, None] + np.arange(5)
    augmented = stitch(traj, starts, ro, np.ones(4, bool), np.zeros(len(t), np.float32), None)

    def simulate(obs, actions):  # start 5 gains then falls, 10 gains, 20 loses, 30 is not an exact reset
        s0 = float(obs[0])
        n = 2 if s0 == 5 else len(actions)
        states = np.concatenate([[s0], s0 + 1000 + np.arange(1, n + 1)])[:, None]
        reward = 0.5 if s0 == 20 else 3.0
        return states, np.full(n, reward), s0 == 5, s0 != 30

    gamma = 0.9
    out, stats = check_in_simulator(augmented, simulate, lambda s: np.zeros(len(s)), gamma)
    assert (stats["checked"], stats["exact_resets"], stats["accepted"]) == (4, 3, 2)
    ext = out.extras
    np.testing.assert_array_equal(out.rewards[: len(t)], t.rewards)  # the original rows are untouched
    assert (ext["start_index"][ext["imagined"]] == np.array([5, 5, 10, 10, 10, 10])).all()
    assert np.allclose(out.rewards[ext["imagined"]], 3.0)  # the simulator's rewards, not the model's 2
    tail10 = ext["imagined"] & (ext["start_index"] == 10)
    np.testing.assert_array_equal(out.observations[tail10, 0], [10, 1011, 1012, 1013])
    tail5 = np.flatnonzero(ext["imagined"] & (ext["start_index"] == 5))
    assert out.terminals[tail5[-1]] and not out.timeouts[tail5[-1]]  # the real fall ends the tail
    assert out.timeouts[np.flatnonzero(tail10)[-1]]
    assert ((ext["start_index"] == 10) & ~ext["imagined"]).sum() == 10  # the dataset prefix is kept
    disc4 = sum(gamma**k for k in range(4))
    assert stats["mean_predicted_improvement"] == pytest.approx(disc4)  # 2/step predicted vs 1/step
    real_gains = [(3 + 3 * gamma) - (1 + gamma), 3 * disc4 - disc4, 0.5 * disc4 - disc4]
    assert stats["mean_real_improvement"] == pytest.approx(np.mean(real_gains), rel=1e-5)
    assert stats["mean_improvement_accepted"] == pytest.approx(np.mean(real_gains[:2]), rel=1e-5)
    assert stats["imagined_rows"] == 6
