#!/usr/bin/env python
"""Stage 1 alone: `python scripts/learn_models.py task=hopper-medium` trains (or reuses) the
world-model ensemble and the IQL value learner under runs/<task>/{world_model,value}/<hash>/."""

import sys

import hydra
from omegaconf import DictConfig

from ipd.cli import cli, precheck, run_learn_models


@hydra.main(config_path="../configs", config_name="train", version_base=None)
def main(cfg: DictConfig) -> None:
    cli(run_learn_models, cfg)


if __name__ == "__main__":
    precheck(sys.argv[1:])
    main()
