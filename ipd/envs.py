"""The one place a task's gymnasium MuJoCo env is built.

MuJoCo 3.3+ warns at compile time that the ``settotalmass`` attribute of gymnasium's HalfCheetah
XML is deprecated. Its C library prints that to stderr once per env, so an evaluation over 50 envs
put 50 identical lines in every halfcheetah log. :func:`make_task_env` routes MuJoCo's warnings
through a handler while the env compiles: the known, harmless compiler deprecations are dropped,
any other MuJoCo warning is re-raised as a Python ``RuntimeWarning``, and the previous handler
is restored afterwards.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import gymnasium as gym
import mujoco

from ipd.tasks import TaskSpec

# Compiler deprecations of attributes that gymnasium's own v4/v5 XML files still use.
KNOWN_COMPILER_DEPRECATIONS = ("compiler attribute 'settotalmass' is deprecated",)


def _forward_mujoco_warning(message: str) -> None:
    if not message.startswith(KNOWN_COMPILER_DEPRECATIONS):
        warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)


@contextlib.contextmanager
def known_mujoco_deprecations_dropped() -> Iterator[None]:
    """Within the block, drop :data:`KNOWN_COMPILER_DEPRECATIONS`; other MuJoCo warnings become
    Python ``RuntimeWarning``s. The previous warning handler is restored on exit."""
    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(_forward_mujoco_warning)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


def make_task_env(task: TaskSpec, max_episode_steps: int | None = None) -> gym.Env:
    """``task.gym_id`` with ``task.env_kwargs`` (and a time limit, if given)."""
    kwargs = dict(task.env_kwargs)
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    with warnings.catch_warnings(), known_mujoco_deprecations_dropped():
        # "Hopper-v4 is out of date": v4 is the D4RL-compatible version, chosen on purpose
        warnings.filterwarnings("ignore", message=".*is out of date.*", category=DeprecationWarning)
        return gym.make(task.gym_id, **kwargs)
