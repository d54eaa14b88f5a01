"""ipd: Imaginary Planning Distillation for offline reinforcement learning."""

from ipd.io import IPD_VERSION as __version__  # from the installed package metadata
from ipd.rundir import register_resolvers

register_resolvers()  # ${ipd.run_stamp:} in configs/train.yaml's run dirs

__all__ = ["__version__"]
