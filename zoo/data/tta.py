"""Test-time augmentation: average the softmax scores of several views of each test image.

Views of an ``(N, C, S, S)`` evaluation batch for a model with input side ``size``:

* ``flip``: the central crop and its mirror image.
* ``ten_crop``: crops at the four corners and the centre, and their mirror images (Krizhevsky et al.
  2012, sec. 4.1; the "10-crop testing" of He et al. 2015, sec. 3.4); ``mirror=False`` keeps the five
  crops only, for a model trained without flips (digits, text) that a mirror image would confuse. The crops come from the
  evaluation image when it is larger than the input (image folders are evaluated uncropped at
  ``data.resize_size`` then); images already at the input size (CIFAR, MNIST, in-memory data) are
  first padded by ``padding`` black pixels, the same padding as the training crops.
* ``multiscale``: the image resized so its side is each ``scale`` times the input size, with ten
  crops (or, ``views=full``, the whole resized image and its mirror, the fully convolutional form
  of He et al. 2015, which needs a model with global pooling) at every scale, all averaged; ``mirror``
  as for ``ten_crop``.

The wrapped model returns the log of the averaged probabilities, so the task's cross-entropy and
top-k metrics apply unchanged. Without TTA the single view is the central ``size`` crop.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ConfigError
from zoo.registry import Registry

Views = Callable[[torch.Tensor], Iterator[torch.Tensor]]
TTA: Registry[Views | None] = Registry("tta")


@TTA.register("none")
def no_views(size: int) -> None:
    """No test-time augmentation: the single central view."""
    return None


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top : top + size, left : left + size]


def five_crops(x: torch.Tensor, size: int) -> list[torch.Tensor]:
    """The four corner crops and the central crop of side ``size``."""
    h, w = x.shape[-2:]
    corners = [x[..., :size, :size], x[..., :size, w - size :], x[..., h - size :, :size], x[..., h - size :, w - size :]]
    return corners + [center_crop(x, size)]


def center_views(size: int) -> Views:
    def views(x: torch.Tensor) -> Iterator[torch.Tensor]:
        yield center_crop(x, size)

    return views


@TTA.register("flip")
def flip_views(size: int) -> Views:
    def views(x: torch.Tensor) -> Iterator[torch.Tensor]:
        crop = center_crop(x, size)
        yield crop
        yield crop.flip(-1)

    return views


def pad_black(x: torch.Tensor, padding: int, black: Sequence[float] = ()) -> torch.Tensor:
    """``x`` with ``padding`` black pixels on every side; ``black`` is the normalised value of black per
    channel (``(0 - mean) / std``; empty: 0)."""
    out = F.pad(x, (padding,) * 4)
    if any(black):
        border = F.pad(torch.zeros_like(x[:, :1]), (padding,) * 4, value=1.0)
        out = out + border * torch.tensor(list(black), device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return out


def _check_mirror(mirror: Any) -> bool:
    if not isinstance(mirror, bool):
        raise ConfigError(f"tta.mirror must be true or false, got {mirror!r}")
    return mirror


@TTA.register("ten_crop")
def ten_crop_views(size: int, padding: int = 4, black: Sequence[float] = (), mirror: bool = True) -> Views:
    mirror = _check_mirror(mirror)

    def views(x: torch.Tensor) -> Iterator[torch.Tensor]:
        if min(x.shape[-2:]) <= size:
            x = pad_black(center_crop(x, size), padding, black) if padding else center_crop(x, size)
        for crop in five_crops(x, size):
            yield crop
            if mirror:
                yield crop.flip(-1)

    return views


@TTA.register("multiscale")
def multiscale_views(size: int, scales: Sequence[float], padding: int = 4, views: str = "ten_crop",
                     black: Sequence[float] = (), mirror: bool = True) -> Views:
    if views not in ("ten_crop", "full"):
        raise ConfigError(f"tta.views must be ten_crop or full, got {views!r}")
    if views == "ten_crop" and min(scales) < 1:
        raise ConfigError(f"tta=multiscale with ten crops needs tta.scales >= 1 (crops of the input size); got {list(scales)}")
    per_scale = ten_crop_views(size, padding, black, mirror)

    def all_views(x: torch.Tensor) -> Iterator[torch.Tensor]:
        for scale in scales:
            side = round(scale * size)
            resized = x if side == x.shape[-1] else F.interpolate(x, size=(side, side), mode="bilinear",
                                                                   align_corners=False, antialias=side < x.shape[-1])
            if views == "full":
                yield resized
                if mirror:
                    yield resized.flip(-1)
            else:
                yield from per_scale(resized)

    return all_views


class TTAModel(nn.Module):
    """``model`` evaluated on every view of a batch; returns log of the mean softmax probabilities."""

    def __init__(self, model: nn.Module, views: Views) -> None:
        super().__init__()
        self.model, self.views = model, views

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor | None = None
        n = 0
        for view in self.views(x):
            out = self.model(view.contiguous())
            probs = (out[0] if isinstance(out, tuple) else out).float().softmax(-1)
            total = probs if total is None else total + probs
            n += 1
        assert total is not None
        return (total / n).clamp_min(1e-12).log()


def build_tta(cfg: dict[str, Any] | None, size: int, black: Sequence[float] = ()) -> Views | None:
    """The views of ``cfg`` (``{"name": "flip"|"ten_crop"|"multiscale"|"none", ...}``); ``None`` for none.
    ``black``: the normalised value of a black pixel per channel, for the views that pad."""
    cfg = {"name": "none", **(cfg or {})}
    if cfg["name"] == "multiscale" and (not cfg.get("scales") or min(cfg["scales"]) <= 0):
        raise ConfigError(f"tta=multiscale needs positive tta.scales (multiples of the input size), got {cfg.get('scales')}")
    pads = "black" in inspect.signature(TTA.get(cfg["name"]).obj).parameters
    return TTA.build_from(cfg, size=size, **({"black": list(black)} if pads else {}))
