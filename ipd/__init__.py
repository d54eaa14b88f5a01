"""ipd: Imaginary Planning Distillation for offline reinforcement learning."""

from ipd.io import IPD_VERSION as __version__  # from the installed package metadata

__all__ = ["__version__"]
