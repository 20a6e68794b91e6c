"""The :class:`Callback` hooks of the trainer, and the monitored-metric bookkeeping callbacks share.

Hooks, in the order a fit calls them (every hook gets the trainer first, then the task)::

    on_fit_start
      per epoch: on_train_epoch_start
        per batch: on_train_batch_start -> per optimizer: on_before_backward -> on_after_backward
                   -> (at an update) on_before_optimizer_step -> on_train_batch_end
        validation: on_eval_start -> on_eval_batch_end ... -> on_eval_end -> on_validation_end
      on_train_epoch_end (after validation, with the epoch's row of metrics)
    on_fit_end (on success) | on_exception (on any error, KeyboardInterrupt included)
    teardown (always)
    on_test_end (after Trainer.test); on_save_checkpoint (whenever a checkpoint is assembled)

An optimizer that evaluates the loss again inside its step (L-BFGS) repeats ``on_before_backward ->
on_after_backward -> on_before_optimizer_step`` for every further evaluation of the batch.

Callbacks read and steer the loop through ``trainer.state`` (:class:`~zoo.engine.state.TrainState`):
``should_stop`` ends the fit after the epoch, ``skip_batch`` (set in ``on_before_backward``) drops
the batch's update, ``interrupt`` saves and stops at the next optimizer step. What ``state_dict``
returns is stored in every checkpoint under ``callbacks[<state_key>]`` and handed back to
``load_state_dict`` on resume, so a callback resumes exactly. Callbacks run in ``order`` (lower
first), then in the order they were given.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zoo.engine.state import TrainerConfig
    from zoo.engine.trainer import Trainer
    from zoo.tasks.base import Task

log = logging.getLogger(__name__)


class Callback:
    """Base class: every hook does nothing; override those you need."""

    #: run position among callbacks: lower first (signal handling 0, non-finite checks 10, default 50, weight averaging 80,
    #: checkpointing 90, progress 95)
    order: int = 50
    #: key of this callback's state in checkpoints; set from the config key by ``build_callbacks``
    state_key: str | None = None

    def on_fit_start(self, trainer: Trainer, task: Task) -> None: ...
    def on_fit_end(self, trainer: Trainer, task: Task) -> None: ...
    def on_exception(self, trainer: Trainer, task: Task, error: BaseException) -> None: ...
    def teardown(self, trainer: Trainer, task: Task) -> None: ...
    def on_train_epoch_start(self, trainer: Trainer, task: Task) -> None: ...
    def on_train_epoch_end(self, trainer: Trainer, task: Task, metrics: dict[str, float]) -> None: ...
    def on_train_batch_start(self, trainer: Trainer, task: Task, batch: Any, batch_idx: int) -> None: ...
    def on_train_batch_end(self, trainer: Trainer, task: Task, outputs: dict[str, Any], batch: Any, batch_idx: int) -> None: ...
    def on_before_backward(self, trainer: Trainer, task: Task, loss: Any) -> None: ...
    def on_after_backward(self, trainer: Trainer, task: Task) -> None: ...
    def on_before_optimizer_step(self, trainer: Trainer, task: Task, optimizer: Any, name: str) -> None: ...
    def on_eval_start(self, trainer: Trainer, task: Task, stage: str, num_batches: int) -> None: ...
    def on_eval_batch_end(self, trainer: Trainer, task: Task, stage: str, batch_idx: int) -> None: ...
    def on_eval_end(self, trainer: Trainer, task: Task, stage: str) -> None: ...
    def on_validation_end(self, trainer: Trainer, task: Task, metrics: dict[str, float]) -> None: ...
    def on_test_end(self, trainer: Trainer, task: Task, metrics: dict[str, float]) -> None: ...
    def on_save_checkpoint(self, trainer: Trainer, task: Task, checkpoint: dict[str, Any]) -> None: ...

    def check_trainer(self, cfg: TrainerConfig) -> None:
        """Refuse options that do not fit the trainer's settings with a :class:`~zoo.errors.ConfigError`;
        the pipeline calls it before a run writes anything, and ``fit`` before it starts."""

    def state_dict(self) -> dict[str, Any]:
        """What to store in checkpoints; empty means nothing (the default)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def summary(self) -> dict[str, Any]:
        """Entries this callback adds to the fit's result (and ``metrics.json``)."""
        return {}


class MetricTracker:
    """Remembers the best value of a monitored metric; ``update`` says whether it improved by ``min_delta``.

    With ``keep_ties`` an equal value also counts as the new best, so among equally scored epochs
    the later, longer-trained one wins (what a best checkpoint should hold on a small, saturated
    validation set); early stopping keeps strict improvement.
    """

    def __init__(self, mode: str = "max", min_delta: float = 0.0, keep_ties: bool = False) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.mode, self.min_delta, self.keep_ties = mode, abs(min_delta), keep_ties
        self.best: float = -math.inf if mode == "max" else math.inf
        self.best_epoch: int = -1

    def improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.keep_ties and value == self.best:
            return True
        return value > self.best + self.min_delta if self.mode == "max" else value < self.best - self.min_delta

    def update(self, value: float, epoch: int) -> bool:
        if self.improves(value):
            self.best, self.best_epoch = value, epoch
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])


#: metric names whose lower values are better, when a ``mode`` is not given
_LOWER_IS_BETTER = ("loss", "err", "nll", "perplexity", "ppl", "fid", "bpd", "time")


class Monitored(Callback):
    """A callback that follows one logged metric: ``monitor`` (null: the task's validation metric,
    ``val/acc`` for classification) in ``mode`` min or max (null: the task's mode for its own metric,
    otherwise min for loss-like names and max for the rest). A monitor that is absent from an
    epoch's metrics once validation has run is a :class:`ConfigError` naming the logged metrics."""

    def __init__(self, monitor: str | None = None, mode: str | None = None) -> None:
        if mode not in (None, "min", "max"):
            from zoo.errors import ConfigError

            raise ConfigError(f"mode must be min, max or null, got {mode!r}")
        self.monitor, self.mode = monitor, mode

    def resolve_monitor(self, trainer: Trainer, task: Task) -> None:
        if self.monitor is None:
            self.monitor = f"{'val' if trainer.has_val else 'train'}/{task.monitor}"
        if self.mode is None:
            own = self.monitor.split("/", 1)[-1] == task.monitor
            name = self.monitor.rsplit("/", 1)[-1].lower()
            self.mode = task.monitor_mode if own else "min" if any(w in name for w in _LOWER_IS_BETTER) else "max"

    def monitored(self, trainer: Trainer, metrics: dict[str, float]) -> float | None:
        """This epoch's value of the monitor; None in an epoch that did not validate a ``val/`` monitor."""
        assert self.monitor is not None
        if self.monitor in metrics:
            return float(metrics[self.monitor])
        if self.monitor.startswith("val/") and not trainer.state.validated:
            return None
        from zoo.errors import ConfigError

        key = f"callbacks.{self.state_key}.monitor" if self.state_key else "monitor"
        logged = ", ".join(k for k in metrics if k != "epoch")
        raise ConfigError(f"{key}={self.monitor} is not a logged metric; logged: {logged}")
