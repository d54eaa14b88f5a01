"""Uncertainty measures ``U(s, a)`` over an ensemble's predicted Gaussians, and their dataset quantiles.

Every measure maps the members' normalised means/log-variances ``[E, B, D]`` to ``[B]`` (>= 0,
0 for members that agree). The augmenter's acceptance threshold is a quantile of ``U`` over
dataset transitions, so it is scale-free across tasks (docs/design.md §1).

- ``gjs`` (default, IPD paper): Pairwise Gaussian Jensen-Shannon divergence between the
members' predicted Gaussians, geometric-mean form (Nielsen, "On the Jensen-Shannon symmetrization
of distances relying on abstract means", Entropy 2019; Deasy et al., "Constraining Variational
Inference with Geometric Jensen-Shannon Divergence", NeurIPS 2020). For diagonal Gaussians p, q
with precisions a = 1/σp², b = 1/σq², the geometric mean m has precision (a + b)/2 and mean
σm²(aμp + bμq)/2, and ``JS_G = ½ KL(p‖m) + ½ KL(q‖m)`` simplifies per dimension to::

    JS_G = ½ [sinh²(d/2) - log cosh(d/2)] + (a² + b²)(μp - μq)² / (8 (a + b)),  d = log(a / b)

(derivation: with t = (a + b)² / (4ab) = cosh²(d/2) the two KLs sum to ½[2(t - 1) - log t]
plus the mean term), summed over output dims and reduced over all member pairs at once (max or
mean). It is zero iff the members agree, symmetric, and grows with both mean disagreement
(epistemic) and variance mismatch; the mean term is weighted by the precisions, so confident
members that disagree score high (aleatoric and epistemic together).
- ``disagreement``: max (or mean) L2 deviation of a member's mean from the ensemble mean.
- ``aleatoric``: max (or mean) L2 norm of a member's predicted std (as in MOPO).
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from ipd.data import Transitions

UNCERTAINTY_KINDS = ("gjs", "disagreement", "aleatoric")


class HasUncertainty(Protocol):
    """Anything with a batched ``uncertainty(states, actions) -> [B]`` (e.g. the world model)."""

    device: torch.device

    def uncertainty(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor: ...


def _log_cosh(x: torch.Tensor) -> torch.Tensor:
    x = x.abs()
    return x + F.softplus(-2.0 * x) - math.log(2.0)


def pairwise_gjs(
    mean_p: torch.Tensor, logvar_p: torch.Tensor, mean_q: torch.Tensor, logvar_q: torch.Tensor
) -> torch.Tensor:
    """Geometric Jensen-Shannon divergence of diagonal Gaussians, per dim (closed form, see module doc)."""
    d = logvar_p - logvar_q  # log(a / b) with a = 1/var_p, b = 1/var_q; the shape term is even in d
    shape = 0.5 * (torch.sinh(0.5 * d).square() - _log_cosh(0.5 * d))
    a, b = torch.exp(-logvar_p), torch.exp(-logvar_q)
    location = (a.square() + b.square()) * (mean_p - mean_q).square() / (8.0 * (a + b))
    return shape + location


def gjs_uncertainty(mean: torch.Tensor, logvar: torch.Tensor, reduce: str = "max") -> torch.Tensor:
    """Pairwise GJS over all member pairs at once: ``[E, B, D] -> [B]`` (sum over D, reduce pairs)."""
    e = mean.shape[0]
    if e < 2:
        return mean.new_zeros(mean.shape[1])
    i, j = torch.triu_indices(e, e, offset=1, device=mean.device)
    js = pairwise_gjs(mean[i], logvar[i], mean[j], logvar[j]).sum(-1)  # [P, B]
    js = js.clamp_min(0.0)  # exact value is >= 0; guards float round-off
    return js.amax(0) if reduce == "max" else js.mean(0)


def disagreement_uncertainty(mean: torch.Tensor, reduce: str = "max") -> torch.Tensor:
    """Deviation of each member's mean from the ensemble mean (L2 over dims), max/mean over members."""
    dev = (mean - mean.mean(0, keepdim=True)).norm(dim=-1)  # [E, B]
    return dev.amax(0) if reduce == "max" else dev.mean(0)


def aleatoric_uncertainty(logvar: torch.Tensor, reduce: str = "max") -> torch.Tensor:
    """L2 norm of each member's predicted std (as in MOPO), max/mean over members."""
    norm = torch.exp(0.5 * logvar).norm(dim=-1)  # [E, B]
    return norm.amax(0) if reduce == "max" else norm.mean(0)


def compute_uncertainty(mean: torch.Tensor, logvar: torch.Tensor, kind: str, reduce: str) -> torch.Tensor:
    if kind == "gjs":
        return gjs_uncertainty(mean, logvar, reduce)
    if kind == "disagreement":
        return disagreement_uncertainty(mean, reduce)
    if kind == "aleatoric":
        return aleatoric_uncertainty(logvar, reduce)
    raise ValueError(f"unknown uncertainty {kind!r}; use {' | '.join(UNCERTAINTY_KINDS)}")


# ----------------------------------------------------------------------------- dataset quantiles
@torch.no_grad()
def uncertainty_values(
    model: HasUncertainty,
    transitions: Transitions,
    batch_size: int = 8192,
    max_samples: int | None = None,
) -> np.ndarray:
    """``U(s, a)`` over dataset transitions (a seeded subsample of ``max_samples`` rows if set)."""
    n = len(transitions)
    rows = np.arange(n)
    if max_samples is not None and n > max_samples:
        rows = np.sort(np.random.default_rng(0).choice(n, max_samples, replace=False))
    out = []
    for start in range(0, len(rows), batch_size):
        r = rows[start : start + batch_size]
        s = torch.as_tensor(transitions.observations[r], device=model.device)
        a = torch.as_tensor(transitions.actions[r], device=model.device)
        out.append(model.uncertainty(s, a).float().cpu().numpy())
    return np.concatenate(out)


def uncertainty_quantiles(
    model: HasUncertainty,
    transitions: Transitions,
    quantiles: tuple[float, ...] = (0.5, 0.9, 0.95, 0.99),
    batch_size: int = 8192,
    max_samples: int | None = None,
) -> dict[float, float]:
    """Quantiles of ``U`` over dataset transitions, ``{q: value}`` (the planner's threshold source)."""
    u = uncertainty_values(model, transitions, batch_size, max_samples)
    return {float(q): float(np.quantile(u, q)) for q in quantiles}


DATASET_QUANTILES = (0.5, 0.8, 0.9, 0.95, 0.99)
QUANTILE_SAMPLES = 100_000  # random dataset rows for the quantiles (exact enough, seconds on a CPU)


def dataset_quantiles(
    model: HasUncertainty,
    transitions: Transitions,
    quantiles: tuple[float, ...] = DATASET_QUANTILES,
    cached: dict[str, float] | None = None,
) -> dict[str, float]:
    """``{str(q): U quantile}`` over (a seeded subsample of) dataset transitions, JSON-ready.

    Quantiles already in ``cached`` (e.g. a world-model artifact's metrics) are not recomputed.
    """
    cached = cached or {}
    missing = tuple(q for q in quantiles if str(q) not in cached)
    fresh = (
        uncertainty_quantiles(model, transitions, missing, max_samples=QUANTILE_SAMPLES) if missing else {}
    )
    return {str(q): float(cached[str(q)]) if str(q) in cached else fresh[q] for q in quantiles}
