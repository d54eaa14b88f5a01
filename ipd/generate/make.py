"""``make_dataset``: one D4RL-protocol dataset file, from shipped assets or the user's policy.

Levels (D4RL's, for hopper, halfcheetah and walker2d):

- ``random``: a freshly initialised SAC actor acting stochastically (:meth:`TanhGaussianMLP.random_init`);
- ``medium`` / ``expert``: the shipped behaviour policy of that level (``assets/policies``), or the
  user's (``policy=``: weights in the shipped ``.npz`` format, or an ipd policy checkpoint ``.pt``);
- ``medium-replay``: the shipped SAC replay buffer (``assets/replay``), or the user's (``replay=``);
- ``medium-expert``: the ``medium`` dataset followed by the ``expert`` one (each of ``size`` rows).

``size=None`` means D4RL's size: 1M transitions per collected level, the whole replay buffer.
A smaller ``size`` takes the replay buffer's first rows. Output: the D4RL hdf5 layout, written
atomically, never over an existing file unless ``overwrite=True``. The file's attributes record
how it was made (:func:`make_dataset`'s docstring lists them).

Determinism: for one (task, seed, size, num_envs, MuJoCo version) the file is the same on every run
and, with the shipped policies (computed by :mod:`ipd.generate.exact`), on every CPU that runs the
same MuJoCo build; the ``fingerprint`` attribute is the content hash stage artifacts are keyed by,
so any two builds that differ are told apart.
"""

from __future__ import annotations

import os
import time
import zlib
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import numpy as np

from ipd.artifacts import dataset_fingerprint
from ipd.data.hdf5 import read_hdf5, read_hdf5_attrs, write_hdf5
from ipd.data.sources import default_data_dir
from ipd.data.transitions import CORE_KEYS, Transitions, episode_bounds
from ipd.generate import assets
from ipd.generate.behaviour import BehaviourError, CheckpointBehaviour, TanhGaussianMLP
from ipd.generate.collect import collect
from ipd.generate.locomotion import BatchedLocomotion
from ipd.tasks import TaskSpec, get_task

GENERATOR_VERSION = 1  # bump when a change alters the files the same arguments produce
D4RL_SIZE = 1_000_000
DEFAULT_NUM_ENVS = 32
ORIGIN = "generated"


class GenerateError(ValueError):
    """The dataset cannot be generated as asked (a missing asset, an existing file, bad sizes)."""


def generated_name(task: TaskSpec, size: int | None = None) -> str:
    """``hopper-medium.hdf5``; ``hopper-medium-v5.hdf5`` for v5 envs; ``-<size>`` for a non-D4RL size."""
    version = "" if task.env_version == "v4" else f"-{task.env_version}"
    return f"{task.name}{version}{'' if size is None else f'-{int(size)}'}.hdf5"


def part_seed(seed: int, env: str, level: str) -> int:
    """The seed of one (env, level) part: medium-expert's parts equal the medium and expert files."""
    return int(
        np.random.SeedSequence([int(seed), zlib.crc32(f"{env}-{level}".encode())]).generate_state(1)[0]
    )


