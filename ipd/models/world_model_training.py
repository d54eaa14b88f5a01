"""Training of :class:`ipd.models.world_model.EnsembleWorldModel` (MBPO's ``BNN.train`` recipe).

A seeded random holdout split, per-member early stopping on holdout MSE (only relative
improvements of at least ``improvement_threshold`` count), each member's best weights restored
at the end, and the elites chosen as the members with the lowest holdout MSE. Each member gets its
own bootstrap resample and batch order (``[E, B]`` index tensors: no Python loop over members).
See the world model's module docstring for the deviations from PETS/MBPO.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ipd import training
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
    state_path: str | os.PathLike | None = None,
) -> tuple[EnsembleWorldModel, dict[str, Any]]:
    """Fit the ensemble on ``transitions`` (holdout split, early stopping, best-weight restore, elites).

    ``callback(record)`` is called after every epoch with that epoch's record (also in
    ``metrics["history"]``); with ``state_path`` the training state is saved there every epoch
    (and on Ctrl-C) and resumed from when present. Returns the trained model (in eval mode) and a
    metrics dict:
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
    history = fit(model, x_tr, y_tr, x_ho, y_ho, progress=progress, callback=callback, state_path=state_path)
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
    state_path: str | os.PathLike | None = None,
) -> list[dict[str, Any]]:
    """Train on normalised tensors with an explicit holdout; restore best weights, set elites.

    Used by :func:`train_world_model` (which does the split and normalisation); callable directly
    to control the holdout set. One epoch is one logging window of :func:`ipd.training.run`, and
    the holdout check runs at its end; ``state_path`` makes the run resumable. Returns the
    per-epoch history; the last record has ``stopped_by``.
    """
    cfg = model.cfg
    learner = WorldModelLearner(model, x_train, y_train, x_holdout, y_holdout)
    training.load_state_if_any(learner, state_path, "world model", model.device)

    def on_log(step: int, record: dict[str, Any]) -> bool:
        learner.end_epoch(record)
        if callback is not None:
            callback(record)
        return learner.stopped_by is not None

    epoch_steps = -(-len(x_train) // cfg.batch_size)
    limits = [cfg.max_steps, cfg.max_epochs and cfg.max_epochs * epoch_steps]
    total = min([int(v) for v in limits if v] or [10**12])
    out = training.run(
        learner, learner.sample, total, stage="world model", log_every=epoch_steps, progress=progress,
        on_log=on_log, state_path=state_path, checkpoint_every=epoch_steps,
        should_stop=learner.out_of_time, history=learner.history,
        postfix=lambda r: {"train_mse": f"{r['train_mse']:.4f}", "holdout": f"{r['holdout_mse_mean']:.4f}"},
    )  # fmt: skip
    return learner.finish(out.wall_time_s)


class WorldModelLearner:
    """The ensemble's training state for :func:`ipd.training.run`: Adam with L2 on weight matrices,
    per-member bootstrap resamples and batch orders, and the per-member best holdout weights."""

    def __init__(self, model: EnsembleWorldModel, x_train, y_train, x_holdout, y_holdout) -> None:
        cfg, e = model.cfg, model.cfg.ensemble_size
        self.model, self.cfg = model, cfg
        self.x_train, self.y_train, self.x_holdout, self.y_holdout = x_train, y_train, x_holdout, y_holdout
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)  # batch order; CPU so CUDA runs draw the same
        n = self.n = len(x_train)
        self.base = (
            torch.randint(n, (e, n), generator=self.gen) if cfg.bootstrap else torch.arange(n).expand(e, n)
        )
        decay = [layer.weight for layer in (*model.layers, model.head)]  # L2 on weight matrices only
        rest = [p for p in model.parameters() if all(p is not q for q in decay)]
        self.optimizer = torch.optim.Adam(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
            lr=cfg.lr,
        )
        self.best = _BestWeights(model)
        self.history: list[dict[str, Any]] = []
        self.step, self.epoch, self.since_update = 0, 0, 0
        self.stopped_by: str | None = None
        self.order: torch.Tensor | None = None
        self.position = n  # the next sample starts an epoch
        self.t0 = time.perf_counter()

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.position >= self.n:  # a new epoch: each member shuffles its own (bootstrap) rows
            self.model.train()
            self.order = _batch_orders(self.n, self.cfg, self.base, self.gen).to(self.x_train.device)
            self.position = 0
        idx = self.order[:, self.position : self.position + self.cfg.batch_size]  # [E, B]
        self.position += self.cfg.batch_size
        return self.x_train[idx], self.y_train[idx]

    def update(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        loss, stats = self.model.loss(*batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return {"train_nll": stats["nll"], "train_mse": stats["mse"]}

    def out_of_time(self) -> bool:
        limit = self.cfg.max_train_seconds
        if limit is not None and time.perf_counter() - self.t0 >= limit:
            self.stopped_by = "time"
        return self.stopped_by is not None

    def end_epoch(self, record: dict[str, Any]) -> None:
        """Holdout check at the end of an epoch (or of the last, cut one); decides early stopping."""
        cfg = self.cfg
        self.epoch += 1
        self.position = self.n  # a cut epoch (max_steps / time) ends here too
        self.model.eval()
        mse = member_mse(self.model, self.x_holdout, self.y_holdout)
        improved = self.best.update(self.model, mse, cfg.improvement_threshold)
        self.since_update = 0 if improved.any() else self.since_update + 1
        if self.stopped_by is None and cfg.max_steps is not None and self.step >= cfg.max_steps:
            self.stopped_by = "max_steps"
        if self.stopped_by is None and self.since_update >= cfg.patience:
            self.stopped_by = "patience"
        if self.stopped_by is None and cfg.max_epochs is not None and self.epoch >= cfg.max_epochs:
            self.stopped_by = "max_epochs"
        record.update(
            epoch=self.epoch,
            steps=self.step,
            holdout_mse=mse.cpu().tolist(),
            holdout_mse_mean=float(mse.mean()),
            improved=improved.cpu().tolist(),
            epochs_since_update=self.since_update,
            time_s=time.perf_counter() - self.t0,
        )

    def finish(self, train_time: float) -> list[dict[str, Any]]:
        """Restore each member's best weights, choose the elites, complete the last record."""
        cfg = self.cfg
        self.best.restore(self.model)
        final = member_mse(self.model, self.x_holdout, self.y_holdout)
        self.model.holdout_mse.copy_(final)
        self.model.elites.copy_(torch.argsort(final, stable=True)[: cfg.num_elites])
        self.history[-1].update(
            epochs=self.epoch,
            steps=self.step,
            train_time_s=train_time,
            samples_per_s=self.step * cfg.batch_size * cfg.ensemble_size / max(train_time, 1e-9),
            stopped_by=self.stopped_by or "max_steps",
        )
        return self.history

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "best_params": self.best.params, "best_mse": self.best.mse, "generator": self.gen.get_state(),
            "base": self.base, "order": self.order, "position": self.position, "step": self.step,
            "epoch": self.epoch, "since_update": self.since_update, "history": self.history,
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.best.params, self.best.mse = state["best_params"], state["best_mse"]
        self.gen.set_state(state["generator"])
        self.base, self.order, self.position = state["base"], state["order"], int(state["position"])
        self.step, self.epoch, self.since_update = (
            int(state["step"]),
            int(state["epoch"]),
            int(state["since_update"]),
        )
        self.history[:] = state["history"]
