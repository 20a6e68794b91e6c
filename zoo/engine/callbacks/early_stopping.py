"""Early stopping: end the fit once a monitored metric has stopped improving."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from zoo.engine.callbacks.base import MetricTracker, Monitored
from zoo.errors import ConfigError

if TYPE_CHECKING:
    from zoo.engine.trainer import Trainer
    from zoo.tasks.base import Task

log = logging.getLogger(__name__)


class EarlyStopping(Monitored):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` validated
    epochs (``patience: null`` switches it off). Epochs without validation do not count."""

    def __init__(self, monitor: str | None = None, mode: str | None = None, patience: int | None = None,
                 min_delta: float = 0.0) -> None:
        super().__init__(monitor, mode)
        if patience is not None and patience < 1:
            raise ConfigError(f"callbacks.early_stopping.patience must be >= 1 or null, got {patience}")
        self.patience, self.min_delta = patience, float(min_delta)
        self.tracker: MetricTracker | None = None
        self.bad_epochs = 0
        self.stopped_epoch: int | None = None
        self._restored: dict[str, Any] | None = None

    def on_fit_start(self, trainer: Trainer, task: Task) -> None:
        explicit = self.monitor is not None
        self.resolve_monitor(trainer, task)
        if self.patience is None:
            if explicit:
                log.warning("callbacks.early_stopping.monitor=%s is set but patience is null: early stopping is off", self.monitor)
            return
        assert self.mode is not None
        self.tracker = MetricTracker(self.mode, self.min_delta)
        if self._restored:
            self.tracker.load_state_dict(self._restored["tracker"])
            self.bad_epochs = int(self._restored["bad_epochs"])

    def on_train_epoch_end(self, trainer: Trainer, task: Task, metrics: dict[str, float]) -> None:
        value = self.monitored(trainer, metrics)  # an unknown monitor is an error even while stopping is off
        if value is None or self.tracker is None:
            return
        self.bad_epochs = 0 if self.tracker.update(value, trainer.state.epoch) else self.bad_epochs + 1
        if self.bad_epochs >= self.patience:  # type: ignore[operator]
            trainer.state.should_stop = True
            self.stopped_epoch = trainer.state.epoch + 1  # completed epochs, as best_epoch and epoch=N
            log.info("early stopping: %s did not improve for %d epochs (best %.4f at epoch %d)",
                     self.monitor, self.bad_epochs, self.tracker.best, self.tracker.best_epoch + 1)

    def state_dict(self) -> dict[str, Any]:
        if self.tracker is None:
            return {}
        return {"monitor": self.monitor, "tracker": self.tracker.state_dict(), "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._restored = state if state.get("monitor") in (None, self.monitor) or self.monitor is None else None
        if self._restored and self.monitor is None:
            self.monitor = state.get("monitor")

    def summary(self) -> dict[str, Any]:
        return {"stopped_epoch": self.stopped_epoch} if self.stopped_epoch is not None else {}
