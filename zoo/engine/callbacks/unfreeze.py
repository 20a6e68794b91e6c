"""Transfer learning's gradual unfreezing as a callback (``transfer.gradual_unfreeze=k``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zoo.engine.callbacks.base import Callback

if TYPE_CHECKING:
    from zoo.engine.trainer import Trainer
    from zoo.tasks.base import Task
    from zoo.transfer import TransferPolicy


class Unfreeze(Callback):
    """Before each training epoch, sets the trainable stages of ``policy`` for that epoch. The effect
    depends only on the epoch, so a resumed run (mid-epoch too) trains the same stages; the trainer
    rebuilds a DistributedDataParallel wrapper when the trainable set changes.

    The run adds it itself when ``transfer`` is not ``none`` (it needs the run's policy), so it is not
    in ``configs/callbacks/``."""

    def __init__(self, policy: TransferPolicy) -> None:
        self.policy = policy

    def on_train_epoch_start(self, trainer: Trainer, task: Task) -> None:
        self.policy.set_epoch(trainer.state.epoch)
