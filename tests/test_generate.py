"""The dataset generator: exact envs, CPU-independent arithmetic, determinism, attributes, assets,
missing-asset errors, the fallback order of data.source=auto, and the data's origin in results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import gymnasium as gym
import h5py
import numpy as np
import pytest

from ipd.artifacts import dataset_fingerprint
from ipd.data import read_hdf5, write_hdf5
from ipd.data.sources import DatasetNotFoundError, open_dataset
from ipd.generate import GenerateError, exact, generated_name, make_dataset
from ipd.generate.assets import AssetError, pack_replay, read_replay, replay_path
from ipd.generate.behaviour import NPZ_KEYS, BehaviourError, TanhGaussianMLP
from ipd.generate.fallback import GeneratedDatasetWarning, open_or_generate
from ipd.generate.locomotion import BatchedLocomotion
from ipd.tasks import get_task

warnings.filterwarnings("ignore", category=DeprecationWarning)


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("IPD_DATA_DIR", str(tmp_path / "ipd-data-dir-unset"))
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl-dir-unset"))
    return monkeypatch


# ----------------------------------------------------------------------------- envs and arithmetic
@pytest.mark.parametrize("env_name", ["hopper", "walker2d", "halfcheetah"])
@pytest.mark.parametrize("version", ["v4", "v5"])
def test_batched_env_equals_gymnasium_step_for_step(env_name, version):
    task = get_task(f"{env_name}-medium", version)
    env, batched = gym.make(task.gym_id), BatchedLocomotion(task, 1)
    obs, _ = env.reset(seed=3)
    sim = env.unwrapped
    np.testing.assert_array_equal(batched.set_state(0, sim.data.qpos.copy(), sim.data.qvel.copy()), obs)
    if env_name != "halfcheetah":  # uniform reset noise drawn as gymnasium draws it
        np.testing.assert_array_equal(batched.reset(0, np.random.default_rng(3)), obs)
    rng = np.random.default_rng(0)
    for t in range(150):
        a = rng.uniform(-1, 1, task.act_dim).astype(np.float32)
        o, r, term, trunc, _ = env.step(a)
        ob, rb, tb = batched.step(a[None])
        assert np.array_equal(o, ob[0]) and r == rb[0] and term == tb[0], f"step {t} differs"
        if term:
            env.reset(seed=t)
            batched.set_state(0, sim.data.qpos.copy(), sim.data.qvel.copy())


def test_exact_math_is_accurate():
    x = np.linspace(-30, 3, 20001)
    np.testing.assert_allclose(exact.exp(x), np.exp(x), rtol=1e-14)
    u = np.linspace(1e-12, 1, 20001)
    np.testing.assert_allclose(exact.log(u), np.log(u), rtol=1e-14, atol=1e-15)
    y = np.linspace(-25, 25, 40001)
    np.testing.assert_allclose(exact.tanh(y), np.tanh(y), atol=1e-15)
    v = np.linspace(0, 1, 10001)[:-1]
    np.testing.assert_allclose(exact.cos_2pi(v), np.cos(2 * np.pi * v), atol=1e-14)
    z = exact.standard_normal(np.random.default_rng(0), (200_000,))
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01 and 0.04 < (np.abs(z) > 2).mean() < 0.05


def test_exact_matmul_does_not_depend_on_summation_order():
    rng = np.random.default_rng(1)
    w = exact.quantize_matrix(rng.standard_normal((64, 256)).astype(np.float32))
    x = rng.standard_normal((8, 256)) * 7
    blas = exact.exact_matmul(x, w)
    xq = exact.quantize_rows(x)
    for order in (range(256), reversed(range(256)), rng.permutation(256)):
        acc = np.zeros((8, 64))
        for k in order:
            acc = acc + xq[:, k : k + 1] * w[:, k][None]
        assert np.array_equal(acc, blas)
    # ... and differs from the float64 product only at float32's resolution
    np.testing.assert_allclose(blas, x @ w.T, rtol=0, atol=1e-5 * np.abs(x @ w.T).max())


def test_build_is_identical_under_other_cpus_code_paths(tmp_path):
    """BLAS kernels and numpy's SIMD loops of older CPUs (forced by env vars) give the same file."""
    code = (
        "import warnings; warnings.simplefilter('ignore');"
        "from ipd.generate import make_dataset; import h5py, sys;"
        "p = make_dataset('hopper-medium', size=1500, path=sys.argv[1], num_envs=4, progress=False);"
        "print(h5py.File(p).attrs['fingerprint'])"
    )
    prints = set()
    for i, extra in enumerate(({}, {"OPENBLAS_CORETYPE": "Prescott", "NPY_DISABLE_CPU_FEATURES": "X86_V3"})):
        env = {**os.environ, **extra}
        out = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / f"{i}.hdf5")],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        prints.add(out.stdout.strip())
    assert len(prints) == 1


