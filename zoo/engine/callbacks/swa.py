"""Stochastic weight averaging (Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima and Better
Generalization"), with :mod:`torch.optim.swa_utils`.

The run trains as configured until epoch ``swa_start`` (counted from 1; a float in (0, 1) is a fraction
of ``trainer.max_epochs``: ``0.75`` of 20 epochs begins the phase with epoch 16). From then on:

* the rate is :class:`~torch.optim.swa_utils.SWALR`'s: it anneals each parameter group from the rate
  the schedule had reached to ``swa_lr`` (times the group's ``lr_mult``; null: the rate reached, kept
  constant) over ``anneal_epochs`` epochs (``cos`` or ``linear``), stepped after each epoch. The
  trainer's own schedule is paused (:attr:`~zoo.engine.optim.Schedule.paused`): neither its per-step
  nor its per-epoch (plateau) stepping touches the rate again;
* the weights at the end of every epoch of the phase enter an equal-weight running mean
  (:class:`~torch.optim.swa_utils.AveragedModel`); its buffers follow the model's, then
  the batch-norm statistics of the averaged weights are recomputed in one pass over the training loader,
  as :func:`~torch.optim.swa_utils.update_bn` does but through the task's training forward (the epoch's
  batches, without gradients, on the trainer's device and memory format; every random generator is left as it was, so exact resume
  holds; under DDP each process passes over its shard and the statistics are averaged over processes).

This happens before the epoch's validation, so validation, the checkpoints' ``model`` (``best.pt``),
the final test and ``evaluate.py`` score the averaged, batch-norm-updated weights of the epochs so far
(:mod:`zoo.engine.callbacks.averaging`). Before the phase nothing changes.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim.swa_utils import SWALR, AveragedModel

from zoo.engine import distributed
from zoo.engine.callbacks.averaging import WeightAveraging
from zoo.engine.checkpoint import capture_rng_state, restore_rng_state
from zoo.engine.utils import to_device
from zoo.errors import ConfigError

if TYPE_CHECKING:
    from zoo.engine.state import TrainerConfig
    from zoo.engine.trainer import Trainer
    from zoo.tasks.base import Task

log = logging.getLogger(__name__)

STRATEGIES = ("cos", "linear")


class SWA(WeightAveraging):
    """Stochastic weight averaging (Izmailov et al. 2018); see the module docstring."""

    default_key = "swa"

    def __init__(self, swa_start: int | float = 0.75, swa_lr: float | None = None, anneal_epochs: int = 0,
                 anneal_strategy: str = "cos") -> None:
        super().__init__()
        if isinstance(swa_start, bool) or not (isinstance(swa_start, int) and swa_start >= 1
                                               or isinstance(swa_start, float) and 0 < swa_start < 1):
            raise ConfigError(f"callbacks.swa.swa_start must be the epoch the averaging begins with (an integer >= 1) or a "
                              f"fraction of trainer.max_epochs in (0, 1) such as 0.75, got {swa_start!r}")
        if swa_lr is not None and not swa_lr > 0:
            raise ConfigError(f"callbacks.swa.swa_lr must be > 0, or null to keep the rate the schedule has reached, got {swa_lr}")
        if anneal_epochs < 0:
            raise ConfigError(f"callbacks.swa.anneal_epochs must be >= 0 (0: swa_lr at once), got {anneal_epochs}")
        if anneal_strategy not in STRATEGIES:
            raise ConfigError(f"callbacks.swa.anneal_strategy must be one of {', '.join(STRATEGIES)}, got {anneal_strategy!r}")
        self.swa_start, self.swa_lr = swa_start, swa_lr
        self.anneal_epochs, self.anneal_strategy = anneal_epochs, anneal_strategy
        self.start: int | None = None  # the phase's first epoch, 0-based: fixed once the phase has begun
        self.averaged_epoch = -1  # the last epoch (0-based) whose final weights are in the average
        self.swa_lrs: list[float] | None = None  # each parameter group's swa_lr, fixed when the phase begins
        self.swalr: SWALR | None = None
        self._task: Task | None = None  # whose training forward recomputes batch norm
        self._swalr_state: dict[str, Any] | None = None

    def check_trainer(self, cfg: TrainerConfig) -> None:
        if isinstance(self.swa_start, int) and self.swa_start > cfg.max_epochs:
            raise ConfigError(f"{self.key}.swa_start={self.swa_start} is beyond trainer.max_epochs={cfg.max_epochs}, so no epoch "
                              f"would be averaged; use an epoch <= {cfg.max_epochs} or a fraction such as 0.75")

    def first_epoch(self, max_epochs: int) -> int:
        """The phase's first epoch, 0-based."""
        if isinstance(self.swa_start, int):
            return self.swa_start - 1
        return math.floor(self.swa_start * max_epochs + 1e-9)

    def build_average(self, model: nn.Module) -> AveragedModel:
        return AveragedModel(model)  # the running mean; buffers copied from the model, then _update_bn

    def on_fit_start(self, trainer: Trainer, task: Task) -> None:
        super().on_fit_start(trainer, task)
        self._task = task
        if self.start is None:
            self.start = self.first_epoch(trainer.state.max_epochs)

    # ---- the phase ------------------------------------------------------------------------------------

    def on_train_epoch_start(self, trainer: Trainer, task: Task) -> None:
        assert self.start is not None
        if trainer.state.epoch >= self.start and self.swalr is None:
            self._begin(trainer)

    def _begin(self, trainer: Trainer) -> None:
        """SWALR takes over the rate (again, on resume: the optimizer's rate and SWALR's state come back)."""
        for schedule in trainer.state.schedules.values():
            schedule.paused = True
        (optimizer,) = trainer.state.optimizers.values()
        if self.swa_lrs is None:
            self.swa_lrs = [float(g["lr"]) if self.swa_lr is None else self.swa_lr * float(g.get("lr_mult", 1.0))
                            for g in optimizer.param_groups]
        self.swalr = SWALR(optimizer, swa_lr=self.swa_lrs, anneal_epochs=self.anneal_epochs,  # type: ignore[arg-type]
                           anneal_strategy=self.anneal_strategy)  # type: ignore[arg-type]
        if self._swalr_state is not None:
            self.swalr.load_state_dict(self._swalr_state)
            self._swalr_state = None
        else:
            log.info("%s: stochastic weight averaging from epoch %d, learning rate -> %s over %d epochs (%s); the schedule "
                     "stops", self.key, trainer.state.epoch + 1, ", ".join(f"{lr:.3g}" for lr in self.swa_lrs),
                     self.anneal_epochs, self.anneal_strategy)

    def before_evaluation(self, trainer: Trainer) -> None:
        """Once per epoch of the phase, after its last step: average its weights in, then recompute batch norm."""
        epoch = trainer.state.epoch
        if self.swalr is None or self.averaged_epoch == epoch:
            return
        self.average_in()
        self.averaged_epoch = epoch
        self._update_bn(trainer)

    def _update_bn(self, trainer: Trainer) -> None:
        """:func:`~torch.optim.swa_utils.update_bn`'s pass (statistics reset, then an equal-weight mean over
        the batches), through the task's own training forward on the averaged weights, so that every task's
        batches reach the model as in training (a detector's images with their targets, a GAN's two players,
        a captioner's words), not only ``model(batch[0])``; without gradients, random generators restored."""
        assert self.averaged is not None and self._task is not None
        module, task = self.averaged.module, self._task
        norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        rng = capture_rng_state()
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative mean: every batch weighs the same
        was_training = module.training
        players = task.optimizer_names if len(task.optimizer_names) > 1 else (None,)  # as the trainer calls the step
        module.train()
        with torch.no_grad(), trainer.autocast(), task.evaluating_with(module):
            for batch in itertools.islice(trainer.train_loader, trainer.state.num_train_batches):
                batch = to_device(batch, trainer.device, trainer.cfg.channels_last)
                for player in players:
                    task.training_step(batch) if player is None else task.training_step(batch, player)
        module.train(was_training)
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        restore_rng_state(rng)
        distributed.all_reduce_mean_([t for m in norms for t in (m.running_mean, m.running_var) if t is not None])

    def on_train_epoch_end(self, trainer: Trainer, task: Task, metrics: dict[str, float]) -> None:
        self.before_evaluation(trainer)  # an epoch without validation
        if self.swalr is not None:
            with warnings.catch_warnings():  # a run resumed after an epoch's last step steps SWALR before its optimizer
                warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()` before"), UserWarning)
                self.swalr.step()

    # ---- state ----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The average (:class:`WeightAveraging`), the last averaged epoch and, once the phase has begun, its
        first epoch, each group's ``swa_lr`` and SWALR's state."""
        state = {**super().state_dict(), "averaged_epoch": self.averaged_epoch}
        if self.swalr is not None:
            state.update(start=self.start, swa_lrs=list(self.swa_lrs or []), swalr=self.swalr.state_dict())
        return state

    def restore(self, state: dict[str, Any]) -> None:
        self.averaged_epoch = int(state.get("averaged_epoch", -1))
        if "swalr" in state:
            self.start, self.swa_lrs = int(state["start"]), [float(lr) for lr in state["swa_lrs"]]
            self._swalr_state = dict(state["swalr"])

    def summary(self) -> dict[str, Any]:
        if self.swalr is None or self.start is None:  # the phase never began
            return super().summary()
        return {**super().summary(), f"{self.state_key or self.default_key}/start_epoch": self.start + 1}
