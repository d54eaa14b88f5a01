"""Data contracts (docs/design.md §3): transitions, trajectories, hdf5 IO, dataset lookup, DT sampler."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
import torch

from ipd.data import (
    DatasetError,
    Normalizer,
    SequenceSampler,
    Trajectories,
    Transitions,
    load_dataset,
    read_hdf5,
    returns_to_go,
    write_hdf5,
)


def make_transitions(lengths, end_kinds, obs_dim=3, act_dim=2, seed=0) -> Transitions:
    """Episodes of the given lengths; ``end_kinds[i]`` is 'terminal', 'timeout' or 'none' (last row only).

    ``observations[:, 0]`` holds the row index and ``next_observations[:, 0]`` row index + 0.5,
    so tests can tell which row a value came from.
    """
    n = sum(lengths)
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    obs[:, 0] = np.arange(n)
    nxt = rng.normal(size=(n, obs_dim)).astype(np.float32)
    nxt[:, 0] = np.arange(n) + 0.5
    term, tout = np.zeros(n, bool), np.zeros(n, bool)
    end = np.cumsum(lengths) - 1
    for e, kind in zip(end, end_kinds, strict=True):
        term[e] = kind == "terminal"
        tout[e] = kind == "timeout"
    rew = rng.normal(size=n).astype(np.float32)
    return Transitions(obs, rng.uniform(-1, 1, (n, act_dim)), rew, nxt, term, tout)


def naive_rtg(rewards, ends, gamma):
    out, running = np.zeros(len(rewards)), 0.0
    for i in range(len(rewards) - 1, -1, -1):
        if ends[i] or i == len(rewards) - 1:
            running = 0.0
        running = float(rewards[i]) + gamma * running
        out[i] = running
    return out


# ----------------------------------------------------------------------------- episode structure
def test_timeout_and_terminal_both_end_episodes():
    t = make_transitions([3, 4, 2], ["timeout", "terminal", "none"])
    traj = Trajectories.from_transitions(t)
    np.testing.assert_array_equal(traj.starts, [0, 3, 7])
    np.testing.assert_array_equal(traj.lengths, [3, 4, 2])
    np.testing.assert_array_equal(traj.timesteps, [0, 1, 2, 0, 1, 2, 3, 0, 1])
    np.testing.assert_array_equal(traj.episode_ids, [0, 0, 0, 1, 1, 1, 1, 2, 2])
    r = t.rewards.astype(np.float64)
    expected = np.concatenate(
        [np.cumsum(r[s : s + n][::-1])[::-1] for s, n in zip([0, 3, 7], [3, 4, 2], strict=True)]
    )
    np.testing.assert_allclose(traj.returns_to_go, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(traj.episode_returns, [r[:3].sum(), r[3:7].sum(), r[7:].sum()], rtol=1e-6)
    # The last row ends an episode even without a flag, and the flags themselves are untouched.
    assert not t.terminals[-1] and not t.timeouts[-1] and t.episode_ends[-1]
    # next_observations are the true next states, never observations[i + 1] across an end.
    np.testing.assert_array_equal(t.next_observations[:, 0], np.arange(9) + 0.5)
    assert t.next_observations[2, 0] != t.observations[3, 0]


def test_subset_and_concatenate_keep_extras():
    t = make_transitions([3, 2], ["timeout", "terminal"])
    t.extras["imagined"] = np.array([0, 0, 0, 1, 1], bool)
    both = Transitions.concatenate([t, t.subset(np.arange(3))])
    assert len(both) == 8
    np.testing.assert_array_equal(both.extras["imagined"], [0, 0, 0, 1, 1, 0, 0, 0])
    with pytest.raises(DatasetError, match="different extra fields"):
        Transitions.concatenate([t, make_transitions([2], ["none"])])


def test_returns_to_go_with_gamma():
    rewards = np.array([1.0, 2.0, 3.0, 4.0, 5.0], np.float32)
    ends = np.array([0, 1, 0, 0, 0], bool)  # episodes [0, 1] and [2, 3, 4] (last row ends)
    np.testing.assert_allclose(returns_to_go(rewards, ends, 0.5), [2.0, 2.0, 3 + 2 + 1.25, 4 + 2.5, 5.0])
    np.testing.assert_allclose(returns_to_go(rewards, ends, 1.0), [3.0, 2.0, 12.0, 9.0, 5.0])
    np.testing.assert_allclose(returns_to_go(rewards, ends, 0.0), rewards)
    assert returns_to_go(np.zeros(0), np.zeros(0, bool)).shape == (0,)
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 1000):
        r, e = rng.normal(size=n), rng.random(n) < 0.05
        for gamma in (1.0, 0.99, 0.7):
            np.testing.assert_allclose(
                returns_to_go(r, e, gamma), naive_rtg(r, e, gamma), rtol=1e-5, atol=1e-4
            )
    with pytest.raises(ValueError, match="rows"):
        returns_to_go(np.zeros(3), np.zeros(2, bool))


def test_returns_to_go_accumulates_in_float64():
    """1000-step episodes of rewards ~3.5: float32 accumulation would drift by ~1e-2."""
    rng = np.random.default_rng(0)
    r = (3 + rng.random(20_000)).astype(np.float32)
    ends = np.zeros(20_000, bool)
    ends[999::1000] = True
    ref = np.concatenate(
        [np.cumsum(r[i : i + 1000].astype(np.float64)[::-1])[::-1] for i in range(0, 20_000, 1000)]
    )
    assert np.abs(returns_to_go(r, ends) - ref).max() < 1e-3
    traj = Trajectories.from_transitions(
        Transitions(
            np.zeros((20_000, 1)), np.zeros((20_000, 1)), r, np.zeros((20_000, 1)), ends, np.zeros(20_000)
        )
    )
    np.testing.assert_allclose(traj.discounted_returns_to_go(0.99), naive_rtg(r, ends, 0.99), rtol=1e-6)


def test_normalizer_numpy_torch_and_state_dict():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(500, 4)).astype(np.float32)
    norm = Normalizer.fit(x)
    z = norm.normalize(x)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(norm.normalize(torch.as_tensor(x)).numpy(), z, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(norm.denormalize(z), x, rtol=1e-5, atol=1e-4)
    back = Normalizer.from_state_dict(norm.state_dict())
    np.testing.assert_array_equal(back.mean, norm.mean)
    np.testing.assert_array_equal(back.std, norm.std)


# ----------------------------------------------------------------------------- loading
def assert_same(a: Transitions, b: Transitions) -> None:
    for key in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=key)


@pytest.fixture
def isolated_env(monkeypatch, tmp_path):
    """No dataset from the user's real caches can leak into a test."""
    monkeypatch.setenv("IPD_DATA_DIR", str(tmp_path / "ipd-data-dir-unset"))
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl-dir-unset"))
    return monkeypatch


