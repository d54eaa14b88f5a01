"""The checkpoint contract, once for every learned component (docs/design.md §3).

Each component round-trips through save/load with identical outputs, and every bad file fails with
a :class:`CheckpointError` that names the problem: missing, corrupt (garbage or truncated), another
component's checkpoint, or another format version. ``load_policy`` reads policy checkpoints of every
kind and refuses non-policy ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from ipd.data import Normalizer
from ipd.io import CheckpointError, save_checkpoint, torch_load
from ipd.models import bc, transformer, value, world_model
from ipd.models.bc import BCConfig, BCLearner
from ipd.models.policies import load_policy
from ipd.models.transformer import ConditioningConfig, DecisionTransformer, DTConfig, load_dt, save_dt
from ipd.models.value import IQLConfig, IQLLearner
from ipd.models.world_model import EnsembleWorldModel, WorldModelConfig
from ipd.tasks import get_task

OBS, ACT = 11, 3
STATES = torch.randn(64, OBS, generator=torch.Generator().manual_seed(0))
ACTIONS = torch.rand(64, ACT, generator=torch.Generator().manual_seed(1)) * 2 - 1


@dataclass
class Component:
    name: str  # checkpoint component name
    save: Callable[[Path], Path]  # writes a checkpoint, returns its path
    load: Callable[[Path], object]
    outputs: Callable[[object], list[torch.Tensor]]  # what must be identical after a round trip


def _world_model() -> Component:
    cfg = WorldModelConfig(ensemble_size=3, num_elites=2, hidden_dims=(16,), seed=0)
    terminal = get_task("hopper-medium").is_terminal_torch
    model = EnsembleWorldModel(OBS, ACT, cfg, terminal).eval()

    def outputs(m: EnsembleWorldModel) -> list[torch.Tensor]:
        step = m.step(STATES, ACTIONS, torch.Generator().manual_seed(3))
        return [*m.predict(STATES, ACTIONS), step.next_states, step.terminals, step.uncertainty]

    return Component(
        world_model.CHECKPOINT_NAME,
        lambda p: model.save(p, task="hopper-medium"),
        lambda p: EnsembleWorldModel.load(p, "cpu", terminal),
        outputs,
    )


def _iql() -> Component:
    learner = IQLLearner(OBS, ACT, IQLConfig(hidden_dims=(16,), num_updates=1))
    return Component(
        value.CHECKPOINT_NAME,
        lambda p: learner.save(p, task="hopper-medium"),
        IQLLearner.load,
        lambda m: [torch.as_tensor(m.value(STATES)), torch.as_tensor(m.q(STATES, ACTIONS)), m.act(STATES)],
    )


def _dt() -> Component:
    cfg = DTConfig(embed_dim=16, n_layers=1, context=4)
    model = DecisionTransformer(OBS, ACT, cfg).eval()
    norm = Normalizer(np.arange(OBS, dtype=np.float32), np.full(OBS, 2.0, np.float32))
    cond = ConditioningConfig("rtg", 500.0, 3600.0)
    inputs = (STATES[:8].reshape(2, 4, OBS), ACTIONS[:8].reshape(2, 4, ACT), torch.ones(2, 4, 1))
    steps = torch.arange(4).repeat(2, 1)
    return Component(
        transformer.CHECKPOINT_NAME,
        lambda p: save_dt(p, model, norm, cond, extra={"task": "hopper-medium"}),
        load_dt,
        lambda b: [b.model(*inputs, steps), torch.as_tensor(b.state_normalizer.mean)],
    )


def _bc() -> Component:
    learner = BCLearner(OBS, ACT, BCConfig(hidden_dims=(16,), num_updates=1, top_fraction=0.3))
    learner.set_normalizer(Normalizer(np.arange(OBS, dtype=np.float32), np.full(OBS, 2.0, np.float32)))
    return Component(
        bc.CHECKPOINT_NAME,
        lambda p: learner.save(p, task="hopper-medium"),
        BCLearner.load,
        lambda m: [m.act(STATES), torch.as_tensor(m.normalizer.mean)],
    )


COMPONENTS = {"world_model": _world_model, "iql": _iql, "dt": _dt, "bc": _bc}


@pytest.fixture(params=sorted(COMPONENTS))
def component(request) -> Component:
    torch.manual_seed(0)
    return COMPONENTS[request.param]()


def test_round_trip_gives_identical_outputs(component, tmp_path):
    path = component.save(tmp_path / "model.pt")
    first, second = component.load(path), component.load(path)
    for a, b in zip(component.outputs(first), component.outputs(second), strict=True):
        torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b), rtol=0, atol=0)
    assert torch_load(path)["format"]["name"] == component.name


def test_missing_file(component, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        component.load(tmp_path / "absent.pt")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_file(component, tmp_path, damage):
    good = component.save(tmp_path / "good.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all" if damage == "garbage" else good.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt"):
        component.load(bad)


def test_wrong_component(component, tmp_path):
    payload = {k: v for k, v in torch_load(component.save(tmp_path / "good.pt")).items() if k != "format"}
    other = "ipd.iql" if component.name != "ipd.iql" else "ipd.dt"
    save_checkpoint(tmp_path / "other.pt", other, 1, payload)
    with pytest.raises(CheckpointError, match=f"holds a '{other}' checkpoint, expected '{component.name}'"):
        component.load(tmp_path / "other.pt")


def test_wrong_version(component, tmp_path):
    payload = {k: v for k, v in torch_load(component.save(tmp_path / "good.pt")).items() if k != "format"}
    save_checkpoint(tmp_path / "v99.pt", component.name, 99, payload)
    with pytest.raises(CheckpointError, match="format version 99 .* reads version 1"):
        component.load(tmp_path / "v99.pt")


def test_malformed_payload(component, tmp_path):
    save_checkpoint(tmp_path / "partial.pt", component.name, 1, {"obs_dim": OBS})
    with pytest.raises(CheckpointError, match="malformed|lacks"):
        component.load(tmp_path / "partial.pt")


def test_load_policy_reads_every_policy_kind_and_refuses_others(tmp_path):
    for make in (_iql, _dt, _bc):
        comp = make()
        loaded = load_policy(comp.save(tmp_path / f"{comp.name}.pt"))
        assert loaded.kind == comp.name and loaded.task == "hopper-medium"
        loaded.policy.reset(2)
        actions = loaded.policy.act(STATES[:2].numpy())
        assert actions.shape == (2, ACT) and np.abs(actions).max() <= 1
    wm = _world_model()
    with pytest.raises(CheckpointError, match="not a policy"):
        load_policy(wm.save(tmp_path / "wm.pt"))


def test_value_conditioned_dt_bundles_its_value_net(tmp_path):
    learner = IQLLearner(OBS, ACT, IQLConfig(hidden_dims=(16,), num_updates=1))
    cond = ConditioningConfig("value", 1000.0)
    model = DecisionTransformer(OBS, ACT, DTConfig(embed_dim=16, n_layers=1, context=4))
    path = save_dt(tmp_path / "dt.pt", model, Normalizer.identity(OBS), cond)
    with pytest.raises(CheckpointError, match="bundles no value model"):
        load_policy(path)
    state = learner.value_state()
    save_dt(path, model, Normalizer.identity(OBS), cond, extra={"value_model": state})
    assert load_policy(path).policy.value_fn(STATES).shape == (64,)
    bad = {**state, "format": {**state["format"], "version": 99}}
    save_dt(path, model, Normalizer.identity(OBS), cond, extra={"value_model": bad})
    with pytest.raises(CheckpointError, match="format version 99"):
        load_policy(path)
