"""Policies that :func:`ipd.evaluation.evaluate_policy` drives, and the one loader for policy checkpoints.

- :class:`DTPolicy`: a trained :class:`~ipd.models.transformer.DecisionTransformer` over vectorised
  envs, keeping the last K steps per env. Its conditioning token at inference is V*(s_t) from a
  value function (``mode="value"``, IPD) or a decreasing return-to-go (``mode="rtg"``, plain DT).
- :func:`load_policy`: any ipd policy checkpoint (``ipd.dt``, ``ipd.iql``, ``ipd.bc``) -> a ready policy. The
  file is read once; a checkpoint of another kind raises :class:`ipd.io.CheckpointError`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ipd.data.transitions import Normalizer
from ipd.io import CheckpointError, check_format, checkpoint_eval_task, checkpoint_task, read_checkpoint
from ipd.models import bc, transformer, value
from ipd.models.base import Policy
from ipd.models.bc import BCLearner
from ipd.models.transformer import ConditioningConfig, DecisionTransformer, dt_from_checkpoint, load_dt
from ipd.models.value import IQLLearner
from ipd.models.value_head import value_from_state_dict


class DTPolicy:
    """:class:`ipd.models.base.Policy` over ``num_envs`` vectorised envs, keeping the last K steps.

    ``value_fn`` (mode ``"value"``): raw states [B,obs] on ``device`` -> V(s) [B] in env-return
    units, e.g. the IQL learner's value; the token for step t is ``value_fn(s_t)``, or
    ``value_fn(s_t, t)`` for a value function with ``takes_timestep`` (a timed head). In mode ``"rtg"``
    the token starts at ``target_return`` and ``observe`` subtracts the rewards. The model sees
    :meth:`ConditioningConfig.encode` of the token.

    ``observe(rewards, dones)`` clears the history of every env that finished, so its next
    observation starts a new episode (t=0, fresh return-to-go).
    """

    def __init__(
        self,
        model: DecisionTransformer,
        state_normalizer: Normalizer,
        conditioning: ConditioningConfig,
        value_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        device: str | torch.device = "cpu",
        bf16: bool = False,
    ) -> None:
        if conditioning.mode == "value" and value_fn is None:
            raise ValueError("conditioning mode 'value' needs a value_fn (raw states [B,obs] -> V [B]).")
        if conditioning.mode == "rtg" and conditioning.target_return is None:
            raise ValueError("conditioning mode 'rtg' needs conditioning.target_return.")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.state_normalizer = state_normalizer
        self.cond = conditioning
        self.value_fn = value_fn
        self.autocast = bf16 and self.device.type == "cuda"
        self.context = model.cfg.context
        self.num_envs = 0

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        value_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        device: str | torch.device = "cpu",
        bf16: bool = False,
        target_return: float | None = None,
    ) -> DTPolicy:
        b = load_dt(path, device)
        policy = cls(b.model, b.state_normalizer, b.conditioning, value_fn, device, bf16)
        if target_return is not None:
            policy.set_target_return(target_return)
        return policy

    def set_target_return(self, target_return: float) -> None:
        """Start the episodes of the next :meth:`reset` from this return-to-go (env units); the
        token that ``rtg`` conditioning decrements by the rewards received."""
        self.cond = dataclasses.replace(self.cond, target_return=float(target_return))

    def reset(self, num_envs: int) -> None:
        n, k, dev = num_envs, self.context, self.device
        self.num_envs = n
        self.states = torch.zeros(n, k, self.model.obs_dim, device=dev)
        self.actions = torch.zeros(n, k, self.model.act_dim, device=dev)
        self.conditioning = torch.zeros(n, k, 1, device=dev)  # scaled tokens
        self.timesteps = torch.zeros(n, k, dtype=torch.long, device=dev)
        self.mask = torch.zeros(n, k, device=dev)
        self.t = torch.zeros(n, dtype=torch.long, device=dev)  # step index within the episode
        self.rtg = torch.full((n,), float(self.cond.target_return or 0.0), device=dev)

    @staticmethod
    def _push(buf: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Drop the oldest step and append ``value`` at position K-1."""
        return torch.cat((buf[:, 1:], value[:, None]), dim=1)

    @torch.inference_mode()
    def act(self, observations: np.ndarray) -> np.ndarray:
        if self.num_envs == 0:
            raise RuntimeError("call reset(num_envs) before act().")
        raw = torch.as_tensor(np.asarray(observations), dtype=torch.float32, device=self.device)
        if raw.shape != (self.num_envs, self.model.obs_dim):
            raise ValueError(
                f"observations shape {tuple(raw.shape)}, expected ({self.num_envs}, {self.model.obs_dim})"
            )
        if self.cond.mode == "value":
            # A timed head (ipd.models.value_head.TimedValue) also needs the step within the episode.
            args = (raw, self.t) if getattr(self.value_fn, "takes_timestep", False) else (raw,)
            token = self.value_fn(*args).reshape(-1).to(self.device, torch.float32)
        else:
            token = self.rtg
        self.states = self._push(self.states, self.state_normalizer.normalize(raw))
        self.actions = self._push(self.actions, torch.zeros_like(self.actions[:, 0]))  # a_t unknown yet
        self.conditioning = self._push(self.conditioning, self.cond.encode(token)[:, None])
        self.timesteps = self._push(self.timesteps, self.t)
        self.mask = self._push(self.mask, torch.ones_like(self.mask[:, 0]))
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
            pred = self.model(self.states, self.actions, self.conditioning, self.timesteps, self.mask)
        action = pred[:, -1].float().clamp(-1.0, 1.0)
        self.actions[:, -1] = action
        return action.cpu().numpy()

    @torch.inference_mode()
    def observe(self, rewards: np.ndarray, dones: np.ndarray) -> None:
        r = torch.as_tensor(np.asarray(rewards), dtype=torch.float32, device=self.device).reshape(-1)
        done = torch.as_tensor(np.asarray(dones), dtype=torch.bool, device=self.device).reshape(-1)
        self.rtg -= r
        self.t += 1
        if done.any():
            self.mask[done] = 0.0
            self.t[done] = 0
            self.rtg[done] = float(self.cond.target_return or 0.0)


