"""Training of :class:`ipd.models.world_model.EnsembleWorldModel` (MBPO's ``BNN.train`` recipe).

A seeded random holdout split, per-member early stopping on holdout MSE (only relative
improvements of at least ``improvement_threshold`` count), each member's best weights restored
at the end, and the elites chosen as the members with the lowest holdout MSE. Each member gets its
own bootstrap resample and batch order (``[E, B]`` index tensors: no Python loop over members).
See the world model's module docstring for the deviations from PETS/MBPO.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ipd.data import Normalizer, Transitions
from ipd.models.world_model import EnsembleWorldModel, TerminalFn, WorldModelConfig


def holdout_size(n: int, cfg: WorldModelConfig) -> int:
    """``min(int(holdout_ratio * n), max_holdout)``, at least 1 and leaving at least 1 training row."""
    if n < 2:
        raise ValueError(f"need at least 2 transitions to train a world model, got {n}")
    return int(min(max(1, min(int(cfg.holdout_ratio * n), cfg.max_holdout)), n - 1))


def split_holdout(n: int, cfg: WorldModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random (train, holdout) row indices, exactly as :func:`train_world_model` uses them."""
    perm = np.random.default_rng(cfg.seed).permutation(n)
    k = holdout_size(n, cfg)
    return np.sort(perm[k:]), np.sort(perm[:k])


