"""Batched model-predictive planning (MPPI, CEM) over a learned world model.

Implements stage 2 step 3 of IPD (Qin, Wang et al., AAMAS 2026, arXiv 2603.04289): from each
start state, sample N action sequences of horizon H, score them in the world model with

    J = sum_{k<H} gamma^k r_k  +  gamma^H V(s_H)          (env-return units)

and refine a Gaussian over action sequences for a few iterations:

* MPPI (Williams et al., 2017; the elite/softmax variant of TD-MPC, Hansen et al., 2022): the new mean
  and std are the softmax(J / temperature)-weighted moments of the top-k candidates.
* CEM (Rubinstein, 1999; PETS, Chua et al., 2018): the new mean and std are the plain moments of the
  top-k candidates.

A share of the candidates comes from an optional prior policy rolled through the model with Gaussian
action noise (as TD-MPC does with its learned policy). :meth:`Planner.rollout` runs receding-horizon
MPC in the model (plan, execute the first action with ``model.step``, shift the mean as warm start,
re-plan) to produce the imagined continuations that the augmenter accepts and stitches.

Everything is one tensor program over ``B`` start states x ``N`` candidates, flattened to ``[B*N, ...]``
for ``model.step``; Python loops run only over horizon steps and iterations. ``max_batch`` splits very
large ``B`` into chunks that are still batched.

Deviation/assumption (the paper is silent on these):

* Termination: the reward of the step that terminates counts, nothing (reward, penalty, value) after it.
* Uncertainty ``penalty`` mode: a step whose U exceeds ``uncertainty_threshold`` (every step when the
  threshold is None, as in MOPO) adds ``-lambda * U`` (discounted like the reward).
* Uncertainty ``cut`` mode: the first step whose U exceeds the threshold is *not trusted*: its reward
  does not count, the trajectory stops there with no terminal value, and ``cut_penalty`` (default 0,
  discounted) is added. With positive rewards (locomotion) a cut loses the rest of the horizon and the
  bootstrap, so the planner steers away from unreliable regions. With ``threshold=None`` nothing is cut.
* MPPI temperature is relative to the spread of elite returns by default (``normalize_returns``):
  weights = softmax((J - max J) / (temperature * std(J_elite))), so one default works for tasks whose
  returns differ in scale. Set ``normalize_returns=False`` for the classic MPPI lambda in return units.
* A non-finite return (NaN/inf reward, value, uncertainty or state on a live step) scores ``-inf``.
  A start state whose candidates all score ``-inf`` keeps its previous mean/std (no NaN is produced).
* The executed action is the first action of the final mean (``action_selection="mean"``), or of the
  best candidate of the last iteration (``"best"``). The std is reset to ``init_std`` at every plan call;
  only the mean is warm-started (shifted by one step, zero-padded at the end).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from tqdm.auto import tqdm

from ipd.models.base import ActionPrior, DynamicsModel, ValueFunction


@dataclass
class PlannerConfig:
    """Configuration of :class:`Planner`. Field names map 1:1 onto the Hydra ``planner`` group."""

    method: Literal["mppi", "cem"] = "mppi"  # refinement rule of the sampling distribution
    horizon: int = 10  # H: planning horizon in model steps
    num_samples: int = 256  # N: candidate action sequences per start state (prior share included)
    num_elites: int = 32  # top-k candidates used to refit mean/std (MPPI and CEM); clipped to N
    iterations: int = 4  # refinement iterations per plan call
    temperature: float = 0.5  # MPPI softmax temperature (lower = greedier); see normalize_returns
    normalize_returns: bool = True  # MPPI: temperature is relative to the std of the elite returns
    init_std: float = 1.0  # std of the Gaussian at the start of each plan call
    min_std: float = 0.05  # lower clamp of the refitted std (keeps exploring)
    max_std: float = 2.0  # upper clamp of the refitted std
    momentum: float = 0.0  # mean <- momentum * old_mean + (1 - momentum) * refit mean (0 = no smoothing)
    prior_fraction: float = 0.25  # share of the N candidates drawn from the prior policy (if one is given)
    prior_noise: float = 0.1  # std of the Gaussian noise added to the prior's actions
    gamma: float = 0.99  # discount of the planning objective (env-return units)
    uncertainty_mode: Literal["penalty", "cut"] = "penalty"  # how an unreliable step is handled
    uncertainty_penalty: float = 1.0  # lambda of the penalty mode: -lambda * U per penalised step
    uncertainty_threshold: float | None = None  # absolute U threshold; None: penalise all / cut none
    cut_penalty: float = 0.0  # cut mode: extra (discounted) penalty at the cut step, >= 0
    action_low: float = -1.0  # lower action bound (all dims)
    action_high: float = 1.0  # upper action bound (all dims)
    action_selection: Literal["mean", "best"] = "mean"  # executed first action: final mean or best candidate
    max_batch: int | None = 1024  # start states planned per chunk (bounds memory: chunk * N rows per step)
    seed: int = 0  # seed of the planner's own generator (used when no generator/noise is passed)

    def __post_init__(self) -> None:
        if self.method not in ("mppi", "cem"):
            raise ValueError(f"method must be 'mppi' or 'cem', got {self.method!r}")
        if self.uncertainty_mode not in ("penalty", "cut"):
            raise ValueError(f"uncertainty_mode must be 'penalty' or 'cut', got {self.uncertainty_mode!r}")
        if self.action_selection not in ("mean", "best"):
            raise ValueError(f"action_selection must be 'mean' or 'best', got {self.action_selection!r}")
        if self.horizon < 1 or self.num_samples < 1 or self.iterations < 1 or self.num_elites < 1:
            raise ValueError("horizon, num_samples, num_elites and iterations must be >= 1")
        if not 0.0 <= self.prior_fraction <= 1.0:
            raise ValueError(f"prior_fraction must be in [0, 1], got {self.prior_fraction}")
        if not 0.0 < self.min_std <= self.max_std:
            raise ValueError("need 0 < min_std <= max_std")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")
        if self.action_low >= self.action_high:
            raise ValueError("action_low must be < action_high")
        if self.max_batch is not None and self.max_batch < 1:
            raise ValueError("max_batch must be >= 1 or None")


@dataclass
class PlanResult:
    """Output of :meth:`Planner.plan` for B start states."""

    mean: torch.Tensor  # [B, H, act] refined mean action sequence (use shift_mean(...) to warm-start)
    std: torch.Tensor  # [B, H, act] refined std
    action: torch.Tensor  # [B, act] action to execute now
    best_return: torch.Tensor  # [B] best predicted objective J in the last iteration (-inf if none finite)
    expected_return: torch.Tensor  # [B] elite-weighted mean J in the last iteration (-inf if none finite)


@dataclass
class ImaginedRollout:
    """Receding-horizon MPC rollouts in the model, padded to length L.

    ``alive[b, t]`` is True for steps executed before (and including) the terminating step. After an
    env ends, states repeat its last state and actions/rewards/uncertainty/values are zero.
    """

    states: torch.Tensor  # [B, L+1, obs], index 0 = start state
    actions: torch.Tensor  # [B, L, act]
    rewards: torch.Tensor  # [B, L]
    terminals: torch.Tensor  # [B, L] bool, True at the terminating step only
    uncertainty: torch.Tensor  # [B, L]
    values: torch.Tensor  # [B, L+1] V(s_t) for reached non-terminal states (0: terminal, padding, no V)
    alive: torch.Tensor  # [B, L] bool, step was executed
    lengths: torch.Tensor  # [B] long, number of executed steps
    planned_return: torch.Tensor  # [B] sum_t gamma^t r_t + gamma^len V(s_len) (no V if terminated)
    terminated: torch.Tensor  # [B] bool, ended by a predicted termination
    valid: torch.Tensor  # [B] bool, False if the model produced a non-finite step (rollout stopped there)
    plan_returns: torch.Tensor  # [B, L] planner's expected J at each executed step (NaN padding)
    cut: torch.Tensor  # [B] bool, stopped because a step's uncertainty exceeded ``max_uncertainty``


def shift_mean(mean: torch.Tensor) -> torch.Tensor:
    """Warm start for the next plan call: drop the executed first step, pad the end with zeros."""
    return torch.cat([mean[:, 1:], torch.zeros_like(mean[:, :1])], dim=1)


class Planner:
    """Batched MPPI/CEM over a :class:`DynamicsModel`, with optional value bootstrap and action prior.

    ``model.step`` is called on ``[chunk*N, obs]`` rows; ``value_fn`` on ``[chunk*N, obs]``; ``prior`` on
    the prior share ``[chunk*N_prior, obs]``. All run on the device of the start states.
    """

    def __init__(
        self,
        model: DynamicsModel,
        cfg: PlannerConfig,
        act_dim: int,
        value_fn: ValueFunction | None = None,
        prior: ActionPrior | None = None,
    ) -> None:
        self.model, self.cfg, self.act_dim = model, cfg, act_dim
        self.value_fn, self.prior = value_fn, prior
        self.num_prior = round(cfg.prior_fraction * cfg.num_samples) if prior is not None else 0
        self.num_elites = min(cfg.num_elites, cfg.num_samples)
        self._generators: dict[str, torch.Generator] = {}

    # ------------------------------------------------------------------ randomness
    def _default_generator(self, device: torch.device) -> torch.Generator:
        """The planner's own seeded generator, one per device (reproducible across runs)."""
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.cfg.seed)
        return self._generators[key]

    def draw_noise(self, batch: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """Standard normal noise [iterations, B, N, H, act]: what :meth:`plan` draws when none is given."""
        c = self.cfg
        shape = (c.iterations, batch, c.num_samples, c.horizon, self.act_dim)
        return torch.randn(shape, generator=generator, device=device)

    # ------------------------------------------------------------------ planning
    @torch.inference_mode()
    def plan(
        self,
        states: torch.Tensor,
        init_mean: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> PlanResult:
        """Plan from ``states`` [B, obs]. ``noise`` [iterations, B, N, H, act] (standard normal) makes
        the result independent of batching; otherwise noise is drawn from ``generator`` (or the
        planner's seeded one) chunk by chunk."""
        c = self.cfg
        if states.dim() != 2:
            raise ValueError(f"states must be [B, obs], got {tuple(states.shape)}")
        b, dev = states.shape[0], states.device
        expect = (c.iterations, b, c.num_samples, c.horizon, self.act_dim)
        if noise is not None and tuple(noise.shape) != expect:
            raise ValueError(f"noise must have shape {expect}, got {tuple(noise.shape)}")
        if init_mean is not None and tuple(init_mean.shape) != (b, c.horizon, self.act_dim):
            raise ValueError(f"init_mean must be [B, H, act]={(b, c.horizon, self.act_dim)}")
        gen = generator if generator is not None else self._default_generator(dev)
        chunk = c.max_batch or max(b, 1)
        if b == 0:
            empty = states.new_zeros(0, c.horizon, self.act_dim)
            return PlanResult(empty, empty.clone(), empty[:, 0], states.new_zeros(0), states.new_zeros(0))
        parts = []
        for lo in range(0, b, chunk):
            hi = min(lo + chunk, b)
            part_noise = noise[:, lo:hi] if noise is not None else self.draw_noise(hi - lo, gen, dev)
            part_mean = init_mean[lo:hi] if init_mean is not None else None
            parts.append(self._plan_chunk(states[lo:hi], part_mean, part_noise, gen))
        if len(parts) == 1:
            return parts[0]
        fields = PlanResult.__dataclass_fields__
        return PlanResult(*(torch.cat([getattr(p, f) for p in parts]) for f in fields))

    def _plan_chunk(
        self, states: torch.Tensor, init_mean: torch.Tensor | None, noise: torch.Tensor, gen: torch.Generator
    ) -> PlanResult:
        c = self.cfg
        b, dev, dtype = states.shape[0], states.device, states.dtype
        shape = (b, c.horizon, self.act_dim)
        if init_mean is None:
            mean = torch.zeros(shape, device=dev, dtype=dtype)
        else:
            mean = init_mean.to(dtype).clone()
        std = torch.full(shape, c.init_std, device=dev, dtype=dtype)
        noise = noise.to(dtype)
        for it in range(c.iterations):
            actions, returns = self._evaluate(states, mean, std, noise[it], gen)
            mean_new, std_new, weights, elite_idx, ok = self._refit(actions, returns)
            mean = torch.where(ok[:, None, None], c.momentum * mean + (1 - c.momentum) * mean_new, mean)
            std = torch.where(ok[:, None, None], std_new.clamp(c.min_std, c.max_std), std)
        elite_ret = returns.gather(1, elite_idx)
        neg_inf = torch.full_like(elite_ret[:, 0], -math.inf)
        expected = torch.where(ok, (weights * torch.nan_to_num(elite_ret, neginf=0.0)).sum(1), neg_inf)
        best_ret, best_i = returns.max(dim=1)
        if c.action_selection == "best":
            action = actions[torch.arange(b, device=dev), best_i, 0]
            action = torch.where(ok[:, None], action, mean[:, 0])
        else:
            action = mean[:, 0]
        action = action.clamp(c.action_low, c.action_high)
        return PlanResult(mean=mean, std=std, action=action, best_return=best_ret, expected_return=expected)

    def _refit(self, actions: torch.Tensor, returns: torch.Tensor):
        """Weighted elite moments. Returns (mean, std, weights [B,K], elite idx [B,K], row ok [B])."""
        c = self.cfg
        elite_ret, elite_idx = returns.topk(self.num_elites, dim=1)  # -inf sorts last
        valid = torch.isfinite(elite_ret)
        ok = valid.any(dim=1)
        if c.method == "mppi":
            top = elite_ret[:, :1]  # the max; finite whenever the row is ok
            z = torch.where(valid, elite_ret - torch.where(ok[:, None], top, 0.0), 0.0)
            if c.normalize_returns:
                n_valid = valid.sum(1, keepdim=True).clamp_min(1)
                mu = z.sum(1, keepdim=True) / n_valid
                var = (torch.where(valid, z - mu, 0.0) ** 2).sum(1, keepdim=True) / n_valid
                z = z / (var.sqrt() + 1e-6)
            logits = torch.where(valid, z / c.temperature, -math.inf)
        else:
            logits = torch.where(valid, 0.0, -math.inf)
        # All-invalid rows would give NaN; give them uniform weights (their update is discarded anyway).
        logits = torch.where(ok[:, None], logits, 0.0)
        weights = torch.softmax(logits, dim=1)  # [B, K]
        idx = elite_idx[:, :, None, None].expand(-1, -1, *actions.shape[2:])
        elites = actions.gather(1, idx)  # [B, K, H, act]
        w = weights[:, :, None, None]
        mean = (w * elites).sum(1)
        std = ((w * (elites - mean[:, None]) ** 2).sum(1)).sqrt()
        return mean, std, weights, elite_idx, ok

    def _evaluate(
        self,
        states: torch.Tensor,
        mean: torch.Tensor,
        std: torch.Tensor,
        eps: torch.Tensor,
        gen: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample candidates and score them in the model. Returns actions [B,N,H,act], J [B,N]."""
        c = self.cfg
        b, n, h = states.shape[0], c.num_samples, c.horizon
        n_gauss = n - self.num_prior
        gauss = (mean[:, None] + std[:, None] * eps[:, :n_gauss]).clamp(c.action_low, c.action_high)
        s = states[:, None].expand(b, n, states.shape[-1]).reshape(b * n, -1)
        alive = torch.ones(b * n, dtype=torch.bool, device=states.device)
        invalid = torch.zeros_like(alive)
        ret = torch.zeros(b * n, dtype=states.dtype, device=states.device)
        thr = math.inf if c.uncertainty_threshold is None else c.uncertainty_threshold
        acts = []
        for k in range(h):
            a = gauss[:, :, k]
            if self.num_prior:
                s_prior = s.view(b, n, -1)[:, n_gauss:].reshape(b * self.num_prior, -1)
                a_prior = self.prior(s_prior).reshape(b, self.num_prior, -1)
                a_prior = a_prior + c.prior_noise * eps[:, n_gauss:, k]
                a = torch.cat([a, a_prior.clamp(c.action_low, c.action_high)], dim=1)
            acts.append(a)
            out = self.model.step(s, a.reshape(b * n, -1), generator=gen)
            r, u = out.rewards.to(ret.dtype), out.uncertainty.to(ret.dtype)
            over = u > thr
            disc = c.gamma**k
            if c.uncertainty_mode == "penalty":
                pen = c.uncertainty_penalty * u
                step_r = r - (torch.where(over, pen, 0.0) if c.uncertainty_threshold is not None else pen)
                counted = alive
                cut = torch.zeros_like(alive)
            else:
                cut = alive & over
                counted = alive & ~over
                step_r = r
                ret = ret - torch.where(cut, disc * c.cut_penalty, 0.0)
            ret = ret + torch.where(counted, disc * step_r, 0.0)
            invalid |= counted & ~(torch.isfinite(step_r) & torch.isfinite(u))
            alive = counted & ~out.terminals.bool()
            s = out.next_states
            invalid |= alive & ~torch.isfinite(s).all(-1)
        if self.value_fn is not None:
            v = self.value_fn(s).to(ret.dtype).reshape(-1)
            ret = ret + torch.where(alive, c.gamma**h * v, 0.0)
            invalid |= alive & ~torch.isfinite(v)
        ret = torch.where(invalid | ~torch.isfinite(ret), -math.inf, ret)
        return torch.stack(acts, dim=2), ret.view(b, n)

    # ------------------------------------------------------------------ receding horizon
    @torch.inference_mode()
    def rollout(
        self,
        start_states: torch.Tensor,
        length: int,
        generator: torch.Generator | None = None,
        progress: bool = False,
        max_uncertainty: float | None = None,
    ) -> ImaginedRollout:
        """Receding-horizon MPC in the model from ``start_states`` [B, obs] for up to ``length`` steps.

        At each step only the still-running envs are planned (one batched call), the first action is
        executed with ``model.step`` and the mean is shifted as warm start. An env stops at a predicted
        termination, at a non-finite model output (then ``valid`` is False and that step is dropped),
        or, with ``max_uncertainty``, at the first executed step whose U exceeds it (``cut``; that
        step is dropped too, so every kept step is trusted). Stopped envs cost nothing afterwards.
        """
        c = self.cfg
        b, obs_dim = start_states.shape
        dev, dtype = start_states.device, start_states.dtype
        gen = generator if generator is not None else self._default_generator(dev)
        states = start_states.new_zeros(b, length + 1, obs_dim)
        states[:, 0] = start_states
        actions = start_states.new_zeros(b, length, self.act_dim)
        rewards = start_states.new_zeros(b, length)
        uncertainty = start_states.new_zeros(b, length)
        plan_returns = torch.full((b, length), math.nan, device=dev, dtype=dtype)
        terminals = torch.zeros(b, length, dtype=torch.bool, device=dev)
        alive = torch.zeros(b, length, dtype=torch.bool, device=dev)
        values = start_states.new_zeros(b, length + 1)
        running = torch.ones(b, dtype=torch.bool, device=dev)
        terminated = torch.zeros(b, dtype=torch.bool, device=dev)
        valid = torch.ones(b, dtype=torch.bool, device=dev)
        cut = torch.zeros(b, dtype=torch.bool, device=dev)
        lengths = torch.zeros(b, dtype=torch.long, device=dev)
        mean = torch.zeros(b, c.horizon, self.act_dim, device=dev, dtype=dtype)
        cur = start_states.clone()
        if self.value_fn is not None:
            values[:, 0] = self.value_fn(cur).to(dtype).reshape(-1)
        for t in tqdm(range(length), desc="imagined rollout", disable=not progress):
            idx = running.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            res = self.plan(cur[idx], init_mean=mean[idx], generator=gen)
            out = self.model.step(cur[idx], res.action, generator=gen)
            ns, r = out.next_states.to(dtype), out.rewards.to(dtype).reshape(-1)
            u, term = out.uncertainty.to(dtype).reshape(-1), out.terminals.bool().reshape(-1)
            finite = torch.isfinite(ns).all(-1) & torch.isfinite(r) & torch.isfinite(u)
            bad_idx = idx[~finite]
            valid[bad_idx] = False
            running[bad_idx] = False
            if max_uncertainty is not None:
                over = finite & (u > max_uncertainty)
                cut[idx[over]] = True
                running[idx[over]] = False
                finite = finite & ~over
            ok_idx = idx[finite]
            actions[ok_idx, t] = res.action[finite]
            rewards[ok_idx, t] = r[finite]
            uncertainty[ok_idx, t] = u[finite]
            terminals[ok_idx, t] = term[finite]
            plan_returns[ok_idx, t] = res.expected_return[finite]
            alive[ok_idx, t] = True
            lengths[ok_idx] += 1
            cur[ok_idx] = ns[finite]
            mean[idx] = shift_mean(res.mean)
            ended = ok_idx[term[finite]]
            terminated[ended] = True
            running[ended] = False
            if self.value_fn is not None:
                cont = ok_idx[~term[finite]]
                if cont.numel():
                    values[cont, t + 1] = self.value_fn(cur[cont]).to(dtype).reshape(-1)
            # Padding: every state slot after t holds the env's latest state.
            states[:, t + 1] = cur
        if b:  # slots after the last executed step (loop ended early) repeat each env's last state
            states[:, int(lengths.max()) + 1 :] = cur[:, None]
        disc = c.gamma ** torch.arange(length, device=dev, dtype=dtype)
        planned = (rewards * disc).sum(1)
        last_v = values.gather(1, lengths[:, None]).squeeze(1)
        planned = planned + torch.where(terminated, 0.0, c.gamma ** lengths.to(dtype) * last_v)
        return ImaginedRollout(
            states=states,
            actions=actions,
            rewards=rewards,
            terminals=terminals,
            uncertainty=uncertainty,
            values=values,
            alive=alive,
            lengths=lengths,
            planned_return=planned,
            terminated=terminated,
            valid=valid,
            plan_returns=plan_returns,
            cut=cut,
        )
