"""Bad input gets one clear paragraph (what is wrong, how to fix it), never a silent default."""

from __future__ import annotations

import json
import subprocess
import warnings

import h5py
import numpy as np
import pytest

from ipd.artifacts import ArtifactStore
from ipd.config import ConfigError, load_config, section, validate_config
from ipd.data import DatasetError, DatasetWarning, read_hdf5, write_hdf5
from ipd.pipeline import ALGORITHMS
from tests.helpers import run_script


def invalid(*overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(load_config(list(overrides)), tuple(ALGORITHMS))
    return str(info.value)


def test_unknown_keys_anywhere_name_the_closest_valid_key():
    assert "Unknown config key 'foo'" in invalid("+foo=1")
    assert "Did you mean 'policy'?" in invalid("+polcy.train.alpha=1")
    assert "Did you mean 'task.target_return'?" in invalid("+task.target_retrun=2")
    assert "Did you mean 'data.download'?" in invalid("+data.downlaod=false")
    cfg = load_config([])
    cfg.policy.train._set_flag("struct", False)
    cfg.policy.train.aplha = 1.0
    with pytest.raises(ConfigError, match=r"Did you mean 'policy.train.alpha'\?"):
        section(cfg, "policy.train")


@pytest.mark.parametrize(
    "override, message",
    [
        ("seed=abc", "seed must be a value of type int, got 'abc'"),
        ("seed=-1", "seed must be >= 0"),
        ("policy.train.num_updates=-5", r"policy.train.num_updates must be in \[1, inf\], got -5"),
        ("value.num_updates=0", r"value.num_updates must be in \[1, inf\]"),
        ("planner.gamma=1.5", r"planner.gamma must be in \(0, 1\]"),
        ("world_model.hidden_dims=[64,abc]", "world_model.hidden_dims must be"),
        ("value.actor=bogus", r"value.actor must be one of \['gaussian', 'deterministic'\]"),
        ("data.download=maybe", "data.download must be a value of type bool"),
        ("eval.episodes=0", r"eval.episodes must be in \[1, inf\]"),
        ("augment.quantile=0", r"augment.quantile must be in \(0, 1\]"),
        ("policy.imagined_share=1.0", r"policy.imagined_share must be in \[0, 1\)"),
    ],
)
def test_types_and_ranges_of_every_section(override, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(load_config([override]), tuple(ALGORITHMS))


def _script(*args: str) -> subprocess.CompletedProcess:
    return run_script("train.py", *args, check=False, timeout=120)


def test_task_typo_and_unwritable_runs_dir_fail_before_hydra(tmp_path):
    proc = _script("task=hoper-medium")
    assert proc.returncode == 2 and "Did you mean 'hopper-medium'?" in proc.stderr
    assert "Traceback" not in proc.stderr
    (tmp_path / "file").write_text("")
    proc = _script(f"paths.runs={tmp_path / 'file' / 'runs'}")
    assert proc.returncode == 2 and "cannot be used for runs and artifacts" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = _script("task=hopper-medium", "seed=abc", f"paths.runs={tmp_path}", "data.download=false")
    assert proc.returncode == 2 and "seed must be a value of type int" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_packages_below_the_floors_fail_before_any_work_with_the_install_command(monkeypatch, capsys):
    """A dependency moved below ipd's floor after install (d3rlpy pins gymnasium 1.0.0) or removed is
    named with the version found and the one needed; an extra's requirement is not checked."""
    from importlib import metadata

    from ipd import cli, utils

    requires = ["gymnasium[mujoco]>=1.1", "h5py>=3.8", "torch>=2.5", 'pytest>=7.4; extra == "dev"']
    installed = {"gymnasium": "1.0.0", "torch": "2.13.0+cpu", "pytest": "1.0"}

    def version(name):
        if name not in installed:
            raise metadata.PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr(utils.metadata, "requires", lambda dist: requires)
    monkeypatch.setattr(utils.metadata, "version", version)
    assert [str(req) for req in utils.unmet_requirements()] == [
        "gymnasium 1.0.0 is installed; ipd needs gymnasium[mujoco]>=1.1",
        "h5py is not installed; ipd needs h5py>=3.8",
    ]
    with pytest.raises(SystemExit) as info:
        cli.precheck(["task=hopper-medium"], runs=False)
    err = capsys.readouterr().err
    assert info.value.code == 2 and "do not meet ipd's requirements" in err
    assert "pip install 'gymnasium[mujoco]>=1.1' 'h5py>=3.8'" in err
    installed.update(gymnasium="1.4.0", h5py="3.12.1")
    assert utils.unmet_requirements() == []


def test_ctrl_c_is_one_line_with_the_way_to_resume(capsys):
    from ipd.cli import cli
    from ipd.training import TrainingInterrupted

    def interrupted(cfg):
        raise TrainingInterrupted("iql", 1234, 1000)

    with pytest.raises(SystemExit) as info:
        cli(interrupted, None)
    err = capsys.readouterr().err.strip()
    assert info.value.code == 130
    assert err == "[ipd] interrupted in iql at step 1234; run the same command to resume (from step 1000)"


def _transitions(n=60, obs_dim=3):
    from ipd.data import Transitions

    rng = np.random.default_rng(0)
    obs = rng.standard_normal((n + 1, obs_dim)).astype(np.float32)
    timeouts = np.zeros(n, bool)
    timeouts[19::20] = True
    return Transitions(
        obs[:-1], rng.uniform(-1, 1, (n, 2)), rng.standard_normal(n), obs[1:], np.zeros(n, bool), timeouts
    )


def test_integer_observations_are_named_when_cast(tmp_path):
    t = _transitions()
    path = write_hdf5(tmp_path / "d.hdf5", t)
    with h5py.File(path, "a") as f:
        del f["observations"], f["next_observations"]
        f["observations"] = np.round(t.observations * 10).astype(np.int64)
        f["next_observations"] = np.round(t.next_observations * 10).astype(np.int64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_hdf5(path)
    cast = [w for w in caught if issubclass(w.category, DatasetWarning)]
    assert len(cast) == 1, [str(w.message) for w in cast]  # one warning names both arrays
    named = "'observations' (int64), 'next_observations' (int64) are stored as integers"
    assert named in str(cast[0].message)


def test_rows_out_of_episode_order_are_refused_even_with_timeouts(tmp_path):
    from ipd.data import open_dataset

    t = _transitions(obs_dim=11)
    t.actions = np.zeros((len(t), 3), np.float32)
    order = np.random.default_rng(1).permutation(len(t))
    write_hdf5(tmp_path / "shuffled" / "hopper-medium.hdf5", t.subset(order))
    with pytest.raises(DatasetError, match="not stored in episode order"):
        open_dataset("hopper-medium", tmp_path / "shuffled", download_missing=False, source="d4rl")
    write_hdf5(tmp_path / "ok" / "hopper-medium.hdf5", t)  # the same rows in order load
    assert (
        len(open_dataset("hopper-medium", tmp_path / "ok", download_missing=False, source="d4rl").transitions)
        == 60
    )


def _finished(tmp_path) -> tuple[ArtifactStore, object]:
    store = ArtifactStore(tmp_path)
    art = store.artifact("hopper-medium", "value", {"value": {"lr": 1}})
    art.file("iql.pt").write_bytes(b"\x00" * 1000)
    art.finish({"loss": 1.0})
    return store, art


def test_tampered_or_incomplete_artifact_is_moved_aside_and_rebuilt(tmp_path, capsys):
    store, art = _finished(tmp_path)
    with store.lock(art):
        assert store.reusable(art, "value")
    assert "value: reusing finished artifact" in capsys.readouterr().out
    data = bytearray(art.file("iql.pt").read_bytes())
    data[500] ^= 1  # one bit, same size
    art.file("iql.pt").write_bytes(bytes(data))
    with pytest.warns(
        UserWarning, match=r"iql.pt changed since the stage finished.*building the stage again"
    ):
        with store.lock(art):
            assert not store.reusable(art, "value")
    assert not art.done and art.file("config.yaml").is_file()  # an empty artifact to build again
    aside = [p for p in art.path.parent.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1 and (aside[0] / "iql.pt").is_file()
    store2, art2 = _finished(tmp_path / "b")
    art2.file("iql.pt").unlink()
    with pytest.warns(UserWarning, match="iql.pt is missing"), store2.lock(art2):
        assert not store2.reusable(art2, "value")


def test_artifacts_finished_before_checksums_are_still_reused(tmp_path):
    store, art = _finished(tmp_path)
    art.file("DONE").write_text("ok\n")  # the earlier marker
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.reusable(art, "value")
    assert json.loads(art.file("metrics.json").read_text()) == {"loss": 1.0}
