"""Vectorised evaluation: exact episodes, agreement with a plain env loop, seeds, Policy protocol."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ipd.evaluation import EvalResult, evaluate_policy, make_eval_env
from ipd.simulator import reset_to_observation
from ipd.tasks import get_task

HOPPER = get_task("hopper-medium")


class ConstantPolicy:
    def __init__(self, action) -> None:
        self.action = np.asarray(action, np.float32)

    def reset(self, num_envs: int) -> None:
        self.n = num_envs

    def act(self, observations: np.ndarray) -> np.ndarray:
        return np.tile(self.action, (len(observations), 1))

    def observe(self, rewards: np.ndarray, dones: np.ndarray) -> None:
        pass


class LinearPolicy(ConstantPolicy):
    """Deterministic state feedback: episodes of different lengths within one round."""

    def __init__(self, obs_dim: int, act_dim: int, seed: int = 0) -> None:
        self.w = np.random.default_rng(seed).normal(0.0, 0.6, (obs_dim, act_dim))

    def act(self, observations: np.ndarray) -> np.ndarray:
        return np.tanh(observations @ self.w).astype(np.float32)


class RecordingPolicy(LinearPolicy):
    """Records every call so the evaluation loop's use of the protocol can be checked."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple] = []

    def reset(self, num_envs: int) -> None:
        self.calls.append(("reset", num_envs))

    def act(self, observations: np.ndarray) -> np.ndarray:
        self.calls.append(("act", observations.copy()))
        return super().act(observations)

    def observe(self, rewards: np.ndarray, dones: np.ndarray) -> None:
        self.calls.append(("observe", np.array(rewards), np.array(dones)))


def single_env_rollouts(policy, task, seeds, max_episode_steps=1000):
    """The reference: one env, one episode at a time, no vectorisation."""
    env = make_eval_env(task, max_episode_steps)
    returns, lengths = [], []
    for s in seeds:
        obs, _ = env.reset(seed=s)
        total, steps, done = 0.0, 0, False
        while not done:
            action = np.clip(policy.act(obs[None])[0], -1.0, 1.0)
            obs, r, terminated, truncated, _ = env.step(action)
            total, steps, done = total + r, steps + 1, terminated or truncated
        returns.append(total)
        lengths.append(steps)
    env.close()
    return np.array(returns), np.array(lengths)


def test_constant_policy_matches_a_plain_env_loop():
    policy = ConstantPolicy([0.5, -0.2, 0.3])
    res = evaluate_policy(policy, "hopper-medium", episodes=3, num_envs=2, seed=11, progress=False)
    assert isinstance(res, EvalResult) and res.episodes == 3
    assert res.returns.shape == res.lengths.shape == res.normalized_scores.shape == (3,)
    ref_returns, ref_lengths = single_env_rollouts(policy, HOPPER, [11, 12, 13])
    np.testing.assert_array_equal(res.lengths, ref_lengths)
    np.testing.assert_allclose(res.returns, ref_returns, rtol=1e-10)
    assert (res.lengths < 1000).all()  # the hopper falls: terminated episodes, not time limits


def test_episodes_of_different_lengths_in_one_round_match_a_plain_env_loop():
    policy = LinearPolicy(HOPPER.obs_dim, HOPPER.act_dim, seed=3)
    res = evaluate_policy(
        policy, HOPPER, episodes=5, num_envs=3, seed=0, max_episode_steps=200, progress=False
    )
    ref_returns, ref_lengths = single_env_rollouts(policy, HOPPER, range(5), max_episode_steps=200)
    assert len(set(ref_lengths[:3].tolist())) > 1  # envs of the first round finish at different steps
    np.testing.assert_array_equal(res.lengths, ref_lengths)
    np.testing.assert_allclose(res.returns, ref_returns, rtol=1e-10)


