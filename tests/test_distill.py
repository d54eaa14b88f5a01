"""Stage 3 without Hydra: the value token G_t, the expectile inference head, window sampling, the
Q-term's action shift, and distill_policy end to end on tiny data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ipd.data import SequenceSampler, Trajectories, Transitions
from ipd.distill import DistillConfig, distill_policy, imagined_token_share
from ipd.models.policies import load_policy
from ipd.models.sequence_trainer import SequenceTrainConfig, SequenceTrainer
from ipd.models.transformer import DecisionTransformer, DTConfig
from ipd.models.value import IQLConfig, IQLLearner
from ipd.models.value_head import ValueHeadConfig, fit_value_head
from ipd.tokens import (
    conditioning_tokens,
    data_bootstrap,
    token_encoding,
    value_returns_to_go,
    window_sampling,
)


class ConstValue:
    """Stands in for the IQL learner: V(s) = 100 for every state."""

    def value(self, s):
        return np.full(len(s), 100.0, np.float32)


def hand_made() -> Transitions:
    """Three segments: a timeout (3 steps), a terminal (2 steps), an imagined tail (2 steps)."""
    n = 7
    obs = np.arange(n, dtype=np.float32)[:, None]
    rewards = np.array([1, 2, 3, 4, 5, 6, 7], np.float32)
    terminals = np.array([0, 0, 0, 0, 1, 0, 0], bool)
    timeouts = np.array([0, 0, 1, 0, 0, 0, 1], bool)  # the imagined continuation ends by truncation
    extras = {
        "imagined": np.array([0, 0, 0, 0, 0, 1, 1], bool),
        "start_index": np.array([-1, -1, -1, -1, -1, 9, 9]),
        "value": np.full(n, 100.0, np.float32),
        "timestep": np.array([0, 1, 2, 0, 1, 9, 10]),
    }
    return Transitions(obs, np.zeros((n, 1)), rewards, obs + 1, terminals, timeouts, extras)


def test_value_token_is_the_bootstrapped_return_of_each_segment():
    g = 0.5
    traj = Trajectories.from_transitions(hand_made())
    tokens = value_returns_to_go(traj, ConstValue(), g)
    # timeout segment: bootstrap with V(s_T) = 100
    assert tokens[2] == pytest.approx(3 + g * 100)
    assert tokens[0] == pytest.approx(1 + g * 2 + g**2 * 3 + g**3 * 100)
    # terminal segment: no bootstrap
    assert tokens[3] == pytest.approx(4 + g * 5) and tokens[4] == pytest.approx(5)
    # imagined tail: bootstrapped at its end like a timeout
    assert tokens[5] == pytest.approx(6 + g * 7 + g**2 * 100)
    # token_gamma None: the critic's gamma
    np.testing.assert_allclose(conditioning_tokens(traj, "value", ConstValue(), g, None), tokens)
    # the old behaviour: V(s_t) everywhere, whatever happens afterwards
    sv = conditioning_tokens(traj, "state_value", ConstValue(), g)
    np.testing.assert_allclose(sv, 100.0)


def test_window_sampling_gives_stitched_trajectories_their_share():
    traj = Trajectories.from_transitions(hand_made())
    probs, weights = window_sampling(traj, 0.25)
    stitched = traj.transitions.extras["start_index"][traj.starts] >= 0
    assert probs[stitched].sum() == pytest.approx(0.25) and probs.sum() == pytest.approx(1.0)
    assert (weights == 1).all()  # no copied prefix in this data
    sampler = SequenceSampler(traj, 2, row_weights=weights, trajectory_probs=probs, seed=0)
    share = imagined_token_share(sampler, batches=400)
    assert 0.15 < share < 0.35
    assert window_sampling(traj, None)[0] is None


def test_copied_prefix_rows_are_context_only():
    t = hand_made()
    t.extras["start_index"][3:5] = 9  # pretend the terminal segment is a copied prefix
    t.extras["timestep"][3:5] = [7, 8]
    _, weights = window_sampling(Trajectories.from_transitions(t), 0.2)
    assert weights.tolist() == [1, 1, 1, 0, 0, 1, 1]


def test_expectile_head_predicts_the_upper_expectile_per_state():
    rng = np.random.default_rng(0)
    states = rng.integers(0, 2, size=(4000, 1)).astype(np.float32)
    targets = np.where(states[:, 0] > 0, 100.0, 10.0) + rng.normal(0, 5, 4000)  # two state groups
    cfg = ValueHeadConfig(expectile=0.9, hidden_dims=(32,), num_updates=1500, seed=0)
    head, metrics = fit_value_head(states, targets.astype(np.float32), cfg, progress=False)
    out = head(torch.tensor([[0.0], [1.0]])).numpy()
    z90 = 0.8626  # the 0.9-expectile of a standard normal (above the mean, below the 90% quantile)
    np.testing.assert_allclose(out, [10 + 5 * z90, 100 + 5 * z90], atol=1.5)
    mean_head, _ = fit_value_head(
        states, targets.astype(np.float32), ValueHeadConfig(0.5, (32,), num_updates=1500)
    )
    assert (mean_head(torch.tensor([[0.0], [1.0]])).numpy() < out).all()
    again, _ = fit_value_head(states, targets.astype(np.float32), cfg, progress=False)
    torch.testing.assert_close(again(torch.tensor([[1.0]])), head(torch.tensor([[1.0]])))
    assert metrics["head_loss"] > 0


def test_q_action_shift_is_reported_and_scales_with_alpha(hopper_transitions):
    t = hopper_transitions
    iql = IQLLearner(t.obs_dim, t.act_dim, IQLConfig(hidden_dims=(32,), num_updates=50, log_every=50))
    iql.fit(t, progress=False)
    traj = Trajectories.from_transitions(t)
    sampler = SequenceSampler(traj, 4, seed=0)
    shifts = []
    for alpha in (1.0, 3.0):
        torch.manual_seed(0)
        model = DecisionTransformer(t.obs_dim, t.act_dim, DTConfig(embed_dim=16, n_layers=1, context=4))
        trainer = SequenceTrainer(model, sampler, SequenceTrainConfig(alpha=alpha), critic=iql.q_torch)
        batch = trainer.batch_to_tensors(SequenceSampler(traj, 4, seed=1).sample(32))
        _, metrics = trainer.compute_loss(batch)
        shifts.append(float(metrics["q_action_shift"]))
    assert shifts[0] > 0 and shifts[1] == pytest.approx(3 * shifts[0], rel=1e-4)


@pytest.mark.parametrize(
    "condition, inference_value, timed, bootstrap",
    [
        ("value", "expectile", False, "iql"),
        ("value", "expectile", True, "iql"),
        ("value", "iql", False, "iql"),
        ("value", "expectile", False, "data"),
        ("state_value", "expectile", False, "iql"),
    ],
)
def test_distill_policy_end_to_end_and_checkpoint(
    hopper_transitions, tmp_path, condition, inference_value, timed, bootstrap
):
    t = hopper_transitions
    iql = IQLLearner(t.obs_dim, t.act_dim, IQLConfig(hidden_dims=(32,), num_updates=50, log_every=50))
    iql.fit(t, progress=False)
    # the IQL V is on the critic's scale, so it serves only tokens with the critic's gamma
    token_gamma = None if inference_value == "iql" else 1.0
    cfg = DistillConfig(
        condition,
        inference_value,
        token_gamma=token_gamma,
        token_head_updates=200,
        token_head_time=timed,
        token_bootstrap=bootstrap,
    )
    result = distill_policy(
        t,
        iql,
        DTConfig(embed_dim=16, n_layers=1, context=4),
        SequenceTrainConfig(num_updates=20, warmup_steps=5, batch_size=8, log_every=10, alpha=1.0),
        cfg,
        gamma=0.99,
        checkpoint_dir=tmp_path,
        progress=False,
    )
    assert result.metrics["step"] == 20 and "inference_token_mean" in result.metrics
    assert ("head_loss" in result.metrics) == (condition == "value" and inference_value == "expectile")
    assert result.metrics["imagined_token_share"] == 0.0  # no imagined data here
    assert ("bootstrap_head_loss" in result.metrics) == (bootstrap == "data")
    path = result.save(tmp_path / "policy.pt", extra={"task": "hopper-medium"})
    loaded = load_policy(path).policy
    obs = t.observations[:3]
    args = (torch.as_tensor(obs),) + ((torch.tensor([0, 500, 999]),) if timed else ())
    expected = result.value_fn(*args)
    torch.testing.assert_close(loaded.value_fn(*args), expected)
    assert getattr(loaded.value_fn, "takes_timestep", False) == timed
    loaded.reset(3)
    assert loaded.act(obs).shape == (3, t.act_dim)
    if timed:  # the policy asks the head for V*(s_t, t) with each env's own step index
        loaded.observe(np.zeros(3), np.zeros(3, bool))
        loaded.act(obs)
        enc = loaded.cond.encode(loaded.value_fn(torch.as_tensor(obs), torch.ones(3, dtype=torch.long)))
        torch.testing.assert_close(loaded.conditioning[:, -1, 0], enc)
    with pytest.raises(ValueError, match="needs the stage-1 value"):
        distill_policy(t, None, DTConfig(context=4), SequenceTrainConfig(num_updates=1), cfg)
    with pytest.raises(ValueError, match="condition must be one of"):
        DistillConfig(condition="value_token")


def test_value_tokens_are_standardised_and_rtg_tokens_scaled():
    tokens = np.array([100.0, 200.0, 300.0], np.float32)
    enc = token_encoding(tokens, "value", "standardise", 1000.0, None)
    np.testing.assert_allclose(enc.encode(tokens), (tokens - 200.0) / np.std(tokens), rtol=1e-6)
    assert enc.mode == "value"
    rtg = token_encoding(tokens, "rtg", "standardise", 1000.0, 3600.0)
    assert (rtg.offset, rtg.scale, rtg.target_return) == (0.0, 1000.0, 3600.0)
    # token_scale=return_scale: value tokens get DT's encoding, still read as V*(s_t) at test time
    dt_like = token_encoding(tokens, "value", "return_scale", 1000.0, None)
    np.testing.assert_allclose(dt_like.encode(tokens), tokens / 1000.0, rtol=1e-6)
    assert dt_like.mode == "value" and dt_like.offset == 0.0
    with pytest.raises(ValueError, match="token_scale must be one of"):
        DistillConfig(token_scale="minmax")


def test_undiscounted_value_token_converts_the_bootstrap_to_the_time_left():
    g = 0.5
    traj = Trajectories.from_transitions(hand_made())
    tokens = value_returns_to_go(traj, ConstValue(), g, token_gamma=1.0, episode_steps=1000)

    def tail(t_last: int) -> float:  # V = 100 read as a reward rate over the steps left, summed
        left = 1000 - (t_last + 1)
        return 100 * (1 - g) / (1 - g**left) * left

    assert tokens[2] == pytest.approx(3 + tail(2), rel=1e-5)
    assert tokens[0] == pytest.approx(1 + 2 + 3 + tail(2), rel=1e-5)
    assert tokens[3] == pytest.approx(4 + 5)  # terminal: no bootstrap, undiscounted sum
    assert tokens[5] == pytest.approx(6 + 7 + tail(10), rel=1e-5)
    # at the time limit nothing is left to bootstrap
    at_limit = value_returns_to_go(traj, ConstValue(), g, token_gamma=1.0, episode_steps=3)
    assert at_limit[2] == pytest.approx(3.0)
    same = value_returns_to_go(traj, ConstValue(), g, token_gamma=g)
    np.testing.assert_allclose(same, value_returns_to_go(traj, ConstValue(), g))


def test_data_bootstrap_replaces_the_iql_value_at_continuing_segment_ends():
    traj = Trajectories.from_transitions(hand_made())
    calls = {}

    def bootstrap(states, steps):  # token units already: added as is, no rate conversion
        calls["steps"] = steps
        return np.full(len(states), 50.0)

    tokens = value_returns_to_go(
        traj, ConstValue(), 0.5, token_gamma=1.0, episode_steps=1000, bootstrap=bootstrap
    )
    assert tokens[2] == pytest.approx(3 + 50) and tokens[0] == pytest.approx(1 + 2 + 3 + 50)
    assert tokens[3] == pytest.approx(4 + 5)  # terminal: no bootstrap
    assert tokens[5] == pytest.approx(6 + 7 + 50)  # the imagined tail ends at step 10
    np.testing.assert_array_equal(calls["steps"], [3, 11])  # the step of s_T, the next state
    at_limit = value_returns_to_go(traj, ConstValue(), 0.5, 1.0, episode_steps=3, bootstrap=bootstrap)
    assert at_limit[2] == pytest.approx(3.0)  # no steps left: nothing to add
    with pytest.raises(ValueError, match="token_bootstrap must be one of"):
        DistillConfig(token_bootstrap="critic")


def test_data_bootstrap_fits_the_original_episodes_returns_not_the_imagined_ones():
    # original episodes: return-to-go 10 * (steps left); stitched rows claim 1000 per step
    n_ep, length = 20, 10
    steps = np.tile(np.arange(length), n_ep)
    obs = np.stack([steps / length, np.zeros_like(steps, dtype=float)], 1).astype(np.float32)
    rewards = np.full(len(steps), 10.0, np.float32)
    timeouts = steps == length - 1
    orig = Transitions(obs, np.zeros((len(steps), 1)), rewards, obs, np.zeros(len(steps), bool), timeouts)
    k = 5  # one stitched trajectory of imagined rows with huge rewards
    imag = Transitions(
        obs[:k],
        np.zeros((k, 1)),
        np.full(k, 1000.0, np.float32),
        obs[:k],
        np.zeros(k, bool),
        np.eye(k)[-1] > 0,
    )
    data = Transitions.concatenate([orig, imag])
    data.extras.update(
        start_index=np.r_[np.full(len(steps), -1), np.zeros(k, int)],
        imagined=np.r_[np.zeros(len(steps), bool), np.ones(k, bool)],
        timestep=np.r_[steps, np.arange(k)],
    )
    traj = Trajectories.from_transitions(data)
    fn, metrics = data_bootstrap(traj, 1.0, 0.5, episode_steps=length, num_updates=1500)
    pred = fn(obs[:length], steps[:length])
    np.testing.assert_allclose(pred, 10.0 * (length - steps[:length]), atol=8.0)
    assert "bootstrap_head_loss" in metrics


def test_timed_value_head_learns_what_the_state_alone_cannot_and_round_trips(tmp_path):
    """Targets that depend only on the step (as undiscounted returns-to-go of running episodes do):
    the V*(s, t) head fits them, the state-only head cannot; the head saves and loads by itself, and
    a state-only reader refuses it by name."""
    from ipd.io import CheckpointError, torch_load
    from ipd.models.value_head import TimedValue, value_from_state_dict
    from ipd.models.value_networks import IQLValue

    rng = np.random.default_rng(0)
    steps = rng.integers(0, 1000, 4096)
    states = rng.normal(size=(4096, 3)).astype(np.float32)  # carry no information about t
    targets = (1000 - steps).astype(np.float32) * 3.0
    cfg = ValueHeadConfig(expectile=0.5, num_updates=1500, seed=0)
    timed, _ = fit_value_head(states, targets, cfg, progress=False, timesteps=steps, max_timestep=1000)
    plain, _ = fit_value_head(states, targets, cfg, progress=False)
    assert isinstance(timed, TimedValue) and not isinstance(plain, TimedValue)
    err_timed = np.abs(timed(torch.as_tensor(states), torch.as_tensor(steps)).numpy() - targets).mean()
    err_plain = np.abs(plain(torch.as_tensor(states)).numpy() - targets).mean()
    assert err_timed < 0.2 * err_plain, (err_timed, err_plain)
    state = timed.state_dict()
    torch.save(state, tmp_path / "head.pt")
    back = value_from_state_dict(torch_load(tmp_path / "head.pt"))
    x, t = torch.as_tensor(states[:5]), torch.as_tensor(steps[:5])
    torch.testing.assert_close(back(x, t), timed(x, t))
    with pytest.raises(ValueError, match="episode step"):
        back(x)
    with pytest.raises(CheckpointError, match="ipd.timed_value"):
        IQLValue.from_state_dict(state)
    with pytest.raises(ValueError, match="one timestep per state"):
        fit_value_head(states, targets, cfg, progress=False, timesteps=steps[:10])
