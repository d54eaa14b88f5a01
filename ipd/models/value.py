"""IQL value learner with AWR policy extraction (IPD stage 1 "quasi-optimal value", and the IQL baseline).

Implicit Q-Learning (Kostrikov, Nair & Levine, "Offline Reinforcement Learning with Implicit
Q-Learning", ICLR 2022, arXiv 2110.06169):

- V(s) is fit by expectile regression (expectile tau, 0.7 for locomotion) to min of the twin
  *target* Qs at dataset actions: ``L_V = E[|tau - 1(u < 0)| u^2]``, ``u = min_i Q'_i(s, a) - V(s)``.
- Each of the twin Qs is fit to ``r + gamma (1 - terminal) V(s')`` with the dataset's true ``s'``.
- Target Qs are Polyak-averaged copies of the Qs (rate 0.005).
- The policy is extracted by advantage-weighted regression (AWR, Peng et al. 2019; as in IQL):
  ``L_pi = E[min(exp(beta * A(s, a)), max_weight) * (-log pi(a|s))]`` with
  ``A = min_i Q'_i(s, a) - V(s)``; the deterministic actor replaces ``-log pi`` by the squared
  error. The actor's learning rate follows a cosine decay over ``num_updates`` (as in IQL).

Implementation details follow CORL's ``iql.py`` (Tarasov et al., 2022): ReLU MLPs, states
normalised with dataset mean/std (eps 1e-3), one Adam per network group, the Gaussian actor has
a tanh'd mean and a state-independent log-std clamped to [-20, 2], and its log-likelihood is that
of a plain (unsquashed) Normal at the dataset action (Kostrikov's ``NormalTanhPolicy`` with
``tanh_squash_distribution=False`` is the same model).

Units: training uses internally scaled rewards ``r * reward_scale`` (``reward_normalization``);
every public value API (:meth:`IQLLearner.value`, :meth:`~IQLLearner.q`,
:meth:`~IQLLearner.advantage`, :meth:`~IQLLearner.value_fn`, :meth:`~IQLLearner.q_torch`) divides
by ``reward_scale``, so values are in **env-return units** (discounted returns of raw env rewards),
comparable with dataset returns-to-go and model-predicted rewards. All public APIs take **raw**
(un-normalised) states.

Deviation/assumption:
- The twin Qs are one vectorised 2-member ensemble (batched matmuls, no Python loop over members).
- V and Q losses share one backward pass and one Adam (their parameters are disjoint, so this
  equals two separate Adam steps at the same lr); the actor uses its own Adam with the cosine
  schedule. As in CORL, the actor's advantage uses V *before* this step's V update (the original
  IQL uses the updated V; the difference is one step of lag).
- :meth:`IQLLearner.q`, :meth:`~IQLLearner.advantage` and :meth:`~IQLLearner.q_torch` use the
  Polyak-averaged target Qs: these are the Qs that V is regressed against and that define IQL's
  advantage, and their parameters never require grad, so Stage 3 can backpropagate through
  ``q_torch`` into actions without touching the critic.
- Reward normalisation: ``"returns"`` is IQL's locomotion rule ``r * 1000 / (max episode return -
  min episode return)``, with episodes split at ``terminals | timeouts`` (docs/design.md §3); ``"std"``
  divides by the reward std; ``"none"`` keeps raw rewards. Only a *scale* is applied (no shift such
  as antmaze's ``r - 1``), so values map back to env units exactly.
- Dropout (``dropout``) applies to the actor's hidden layers only (CORL's ``actor_dropout``) and
  draws from the learner's own ``torch.Generator``, so training never touches the global RNG and a
  resumed run reproduces an uninterrupted one.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import nn

from ipd import training
from ipd.data.transitions import Normalizer, Transitions, reward_scale_for
from ipd.models.learner_checkpoint import CheckpointedLearner
from ipd.models.value_config import IQLConfig, expectile_loss  # noqa: F401 (API)
from ipd.models.value_inference import IQLInference, IQLPolicy  # noqa: F401 (API)
from ipd.models.value_networks import Actor, EnsembleMLP, mlp

CHECKPOINT_NAME = "ipd.iql"
CHECKPOINT_VERSION = 1

ArrayLike = np.ndarray | torch.Tensor


# ----------------------------------------------------------------------------------------------
# Learner


class IQLLearner(IQLInference, CheckpointedLearner):
    """IQL: V by expectile regression, twin Q by TD on V, AWR actor; see the module docstring.

    All public methods accept numpy arrays or tensors of **raw** states / actions in [-1, 1]
    (batched, ``[B, obs]`` / ``[B, act]``). ``value``, ``q``, ``advantage`` and ``act`` return
    numpy for numpy input and a tensor on the learner's device for tensor input. Values are in
    env-return units.

    Typical use::

        learner = IQLLearner(obs_dim, act_dim, IQLConfig(), device="cuda")
        learner.fit(transitions, callback=lambda step, metrics: ...)
        learner.save("iql.pt"); learner = IQLLearner.load("iql.pt", "cuda")
    """

    checkpoint_name, checkpoint_version, config_cls = CHECKPOINT_NAME, CHECKPOINT_VERSION, IQLConfig

    def __init__(
        self, obs_dim: int, act_dim: int, cfg: IQLConfig | None = None, device: str | torch.device = "cpu"
    ) -> None:
        self.cfg = cfg = cfg or IQLConfig()
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.device = torch.device(device)
        # Init on CPU from the config seed, so the networks do not depend on the device or on
        # the caller's global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.v_net = mlp(self.obs_dim, cfg.hidden_dims, 1)
            self.q_net = EnsembleMLP(self.obs_dim + self.act_dim, cfg.hidden_dims, 1, members=2)
            self.actor = Actor(self.obs_dim, self.act_dim, cfg)
        self.q_target = copy.deepcopy(self.q_net).requires_grad_(False)
        for m in (self.v_net, self.q_net, self.actor, self.q_target):
            m.to(self.device)
        fused = self.device.type == "cuda"  # one kernel per optimiser step instead of one per tensor
        self.critic_optimizer = torch.optim.Adam(
            [*self.v_net.parameters(), *self.q_net.parameters()], lr=cfg.lr, fused=fused
        )
        self.actor_optimizer = torch.optim.Adam(
            self.actor.parameters(), lr=cfg.actor_lr or cfg.lr, fused=fused
        )
        self.actor_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.actor_optimizer, cfg.actor_lr_schedule_updates or cfg.num_updates
        )
        self.step = 0
        self.rng = np.random.default_rng(cfg.seed)  # batch indices
        self.generator = torch.Generator(self.device)  # actor dropout
        self.generator.manual_seed(cfg.seed)
        self.act_generator = torch.Generator(self.device)  # stochastic act(); not training state
        self.act_generator.manual_seed(cfg.seed + 1)
        self.set_data_stats(Normalizer.identity(self.obs_dim), 1.0)
        self.data_stats_fitted = False
        self._target_params = list(self.q_target.parameters())
        self._online_params = list(self.q_net.parameters())

    # ------------------------------------------------------------------ data statistics

    def set_data_stats(self, normalizer: Normalizer, reward_scale: float) -> None:
        """Set the state normaliser and the reward scale (internal reward = env reward * scale)."""
        if normalizer.mean.shape != (self.obs_dim,):
            raise ValueError(f"normalizer has dim {normalizer.mean.shape}, expected ({self.obs_dim},)")
        if not (np.isfinite(reward_scale) and reward_scale > 0):
            raise ValueError(f"reward_scale must be finite and > 0, got {reward_scale}")
        self.normalizer, self.reward_scale = normalizer, float(reward_scale)
        self._mean = torch.as_tensor(normalizer.mean, device=self.device)
        self._std = torch.as_tensor(normalizer.std, device=self.device)
        self.data_stats_fitted = True

    def fit_data_stats(self, transitions: Transitions) -> None:
        """Fit the state normaliser and the reward scale on a dataset (``fit`` does it once)."""
        if transitions.obs_dim != self.obs_dim or transitions.act_dim != self.act_dim:
            raise ValueError(
                f"dataset has obs/act dims {transitions.obs_dim}/{transitions.act_dim}, "
                f"learner expects {self.obs_dim}/{self.act_dim}"
            )
        norm = (
            Normalizer.fit(transitions.observations)
            if self.cfg.normalize_states
            else Normalizer.identity(self.obs_dim)
        )
        self.set_data_stats(norm, reward_scale_for(transitions, self.cfg.reward_normalization))

    # ------------------------------------------------------------------ conversion helpers

    def _tensor(self, x: ArrayLike) -> torch.Tensor:
        return torch.as_tensor(x, dtype=torch.float32, device=self.device)

    def _norm(self, states: torch.Tensor) -> torch.Tensor:
        return (states - self._mean) / self._std

    @staticmethod
    def _like(out: torch.Tensor, ref: ArrayLike) -> ArrayLike:  # numpy in, numpy out
        return out if isinstance(ref, torch.Tensor) else out.cpu().numpy()

    def _q_min(self, net: EnsembleMLP, nstates: torch.Tensor, actions: torch.Tensor, detach: bool = False):
        return net(torch.cat([nstates, actions], -1), detach_params=detach).squeeze(-1).min(0).values

    # ------------------------------------------------------------------ training

    def _loss(self, obs, act, rew, next_obs, term) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Sum of the V, Q and actor losses (disjoint parameters) for normalised, reward-scaled data."""
        cfg = self.cfg
        with torch.no_grad():
            target_q = self._q_min(self.q_target, obs, act)
            next_v = self.v_net(next_obs).squeeze(-1)
            td_target = rew + cfg.gamma * (1.0 - term) * next_v
        v = self.v_net(obs).squeeze(-1)
        adv = target_q - v
        v_loss = expectile_loss(adv, cfg.expectile)
        qs = self.q_net(torch.cat([obs, act], -1)).squeeze(-1)  # [2, B]
        q_loss = (qs - td_target).square().mean()  # mean over both members, as CORL
        weights = torch.exp(cfg.beta * adv.detach()).clamp(max=cfg.max_weight)
        bc = self.actor.bc_loss(obs, act, self.generator if self.actor.dropout > 0 else None)
        actor_loss = (weights * bc).mean()
        metrics = {
            "v_loss": v_loss.detach(),
            "q_loss": q_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "v_mean": v.detach().mean() / self.reward_scale,
            "q_mean": target_q.mean() / self.reward_scale,
            "adv_mean": adv.detach().mean() / self.reward_scale,
            "awr_weight_mean": weights.mean(),
        }
        return v_loss + q_loss + actor_loss, metrics

    def _update_tensors(self, obs, act, rew, next_obs, term) -> dict[str, torch.Tensor]:
        loss, metrics = self._loss(obs, act, rew, next_obs, term)
        self.critic_optimizer.zero_grad(set_to_none=True)
        self.actor_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_optimizer.step()
        self.actor_optimizer.step()
        self.actor_scheduler.step()
        with torch.no_grad():
            torch._foreach_lerp_(self._target_params, self._online_params, self.cfg.polyak)
        self.step += 1
        return metrics

    def update(self, batch: dict[str, ArrayLike] | Transitions | tuple[torch.Tensor, ...]) -> dict:
        """One gradient step of V, Q and the actor.

        ``batch``: a prepared tuple from :meth:`batch_sampler` (normalised device tensors; the
        training loop's path, metrics stay tensors on the device), or **raw** transitions: a
        :class:`Transitions` or a mapping with ``observations``, ``actions``, ``rewards`` (env
        units), ``next_observations`` and ``terminals``, normalised and scaled with the learner's
        data statistics (then the metrics are floats).
        """
        if isinstance(batch, tuple):
            return self._update_tensors(*batch)
        get = (lambda k: getattr(batch, k)) if isinstance(batch, Transitions) else batch.__getitem__
        metrics = self._update_tensors(
            self._norm(self._tensor(get("observations"))),
            self._tensor(get("actions")),
            self._tensor(get("rewards")).reshape(-1) * self.reward_scale,
            self._norm(self._tensor(get("next_observations"))),
            self._tensor(get("terminals")).reshape(-1),
        )
        return {k: float(v) for k, v in metrics.items()} | {"actor_lr": self.actor_scheduler.get_last_lr()[0]}

    def fit(
        self,
        transitions: Transitions,
        num_updates: int | None = None,
        progress: bool = True,
        callback: Callable[[int, dict[str, float]], Any] | None = None,
        callback_every: int | None = None,
        state_path: str | os.PathLike | None = None,
        checkpoint_every: int | None = None,
    ) -> dict[str, Any]:
        """Train from ``self.step`` until ``self.step == num_updates`` (default ``cfg.num_updates``)
        with :func:`ipd.training.run`.

        ``num_updates`` is the *total* step count to reach, so ``fit(n)`` after
        ``load_state_dict`` continues an interrupted run; with ``state_path`` the training state
        is saved there every ``checkpoint_every`` (default ``callback_every``) updates and at the
        end, and a state found there is resumed. The first call fits the state normaliser and
        reward scale on ``transitions`` (unless already set or restored). Batches are drawn
        uniformly with replacement by the learner's seeded numpy Generator.
        ``callback(step, metrics)`` runs every ``callback_every`` (default ``cfg.log_every``)
        updates and at the end, with metrics averaged since the previous call; use it to
        evaluate (e.g. :meth:`policy`) or log.

        Returns ``{"step", "reward_scale", "updates_per_s", "history", **last metrics}``.
        """
        total = int(num_updates if num_updates is not None else self.cfg.num_updates)
        every = max(int(callback_every or self.cfg.log_every), 1)
        if total > self.cfg.num_updates:
            warnings.warn(
                f"fit to {total} updates, beyond cfg.num_updates={self.cfg.num_updates}: the actor's cosine "
                "learning-rate schedule restarts after cfg.num_updates. Set cfg.num_updates instead.",
                stacklevel=2,
            )
        training.load_state_if_any(self, state_path, "iql", self.device)
        if not self.data_stats_fitted:
            self.fit_data_stats(transitions)

        def on_log(step: int, record: dict[str, float]) -> None:
            record["actor_lr"] = self.actor_scheduler.get_last_lr()[0]
            if callback is not None:
                self._train_mode(False)
                callback(step, training.metrics_of(record))
                self._train_mode(True)

        self._train_mode(True)
        try:
            out = training.run(
                self, self.batch_sampler(transitions), total, stage="iql", log_every=every,
                progress=progress, on_log=on_log, state_path=state_path,
                checkpoint_every=int(checkpoint_every or every),
                postfix=lambda r: {"v": f"{r['v_mean']:.1f}", "q_loss": f"{r['q_loss']:.3g}"},
            )  # fmt: skip
        finally:
            self._train_mode(False)
        return {
            **out.last,
            "step": self.step,
            "reward_scale": self.reward_scale,
            "updates_per_s": out.updates_per_s,
            "history": out.history,
        }

    def batch_sampler(self, transitions: Transitions) -> Callable[[], tuple[torch.Tensor, ...]]:
        """Uniform batches (with replacement, the learner's seeded RNG) of the prepared device data."""
        data = self._device_dataset(transitions)
        n, bs = len(transitions), self.cfg.batch_size

        def sample() -> tuple[torch.Tensor, ...]:
            idx = torch.from_numpy(self.rng.integers(0, n, size=bs)).to(self.device, non_blocking=True)
            return tuple(x[idx] for x in data)

        return sample

    def _device_dataset(self, t: Transitions) -> tuple[torch.Tensor, ...]:
        """Normalised states, actions, scaled rewards, normalised next states, terminals on device.

        Only ``terminals`` stop bootstrapping: a timeout is a truncation, its ``s'`` still has value.
        """
        return (
            self._norm(self._tensor(t.observations)),
            self._tensor(t.actions),
            self._tensor(t.rewards) * self.reward_scale,
            self._norm(self._tensor(t.next_observations)),
            self._tensor(t.terminals.astype(np.float32)),
        )

    def _train_mode(self, on: bool) -> None:
        for m in (self.v_net, self.q_net, self.actor):
            m.train(on)

    # ------------------------------------------------------------------ state / checkpoints

    def _networks(self) -> dict[str, nn.Module]:
        return {"v_net": self.v_net, "q_net": self.q_net, "q_target": self.q_target, "actor": self.actor}

    def _meta(self) -> dict[str, Any]:
        return {
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "config": asdict(self.cfg),
            "normalizer": self.normalizer.state_dict(),
            "reward_scale": self.reward_scale,
            "data_stats_fitted": self.data_stats_fitted,
            "step": self.step,
        }

    def state_dict(self) -> dict[str, Any]:
        """Full training state: networks, targets, optimisers, scheduler, step, RNGs, data stats.

        Tensors are the live ones (as ``nn.Module.state_dict``): ``torch.save`` it, or deep-copy
        it to keep a snapshot while training continues.
        """
        return {
            **self._meta(),
            "networks": {k: m.state_dict() for k, m in self._networks().items()},
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "actor_scheduler": self.actor_scheduler.state_dict(),
            "numpy_rng": self.rng.bit_generator.state,
            "torch_generator": self.generator.get_state(),
            "act_generator": self.act_generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (training state or the network part of a checkpoint)."""
        if (state["obs_dim"], state["act_dim"]) != (self.obs_dim, self.act_dim):
            raise ValueError(
                f"state is for obs/act dims {state['obs_dim']}/{state['act_dim']}, "
                f"learner has {self.obs_dim}/{self.act_dim}"
            )
        for k, m in self._networks().items():
            m.load_state_dict(state["networks"][k])
        self.set_data_stats(Normalizer.from_state_dict(state["normalizer"]), state["reward_scale"])
        self.data_stats_fitted = bool(state["data_stats_fitted"])
        self.step = int(state["step"])
        if "critic_optimizer" in state:
            self.critic_optimizer.load_state_dict(state["critic_optimizer"])
            self.actor_optimizer.load_state_dict(state["actor_optimizer"])
            self.actor_scheduler.load_state_dict(state["actor_scheduler"])
            self.rng.bit_generator.state = state["numpy_rng"]
            self.generator.set_state(state["torch_generator"].cpu())
            self.act_generator.set_state(state["act_generator"].cpu())

    def _weights(self) -> dict[str, Any]:
        """A standalone ``ipd.iql`` v1 checkpoint: networks, target Qs, normaliser, reward scale,
        dims, config and step."""
        return {**self._meta(), "networks": {k: m.state_dict() for k, m in self._networks().items()}}

    def _after_load(self) -> None:
        self._train_mode(False)
