"""Config composition and validation: Hydra yaml -> typed dataclasses, with errors that name the key.

**One home for each default: the dataclass.** Every config group node that maps onto a dataclass
(mbrl-lib style, named by ``_target_``) is composed on top of a *schema* generated from that
dataclass (:data:`SCHEMAS`, registered in Hydra's ConfigStore as ``<group>/<name>_defaults``): the
schema holds every field with the dataclass's default, so the yaml file (``configs/value/iql.yaml``)
lists only what the pipeline sets differently (interpolations such as ``${seed}``, task-dependent
values), and every field can still be overridden from the command line. :func:`section` builds the
dataclass, and :func:`validate_config` is a loop over :data:`SECTIONS`. Nothing outside this module
and ``scripts/`` needs Hydra: every dataclass is usable directly from a notebook.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import re
import types
import typing
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ipd.tasks import get_task
from ipd.utils import resolve_device

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


# Config nodes that map 1:1 onto a dataclass (named by the node's ``_target_``).
SECTIONS = ("world_model", "value", "bc", "planner", "augment", "policy", "policy.model", "policy.train")


# ``${ipd.sub:a,b}`` = a - b in yaml (e.g. augment.max_prefix_length = policy.model.context - 1).
OmegaConf.register_new_resolver("ipd.sub", lambda a, b: int(a) - int(b), replace=True)


class ConfigError(ValueError):
    """A config value or key is invalid; the message names the key and the valid choices."""


# group -> {schema name: (_target_, {nested key: nested _target_})}; the _target_ strings are
# part of every stage's artifact hash, so they keep the names they were stored with.
SCHEMAS = {
    "world_model": {"ensemble_defaults": ("ipd.models.world_model.WorldModelConfig", {})},
    "value": {"iql_defaults": ("ipd.models.value.IQLConfig", {})},
    "bc": {"mlp_defaults": ("ipd.models.bc.BCConfig", {})},
    "planner": {"planner_defaults": ("ipd.planning.planner.PlannerConfig", {})},
    "augment": {"augment_defaults": ("ipd.planning.augment.AugmentConfig", {})},
    "policy": {
        "dt_defaults": (
            "ipd.distill.DistillConfig",
            {
                "model": "ipd.models.transformer.DTConfig",
                "train": "ipd.models.sequence_trainer.SequenceTrainConfig",
            },
        )
    },
}


def schema(target: str, nested: dict[str, str] | None = None) -> type:
    """A dataclass with ``_target_`` and every field of the ``target`` dataclass at its default
    (typed ``Any``: the dataclass checks values when :func:`section` builds it), plus ``nested``
    sections; what Hydra composes a group's yaml file on top of."""
    cls = resolve_target(target, target)
    fields: list[tuple[str, Any, Any]] = [("_target_", str, dataclasses.field(default=target))]
    for f in dataclasses.fields(cls):
        value = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        value = list(value) if isinstance(value, tuple) else value
        fields.append((f.name, Any, dataclasses.field(default_factory=lambda v=value: copy.deepcopy(v))))
    for key, sub in (nested or {}).items():
        fields.append((key, Any, dataclasses.field(default_factory=schema(sub))))
    return dataclasses.make_dataclass(f"{cls.__name__}Defaults", fields)


def register_schemas() -> None:
    """Store :data:`SCHEMAS` in Hydra's ConfigStore (idempotent); scripts call it before composing."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, entries in SCHEMAS.items():
        for name, (target, nested) in entries.items():
            store.store(group=group, name=name, node=schema(target, nested))


def load_config(overrides: list[str] | None = None, config_name: str = "train") -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` with Hydra overrides, outside of a Hydra app."""
    from hydra import compose, initialize_config_dir  # Hydra only when composing from yaml

    register_schemas()
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        return compose(config_name, overrides=overrides or [])


