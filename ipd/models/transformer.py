"""Decision Transformer (Chen et al., 2021) with value conditioning for IPD stage 3.

A causal transformer over interleaved ``(conditioning, state, action)`` tokens, one triple per
time step, with a learned timestep embedding added to every token. The action at step t is
predicted (tanh-squashed) from the hidden state of the *state* token s_t, so it sees
``c_<=t, s_<=t, a_<t`` and never a_t.

Conditioning modes (``ConditioningConfig.mode``):

- ``"rtg"``: classic DT. The token is the undiscounted return-to-go; at test time it starts at
  ``target_return`` and the observed rewards are subtracted.
- ``"value"``: IPD (Qin, Wang et al., AAMAS 2026). At test time the token at step t is a learned
  value of s_t, so no target return is tuned (what it is in training: :mod:`ipd.distill`).

The model sees ``(token - offset) / scale`` (:class:`ConditioningConfig`; DT uses scale 1000 for
locomotion returns).

Attention is our own pre-LN GPT-2 block on ``torch.nn.functional.scaled_dot_product_attention``
(flash / memory-efficient kernels on CUDA). The padding mask is respected: windows are
left-padded (:class:`ipd.data.SequenceSampler`), padded keys are never attended to by real
queries, and each token may always attend to itself, so fully padded rows cannot produce NaN.

Deviation/assumption:
- Like the DT reference code (``trajectory_gpt2.py``) there is no positional embedding, only the
  timestep embedding (+ causal order). Timesteps are clamped to ``max_timestep - 1`` so longer
  episodes are safe.
- The paper does not give its architecture; defaults follow DT for gym (128 dims, 3 layers,
  1 head, K=20, dropout 0.1, GELU MLP of width 4x).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ipd.data.transitions import Normalizer
from ipd.io import build_from_checkpoint, load_checkpoint, save_checkpoint

CHECKPOINT_NAME = "ipd.dt"
CHECKPOINT_VERSION = 1

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


@dataclass
class DTConfig:
    """Architecture of :class:`DecisionTransformer`.

    embed_dim: token width; n_layers: transformer blocks; n_heads: attention heads (must divide
    embed_dim); context: K, the number of time steps in a window (3K tokens); dropout: on
    embeddings, attention weights, residual branches; max_timestep: size of the timestep
    embedding table (larger timesteps are clamped); activation: MLP non-linearity
    (gelu | relu | silu); mlp_ratio: MLP hidden width / embed_dim.
    """

    embed_dim: int = 128
    n_layers: int = 3
    n_heads: int = 1
    context: int = 20
    dropout: float = 0.1
    max_timestep: int = 1000
    activation: str = "gelu"
    mlp_ratio: int = 4

    def __post_init__(self) -> None:
        if self.embed_dim % self.n_heads:
            raise ValueError(f"embed_dim={self.embed_dim} must be divisible by n_heads={self.n_heads}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {self.activation!r}")
        if self.context < 1 or self.max_timestep < 1:
            raise ValueError("context and max_timestep must be >= 1")


@dataclass
class ConditioningConfig:
    """What the conditioning token means; shared by the sequence sampler, the policy and checkpoints.

    mode: ``"value"`` (token = a value of the current state, IPD) or ``"rtg"`` (token =
    return-to-go, plain DT); the model sees ``(token - offset) / scale`` (value tokens are
    standardised with their training mean and std; DT divides returns by 1000 for locomotion);
    target_return: initial return-to-go at test time, env-return units (required for ``"rtg"``).
    """

    mode: str = "value"
    scale: float = 1000.0
    target_return: float | None = None
    offset: float = 0.0

    def encode(self, token):
        """Env-unit tokens -> what the model sees (numpy arrays or tensors)."""
        return (token - self.offset) / self.scale

    def __post_init__(self) -> None:
        if self.mode not in ("value", "rtg"):
            raise ValueError(f"conditioning mode must be 'value' or 'rtg', got {self.mode!r}")
        if self.scale <= 0:
            raise ValueError(f"conditioning scale must be > 0, got {self.scale}")


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: DTConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim)
        self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim)
        self.attn_dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.attn_dropout if self.training else 0.0,
            is_causal=attn_mask is None,  # no padding: the fused causal kernel (flash on CUDA)
        )
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(b, n, d)))


class Block(nn.Module):
    """Pre-LN GPT-2 block."""

    def __init__(self, cfg: DTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.embed_dim)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.embed_dim)
        hidden = cfg.mlp_ratio * cfg.embed_dim
        self.mlp = nn.Sequential(
            nn.Linear(cfg.embed_dim, hidden),
            _ACTIVATIONS[cfg.activation](),
            nn.Linear(hidden, cfg.embed_dim),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), attn_mask)
        return x + self.mlp(self.ln2(x))


class DecisionTransformer(nn.Module):
    """Causal transformer over ``(c_t, s_t, a_t)`` triples predicting a_t from the s_t token."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: DTConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or DTConfig()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        h = cfg.embed_dim
        self.embed_timestep = nn.Embedding(cfg.max_timestep, h)
        self.embed_conditioning = nn.Linear(1, h)
        self.embed_state = nn.Linear(obs_dim, h)
        self.embed_action = nn.Linear(act_dim, h)
        self.embed_ln = nn.LayerNorm(h)
        self.embed_dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(h)
        self.predict_action = nn.Linear(h, act_dim)
        self.apply(self._init_weights)
        # GPT-2: scale residual projections by 1/sqrt(2 * n_layers) for stable depth.
        for name, p in self.named_parameters():
            if name.endswith("attn.proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(
        self,
        states: torch.Tensor,
        actions: torch.Tensor,
        conditioning: torch.Tensor,
        timesteps: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """states [B,K,obs] (normalised), actions [B,K,act], conditioning [B,K,1] (scaled),
        timesteps [B,K] int, mask [B,K] (1/True = real token; None = all real) -> actions [B,K,act]."""
        b, k, _ = states.shape
        t_emb = self.embed_timestep(timesteps.long().clamp(0, self.cfg.max_timestep - 1))
        tokens = torch.stack(
            (
                self.embed_conditioning(conditioning) + t_emb,
                self.embed_state(states) + t_emb,
                self.embed_action(actions) + t_emb,
            ),
            dim=2,
        ).reshape(b, 3 * k, -1)  # c_0, s_0, a_0, c_1, ...
        x = self.embed_dropout(self.embed_ln(tokens))
        attn_mask = None if mask is None else self.attention_mask(mask)
        for block in self.blocks:
            x = block(x, attn_mask)
        x = self.ln_f(x).view(b, k, 3, -1)
        return torch.tanh(self.predict_action(x[:, :, 1]))

    @staticmethod
    def attention_mask(mask: torch.Tensor) -> torch.Tensor:
        """Bool [B,1,3K,3K]: causal, keys must be real tokens, and the diagonal is always allowed
        (so a fully padded query row still has one key and softmax stays finite)."""
        b, k = mask.shape
        valid = mask.bool().repeat_interleave(3, dim=1)  # [B, 3K]
        n = 3 * k
        causal = torch.ones(n, n, dtype=torch.bool, device=mask.device).tril()
        eye = torch.eye(n, dtype=torch.bool, device=mask.device)
        return ((causal & valid[:, None, :]) | eye)[:, None]


# ----------------------------------------------------------------------------------------------
# Checkpoints


@dataclass
class DTBundle:
    """Everything needed to run a trained DT on its own."""

    model: DecisionTransformer
    state_normalizer: Normalizer
    conditioning: ConditioningConfig
    extra: dict[str, Any] = field(default_factory=dict)


def save_dt(
    path: str | os.PathLike,
    model: DecisionTransformer,
    state_normalizer: Normalizer,
    conditioning: ConditioningConfig,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Atomically save weights, configs, dims, normaliser and ``extra`` metadata (task name, ...)."""
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "dt_config": asdict(model.cfg),
        "obs_dim": model.obs_dim,
        "act_dim": model.act_dim,
        "state_normalizer": state_normalizer.state_dict(),
        "conditioning": asdict(conditioning),
        "extra": dict(extra or {}),
    }
    return save_checkpoint(path, CHECKPOINT_NAME, CHECKPOINT_VERSION, payload)


def load_dt(path: str | os.PathLike, device: str | torch.device = "cpu") -> DTBundle:
    """Load a :func:`save_dt` checkpoint; raises :class:`ipd.io.CheckpointError` on any mismatch."""
    return dt_from_checkpoint(load_checkpoint(path, CHECKPOINT_NAME, CHECKPOINT_VERSION), path, device)


def dt_from_checkpoint(
    blob: dict[str, Any], where: str | os.PathLike, device: str | torch.device
) -> DTBundle:
    """Build the :class:`DTBundle` of an already read and format-checked ``ipd.dt`` checkpoint dict."""

    def build() -> DTBundle:
        model = DecisionTransformer(blob["obs_dim"], blob["act_dim"], DTConfig(**blob["dt_config"]))
        model.load_state_dict(blob["state_dict"])
        return DTBundle(
            model=model.to(device).eval(),
            state_normalizer=Normalizer.from_state_dict(blob["state_normalizer"]),
            conditioning=ConditioningConfig(**blob["conditioning"]),
            extra=blob.get("extra", {}),
        )

    return build_from_checkpoint(build, CHECKPOINT_NAME, where)
