"""ipd.training: the one loop (logging windows, evaluation, checkpoints, resume, Ctrl-C, early stop)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ipd import training
from ipd.io import torch_load


class LinearFit:
    """A toy learner: fits w in y = x @ w by SGD on seeded batches (loss must go down)."""

    def __init__(self, seed: int = 0, interrupt_at: int | None = None) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(512, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
        self.w = torch.zeros(4, requires_grad=True)
        self.opt = torch.optim.SGD([self.w], lr=0.05)
        self.rng = np.random.default_rng(seed)
        self.step = 0
        self.interrupt_at = interrupt_at

    def sample(self):
        idx = torch.as_tensor(self.rng.integers(0, 512, 32))
        return self.x[idx], self.y[idx]

    def update(self, batch):
        if self.step == self.interrupt_at:
            raise KeyboardInterrupt
        x, y = batch
        loss = (x @ self.w - y).square().mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.step += 1
        return {"loss": loss.detach()}

    def state_dict(self):
        return {
            "w": self.w.detach().clone(),
            "opt": self.opt.state_dict(),
            "step": self.step,
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state):
        with torch.no_grad():
            self.w.copy_(state["w"])
        self.opt.load_state_dict(state["opt"])
        self.step = state["step"]
        self.rng.bit_generator.state = state["rng"]


def test_logging_windows_evaluation_and_learning_signal():
    learner, logged, evaluated = LinearFit(), [], []
    out = training.run(
        learner,
        learner.sample,
        100,
        stage="toy",
        log_every=30,
        progress=False,
        on_log=lambda s, r: logged.append(s),
        evaluate=evaluated.append,
        eval_every=50,
    )
    assert logged == [30, 60, 90, 100] and evaluated == [50, 100]
    assert [r["step"] for r in out.history] == logged and out.step == 100
    assert out.history[-1]["loss"] < 0.1 * out.history[0]["loss"]  # it learns
    assert out.updates_per_s > 0 and out.last is out.history[-1]


def test_interrupt_saves_state_and_resume_equals_uninterrupted(tmp_path, capsys):
    full = LinearFit()
    training.run(full, full.sample, 80, stage="toy", log_every=10, progress=False)
    state = tmp_path / "state.pt"
    broken = LinearFit(interrupt_at=37)
    with pytest.raises(training.TrainingInterrupted) as info:
        training.run(
            broken,
            broken.sample,
            80,
            stage="toy",
            log_every=10,
            progress=False,
            state_path=state,
            checkpoint_every=25,
        )
    assert str(info.value) == "interrupted in toy at step 37; run the same command to resume (from step 25)"
    assert torch_load(state)["step"] == 25  # the last consistent state, not a half-done step
    resumed = LinearFit()
    assert training.load_state_if_any(resumed, state, "toy") == 25
    assert "toy: resuming from step 25" in capsys.readouterr().out
    training.run(resumed, resumed.sample, 80, stage="toy", log_every=10, progress=False, state_path=state)
    assert torch.equal(resumed.w, full.w) and torch_load(state)["step"] == 80


def test_on_log_can_stop_the_run():
    learner = LinearFit()
    out = training.run(
        learner,
        learner.sample,
        1000,
        stage="toy",
        log_every=20,
        progress=False,
        on_log=lambda step, r: step >= 60,
    )
    assert out.step == 60 and len(out.history) == 3


def test_world_model_resumes_to_the_same_weights(tmp_path, hopper_transitions):
    from ipd.models.world_model import WorldModelConfig
    from ipd.models.world_model_training import train_world_model

    cfg = WorldModelConfig(hidden_dims=(32, 32), ensemble_size=3, num_elites=2, max_epochs=4, batch_size=256)
    ref, ref_metrics = train_world_model(hopper_transitions, cfg, progress=False)
    state = tmp_path / "wm_state.pt"
    short = WorldModelConfig(**{**cfg.__dict__, "max_epochs": 2})
    train_world_model(hopper_transitions, short, progress=False, state_path=state)
    again, metrics = train_world_model(hopper_transitions, cfg, progress=False, state_path=state)
    assert metrics["epochs"] == ref_metrics["epochs"] == 4
    for a, b in zip(ref.parameters(), again.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
