"""The trainer's settings (``configs/trainer/``) and the one state object a fit carries.

:class:`TrainerConfig` holds only what the loop itself does; everything a run may add or leave out
(checkpoints, early stopping, progress, signal handling, the non-finite-loss policy) is a callback
configured under ``callbacks.*``. :class:`TrainState` is what callbacks read and the checkpoint
stores: where the run is (epoch, step, batch), the optimizers, schedules and AMP scaler, and the
flags callbacks set to steer the loop (``should_stop``, ``skip_batch``, ``interrupt``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch

from zoo.engine.optim import Schedule
from zoo.errors import ConfigError
from zoo.schema import check_options

#: settings that moved out of ``trainer`` into a callback, and where they live now
MOVED = {
    "checkpoint": "callbacks.checkpoint (e.g. callbacks.checkpoint.every_n_steps=N)",
    "early_stopping": "callbacks.early_stopping (e.g. callbacks.early_stopping.patience=5)",
    "nonfinite": "callbacks.nonfinite.policy (raise | skip)",
    "handle_signals": "callbacks.signals (callbacks.signals=null turns signal handling off)",
    "progress_bar": "callbacks.progress.mode (auto | bar | lines | none)",
}


@dataclass
class TrainerConfig:
    max_epochs: int = 10
    device: str = "auto"
    precision: str = "auto"
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: str = "norm"
    log_every_n_steps: int = 50
    check_val_every_n_epoch: int = 1
    channels_last: bool = False
    compile: bool = False
    deterministic: bool = False
    limit_train_batches: int | float | None = None  # int: batches; float in (0, 1]: a fraction of the loader
    limit_val_batches: int | float | None = None
    limit_test_batches: int | float | None = None
    overfit_batches: int = 0  # N > 0: train and validate on the same first N training batches
    fast_dev_run: bool = False  # one train/val/test batch, no checkpoints, logs or metrics written
    profiler: str | None = None  # torch: a torch.profiler trace of a few steps in <run>/profiler
    cudnn_benchmark: bool = True  # let cuDNN pick the fastest kernels for fixed input shapes (off when deterministic)
    sync_batchnorm: bool = False  # DDP: batch statistics over all processes' shards
    find_unused_parameters: bool = False  # DDP: needed when some parameters skip a step (stochastic depth, drop-path)

    def __post_init__(self) -> None:
        checks = [
            (self.max_epochs >= 1, f"trainer.max_epochs must be >= 1, got {self.max_epochs}"),
            (self.accumulate_grad_batches >= 1, f"trainer.accumulate_grad_batches must be >= 1, got {self.accumulate_grad_batches}"),
            (self.gradient_clip_val is None or self.gradient_clip_val > 0,
             f"trainer.gradient_clip_val must be > 0 or null, got {self.gradient_clip_val}"),
            (self.gradient_clip_algorithm in ("norm", "value"),
             f"trainer.gradient_clip_algorithm must be norm or value, got {self.gradient_clip_algorithm!r}"),
            (self.log_every_n_steps >= 1 and self.check_val_every_n_epoch >= 1,
             "trainer.log_every_n_steps and trainer.check_val_every_n_epoch must be >= 1"),
            (self.overfit_batches >= 0, f"trainer.overfit_batches must be >= 0, got {self.overfit_batches}"),
            (self.profiler in (None, "torch"), f"trainer.profiler must be null or torch, got {self.profiler!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        for name in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < 0 or isinstance(value, float) and value > 1):
                raise ConfigError(f"trainer.{name} must be null, a batch count >= 0 or a fraction in (0, 1], got {value}")

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> TrainerConfig:
        known = {f.name for f in fields(cls)}
        for key in sorted(set(cfg) - known):
            if key in MOVED:
                raise ConfigError(f"trainer.{key} moved to {MOVED[key]}")
            raise ConfigError(f"unknown trainer option {key!r}; known: {', '.join(sorted(known))}")
        check_options("trainer", cfg, cls)
        return cls(**cfg)


def limit_batches(length: int, limit: int | float | None) -> int:
    """How many batches of a loader of ``length`` a limit lets through."""
    if limit is None:
        return length
    if isinstance(limit, float):
        return int(length * limit)
    return min(length, int(limit))


@dataclass
class TrainState:
    """Where a fit is, and what it steps. One per :class:`~zoo.engine.trainer.Trainer`."""

    scaler: torch.amp.GradScaler
    optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)
    schedules: dict[str, Schedule] = field(default_factory=dict)
    max_epochs: int = 1
    epoch: int = 0  # the epoch running (0-based); the first one to run after a resume
    epoch_done: bool = False  # training and validation of ``epoch`` have finished
    global_step: int = 0  # optimizer steps so far
    batch_idx: int = 0  # batches of ``epoch`` done
    num_train_batches: int = 0  # batches per epoch, after limits
    stepped: bool = False  # the last batch ended with an optimizer step (not mid-accumulation)
    sums: dict[str, torch.Tensor] = field(default_factory=dict)  # this epoch's summed step outputs ...
    n: int = 0  # ... over this many batches
    skipped_steps: int = 0
    validated: bool = False  # validation ran in ``epoch``
    val_metrics: dict[str, float] = field(default_factory=dict)  # the latest validation's metrics
    metrics: dict[str, float] = field(default_factory=dict)  # the latest epoch's row
    # set by callbacks to steer the loop
    should_stop: bool = False  # stop after this epoch (early stopping)
    skip_batch: bool = False  # drop this batch's update (set in on_before_backward)
    interrupt: int | None = None  # a signal number: save and stop at the next optimizer step
    last_checkpoint: str | None = None  # the latest last.pt written
