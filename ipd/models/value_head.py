"""An expectile value head V*(s): how optimistic the stage-3 inference token is.

Stage 3 trains its policy on value-based returns-to-go G_t (:mod:`ipd.distill`). At test time the
policy is asked for the return the *current state* can deliver. Following Reinformer (Zhuang et al.,
"Reinformer: Max-Return Sequence Modeling for Offline RL", ICML 2024), that target is an expectile of
G_t given s_t: the τ-expectile regression ``min E[|τ − 1(G − f(s) < 0)| (G − f(s))²]`` predicts the
in-distribution high end of the returns seen from states like s_t (τ = 0.5 is the mean, τ → 1 the
maximum). The IQL V is the other choice (``DistillConfig.inference_value``).

The head is a ReLU MLP on normalised states with its own seeded generators, so a refit on resume
gives the same head. It is returned as an :class:`~ipd.models.value_networks.IQLValue`, the
format that DT checkpoints bundle, so evaluation needs no new loader.

**Time input** (``fit_value_head(..., timesteps=...)``, ``policy.token_head_time``): the
undiscounted G_t of a time-limited episode depends on the steps left, which the MuJoCo
observations do not contain (time is part of the state of a time-limited task: Pardo et al.,
"Time Limits in Reinforcement Learning", ICML 2018). A head on s alone regresses towards the
returns of early states everywhere: on hopper-medium its 0.99-expectile at steps 700–999 is about
2,000 while no episode in the data has G_t above 1,267 after step 700 (above 484 after step 900),
so late in an episode the policy is asked for a (token, timestep) pair it never saw. The timed head
:class:`TimedValue` sees (s, t) and stays in range (917 / 261 at those steps;
``benchmarks/value_head_time.py``).

Deviation/assumption: Reinformer fits the expectile jointly inside the transformer; a separate MLP
on the state keeps the token a function of s_t (as the IQL V is) and keeps the DT unchanged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ipd import training
from ipd.data.transitions import Normalizer
from ipd.io import CheckpointError, check_format
from ipd.models.value_config import expectile_loss
from ipd.models.value_networks import IQLValue, mlp

TIMED_VALUE_STATE_NAME = "ipd.timed_value"
TIMED_VALUE_STATE_VERSION = 1


def time_feature(timesteps: torch.Tensor, max_timestep: int) -> torch.Tensor:
    """The step index as a network input in [-1, 1] (steps past ``max_timestep`` clamp to 1)."""
    t = timesteps.to(torch.float32).clamp(0, max_timestep)
    return 2.0 * t / float(max_timestep) - 1.0


class TimedValue(IQLValue):
    """V*(s, t) from raw states and episode step indices: ``__call__(states [B, obs], timesteps [B])``.

    ``takes_timestep`` tells :class:`ipd.models.policies.DTPolicy` to pass the step index. Saved
    under its own format name, so a reader that knows only state-value heads refuses it clearly.
    """

    takes_timestep = True

    def __init__(
        self, net: torch.nn.Module, normalizer: Normalizer, scale: float, device, max_timestep: int
    ) -> None:
        super().__init__(net, normalizer, scale, device)
        if max_timestep < 1:
            raise ValueError(f"max_timestep must be >= 1, got {max_timestep}")
        self.max_timestep = int(max_timestep)

    def __call__(self, states: torch.Tensor, timesteps: torch.Tensor | None = None) -> torch.Tensor:
        if timesteps is None:
            raise ValueError(
                "TimedValue needs the episode step of every state: call it as f(states, timesteps)"
            )
        with torch.no_grad():
            x = (states.to(self.device, torch.float32) - self._mean) / self._std
            tf = time_feature(torch.as_tensor(timesteps, device=self.device).reshape(-1), self.max_timestep)
            v = self.net(torch.cat([x, tf[:, None]], dim=-1)).squeeze(-1) / self.reward_scale
        return v.to(states.device)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["format"] = {"name": TIMED_VALUE_STATE_NAME, "version": TIMED_VALUE_STATE_VERSION}
        return {**state, "max_timestep": self.max_timestep}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], device: str | torch.device = "cpu") -> TimedValue:
        check_format(state, TIMED_VALUE_STATE_NAME, TIMED_VALUE_STATE_VERSION, "The bundled timed value head")
        net, norm, scale = cls._parts_from_state(state, device, "timed value")
        try:
            max_t = int(state["max_timestep"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"Malformed timed value state ({exc}).") from exc
        return cls(net, norm, scale, torch.device(device), max_t)


def value_from_state_dict(state: dict[str, Any], device: str | torch.device = "cpu") -> IQLValue:
    """A bundled value network, state-only (:class:`IQLValue`) or timed (:class:`TimedValue`)."""
    name = state.get("format", {}).get("name") if isinstance(state, dict) else None
    if name == TIMED_VALUE_STATE_NAME:
        return TimedValue.from_state_dict(state, device)
    return IQLValue.from_state_dict(state, device)


@dataclass
class ValueHeadConfig:
    """expectile: τ of the regression (0.5 mean .. 0.99 near-max); the rest are MLP/Adam settings."""

    expectile: float = 0.9
    hidden_dims: tuple[int, ...] = (256, 256)
    lr: float = 3e-4
    batch_size: int = 256
    num_updates: int = 20_000
    seed: int = 0

    def __post_init__(self) -> None:
        self.hidden_dims = tuple(int(h) for h in self.hidden_dims)
        if not 0.0 < self.expectile < 1.0:
            raise ValueError(f"expectile must be in (0, 1), got {self.expectile}")
        if self.num_updates < 1 or self.batch_size < 1 or not self.hidden_dims:
            raise ValueError("num_updates, batch_size and hidden_dims must be positive")


def fit_value_head(
    states: np.ndarray,
    targets: np.ndarray,
    cfg: ValueHeadConfig | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    timesteps: np.ndarray | None = None,
    max_timestep: int = 1000,
) -> tuple[IQLValue, dict[str, float]]:
    """Fit f(s) ≈ τ-expectile of ``targets`` given ``states``; returns (value function, metrics).

    Targets are divided by their std during training (the returned function undoes it), so one
    learning rate fits tasks whose returns differ in scale. With ``timesteps`` (the episode step of
    every state) the head is f(s, t), a :class:`TimedValue` (module docstring).
    """
    cfg = cfg or ValueHeadConfig()
    if len(states) != len(targets) or len(states) == 0:
        raise ValueError(f"need as many targets as states (> 0), got {len(targets)} and {len(states)}")
    device = torch.device(device)
    t0 = time.perf_counter()
    norm = Normalizer.fit(states)
    scale = 1.0 / max(float(np.std(targets, dtype=np.float64)), 1e-6)
    x = torch.as_tensor(norm.normalize(states), dtype=torch.float32, device=device)
    if timesteps is not None:
        if len(timesteps) != len(states):
            raise ValueError(f"need one timestep per state, got {len(timesteps)} for {len(states)} states")
        tf = time_feature(torch.as_tensor(np.asarray(timesteps)), max_timestep).to(device)
        x = torch.cat([x, tf[:, None]], dim=-1)
    y = torch.as_tensor(targets * scale, dtype=torch.float32, device=device)
    torch_gen = torch.Generator().manual_seed(cfg.seed)
    learner = ValueHeadLearner(_init_mlp(x.shape[1], cfg.hidden_dims, torch_gen).to(device), cfg)
    out = training.run(learner, learner.batch_sampler(x, y), cfg.num_updates, stage="value head",
                       log_every=1000, progress=progress)  # fmt: skip
    net = learner.net.eval().requires_grad_(False)
    metrics = {"head_loss": out.last["loss"], "head_wall_time_s": time.perf_counter() - t0}
    if timesteps is not None:
        return TimedValue(net, norm, scale, device, max_timestep), metrics
    return IQLValue(net, norm, scale, device), metrics


class ValueHeadLearner:
    """Expectile regression of targets on inputs: the learner :func:`fit_value_head` trains."""

    def __init__(self, net: torch.nn.Module, cfg: ValueHeadConfig) -> None:
        self.net, self.cfg = net, cfg
        self.optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        self.rng = np.random.default_rng(cfg.seed)  # batch indices
        self.step = 0

    def batch_sampler(self, x: torch.Tensor, y: torch.Tensor):
        def sample() -> tuple[torch.Tensor, torch.Tensor]:
            idx = torch.as_tensor(self.rng.integers(0, len(x), self.cfg.batch_size), device=x.device)
            return x[idx], y[idx]

        return sample

    def update(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, y = batch
        loss = expectile_loss(y - self.net(x).squeeze(-1), self.cfg.expectile)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return {"loss": loss.detach()}

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                "numpy_rng": self.rng.bit_generator.state}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.rng.bit_generator.state = state["numpy_rng"]


def _init_mlp(in_dim: int, hidden: tuple[int, ...], gen: torch.Generator) -> torch.nn.Sequential:
    """``mlp`` with ``nn.Linear``'s init drawn from ``gen`` (reproducible without the global RNG)."""
    net = mlp(in_dim, hidden, 1)
    with torch.no_grad():
        for layer in net:
            if isinstance(layer, torch.nn.Linear):
                bound = 1.0 / np.sqrt(layer.in_features)
                layer.weight.uniform_(-bound, bound, generator=gen)
                layer.bias.uniform_(-bound, bound, generator=gen)
    return net
