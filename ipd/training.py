"""The one training loop: steps, logging, the progress bar, periodic evaluation, checkpoints,
resume and interruption, for every learner (IQL, BC, the Decision Transformer, the value head and
the world model).

A learner is anything with (the shape of CORL's ``ImplicitQLearning.train(batch)``)::

    step: int                                  # updates done so far
    update(batch) -> dict[str, Tensor | float] # one gradient step (increments step); metrics may
                                               # stay on the device: the loop syncs only to log
    state_dict() / load_state_dict(state)      # the whole training state (weights, optimisers, RNGs)

:func:`run` calls ``update(sample())`` until ``learner.step == total``. Every ``log_every`` updates
(and after the last) it averages the metrics since the last log, adds ``updates_per_s``, appends
the record to the history and calls ``on_log(step, record)`` (which may add keys to it, and stops
the run by returning True); every ``eval_every`` updates (and after the last) ``evaluate(step)``;
every ``checkpoint_every`` updates (and after the last) it writes ``learner.state_dict()``
atomically to ``state_path``. With ``state_path`` set, a run that finds a state there resumes from
it (and says so). Ctrl-C raises :class:`TrainingInterrupted`, whose one-line message says where
the run stopped and that the same command resumes it from the last saved state (a state written
mid-update would not be consistent, so none is written then).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from ipd.io import atomic_write, read_state


class Learner(Protocol):
    step: int

    def update(self, batch: Any) -> Mapping[str, torch.Tensor | float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training. ``resume_step``: the step of the last saved state (None: none saved)."""

    def __init__(self, stage: str, step: int, resume_step: int | None) -> None:
        self.stage, self.step, self.resume_step = stage, step, resume_step
        where = f"from step {resume_step}" if resume_step else "from the start"
        super().__init__(f"interrupted in {stage} at step {step}; run the same command to resume ({where})")


@dataclass
class LoopResult:
    step: int
    history: list[dict[str, Any]] = field(default_factory=list)
    last: dict[str, float] = field(default_factory=dict)  # the last logged record
    updates_per_s: float = 0.0
    wall_time_s: float = 0.0


def metrics_of(record: dict[str, Any]) -> dict[str, Any]:
    """A logged record without its ``step`` key: what callbacks and loggers take as metrics."""
    return {k: v for k, v in record.items() if k != "step"}


def load_state_if_any(learner: Learner, state_path: str | os.PathLike | None, stage: str,
                      map_location: str | torch.device = "cpu") -> int | None:  # fmt: skip
    """Resume ``learner`` from ``state_path`` if the file exists; returns the step resumed at."""
    if state_path is None or not Path(state_path).is_file():
        return None
    learner.load_state_dict(read_state(state_path, map_location))
    print(f"[ipd] {stage}: resuming from step {learner.step} ({state_path})")
    return learner.step


def save_state(learner: Learner, state_path: str | os.PathLike) -> None:
    atomic_write(state_path, lambda tmp: torch.save(learner.state_dict(), tmp))


def _due(step: int, every: int, last: bool) -> bool:
    return last or (every > 0 and step % every == 0)


def run(
    learner: Learner,
    sample: Callable[[], Any],
    total: int,
    *,
    stage: str,
    log_every: int,
    progress: bool = True,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    evaluate: Callable[[int], Any] | None = None,
    eval_every: int = 0,
    state_path: str | os.PathLike | None = None,
    checkpoint_every: int = 0,
    should_stop: Callable[[], bool] | None = None,
    postfix: Callable[[dict[str, float]], dict[str, str]] | None = None,
    history: list[dict[str, Any]] | None = None,
) -> LoopResult:
    """Train ``learner`` until ``learner.step == total`` (see the module docstring).

    ``should_stop()`` is asked after every update (e.g. a time limit or early stopping); a stop
    counts as the last update (log, evaluation and checkpoint run). ``history`` continues a
    record list kept by the learner across resumes.
    """
    t0 = time.perf_counter()
    result = LoopResult(step=learner.step, history=history if history is not None else [])
    s0 = learner.step
    sums: dict[str, Any] = {}  # running sums: tensors stay on the device, no sync per step
    saved_step = learner.step if state_path is not None and Path(state_path).is_file() else None
    t_win, s_win = t0, learner.step
    try:
        with tqdm(total=total, initial=min(learner.step, total), disable=not progress, desc=stage,
                  dynamic_ncols=True) as bar:  # fmt: skip
            while learner.step < total:
                metrics = learner.update(sample())
                for key, value in metrics.items():
                    sums[key] = sums[key] + value if key in sums else value
                bar.update(1)
                step = learner.step
                last = step >= total or (should_stop is not None and should_stop())
                if _due(step, log_every, last):
                    now = time.perf_counter()
                    n = max(step - s_win, 1)
                    record = {"step": step, **{k: float(v) / n for k, v in sums.items()}}
                    record["updates_per_s"] = (step - s_win) / max(now - t_win, 1e-9)
                    sums, t_win, s_win = {}, now, step
                    result.history.append(record)
                    result.last = record
                    # on_log may add to the record (it is the history's entry) and stop the run
                    if on_log is not None and on_log(step, record) is True:
                        last = True
                    if postfix is not None:
                        bar.set_postfix(postfix(record))
                if evaluate is not None and _due(step, eval_every, last):
                    evaluate(step)
                if state_path is not None and _due(step, checkpoint_every, last):
                    save_state(learner, state_path)
                    saved_step = step
                if last:
                    break
    except KeyboardInterrupt as exc:
        # No save here: Ctrl-C may land inside an optimiser step or after a batch was drawn, so only
        # the periodic states are consistent; the run resumes from the last one.
        if isinstance(exc, TrainingInterrupted):
            raise
        raise TrainingInterrupted(stage, learner.step, saved_step) from None
    result.step = learner.step
    result.wall_time_s = time.perf_counter() - t0
    result.updates_per_s = (learner.step - s0) / max(result.wall_time_s, 1e-9)
    return result
