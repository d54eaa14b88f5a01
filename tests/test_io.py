"""Atomic writes and versioned checkpoints (ipd.io)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from ipd.io import CheckpointError, atomic_write, atomic_write_json, load_checkpoint, save_checkpoint


def _listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_atomic_write_failure_keeps_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "model.pt"
    path.write_text("old contents")

    def half_then_fail(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write("partial new contents")
        raise KeyboardInterrupt  # even a non-Exception interruption must clean up

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old contents"
    assert _listing(tmp_path) == ["model.pt"]

    with pytest.raises(ValueError, match="boom"):
        atomic_write(tmp_path / "new" / "fresh.json", lambda tmp: (_ for _ in ()).throw(ValueError("boom")))
    assert _listing(tmp_path / "new") == []  # no file, no temp file


def test_atomic_write_success_replaces_and_uses_normal_permissions(tmp_path):
    path = tmp_path / "sub" / "f.txt"

    def write(tmp: str) -> None:
        Path(tmp).write_text("v1")

    atomic_write(path, write)
    atomic_write(path, lambda tmp: Path(tmp).write_text("v2"))
    assert path.read_text() == "v2"
    assert _listing(path.parent) == ["f.txt"]
    umask = os.umask(0)
    os.umask(umask)
    # Not the 0600 of the underlying mkstemp file: other users can read shared datasets.
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_write_json_handles_numpy_and_paths(tmp_path):
    path = atomic_write_json(tmp_path / "m.json", {"a": np.arange(3), "p": Path("/x"), "f": np.float32(0.5)})
    assert json.loads(path.read_text()) == {"a": [0, 1, 2], "p": "/x", "f": 0.5}
    with pytest.raises(TypeError, match="not JSON serialisable"):
        atomic_write_json(tmp_path / "bad.json", {"x": object()})
    assert _listing(tmp_path) == ["m.json"]


def test_checkpoint_round_trip(tmp_path):
    payload = {"state_dict": {"w": torch.arange(4.0)}, "mean": np.ones(3, np.float32), "config": {"k": 20}}
    path = save_checkpoint(tmp_path / "c.pt", "ipd.test", 2, payload)
    blob = load_checkpoint(path, "ipd.test", 2)
    assert torch.equal(blob["state_dict"]["w"], torch.arange(4.0))
    np.testing.assert_array_equal(blob["mean"], np.ones(3))
    assert blob["config"] == {"k": 20}
    assert blob["format"]["name"] == "ipd.test" and blob["format"]["version"] == 2


def test_checkpoint_name_and_version_mismatch(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", "ipd.world_model", 1, {"x": 1})
    with pytest.raises(CheckpointError, match="holds a 'ipd.world_model' checkpoint, expected 'ipd.iql'"):
        load_checkpoint(path, "ipd.iql", 1)
    with pytest.raises(CheckpointError, match="format version 1 .* reads version 2") as info:
        load_checkpoint(path, "ipd.world_model", 2)
    assert "Re-train" in str(info.value)


def test_checkpoint_corrupt_missing_and_foreign_files(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError, match="corrupt or not a torch file"):
        load_checkpoint(garbage, "ipd.test", 1)

    good = save_checkpoint(tmp_path / "good.pt", "ipd.test", 1, {"w": torch.zeros(1000)}).read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(truncated, "ipd.test", 1)

    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt", "ipd.test", 1)

    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not an ipd checkpoint"):
        load_checkpoint(foreign, "ipd.test", 1)
    torch.save([1, 2, 3], foreign)
    with pytest.raises(CheckpointError, match="not an ipd checkpoint"):
        load_checkpoint(foreign, "ipd.test", 1)


def test_read_checkpoint_once_then_check_its_header(tmp_path):
    from ipd.io import check_format, checkpoint_task, read_checkpoint

    path = save_checkpoint(tmp_path / "p.pt", "ipd.dt", 3, {"task": "hopper-medium", "w": torch.zeros(2)})
    blob = read_checkpoint(path)
    assert blob["format"]["name"] == "ipd.dt" and checkpoint_task(blob) == "hopper-medium"
    check_format(blob, "ipd.dt", 3, path)
    with pytest.raises(CheckpointError, match="expected 'ipd.iql'"):
        check_format(blob, "ipd.iql", 3, path)
    with pytest.raises(CheckpointError, match="format version 3 .* reads version 1"):
        check_format(blob, "ipd.dt", 1, path)
    torch.save({"w": 1}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an ipd checkpoint"):
        read_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "absent.pt")


class _Payload:
    """A pickled object that would run code on unpickling if it were allowed."""

    def __reduce__(self):
        return (print, ("unpickled arbitrary code",))


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": {"name": "ipd.test", "version": 1}, "x": _Payload()}, path)
    with pytest.raises(CheckpointError, match="refuses to unpickle"):
        load_checkpoint(path, "ipd.test", 1)
    assert "unpickled arbitrary code" not in capsys.readouterr().out


def test_checkpoint_keeps_numpy_dtypes(tmp_path):
    arrays = {str(np.dtype(t)): np.arange(3).astype(t) for t in (np.float32, np.float64, np.int64, np.bool_)}
    blob = load_checkpoint(save_checkpoint(tmp_path / "a.pt", "ipd.test", 1, arrays), "ipd.test", 1)
    for key, value in arrays.items():
        assert blob[key].dtype == value.dtype
        np.testing.assert_array_equal(blob[key], value)
