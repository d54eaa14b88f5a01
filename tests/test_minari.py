"""Minari as a data source, offline: small local datasets built with minari.DataCollector on real
gymnasium MuJoCo envs, loaded through the same paths as a downloaded one, trained on and evaluated.

Skipped without the optional `minari` package (`pip install -e ".[dev,minari]"`, as CI does).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from ipd.data import DatasetError, open_dataset, resolve_task

minari = pytest.importorskip("minari")
pytest.importorskip(
    "jax", reason="minari.DataCollector needs minari[create] (jax): pip install 'ipd[minari]'"
)

OWN_REF = (-20.0, 1000.0)  # reference returns recorded in the dataset's metadata
HOPPER_ID = "test/hopper/random-v0"  # Hopper-v5 with reference scores
DEFAULT_ID = "mujoco/hopper/medium-v0"  # hopper-medium's own Minari id, made locally, no reference scores
WALKER_ID = "test/walker2d/random-v0"


def collect(dataset_id: str, gym_id: str, n_steps: int, seed: int, **create_kwargs):
    """Random-policy steps through a DataCollector (episodes cut at 60 steps), saved locally."""
    env = minari.DataCollector(gym.make(gym_id, max_episode_steps=60))
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    for _ in range(n_steps):
        _, _, terminated, truncated, _ = env.step(
            rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        )
        if terminated or truncated:
            env.reset()
    with warnings.catch_warnings():  # "author is set to None" and the like
        warnings.simplefilter("ignore", UserWarning)
        ds = env.create_dataset(
            dataset_id, algorithm_name="random", description="ipd test data", **create_kwargs
        )
    env.close()
    return ds


@pytest.fixture(scope="module")
def store():
    """The session's Minari store (conftest points $MINARI_DATASETS_PATH at a tmp dir), filled."""
    root = Path(os.environ["MINARI_DATASETS_PATH"])
    collect(HOPPER_ID, "Hopper-v5", 1500, 0, ref_min_score=OWN_REF[0], ref_max_score=OWN_REF[1])
    collect(DEFAULT_ID, "Hopper-v5", 400, 1)
    collect(WALKER_ID, "Walker2d-v5", 200, 2)
    return root


@pytest.fixture
def no_network(monkeypatch):
    """Every way Minari could download fails the test; the calls are recorded."""
    from minari.storage import hosting

    calls: list[str] = []

    def refuse(dataset_id, *args, **kwargs):
        calls.append(dataset_id)
        raise ConnectionError("no network in tests")

    monkeypatch.setattr(hosting, "download_dataset", refuse)
    monkeypatch.setattr(minari, "download_dataset", refuse)
    return calls


def test_minari_episodes_become_transitions(store, no_network):
    loaded = open_dataset("hopper-medium", minari_id=HOPPER_ID, download_missing=True)
    t, raw = loaded.transitions, minari.load_dataset(HOPPER_ID)
    episodes = list(raw.iterate_episodes())
    lengths = [len(ep) for ep in episodes]
    assert len(t) == sum(lengths) == 1500 and t.obs_dim == 11 and t.act_dim == 3
    np.testing.assert_array_equal(np.flatnonzero(t.episode_ends) + 1, np.cumsum(lengths))
    np.testing.assert_array_equal(t.terminals, np.concatenate([ep.terminations for ep in episodes]))
    np.testing.assert_array_equal(t.timeouts, np.concatenate([ep.truncations for ep in episodes]))
    assert t.terminals.any() and t.timeouts.any()  # both kinds of episode end occur

    def cat(key, part=slice(None)):  # Minari keeps float64; the Transitions contract is float32
        return np.concatenate([getattr(ep, key)[part] for ep in episodes]).astype(np.float32)

    np.testing.assert_array_equal(t.observations, cat("observations", slice(None, -1)))
    np.testing.assert_array_equal(t.next_observations, cat("observations", slice(1, None)))
    np.testing.assert_array_equal(t.actions, cat("actions"))
    np.testing.assert_allclose(t.rewards, np.concatenate([ep.rewards for ep in episodes]), rtol=1e-6)
    # The task as the dataset records it: its env and its own reference scores.
    assert loaded.source == f"minari:{HOPPER_ID}"
    assert loaded.task.gym_id == "Hopper-v5" and loaded.task.name == "hopper-medium"
    assert loaded.task.score_reference == "minari" and loaded.task.reference_scores == OWN_REF
    assert no_network == []  # a local dataset is read even when downloads are allowed