def test_load_dataset_from_data_dir_and_env_var(data_dir, hopper_transitions, isolated_env):
    t = load_dataset("hopper-medium", data_dir=data_dir, download_missing=False)
    assert_same(t, hopper_transitions)
    assert (t.terminals.any() and t.timeouts.any()) and t.obs_dim == 11 and t.act_dim == 3
    isolated_env.setenv("IPD_DATA_DIR", str(data_dir))
    assert_same(load_dataset("hopper-medium-v2", download_missing=False), hopper_transitions)


def test_lookup_order_data_dir_then_d4rl_dir(tmp_path, isolated_env):
    mine, d4rl = (
        make_transitions([5], ["timeout"], obs_dim=11, act_dim=3, seed=1),
        make_transitions([7], ["terminal"], obs_dim=11, act_dim=3, seed=2),
    )
    data_dir, d4rl_dir = tmp_path / "data", tmp_path / "d4rl"
    write_hdf5(d4rl_dir / "hopper_medium-v2.hdf5", d4rl)  # D4RL's own cache layout
    isolated_env.setenv("D4RL_DATASET_DIR", str(d4rl_dir))
    assert len(load_dataset("hopper-medium", data_dir=data_dir, download_missing=False)) == 7
    write_hdf5(data_dir / "hopper-medium.hdf5", mine)
    assert_same(load_dataset("hopper-medium", data_dir=data_dir, download_missing=False), mine)
    # An explicit data_dir wins over $IPD_DATA_DIR.
    isolated_env.setenv("IPD_DATA_DIR", str(tmp_path / "elsewhere"))
    write_hdf5(tmp_path / "elsewhere" / "hopper-medium.hdf5", d4rl)
    assert len(load_dataset("hopper-medium", data_dir=data_dir, download_missing=False)) == 5


