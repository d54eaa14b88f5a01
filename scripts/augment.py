#!/usr/bin/env python
"""Stage 2 alone: `python scripts/augment.py task=hopper-medium` plans imagined rollouts from the
dataset's suboptimal states (reusing stage 1) and writes runs/<task>/augment/<hash>/augmented.hdf5."""

import sys

import hydra
from omegaconf import DictConfig

from ipd.cli import cli, precheck, run_augment


@hydra.main(config_path="../configs", config_name="train", version_base=None)
def main(cfg: DictConfig) -> None:
    cli(run_augment, cfg)


if __name__ == "__main__":
    precheck(sys.argv[1:])
    main()
