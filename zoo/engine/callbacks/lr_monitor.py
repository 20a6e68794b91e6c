"""Learning rates of every optimizer's parameter groups, logged as scalars."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zoo.engine.callbacks.base import Callback
from zoo.errors import ConfigError

if TYPE_CHECKING:
    from zoo.engine.trainer import Trainer
    from zoo.tasks.base import Task


def learning_rates(optimizers: dict[str, Any]) -> dict[str, float]:
    """``lr`` (one optimizer) or ``lr/<optimizer>`` for each optimizer's first parameter group, and
    ``<that>_pg<i>`` for its other groups (e.g. the no-weight-decay group, per-stage transfer rates); not
    ``lr/pg1``: a name may not be a folder of another in MLflow's file store."""
    rates = {}
    for name, opt in optimizers.items():
        base = "lr" if len(optimizers) == 1 else f"lr/{name}"
        for i, group in enumerate(opt.param_groups):
            rates[base if i == 0 else f"{base}_pg{i}"] = float(group["lr"])
    return rates


class LearningRateMonitor(Callback):
    """Logs the learning rate of every parameter group every ``trainer.log_every_n_steps`` optimizer
    steps (``logging_interval: step``) or once per epoch (``epoch``)."""

    def __init__(self, logging_interval: str = "step") -> None:
        if logging_interval not in ("step", "epoch"):
            raise ConfigError(f"callbacks.lr_monitor.logging_interval must be step or epoch, got {logging_interval!r}")
        self.logging_interval = logging_interval
        self._last_step = -1

    def _log(self, trainer: Trainer) -> None:
        step = trainer.state.global_step
        if step != self._last_step:
            self._last_step = step
            trainer.logger.log_scalars(learning_rates(trainer.state.optimizers), step)

    def on_train_batch_end(self, trainer: Trainer, task: Task, outputs: dict[str, Any], batch: Any, batch_idx: int) -> None:
        state = trainer.state
        if self.logging_interval == "step" and state.stepped and (state.global_step % trainer.cfg.log_every_n_steps == 0
                                                                  or state.global_step == 1):
            self._log(trainer)

    def on_train_epoch_end(self, trainer: Trainer, task: Task, metrics: dict[str, float]) -> None:
        self._log(trainer)
