"""Decision Transformer: masking/causality, checkpoints, policy conditioning, trainer and resume."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from ipd.data import Normalizer, SequenceSampler, Trajectories, Transitions
from ipd.models.policies import DTPolicy
from ipd.models.sequence_trainer import SequenceTrainConfig, SequenceTrainer
from ipd.models.transformer import ConditioningConfig, DecisionTransformer, DTConfig

OBS, ACT, K = 11, 3, 5
TINY = DTConfig(embed_dim=32, n_layers=2, n_heads=2, context=K, dropout=0.1, max_timestep=100)


def _model(seed: int = 0, cfg: DTConfig = TINY) -> DecisionTransformer:
    torch.manual_seed(seed)
    return DecisionTransformer(OBS, ACT, cfg)


def _inputs(b: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, K, OBS, generator=g),
        torch.rand(b, K, ACT, generator=g) * 2 - 1,
        torch.randn(b, K, 1, generator=g),
        torch.randint(0, 100, (b, K), generator=g),
        torch.ones(b, K),
    )


def _sampler(
    transitions: Transitions, seed: int = 0, normalizer: Normalizer | None = None
) -> SequenceSampler:
    traj = Trajectories.from_transitions(transitions)
    return SequenceSampler(
        traj, K, conditioning_scale=100.0, state_normalizer=normalizer, max_timestep=100, seed=seed
    )


def test_output_shapes_and_range():
    model = _model()
    s, a, c, t, m = _inputs()
    out = model(s, a, c, t, m)
    assert out.shape == (4, K, ACT)
    assert out.abs().max() <= 1.0
    # timesteps beyond the table are clamped, not an index error
    assert model(s, a, c, t + 10_000, m).shape == (4, K, ACT)


def test_causality():
    model = _model().eval()
    s, a, c, t, m = _inputs()
    base = model(s, a, c, t, m)
    j = 3
    s2, a2, c2 = s.clone(), a.clone(), c.clone()
    s2[:, j] += 5.0
    out = model(s2, a, c, t, m)
    torch.testing.assert_close(out[:, :j], base[:, :j], rtol=0, atol=1e-7)
    assert (out[:, j:] - base[:, j:]).abs().max() > 1e-5  # the change is visible from j on
    # a_j comes after s_j: the prediction of a_j must not see a_j itself
    a2[:, j] = -a2[:, j]
    out = model(s, a2, c, t, m)
    torch.testing.assert_close(out[:, : j + 1], base[:, : j + 1], rtol=0, atol=1e-7)
    assert (out[:, j + 1 :] - base[:, j + 1 :]).abs().max() > 1e-5
    c2[:, j] += 3.0
    out = model(s, a, c2, t, m)
    torch.testing.assert_close(out[:, :j], base[:, :j], rtol=0, atol=1e-7)
    assert (out[:, j] - base[:, j]).abs().max() > 1e-5


def test_padding_mask():
    model = _model().eval()
    s, a, c, t, m = _inputs()
    m[:, :2] = 0.0  # left padding of 2 steps
    m[3] = 0.0  # one fully padded window
    base = model(s, a, c, t, m)
    assert torch.isfinite(base).all()
    s2, a2, c2, t2 = s.clone(), a.clone(), c.clone(), t.clone()
    s2[:, :2] = 100.0
    a2[:, :2] = 0.7
    c2[:, :2] = -50.0
    t2[:, :2] = 0
    out = model(s2, a2, c2, t2, m)
    torch.testing.assert_close(out[:3, 2:], base[:3, 2:], rtol=0, atol=1e-5)
    # without the mask the same change leaks into real positions (so the check above can fail)
    assert (model(s2, a2, c2, t2, None)[:3, 2:] - model(s, a, c, t, None)[:3, 2:]).abs().max() > 1e-3
    # gradients stay finite with fully padded rows in training mode
    model.train()
    model(s, a, c, t, m).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def _learnable(transitions: Transitions) -> Transitions:
    """Same states, actions a deterministic function of the state (the random-policy actions are noise)."""
    norm = Normalizer.fit(transitions.observations)
    w = np.random.default_rng(0).normal(size=(OBS, ACT)).astype(np.float32) / np.sqrt(OBS)
    acts = np.tanh(norm.normalize(transitions.observations) @ w).astype(np.float32)
    t = transitions
    return Transitions(t.observations, acts, t.rewards, t.next_observations, t.terminals, t.timeouts)


def test_loss_goes_down(hopper_transitions):
    data = _learnable(hopper_transitions)
    norm = Normalizer.fit(data.observations)
    cfg = SequenceTrainConfig(lr=3e-3, warmup_steps=10, batch_size=32, num_updates=150, log_every=25)
    trainer = SequenceTrainer(_model(), _sampler(data, normalizer=norm), cfg, state_normalizer=norm)
    out = trainer.train(progress=False)
    losses = [h["loss"] for h in out["history"]]
    assert out["step"] == 150 and len(losses) == 6
    assert losses[-1] < 0.3 * losses[0], losses


def test_policy_rtg_mode_subtracts_rewards():
    cond = ConditioningConfig("rtg", scale=100.0, target_return=300.0)
    pol = DTPolicy(_model(), Normalizer.identity(OBS), cond)
    pol.reset(2)
    obs = np.zeros((2, OBS), np.float32)
    a = pol.act(obs)
    assert a.shape == (2, ACT)
    torch.testing.assert_close(pol.conditioning[:, -1, 0], torch.tensor([3.0, 3.0]))
    pol.observe(np.array([10.0, 50.0]), np.array([False, False]))
    pol.act(obs)
    torch.testing.assert_close(pol.conditioning[:, -2:, 0], torch.tensor([[3.0, 2.9], [3.0, 2.5]]))
    torch.testing.assert_close(pol.timesteps[:, -2:], torch.tensor([[0, 1], [0, 1]]))
    pol.observe(np.array([20.0, 1.0]), np.array([False, True]))  # env 1 ends: fresh episode
    pol.act(obs)
    torch.testing.assert_close(pol.conditioning[:, -1, 0], torch.tensor([2.7, 3.0]))
    torch.testing.assert_close(pol.mask[1], torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0]))
    assert pol.timesteps[1, -1] == 0 and pol.timesteps[0, -1] == 2
    # actions chosen are stored in the history at their step
    torch.testing.assert_close(pol.actions[:, -3], torch.as_tensor(a))


def test_policy_value_mode_token_is_value_of_state():
    calls = []

    def value_fn(s: torch.Tensor) -> torch.Tensor:
        calls.append(s.clone())
        return 2.0 * s.sum(-1) + 1.0

    scale = 50.0
    pol = DTPolicy(
        _model(),
        Normalizer.fit(np.random.default_rng(0).normal(size=(100, OBS))),
        ConditioningConfig("value", scale),
        value_fn,
    )
    pol.reset(3)
    rng = np.random.default_rng(1)
    seen = []
    for _ in range(K + 2):  # more steps than the context: the window slides
        obs = rng.normal(size=(3, OBS)).astype(np.float32)
        seen.append(obs)
        pol.act(obs)
        pol.observe(rng.normal(size=3) * 100, np.zeros(3, bool))  # rewards must not matter
    expected = torch.as_tensor(
        np.stack([2.0 * o.sum(-1) + 1.0 for o in seen[-K:]], 1) / scale, dtype=torch.float32
    )
    torch.testing.assert_close(pol.conditioning[..., 0], expected)
    torch.testing.assert_close(calls[-1], torch.as_tensor(seen[-1]))  # value_fn gets raw states
    with pytest.raises(ValueError, match="value_fn"):
        DTPolicy(_model(), Normalizer.identity(OBS), ConditioningConfig("value"))


def test_q_term_moves_actions_toward_higher_q(hopper_transitions):
    target = torch.tensor([0.6, -0.4, 0.2])

    def critic(raw_states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        assert raw_states.shape[-1] == OBS
        return -((actions - target) ** 2).sum(-1)

    norm = Normalizer.fit(hopper_transitions.observations)
    s, a, c, t, m = (x[:, :] for x in _inputs(b=64, seed=5))

    def distance(alpha: float) -> float:
        cfg = SequenceTrainConfig(
            lr=3e-3, warmup_steps=1, batch_size=32, num_updates=60, log_every=0, alpha=alpha
        )
        trainer = SequenceTrainer(
            _model(), _sampler(hopper_transitions, normalizer=norm), cfg, critic=critic, state_normalizer=norm
        )
        trainer.train(progress=False)
        with torch.no_grad():
            pred = trainer.model.eval()(s, a, c, t, m)
        return (pred - target).abs().mean().item()

    d0, d_alpha = distance(0.0), distance(20.0)
    assert d_alpha < 0.5 * d0, (d0, d_alpha)


class _Stop(Exception):
    pass


def test_resume_equals_uninterrupted(hopper_transitions, tmp_path):
    norm = Normalizer.fit(hopper_transitions.observations)
    cfg = SequenceTrainConfig(
        lr=1e-3,
        warmup_steps=4,
        batch_size=8,
        num_updates=12,
        log_every=1,
        checkpoint_every=5,
        ema=0.9,
        seed=3,
    )

    def run(path, log_fn=None):
        return SequenceTrainer(
            _model(seed=7),
            _sampler(hopper_transitions, seed=2, normalizer=norm),
            cfg,
            state_normalizer=norm,
            checkpoint_path=path,
            log_fn=log_fn,
        )

    full = run(tmp_path / "a.pt")
    ref = full.train(progress=False)

    def crash(metrics, step):
        if step == 8:
            raise _Stop

    with pytest.raises(_Stop):
        run(tmp_path / "b.pt", crash).train(progress=False)
    resumed = run(tmp_path / "b.pt")
    resumed.train(progress=False)
    assert resumed.step == 12
    # resume re-ran steps 6..12 from the step-5 checkpoint exactly as the uninterrupted run
    assert [h["step"] for h in resumed.history] == list(range(1, 13))
    np.testing.assert_allclose(
        [h["loss"] for h in resumed.history], [h["loss"] for h in ref["history"]], rtol=1e-6
    )
    for p, q in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    for p, q in zip(full.ema_model.parameters(), resumed.ema_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    # the EMA really differs from the raw weights (so the comparison above is meaningful)
    assert any(
        (p - q).abs().max() > 1e-6
        for p, q in zip(full.model.parameters(), full.ema_model.parameters(), strict=True)
    )
    # a trainer whose checkpoint is complete does nothing more
    again = run(tmp_path / "a.pt")
    assert again.train(progress=False)["step"] == 12


def test_eval_fn_called_and_does_not_change_training(hopper_transitions):
    cfg = SequenceTrainConfig(warmup_steps=2, batch_size=8, num_updates=6, log_every=3, eval_every=3)
    seen = []

    def eval_fn(model, step):
        assert not model.training
        torch.rand(100)  # consumes RNG: must not affect training
        seen.append(step)
        return {"score": float(step)}

    a = SequenceTrainer(_model(), _sampler(hopper_transitions), cfg)
    out = a.train(progress=False, eval_fn=eval_fn)
    b = SequenceTrainer(_model(), _sampler(hopper_transitions), cfg)
    b.train(progress=False)
    assert seen == [3, 6] and [e["score"] for e in out["evals"]] == [3.0, 6.0]
    assert a.model.training
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_policy_in_vectorised_hopper():
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("Hopper-v4") for _ in range(2)])
    obs, _ = envs.reset(seed=0)
    cond = ConditioningConfig("value", 100.0)
    pol = DTPolicy(_model(), Normalizer.identity(OBS), cond, value_fn=lambda s: s.norm(dim=-1))
    pol.reset(2)
    for _ in range(K + 2):
        act = pol.act(obs)
        assert act.shape == envs.action_space.shape and act.dtype == np.float32
        assert np.all(np.abs(act) <= 1.0) and np.isfinite(act).all()
        obs, rew, term, trunc, _ = envs.step(act)
        pol.observe(rew, term | trunc)
    assert int(pol.timesteps[:, -1].min()) >= 0 and pol.mask.sum() > 0
    envs.close()
