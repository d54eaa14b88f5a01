"""Task registry: D4RL MuJoCo locomotion tasks and everything known about them.

A task name is ``<env>-<level>`` (``hopper-medium``, ``halfcheetah-medium-replay`` ...).
Each :class:`TaskSpec` carries the gymnasium env id used for evaluation, the D4RL v2
dataset name / file name / URL, the Minari dataset with the same behaviour policy level (if
any), the reference returns for score normalisation, observation and action sizes, and the
termination rule as batched numpy and torch functions (the world model applies it to every
imagined step).

**Env versions.** A task targets gymnasium ``*-v4`` (the D4RL v2 MuJoCo models on the
maintained bindings; the default, and right for D4RL files) or ``*-v5``
(``get_task(name, env_version="v5")``, or the env a Minari dataset records, see
:meth:`TaskSpec.with_env`). v5 keeps v4's observations, action spaces and healthy-state rules
for these three envs (tests/test_tasks.py checks both versions against the envs themselves);
it fixes model details (e.g. Walker2d's feet friction) and pays the healthy reward only while
healthy. So the same termination functions serve both versions.

**Scores.** ``normalize_score`` uses D4RL's reference returns, unless the task carries a
dataset's own reference scores (Minari datasets that record ``ref_min_score`` /
``ref_max_score``, see :meth:`TaskSpec.with_reference_scores`); ``score_reference`` names the
one in use.

Termination rules are the gymnasium healthy-state checks written on the *observation*
(which omits the x position):

- hopper: ``obs[0]`` (torso height) > 0.7, ``|obs[1]|`` (torso angle) < 0.2 and every
  other entry in (-100, 100) (the env checks unclipped joint velocities, the observation
  holds them clipped to ±10, so that part of the rule cannot fire from observations; real
  rollouts never reach |qvel| > 100, see tests/test_tasks.py);
- walker2d: 0.8 < ``obs[0]`` < 2.0 and -1 < ``obs[1]`` < 1;
- halfcheetah: never terminates.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

D4RL_URL_BASE = "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2"

LEVELS = ("random", "medium", "medium-replay", "medium-expert", "expert")

ENV_VERSIONS = ("v4", "v5")
QVEL_CLIP = 10.0  # hopper and walker2d observations clip qvel to [-10, 10]; halfcheetah does not clip
DEFAULT_ENV_VERSION = "v4"  # the D4RL v2 models; the right env for D4RL files

# Minari's MuJoCo datasets (Hopper-v5 ...) exist for these levels: ``mujoco/<env>/<level>-v0``.
MINARI_LEVELS = {"medium": "medium-v0", "expert": "expert-v0"}

# Env kwargs that change the observation layout or the termination rule, which the world model
# and the dims checks assume to be the defaults.
_UNSUPPORTED_ENV_KWARGS = re.compile(
    r"^(healthy_.*|terminate_when_unhealthy|exclude_current_positions_from_observation|include_.*)$"
)


class UnknownTaskError(ValueError):
    """Raised for a task name that is not in the registry."""


@dataclass(frozen=True)
class EnvSpec:
    name: str
    gym_name: str  # gymnasium env name without the version: "Hopper"
    obs_dim: int
    act_dim: int
    ref_min_score: float  # D4RL REF_MIN_SCORE (random policy)
    ref_max_score: float  # D4RL REF_MAX_SCORE (expert policy)

    def gym_id(self, version: str = DEFAULT_ENV_VERSION) -> str:
        return f"{self.gym_name}-{check_env_version(version)}"


ENVS: dict[str, EnvSpec] = {
    "hopper": EnvSpec("hopper", "Hopper", 11, 3, -20.272305, 3234.3),
    "halfcheetah": EnvSpec("halfcheetah", "HalfCheetah", 17, 6, -280.178953, 12135.0),
    "walker2d": EnvSpec("walker2d", "Walker2d", 17, 6, 1.629008, 4592.3),
}


def check_env_version(version: str) -> str:
    """``"v4"``/``"v5"`` (also ``"V5"``, ``"5"``) -> canonical form; anything else fails clearly."""
    v = str(version).strip().lower()
    v = v if v.startswith("v") else f"v{v}"
    if v not in ENV_VERSIONS:
        raise UnknownTaskError(
            f"Unknown env version '{version}': choose one of {', '.join(ENV_VERSIONS)} "
            "(v4: the D4RL v2 MuJoCo models, default for D4RL files; v5: gymnasium's current envs)."
        )
    return v


def _alive_np(env: str, obs: np.ndarray) -> np.ndarray:
    finite = np.isfinite(obs).all(axis=-1)
    if env == "hopper":
        height, angle = obs[..., 0], obs[..., 1]
        in_range = (np.abs(obs[..., 1:]) < 100.0).all(axis=-1)
        return finite & in_range & (height > 0.7) & (np.abs(angle) < 0.2)
    if env == "walker2d":
        height, angle = obs[..., 0], obs[..., 1]
        return finite & (height > 0.8) & (height < 2.0) & (angle > -1.0) & (angle < 1.0)
    return finite


def _alive_torch(env: str, obs: torch.Tensor) -> torch.Tensor:
    finite = torch.isfinite(obs).all(dim=-1)
    if env == "hopper":
        height, angle = obs[..., 0], obs[..., 1]
        in_range = (obs[..., 1:].abs() < 100.0).all(dim=-1)
        return finite & in_range & (height > 0.7) & (angle.abs() < 0.2)
    if env == "walker2d":
        height, angle = obs[..., 0], obs[..., 1]
        return finite & (height > 0.8) & (height < 2.0) & (angle > -1.0) & (angle < 1.0)
    return finite


@dataclass(frozen=True)
class TaskSpec:
    """One dataset task, e.g. ``hopper-medium``, and the env it is evaluated in.

    ``env_version``, ``env_kwargs`` and ``ref_scores`` default to the D4RL setting (``*-v4``,
    no kwargs, D4RL reference returns); :meth:`with_env` and :meth:`with_reference_scores`
    return a copy adapted to a dataset (e.g. the env spec and scores a Minari dataset records).
    """

    name: str
    env: EnvSpec
    level: str
    env_version: str = DEFAULT_ENV_VERSION
    env_kwargs: tuple[tuple[str, Any], ...] = ()  # extra gym.make kwargs, as sorted (key, value) pairs
    ref_scores: tuple[float, float] | None = None  # (random, expert) overriding D4RL's
    score_source: str = "d4rl"  # where ref_scores come from: d4rl | minari

    @property
    def gym_id(self) -> str:
        return self.env.gym_id(self.env_version)

    @property
    def minari_id(self) -> str | None:
        """The Minari dataset of this env and level (``mujoco/hopper/medium-v0``), if Minari has one."""
        level = MINARI_LEVELS.get(self.level)
        return f"mujoco/{self.env.name}/{level}" if level else None

    @property
    def reference_scores(self) -> tuple[float, float]:
        """(random, expert) returns that map to normalised scores 0 and 100."""
        return self.ref_scores or (self.env.ref_min_score, self.env.ref_max_score)

    @property
    def score_reference(self) -> str:
        """Which reference returns ``normalize_score`` uses: ``d4rl`` or ``minari``."""
        return self.score_source if self.ref_scores else "d4rl"

    def with_version(self, version: str) -> TaskSpec:
        return replace(self, env_version=check_env_version(version))

    def with_env(self, gym_id: str, kwargs: Mapping[str, Any] | None = None) -> TaskSpec:
        """This task evaluated in ``gym_id`` (e.g. ``Hopper-v5``, as a Minari dataset records it).

        The env must be this task's env in a supported version, and ``kwargs`` must not change
        the observation layout or the termination rule; anything else raises ``ValueError``.
        """
        name, _, version = str(gym_id).rpartition("-")
        if name != self.env.gym_name or not version:
            raise ValueError(
                f"env '{gym_id}' is not the env of task '{self.name}' ({self.env.gym_name}-"
                f"{'|'.join(ENV_VERSIONS)}): the dataset belongs to another task."
            )
        try:
            version = check_env_version(version)
        except UnknownTaskError as exc:
            raise ValueError(f"env '{gym_id}' is not supported: {exc}") from exc
        kwargs = dict(kwargs or {})
        bad = sorted(k for k in kwargs if _UNSUPPORTED_ENV_KWARGS.match(k))
        if bad:
            raise ValueError(
                f"env '{gym_id}' is configured with {bad}, which change the observation layout or "
                f"the termination rule that ipd's world model applies for '{self.env.name}'."
            )
        return replace(self, env_version=version, env_kwargs=tuple(sorted(kwargs.items())))

    def with_reference_scores(self, random: float, expert: float, source: str) -> TaskSpec:
        """Normalise scores with these (random, expert) returns instead of D4RL's."""
        random, expert = float(random), float(expert)
        if not expert > random:
            raise ValueError(f"reference scores need expert > random, got random={random}, expert={expert}")
        return replace(self, ref_scores=(random, expert), score_source=source)

    def eval_record(self) -> dict[str, Any]:
        """What a checkpoint records so that it is evaluated in this env with these reference
        scores later (``scripts/evaluate.py`` without ``task.env_version=`` / ``data.minari_id=``)."""
        return {
            "name": self.name,
            "env_version": self.env_version,
            "env_kwargs": [list(kv) for kv in self.env_kwargs],
            "ref_scores": list(self.ref_scores) if self.ref_scores else None,
            "score_source": self.score_source,
        }

    @staticmethod
    def from_eval_record(record: Mapping[str, Any]) -> TaskSpec:
        """The task a :meth:`eval_record` describes; a malformed record raises ``ValueError``."""
        try:
            task = get_task(str(record["name"]), str(record["env_version"]))
            task = replace(task, env_kwargs=tuple((str(k), v) for k, v in record.get("env_kwargs") or ()))
            ref = record.get("ref_scores")
            return task.with_reference_scores(*ref, source=str(record["score_source"])) if ref else task
        except (KeyError, TypeError, UnknownTaskError) as exc:
            raise ValueError(f"malformed evaluation-task record {dict(record)!r} ({exc})") from exc

    @property
    def obs_dim(self) -> int:
        return self.env.obs_dim

    @property
    def act_dim(self) -> int:
        return self.env.act_dim

    @property
    def d4rl_name(self) -> str:
        return f"{self.name}-v2"

    @property
    def d4rl_file(self) -> str:
        """File name used by D4RL's cache, e.g. ``hopper_medium_replay-v2.hdf5``."""
        return f"{self.env.name}_{self.level.replace('-', '_')}-v2.hdf5"

    def d4rl_url(self, url_base: str = D4RL_URL_BASE) -> str:
        return f"{url_base.rstrip('/')}/{self.d4rl_file}"

    def normalize_score(self, returns: np.ndarray | float) -> np.ndarray:
        """Normalised score: 100 * (return - random) / (expert - random), with
        :attr:`reference_scores` (D4RL's unless the dataset brought its own)."""
        lo, hi = self.reference_scores
        return 100.0 * (np.asarray(returns, dtype=np.float64) - lo) / (hi - lo)

    def is_terminal_np(self, next_obs: np.ndarray) -> np.ndarray:
        """Batched termination on next observations ``[..., obs_dim]`` -> bool ``[...]``."""
        return ~_alive_np(self.env.name, next_obs)

    def is_terminal_torch(self, next_obs: torch.Tensor) -> torch.Tensor:
        return ~_alive_torch(self.env.name, next_obs)


TASKS: dict[str, TaskSpec] = {
    f"{env}-{level}": TaskSpec(f"{env}-{level}", spec, level)
    for env, spec in ENVS.items()
    for level in LEVELS
}


def get_task(name: str, env_version: str | None = None) -> TaskSpec:
    """Look up a task; an unknown name lists the known ones and the closest match.

    ``env_version`` (``v4`` | ``v5``) picks the evaluation env; ``None`` keeps the default, v4.
    """
    key = name.strip().lower()
    if key.endswith("-v2"):
        key = key[:-3]
    if key in TASKS:
        task = TASKS[key]
        return task.with_version(env_version) if env_version else task
    close = difflib.get_close_matches(key, TASKS.keys(), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise UnknownTaskError(f"Unknown task '{name}'.{hint} Known tasks: {', '.join(sorted(TASKS))}.")
