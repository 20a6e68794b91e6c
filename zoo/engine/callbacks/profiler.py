"""A torch.profiler trace of a few training steps (``trainer.profiler=torch``).

The trace lands in ``<run>/profiler/`` as ``<host>_<pid>.<time>.pt.trace.json``: a Chrome trace
(open it in ``chrome://tracing`` or https://ui.perfetto.dev) that TensorBoard's PyTorch profiler
plugin also shows (``pip install torch-tb-profiler; tensorboard --logdir <run>/profiler``).
``<run>/profiler/key_averages.txt`` holds the table of the most expensive operators.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from zoo.engine.callbacks.base import Callback
from zoo.errors import ConfigError

if TYPE_CHECKING:
    from zoo.engine.trainer import Trainer
    from zoo.tasks.base import Task

log = logging.getLogger(__name__)


class TorchProfiler(Callback):
    """Profiles training batches: ``wait`` skipped, ``warmup`` traced and dropped, ``active`` recorded."""

    order = 5

    def __init__(self, wait: int = 1, warmup: int = 1, active: int = 3, record_shapes: bool = True,
                 profile_memory: bool = True, with_stack: bool = False) -> None:
        if wait < 0 or warmup < 0 or active < 1:
            raise ConfigError(f"profiler schedule needs wait >= 0, warmup >= 0, active >= 1; got {wait}, {warmup}, {active}")
        self.wait, self.warmup, self.active = wait, warmup, active
        self.options = {"record_shapes": record_shapes, "profile_memory": profile_memory, "with_stack": with_stack}
        self._prof: torch.profiler.profile | None = None
        self._steps = 0
        self.dir: Path | None = None

    def on_fit_start(self, trainer: Trainer, task: Task) -> None:
        if not trainer.dist.is_main or trainer.cfg.fast_dev_run:
            return
        from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

        self.dir = trainer.run_dir / "profiler"
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.device.type == "cuda" else [])
        self._prof = profile(activities=activities, schedule=schedule(wait=self.wait, warmup=self.warmup, active=self.active),
                             on_trace_ready=tensorboard_trace_handler(str(self.dir)), **self.options)
        self._prof.__enter__()
        self._steps = 0

    def on_train_batch_end(self, trainer: Trainer, task: Task, outputs: dict[str, Any], batch: Any, batch_idx: int) -> None:
        if self._prof is None:
            return
        self._prof.step()
        self._steps += 1
        if self._steps >= self.wait + self.warmup + self.active:
            self._finish()

    def _finish(self) -> None:
        prof, self._prof = self._prof, None
        assert prof is not None and self.dir is not None
        prof.__exit__(None, None, None)
        try:
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)
        except Exception:  # noqa: BLE001 - no recorded events (a fit shorter than the schedule)
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "key_averages.txt").write_text(table + "\n")
        log.info("profiler: trace of %d steps in %s", self.active, self.dir)

    def teardown(self, trainer: Trainer, task: Task) -> None:
        if self._prof is not None:
            self._finish()
