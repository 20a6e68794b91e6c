"""Training diagnostics: what the weights, gradients and activations of every layer look like while a model trains.

Every ``every_n_epochs`` epochs (on the epoch's first update) and/or every ``every_n_steps`` optimizer steps, one
training batch is watched and the loggers get, at that step:

- ``weights/<param>`` and ``gradients/<param>``: histograms (of at most 65,536 values each, evenly sampled) of every trainable parameter and of its gradient as
  the optimizer reads it (after AMP unscaling and gradient accumulation, before clipping);
- ``activations/<module>``: histograms of the outputs of the convolutions, linear layers and activations (every
  ``model.act``: ReLU, leaky ReLU, PReLU, ELU, GELU, tanh, sigmoid, maxout) on the batch (forward hooks, the
  training-mode forward pass itself: no extra pass);
- ``update_ratio/<param>``: ``‖Δw‖ / ‖w‖`` over that optimizer step for each weight (parameters of two or more
  dimensions; biases start at zero). Around 1e-3 is healthy; far below, learning barely moves the layer; far
  above, it is unstable (Karpathy's CS231n notes);
- ``dead_relu/<module>``: the fraction of a ReLU's units (channels of a feature map, features of a vector)
  that are zero for the whole batch;
- ``saturated/<module>``: the fraction of a tanh's or sigmoid's outputs within 0.01 of its bounds, where the
  gradient is nearly zero (the CS231n notes' reason to prefer ReLUs);
- ``filters/<conv>``: the first convolution's filters as an image grid, each scaled to [0, 1] on its own.

Nothing is watched when no logger is configured; off the watched steps the hooks are a comparison each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from zoo.engine.callbacks.base import Callback
from zoo.errors import ConfigError
from zoo.models.layers import Maxout

if TYPE_CHECKING:
    from torch.utils.hooks import RemovableHandle

    from zoo.engine.trainer import Trainer
    from zoo.tasks.base import Task

#: the modules whose outputs are activations worth a histogram: layers and every activation of ``model.act``
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.Tanh, nn.Sigmoid, Maxout)
_WATCHED = (nn.modules.conv._ConvNd, nn.Linear, *_ACTIVATIONS)
#: output ranges of the saturating activations, whose units stop learning near the bounds
_BOUNDS = {nn.Tanh: (-1.0, 1.0), nn.Sigmoid: (0.0, 1.0)}
SATURATION_MARGIN = 0.01


def dead_fraction(activation: torch.Tensor) -> float:
    """The fraction of units (dimension 1: channels or features) that are zero for every sample and position."""
    alive = activation.detach().transpose(0, 1).reshape(activation.shape[1], -1).ne(0).any(dim=1)
    return 1.0 - float(alive.float().mean())


def saturated_fraction(activation: torch.Tensor, low: float, high: float) -> float:
    """The fraction of ``activation``'s values within :data:`SATURATION_MARGIN` of ``low`` or ``high``."""
    a = activation.detach()
    return float(((a <= low + SATURATION_MARGIN) | (a >= high - SATURATION_MARGIN)).float().mean())