def test_missing_minari_dataset_never_reaches_the_network_unless_allowed(store, no_network):
    with pytest.raises(DatasetError, match=r"not in the local Minari store.*minari download"):
        open_dataset("hopper-medium", minari_id="mujoco/hopper/expert-v0", download_missing=False)
    assert no_network == []
    with pytest.raises(DatasetError, match="could not be downloaded.*no network"):
        open_dataset("hopper-medium", minari_id="mujoco/hopper/expert-v0", download_missing=True)
    assert no_network == ["mujoco/hopper/expert-v0"]


def test_task_default_minari_dataset_without_reference_scores(store, tmp_path, monkeypatch, no_network):
    from ipd.evaluation import evaluate_policy

    monkeypatch.setenv("IPD_DATA_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "none"))
    # data.source=minari takes the task's Minari dataset; auto falls back to it without D4RL files.
    for source in ("minari", "auto"):
        loaded = open_dataset("hopper-medium", download_missing=False, source=source)
        assert loaded.source == f"minari:{DEFAULT_ID}" and len(loaded.transitions) == 400
        assert loaded.task.gym_id == "Hopper-v5" and loaded.task.score_reference == "d4rl"

    class Still:
        def reset(self, n):
            pass

        def act(self, obs):
            return np.zeros((len(obs), 3), np.float32)

        def observe(self, rewards, dones):
            pass

    res = evaluate_policy(Still(), loaded.task, episodes=1, max_episode_steps=50, progress=False)
    assert res.env_id == "Hopper-v5" and res.score_reference == "d4rl"
    np.testing.assert_allclose(res.normalized_scores, 100 * (res.returns + 20.272305) / (3234.3 + 20.272305))
    assert resolve_task("hopper-medium", minari_id=DEFAULT_ID).gym_id == "Hopper-v5"


def test_minari_dataset_of_another_env_or_version_fails(store):
    with pytest.raises(DatasetError, match=r"records env 'Walker2d-v5'.*another task"):
        open_dataset("hopper-medium", minari_id=WALKER_ID, download_missing=False)
    with pytest.raises(DatasetError, match="task.env_version=v4 conflicts"):
        open_dataset("hopper-medium", minari_id=HOPPER_ID, download_missing=False, env_version="v4")
    assert open_dataset("hopper-medium", minari_id=HOPPER_ID, env_version="v5").task.gym_id == "Hopper-v5"


@pytest.mark.slow
def test_train_and_evaluate_scripts_on_a_local_minari_dataset(store, tmp_path):
    """`scripts/train.py task=hopper-medium data.minari_id=<local id> preset=smoke` end to end."""
    from tests.helpers import last_json, run_script

    out = last_json(
        run_script(
            "train.py",
            "task=hopper-medium",
            f"data.minari_id={HOPPER_ID}",
            "preset=smoke",
            f"paths.runs={tmp_path}",
        ).stdout
    )
    assert out["task"] == "hopper-medium" and out["algo"] == "ipd"
    assert out["env_id"] == "Hopper-v5" and out["score_reference"] == "minari"
    metrics = json.loads((Path(out["run_dir"]) / "metrics.json").read_text())
    returns = np.asarray(metrics["eval"]["returns"])
    lo, hi = OWN_REF
    assert out["normalized_score"] == pytest.approx(float(np.mean(100 * (returns - lo) / (hi - lo))))
    assert metrics["eval"]["env_id"] == "Hopper-v5"
    for stage in ("world_model", "value", "augment", "policy"):
        assert len(list((tmp_path / "hopper-medium" / stage).iterdir())) == 1
    # The checkpoint evaluates alone in the dataset's env, with its scores, which it records.
    ckpt, runs = metrics["checkpoint"], f"paths.runs={tmp_path}"  # paths.runs: keep the repo's runs/ clean
    ev = last_json(run_script("evaluate.py", f"checkpoint={ckpt}", "episodes=2", runs).stdout)
    assert ev["env_id"] == "Hopper-v5" and ev["score_reference"] == "minari" and ev["episodes"] == 2
