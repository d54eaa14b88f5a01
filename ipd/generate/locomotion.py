"""Many gymnasium MuJoCo locomotion envs stepped together, without gymnasium's per-env Python.

:class:`BatchedLocomotion` holds one ``MjData`` per env over the model of the gymnasium env
(``Hopper-v4`` ...), and reproduces that env's ``reset`` and ``step``: the same physics calls
(``mj_resetData``, ``mj_forward``, ``mj_step`` with the env's frame skip, so each env keeps its own
solver warm start, as gymnasium's does), the same observation, reward and termination, float for
float (tests/test_generate.py checks it against ``env.step`` for hopper, halfcheetah and walker2d,
v4 and v5). Rewards and observations: :class:`ipd.locomotion_terms.LocomotionTerms`.

Reset noise is drawn from the caller's generator: uniform as in gymnasium, and, for halfcheetah's
velocities, normal through :func:`ipd.generate.exact.standard_normal` (Box-Muller) rather than
numpy's ziggurat, whose rejection step calls the C library's ``exp``/``log`` (CPU-dispatched).
The step loop runs in Python over envs; per transition it costs little beside the physics.
"""

from __future__ import annotations

import mujoco
import numpy as np

from ipd.envs import make_task_env
from ipd.generate import exact
from ipd.locomotion_terms import LocomotionTerms
from ipd.tasks import TaskSpec


class BatchedLocomotion:
    """``num_envs`` copies of ``task``'s gymnasium env (``task.gym_id``), stepped in lock-step."""

    def __init__(self, task: TaskSpec, num_envs: int) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.task = task
        env = make_task_env(task)
        sim = env.unwrapped
        self.model = sim.model
        self.frame_skip, self.dt = int(sim.frame_skip), float(sim.dt)
        self.init_qpos, self.init_qvel = sim.init_qpos.copy(), sim.init_qvel.copy()
        self.noise_scale = float(sim._reset_noise_scale)
        self.terms = LocomotionTerms.of(task, sim)
        self.normal_velocity_noise = task.env.name == "halfcheetah"
        env.close()
        self.num_envs = num_envs
        self.datas = [mujoco.MjData(self.model) for _ in range(num_envs)]
        self.nq, self.nv = self.model.nq, self.model.nv

    # ------------------------------------------------------------------ state
    def set_state(self, index: int, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """Put env ``index`` in (qpos, qvel) as gymnasium's reset does; returns its observation."""
        d = self.datas[index]
        mujoco.mj_resetData(self.model, d)
        d.qpos[:] = qpos
        d.qvel[:] = qvel
        mujoco.mj_forward(self.model, d)
        return self._observation(d.qpos, d.qvel)

    def reset(self, index: int, rng: np.random.Generator) -> np.ndarray:
        """Reset env ``index`` with noise from ``rng`` (qpos draws first, then qvel, as gymnasium)."""
        s = self.noise_scale
        qpos = self.init_qpos + rng.uniform(low=-s, high=s, size=self.nq)
        if self.normal_velocity_noise:
            qvel = self.init_qvel + s * exact.standard_normal(rng, (self.nv,))
        else:
            qvel = self.init_qvel + rng.uniform(low=-s, high=s, size=self.nv)
        return self.set_state(index, qpos, qvel)

    def _observation(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        return self.terms.observation(qpos, qvel)

    # ------------------------------------------------------------------ step
    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Step every env with ``actions`` [num_envs, act] -> (observations, rewards, terminated)."""
        actions = np.asarray(actions, np.float32)
        qpos = np.empty((self.num_envs, self.nq))
        qvel = np.empty((self.num_envs, self.nv))
        x_before = np.empty(self.num_envs)
        for i, d in enumerate(self.datas):
            x_before[i] = d.qpos[0]
            d.ctrl[:] = actions[i]
            mujoco.mj_step(self.model, d, nstep=self.frame_skip)
            qpos[i], qvel[i] = d.qpos, d.qvel
        x_velocity = (qpos[:, 0] - x_before) / self.dt
        raw = np.concatenate([qpos[:, 1:], qvel], 1)  # unclipped: the healthy check's view
        terminated = self.task.is_terminal_np(raw)
        return self._observation(qpos, qvel), self.terms.rewards(x_velocity, actions, terminated), terminated