def make_dataset(
    task: str | TaskSpec,
    size: int | None = None,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    path: str | os.PathLike | None = None,
    env_version: str | None = None,
    policy: str | os.PathLike | None = None,
    replay: str | os.PathLike | None = None,
    action_noise: float = 0.0,
    num_envs: int = DEFAULT_NUM_ENVS,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Generate ``task``'s dataset and write it to ``path`` (default ``<out_dir>/<generated_name>``,
    ``out_dir`` defaulting to ``$IPD_DATA_DIR`` or ``~/.cache/ipd-datasets``). Returns the path.

    Attributes written: ``origin`` ("generated"), ``generator_version``, ``env_id``, ``level``,
    ``seed``, ``size``, ``num_envs``, ``mujoco_version``, ``gymnasium_version``, ``numpy_version``,
    ``behaviour_policy`` and ``behaviour_policy_sha256`` (per part for medium-expert), ``episodes``,
    ``mean_return``, ``normalized_score``, ``fingerprint`` (:func:`ipd.artifacts.dataset_fingerprint`)
    and ``source`` (a sentence saying this is not the D4RL release).
    """
    task = get_task(task) if isinstance(task, str) else task
    if env_version:
        task = task.with_version(env_version)
    _check_arguments(size, num_envs, action_noise, seed)
    target = Path(path) if path else Path(out_dir or default_data_dir()) / generated_name(task, size)
    if target.exists() and not overwrite:
        raise GenerateError(
            f"{target} exists; ipd does not overwrite a dataset silently. Delete it, pass "
            "overwrite=true, or write elsewhere (scripts/make_dataset.py: data.dir=... or out=...)."
        )
    t0 = time.perf_counter()
    args = dict(seed=seed, policy=policy, replay=replay, action_noise=action_noise, num_envs=num_envs)
    if task.level == "medium-expert":
        if policy or replay:
            raise GenerateError(
                "medium-expert is made from the medium and expert parts: generate with "
                "policy= per part (levels medium and expert), then concatenate."
            )
        parts = [
            _reuse_part(task, level, size, target.parent, args)
            or _make_part(task, level, size, progress=progress, **args)
            for level in ("medium", "expert")
        ]
        arrays = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
        returns = np.concatenate([p[1] for p in parts])
        attrs = {
            f"{lv}_{k}": v for lv, p in zip(("medium", "expert"), parts, strict=True) for k, v in p[2].items()
        }
    else:
        arrays, returns, attrs = _make_part(task, task.level, size, progress=progress, **args)
    transitions = Transitions(**arrays)
    attrs.update(
        origin=ORIGIN,
        generator_version=GENERATOR_VERSION,
        env_id=task.gym_id,
        level=task.level,
        seed=int(seed),
        size=len(transitions),
        num_envs=int(num_envs),
        episodes=len(returns),
        mean_return=float(returns.mean()),
        normalized_score=float(task.normalize_score(returns.mean())),
        fingerprint=dataset_fingerprint(transitions),
        wall_time_s=time.perf_counter() - t0,
        source="ipd.generate: D4RL protocol, generated locally; not the D4RL release",
        **_versions(),
    )
    write_hdf5(target, transitions, attrs=attrs)
    return target


def _reuse_part(task: TaskSpec, level: str, size, folder: Path, args: dict):
    """medium-expert's part from an existing generated file made with the same arguments, if any."""
    part = replace(task, name=f"{task.env.name}-{level}", level=level)
    path = folder / generated_name(part, size)
    attrs = read_hdf5_attrs(path) if path.is_file() else {}
    wanted = {
        "origin": ORIGIN,
        "generator_version": GENERATOR_VERSION,
        "env_id": task.gym_id,
        "seed": int(args["seed"]),
        "num_envs": int(args["num_envs"]),
        **_versions(),
    }
    if not attrs or any(attrs.get(k) != v for k, v in wanted.items()) or (size and attrs.get("size") != size):
        return None
    t = read_hdf5(path)
    arrays = {k: getattr(t, k) for k in CORE_KEYS}
    returns = _episode_returns(t.rewards, t.terminals | t.timeouts)
    print(f"[ipd] {task.name}: reusing {path.name} as its {level} part")
    return arrays, returns, {k: attrs[k] for k in ("behaviour_policy", "behaviour_policy_sha256")}


def _check_arguments(size: int | None, num_envs: int, action_noise: float, seed: int) -> None:
    if size is not None and (not isinstance(size, int | np.integer) or size < 1):
        raise GenerateError(
            f"size must be a positive number of transitions or null (D4RL's size), got {size!r}"
        )
    if not isinstance(num_envs, int | np.integer) or num_envs < 1:
        raise GenerateError(f"num_envs must be a positive integer, got {num_envs!r}")
    if not 0.0 <= float(action_noise) <= 1.0:
        raise GenerateError(f"action_noise must be in [0, 1] (std of added N(0, s^2)), got {action_noise}")
    if not isinstance(seed, int | np.integer):
        raise GenerateError(f"seed must be an integer, got {seed!r}")


def _versions() -> dict[str, str]:
    return {f"{p}_version": metadata.version(p) for p in ("mujoco", "gymnasium", "numpy")}


def _make_part(task, level, size, seed, policy, replay, action_noise, num_envs, progress):
    """(arrays, episode returns, attrs) of one level of ``task``'s env."""
    env = task.env.name
    if level == "medium-replay":
        if policy:
            raise GenerateError("medium-replay comes from a replay buffer, not a policy: pass replay=<file>.")
        return _from_replay(task, size, replay)
    if replay:
        raise GenerateError(f"replay= is only for medium-replay, not '{level}': pass policy=<file>.")
    seed = part_seed(seed, env, level)
    behaviour = _behaviour(task, level, seed, policy, action_noise)
    sim = BatchedLocomotion(task, num_envs)
    got = collect(sim, behaviour, size or D4RL_SIZE, seed + 1, progress=progress, desc=f"{env}-{level}")
    return (
        got.arrays,
        got.episode_returns,
        {"behaviour_policy": behaviour.name, "behaviour_policy_sha256": behaviour.sha256},
    )


