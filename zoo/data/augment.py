"""Batched augmentation for the in-memory fast path: one call per mini-batch, no per-sample Python.

Each transform is ``f(batch, generator) -> batch`` on an ``(N, C, H, W)`` float tensor on any device.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from zoo.data.loaders import BatchTransform
from zoo.errors import ConfigError
from zoo.registry import Registry

AUGMENTATIONS: Registry[BatchTransform | None] = Registry("augmentation")


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


class RandomAffine:
    """Per-sample random rotation, isotropic scale and translation, applied with one ``grid_sample``.

    ``degrees`` is the maximum absolute rotation, ``translate`` the maximum shift as a fraction of
    the image side, ``scale`` the (min, max) zoom. Pixels moved in from outside copy the border.
    """

    def __init__(self, degrees: float = 10.0, translate: float = 0.1, scale: Sequence[float] = (0.9, 1.1)) -> None:
        if degrees < 0 or not 0 <= translate < 1 or len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise ConfigError(
                f"augmentation affine needs degrees >= 0, 0 <= translate < 1, 0 < scale[0] <= scale[1]; "
                f"got degrees={degrees}, translate={translate}, scale={list(scale)}"
            )
        self.degrees, self.translate, self.scale = degrees, translate, (float(scale[0]), float(scale[1]))

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        angle = _uniform(n, -math.radians(self.degrees), math.radians(self.degrees), gen)
        zoom = _uniform(n, *self.scale, gen)
        # affine_grid maps output to input coordinates in [-1, 1]: a shift of t*side is 2t there
        shift = _uniform(2 * n, -2 * self.translate, 2 * self.translate, gen).view(n, 2)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False, padding_mode="border")


@AUGMENTATIONS.register("none")
def _none() -> None:
    return None


@AUGMENTATIONS.register("affine")
def _affine(degrees: float = 10.0, translate: float = 0.1, scale: Sequence[float] = (0.9, 1.1)) -> BatchTransform:
    return RandomAffine(degrees, translate, scale)


def build_batch_augmentation(cfg: dict[str, Any] | None) -> BatchTransform | None:
    if not cfg:
        return None
    cfg = dict(cfg)
    name = cfg.pop("name")
    try:
        return AUGMENTATIONS.build(name, **cfg)
    except TypeError as e:
        raise ConfigError(f"augmentation {name!r}: {e}") from None