def to_plain(cfg: DictConfig | dict) -> dict:
    """A resolved plain dict (for hashing, json and logging)."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def _float_fields(cls: type) -> set[str]:
    """Fields of a config dataclass annotated ``float`` (or ``float | None``)."""
    hints = typing.get_type_hints(cls)
    return {
        f.name
        for f in dataclasses.fields(cls)
        if hints.get(f.name) is float or float in typing.get_args(hints.get(f.name))
    }


def canonical(node: Any) -> Any:
    """A plain config with every int in a ``float`` field of its ``_target_`` dataclass made a float.

    YAML and the command line read ``alpha=0`` as an int and ``alpha=0.0`` as a float; the
    dataclass treats them alike, so the artifact hash (:func:`ipd.artifacts.config_hash`) must
    too, or a sweep would train the same stage twice. Unknown targets are left as they are
    (:func:`validate_config` reports them)."""
    if isinstance(node, list):
        return [canonical(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: canonical(v) for k, v in node.items()}
    try:
        floats = _float_fields(resolve_target(out["_target_"])) if "_target_" in out else set()
    except ConfigError:
        floats = set()
    for key in floats & out.keys():
        if isinstance(out[key], int) and not isinstance(out[key], bool):
            out[key] = float(out[key])
    return out


def resolve_target(path: str, key: str = "?") -> type:
    """The class a ``_target_`` string names (``package.module.Class``)."""
    module, _, name = str(path).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"'{key}._target_' names '{path}', which cannot be imported ({exc}).") from exc
    if not dataclasses.is_dataclass(cls):
        raise ConfigError(f"'{key}._target_' names '{path}', which is not a config dataclass.")
    return cls


def _is_subsection(value: Any) -> bool:
    return isinstance(value, dict) and "_target_" in value


def section(cfg: DictConfig, key: str, cls: type | None = None) -> Any:
    """Build the dataclass of ``cfg[key]`` (``key`` may be dotted, e.g. ``policy.model``).

    ``cls`` defaults to the node's ``_target_``. Nested nodes with their own ``_target_`` are
    separate sections and are skipped; any other key the dataclass lacks is an error that lists
    the valid keys.
    """
    node_cfg = OmegaConf.select(cfg, key) if isinstance(cfg, DictConfig) else cfg[key]
    if node_cfg is None:
        raise ConfigError(f"Config section '{key}' is missing.")
    node = to_plain(node_cfg)
    full_key = node_cfg._get_full_key(None) if isinstance(node_cfg, DictConfig) else key
    full_key = full_key or key
    target = node.pop("_target_", None)
    if cls is None:
        if target is None:
            raise ConfigError(f"Config section '{full_key}' has no _target_ naming its dataclass.")
        cls = resolve_target(target, full_key)
    node = {k: v for k, v in node.items() if not _is_subsection(v)}
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(node) - names)
    if unknown:
        raise ConfigError(
            f"Unknown key(s) {unknown} in '{full_key}'.{_closest(unknown[0], names, full_key)} "
            f"Valid keys: {sorted(names)}."
        )
    hints = typing.get_type_hints(cls)
    for name, value in node.items():
        check_value(f"{full_key}.{name}", value, hints.get(name, Any))
    try:
        return cls(**node)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Invalid '{full_key}' config: {exc}") from exc


def _closest(key: str, valid: typing.Iterable[str], where: str = "") -> str:
    close = difflib.get_close_matches(str(key), sorted(valid), n=1, cutoff=0.6)
    return f" Did you mean '{f'{where}.' if where else ''}{close[0]}'?" if close else ""


# Range rules for config values, by field name, in every section (dataclass or not):
# (low, high, low inclusive, high inclusive); None: unbounded on that side.
COUNT = (1, None, True, True)
RANGES: dict[str, tuple] = {
    **dict.fromkeys(
        ("num_updates", "batch_size", "horizon", "num_samples", "num_elites", "iterations", "context",
         "n_layers", "n_heads", "embed_dim", "ensemble_size", "episodes", "num_envs", "max_episode_steps",
         "patience", "max_per_trajectory", "max_starts", "rollout_length", "min_rollout_length",
         "token_head_updates", "eval_batch_size", "max_holdout", "mlp_ratio", "max_timestep", "max_steps",
         "max_epochs"),
        COUNT,
    ),
    **dict.fromkeys(("log_every", "eval_every", "checkpoint_every", "warmup_steps", "min_spacing",
                     "eval_episodes", "max_prefix_length"), (0, None, True, True)),
    **dict.fromkeys(("lr", "actor_lr", "weight_decay", "temperature", "init_std", "min_std", "max_std",
                     "prior_noise", "uncertainty_penalty", "cut_penalty", "grad_clip", "max_weight",
                     "beta", "return_scale", "max_train_seconds"),
                    (0, None, True, True)),
    **dict.fromkeys(("gamma", "token_gamma"), (0, 1, False, True)),
    **dict.fromkeys(("dropout", "prior_fraction", "momentum", "holdout_ratio", "imagined_share"),
                    (0, 1, True, False)),
    **dict.fromkeys(("expectile", "token_expectile", "token_bootstrap_expectile", "quantile",
                     "uncertainty_quantile", "top_fraction", "polyak", "improvement_threshold"),
                    (0, 1, False, True)),
}  # fmt: skip


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _matches(value: Any, hint: Any) -> bool:
    """Whether a yaml/command-line value fits a dataclass field's type hint (ints pass for floats)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is typing.Literal:
        return value in args
    if origin in (tuple, list):
        item = args[0] if args else Any
        return isinstance(value, list | tuple) and all(_matches(v, item) for v in value)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def check_value(key: str, value: Any, hint: Any = Any) -> None:
    """Raise :class:`ConfigError` if ``value`` does not fit ``hint`` or the range rule of its name."""
    if not _matches(value, hint):
        choices = typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else None
        want = f"one of {list(choices)}" if choices else f"a value of type {_type_name(hint)}"
        raise ConfigError(f"{key} must be {want}, got {value!r} ({type(value).__name__}).")
    rule = RANGES.get(key.rsplit(".", 1)[-1])
    if rule is None or value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return
    low, high, low_in, high_in = rule
    too_low = low is not None and (value < low or (value == low and not low_in))
    too_high = high is not None and (value > high or (value == high and not high_in))
    if too_low or too_high:
        bounds = f"{'[' if low_in else '('}{low if low is not None else '-inf'}, "
        bounds += f"{high if high is not None else 'inf'}{']' if high_in else ')'}"
        raise ConfigError(f"{key} must be in {bounds}, got {value}.")


