"""An exponential moving average of the weights: Polyak averaging (Polyak & Juditsky 1992, "Acceleration
of stochastic approximation by averaging") in its exponential form, as TensorFlow's
``ExponentialMovingAverage`` and timm's ``ModelEma`` keep it.

The average starts as the weights the fit starts with and, every ``every_n_steps`` optimizer steps
(skipped updates do not count), becomes ``decay_k * average + (1 - decay_k) * weights`` with

    decay_k = min(decay, (1 + k) / (10 + k))   with ``warmup`` (k = 1, 2, ...: the update's number)
    decay_k = decay                            without

so early on, while the weights move fast, the average follows them closely. ``buffers: average``
averages the buffers (batch-norm running statistics) the same way; integer buffers (batch counts) are
copied; ``buffers: copy`` copies every buffer from the model at each update. The averaging itself is
:class:`torch.optim.swa_utils.AveragedModel` with :func:`~torch.optim.swa_utils.get_ema_multi_avg_fn`.
What is validated, checkpointed and tested: :mod:`zoo.engine.callbacks.averaging`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from zoo.engine.callbacks.averaging import WeightAveraging
from zoo.errors import ConfigError

if TYPE_CHECKING:
    from zoo.engine.trainer import Trainer
    from zoo.tasks.base import Task

BUFFERS = ("average", "copy")


class EMA(WeightAveraging):
    """Exponential moving average of the weights (Polyak & Juditsky 1992); see the module docstring."""

    default_key = "ema"

    def __init__(self, decay: float = 0.999, warmup: bool = True, every_n_steps: int = 1, buffers: str = "average") -> None:
        super().__init__()
        if not 0 < decay < 1:
            raise ConfigError(f"callbacks.ema.decay must be in (0, 1), e.g. 0.999 (closer to 1: a longer memory), got {decay}")
        if every_n_steps < 1:
            raise ConfigError(f"callbacks.ema.every_n_steps must be >= 1 (optimizer steps between updates), got {every_n_steps}")
        if buffers not in BUFFERS:
            raise ConfigError(f"callbacks.ema.buffers must be one of {', '.join(BUFFERS)}, got {buffers!r}")
        self.decay, self.warmup, self.every_n_steps, self.buffers = float(decay), bool(warmup), every_n_steps, buffers

    def decay_at(self, k: int) -> float:
        """The decay of update ``k`` (1, 2, ...)."""
        return min(self.decay, (1 + k) / (10 + k)) if self.warmup else self.decay

    def build_average(self, model: nn.Module) -> AveragedModel:
        return AveragedModel(model, multi_avg_fn=self._average, use_buffers=self.buffers == "average")

    @torch.no_grad()
    def _average(self, averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: Any) -> None:
        """One update of one group of tensors (one device and dtype); ``n_averaged`` counts the initial copy,
        so it is the update's number ``k``."""
        if not (averaged[0].is_floating_point() or averaged[0].is_complex()):
            for a, c in zip(averaged, current, strict=True):  # counts (num_batches_tracked) are not averaged
                a.copy_(c)
            return
        get_ema_multi_avg_fn(self.decay_at(self.n_averaged))(averaged, current, n_averaged)

    def on_fresh_start(self, trainer: Trainer) -> None:
        self.average_in()  # the first "average" is a copy of the starting weights

    def on_train_batch_end(self, trainer: Trainer, task: Task, outputs: dict[str, Any], batch: Any, batch_idx: int) -> None:
        s = trainer.state
        if s.stepped and not s.skip_batch and s.global_step % self.every_n_steps == 0:
            self.average_in()