def test_results_reproduce_and_do_not_depend_on_num_envs():
    policy = LinearPolicy(HOPPER.obs_dim, HOPPER.act_dim, seed=1)
    kw = {"episodes": 4, "max_episode_steps": 200, "progress": False}
    a = evaluate_policy(policy, HOPPER, num_envs=2, seed=5, **kw)
    b = evaluate_policy(policy, HOPPER, num_envs=2, seed=5, **kw)
    c = evaluate_policy(policy, HOPPER, num_envs=4, seed=5, **kw)
    d = evaluate_policy(policy, HOPPER, num_envs=2, seed=6, **kw)
    np.testing.assert_array_equal(a.returns, b.returns)
    np.testing.assert_array_equal(a.returns, c.returns)
    np.testing.assert_array_equal(a.lengths, c.lengths)
    # seed 6 starts episode e from seed 6 + e: a shifted copy of the seed-5 run
    np.testing.assert_array_equal(d.returns[:3], a.returns[1:])
    assert d.returns[3] != a.returns[3]


def test_normalized_score_formula_and_summary():
    res = evaluate_policy(ConstantPolicy([0.0, 0.0, 0.0]), HOPPER, episodes=2, seed=0, progress=False)
    random_ret, expert_ret = -20.272305, 3234.3  # D4RL hopper reference returns (docs/design.md §3)
    expected = 100.0 * (res.returns - random_ret) / (expert_ret - random_ret)
    np.testing.assert_allclose(res.normalized_scores, expected)
    assert res.normalized_mean == pytest.approx(expected.mean())
    assert res.normalized_std == pytest.approx(expected.std())
    assert res.return_mean == pytest.approx(res.returns.mean())
    assert res.return_std == pytest.approx(res.returns.std())
    d = json.loads(json.dumps(res.to_dict()))  # JSON-friendly
    assert d["episodes"] == 2 and d["task"] == "hopper-medium" and d["seed"] == 0
    assert d["num_envs"] == 2  # recorded: a re-evaluation that must reproduce a run uses the same count
    assert d["returns"] == pytest.approx(res.returns.tolist()) and d["lengths"] == res.lengths.tolist()
    assert d["env_steps"] == int(res.lengths.sum()) and d["wall_time_s"] > 0


