"""Networks of the IQL learner (:mod:`ipd.models.value`) and the standalone value function.

- :class:`EnsembleMLP`: the twin Qs as one 2-member ensemble (batched matmuls, no loop over members).
  It keeps ``nn.Linear``'s init (uniform +-1/sqrt(fan_in)) drawn from the global RNG, as CORL's IQL
  does; the world model's :class:`ipd.models.world_model.EnsembleLinear` uses MBPO's truncated-normal
  init from its own generator, so the two stay separate layers.
- :class:`Actor`: the AWR policy (tanh mean, optional Gaussian log-std, reproducible dropout).
- :class:`IQLValue`: V(s) in env-return units from raw states, shareable on its own (a DT
  checkpoint bundles it so that value-conditioned policies evaluate from one file).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ipd.data.transitions import Normalizer
from ipd.io import CheckpointError, check_format

if TYPE_CHECKING:
    from ipd.models.value_config import IQLConfig

VALUE_STATE_NAME = "ipd.iql_value"
VALUE_STATE_VERSION = 1


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_dim, h), nn.ReLU()]
        in_dim = h
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class EnsembleMLP(nn.Module):
    """``E`` independent ReLU MLPs evaluated with batched matmuls: ``[B, in] -> [E, B, out]``.

    Each member's layers are initialised like ``nn.Linear`` (uniform +-1/sqrt(fan_in)).
    """

    def __init__(self, in_dim: int, hidden: tuple[int, ...], out_dim: int, members: int) -> None:
        super().__init__()
        dims = (in_dim, *hidden, out_dim)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for d_in, d_out in zip(dims[:-1], dims[1:], strict=True):
            bound = 1.0 / math.sqrt(d_in)
            self.weights.append(nn.Parameter(torch.empty(members, d_in, d_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(members, 1, d_out).uniform_(-bound, bound)))
        self.members = members

    def forward(self, x: torch.Tensor, detach_params: bool = False) -> torch.Tensor:
        h = x.unsqueeze(0).expand(self.members, *x.shape)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if detach_params:
                w, b = w.detach(), b.detach()
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = torch.relu(h)
        return h


def relu_hidden(
    layers: nn.ModuleList, x: torch.Tensor, dropout: float, generator: torch.Generator | None
) -> torch.Tensor:
    """ReLU hidden layers with inverted dropout drawn from ``generator`` (no dropout without one),
    so training randomness never comes from the global RNG and evaluation needs no mode switch."""
    for layer in layers:
        x = torch.relu(layer(x))
        if generator is not None and dropout > 0:
            keep = torch.rand(x.shape, generator=generator, device=x.device) >= dropout
            x = x * keep / (1.0 - dropout)
    return x


class Actor(nn.Module):
    """Tanh-mean actor; ``gaussian`` adds a (state-independent or -dependent) log-std head.

    Dropout is applied manually with an explicit ``torch.Generator`` so training is reproducible
    without the global RNG.
    """

    def __init__(self, obs_dim: int, act_dim: int, cfg: IQLConfig) -> None:
        super().__init__()
        self.gaussian = cfg.actor == "gaussian"
        self.state_dependent_std = self.gaussian and cfg.state_dependent_std
        self.dropout = float(cfg.dropout or 0.0)
        self.log_std_min, self.log_std_max = cfg.log_std_min, cfg.log_std_max
        dims = (obs_dim, *cfg.hidden_dims)
        self.hidden = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims[:-1], dims[1:], strict=True))
        out = 2 * act_dim if self.state_dependent_std else act_dim
        self.head = nn.Linear(dims[-1], out)
        self.act_dim = act_dim
        if self.gaussian and not self.state_dependent_std:
            self.log_std = nn.Parameter(torch.zeros(act_dim))

    def forward(
        self, obs: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Mean action in [-1, 1] and log-std (None for the deterministic actor).

        Dropout is active iff ``generator`` is given (training).
        """
        out = self.head(relu_hidden(self.hidden, obs, self.dropout, generator))
        if not self.gaussian:
            return torch.tanh(out), None
        if self.state_dependent_std:
            mean, log_std = out.split(self.act_dim, dim=-1)
        else:
            mean, log_std = out, self.log_std.expand_as(out)
        return torch.tanh(mean), log_std.clamp(self.log_std_min, self.log_std_max)

    def bc_loss(
        self, obs: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Per-sample behaviour-cloning loss [B]: -log N(a; mean, std) or ||mean - a||^2."""
        mean, log_std = self(obs, generator)
        if log_std is None:
            return (mean - actions).square().sum(-1)
        z = (actions - mean) * torch.exp(-log_std)
        return (0.5 * z.square() + log_std + 0.5 * math.log(2 * math.pi)).sum(-1)


# ----------------------------------------------------------------------------------------------
# Standalone value function


class IQLValue:
    """V(s) in env-return units from raw states: an :class:`ipd.models.base.ValueFunction`.

    ``__call__(states [B, obs] tensor) -> [B]`` on the states' device, under no_grad. Built by
    :meth:`IQLLearner.value_fn` (sharing the learner's live network) or, standalone, from
    :meth:`IQLLearner.value_state` via :meth:`from_state_dict` (e.g. bundled in a DT checkpoint).
    """

    def __init__(
        self, net: nn.Module, normalizer: Normalizer, reward_scale: float, device: torch.device
    ) -> None:
        self.net, self.device = net, torch.device(device)
        self.normalizer, self.reward_scale = normalizer, float(reward_scale)
        self._mean = torch.as_tensor(normalizer.mean, device=self.device)
        self._std = torch.as_tensor(normalizer.std, device=self.device)

    def __call__(self, states: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = states.to(self.device, torch.float32)
            v = self.net((x - self._mean) / self._std).squeeze(-1) / self.reward_scale
        return v.to(states.device)

    def state_dict(self) -> dict[str, Any]:
        net = self.net
        hidden = tuple(m.out_features for m in net if isinstance(m, nn.Linear))[:-1]
        return {
            "format": {"name": VALUE_STATE_NAME, "version": VALUE_STATE_VERSION},
            "obs_dim": int(net[0].in_features),
            "hidden_dims": hidden,
            "net": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
            "normalizer": self.normalizer.state_dict(),
            "reward_scale": self.reward_scale,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], device: str | torch.device = "cpu") -> IQLValue:
        check_format(state, VALUE_STATE_NAME, VALUE_STATE_VERSION, "The bundled value network")
        net, norm, scale = cls._parts_from_state(state, device, "IQL value")
        return cls(net, norm, scale, torch.device(device))

    @staticmethod
    def _parts_from_state(
        state: dict[str, Any], device: str | torch.device, what: str
    ) -> tuple[nn.Module, Normalizer, float]:
        """The frozen network, normaliser and reward scale of a :meth:`state_dict` (also read by
        subclasses with extra fields); a payload that does not fit is a :class:`CheckpointError`."""
        try:
            net = mlp(int(state["obs_dim"]), tuple(state["hidden_dims"]), 1)
            net.load_state_dict(state["net"])
            norm = Normalizer.from_state_dict(state["normalizer"])
            scale = float(state["reward_scale"])
        except (KeyError, TypeError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"Malformed {what} state ({exc}).") from exc
        return net.to(device).eval().requires_grad_(False), norm, scale
