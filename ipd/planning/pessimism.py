"""Pessimistic acceptance of imagined rollouts: re-score each planned action sequence under every
elite of the world model and keep the worst member's return.

Why: the planner picks, among many candidates, the sequences that the (randomly drawn) members
predict best, so the accepted rollouts' predicted returns carry a winner's-curse bias. On
hopper-medium the accepted rollouts were predicted +13.9 better than the data and were −0.8 in the
real simulator (docs/experiments/stage2-hopper-medium.md). A sequence whose gain holds under every
elite, each continuing its own trajectory open loop, is one the model agrees on; MOPO/MOReL-style
pessimism (Yu et al., 2020; Kidambi et al., 2020) applied to acceptance instead of to the reward.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from ipd.models.base import ValueFunction


class MemberDynamics(Protocol):
    """A model that can step each of its K elites on its own states (``EnsembleWorldModel``)."""

    elites: torch.Tensor

    def step_members(
        self, states: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


@torch.inference_mode()
def member_returns(
    model: MemberDynamics,
    value_fn: ValueFunction | None,
    start_states: np.ndarray,
    actions: np.ndarray,
    lengths: np.ndarray,
    gamma: float,
    device: torch.device | str = "cpu",
    chunk: int = 1024,
) -> np.ndarray:
    """``Σ_{k<l} γ^k r_k + γ^l V(s_l)`` of each rollout under each elite, ``[K, B]``.

    ``actions`` ``[B, L, act]`` are replayed open loop for each rollout's own ``lengths[b]`` steps
    from ``start_states`` ``[B, obs]``; a member that predicts a termination stops there (no
    bootstrap). Vectorised over elites and rollouts; the loop runs over the L steps.
    """
    k = len(model.elites)
    out = [
        _member_returns_chunk(
            model,
            value_fn,
            *(torch.as_tensor(x[i : i + chunk], device=device) for x in (start_states, actions)),
            torch.as_tensor(lengths[i : i + chunk], device=device),
            gamma,
            k,
        )
        for i in range(0, len(start_states), chunk)
    ]
    return np.concatenate(out, axis=1) if out else np.zeros((k, 0), np.float32)


def _member_returns_chunk(model, value_fn, starts, actions, lengths, gamma, k) -> np.ndarray:
    b = starts.shape[0]
    states = starts.float().expand(k, *starts.shape).clone()
    ret = torch.zeros(k, b, device=starts.device)
    terminated = torch.zeros(k, b, dtype=torch.bool, device=starts.device)
    for t in range(int(lengths.max()) if b else 0):
        step_on = ~terminated & (t < lengths)[None]
        nxt, rew, term = model.step_members(states, actions[:, t].float())
        ret += torch.where(step_on, gamma**t * rew, 0.0)
        states = torch.where(step_on[..., None], nxt, states)  # frozen after the rollout's end
        terminated |= step_on & term
    if value_fn is not None:
        v = value_fn(states.reshape(k * b, -1)).reshape(k, b).float()
        ret += torch.where(terminated, 0.0, gamma ** lengths.float()[None] * v)
    return ret.cpu().numpy()
