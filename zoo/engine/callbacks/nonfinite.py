"""The non-finite-loss policy: one check of every training loss, before its backward pass."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch

from zoo.engine import distributed
from zoo.engine.callbacks.base import Callback
from zoo.errors import ConfigError, ZooError

if TYPE_CHECKING:
    from zoo.engine.trainer import Trainer
    from zoo.tasks.base import Task

log = logging.getLogger(__name__)


class NonFiniteLossError(ZooError, FloatingPointError):
    """The training loss became NaN or infinite."""


class NonFiniteLoss(Callback):
    """``policy: raise`` stops the run naming the first step whose loss is NaN/inf, before anything
    trained on it is checkpointed; ``policy: skip`` drops such a batch's update on every process and
    counts it (``skipped_steps``).

    ``raise`` costs no synchronisation per step on an accelerator: the first bad step is remembered
    on the device and checked every ``trainer.log_every_n_steps`` steps, at epoch ends and before
    every checkpoint; on the CPU each loss is checked at once.
    """

    order = 10

    def __init__(self, policy: str = "raise") -> None:
        if policy not in ("raise", "skip"):
            raise ConfigError(f"callbacks.nonfinite.policy must be raise or skip, got {policy!r}")
        self.policy = policy
        self._first_bad: torch.Tensor | None = None  # device-side step number, -1 while all are finite

    def on_before_backward(self, trainer: Trainer, task: Task, loss: Any) -> None:
        bad = ~torch.isfinite(loss.detach())
        step = trainer.state.global_step + 1
        if self.policy == "skip":
            if distributed.any_rank(bool(bad), trainer.device):
                trainer.state.skip_batch = True
                log.warning("non-finite loss at step %d (epoch %d, batch %d): update skipped (%d so far)", step,
                            trainer.state.epoch + 1, trainer.state.batch_idx + 1, trainer.state.skipped_steps + 1)
        elif loss.device.type == "cpu":
            if bool(bad):
                self._raise(step)
        else:
            first = self._first_bad if self._first_bad is not None else torch.tensor(-1, device=loss.device)
            self._first_bad = torch.where(bad & (first < 0), torch.tensor(step, device=loss.device), first)

    def check(self) -> None:
        """Raise if a loss seen so far was non-finite (one device synchronisation)."""
        if self._first_bad is not None and int(self._first_bad) >= 0:
            step, self._first_bad = int(self._first_bad), None
            self._raise(step)

    @staticmethod
    def _raise(step: int) -> None:
        raise NonFiniteLossError(
            f"training loss became NaN/inf at step {step}; lower optimizer.lr, set trainer.gradient_clip_val, "
            "set callbacks.nonfinite.policy=skip to drop such updates, or check the data"
        )

    def on_train_batch_end(self, trainer: Trainer, task: Task, outputs: dict[str, Any], batch: Any, batch_idx: int) -> None:
        if trainer.state.stepped and trainer.state.global_step % trainer.cfg.log_every_n_steps == 0:
            self.check()

    def on_train_epoch_end(self, trainer: Trainer, task: Task, metrics: dict[str, float]) -> None:
        self.check()

    def on_save_checkpoint(self, trainer: Trainer, task: Task, checkpoint: dict[str, Any]) -> None:
        self.check()
