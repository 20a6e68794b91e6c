"""The non-finite-loss policy: one check of every training loss, before its backward pass."""

from __future__ import annotations

import logging
import math
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
    trained on it is checkpointed; ``policy: skip`` drops such a batch's update on every process,
    puts back the model's buffers its forward pass changed (batch-norm statistics), counts it
    (``skipped_steps``) and sums the epoch's skips up in one warning at its end.

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
        self._buffers: list[tuple[torch.Tensor, torch.Tensor]] = []  # skip: (buffer, its value before the batch)
        self._epoch_start, self._epoch_first = 0, 0  # skip: skipped_steps when the epoch began, its first skipped step

    def on_fit_start(self, trainer: Trainer, task: Task) -> None:
        if self.policy == "skip":
            self._buffers = [(b, b.detach().clone()) for b in task.model.buffers()]

    def on_train_epoch_start(self, trainer: Trainer, task: Task) -> None:
        self._epoch_start, self._epoch_first = trainer.state.skipped_steps, 0

    def on_train_batch_start(self, trainer: Trainer, task: Task, batch: Any, batch_idx: int) -> None:
        for buffer, saved in self._buffers:
            saved.copy_(buffer)

    def on_before_backward(self, trainer: Trainer, task: Task, loss: Any) -> None:
        if self.policy == "raise" and loss.device.type == "cpu":  # the cheapest check: a CPU scalar's value
            if not math.isfinite(loss.item()):
                self._raise(trainer.state.global_step + 1)
            return
        bad = ~torch.isfinite(loss.detach())
        step = trainer.state.global_step + 1
        if self.policy == "skip":
            if distributed.any_rank(bool(bad), trainer.device):
                trainer.state.skip_batch = True
                self._epoch_first = self._epoch_first or step
                with torch.no_grad():  # the forward pass of a NaN batch has already run into the running statistics
                    for buffer, saved in self._buffers:
                        buffer.copy_(saved)
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
        total = trainer.state.skipped_steps
        if total > self._epoch_start:
            log.warning("%d updates skipped in epoch %d (%d so far): non-finite loss, first at step %d",
                        total - self._epoch_start, trainer.state.epoch + 1, total, self._epoch_first)

    def on_save_checkpoint(self, trainer: Trainer, task: Task, checkpoint: dict[str, Any]) -> None:
        self.check()