# ----------------------------------------------------------------------------- make_dataset
def test_generation_is_deterministic_and_records_its_attributes(tmp_path):
    a = make_dataset("hopper-medium", size=2000, out_dir=tmp_path / "a", num_envs=8, progress=False)
    b = make_dataset("hopper-medium", size=2000, out_dir=tmp_path / "b", num_envs=8, progress=False)
    c = make_dataset("hopper-medium", size=2000, seed=1, out_dir=tmp_path / "c", num_envs=8, progress=False)
    assert a.name == "hopper-medium-2000.hdf5"
    ta, tb, tc = read_hdf5(a), read_hdf5(b), read_hdf5(c)
    for key in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts"):
        assert np.array_equal(getattr(ta, key), getattr(tb, key)), key
    assert dataset_fingerprint(ta) != dataset_fingerprint(tc)
    with h5py.File(a) as f:
        attrs = dict(f.attrs)
    assert attrs["origin"] == "generated" and attrs["generator_version"] >= 1
    assert attrs["env_id"] == "Hopper-v4" and attrs["level"] == "medium" and attrs["size"] == 2000
    assert attrs["fingerprint"] == dataset_fingerprint(ta)
    assert (
        attrs["mujoco_version"] and attrs["gymnasium_version"] and len(attrs["behaviour_policy_sha256"]) == 64
    )
    ends = np.flatnonzero(ta.terminals | ta.timeouts)
    assert attrs["episodes"] == len(ends) and ends[-1] == len(ta) - 1
    returns = np.diff(np.concatenate([[0.0], np.cumsum(ta.rewards, dtype=np.float64)])[np.r_[0, ends + 1]])
    np.testing.assert_allclose(attrs["mean_return"], returns.mean(), rtol=1e-5)
    np.testing.assert_allclose(
        attrs["normalized_score"], get_task("hopper-medium").normalize_score(returns.mean())
    )
    # D4RL protocol: next states within an episode are the next row's observation; no episode is longer
    # than 1000 steps; terminals are unhealthy states.
    inner = np.ones(len(ta), bool)
    inner[ends] = False
    assert np.array_equal(ta.next_observations[inner], ta.observations[1:][inner[:-1]])
    assert get_task("hopper-medium").is_terminal_np(ta.next_observations[ta.terminals]).all()


def test_never_overwrites_silently_and_checks_arguments(tmp_path):
    path = make_dataset("hopper-random", size=300, out_dir=tmp_path, num_envs=2, progress=False)
    with pytest.raises(GenerateError, match="exists.*overwrite=true"):
        make_dataset("hopper-random", size=300, out_dir=tmp_path, num_envs=2, progress=False)
    make_dataset("hopper-random", size=300, out_dir=tmp_path, num_envs=2, progress=False, overwrite=True)
    assert path.is_file()
    with pytest.raises(GenerateError, match="size must be"):
        make_dataset("hopper-random", size=0, out_dir=tmp_path)
    with pytest.raises(GenerateError, match="num_envs"):
        make_dataset("hopper-random", size=10, out_dir=tmp_path / "x", num_envs=0)