def test_missing_dataset_says_where_it_looked_and_how_to_provide_it(tmp_path, isolated_env):
    with pytest.raises(DatasetError) as info:
        load_dataset("walker2d-medium-replay", data_dir=tmp_path / "nowhere", download_missing=False)
    msg = str(info.value)
    assert "walker2d-medium-replay" in msg
    assert str(tmp_path / "nowhere" / "walker2d-medium-replay.hdf5") in msg
    assert str(tmp_path / "d4rl-dir-unset" / "walker2d_medium_replay-v2.hdf5") in msg
    assert "Provide it" in msg and "make_dataset.py" in msg and "data.dir" in msg
    assert "walker2d_medium_replay-v2.hdf5" in msg  # the download URL
    # The D4RL and Minari ways come first; local generation (not the D4RL release) last.
    d4rl, minari, generator = msg.index("D4RL download"), msg.index("Minari:"), msg.index("make_dataset.py")
    assert d4rl < minari < generator and "not the D4RL release" in msg
    assert "build.py" not in msg
    assert "../shared" not in msg and "pip install 'ipd[minari]'" in msg
    # A level Minari has gets its Minari id named.
    with pytest.raises(DatasetError, match="data.minari_id=mujoco/walker2d/medium-v0"):
        load_dataset("walker2d-medium", data_dir=tmp_path / "nowhere", download_missing=False, source="d4rl")


def test_open_dataset_sets_up_the_task_and_checks_the_source(data_dir, isolated_env):
    from ipd.data import open_dataset

    loaded = open_dataset("hopper-medium", data_dir=data_dir, download_missing=False)
    assert loaded.task.gym_id == "Hopper-v4" and loaded.task.score_reference == "d4rl"
    assert loaded.source == str(data_dir / "hopper-medium.hdf5") and len(loaded.transitions) == 3000
    v5 = open_dataset("hopper-medium", data_dir=data_dir, download_missing=False, env_version="v5")
    assert v5.task.gym_id == "Hopper-v5" and v5.task.score_reference == "d4rl"
    with pytest.raises(DatasetError, match="data.source must be one of auto|d4rl|minari"):
        open_dataset("hopper-medium", data_dir=data_dir, source="hf")
    with pytest.raises(DatasetError, match="contradict"):
        open_dataset("hopper-medium", data_dir=data_dir, source="d4rl", minari_id="mujoco/hopper/medium-v0")
    with pytest.raises(DatasetError, match="Minari has no dataset for level 'random'"):
        open_dataset("hopper-random", data_dir=data_dir, source="minari")


