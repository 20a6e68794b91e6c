"""Regularisers of the weights, built by name from ``configs/regularizer/``: penalty terms added to the
training loss, and the max-norm constraint applied after every optimizer step.

* ``none``: nothing (the default).
* ``l1``: ``l1 * sum |w|`` (drives weights to exactly zero: sparse weights).
* ``elastic``: ``l1 * sum |w| + l2 * sum w^2``, the elastic net (the notes' ``R(W) = sum beta W^2 + |W|``).
* ``max_norm``: after every optimizer step, each unit's incoming weight vector (one output unit's
  slice of a Linear or Conv weight: every dimension but the first) is scaled back to an L2 norm of at
  most ``c`` (Srivastava et al. 2014, "Dropout", JMLR, sec. 5.1; c of 3 or 4 there). Transposed
  convolutions (their first dimension is the input's) are left alone.

Penalties fall on the weights weight decay falls on: never on biases or normalisation-layer
parameters (:func:`zoo.engine.optim.is_bias_or_norm`), and only on the parameters being trained
(``requires_grad``): the stepping network's under a GAN, not a transfer policy's frozen stages.
Max-norm likewise projects only trainable weights.

Weight decay stays the optimizer's (``optimizer.weight_decay``); for SGD, ``weight_decay=wd`` is the
gradient of ``l2=wd/2``. The task adds the penalty to its loss (:meth:`zoo.tasks.base.Task.training_objective`)
and projects after each step (:meth:`~zoo.tasks.base.Task.after_optimizer_step`), so the trainer
knows nothing of regularisers and both work under AMP, gradient accumulation (each batch's loss
carries the penalty and is divided like it: one penalty per update), closure optimizers (the penalty
is part of every re-evaluation) and DDP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from zoo.engine.optim import is_bias_or_norm
from zoo.errors import ConfigError
from zoo.registry import Registry

#: the layer kinds ``max_norm.layers`` names, and the modules they are (weight dimension 0: the output units)
LAYERS: dict[str, tuple[type[nn.Module], ...]] = {"linear": (nn.Linear,), "conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d)}


@dataclass(frozen=True)
class Regularizer:
    """``l1``/``l2`` penalty strengths (0: off) and the max-norm bound ``max_norm`` (None: off) on the
    weights of ``layers`` (keys of :data:`LAYERS`)."""

    l1: float = 0.0
    l2: float = 0.0
    max_norm: float | None = None
    layers: tuple[str, ...] = ("linear", "conv")

    def __post_init__(self) -> None:
        for key in ("l1", "l2"):
            if not getattr(self, key) >= 0:
                raise ConfigError(f"regularizer.{key} must be >= 0, got {getattr(self, key)}")
        if self.max_norm is not None and not self.max_norm > 0:
            raise ConfigError(f"regularizer.c must be > 0, got {self.max_norm}")
        unknown = [name for name in self.layers if name not in LAYERS]
        if unknown or not self.layers:
            raise ConfigError(f"regularizer.layers must name some of {', '.join(LAYERS)}, got {list(self.layers)}")

    def penalized(self, model: nn.Module) -> Iterator[nn.Parameter]:
        """The trainable weights the penalties fall on, each once."""
        seen: set[int] = set()
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                if p.requires_grad and not is_bias_or_norm(module, name) and id(p) not in seen:
                    seen.add(id(p))
                    yield p

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        """``l1 * sum |w| + l2 * sum w^2`` over :meth:`penalized`; None without penalties."""
        if not (self.l1 or self.l2):
            return None
        weights = list(self.penalized(model))
        if not weights:
            return None
        terms = []
        if self.l1:
            terms.append(self.l1 * torch.stack([p.abs().sum() for p in weights]).sum())
        if self.l2:
            terms.append(self.l2 * torch.stack([p.pow(2).sum() for p in weights]).sum())
        return terms[0] if len(terms) == 1 else terms[0] + terms[1]

    @torch.no_grad()
    def project(self, model: nn.Module) -> None:
        """Max-norm: every output unit's incoming weights of the ``layers`` scaled to an L2 norm <= ``max_norm``."""
        if self.max_norm is None:
            return
        kinds = tuple(t for name in self.layers for t in LAYERS[name])
        for module in model.modules():
            weight = getattr(module, "weight", None) if isinstance(module, kinds) else None
            if isinstance(weight, nn.Parameter) and weight.requires_grad:
                weight.renorm_(2, 0, self.max_norm)


REGULARIZERS: Registry[Regularizer] = Registry("regularizer")


@REGULARIZERS.register("none")
def _none() -> Regularizer:
    return Regularizer()


@REGULARIZERS.register("l1")
def _l1(l1: float = 1e-4) -> Regularizer:
    return Regularizer(l1=float(l1))


@REGULARIZERS.register("elastic")
def _elastic(l1: float = 1e-4, l2: float = 1e-4) -> Regularizer:
    return Regularizer(l1=float(l1), l2=float(l2))


@REGULARIZERS.register("max_norm")
def _max_norm(c: float = 3.0, layers: list[str] | None = None) -> Regularizer:
    """``layers`` null: Linear and Conv weights."""
    return Regularizer(max_norm=float(c), **({"layers": tuple(layers)} if layers is not None else {}))


def build_regularizer(cfg: Mapping[str, Any] | None) -> Regularizer:
    """The regulariser of a ``regularizer`` config (``{"name": ..., options}``; None: ``none``)."""
    return REGULARIZERS.build_from(cfg or {"name": "none"})