def test_missing_assets_say_what_is_missing_and_how_to_supply_it(tmp_path):
    with pytest.raises(
        GenerateError, match=r"no walker2d medium behaviour policy.*behaviour_policy=/path/to/weights.npz"
    ):
        make_dataset("walker2d-medium", size=100, out_dir=tmp_path)
    with pytest.raises(GenerateError, match=r"no walker2d replay buffer.*replay=/path/to/buffer.npz"):
        make_dataset("walker2d-medium-replay", out_dir=tmp_path)
    with pytest.raises(GenerateError, match=r"walker2d medium behaviour policy"):
        make_dataset("walker2d-medium-expert", size=100, out_dir=tmp_path)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_user_policy_file_and_v5_env(tmp_path):
    weights = TanhGaussianMLP.random_init(17, 6, seed=4).weights
    np.savez(tmp_path / "mine.npz", **weights)
    path = make_dataset(
        "walker2d-medium",
        size=400,
        policy=tmp_path / "mine.npz",
        env_version="v5",
        out_dir=tmp_path,
        num_envs=4,
        progress=False,
    )
    assert path.name == "walker2d-medium-v5-400.hdf5"
    with h5py.File(path) as f:
        assert f.attrs["env_id"] == "Walker2d-v5" and f.attrs["behaviour_policy"].endswith("mine.npz")
    np.savez(tmp_path / "hopper.npz", **TanhGaussianMLP.random_init(11, 3, seed=4).weights)
    with pytest.raises(BehaviourError, match="another env"):
        make_dataset("walker2d-medium", size=50, policy=tmp_path / "hopper.npz", out_dir=tmp_path / "y")
    np.savez(tmp_path / "bad.npz", W0=np.zeros((2, 2)))
    with pytest.raises(BehaviourError, match="lack"):
        make_dataset("walker2d-medium", size=50, policy=tmp_path / "bad.npz", out_dir=tmp_path / "z")


def test_script_takes_the_behaviour_policy_and_names_the_key_for_policy(tmp_path):
    """``policy`` is a config group of the shared configs/ tree, so the script's key is
    ``behaviour_policy=``; ``policy=`` gets an error that names it."""
    from tests.helpers import run_script

    np.savez(tmp_path / "mine.npz", **TanhGaussianMLP.random_init(17, 6, seed=4).weights)
    common = ("task=walker2d-medium", "size=200", "num_envs=2", "progress=false", f"data.dir={tmp_path}")
    proc = run_script("make_dataset.py", *common, f"behaviour_policy={tmp_path / 'mine.npz'}", timeout=120)
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["path"] == str(tmp_path / "walker2d-medium-200.hdf5")
    assert info["behaviour_policy"].endswith("mine.npz")
    proc = run_script("make_dataset.py", *common, f"policy={tmp_path / 'mine.npz'}", check=False, timeout=120)
    assert proc.returncode == 2 and "behaviour_policy=" in proc.stderr and "Traceback" not in proc.stderr


def test_ipd_checkpoint_as_behaviour_policy(tmp_path, hopper_transitions):
    from ipd.models.bc import BCConfig, BCLearner

    bc = BCLearner(11, 3, BCConfig(hidden_dims=(16, 16), batch_size=32, num_updates=5, log_every=5))
    bc.fit(hopper_transitions, progress=False)
    ckpt = bc.save(tmp_path / "bc.pt", task="hopper-medium")
    path = make_dataset(
        "hopper-medium", size=300, policy=ckpt, action_noise=0.1, out_dir=tmp_path, num_envs=3, progress=False
    )
    t = read_hdf5(path)
    assert len(t) == 300 and np.abs(t.actions).max() <= 1.0
    with pytest.raises(BehaviourError, match="trained on hopper-medium"):
        make_dataset("walker2d-medium", size=50, policy=ckpt, out_dir=tmp_path / "w")


def test_medium_expert_is_medium_then_expert_and_reuses_parts(tmp_path):
    medium = make_dataset("hopper-medium", size=600, out_dir=tmp_path, num_envs=4, progress=False)
    expert = make_dataset("hopper-expert", size=600, out_dir=tmp_path / "e", num_envs=4, progress=False)
    both = make_dataset("hopper-medium-expert", size=600, out_dir=tmp_path, num_envs=4, progress=False)
    tm, te, tb = read_hdf5(medium), read_hdf5(expert), read_hdf5(both)
    assert len(tb) == 1200
    assert np.array_equal(tb.observations[:600], tm.observations)
    assert np.array_equal(tb.observations[600:], te.observations)


