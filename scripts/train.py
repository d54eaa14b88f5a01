#!/usr/bin/env python
"""Train and evaluate: `python scripts/train.py task=hopper-medium [algo=ipd|dt|iql] [preset=smoke]`.

algo=ipd runs learn models -> augment -> distill -> evaluate, reusing finished stage artifacts.
The last stdout line is one JSON object with the task, algo, normalised score and run dir.
"""

import sys

import hydra
from omegaconf import DictConfig

from ipd.cli import cli, precheck, run_train


@hydra.main(config_path="../configs", config_name="train", version_base=None)
def main(cfg: DictConfig) -> float:
    return cli(run_train, cfg)


if __name__ == "__main__":
    precheck(sys.argv[1:])
    main()
