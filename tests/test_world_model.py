"""Ensemble world model: batched layers, uncertainty measures, member selection, training, checkpoints."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from ipd.models.base import ModelStep
from ipd.models.uncertainty import (
    aleatoric_uncertainty,
    disagreement_uncertainty,
    gjs_uncertainty,
    pairwise_gjs,
    uncertainty_quantiles,
    uncertainty_values,
)
from ipd.models.world_model import EnsembleWorldModel, WorldModelConfig
from ipd.models.world_model_training import fit, holdout_size, split_holdout, train_world_model
from ipd.tasks import get_task

HOPPER_TERMINAL = get_task("hopper-medium").is_terminal_torch

TINY = WorldModelConfig(
    ensemble_size=4, num_elites=3, hidden_dims=(64, 64), batch_size=64, max_epochs=15, patience=5, seed=0
)


@pytest.fixture(scope="module")
def fitted(hopper_transitions):
    model, metrics = train_world_model(hopper_transitions, TINY, HOPPER_TERMINAL, progress=False)
    return model, metrics


def _with(model: EnsembleWorldModel, **changes) -> EnsembleWorldModel:
    """A copy of ``model`` with some config fields changed (selection / uncertainty modes)."""
    other = copy.deepcopy(model)
    other.cfg = dataclasses.replace(model.cfg, **changes)
    return other


def _batch(t, n: int, offset: int = 0):
    return torch.as_tensor(t.observations[offset : offset + n]), torch.as_tensor(
        t.actions[offset : offset + n]
    )


def _constant_model(obs_dim: int = 11, act_dim: int = 3, terminal_fn=HOPPER_TERMINAL, **cfg):
    """Untrained model whose member e predicts normalised mean e + 1 everywhere (zero head weights)."""
    c = WorldModelConfig(ensemble_size=4, num_elites=3, hidden_dims=(8,), **cfg)
    model = EnsembleWorldModel(obs_dim, act_dim, c, terminal_fn)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.bias[:, 0, : obs_dim + 1] = torch.arange(1, 5, dtype=torch.float32)[:, None]
        model.elites.copy_(torch.tensor([3, 1, 0]))
    return model


# ----------------------------------------------------------------------------- architecture and shapes
def test_batched_layers_equal_independent_member_mlps():
    model = EnsembleWorldModel(5, 2, WorldModelConfig(ensemble_size=3, num_elites=2, hidden_dims=(16, 16)))
    x = torch.randn(9, 7)
    mean, logvar = model(x)
    for e in range(3):  # reference: member e alone, plain matmuls
        h = x
        for layer in model.layers:
            h = torch.nn.functional.silu(h @ layer.weight[e] + layer.bias[e])
        m, lv = (h @ model.head.weight[e] + model.head.bias[e]).chunk(2, -1)
        lv = model.max_logvar[e] - torch.nn.functional.softplus(model.max_logvar[e] - lv)
        lv = model.min_logvar[e] + torch.nn.functional.softplus(lv - model.min_logvar[e])
        torch.testing.assert_close(mean[e], m)
        torch.testing.assert_close(logvar[e], lv)
    # per-member inputs [E, B, in] take the baddbmm path and give the same result
    mean2, _ = model(x.expand(3, -1, -1).contiguous())
    torch.testing.assert_close(mean, mean2)
    assert (logvar <= model.max_logvar + 1e-6).all() and (logvar >= model.min_logvar - 1e-6).all()


@pytest.mark.parametrize("batch", [1, 7, 300])
def test_predict_step_uncertainty_shapes(fitted, hopper_transitions, batch):
    model, _ = fitted
    s, a = _batch(hopper_transitions, batch)
    mean, var = model.predict(s, a)
    assert mean.shape == var.shape == (4, batch, 12)
    assert (var > 0).all()
    for mode in ("random", "fixed", "mean"):
        out = _with(model, member_selection=mode).step(s, a, torch.Generator().manual_seed(0))
        assert isinstance(out, ModelStep)
        assert out.next_states.shape == (batch, 11) and out.rewards.shape == (batch,)
        assert out.terminals.shape == (batch,) and out.terminals.dtype == torch.bool
        assert out.uncertainty.shape == (batch,) and (out.uncertainty >= 0).all()
    assert model.uncertainty(s, a).shape == (batch,)


def test_config_validation():
    with pytest.raises(ValueError, match="uncertainty must be one of"):
        WorldModelConfig(uncertainty="entropy")
    with pytest.raises(ValueError, match="num_elites"):
        WorldModelConfig(ensemble_size=3, num_elites=5)
    with pytest.raises(ValueError, match="holdout_ratio"):
        WorldModelConfig(holdout_ratio=0.0)
    assert WorldModelConfig(hidden_dims=[32, 32]).hidden_dims == (32, 32)  # yaml lists become tuples


# ----------------------------------------------------------------------------- member selection
def test_member_selection_on_constant_members(hopper_transitions):
    s, a = _batch(hopper_transitions, 200)
    fixed = _constant_model(member_selection="fixed", fixed_elite=1).step(
        s, a
    )  # elites [3, 1, 0] -> member 1
    torch.testing.assert_close(fixed.next_states, s + 2.0)
    torch.testing.assert_close(fixed.rewards, torch.full((200,), 2.0))
    mean = _constant_model(member_selection="mean").step(
        s, a
    )  # average of members 3, 1, 0 -> (4 + 2 + 1) / 3
    torch.testing.assert_close(mean.rewards, torch.full((200,), 7.0 / 3.0))
    rnd = _constant_model(member_selection="random")
    r1 = rnd.step(s, a, torch.Generator().manual_seed(3)).rewards
    r2 = rnd.step(s, a, torch.Generator().manual_seed(3)).rewards
    r3 = rnd.step(s, a, torch.Generator().manual_seed(4)).rewards
    assert torch.equal(r1, r2) and not torch.equal(r1, r3)
    assert set(r1.tolist()) == {4.0, 2.0, 1.0}  # only elites (never member 2 -> 3.0), each used


def test_member_selection_on_trained_model(fitted, hopper_transitions):
    model, _ = fitted
    s, a = _batch(hopper_transitions, 50, offset=100)
    mean, var = model.predict(s, a)
    elites = model.elites
    out = _with(model, member_selection="fixed", fixed_elite=2).step(s, a)
    torch.testing.assert_close(out.next_states, mean[elites[2], :, :11])
    torch.testing.assert_close(out.rewards, mean[elites[2], :, 11])
    out = _with(model, member_selection="mean").step(s, a)
    torch.testing.assert_close(out.next_states, mean[elites].mean(0)[:, :11])
    out = _with(model, member_selection="random").step(s, a, torch.Generator().manual_seed(0))
    diff = (out.next_states[None] - mean[elites, :, :11]).abs().amax(-1)  # [elites, B]
    assert (diff.amin(0) < 1e-5).all()  # every row is one elite's mean
    noisy = _with(model, member_selection="random", sample_noise=True)
    n1 = noisy.step(s, a, torch.Generator().manual_seed(1)).next_states
    n2 = noisy.step(s, a, torch.Generator().manual_seed(1)).next_states
    assert torch.equal(n1, n2)
    assert ((n1[None] - mean[elites, :, :11]).abs().amax(-1).amin(0) > 1e-5).all()  # noise was added


def test_step_computes_only_elites_with_the_same_result(fitted, hopper_transitions):
    model, _ = fitted
    s, a = _batch(hopper_transitions, 64, offset=300)
    for noisy in (False, True):
        m = _with(model, sample_noise=noisy)
        f = _with(model, uncertainty_members="all", sample_noise=noisy)  # forwards every member
        fast, ref = (
            m.step(s, a, torch.Generator().manual_seed(5)),
            f.step(s, a, torch.Generator().manual_seed(5)),
        )
        torch.testing.assert_close(fast.next_states, ref.next_states)
        torch.testing.assert_close(fast.rewards, ref.rewards)
        torch.testing.assert_close(fast.uncertainty, model.uncertainty(s, a))  # U over the elites


# ----------------------------------------------------------------------------- uncertainty measures
def _kl_diag(mp, vp, mq, vq):
    return 0.5 * (torch.log(vq / vp) + (vp + (mp - mq) ** 2) / vq - 1.0)


def test_gjs_matches_geometric_mean_definition():
    g = torch.Generator().manual_seed(0)
    mp, mq = torch.randn(50, 6, generator=g), torch.randn(50, 6, generator=g)
    lp, lq = torch.randn(50, 6, generator=g) * 2, torch.randn(50, 6, generator=g) * 2
    vp, vq = lp.exp(), lq.exp()
    vm = 2.0 / (1 / vp + 1 / vq)  # geometric mean: precision (1/vp + 1/vq) / 2
    mm = vm * (mp / vp + mq / vq) / 2
    expected = 0.5 * _kl_diag(mp, vp, mm, vm) + 0.5 * _kl_diag(mq, vq, mm, vm)
    torch.testing.assert_close(pairwise_gjs(mp, lp, mq, lq), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pairwise_gjs(mp, lp, mq, lq), pairwise_gjs(mq, lq, mp, lp))  # symmetric


def test_gjs_uncertainty_properties():
    g = torch.Generator().manual_seed(0)
    mu, lv = torch.randn(1, 10, 4, generator=g), torch.randn(1, 10, 4, generator=g)
    same = gjs_uncertainty(mu.expand(5, -1, -1), lv.expand(5, -1, -1))
    assert same.shape == (10,) and torch.allclose(same, torch.zeros(10), atol=1e-6)
    spread = torch.linspace(-1, 1, 5)[:, None, None]
    near = gjs_uncertainty(mu + 0.1 * spread, lv.expand(5, -1, -1))
    far = gjs_uncertainty(mu + 0.5 * spread, lv.expand(5, -1, -1))
    assert (near > 0).all() and (far > near).all()
    var_mismatch = gjs_uncertainty(mu.expand(5, -1, -1), lv + spread)  # same means, different variances
    assert (var_mismatch > 0).all()
    # member order does not matter; mean over pairs <= max over pairs
    perm = torch.tensor([3, 0, 4, 1, 2])
    lvs = lv + 0.3 * spread
    torch.testing.assert_close(
        gjs_uncertainty((mu + spread)[perm], lvs[perm]), gjs_uncertainty(mu + spread, lvs)
    )
    assert (
        gjs_uncertainty(mu + spread, lv + spread, "mean") <= gjs_uncertainty(mu + spread, lv + spread)
    ).all()


def test_disagreement_and_aleatoric_properties():
    g = torch.Generator().manual_seed(0)
    mu, lv = torch.randn(1, 8, 3, generator=g), torch.randn(1, 8, 3, generator=g)
    spread = torch.randn(5, 8, 3, generator=g)
    assert torch.allclose(disagreement_uncertainty(mu.expand(5, -1, -1)), torch.zeros(8))
    d1 = disagreement_uncertainty(mu + spread)
    torch.testing.assert_close(disagreement_uncertainty(mu + 2 * spread), 2 * d1)  # linear in the spread
    assert (disagreement_uncertainty(mu + spread, "mean") <= d1 + 1e-6).all()
    lvs = lv + spread
    expected = lvs.mul(0.5).exp().norm(dim=-1).amax(0)
    torch.testing.assert_close(aleatoric_uncertainty(lvs), expected)
    torch.testing.assert_close(aleatoric_uncertainty(lvs + 2 * np.log(3.0)), 3 * expected)  # std scales x3


def test_model_uncertainty_modes_and_members(fitted, hopper_transitions):
    model, _ = fitted
    s, a = _batch(hopper_transitions, 64)
    mean, logvar = model(model.normalize_inputs(s, a))
    el = model.elites
    torch.testing.assert_close(model.uncertainty(s, a), gjs_uncertainty(mean[el], logvar[el]))
    all_members = _with(model, uncertainty_members="all").uncertainty(s, a)
    torch.testing.assert_close(all_members, gjs_uncertainty(mean, logvar))
    dis = _with(model, uncertainty="disagreement").uncertainty(s, a)
    torch.testing.assert_close(dis, disagreement_uncertainty(mean[el]))
    ale = _with(model, uncertainty="aleatoric", uncertainty_reduce="mean").uncertainty(s, a)
    torch.testing.assert_close(ale, aleatoric_uncertainty(logvar[el], "mean"))


def test_uncertainty_quantiles(fitted, hopper_transitions):
    model, _ = fitted
    q = uncertainty_quantiles(model, hopper_transitions, quantiles=(0.5, 0.9, 0.99), batch_size=700)
    assert list(q) == [0.5, 0.9, 0.99]
    assert 0 < q[0.5] <= q[0.9] <= q[0.99]
    s, a = torch.as_tensor(hopper_transitions.observations), torch.as_tensor(hopper_transitions.actions)
    direct = model.uncertainty(s, a).numpy()
    assert q[0.9] == pytest.approx(float(np.quantile(direct, 0.9)), rel=1e-5)
    assert len(uncertainty_values(model, hopper_transitions, max_samples=500)) == 500


# ----------------------------------------------------------------------------- termination
def test_task_termination_applied(hopper_transitions):
    s, a = _batch(hopper_transitions, 20)
    assert (s[:, 0] > 1.0).all()  # healthy start states
    model = _constant_model(member_selection="mean")
    with torch.no_grad():
        model.head.bias.zero_()  # normalised mean 0 -> raw delta = target_mean
        model.target_mean.zero_()
    assert not model.step(s, a).terminals.any()  # no change: stays healthy
    with torch.no_grad():
        model.target_mean[0] = -1.0  # torso height drops by 1 -> below 0.7
    out = model.step(s, a)
    assert out.terminals.all() and (out.next_states[:, 0] < 0.7).all()
    never = _constant_model(terminal_fn=None, member_selection="mean")
    never.load_state_dict(model.state_dict())
    assert not never.step(s, a).terminals.any()


# ----------------------------------------------------------------------------- training
def test_holdout_rule():
    cfg = WorldModelConfig()
    assert holdout_size(3000, cfg) == 600
    assert holdout_size(1_000_000, cfg) == 5000
    train, hold = split_holdout(3000, cfg)
    assert len(hold) == 600 and len(np.intersect1d(train, hold)) == 0 and len(train) + len(hold) == 3000


def test_early_stopping_restores_best_weights():
    """Holdout targets are half the training targets: holdout MSE falls, then rises as the fit improves."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 4, generator=g)
    x_tr, x_ho = torch.randn(512, 4, generator=g), torch.randn(256, 4, generator=g)
    y_tr, y_ho = x_tr @ w, 0.5 * (x_ho @ w)
    cfg = WorldModelConfig(
        ensemble_size=3, num_elites=2, hidden_dims=(32,), batch_size=32, lr=3e-3, max_epochs=40, patience=4
    )
    model = EnsembleWorldModel(3, 1, cfg)
    snapshots = []
    history = fit(
        model, x_tr, y_tr, x_ho, y_ho, progress=False,
        callback=lambda rec: snapshots.append({n: p.detach().clone() for n, p in model.named_parameters()}),
    )  # fmt: skip
    assert history[-1]["stopped_by"] == "patience"
    mse = np.array([h["holdout_mse"] for h in history])  # [epochs, E]
    improved = np.array([h["improved"] for h in history])
    assert (mse[-1] > mse.min(0) * 1.05).all()  # holdout really got worse after the best epoch
    for e in range(3):
        best_epoch = int(np.flatnonzero(improved[:, e])[-1])
        for name, p in model.named_parameters():
            assert torch.equal(p[e], snapshots[best_epoch][name][e]), (e, name)
        assert model.holdout_mse[e].item() == pytest.approx(mse[best_epoch, e], rel=1e-5)
    assert torch.equal(model.elites, torch.argsort(model.holdout_mse)[:2])


