#!/usr/bin/env python
"""Generate a D4RL-protocol dataset: `python scripts/make_dataset.py task=hopper-medium [size=...]`.

Writes `<data.dir>/<task>.hdf5` (where `scripts/train.py` finds it) in the D4RL hdf5 layout, from
the behaviour policies and replay buffers that ipd ships (ipd/generate/assets/NOTICE.md), or from
`behaviour_policy=` / `replay=`. The last stdout line is one JSON object: the file and its attributes.
It is not the D4RL release: scores on it are not comparable with published D4RL tables.
"""

import difflib
import json
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from ipd.cli import fail, precheck
from ipd.config import CONFIG_DIR
from ipd.data.hdf5 import read_hdf5_attrs
from ipd.generate import GenerateError, make_dataset
from ipd.generate.behaviour import BehaviourError
from ipd.io import CheckpointError
from ipd.tasks import UnknownTaskError


@hydra.main(config_path="../configs", config_name="make_dataset", version_base=None)
def main(cfg: DictConfig) -> None:
    # the keys of configs/make_dataset.yaml (and its task group): one home for the valid keys
    known = (set(OmegaConf.load(CONFIG_DIR / "make_dataset.yaml")) - {"defaults", "hydra"}) | {"task"}
    unknown = sorted(set(cfg) - known - {"hydra"}) + [f"data.{k}" for k in cfg.data if k != "dir"]
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        fail(f"error: unknown key(s) {unknown}.{hint} Valid keys: {sorted(known)}, data.dir.")
    try:
        path = make_dataset(
            str(cfg.task.name),
            size=cfg.size,
            seed=cfg.seed,
            out_dir=cfg.data.dir,
            path=cfg.out,
            env_version=cfg.task.get("env_version"),
            policy=cfg.behaviour_policy,
            replay=cfg.replay,
            action_noise=float(cfg.action_noise),
            num_envs=cfg.num_envs,
            overwrite=bool(cfg.overwrite),
            progress=bool(cfg.progress),
        )
    except (GenerateError, BehaviourError, UnknownTaskError, CheckpointError) as exc:
        fail(f"error: {exc}")
    attrs = {k: v for k, v in read_hdf5_attrs(path).items() if k != "has_d4rl_metadata"}
    print(json.dumps({"path": str(path), **attrs}, default=str))


if __name__ == "__main__":
    if any(arg.startswith("policy=") for arg in sys.argv[1:]):  # else: "Unknown policy ... Choose one of: dt"
        fail(
            "error: the behaviour policy is `behaviour_policy=/path/to/weights.npz` (or an ipd .pt); "
            "`policy` names a config group of the training configs."
        )
    precheck(sys.argv[1:], runs=False)
    main()
