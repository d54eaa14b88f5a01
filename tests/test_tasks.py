"""Task registry: contents, dims vs the real envs (v4 and v5), D4RL names, scores, termination rules."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

from ipd.tasks import ENV_VERSIONS, LEVELS, TASKS, UnknownTaskError, get_task

VERSIONS = pytest.mark.parametrize("version", ENV_VERSIONS)


def _make(gym_id: str) -> gym.Env:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return gym.make(gym_id)


def test_registry_holds_three_envs_times_five_levels():
    expected = {
        f"{env}-{level}"
        for env in ("hopper", "halfcheetah", "walker2d")
        for level in ("random", "medium", "medium-replay", "medium-expert", "expert")
    }
    assert set(TASKS) == expected
    assert len(LEVELS) == 5
    assert {t.gym_id for t in TASKS.values()} == {"Hopper-v4", "HalfCheetah-v4", "Walker2d-v4"}
    for name, task in TASKS.items():
        assert task.name == name and name == f"{task.env.name}-{task.level}"


@VERSIONS
@pytest.mark.parametrize("env", ["hopper", "halfcheetah", "walker2d"])
def test_dims_match_the_real_gymnasium_env(env, version):
    task = get_task(f"{env}-medium", env_version=version)
    assert task.gym_id.endswith(f"-{version}")
    e = _make(task.gym_id)
    try:
        assert e.observation_space.shape == (task.obs_dim,)
        assert e.action_space.shape == (task.act_dim,)
        # Policies emit actions in [-1, 1] (tanh / clamp): the envs must agree.
        np.testing.assert_array_equal(e.action_space.low, -1.0)
        np.testing.assert_array_equal(e.action_space.high, 1.0)
        assert e.spec.max_episode_steps == 1000
    finally:
        e.close()


def test_d4rl_file_names_and_urls():
    t = get_task("hopper-medium-replay")
    assert t.d4rl_name == "hopper-medium-replay-v2"
    assert t.d4rl_file == "hopper_medium_replay-v2.hdf5"
    assert t.d4rl_url() == (
        "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/hopper_medium_replay-v2.hdf5"
    )
    assert get_task("walker2d-medium-expert").d4rl_file == "walker2d_medium_expert-v2.hdf5"
    assert get_task("halfcheetah-random").d4rl_file == "halfcheetah_random-v2.hdf5"
    assert (
        get_task("hopper-expert").d4rl_url("http://127.0.0.1:1/x/")
        == "http://127.0.0.1:1/x/hopper_expert-v2.hdf5"
    )


def test_get_task_accepts_d4rl_names_and_case():
    assert get_task("Hopper-Medium-v2") is TASKS["hopper-medium"]
    assert get_task(" walker2d-medium-replay ") is TASKS["walker2d-medium-replay"]


@pytest.mark.parametrize(
    "env,random,expert",
    [("hopper", -20.272305, 3234.3), ("halfcheetah", -280.178953, 12135.0), ("walker2d", 1.629008, 4592.3)],
)
def test_normalized_score_uses_d4rl_reference_returns(env, random, expert):
    task = get_task(f"{env}-medium")
    assert task.normalize_score(random) == pytest.approx(0.0, abs=1e-9)
    assert task.normalize_score(expert) == pytest.approx(100.0)
    mid = random + 0.37 * (expert - random)
    assert task.normalize_score(mid) == pytest.approx(37.0)
    np.testing.assert_allclose(task.normalize_score(np.array([random, expert])), [0.0, 100.0], atol=1e-9)


def test_unknown_task_lists_known_tasks_and_suggests_close_match():
    with pytest.raises(UnknownTaskError) as info:
        get_task("hoper-medium")
    msg = str(info.value)
    assert "hoper-medium" in msg
    assert "Did you mean 'hopper-medium'?" in msg
    for name in TASKS:
        assert name in msg
    assert isinstance(info.value, ValueError)  # callers catching ValueError still work
    with pytest.raises(UnknownTaskError, match="Known tasks"):
        get_task("antmaze-umaze")


def test_termination_numpy_and_torch_agree():
    rng = np.random.default_rng(0)
    for env in ("hopper", "walker2d", "halfcheetah"):
        task = get_task(f"{env}-medium")
        obs = rng.normal(size=(4000, task.obs_dim)) * 0.5
        obs[:, 0] = rng.uniform(0.5, 2.2, size=4000)  # heights around the thresholds
        obs[:, 1] = rng.uniform(-1.2, 1.2, size=4000)  # angles around the thresholds
        obs[:5, 3] = [np.nan, np.inf, -np.inf, 150.0, -150.0]
        term_np = task.is_terminal_np(obs)
        term_t = task.is_terminal_torch(torch.as_tensor(obs))
        assert term_np.dtype == bool and term_np.shape == (4000,)
        np.testing.assert_array_equal(term_np, term_t.numpy())
        # batched over any leading dims
        np.testing.assert_array_equal(task.is_terminal_np(obs.reshape(40, 100, -1)), term_np.reshape(40, 100))
        assert term_np[:3].all()  # non-finite states always terminate
        if env == "halfcheetah":
            assert not term_np[5:].any()
        else:
            assert term_np.any() and not term_np.all()


def _rollout_terminations(gym_id: str, n_steps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Next observations and the env's own ``terminated`` flag under a random policy."""
    env = _make(gym_id)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    next_obs, terminated = [], []
    for _ in range(n_steps):
        # A biased random policy makes the robot fall both forwards and backwards.
        nxt, _, te, tr, _ = env.step(
            np.clip(rng.normal(0.3 * np.sign(rng.normal()), 1.0, env.action_space.shape), -1, 1)
        )
        next_obs.append(nxt)
        terminated.append(te)
        if te or tr:
            env.reset()
    env.close()
    return np.asarray(next_obs), np.asarray(terminated)