def test_fit_beats_no_change_baseline(fitted, hopper_transitions):
    model, metrics = fitted
    assert (
        metrics["n_holdout"] == 600 and metrics["steps"] > 0 and len(metrics["history"]) == metrics["epochs"]
    )
    assert sorted(metrics["elites"]) == sorted(model.elites.tolist())
    assert max(metrics["holdout_mse"][e] for e in metrics["elites"]) <= min(
        v for i, v in enumerate(metrics["holdout_mse"]) if i not in metrics["elites"]
    )
    t = hopper_transitions.subset(split_holdout(len(hopper_transitions), TINY)[1])
    s, a = torch.as_tensor(t.observations), torch.as_tensor(t.actions)
    s2, r = torch.as_tensor(t.next_observations), torch.as_tensor(t.rewards)
    out = _with(model, member_selection="mean").step(s, a)
    model_mse = (out.next_states - s2).square().mean().item()
    baseline = (s - s2).square().mean().item()
    assert model_mse < 0.3 * baseline, (model_mse, baseline)
    assert (out.rewards - r).square().mean().item() < 0.3 * r.var().item()


def test_training_is_deterministic_and_capped(hopper_transitions):
    cfg = dataclasses.replace(TINY, max_steps=25, max_epochs=None)
    m1, met1 = train_world_model(hopper_transitions, cfg, HOPPER_TERMINAL, progress=False)
    m2, met2 = train_world_model(hopper_transitions, cfg, HOPPER_TERMINAL, progress=False)
    m3, _ = train_world_model(
        hopper_transitions, dataclasses.replace(cfg, seed=1), HOPPER_TERMINAL, progress=False
    )
    assert met1["steps"] == 25 and met1["stopped_by"] == "max_steps"
    sd1, sd2, sd3 = m1.state_dict(), m2.state_dict(), m3.state_dict()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    assert met1["holdout_mse"] == met2["holdout_mse"] and met1["elites"] == met2["elites"]
    assert not torch.equal(sd1["head.weight"], sd3["head.weight"])


def test_step_members_is_each_elite_mean_on_its_own_state(fitted, hopper_transitions):
    model, _ = fitted
    s, a = _batch(hopper_transitions, 6)
    k = len(model.elites)
    states = s[None].repeat(k, 1, 1) + 0.01 * torch.arange(k, dtype=torch.float32)[:, None, None]
    nxt, rew, term = model.step_members(states, a)
    assert nxt.shape == (k, 6, 11) and rew.shape == term.shape == (k, 6) and term.dtype == torch.bool
    for i, member in enumerate(model.elites.tolist()):
        mean, _ = model.predict(states[i], a)  # every member on elite i's states
        assert torch.allclose(nxt[i], mean[member, :, :11], atol=1e-5)
        assert torch.allclose(rew[i], mean[member, :, 11], atol=1e-5)
    with pytest.raises(ValueError, match="one state batch per elite"):
        model.step_members(s[None], a)