def test_replay_buffer_pack_roundtrip_and_shipped_buffers(tmp_path, hopper_transitions):
    t = hopper_transitions
    original = {
        k: getattr(t, k)
        for k in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
    }
    packed = pack_replay(original, tmp_path / "buf.npz")
    back = read_replay(packed)
    for key, arr in original.items():
        assert np.array_equal(back[key], arr) and back[key].dtype == arr.dtype, key
    # A corrupted pack is refused, never silently rebuilt into other data.
    with np.load(packed) as z:
        files = {k: z[k] for k in z.files}
    files["boundary_next_observations"] = files["boundary_next_observations"] + 1
    np.savez(tmp_path / "bad.npz", **files)
    with pytest.raises(AssetError, match="SHA-256"):
        read_replay(tmp_path / "bad.npz")
    shipped = read_replay(replay_path("halfcheetah"))  # checked against the original's hash
    assert shipped["observations"].shape == (110_000, 17) and shipped["timeouts"].sum() == 110


def test_medium_replay_from_shipped_buffer(tmp_path):
    path = make_dataset("hopper-medium-replay", size=5000, out_dir=tmp_path, progress=False)
    t = read_hdf5(path)
    assert len(t) == 5000 and t.terminals.sum() > 10 and (t.terminals | t.timeouts)[-1]


def test_npz_keys_are_the_documented_format():
    assert NPZ_KEYS == ("W0", "b0", "W1", "b1", "Wmu", "bmu", "Wls", "bls")


# ----------------------------------------------------------------------------- fallback (data.source=auto)
def test_fallback_generates_only_after_every_source_failed(tmp_path, isolated, monkeypatch):
    import ipd.data.sources as sources

    tried = []

    def no_download(url, dest, **kwargs):
        tried.append("download")
        raise sources.DatasetError("offline")

    def no_minari(task, minari_id, download, env_version):
        tried.append("minari")
        raise sources.DatasetError("no minari")

    monkeypatch.setattr(sources, "download", no_download)
    monkeypatch.setattr(sources, "_open_minari", no_minari)
    monkeypatch.setattr(sources.importlib.util, "find_spec", lambda name: object())
    data = tmp_path / "data"
    with pytest.raises(DatasetNotFoundError):
        open_or_generate("hopper-medium", data, generate=False)
    assert tried == ["download", "minari"]
    with pytest.warns(GeneratedDatasetWarning, match="not the D4RL release"):
        loaded = open_or_generate("hopper-medium", data, generate_size=500, progress=False)
    assert tried == ["download", "minari"] * 2
    assert loaded.origin == "generated" and loaded.source == str(data / "hopper-medium-500.hdf5")
    # A later run reuses the generated file: no warning, no second generation.
    with warnings.catch_warnings():
        warnings.simplefilter("error", GeneratedDatasetWarning)
        again = open_or_generate("hopper-medium", data, generate_size=500, progress=False)
    assert dataset_fingerprint(again.transitions) == dataset_fingerprint(loaded.transitions)
    # Any file in the data dir comes before generation; other sources than auto never generate.
    write_hdf5(data / "hopper-medium.hdf5", loaded.transitions)
    assert open_or_generate("hopper-medium", data, generate_size=500).origin == "file"
    with pytest.raises(DatasetNotFoundError):
        open_or_generate("walker2d-medium", data, source="d4rl", download_missing=False)


def test_generated_file_of_another_env_version_is_refused(tmp_path, isolated):
    path = make_dataset("hopper-random", size=200, out_dir=tmp_path, num_envs=2, progress=False)
    path.rename(tmp_path / "hopper-random.hdf5")
    assert open_dataset("hopper-random", tmp_path, download_missing=False).origin == "generated"
    with pytest.raises(Exception, match=r"generated in Hopper-v4.*task.env_version=v4"):
        open_dataset("hopper-random", tmp_path, download_missing=False, env_version="v5")


def test_generated_names():
    assert generated_name(get_task("hopper-medium")) == "hopper-medium.hdf5"
    assert generated_name(get_task("hopper-medium", "v5"), 1000) == "hopper-medium-v5-1000.hdf5"