def _behaviour(task: TaskSpec, level: str, seed: int, policy, action_noise: float):
    if policy is not None:
        if str(policy).endswith(".pt"):
            beh = CheckpointBehaviour(policy, seed, action_noise)
            trained_on = beh.loaded.task and get_task(beh.loaded.task).env.name
            if trained_on and trained_on != task.env.name:
                raise BehaviourError(
                    f"Behaviour policy {policy} was trained on {beh.loaded.task}, "
                    f"not on a {task.env.name} task: it cannot act in {task.gym_id}."
                )
            return beh
        beh = TanhGaussianMLP.from_file(policy, seed)
    elif level == "random":
        return TanhGaussianMLP.random_init(task.obs_dim, task.act_dim, seed)
    else:
        shipped = assets.policy_path(task.env.name, level)
        if not shipped.is_file():
            raise GenerateError(_missing_policy(task, level, shipped))
        beh = TanhGaussianMLP.from_file(shipped, seed)
        beh.name = f"ipd/generate/assets/policies/{shipped.name}"
    if action_noise:
        raise GenerateError(
            "action_noise applies to ipd checkpoints (.pt); the tanh-Gaussian policies "
            "already act stochastically."
        )
    _check_dims(task, beh.obs_dim, beh.act_dim, beh.name)
    return beh


def _check_dims(task: TaskSpec, obs_dim: int, act_dim: int, name: str) -> None:
    if (obs_dim, act_dim) != (task.obs_dim, task.act_dim):
        raise BehaviourError(
            f"Behaviour policy {name} maps {obs_dim}-dim observations to {act_dim}-dim actions, but "
            f"{task.gym_id} has {task.obs_dim} and {task.act_dim}: it belongs to another env."
        )


def _missing_policy(task: TaskSpec, level: str, shipped: Path) -> str:
    shipped_names = ", ".join(sorted(p.stem for p in shipped.parent.glob("*.npz")))
    return (
        f"Cannot generate {task.env.name}-{level}: ipd ships no {task.env.name} {level} behaviour policy "
        f"(looked for {shipped}; shipped: {shipped_names}). "
        f"Supply one: behaviour_policy=/path/to/weights.npz (the shipped format: W0 b0 W1 b1 Wmu bmu Wls "
        "bls) or behaviour_policy=/path/to/ipd_policy.pt (an ipd IQL/BC/DT checkpoint trained on this env), "
        f"e.g. `python scripts/make_dataset.py task={task.env.name}-{level} behaviour_policy=...` "
        "(from Python: make_dataset(..., policy=...))."
    )


def _from_replay(task: TaskSpec, size: int | None, replay) -> tuple[dict, np.ndarray, dict]:
    source = Path(replay) if replay else assets.replay_path(task.env.name)
    if not source.is_file():
        if replay:
            raise GenerateError(f"Replay buffer not found: {source}")
        raise GenerateError(
            f"Cannot generate {task.name}: ipd ships no {task.env.name} replay buffer (looked for "
            f"{source}). Supply the replay buffer of a SAC run trained to the medium level: "
            f"replay=/path/to/buffer.npz with observations, actions, rewards, next_observations, "
            f"terminals and timeouts, e.g. `python scripts/make_dataset.py task={task.name} replay=...`."
        )
    try:
        data = assets.read_replay(source)
    except assets.AssetError as exc:
        raise GenerateError(str(exc)) from exc
    if data["observations"].shape[1] != task.obs_dim or data["actions"].shape[1] != task.act_dim:
        raise GenerateError(
            f"Replay buffer {source} has the wrong observation/action sizes for {task.gym_id}."
        )
    if size is not None:
        data = {k: v[:size].copy() for k, v in data.items()}
    data["timeouts"] = data["timeouts"].copy()
    data["timeouts"][-1] = not data["terminals"][-1]  # the last row ends its episode (D4RL convention)
    returns = _episode_returns(data["rewards"], data["terminals"] | data["timeouts"])
    name = f"ipd/generate/assets/replay/{source.name}" if not replay else str(source)
    attrs = {
        "behaviour_policy": f"replay buffer {name}",
        "behaviour_policy_sha256": assets.buffer_sha256(data),
    }
    return data, returns, attrs


def _episode_returns(rewards: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Undiscounted return of each episode (float64) of a file whose last row ends an episode."""
    starts, _ = episode_bounds(ends)
    return np.add.reduceat(np.asarray(rewards, np.float64), starts)