@VERSIONS
@pytest.mark.parametrize("env", ["hopper", "walker2d", "halfcheetah"])
def test_termination_matches_real_env_on_rollouts(env, version):
    task = get_task(f"{env}-medium", env_version=version)
    next_obs, terminated = _rollout_terminations(task.gym_id, 2500, seed=1)
    pred = task.is_terminal_np(next_obs)
    np.testing.assert_array_equal(pred, terminated)
    np.testing.assert_array_equal(task.is_terminal_torch(torch.as_tensor(next_obs)).numpy(), terminated)
    if env == "halfcheetah":
        assert not terminated.any()
    else:
        assert terminated.sum() >= 20  # the comparison covered many real terminations
        # Float32 datasets give the same answer away from the exact thresholds.
        np.testing.assert_array_equal(task.is_terminal_np(next_obs.astype(np.float32)), terminated)


@VERSIONS
@pytest.mark.parametrize(
    "env,z_range,angle_range", [("hopper", (0.5, 1.0), (-0.4, 0.4)), ("walker2d", (0.6, 2.3), (-1.3, 1.3))]
)
def test_termination_matches_real_env_around_every_threshold(env, z_range, angle_range, version):
    """Random rollouts mostly end by the angle rule; place the robot on both sides of each threshold."""
    task = get_task(f"{env}-medium", env_version=version)
    e = _make(task.gym_id)
    rng = np.random.default_rng(0)
    e.reset(seed=0)
    sim = e.unwrapped
    pred, actual, z_after, angle_after = [], [], [], []
    for _ in range(300):
        e.reset()
        qpos, qvel = sim.init_qpos.copy(), np.zeros_like(sim.init_qvel)
        qpos[1], qpos[2] = rng.uniform(*z_range), rng.uniform(*angle_range)
        sim.set_state(qpos, qvel)
        nxt, _, te, _, _ = e.step(np.zeros(task.act_dim, np.float32))
        pred.append(task.is_terminal_np(nxt))
        actual.append(te)
        z_after.append(nxt[0])
        angle_after.append(nxt[1])
    e.close()
    np.testing.assert_array_equal(pred, actual)
    z_after, angle_after, actual = np.array(z_after), np.array(angle_after), np.array(actual)
    lo_z, max_angle = (0.7, 0.2) if env == "hopper" else (0.8, 1.0)
    ok_angle = np.abs(angle_after) < max_angle
    low = (z_after < lo_z) & ok_angle
    assert low.sum() > 5 and actual[low].all()  # terminated by height alone
    assert (~actual[(z_after > lo_z + 0.05) & ok_angle & (z_after < 1.9)]).all()
    if env == "walker2d":
        high = (z_after > 2.0) & ok_angle
        assert high.sum() > 5 and actual[high].all()


