"""Config composition: each default has one home (its dataclass), and every field stays overridable."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from ipd.config import CONFIG_DIR, SCHEMAS, load_config, resolve_target, section


def _defaults(target: str) -> dict:
    cls = resolve_target(target)
    out = {}
    for f in dataclasses.fields(cls):
        value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


@pytest.mark.parametrize("group", sorted(SCHEMAS))
def test_group_yaml_never_repeats_a_dataclass_default(group):
    for path in sorted(Path(CONFIG_DIR, group).glob("*.yaml")):
        node = yaml.safe_load(path.read_text()) or {}
        for name, (target, nested) in SCHEMAS[group].items():
            if name not in (node.get("defaults") or []):
                continue
            for section_node, section_target in [
                (node, target),
                *((node.get(k) or {}, t) for k, t in nested.items()),
            ]:
                defaults = _defaults(section_target)
                repeated = [k for k, v in section_node.items() if k in defaults and v == defaults[k]]
                assert not repeated, f"{path.name} repeats the defaults of {section_target}: {repeated}"


def test_every_dataclass_field_is_composed_and_overridable():
    cfg = load_config(["policy.train.lr=0.001", "planner.num_elites=7", "world_model.activation=relu"])
    assert section(cfg, "policy.train").lr == 0.001 and section(cfg, "planner").num_elites == 7
    assert section(cfg, "world_model").activation == "relu"
    for group, entries in SCHEMAS.items():
        for target, nested in entries.values():
            assert set(_defaults(target)) <= set(cfg[group].keys())
            for key, sub in nested.items():
                assert set(_defaults(sub)) <= set(cfg[group][key].keys())


def test_ipd_token_settings_are_the_dataclass_defaults_on_every_task():
    from ipd.distill import DistillConfig

    for task in ("walker2d-medium", "hopper-medium"):
        policy = load_config([f"task={task}"]).policy
        assert policy.imagined_share == DistillConfig().imagined_share
        assert policy.token_scale == DistillConfig().token_scale