@dataclass
class LoadedPolicy:
    """A policy read from a checkpoint, with what the checkpoint says about itself."""

    policy: Policy
    kind: str  # the checkpoint's component name, e.g. "ipd.dt"
    task: str | None  # the task recorded at training time (None if the file has none)
    eval_task: dict[str, Any] | None = None  # its evaluation env and reference scores (TaskSpec.eval_record)


def _dt_policy(blob: dict[str, Any], where: str | os.PathLike, device: torch.device) -> Policy:
    b = dt_from_checkpoint(blob, where, device)
    value_fn = None
    if b.conditioning.mode == "value":
        if "value_model" not in b.extra:
            raise CheckpointError(f"{where} is value-conditioned but bundles no value model; re-run distill.")
        value_fn = value_from_state_dict(b.extra["value_model"], device)
    return DTPolicy(b.model, b.state_normalizer, b.conditioning, value_fn=value_fn, device=device)


def _iql_policy(blob: dict[str, Any], where: str | os.PathLike, device: torch.device) -> Policy:
    return IQLLearner.from_checkpoint(blob, where, device).policy()


def _bc_policy(blob: dict[str, Any], where: str | os.PathLike, device: torch.device) -> Policy:
    return BCLearner.from_checkpoint(blob, where, device).policy()


# component name -> (format version, builder); the single registry of loadable policies
POLICY_LOADERS: dict[str, tuple[int, Callable[[dict[str, Any], Any, torch.device], Policy]]] = {
    transformer.CHECKPOINT_NAME: (transformer.CHECKPOINT_VERSION, _dt_policy),
    value.CHECKPOINT_NAME: (value.CHECKPOINT_VERSION, _iql_policy),
    bc.CHECKPOINT_NAME: (bc.CHECKPOINT_VERSION, _bc_policy),
}


def load_policy(path: str | os.PathLike, device: torch.device | str = "cpu") -> LoadedPolicy:
    """A ready-to-run policy from any ipd policy checkpoint (reads the file once)."""
    device = torch.device(device)
    blob = read_checkpoint(path)
    kind = blob["format"]["name"]
    if kind not in POLICY_LOADERS:
        raise CheckpointError(
            f"{path} is a '{kind}' checkpoint, not a policy (expected one of {sorted(POLICY_LOADERS)})."
        )
    version, build = POLICY_LOADERS[kind]
    check_format(blob, kind, version, path)
    return LoadedPolicy(build(blob, path, device), kind, checkpoint_task(blob), checkpoint_eval_task(blob))
