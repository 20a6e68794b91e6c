"""Progress: a tqdm bar on a terminal, plain log lines in cluster logs, one summary line per epoch, and
how long the process took to its first training step."""

from __future__ import annotations

import datetime
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

import torch

from zoo.engine.callbacks.base import Callback
from zoo.engine.callbacks.lr_monitor import learning_rates
from zoo.engine.utils import seconds_since_start
from zoo.errors import ConfigError

if TYPE_CHECKING:
    from zoo.engine.trainer import Trainer
    from zoo.tasks.base import Task

log = logging.getLogger("zoo.progress")

#: the first training step of this process has been reported (a multirun's later jobs, a test session's
#: later fits are not start-ups)
_first_step_reported = False


def batch_size(batch: Any) -> int:
    """Samples in a batch: the length of its first tensor (or of its first list, for variable-size images)."""
    if isinstance(batch, torch.Tensor):
        return len(batch)
    if isinstance(batch, (list, tuple)) and batch:
        return batch_size(batch[0]) if isinstance(batch[0], (torch.Tensor, list, tuple)) else len(batch)
    if isinstance(batch, dict) and batch:
        return batch_size(next(iter(batch.values())))
    return 0


def _losses(outputs: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in outputs.items() if k == "loss" or k.startswith("loss/")}


class Progress(Callback):
    """``mode``: ``bar`` (tqdm), ``lines`` (a log line every ``trainer.log_every_n_steps`` optimizer
    steps with epoch, step, loss, learning rate, samples/s and ETA), ``auto`` (bar when stderr is a
    terminal, else lines: ``nohup``, cluster logs), ``none``. Every mode but ``none`` logs one
    summary line per epoch, and once per process the time from its start to the end of the first
    optimizer step (``first training step 3.91 s after process start (fit began at 3.52 s)``: start-up
    cost, imports included). Totals honour the trainer's batch limits. Only rank 0 reports."""

    order = 95

    def __init__(self, mode: str = "auto") -> None:
        if mode not in ("auto", "bar", "lines", "none"):
            raise ConfigError(f"callbacks.progress.mode must be auto, bar, lines or none, got {mode!r}")
        self.mode = mode
        self._bar: Any = None  # the training epoch's tqdm bar ...
        self._eval_bar: Any = None  # ... and the evaluation pass's
        self._t0 = 0.0
        self._batches = 0  # training batches seen since the fit (or the resume) started ...
        self._samples = 0
        self._train_time = 0.0  # ... and the time they took
        self._batch_start = 0.0
        self._fit_began = 0.0  # seconds after the process start
        self._first_step: str | None = None  # its line, while a bar is open

    def _active(self, trainer: Trainer) -> str:
        if self.mode == "none" or not trainer.dist.is_main:
            return "none"
        if self.mode == "auto":
            return "bar" if sys.stderr.isatty() else "lines"
        return self.mode

    def _open(self, trainer: Trainer, total: int, desc: str) -> None:
        self._close()
        if self._active(trainer) == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._log_first_step()

    def on_fit_start(self, trainer: Trainer, task: Task) -> None:
        self._fit_began = seconds_since_start()

    def _report_first_step(self) -> None:
        global _first_step_reported
        _first_step_reported = True
        self._first_step = (f"first training step {seconds_since_start():.2f} s after process start "
                            f"(fit began at {self._fit_began:.2f} s)")
        if self._bar is None:  # under a bar: once the bar has closed
            self._log_first_step()

    def _log_first_step(self) -> None:
        if self._first_step is not None:
            log.info(self._first_step)
            self._first_step = None

    def on_train_epoch_start(self, trainer: Trainer, task: Task) -> None:
        state = trainer.state
        self._open(trainer, state.num_train_batches, f"epoch {state.epoch + 1}/{state.max_epochs}")

    def on_train_batch_start(self, trainer: Trainer, task: Task, batch: Any, batch_idx: int) -> None:
        self._batch_start = time.perf_counter()
        if self._bar is not None and self._bar.n < batch_idx:  # a resumed epoch starts part-way
            self._bar.update(batch_idx - self._bar.n)

    def on_train_batch_end(self, trainer: Trainer, task: Task, outputs: dict[str, Any], batch: Any, batch_idx: int) -> None:
        mode = self._active(trainer)
        if mode == "none":
            return
        state = trainer.state
        if not _first_step_reported and state.stepped and not state.skip_batch:
            self._report_first_step()
        self._train_time += time.perf_counter() - self._batch_start
        self._batches += 1
        self._samples += batch_size(batch)
        log_now = state.stepped and state.global_step % trainer.cfg.log_every_n_steps == 0
        if mode == "bar":
            self._bar.update(1)
            if log_now:
                rates = learning_rates(state.optimizers)
                self._bar.set_postfix({**{k: f"{v:.4f}" for k, v in _losses(outputs).items()},
                                       **{k: f"{v:.2e}" for k, v in list(rates.items())[:2]}}, refresh=False)
        elif log_now:
            log.info(self._line(trainer, outputs, batch_idx))

    def _line(self, trainer: Trainer, outputs: dict[str, Any], batch_idx: int) -> str:
        state = trainer.state
        per_batch = self._train_time / max(self._batches, 1)
        left = (state.max_epochs - state.epoch) * state.num_train_batches - (batch_idx + 1)
        eta = datetime.timedelta(seconds=round(left * per_batch))
        parts = [f"epoch {state.epoch + 1}/{state.max_epochs}", f"batch {batch_idx + 1}/{state.num_train_batches}",
                 f"step {state.global_step}"]
        parts += [f"{k} {v:.4f}" for k, v in _losses(outputs).items()]
        parts += [f"{k} {v:.2e}" for k, v in list(learning_rates(state.optimizers).items())[:1]]
        parts += [f"{self._samples / max(self._train_time, 1e-9):,.0f} samples/s", f"ETA {eta}"]
        return " | ".join(parts)

    def on_eval_start(self, trainer: Trainer, task: Task, stage: str, num_batches: int) -> None:
        if self._active(trainer) == "bar":
            from tqdm.auto import tqdm

            self._eval_bar = tqdm(total=num_batches, desc=stage, leave=False, dynamic_ncols=True)

    def on_eval_batch_end(self, trainer: Trainer, task: Task, stage: str, batch_idx: int) -> None:
        if self._eval_bar is not None:
            self._eval_bar.update(1)

    def on_eval_end(self, trainer: Trainer, task: Task, stage: str) -> None:
        if self._eval_bar is not None:
            self._eval_bar.close()
            self._eval_bar = None

    def on_train_epoch_end(self, trainer: Trainer, task: Task, metrics: dict[str, float]) -> None:
        self._close()
        if self._active(trainer) == "none":
            return
        parts = [f"epoch {int(metrics['epoch']) + 1}/{trainer.state.max_epochs}"]
        parts += [f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith(("train/", "val/"))]
        parts += [f"{k} {v:.2e}" for k, v in metrics.items() if k == "lr" or k.startswith("lr/")]
        parts.append(f"{metrics['time/epoch_s']:.2f}s")
        log.info(" | ".join(parts))

    def teardown(self, trainer: Trainer, task: Task) -> None:
        self._close()
        self.on_eval_end(trainer, task, "")
