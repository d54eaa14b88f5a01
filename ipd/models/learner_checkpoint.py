"""Checkpoint save/load shared by the flat learners (:class:`ipd.models.value.IQLLearner`,
:class:`ipd.models.bc.BCLearner`): their checkpoints are the weights (or, for resuming, the whole
training state) plus the task metadata that ``scripts/evaluate.py`` reads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import torch

from ipd.io import build_from_checkpoint, load_checkpoint, save_checkpoint, to_cpu


class CheckpointedLearner:
    """Mixin: ``save`` / ``load`` / ``from_checkpoint`` for a learner built as
    ``cls(obs_dim, act_dim, config_cls(**config), device)`` that has ``state_dict`` /
    ``load_state_dict`` (full training state) and ``_weights`` (what a standalone checkpoint holds)."""

    checkpoint_name: ClassVar[str]
    checkpoint_version: ClassVar[int]
    config_cls: ClassVar[type]

    def _weights(self) -> dict[str, Any]:
        raise NotImplementedError

    def _after_load(self) -> None:
        """Hook run on a learner built from a checkpoint (e.g. switch to eval mode)."""

    def save(
        self,
        path: str | os.PathLike,
        task: str | None = None,
        training_state: bool = False,
        eval_task: dict[str, Any] | None = None,
    ) -> Path:
        """Atomically save a versioned checkpoint usable alone by :meth:`load`; returns its path.

        ``task`` and the ``eval_task`` record (``TaskSpec.eval_record()``) tell
        ``scripts/evaluate.py`` where to evaluate; ``training_state=True`` saves the whole training
        state (optimisers, RNGs) so that training can continue from it.
        """
        payload = self.state_dict() if training_state else self._weights()
        meta = {"task": task, "eval_task": eval_task}
        return save_checkpoint(
            path, self.checkpoint_name, self.checkpoint_version, {**to_cpu(payload), **meta}
        )

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu"):
        """Load a checkpoint written by :meth:`save`; raises :class:`ipd.io.CheckpointError`."""
        blob = load_checkpoint(path, cls.checkpoint_name, cls.checkpoint_version, map_location="cpu")
        return cls.from_checkpoint(blob, path, device)

    @classmethod
    def from_checkpoint(
        cls, blob: dict[str, Any], where: str | os.PathLike, device: str | torch.device = "cpu"
    ):
        """Build a learner from an already read and format-checked checkpoint dict."""

        def build():
            learner = cls(blob["obs_dim"], blob["act_dim"], cls.config_cls(**blob["config"]), device)
            learner.load_state_dict(blob)
            return learner

        learner = build_from_checkpoint(build, cls.checkpoint_name, where)
        learner._after_load()
        return learner