def _reference() -> DictConfig:
    """``configs/train.yaml`` as written (no Hydra: this runs inside Hydra apps too): the keys that
    exist outside the dataclass sections, plus the config groups as top-level keys."""
    ref = OmegaConf.load(CONFIG_DIR / "train.yaml")
    groups = [next(iter(d)) for d in ref.pop("defaults") if isinstance(d, dict | DictConfig)]
    for group in groups:
        if group not in ref:
            ref[group] = {}
    return ref


_TOP_LEVEL_TYPES = {
    "seed": int,
    "device": str,
    "algo": str,
    "checkpoint": str | None,
    "episodes": int | None,
    "target_return": float | None,
}


def task_keys() -> list[str]:
    """The keys a task may set: those the task yaml files use, and those other config files read
    from it (``${task.x}``, ``${oc.select:task.x,...}``), such as the optional per-task settings."""
    keys = {k for p in (CONFIG_DIR / "task").glob("*.yaml") for k in OmegaConf.load(p)}
    for p in CONFIG_DIR.glob("*/*.yaml"):
        keys |= set(re.findall(r"\$\{(?:oc\.select:)?task\.(\w+)", p.read_text()))
    return sorted(keys)


def _check_plain_sections(cfg: DictConfig) -> None:
    """Keys and values outside the dataclass sections: top level, task, data, eval, logging, paths."""
    ref = _reference()
    known = {k for k in ref if k not in ("hydra", "preset")}  # preset only sets other keys
    for key in cfg:
        if key not in known and key != "hydra":
            raise ConfigError(
                f"Unknown config key '{key}'.{_closest(key, known)} Top-level keys: {sorted(known)}."
            )
    for key, hint in _TOP_LEVEL_TYPES.items():
        if key in cfg:
            check_value(key, cfg[key], hint)
    if int(cfg.seed) < 0:
        raise ConfigError(f"seed must be >= 0, got {cfg.seed}.")
    valid_task_keys = task_keys()
    for key in cfg.task:
        if key not in valid_task_keys:
            hint = _closest(key, valid_task_keys, "task")
            raise ConfigError(f"Unknown key 'task.{key}'.{hint} Task keys: {valid_task_keys}.")
    for name in ("data", "eval", "logging", "paths"):
        for key in cfg[name]:
            if key not in ref[name]:
                hint = _closest(key, ref[name], name)
                raise ConfigError(f"Unknown key '{name}.{key}'.{hint} Valid keys: {sorted(ref[name])}.")
            default = ref[name][key]
            hint = Any if default is None else type(default) if isinstance(default, bool | int | str) else Any
            check_value(f"{name}.{key}", cfg[name][key], hint)


def validate_config(cfg: DictConfig, algorithms: tuple[str, ...] | None = None) -> None:
    """Fail fast on bad values, before any data is loaded or model trained: unknown keys anywhere
    (with the closest valid key), types and ranges of every section and top-level key, known enums.
    ``algorithms``: the names ``cfg.algo`` may take (``ipd.pipeline.ALGORITHMS``; None: not checked)."""
    _check_plain_sections(cfg)
    get_task(str(cfg.task.name))
    if algorithms is not None and str(cfg.algo) not in algorithms:
        raise ConfigError(
            f"algo must be one of {'|'.join(algorithms)}, got '{cfg.algo}'{_closest(cfg.algo, algorithms)}"
        )
    for key in SECTIONS:
        section(cfg, key)
    try:
        resolve_device(str(cfg.device))
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(str(exc)) from exc
