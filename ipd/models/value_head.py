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

Deviation/assumption: Reinformer fits the expectile jointly inside the transformer; a separate MLP
on the state keeps the token a function of s_t (as the IQL V is) and keeps the DT unchanged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ipd.data.transitions import Normalizer
from ipd.models.value import expectile_loss
from ipd.models.value_networks import IQLValue, mlp


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
) -> tuple[IQLValue, dict[str, float]]:
    """Fit f(s) ≈ τ-expectile of ``targets`` given ``states``; returns (value function, metrics).

    Targets are divided by their std during training (the returned function undoes it), so one
    learning rate fits tasks whose returns differ in scale.
    """
    cfg = cfg or ValueHeadConfig()
    if len(states) != len(targets) or len(states) == 0:
        raise ValueError(f"need as many targets as states (> 0), got {len(targets)} and {len(states)}")
    device = torch.device(device)
    t0 = time.perf_counter()
    norm = Normalizer.fit(states)
    scale = 1.0 / max(float(np.std(targets, dtype=np.float64)), 1e-6)
    x = torch.as_tensor(norm.normalize(states), dtype=torch.float32, device=device)
    y = torch.as_tensor(targets * scale, dtype=torch.float32, device=device)
    torch_gen = torch.Generator().manual_seed(cfg.seed)
    net = _init_mlp(states.shape[1], cfg.hidden_dims, torch_gen).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    losses = []
    for _ in tqdm(range(cfg.num_updates), desc="value head", disable=not progress):
        idx = torch.as_tensor(rng.integers(0, len(x), cfg.batch_size), device=device)
        loss = expectile_loss(y[idx] - net(x[idx]).squeeze(-1), cfg.expectile)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    net.eval().requires_grad_(False)
    tail = torch.stack(losses[-min(len(losses), 1000) :]).mean().item()
    metrics = {"head_loss": tail, "head_wall_time_s": time.perf_counter() - t0}
    return IQLValue(net, norm, scale, device), metrics


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