def test_policy_protocol_calls():
    policy = RecordingPolicy(HOPPER.obs_dim, HOPPER.act_dim, seed=3)
    res = evaluate_policy(
        policy, HOPPER, episodes=3, num_envs=2, seed=0, max_episode_steps=200, progress=False
    )
    assert res.lengths[0] != res.lengths[1]  # one env of round 0 idles after its episode ended
    # Split the call log into rounds at each reset.
    starts = [i for i, c in enumerate(policy.calls) if c[0] == "reset"]
    assert [policy.calls[i][1] for i in starts] == [2, 2]  # one reset(num_envs) per round
    rounds = [policy.calls[s + 1 : e] for s, e in zip(starts, starts[1:] + [len(policy.calls)], strict=True)]
    first_obs = {}
    for r, calls in enumerate(rounds):
        kinds = [c[0] for c in calls]
        assert kinds == ["act", "observe"] * (len(calls) // 2)  # strictly alternating
        obs = np.stack([c[1] for c in calls[0::2]])  # [T, 2, obs]
        rewards = np.stack([c[1] for c in calls[1::2]])  # [T, 2]
        dones = np.stack([c[2] for c in calls[1::2]])  # [T, 2]
        assert obs.shape[1:] == (2, HOPPER.obs_dim) and rewards.shape == dones.shape == (len(obs), 2)
        assert dones[-1].all() and (np.diff(dones.astype(int), axis=0) >= 0).all()  # done stays done
        first_obs[r] = obs[0]
        for i in range(2):
            episode = 2 * r + i
            if episode >= 3:  # the spare env of the last round is done from the start
                assert dones[:, i].all() and (rewards[:, i] == 0).all()
                continue
            length = int(res.lengths[episode])
            assert np.argmax(dones[:, i]) == length - 1  # done on the episode's last step
            assert rewards[length:, i].sum() == 0  # nothing after the end leaks into the policy
            assert rewards[:, i].sum() == pytest.approx(res.returns[episode], rel=1e-5)
            # after the end the policy sees the final observation, never an autoreset one
            assert (obs[length:, i] == obs[min(length, len(obs) - 1), i]).all()
            assert HOPPER.is_terminal_np(obs[length:, i]).all()  # it fell: the final obs is terminal
    # The first observation of each episode is the env's seeded reset observation.
    env = make_eval_env(HOPPER)
    for episode in range(3):
        np.testing.assert_array_equal(first_obs[episode // 2][episode % 2], env.reset(seed=episode)[0])
    env.close()


def test_time_limit_and_halfcheetah():
    res = evaluate_policy(
        ConstantPolicy(np.zeros(6)),
        "halfcheetah-medium",
        episodes=2,
        seed=0,
        max_episode_steps=30,
        progress=False,
    )
    np.testing.assert_array_equal(res.lengths, [30, 30])  # never terminates: truncated at the limit


def test_bad_policy_outputs_and_arguments_raise():
    with pytest.raises(ValueError, match=r"policy.act returned shape \(1, 2\), expected \(1, 3\)"):
        evaluate_policy(ConstantPolicy([0.0, 0.0]), HOPPER, episodes=1, progress=False)
    with pytest.raises(ValueError, match="NaN/inf"):
        evaluate_policy(ConstantPolicy([0.0, np.nan, 0.0]), HOPPER, episodes=1, progress=False)
    with pytest.raises(ValueError, match="episodes"):
        evaluate_policy(ConstantPolicy([0.0] * 3), HOPPER, episodes=0, progress=False)
    with pytest.raises(ValueError, match="num_envs"):
        evaluate_policy(ConstantPolicy([0.0] * 3), HOPPER, episodes=2, num_envs=0, progress=False)


def test_actions_are_clipped_to_the_action_space():
    big = evaluate_policy(ConstantPolicy([5.0, -5.0, 5.0]), HOPPER, episodes=1, seed=2, progress=False)
    unit = evaluate_policy(ConstantPolicy([1.0, -1.0, 1.0]), HOPPER, episodes=1, seed=2, progress=False)
    np.testing.assert_array_equal(big.returns, unit.returns)
    raw = evaluate_policy(
        ConstantPolicy([5.0, -5.0, 5.0]), HOPPER, episodes=1, seed=2, progress=False, clip_actions=False
    )
    assert raw.returns[0] < unit.returns[0]  # the control cost of the unclipped action


@pytest.mark.parametrize("task_name", ["hopper-medium", "halfcheetah-medium", "walker2d-medium"])
def test_reset_to_observation_reproduces_the_recorded_transition(task_name):
    # Record a transition mid-episode, then reset a fresh env to its observation and replay the action.
    rng = np.random.default_rng(0)
    env = make_eval_env(get_task(task_name))
    obs, _ = env.reset(seed=3)
    for _ in range(3):  # a few steps in, before random actions drive velocities to the clip
        obs, *_ = env.step(rng.uniform(-1, 1, env.action_space.shape))
    action = rng.uniform(-1, 1, env.action_space.shape)
    next_obs, reward, *_ = env.step(action)
    replay = make_eval_env(get_task(task_name))
    replay.reset(seed=99)
    assert reset_to_observation(replay, obs)
    np.testing.assert_allclose(replay.unwrapped._get_obs(), obs, atol=1e-12)
    next_obs2, reward2, *_ = replay.step(action)
    np.testing.assert_allclose(next_obs2, next_obs, atol=1e-8)
    assert reward2 == pytest.approx(reward, abs=1e-8)


def test_reset_to_observation_flags_clipped_velocity_and_rejects_wrong_dims():
    env = make_eval_env(get_task("hopper-medium"))
    env.reset(seed=0)
    obs = np.zeros(11)
    obs[7] = 10.0  # at the qvel clip: the true velocity is unknown
    assert not reset_to_observation(env, obs)
    with pytest.raises(ValueError, match="needs 11"):
        reset_to_observation(env, np.zeros(17))


def test_replay_from_observation_reproduces_the_recorded_rewards():
    from ipd.simulator import replay_from_observation

    rng = np.random.default_rng(1)
    env = make_eval_env(get_task("hopper-medium"))
    obs, _ = env.reset(seed=5)
    start, actions, rewards = obs, rng.uniform(-0.3, 0.3, (6, 3)), []
    for a in actions:
        obs, r, terminated, *_ = env.step(a)
        rewards.append(r)
        assert not terminated
    states, real, terminated, exact = replay_from_observation(
        make_eval_env(get_task("hopper-medium")), start, actions
    )
    assert exact and not terminated and states.shape == (7, 11)
    np.testing.assert_allclose(real, rewards, atol=1e-8)
    np.testing.assert_allclose(states[-1], obs, atol=1e-8)
