"""Behaviour policies that collect a dataset.

- :class:`TanhGaussianMLP`: the policy class of D4RL's MuJoCo collection (a SAC actor: two ReLU
  hidden layers, a Gaussian head with clipped log-std, tanh squashing), acting stochastically.
  Weights come from a file in the shipped format (an ``.npz`` with ``W0 b0 W1 b1 Wmu bmu Wls bls``,
  ``W`` as ``[out, in]``) or, for the ``random`` level, from a seeded random initialisation.
  Its forward pass and noise use :mod:`ipd.generate.exact`, so a build is the same on every CPU.
- :class:`CheckpointBehaviour`: any ipd policy checkpoint (IQL actor, BC, DT) acting as it does in
  evaluation, optionally with Gaussian action noise. Its torch forward is not CPU-independent.

Both follow :class:`ipd.models.base.Policy` (``reset``, ``act``, ``observe``), plus ``sha256``, a
hash of the weights recorded in the dataset's attributes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ipd.generate import exact
from ipd.generate.assets import read_npz

NPZ_KEYS = ("W0", "b0", "W1", "b1", "Wmu", "bmu", "Wls", "bls")
LOG_STD_RANGE = (-20.0, 2.0)  # the SAC actor's clip on the log standard deviation


class BehaviourError(ValueError):
    """A behaviour policy that cannot be used for this task (missing, malformed, wrong sizes)."""


class TanhGaussianMLP:
    """a = tanh(mu(s) + sigma(s) * eps), eps ~ N(0, I), with a 2-hidden-layer ReLU MLP."""

    def __init__(self, weights: dict[str, np.ndarray], seed: int, name: str = "policy") -> None:
        missing = [k for k in NPZ_KEYS if k not in weights]
        if missing:
            raise BehaviourError(
                f"{name}: behaviour-policy weights lack {missing}; the format is an .npz with "
                f"{', '.join(NPZ_KEYS)} (W as [out, in]), as in ipd/generate/assets/policies/."
            )
        self.weights = {k: np.asarray(weights[k], np.float32) for k in NPZ_KEYS}
        w = self.weights
        if not all(np.isfinite(v).all() for v in w.values()):
            raise BehaviourError(f"{name}: behaviour-policy weights contain NaN or inf.")
        self.obs_dim, self.act_dim = w["W0"].shape[1], w["Wmu"].shape[0]
        # Biases are added after the exact product: rounded to float64 once, deterministic.
        self._layers = [(exact.quantize_matrix(w[f"W{i}"]), w[f"b{i}"].astype(np.float64)) for i in (0, 1)]
        self._mu = (exact.quantize_matrix(w["Wmu"]), w["bmu"].astype(np.float64))
        self._log_std = (exact.quantize_matrix(w["Wls"]), w["bls"].astype(np.float64))
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.name = name

    @classmethod
    def from_file(cls, path: str | os.PathLike, seed: int) -> TanhGaussianMLP:
        weights = read_npz(path, "Behaviour-policy file", BehaviourError)
        return cls(weights, seed, name=str(path))

    @classmethod
    def random_init(cls, obs_dim: int, act_dim: int, seed: int, hidden: int = 256) -> TanhGaussianMLP:
        """A freshly initialised SAC actor, as D4RL's ``random`` level used: hidden layers
        U(-1/sqrt(fan_in), 1/sqrt(fan_in)), output layers U(-1e-3, 1e-3) (rlkit's initialisation),
        so actions are about tanh(N(0, 1)) in every state."""
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 0x52414E44])))
        sizes = {"0": (hidden, obs_dim), "1": (hidden, hidden)}
        w: dict[str, np.ndarray] = {}
        for i, (out, fan_in) in sizes.items():
            bound = 1.0 / np.sqrt(fan_in)
            w[f"W{i}"] = rng.uniform(-bound, bound, (out, fan_in)).astype(np.float32)
            w[f"b{i}"] = rng.uniform(-bound, bound, out).astype(np.float32)
        for head in ("mu", "ls"):
            w[f"W{head}"] = rng.uniform(-1e-3, 1e-3, (act_dim, hidden)).astype(np.float32)
            w[f"b{head}"] = rng.uniform(-1e-3, 1e-3, act_dim).astype(np.float32)
        return cls(w, seed, name=f"random-init(seed={seed})")

    @property
    def sha256(self) -> str:
        h = hashlib.sha256()
        for k in NPZ_KEYS:
            h.update(k.encode() + np.ascontiguousarray(self.weights[k]).tobytes())
        return h.hexdigest()

    def reset(self, num_envs: int) -> None:
        pass

    def observe(self, rewards: np.ndarray, dones: np.ndarray) -> None:
        pass

    def mean_and_std(self, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = np.asarray(observations, np.float64)
        for w, b in self._layers:
            h = np.maximum(exact.exact_matmul(h, w) + b, 0.0)
        h = exact.quantize_rows(h)  # once for both heads
        mu = exact.exact_matmul(h, self._mu[0], quantized=True) + self._mu[1]
        log_std = exact.exact_matmul(h, self._log_std[0], quantized=True) + self._log_std[1]
        log_std = np.clip(log_std, *LOG_STD_RANGE)
        return mu, exact.exp(log_std)

    def act(self, observations: np.ndarray) -> np.ndarray:
        mu, std = self.mean_and_std(observations)
        noise = exact.standard_normal(self.rng, mu.shape)
        return exact.tanh(mu + std * noise).astype(np.float32)


class CheckpointBehaviour:
    """An ipd policy checkpoint (``ipd.iql``, ``ipd.bc``, ``ipd.dt``) as the behaviour policy."""

    def __init__(self, path: str | os.PathLike, seed: int, action_noise: float = 0.0) -> None:
        from ipd.models.policies import load_policy  # torch models: only when a checkpoint is given

        self.path = Path(path)
        self.loaded = load_policy(self.path, "cpu")
        self.policy = self.loaded.policy
        self.action_noise = float(action_noise)
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.name = str(self.path)
        self.sha256 = hashlib.sha256(self.path.read_bytes()).hexdigest()

    def reset(self, num_envs: int) -> None:
        self.policy.reset(num_envs)

    def observe(self, rewards: np.ndarray, dones: np.ndarray) -> None:
        self.policy.observe(rewards, dones)

    def act(self, observations: np.ndarray) -> np.ndarray:
        actions = np.asarray(self.policy.act(np.asarray(observations, np.float32)), np.float64)
        if self.action_noise > 0:
            actions = actions + self.action_noise * exact.standard_normal(self.rng, actions.shape)
        return np.clip(actions, -1.0, 1.0).astype(np.float32)