def filter_images(weight: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` images in [0, 1] of a convolution's ``(out, in, kh, kw)`` weight, each filter min-max
    scaled on its own: one image per filter for 1 or 3 input channels, else one per (filter, input channel)."""
    w = weight.detach().float().cpu()
    if w.shape[1] not in (1, 3):
        w = w.reshape(-1, 1, *w.shape[2:])
    low = w.amin(dim=(1, 2, 3), keepdim=True)
    span = w.amax(dim=(1, 2, 3), keepdim=True) - low
    return (w - low) / span.clamp_min(1e-12)


#: values a histogram is computed from at most: larger tensors are sampled evenly (a strided subset)
MAX_HISTOGRAM_VALUES = 1 << 16


def histogram_sample(values: torch.Tensor) -> torch.Tensor:
    """``values`` flattened, every k-th of them when there are more than :data:`MAX_HISTOGRAM_VALUES`."""
    flat = values.detach().flatten()
    return flat[::-(-flat.numel() // MAX_HISTOGRAM_VALUES)] if flat.numel() > MAX_HISTOGRAM_VALUES else flat


def _unwrapped(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # DistributedDataParallel keeps the model in .module


class Diagnostics(Callback):
    """Histograms of weights, gradients and activations, update-to-weight ratios, dead-ReLU and saturated
    tanh/sigmoid fractions and the first layer's filters, every ``every_n_epochs`` epochs and/or every ``every_n_steps`` optimizer steps
    (``null``: not on that schedule)."""

    order = 60  # after the built-in bookkeeping, before checkpointing

    def __init__(self, every_n_epochs: int | None = 1, every_n_steps: int | None = None, histograms: bool = True,
                 filters: bool = True) -> None:
        for key, value in (("every_n_epochs", every_n_epochs), ("every_n_steps", every_n_steps)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"callbacks.diagnostics.{key} must be a positive integer or null, got {value!r}")
        if every_n_epochs is None and every_n_steps is None:
            raise ConfigError("callbacks.diagnostics: set every_n_epochs or every_n_steps (both are null)")
        self.every_n_epochs, self.every_n_steps = every_n_epochs, every_n_steps
        self.histograms, self.filters = bool(histograms), bool(filters)
        self._due_epoch = False  # this epoch is watched, from its first update on
        self._armed = False  # the current batch is being watched
        self._handles: list[RemovableHandle] = []
        self._activations: dict[str, torch.Tensor] = {}
        self._before: dict[str, torch.Tensor] = {}  # weights before the step, by parameter name
        self._grads: dict[str, torch.Tensor] = {}

    # ---- when ----------------------------------------------------------------------------------------

    def on_train_epoch_start(self, trainer: Trainer, task: Task) -> None:
        self._due_epoch = self.every_n_epochs is not None and (trainer.state.epoch + 1) % self.every_n_epochs == 0

    def on_train_batch_start(self, trainer: Trainer, task: Task, batch: Any, batch_idx: int) -> None:
        step = trainer.state.global_step + 1  # the update this batch leads to (or helps accumulate)
        due_step = self.every_n_steps is not None and step % self.every_n_steps == 0
        if not trainer.logger or self._armed or not (self._due_epoch or due_step):
            return
        self._armed = True
        self._activations, self._before, self._grads = {}, {}, {}
        for name, module in _unwrapped(task.model).named_modules():
            if isinstance(module, _WATCHED):
                self._handles.append(module.register_forward_hook(self._keep(name)))

    def _keep(self, name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor) and output.dim() >= 2 and name not in self._activations:
                self._activations[name] = output.detach().to("cpu", torch.float32, copy=True)  # an in-place ReLU follows

        return hook

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # ---- what ----------------------------------------------------------------------------------------

    def on_before_backward(self, trainer: Trainer, task: Task, loss: Any) -> None:
        self._remove_hooks()  # one forward pass is enough (L-BFGS evaluates the batch again)

    def on_before_optimizer_step(self, trainer: Trainer, task: Task, optimizer: Any, name: str) -> None:
        if not self._armed:
            return
        owned = {id(p) for group in optimizer.param_groups for p in group["params"]}
        for pname, p in _unwrapped(task.model).named_parameters():
            if id(p) in owned and pname not in self._before:  # the first evaluation of a closure optimizer's step
                self._before[pname] = p.detach().clone()
                if p.grad is not None:
                    self._grads[pname] = p.grad.detach().to("cpu", torch.float32, copy=True)

    def on_train_batch_end(self, trainer: Trainer, task: Task, outputs: dict[str, Any], batch: Any, batch_idx: int) -> None:
        if not self._armed or not trainer.state.stepped:
            return  # not watched, or still accumulating gradients for the update
        self._remove_hooks()
        self._armed = self._due_epoch = False
        if trainer.state.skip_batch:
            return  # the update was dropped: there is no step to measure
        self._log(trainer, _unwrapped(task.model), trainer.state.global_step)

    def _log(self, trainer: Trainer, model: nn.Module, step: int) -> None:
        logger, scalars = trainer.logger, {}
        params = dict(model.named_parameters())
        for pname, before in self._before.items():
            after = params[pname].detach()
            if self.histograms:
                logger.log_histogram(f"weights/{pname}", histogram_sample(after), step)
                if pname in self._grads:
                    logger.log_histogram(f"gradients/{pname}", histogram_sample(self._grads[pname]), step)
            if after.dim() >= 2:
                norm = float(before.float().norm())
                scalars[f"update_ratio/{pname}"] = float((after - before).float().norm()) / norm if norm else float("nan")
        modules = dict(model.named_modules())
        for mname, activation in self._activations.items():
            if self.histograms:
                logger.log_histogram(f"activations/{mname}", histogram_sample(activation), step)
            module = modules.get(mname)
            if isinstance(module, (nn.ReLU, nn.ReLU6)):
                scalars[f"dead_relu/{mname}"] = dead_fraction(activation)
            elif type(module) in _BOUNDS:
                scalars[f"saturated/{mname}"] = saturated_fraction(activation, *_BOUNDS[type(module)])
        logger.log_scalars(scalars, step)
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if self.filters and first is not None:
            name = next(n for n, m in modules.items() if m is first)
            logger.log_image_grid(f"filters/{name}", filter_images(first.weight), step)
        self._activations, self._before, self._grads = {}, {}, {}

    def teardown(self, trainer: Trainer, task: Task) -> None:
        self._remove_hooks()
        self._armed = False
