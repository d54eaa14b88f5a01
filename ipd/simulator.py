"""The real MuJoCo simulator as stage 2's oracle (not offline RL): exact resets to an observation,
replays of planned actions, and the simulator behind the planner's dynamics-model interface.

:func:`reset_to_observation` and :func:`replay_from_observation` put a gymnasium env in the state an
observation describes and replay actions from it (the ``augment.simulator_check`` arm and
``benchmarks/augment.py`` use them).

Not offline RL. :class:`SimulatorDynamics` lets the MPC planner of stage 2 plan and execute in the
true dynamics instead of the learned world model (``augment.dynamics=simulator``), so that an
ablation can tell the world model's share of IPD's result from the planner's and the value's:
same start states, same planner, same terminal value, perfect model.

Every batched ``step`` sets each row's physical state from its observation (as
:func:`reset_to_observation` does: x position 0, which rewards do not depend on),
advances ``frame_skip`` physics steps under the action with ``mujoco.rollout`` (one C call for the
whole batch), and computes the env's reward and observation
(:class:`ipd.locomotion_terms.LocomotionTerms`), terminated when the (unclipped) next state is
unhealthy. Velocities at the ±10 observation clip are taken as ±10,
so rows there are approximate, as in the replay check.
"""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
import torch
from mujoco import rollout

from ipd.evaluation import make_eval_env
from ipd.locomotion_terms import LocomotionTerms
from ipd.models.base import ModelStep
from ipd.tasks import QVEL_CLIP, TaskSpec


def reset_to_observation(env: gym.Env, observation: np.ndarray) -> bool:
    """Put a (reset) MuJoCo locomotion env in the physical state behind ``observation``.

    The v4 locomotion observations are ``qpos[1:]`` followed by ``qvel`` (Hopper, Walker2d,
    HalfCheetah with the default ``exclude_current_positions_from_observation=True``). The omitted
    x position only offsets the world frame: rewards use x *differences*, so we set it to 0.
    Returns False when the reset is not exact, i.e. some velocity sits at the ±10 observation clip
    (the true velocity is then unknown).
    """
    sim = env.unwrapped
    nq, nv = sim.model.nq, sim.model.nv
    obs = np.asarray(observation, dtype=np.float64).reshape(-1)
    if obs.shape[0] != nq - 1 + nv:
        raise ValueError(
            f"observation has {obs.shape[0]} dims, but {sim.spec.id if sim.spec else sim} needs "
            f"{nq - 1 + nv} (qpos[1:] and qvel): is it an observation of this env?"
        )
    qpos, qvel = np.concatenate([[0.0], obs[: nq - 1]]), obs[nq - 1 :]
    sim.set_state(qpos, qvel)
    return not bool(np.any(np.isclose(np.abs(qvel), QVEL_CLIP)))


def replay_from_observation(
    env: gym.Env, observation: np.ndarray, actions: np.ndarray
) -> tuple[np.ndarray, np.ndarray, bool, bool]:
    """Replay ``actions`` open loop in ``env`` from the state behind ``observation``.

    Returns the visited states ``[l + 1, obs]`` (the start included), the rewards ``[l]``, whether
    the env terminated (then ``l`` may be shorter than ``len(actions)``) and whether the reset was
    exact (:func:`reset_to_observation`).
    """
    env.reset(seed=0)
    exact = reset_to_observation(env, observation)
    states, rewards = [np.asarray(observation, np.float64)], []
    for a in np.asarray(actions):
        obs, r, terminated, _, _ = env.step(a)
        states.append(obs)
        rewards.append(float(r))
        if terminated:
            return np.asarray(states), np.asarray(rewards), True, exact
    return np.asarray(states), np.asarray(rewards, np.float64), False, exact


class SimulatorDynamics:
    """Batched ``step(states, actions) -> ModelStep`` in the task's real env (uncertainty 0)."""

    def __init__(self, task: TaskSpec):
        env = make_eval_env(task)
        env.reset(seed=0)
        sim = env.unwrapped
        self.model = sim.model
        self.data = mujoco.MjData(sim.model)
        self.task = task
        self.frame_skip, self.dt = int(sim.frame_skip), float(sim.dt)
        self.terms = LocomotionTerms.of(task, sim)
        self.nq, self.nv = sim.model.nq, sim.model.nv
        self.spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
        self.template = np.zeros(mujoco.mj_stateSize(sim.model, self.spec))
        mujoco.mj_getState(sim.model, sim.data, self.template, self.spec)
        if len(self.template) != 1 + self.nq + self.nv:  # time, qpos, qvel and nothing else
            raise ValueError(f"{task.gym_id}: SimulatorDynamics supports envs without actuator state")
        env.close()

    def step(
        self, states: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None = None
    ) -> ModelStep:
        obs = states.detach().cpu().double().numpy()
        act = np.clip(actions.detach().cpu().double().numpy(), -1.0, 1.0)
        init = np.repeat(self.template[None], len(obs), 0)
        init[:, 2 : 1 + self.nq] = obs[:, : self.nq - 1]  # qpos[1:]; qpos[0] (x) = 0
        init[:, 1 + self.nq :] = obs[:, self.nq - 1 :]
        init[:, :2] = 0.0  # time and x position
        ctrl = np.repeat(act[:, None], self.frame_skip, 1)
        out, _ = rollout.rollout(self.model, self.data, init, ctrl)
        qpos, qvel = out[:, -1, 1 : 1 + self.nq], out[:, -1, 1 + self.nq :]
        raw = np.concatenate([qpos[:, 1:], qvel], 1)
        terminals = self.task.is_terminal_np(raw)
        reward = self.terms.rewards(qpos[:, 0] / self.dt, act, terminals)  # x started at 0
        next_obs = self.terms.observation(qpos, qvel)
        like = dict(dtype=states.dtype, device=states.device)
        return ModelStep(
            torch.as_tensor(next_obs, **like),
            torch.as_tensor(reward, **like),
            torch.as_tensor(terminals, device=states.device),
            torch.zeros(len(obs), **like),
        )