@torch.no_grad()
def member_mse(model: EnsembleWorldModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-member MSE ``[E]`` of the predicted means on normalised ``x [N, in]``, ``y [N, D]`` (batched)."""
    total = torch.zeros(model.cfg.ensemble_size, device=x.device, dtype=torch.float64)
    for start in range(0, len(x), model.cfg.eval_batch_size):
        stop = start + model.cfg.eval_batch_size
        mean, _ = model(x[start:stop])
        total += (mean - y[start:stop]).square().sum(dim=(1, 2), dtype=torch.float64)
    return (total / (len(x) * y.shape[-1])).float()


class _BestWeights:
    """Per-member snapshot of all parameters (member axis first) and its holdout MSE."""

    def __init__(self, model: EnsembleWorldModel) -> None:
        self.params = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.mse = torch.full((model.cfg.ensemble_size,), float("inf"), device=model.device)

    def update(self, model: EnsembleWorldModel, mse: torch.Tensor, threshold: float) -> torch.Tensor:
        improved = (self.mse - mse) / self.mse > threshold  # inf best: first finite value improves
        improved |= torch.isinf(self.mse) & torch.isfinite(mse)
        if improved.any():
            for n, p in model.named_parameters():
                mask = improved.view(-1, *([1] * (p.dim() - 1)))
                self.params[n] = torch.where(mask, p.detach(), self.params[n])
            self.mse = torch.where(improved, mse, self.mse)
        return improved

    @torch.no_grad()
    def restore(self, model: EnsembleWorldModel) -> None:
        for n, p in model.named_parameters():
            p.copy_(self.params[n])


def _tensors(t: Transitions, device: torch.device) -> tuple[torch.Tensor, ...]:
    f = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)
    return f(t.observations), f(t.actions), f(t.next_observations), f(t.rewards)


def _batch_orders(n: int, cfg: WorldModelConfig, base: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``[E, n]`` row order for one epoch: each member shuffles its own (bootstrap) index set."""
    perm = torch.argsort(torch.rand(cfg.ensemble_size, n, generator=gen), dim=1)
    return torch.gather(base, 1, perm)


def train_world_model(
    transitions: Transitions,
    cfg: WorldModelConfig | None = None,
    terminal_fn: TerminalFn | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[EnsembleWorldModel, dict[str, Any]]:
    """Fit the ensemble on ``transitions`` (holdout split, early stopping, best-weight restore, elites).

    ``callback(record)`` is called after every epoch with that epoch's record (also in
    ``metrics["history"]``). Returns the trained model (in eval mode) and a metrics dict:
    ``holdout_mse`` per member (normalised target space), ``elites``, ``epochs``, ``steps``,
    ``train_time_s``, ``samples_per_s`` (member-samples, i.e. ``steps * batch_size * E / time``),
    ``stopped_by`` and the per-epoch ``history``.
    """
    cfg = cfg if cfg is not None else WorldModelConfig()
    device = torch.device(device)
    train_idx, hold_idx = split_holdout(len(transitions), cfg)
    train, hold = transitions.subset(train_idx), transitions.subset(hold_idx)
    model = EnsembleWorldModel(transitions.obs_dim, transitions.act_dim, cfg, terminal_fn)
    model.set_normalizers(
        Normalizer.fit(np.concatenate([train.observations, train.actions], axis=1)),
        Normalizer.fit(
            np.concatenate([train.next_observations - train.observations, train.rewards[:, None]], 1)
        ),
    )
    model.to(device)
    s, a, s2, r = _tensors(train, device)
    x_tr, y_tr = model.normalize_inputs(s, a), model.normalize_targets(s, s2, r)
    s, a, s2, r = _tensors(hold, device)
    x_ho, y_ho = model.normalize_inputs(s, a), model.normalize_targets(s, s2, r)
    history = fit(model, x_tr, y_tr, x_ho, y_ho, progress=progress, callback=callback)
    metrics = {
        "holdout_mse": model.holdout_mse.cpu().tolist(),
        "elites": model.elites.cpu().tolist(),
        "elite_holdout_mse": float(model.holdout_mse[model.elites].mean()),
        "n_train": len(train),
        "n_holdout": len(hold),
        **{k: v for k, v in history[-1].items() if k in ("epochs", "steps", "train_time_s", "samples_per_s")},
        "stopped_by": history[-1]["stopped_by"],
        "history": history,
    }
    return model, metrics


def fit(
    model: EnsembleWorldModel,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_holdout: torch.Tensor,
    y_holdout: torch.Tensor,
    progress: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train on normalised tensors with an explicit holdout; restore best weights, set elites.

    Used by :func:`train_world_model` (which does the split and normalisation); callable directly
    to control the holdout set. Returns the per-epoch history; the last record has ``stopped_by``.
    """
    cfg, e = model.cfg, model.cfg.ensemble_size
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # batch order; CPU so CUDA runs draw the same
    n = len(x_train)
    base = torch.randint(n, (e, n), generator=gen) if cfg.bootstrap else torch.arange(n).expand(e, n)
    decay = [layer.weight for layer in (*model.layers, model.head)]  # L2 on weight matrices only
    rest = [p for p in model.parameters() if all(p is not q for q in decay)]
    opt = torch.optim.Adam(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=cfg.lr,
    )
    best = _BestWeights(model)
    history: list[dict[str, Any]] = []
    steps, epoch, since_update, stopped_by = 0, 0, 0, None
    t0 = time.perf_counter()
    bar = tqdm(total=cfg.max_epochs, desc="world model", unit="epoch", disable=not progress)
    while stopped_by is None:
        model.train()
        order = _batch_orders(n, cfg, base, gen).to(x_train.device)
        nll_sum, mse_sum, n_batches = 0.0, 0.0, 0
        for start in range(0, n, cfg.batch_size):
            idx = order[:, start : start + cfg.batch_size]  # [E, B]: each member its own batch
            loss, stats = model.loss(x_train[idx], y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            nll_sum, mse_sum, n_batches = nll_sum + stats["nll"], mse_sum + stats["mse"], n_batches + 1
            if cfg.max_steps is not None and steps >= cfg.max_steps:
                stopped_by = "max_steps"
            elif cfg.max_train_seconds is not None and time.perf_counter() - t0 >= cfg.max_train_seconds:
                stopped_by = "time"
            if stopped_by is not None:
                break
        epoch += 1
        model.eval()
        mse = member_mse(model, x_holdout, y_holdout)
        improved = best.update(model, mse, cfg.improvement_threshold)
        since_update = 0 if improved.any() else since_update + 1
        if stopped_by is None and since_update >= cfg.patience:
            stopped_by = "patience"
        if stopped_by is None and cfg.max_epochs is not None and epoch >= cfg.max_epochs:
            stopped_by = "max_epochs"
        elapsed = time.perf_counter() - t0
        record = {
            "epoch": epoch,
            "steps": steps,
            "train_nll": float(nll_sum / n_batches),
            "train_mse": float(mse_sum / n_batches),
            "holdout_mse": mse.cpu().tolist(),
            "holdout_mse_mean": float(mse.mean()),
            "improved": improved.cpu().tolist(),
            "epochs_since_update": since_update,
            "time_s": elapsed,
        }
        history.append(record)
        if callback is not None:
            callback(record)
        bar.update(1)
        bar.set_postfix(train_mse=f"{record['train_mse']:.4f}", holdout=f"{record['holdout_mse_mean']:.4f}")
    bar.close()
    train_time = time.perf_counter() - t0
    best.restore(model)
    final = member_mse(model, x_holdout, y_holdout)
    model.holdout_mse.copy_(final)
    model.elites.copy_(torch.argsort(final, stable=True)[: cfg.num_elites])
    history[-1].update(
        epochs=epoch,
        steps=steps,
        train_time_s=train_time,
        samples_per_s=steps * cfg.batch_size * e / max(train_time, 1e-9),
        stopped_by=stopped_by,
    )
    return history