def test_extras_and_attrs_round_trip(tmp_path):
    t = make_transitions([4, 6], ["terminal", "timeout"])
    t.extras.update(
        imagined=np.arange(10) % 3 == 0,
        source_episode=np.arange(10, dtype=np.int64) // 4,
        value=np.linspace(0, 1, 10).astype(np.float32),
    )
    path = write_hdf5(tmp_path / "aug.hdf5", t, attrs={"task": "hopper-medium", "accepted": 3})
    back = read_hdf5(path)
    assert_same(back, t)
    assert set(back.extras) == {"imagined", "source_episode", "value"}
    for key, arr in t.extras.items():
        np.testing.assert_array_equal(back.extras[key], arr)
        assert back.extras[key].dtype == arr.dtype
    assert read_hdf5(path, extras=False).extras == {}
    with h5py.File(path, "r") as f:
        assert f.attrs["task"] == "hopper-medium" and f.attrs["accepted"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aug.hdf5"]  # no temp file left


def _chained_episodes(lengths, terminal_last, obs_dim=3, seed=0):
    """Episodes stored like a real rollout: within an episode next_observations[i] == observations[i+1];
    each episode starts from a fresh state. ``terminal_last[e]``: episode e ends with a terminal."""
    rng = np.random.default_rng(seed)
    obs, nxt, term = [], [], []
    for n, terminal in zip(lengths, terminal_last, strict=True):
        states = rng.normal(size=(n + 1, obs_dim)).astype(np.float32)
        obs.append(states[:-1])
        nxt.append(states[1:])
        term.append(np.arange(n) == n - 1 if terminal else np.zeros(n, bool))
    obs, nxt, term = np.concatenate(obs), np.concatenate(nxt), np.concatenate(term)
    n = len(obs)
    return {
        "observations": obs,
        "actions": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        "rewards": np.ones(n, np.float32),
        "next_observations": nxt,
        "terminals": term,
    }


def test_d4rl_layout_with_infos_and_without_timeouts(tmp_path):
    """No `timeouts`: episode ends are inferred where next_observations[i] != observations[i+1],
    with a warning, so returns-to-go stop at every episode end, not only at terminals."""
    from ipd.data import DatasetWarning

    lengths, terminal_last = [4, 6, 3, 5], [False, True, False, False]
    core = _chained_episodes(lengths, terminal_last)
    path = tmp_path / "d4rl.hdf5"
    with h5py.File(path, "w") as f:
        for key, value in core.items():
            f[key] = value
        f["infos/qpos"] = np.zeros((18, 6))
        f["metadata/algorithm"] = "SAC"
    with pytest.warns(DatasetWarning, match=r"no 'timeouts': inferred 2 episode end\(s\).*1 terminal"):
        back = read_hdf5(path)
    ends = np.cumsum(lengths) - 1  # [3, 9, 12, 17]
    np.testing.assert_array_equal(
        np.flatnonzero(back.timeouts), [3, 12]
    )  # cut, not terminal; not the last row
    np.testing.assert_array_equal(np.flatnonzero(back.terminals), [9])
    np.testing.assert_array_equal(np.flatnonzero(back.episode_ends), ends)
    assert back.extras == {}
    traj = Trajectories.from_transitions(back)
    np.testing.assert_array_equal(traj.lengths, lengths)
    np.testing.assert_array_equal(traj.episode_returns, lengths)  # reward 1 per step, never across an end
    # With `timeouts` present nothing is inferred and nothing is said.
    with h5py.File(path, "a") as f:
        f["timeouts"] = np.zeros(18, bool)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not read_hdf5(path).timeouts.any()


def test_without_timeouts_and_next_observations_the_file_fails(tmp_path):
    core = _chained_episodes([4, 6], [False, True])
    del core["next_observations"]
    with pytest.raises(
        DatasetError, match=r"no 'next_observations' or 'timeouts'.*episode ends cannot be told"
    ):
        read_hdf5(_write_raw(tmp_path / "bare.hdf5", **core))


def test_without_timeouts_rows_out_of_episode_order_fail(tmp_path):
    core = _chained_episodes([40], [False])
    order = np.random.default_rng(0).permutation(40)
    core = {k: v[order] for k, v in core.items()}  # shuffled rows: next state never follows
    with pytest.raises(DatasetError, match="cannot be inferred.*not stored in episode order"):
        read_hdf5(_write_raw(tmp_path / "shuffled.hdf5", **core))


def test_minari_episodes_flatten_and_unfinished_ones_end_at_their_last_step():
    """Minari layout (T+1 observations per episode) -> Transitions, without the minari package;
    an episode whose last step has neither flag (collection stopped) still ends there."""
    from ipd.data.minari_source import minari_transitions

    class Ep:
        def __init__(self, n, terminated, seed):
            rng = np.random.default_rng(seed)
            self.observations = rng.normal(size=(n + 1, 4))
            self.actions = rng.normal(size=(n, 2))
            self.rewards = np.ones(n)
            self.terminations = np.arange(n) == n - 1 if terminated else np.zeros(n, bool)
            self.truncations = np.zeros(n, bool)

    class Spec:
        dataset_id = "fake/ds-v0"

    class Fake:
        spec = Spec()

        def iterate_episodes(self):
            return iter([Ep(3, False, 0), Ep(4, True, 1), Ep(2, False, 2)])

    t = minari_transitions(Fake())
    eps = list(Fake().iterate_episodes())
    np.testing.assert_array_equal(t.observations[:3], eps[0].observations[:-1].astype(np.float32))
    np.testing.assert_array_equal(t.next_observations[:3], eps[0].observations[1:].astype(np.float32))
    np.testing.assert_array_equal(np.flatnonzero(t.timeouts), [2, 8])
    np.testing.assert_array_equal(np.flatnonzero(t.terminals), [6])
    np.testing.assert_array_equal(np.flatnonzero(t.episode_ends), [2, 6, 8])


# ----------------------------------------------------------------------------- bad inputs
def _write_raw(path, **arrays):
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f[key] = value
    return path


def _core(n=10, obs_dim=3):
    t = make_transitions([n], ["timeout"], obs_dim=obs_dim)
    return {
        k: getattr(t, k) for k in ("observations", "actions", "rewards", "next_observations", "terminals")
    }


def test_missing_file_error(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        read_hdf5(tmp_path / "absent.hdf5")


def test_corrupt_file_error(tmp_path):
    path = tmp_path / "garbage.hdf5"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(DatasetError, match="corrupt or truncated"):
        read_hdf5(path)
    path.write_text("<html>404 Not Found</html>")
    with pytest.raises(DatasetError, match="corrupt or truncated"):
        read_hdf5(path)


def test_truncated_file_error(tmp_path, hopper_transitions):
    full = write_hdf5(tmp_path / "full.hdf5", hopper_transitions).read_bytes()
    for frac in (0.2, 0.6, 0.95):
        cut = tmp_path / f"cut{frac}.hdf5"
        cut.write_bytes(full[: int(len(full) * frac)])
        with pytest.raises(DatasetError, match="truncated"):
            read_hdf5(cut)


def test_damaged_bytes_never_escape_as_other_errors(tmp_path, hopper_transitions):
    """Overwriting any part of the file gives a DatasetError or (unused bytes) the same data.

    h5py reports damaged metadata as KeyError/RuntimeError; those must not leak to the user.
    """
    t = hopper_transitions.subset(np.arange(1500))
    data = write_hdf5(tmp_path / "ok.hdf5", t).read_bytes()
    rng = np.random.default_rng(0)
    path = tmp_path / "damaged.hdf5"
    n_errors = 0
    positions = np.concatenate([np.arange(0, 6000, 64), rng.integers(0, len(data) - 64, 60)])
    for pos in positions:
        damaged = bytearray(data)
        damaged[pos : pos + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
        path.write_bytes(bytes(damaged))
        try:
            back = read_hdf5(path)
        except DatasetError as exc:
            assert "corrupt" in str(exc) or "rows" in str(exc) or "NaN" in str(exc)
            n_errors += 1
        else:
            assert_same(back, t)
    assert n_errors > len(positions) // 2


def test_bit_rot_in_a_data_chunk_is_detected(tmp_path):
    """write_hdf5 gzips chunks (zlib checksums them): a flipped byte inside the data fails loudly."""
    t = make_transitions([400], ["timeout"], obs_dim=8)
    path = write_hdf5(tmp_path / "rot.hdf5", t)
    with h5py.File(path, "r") as f:
        info = f["observations"].id.get_chunk_info(0)
    raw = bytearray(path.read_bytes())
    raw[info.byte_offset + info.size // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="corrupt"):
        read_hdf5(path)


def test_missing_keys_error(tmp_path):
    core = _core()
    path = _write_raw(tmp_path / "k.hdf5", observations=core["observations"], actions=core["actions"])
    with pytest.raises(DatasetError, match=r"lacks the D4RL key\(s\) \['rewards', 'terminals'\]"):
        read_hdf5(path)
    del core["next_observations"]
    with pytest.raises(DatasetError, match="no 'next_observations'"):
        read_hdf5(_write_raw(tmp_path / "n.hdf5", **core))


def test_mismatched_lengths_error(tmp_path):
    core = _core()
    core["rewards"] = core["rewards"][:9]
    with pytest.raises(DatasetError, match="'rewards' has 9 rows but 'observations' has 10"):
        read_hdf5(_write_raw(tmp_path / "len.hdf5", **core))
    core = _core()
    core["next_observations"] = core["next_observations"][:, :2]
    with pytest.raises(DatasetError, match="differ in width"):
        read_hdf5(_write_raw(tmp_path / "width.hdf5", **core))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_error(tmp_path, bad):
    core = _core()
    core["next_observations"][[2, 7], 1] = bad
    with pytest.raises(
        DatasetError,
        match=r"'next_observations' contains 2 NaN/inf values in 2 rows \(first rows: \[2, 7\]\)",
    ):
        read_hdf5(_write_raw(tmp_path / "nan.hdf5", **core))


def test_empty_dataset_and_bad_extras_error():
    core = _core()
    with pytest.raises(DatasetError, match="empty"):
        Transitions(**{k: v[:0] for k, v in core.items()}, timeouts=np.zeros(0, bool))
    with pytest.raises(DatasetError, match="extra field 'value' has 3 rows, expected 10"):
        Transitions(**core, timeouts=np.zeros(10, bool), extras={"value": np.zeros(3)})


# ----------------------------------------------------------------------------- sequence sampler
@pytest.fixture
def traj() -> Trajectories:
    return Trajectories.from_transitions(
        make_transitions([3, 10, 25, 1], ["terminal", "timeout", "terminal", "none"])
    )


def test_sampler_shapes_padding_and_mask(traj):
    k, b = 6, 512
    batch = SequenceSampler(traj, context=k, seed=0).sample(b)
    assert batch.states.shape == (b, k, 3) and batch.actions.shape == (b, k, 2)
    assert batch.conditioning.shape == (b, k, 1)
    assert batch.timesteps.shape == batch.mask.shape == batch.weights.shape == batch.rows.shape == (b, k)
    assert batch.timesteps.dtype == np.int64 and batch.rows.dtype == np.int64
    # mask and rows agree; padding is on the left only, so the last token is always real
    np.testing.assert_array_equal(batch.mask, (batch.rows >= 0).astype(np.float32))
    assert (np.diff(batch.mask, axis=1) >= 0).all() and (batch.mask[:, -1] == 1).all()
    assert (batch.mask == 0).any()  # short windows occurred (episodes of length 1 and 3)
    pad = batch.mask == 0
    for arr in (batch.states, batch.actions, batch.conditioning):
        assert (arr[pad] == 0).all()
    assert (batch.timesteps[pad] == 0).all() and (batch.weights[pad] == 0).all()
    # real tokens carry their own row's data
    real = ~pad
    np.testing.assert_array_equal(batch.states[..., 0][real], batch.rows[real])
    np.testing.assert_array_equal(batch.actions[real], traj.transitions.actions[batch.rows[real]])
    np.testing.assert_array_equal(batch.timesteps[real], traj.timesteps[batch.rows[real]])
    np.testing.assert_allclose(batch.conditioning[..., 0][real], traj.returns_to_go[batch.rows[real]])


def test_sampler_windows_never_cross_episode_boundaries(traj, hopper_transitions):
    for t in (traj, Trajectories.from_transitions(hopper_transitions)):
        batch = SequenceSampler(t, context=20, seed=1).sample(2000)
        ep = t.episode_ids
        for rows, mask in zip(batch.rows, batch.mask.astype(bool), strict=True):
            r = rows[mask]
            assert (np.diff(r) == 1).all()  # consecutive rows
            assert (ep[r] == ep[r[0]]).all()  # of one episode
            # timesteps count up inside the episode
            np.testing.assert_array_equal(t.timesteps[r], t.timesteps[r[0]] + np.arange(len(r)))


def test_sampler_draws_trajectories_proportionally_to_length(traj):
    batch = SequenceSampler(traj, context=4, seed=0).sample(40_000)
    ep = traj.episode_ids[batch.rows[:, -1]]
    freq = np.bincount(ep, minlength=len(traj)) / len(ep)
    expected = traj.lengths / traj.lengths.sum()  # [3, 10, 25, 1] / 39
    np.testing.assert_allclose(freq, expected, atol=0.01)  # binomial std <= 0.0025
    # and the window start is uniform inside the episode: the last real row's offset in episode 2
    in_ep2 = ep == 2
    first = batch.rows[in_ep2][np.arange(in_ep2.sum()), np.argmax(batch.mask[in_ep2] > 0, axis=1)]
    offsets = first - traj.starts[2]
    counts = np.bincount(offsets, minlength=25)
    assert counts.min() > 0.6 * counts.mean() and counts.max() < 1.4 * counts.mean()


def test_sampler_is_reproducible_with_a_seed(traj):
    a = SequenceSampler(traj, context=5, seed=7).sample(64)
    b = SequenceSampler(traj, context=5, seed=7).sample(64)
    c = SequenceSampler(traj, context=5, seed=8).sample(64)
    np.testing.assert_array_equal(a.rows, b.rows)
    np.testing.assert_array_equal(a.states, b.states)
    assert not np.array_equal(a.rows, c.rows)


def test_sampler_conditioning_override_scale_weights_and_normalizer(traj):
    t = traj.transitions
    cond = 1000.0 + np.arange(len(t), dtype=np.float32)
    weights = np.where(np.arange(len(t)) % 2 == 0, 0.25, 1.0)
    norm = Normalizer.fit(t.observations)
    s = SequenceSampler(
        traj,
        context=4,
        conditioning=cond,
        conditioning_scale=10.0,
        state_normalizer=norm,
        row_weights=weights,
        max_timestep=5,
        seed=0,
    )
    batch = s.sample(256)
    real = batch.mask > 0
    rows = batch.rows[real]
    np.testing.assert_allclose(batch.conditioning[..., 0][real], cond[rows] / 10.0, rtol=1e-6)
    np.testing.assert_allclose(batch.states[real], norm.normalize(t.observations[rows]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batch.weights[real], weights[rows])
    assert batch.timesteps.max() == 4  # clamped to max_timestep - 1 (episode of length 25 has t up to 24)
    with pytest.raises(ValueError, match="conditioning has 3 rows"):
        SequenceSampler(traj, context=4, conditioning=np.zeros(3))
    with pytest.raises(ValueError, match="context"):
        SequenceSampler(traj, context=0)
    with pytest.raises(ValueError, match="row_weights"):
        SequenceSampler(traj, context=4, row_weights=np.ones(5))
