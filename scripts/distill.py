#!/usr/bin/env python
"""Stage 3 alone: `python scripts/distill.py task=hopper-medium` trains the value-conditioned
sequence policy on the augmented data, reusing stages 1-2 (and building them if missing).
Prints the policy checkpoint path; evaluate it with scripts/evaluate.py checkpoint=<path>."""

import sys

import hydra
from omegaconf import DictConfig

from ipd.cli import cli, precheck, run_distill


@hydra.main(config_path="../configs", config_name="train", version_base=None)
def main(cfg: DictConfig) -> None:
    cli(run_distill, cfg)


if __name__ == "__main__":
    precheck(sys.argv[1:])
    main()
