"""The Task interface: the only place that knows what a model family returns.

The trainer calls ``training_objective`` (``training_step``: a dict with a ``"loss"`` entry plus
detached scalars to log, with the regulariser's penalty added), ``after_optimizer_step`` (the
regulariser's max-norm projection), ``validation_step`` (accumulates metric state),
``reset_metrics`` and ``compute_metrics``; it never inspects the model itself.

After each validation pass of ``fit`` (and in ``evaluate.py``) the trainer calls
``on_validation_end(logger, step)`` in eval mode without gradients: the place for image summaries
(sample grids of generative models). ``final_evaluation`` is set for the test pass after training
and for ``evaluate.py``; tasks may add metrics too costly for every epoch then.

A task that trains with several optimizers (a GAN's discriminator and generator) lists them in
``optimizer_names``; the trainer then calls ``training_step(batch, name)`` once per optimizer and
batch, in that order, with only that optimizer's parameters requiring gradients, and steps it. A task
with nothing to optimise (k-nearest neighbours) has ``optimizer_names = ()``: the trainer calls
``training_step(batch)`` as a plain forward pass (no backward, no optimizer; its dict needs no ``"loss"``).

A task whose outputs are class scores can be ensembled (``ensembles = True``: ``evaluate.py`` with several
checkpoints, :mod:`zoo.ensemble`): :meth:`ensemble_probabilities` turns a batch into class probabilities and
the targets they are scored against, and :meth:`score_probabilities` scores probabilities, a member's own or
the members' average.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from zoo.engine.optim import LrMult, param_groups
from zoo.engine.regularizers import Regularizer
from zoo.errors import ConfigError
from zoo.registry import Registry

TASKS: Registry["Task"] = Registry("task")
#: probabilities are clamped to this before their log (a float32 softmax underflows to 0), as in test-time augmentation
PROB_FLOOR = 1e-12


class Task(nn.Module):
    """Wraps a model. Subclasses implement the step functions and metrics."""

    #: validation metric that selects the best checkpoint and drives plateau schedules / early stopping
    monitor: str = "loss"
    monitor_mode: str = "min"
    #: optimizers stepped on every batch, in order; one entry means ``training_step(batch)``
    optimizer_names: tuple[str, ...] = ("model",)
    #: True for the final test pass and evaluate.py (costly metrics such as a VAE's log-likelihood)
    final_evaluation: bool = False
    #: whether evaluate.py can average this task's class probabilities over several checkpoints (an ensemble)
    ensembles: bool = False
    #: the optional extras (:mod:`zoo.extras`) its metrics need, checked before a run starts
    extras: tuple[str, ...] = ()

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        #: learning-rate multiplier of a model parameter by name, None to leave it out of the optimizer
        #: (a :mod:`zoo.transfer` policy's, given to :func:`build_task`); unset, every trainable parameter
        #: gets the base rate
        self.param_lr_mult: LrMult | None = None
        #: penalties on the weights and the max-norm constraint (``configs/regularizer``; none by default)
        self.regularizer = Regularizer()

    def training_step(self, batch: Any) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def soft_targets_refused(self) -> str | None:
        """Why this task cannot train on class-probability targets (MixUp, CutMix), or ``None`` if it can."""
        name = next((n for n in TASKS if TASKS.get(n).obj is type(self)), type(self).__name__)
        return f"task={name} does not train on class labels"

    def training_objective(self, batch: Any, *name: str) -> dict[str, torch.Tensor]:
        """What the trainer minimises: :meth:`training_step`, with the regulariser's penalty on the weights
        being trained added to ``"loss"`` and reported as ``"penalty"``."""
        out = self.training_step(batch, *name)
        penalty = self.regularizer.penalty(self.model)
        if penalty is None:
            return out
        return {**out, "loss": out["loss"] + penalty, "penalty": penalty.detach()}

    def after_optimizer_step(self, name: str) -> None:
        """After optimizer ``name`` stepped (its parameters alone trainable): the max-norm projection."""
        self.regularizer.project(self.model)

    def resume_epoch(self, batches: int) -> None:
        """The epoch just started resumes after its first ``batches`` batches (a mid-epoch checkpoint): a task
        whose state builds up over an epoch keeps what the checkpoint restored instead of starting over."""

    def validation_step(self, batch: Any) -> None:
        raise NotImplementedError

    def reset_metrics(self) -> None:
        raise NotImplementedError

    def compute_metrics(self) -> dict[str, float]:
        raise NotImplementedError

    def set_class_names(self, class_names: list[str]) -> None:
        """Called once with the dataset's class names (e.g. to name per-class metrics)."""

    def on_validation_end(self, logger: Any, step: int) -> None:
        """Hook after each validation pass (eval mode, no gradients); log images here. By default it calls
        :meth:`log_visualizations`; a task that overrides it calls that itself where it applies."""
        self.log_visualizations(logger, step)

    def log_visualizations(self, logger: Any, step: int) -> None:
        """Log what the model draws of itself: a model may define ``visualizations() -> {name: images}``
        (``(N, C, H, W)`` of any range, e.g. a linear classifier's class templates); each is logged as one
        grid ``val/<name>``, the ``N`` images in a row, each min-max scaled (:func:`for_display`)."""
        draw = getattr(self.__dict__.get("_unwrapped") or self.model, "visualizations", None)
        if logger and draw is not None:
            for name, images in draw().items():
                logger.log_image_grid(f"val/{name}", for_display(images.detach().float()), step, nrow=len(images))

    def report(self, logger: Any, split: str, step: int) -> dict[str, Any]:
        """After a test pass (training's, and ``evaluate.py``'s): log what only this task knows how to
        show (e.g. a confusion matrix) and return entries for ``metrics.json``; nothing by default."""
        return {}

    def evaluation_views(self, tta_cfg: dict[str, Any] | None, image_size: int,
                         black: Sequence[float] = ()) -> tuple[nn.Module | None, nn.Module | None]:
        """The model to test with (its single evaluation view) and, for ``tta`` other than ``none``, a
        second one averaging test-time views (padded with ``black``, the normalised value of black per
        channel); ``(None, None)``: the model as it is. Tasks whose outputs cannot be averaged over
        views refuse a ``tta`` setting."""
        name = (tta_cfg or {}).get("name", "none")
        if name != "none":
            raise ConfigError(f"tta={name} averages class scores over views; a {type(self).__name__} cannot use it: use tta=none")
        return None, None

    def ensemble_probabilities(self, batch: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A batch as ``(probabilities, targets)`` chunks: the softmax of the model's class scores (class
        dimension 1) and what they are scored against, for an ensemble to average (``ensembles = True``)."""
        raise ConfigError(cannot_ensemble(type(self)))

    def score_probabilities(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        """Add one chunk of class probabilities (one member's, or the ensemble's mean) to this pass's metrics,
        which :meth:`compute_metrics` then reports as after :meth:`validation_step`."""
        raise ConfigError(cannot_ensemble(type(self)))

    @contextmanager
    def evaluating_with(self, model: nn.Module | None) -> Iterator[None]:
        """Evaluate with ``model`` (a wrapper of this task's model) in its place; ``None``: unchanged."""
        original = self.model
        if model is not None:
            self.model = model
        try:
            yield
        finally:
            self.model = original

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Wrap the model for data-parallel training (DistributedDataParallel); called again when the
        trainable parameters change, always on the unwrapped model. :meth:`undistribute` restores it."""
        unwrapped = self.__dict__.get("_unwrapped") or self.model
        self.__dict__["_unwrapped"] = unwrapped  # not a submodule: its parameters are the model's
        self.model = wrap(unwrapped)

    def undistribute(self) -> None:
        unwrapped = self.__dict__.pop("_unwrapped", None)
        if unwrapped is not None:
            self.model = unwrapped

    def write_predictions(self, run_dir: Path, split: str) -> list[Path]:
        """Write what the last evaluation pass predicted (e.g. captions) under ``run_dir``; the files written.
        ``evaluate.py`` calls it; tasks whose predictions are only scored write nothing."""
        return []

    def param_groups(self, weight_decay: float, decay_norm_and_bias: bool = False) -> list[dict[str, Any]]:
        """Parameter groups for the optimizer, with the multipliers of :attr:`param_lr_mult`."""
        return param_groups(self.model, weight_decay, decay_norm_and_bias, self.param_lr_mult or 1.0)

    def optimizer_param_groups(self, name: str, weight_decay: float, decay_norm_and_bias: bool = False) -> list[dict[str, Any]]:
        """Parameter groups of optimizer ``name``; multi-optimizer tasks override this."""
        return self.param_groups(weight_decay, decay_norm_and_bias)

    def optimizer_config(self, name: str, cfg: dict[str, Any]) -> dict[str, Any]:
        """The optimizer config for optimizer ``name`` (the run's ``optimizer`` config by default)."""
        return cfg


def cannot_ensemble(task: type[Task]) -> str:
    """Why ``task`` (a class) refuses an ensemble, for a one-line error."""
    return (f"several checkpoints in ckpt_path make an ensemble, which averages class probabilities, and a {task.__name__} "
            "has none to average; evaluate its checkpoints one at a time")


def for_display(images: torch.Tensor) -> torch.Tensor:
    """Each image (the last three dimensions, ``C, H, W``) scaled by its own minimum and maximum to [0, 1]:
    normalised inputs, shown in figures."""
    flat = images.flatten(-3)
    low, high = (v.values[..., None, None, None] for v in (flat.min(-1), flat.max(-1)))
    return (images - low) / (high - low).clamp_min(1e-6)


def build_task(cfg: dict[str, Any], model: nn.Module, model_task: str, lr_mult: LrMult | None = None,
               regularizer: Regularizer | None = None, **extra: Any) -> Task:
    """Build the task named in ``cfg`` (with a transfer policy's learning-rate multipliers ``lr_mult``
    and a ``regularizer``); refuses a model registered for a different task."""
    if cfg["name"] != model_task:
        raise ConfigError(f"task={cfg['name']} cannot train a {model_task} model; use task={model_task} or another model")
    task = TASKS.build_from(cfg, model=model, **extra)
    if not task.optimizer_names and regularizer is not None and regularizer != Regularizer(layers=regularizer.layers):
        raise ConfigError(f"task={cfg['name']} has no weights to optimise, so a regularizer would do nothing; "
                          "drop it (regularizer=none)")
    task.param_lr_mult = lr_mult
    task.regularizer = regularizer or Regularizer()
    return task
