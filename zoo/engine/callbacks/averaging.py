"""What the weight-averaging callbacks (:mod:`~zoo.engine.callbacks.ema`, :mod:`~zoo.engine.callbacks.swa`) share.

The average is a :class:`torch.optim.swa_utils.AveragedModel` of the model outside any DDP wrapper
(every process keeps the same one, as every process holds the same weights). Once it holds an
average it is what the run evaluates, while the optimizer goes on training the raw weights:

* validation: at ``on_eval_start`` of the ``val`` pass the averaged and the raw weights (parameters and
  buffers) swap places in the model itself, so the pass, the task's images after it and whatever
  wraps the model (DDP, ``channels_last``) see the average; ``on_validation_end`` swaps them back;
* checkpoints: ``model`` holds the averaged weights and ``training_model`` the raw ones
  (:func:`~zoo.engine.checkpoint.set_evaluation_weights`), so ``best.pt`` and ``evaluate.py`` score the
  average and a resume trains the raw weights on; the callback's own state (``callbacks.<key>``) holds
  the average again, in the same tensors, so it is written once;
* the end: ``on_fit_end`` copies the average into the model, so the final test (of ``best.pt``, or of
  the final weights without one) scores it.

A task with several optimizers (a GAN) or none (k-nearest neighbours) is refused: which weights to
average, and which rate to hand to SWA, is then not one thing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from zoo.engine.callbacks.base import Callback
from zoo.engine.checkpoint import set_evaluation_weights
from zoo.errors import ConfigError

if TYPE_CHECKING:
    from zoo.engine.trainer import Trainer
    from zoo.tasks.base import Task

log = logging.getLogger(__name__)


def _tensors(module: nn.Module) -> list[torch.Tensor]:
    """Parameters then buffers, the pairing :class:`AveragedModel` averages in."""
    return [*module.parameters(), *module.buffers()]


@torch.no_grad()
def _copy(source: nn.Module, target: nn.Module) -> None:
    for s, t in zip(_tensors(source), _tensors(target), strict=True):
        t.copy_(s)


@torch.no_grad()
def _swap(a: nn.Module, b: nn.Module) -> None:
    for x, y in zip(_tensors(a), _tensors(b), strict=True):
        held = x.clone()
        x.copy_(y)
        y.copy_(held)


class WeightAveraging(Callback):
    """Base of the callbacks that keep an average of the weights and evaluate it (see the module docstring).

    Subclasses build the :class:`AveragedModel` (:meth:`build_average`), decide when to average
    (calling :meth:`average_in`), and may add to :meth:`state_dict`.
    """

    #: after the other callbacks acted on a step or an epoch, before checkpointing (90) stores the average
    order = 80
    #: config key used in error messages until ``build_callbacks`` sets :attr:`state_key`
    default_key = "averaging"

    def __init__(self) -> None:
        self.averaged: AveragedModel | None = None
        self._model: nn.Module | None = None
        self._loaded: dict[str, Any] | None = None
        self._swapped = False

    @property
    def key(self) -> str:
        return f"callbacks.{self.state_key or self.default_key}"

    @property
    def n_averaged(self) -> int:
        """How many weight vectors are in the average (0: none yet)."""
        return 0 if self.averaged is None else int(self.averaged.n_averaged)  # a CPU buffer: no device sync

    def build_average(self, model: nn.Module) -> AveragedModel:
        raise NotImplementedError

    def on_fresh_start(self, trainer: Trainer) -> None:
        """Called in ``on_fit_start`` when no stored state came back (a new run, or the callback added on resume)."""

    def average_in(self) -> None:
        """Add the model's current weights to the average."""
        assert self.averaged is not None and self._model is not None
        self.averaged.update_parameters(self._model)

    # ---- the fit --------------------------------------------------------------------------------------

    def on_fit_start(self, trainer: Trainer, task: Task) -> None:
        keys = [c.key for c in trainer.callbacks if isinstance(c, WeightAveraging)]
        if len(keys) > 1:
            raise ConfigError(f"{' and '.join(keys)} both average the weights, and only one average can be evaluated; "
                              "keep one of them")
        names = list(trainer.state.optimizers)
        if len(names) != 1:
            trains = f"trains {len(names)} optimizers ({', '.join(names)})" if names else "has nothing to optimise"
            raise ConfigError(f"{self.key} averages the weights one optimizer trains, but task {type(task).__name__} {trains}; "
                              f"drop it ({self.key}=null)")
        self._model = trainer.model
        assert self._model is not None
        self.averaged = self.build_average(self._model)
        loaded, self._loaded = self._loaded, None
        if loaded is None:
            self.on_fresh_start(trainer)
            return
        if "model" in loaded:
            self.averaged.module.load_state_dict(loaded["model"])
        self.averaged.n_averaged.fill_(int(loaded["n_averaged"]))
        self.restore(loaded)

    def restore(self, state: dict[str, Any]) -> None:
        """Subclasses: restore what they added to :meth:`state_dict`."""

    def before_evaluation(self, trainer: Trainer) -> None:
        """Subclasses: bring the average up to date once an epoch's training is over (before its validation)
        and at the end of the fit."""

    def on_eval_start(self, trainer: Trainer, task: Task, stage: str, num_batches: int) -> None:
        if stage != "val":  # the test pass after fit scores best.pt, or the average copied in by on_fit_end
            return
        self.before_evaluation(trainer)
        if self.n_averaged and not self._swapped:
            assert self.averaged is not None and self._model is not None
            _swap(self.averaged.module, self._model)
            self._swapped = True

    def _swap_back(self) -> None:
        if self._swapped:
            assert self.averaged is not None and self._model is not None
            _swap(self.averaged.module, self._model)
            self._swapped = False

    def on_validation_end(self, trainer: Trainer, task: Task, metrics: dict[str, float]) -> None:
        self._swap_back()

    def on_exception(self, trainer: Trainer, task: Task, error: BaseException) -> None:
        self._swap_back()

    def on_save_checkpoint(self, trainer: Trainer, task: Task, checkpoint: dict[str, Any]) -> None:
        if self.n_averaged:
            assert self.averaged is not None
            set_evaluation_weights(checkpoint, self.averaged.module.state_dict())

    def on_fit_end(self, trainer: Trainer, task: Task) -> None:
        self.before_evaluation(trainer)
        if self.n_averaged:
            assert self.averaged is not None and self._model is not None
            _copy(self.averaged.module, self._model)
            log.info("%s: the model now holds the averaged weights (%d averaged); the raw ones are last.pt's training_model",
                     self.key, self.n_averaged)

    # ---- state ----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """``n_averaged`` and, once there is an average, its weights (``model``, the checkpoint's ``model`` too)."""
        if self.averaged is None:
            return dict(self._loaded or {})
        state: dict[str, Any] = {"n_averaged": self.n_averaged}
        if self.n_averaged:
            state["model"] = self.averaged.module.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._loaded = dict(state)  # applied in on_fit_start, once the average exists

    def summary(self) -> dict[str, Any]:
        return {f"{self.state_key or self.default_key}/n_averaged": self.n_averaged}
