"""The IQL learner's inference facade: V, Q, advantages, the AWR actor, the planning prior and the
policy wrapper, in env-return units on raw states (:class:`ipd.models.value.IQLLearner` mixes it in).

It reads the learner's networks (``v_net``, ``q_target``, ``actor``), data statistics
(``_norm``, ``reward_scale``) and ``act_generator``; nothing here trains.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ipd.models.value_networks import IQLValue

ArrayLike = np.ndarray | torch.Tensor


class IQLInference:
    """Mixin: the learner's read-only API (see the module docstring)."""

    def value(self, states: ArrayLike) -> ArrayLike:
        """V(s) [B] in env-return units."""
        with torch.no_grad():
            out = self.v_net(self._norm(self._tensor(states))).squeeze(-1) / self.reward_scale
        return self._like(out, states)

    def q(self, states: ArrayLike, actions: ArrayLike) -> ArrayLike:
        """min_i Q'_i(s, a) [B] (twin target Qs) in env-return units."""
        with torch.no_grad():
            out = self._q_min(self.q_target, self._norm(self._tensor(states)), self._tensor(actions))
        return self._like(out / self.reward_scale, states)

    def advantage(self, states: ArrayLike, actions: ArrayLike) -> ArrayLike:
        """A(s, a) = min_i Q'_i(s, a) - V(s) [B] in env-return units (IQL's AWR advantage)."""
        with torch.no_grad():
            s = self._norm(self._tensor(states))
            out = self._q_min(self.q_target, s, self._tensor(actions)) - self.v_net(s).squeeze(-1)
        return self._like(out / self.reward_scale, states)

    def q_torch(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Differentiable min_i Q'_i(s, a) [B] in env-return units, for raw states.

        Gradients flow to ``actions`` (and ``states``), never into the critic's parameters
        (the target Qs are frozen copies). Used by Stage 3's Q-regularised loss.
        """
        s = self._norm(states.to(self.device, torch.float32))
        q = self._q_min(self.q_target, s, actions.to(self.device, torch.float32), detach=True)
        return q / self.reward_scale

    def act(self, observations: ArrayLike, deterministic: bool = True) -> ArrayLike:
        """AWR actor actions [B, act] in [-1, 1]: the mean, or a Gaussian sample when not deterministic."""
        with torch.no_grad():
            mean, log_std = self.actor(self._norm(self._tensor(observations)))
            if not deterministic and log_std is not None:
                noise = torch.randn(mean.shape, generator=self.act_generator, device=self.device)
                mean = mean + noise * log_std.exp()
            out = mean.clamp(-1.0, 1.0)
        return self._like(out, observations)

    def policy(self, deterministic: bool = True) -> IQLPolicy:
        """The AWR actor as an :class:`ipd.models.base.Policy` for :func:`ipd.evaluation.evaluate_policy`."""
        return IQLPolicy(self, deterministic)

    def value_fn(self) -> IQLValue:
        """V as an :class:`ipd.models.base.ValueFunction` (tensor [B, obs] -> [B], env units, no_grad).

        Shares the learner's network (so it tracks further training) and takes the normaliser and
        reward scale current at call time: call it after the first :meth:`fit`.
        """
        return IQLValue(self.v_net, self.normalizer, self.reward_scale, self.device)

    def value_state(self) -> dict[str, Any]:
        """A self-contained, versioned dict for V alone; rebuild with :meth:`IQLValue.from_state_dict`."""
        return self.value_fn().state_dict()

    def actor_prior(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """Planning prior (:class:`ipd.models.base.ActionPrior`): raw states [B, obs] -> mean action [B, act].

        Deterministic (the actor's mean, clamped to [-1, 1]), under no_grad, on the states' device.
        """

        def prior(states: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                mean, _ = self.actor(self._norm(states.to(self.device, torch.float32)))
            return mean.clamp(-1.0, 1.0).to(states.device)

        return prior


class IQLPolicy:
    """:class:`ipd.models.base.Policy` running the AWR actor: numpy observations in, [-1, 1] actions out."""

    def __init__(self, learner: IQLInference, deterministic: bool = True) -> None:
        self.learner, self.deterministic = learner, deterministic

    def reset(self, num_envs: int) -> None:
        self.num_envs = num_envs  # memoryless policy: nothing to reset

    def act(self, observations: np.ndarray) -> np.ndarray:
        obs = np.asarray(observations, np.float32)
        return np.asarray(self.learner.act(obs, self.deterministic), np.float32)

    def observe(self, rewards: np.ndarray, dones: np.ndarray) -> None:
        pass