@VERSIONS
def test_termination_matches_real_env_under_extreme_actions(version):
    """Bang-bang actions (every actuator at ±1) throw the robots around harder than uniform noise."""
    for env in ("hopper", "walker2d"):
        task = get_task(f"{env}-medium", env_version=version)
        e = _make(task.gym_id)
        rng = np.random.default_rng(3)
        e.reset(seed=3)
        next_obs, terminated = [], []
        for _ in range(1500):
            nxt, _, te, tr, _ = e.step(rng.choice([-1.0, 1.0], size=task.act_dim).astype(np.float32))
            next_obs.append(nxt)
            terminated.append(te)
            if te or tr:
                e.reset()
        e.close()
        terminated = np.asarray(terminated)
        np.testing.assert_array_equal(task.is_terminal_np(np.asarray(next_obs)), terminated)
        assert terminated.sum() >= 20


def test_env_versions_and_dataset_envs():
    v4, v5 = get_task("hopper-medium"), get_task("hopper-medium", env_version="v5")
    assert v4.gym_id == "Hopper-v4" and v5.gym_id == "Hopper-v5" and v4.env_version == "v4"
    assert get_task("walker2d-expert", env_version="V5").gym_id == "Walker2d-v5"
    assert get_task("halfcheetah-random", env_version="5").gym_id == "HalfCheetah-v5"
    assert v5.name == v4.name and v5.d4rl_file == v4.d4rl_file  # same data, another evaluation env
    with pytest.raises(UnknownTaskError, match="Unknown env version 'v3'.*v4, v5"):
        get_task("hopper-medium", env_version="v3")
    # A dataset's recorded env: its version is taken, another env or version fails.
    assert v4.with_env("Hopper-v5").gym_id == "Hopper-v5"
    assert v4.with_env("Hopper-v5", {"ctrl_cost_weight": 0.01}).env_kwargs == (("ctrl_cost_weight", 0.01),)
    with pytest.raises(ValueError, match="another task"):
        v4.with_env("Walker2d-v5")
    with pytest.raises(ValueError, match="not supported"):
        v4.with_env("Hopper-v3")
    with pytest.raises(ValueError, match="termination rule"):
        v4.with_env("Hopper-v5", {"healthy_z_range": (0.5, 2.0)})
    with pytest.raises(ValueError, match="termination rule"):
        v4.with_env("Hopper-v5", {"exclude_current_positions_from_observation": False})


def test_reference_scores_default_to_d4rl_and_can_come_from_the_dataset():
    task = get_task("hopper-medium")
    assert task.score_reference == "d4rl" and task.reference_scores == (-20.272305, 3234.3)
    own = task.with_reference_scores(-10.0, 990.0, source="minari")
    assert own.score_reference == "minari" and own.reference_scores == (-10.0, 990.0)
    assert own.normalize_score(490.0) == pytest.approx(50.0)
    assert task.normalize_score(3234.3) == pytest.approx(100.0)  # the registry entry is untouched
    with pytest.raises(ValueError, match="expert > random"):
        task.with_reference_scores(5.0, 5.0, source="minari")


def test_minari_ids_of_the_tasks():
    assert get_task("hopper-medium").minari_id == "mujoco/hopper/medium-v0"
    assert get_task("walker2d-expert").minari_id == "mujoco/walker2d/expert-v0"
    assert get_task("halfcheetah-medium").minari_id == "mujoco/halfcheetah/medium-v0"
    for level in ("random", "medium-replay", "medium-expert"):
        assert get_task(f"hopper-{level}").minari_id is None


def test_eval_record_round_trips_env_and_reference_scores():
    """Checkpoints record where they are evaluated; the record must rebuild the same task."""
    from ipd.tasks import TaskSpec

    task = (
        get_task("hopper-medium")
        .with_env("Hopper-v5", {"frame_skip": 4})
        .with_reference_scores(-20.0, 3200.0, source="minari")
    )
    back = TaskSpec.from_eval_record(task.eval_record())
    assert back == task and back.gym_id == "Hopper-v5" and back.score_reference == "minari"
    assert TaskSpec.from_eval_record(get_task("walker2d-expert").eval_record()) == get_task("walker2d-expert")
    with pytest.raises(ValueError, match="malformed evaluation-task record"):
        TaskSpec.from_eval_record({"name": "hopper-medium"})
    with pytest.raises(ValueError, match="Unknown task"):
        TaskSpec.from_eval_record({**task.eval_record(), "name": "hoper-mediun"})
