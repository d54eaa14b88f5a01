#!/usr/bin/env python
"""Evaluate a saved policy: `python scripts/evaluate.py checkpoint=path/to/policy.pt episodes=10`.

The checkpoint alone is enough (DT/IPD policies bundle their normaliser and value net; IQL
checkpoints hold their actor). The task comes from the checkpoint unless task=... is given.
"""

import sys

import hydra
from omegaconf import DictConfig

from ipd.cli import cli, precheck, run_evaluate


@hydra.main(config_path="../configs", config_name="train", version_base=None)
def main(cfg: DictConfig) -> float:
    return cli(run_evaluate, cfg)


if __name__ == "__main__":
    precheck(sys.argv[1:])
    main()
