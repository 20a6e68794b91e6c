"""Classification losses by name (``task.loss``): a new loss is one function here.

Each maps class scores ``(B, C)`` and target classes ``(B,)`` to one loss per sample ``(B,)``; those
registered with ``soft_targets=True`` also take class probabilities ``(B, C)`` as targets (the mixed
targets of MixUp and CutMix, :mod:`zoo.data.augment`). The
classification task averages them over the batch to train and sums them over the validation split
for ``val/loss``. A loss's keyword-only options (``label_smoothing``, ``margin``) are task options,
with the function's default standing for ``null``; a task option that the loss does not take is refused.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable

import torch
import torch.nn.functional as F

from zoo.errors import ConfigError
from zoo.registry import Registry

Loss = Callable[..., torch.Tensor]

#: option values that mean "off": accepted with every loss (``task.label_smoothing=0`` with the hinge loss)
OFF: dict[str, float] = {"label_smoothing": 0.0}

LOSSES: Registry[torch.Tensor] = Registry("loss")


@LOSSES.register("cross_entropy", soft_targets=True)
def cross_entropy(scores: torch.Tensor, target: torch.Tensor, *, label_smoothing: float = 0.1) -> torch.Tensor:
    """Softmax cross-entropy ``-log softmax(s)_y``, with label smoothing (Szegedy et al. 2016: the target
    puts ``1 - label_smoothing + label_smoothing / C`` on ``y`` and ``label_smoothing / C`` on every class).
    Against class probabilities ``t``: ``-sum_j t_j log softmax(s)_j``, ``t`` smoothed the same way."""
    return F.cross_entropy(scores, target, reduction="none", label_smoothing=label_smoothing)


def _margins(scores: torch.Tensor, target: torch.Tensor, margin: float) -> torch.Tensor:
    """``max(0, s_j - s_y + margin)`` for every class ``j``, zero at ``j = y``: ``(B, C)``."""
    correct = scores.gather(1, target[:, None])
    return (scores - correct + margin).clamp_min(0).scatter(1, target[:, None], 0.0)


@LOSSES.register("hinge")
def hinge(scores: torch.Tensor, target: torch.Tensor, *, margin: float = 1.0) -> torch.Tensor:
    """The multiclass SVM loss of the notes (Weston & Watkins 1999): ``sum_{j != y} max(0, s_j - s_y + margin)``."""
    return _margins(scores, target, margin).sum(1)


@LOSSES.register("squared_hinge")
def squared_hinge(scores: torch.Tensor, target: torch.Tensor, *, margin: float = 1.0) -> torch.Tensor:
    """The squared multiclass SVM loss: ``sum_{j != y} max(0, s_j - s_y + margin)^2``."""
    return _margins(scores, target, margin).square().sum(1)


@LOSSES.register("bce", soft_targets=True)
def bce(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """One-vs-all binary cross-entropy with logits against the one-hot target (or the given class
    probabilities ``t``), averaged over the ``C`` classes:
    ``-(1/C) sum_j [t_j log sigmoid(s_j) + (1 - t_j) log(1 - sigmoid(s_j))]``."""
    onehot = target if target.is_floating_point() else F.one_hot(target, scores.shape[1])
    onehot = onehot.to(scores.dtype)
    return F.binary_cross_entropy_with_logits(scores, onehot, reduction="none").mean(1)


def loss_options(name: str) -> dict[str, object]:
    """The options of loss ``name`` with their defaults (what ``null`` stands for)."""
    params = inspect.signature(LOSSES.get(name).obj).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def takers(option: str) -> list[str]:
    """The losses that take ``option``."""
    return [name for name in LOSSES if option in loss_options(name)]


def soft_target_losses() -> list[str]:
    """The losses that take class probabilities as targets."""
    return [name for name in LOSSES if LOSSES.metadata(name).get("soft_targets")]


def build_loss(name: str, **options: float | None) -> Loss:
    """Loss ``name`` with ``options`` bound (``None``: the loss's default). An option the loss does not
    take is a ``ConfigError`` naming ``task.<option>`` and the losses that take it, unless it is ``None``
    or its ``OFF`` value."""
    if name not in LOSSES:
        raise ConfigError(f"task.loss: {LOSSES.unknown_message(name)}")
    own = loss_options(name)
    for key, value in options.items():
        if value is not None and key not in own and value != OFF.get(key):
            raise ConfigError(f"task.{key}={value} applies to task.loss={'|'.join(takers(key))} only; "
                              f"set task.{key}=null with task.loss={name}")
    return functools.partial(LOSSES.get(name).obj, **{k: v for k, v in options.items() if v is not None and k in own})
