"""VGG (Simonyan & Zisserman, "Very deep convolutional networks for large-scale image recognition",
ICLR 2015): stacks of 3x3 convolutions in five stages separated by 2x2 max pooling, then two
4,096-unit fully connected layers with dropout.

- ``vgg16`` / ``vgg19``: configurations D and E (13 / 16 convolutions, 138,357,544 / 143,667,240
  parameters at 1000 classes); ``vgg16_bn`` / ``vgg19_bn`` add batch normalisation after every
  convolution. Parameter names match ``torchvision.models.vgg16`` etc. so their state_dicts load.
- ``*_small``: 32x32 inputs. Same depth, an eighth of the widths (8-16-32-64-64), pooling after
  the first four stages only (32 -> 2), global average pooling, 256-unit hidden layers and no
  dropout by default (``drop_rate=0.5`` restores it). Without batch norm, 13-16 plain layers only
  train reliably under Adam at lr 1e-3 when the layers are this narrow.

``act`` (default ``relu``) is the activation after every convolution and hidden layer
(:func:`zoo.models.layers.make_act`); ``act="maxout"`` doubles their outputs (and batch norms).

Weights use He (fan-in) initialisation (:func:`zoo.models.alexnet.he_init`), the final layer
starts at zero; the VGG paper instead initialised its deeper nets from a trained shallower one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from zoo.models import register_model
from zoo.models.alexnet import ConvMLPClassifier
from zoo.models.layers import Act, act_width, make_act

_PAPER = "Simonyan & Zisserman 2015, Very deep convolutional networks for large-scale image recognition"

#: convolutions per stage of configurations D (16 weight layers) and E (19)
DEPTHS: dict[int, tuple[int, ...]] = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}


@dataclass(frozen=True)
class VGGSpec:
    """Stage widths, how many stages end in a 2x2 max pool, adaptive pool side, hidden width, dropout."""

    widths: tuple[int, ...] = (64, 128, 256, 512, 512)
    pooled_stages: int = 5
    pool_size: int = 7
    hidden: int = 4096
    drop_rate: float = 0.5


CANONICAL = VGGSpec()
SMALL = VGGSpec(widths=(8, 16, 32, 64, 64), pooled_stages=4, pool_size=1, hidden=256, drop_rate=0.0)


def make_features(
    depths: tuple[int, ...], spec: VGGSpec, in_chans: int, batch_norm: bool, act: Act = "relu"
) -> nn.Sequential:
    """Conv3x3 (+ BN) + ``act`` per layer, a 2x2 max pool after each of the first ``pooled_stages`` stages."""
    layers: list[nn.Module] = []
    channels = in_chans
    for stage, (depth, width) in enumerate(zip(depths, spec.widths)):
        for _ in range(depth):
            out = act_width(width, act)
            layers.append(nn.Conv2d(channels, out, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(make_act(act, width, inplace=True))
            channels = width
        if stage < spec.pooled_stages:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


class VGG(ConvMLPClassifier):
    """VGG: :func:`make_features` -> adaptive average pool -> Linear-act-Dropout x2 -> Linear."""

    def __init__(
        self,
        depth: int,
        spec: VGGSpec = CANONICAL,
        num_classes: int = 1000,
        in_chans: int = 3,
        batch_norm: bool = False,
        drop_rate: float | None = None,
        act: Act = "relu",
    ) -> None:
        if depth not in DEPTHS:
            raise ValueError(f"VGG depth must be one of {sorted(DEPTHS)}, got {depth}")
        features = make_features(DEPTHS[depth], spec, in_chans, batch_norm, act)
        drop_rate = spec.drop_rate if drop_rate is None else drop_rate
        super().__init__(
            features, spec.widths[-1], spec.pool_size, spec.hidden, num_classes, drop_rate, dropout_first=False, act=act
        )


def _create(depth: int, small: bool, batch_norm: bool, num_classes: int, in_chans: int, **kwargs: Any) -> VGG:
    spec = SMALL if small else CANONICAL
    return VGG(depth, spec, num_classes=num_classes, in_chans=in_chans, batch_norm=batch_norm, **kwargs)


@register_model(family="vgg", input_size=224, paper=_PAPER, torchvision=True)
def vgg16(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> VGG:
    """VGG-16 (configuration D)."""
    return _create(16, False, False, num_classes, in_chans, **kwargs)


@register_model(family="vgg", input_size=224, paper=_PAPER, torchvision=True)
def vgg16_bn(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> VGG:
    """VGG-16 with batch normalisation."""
    return _create(16, False, True, num_classes, in_chans, **kwargs)


@register_model(family="vgg", input_size=224, paper=_PAPER, torchvision=True)
def vgg19(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> VGG:
    """VGG-19 (configuration E)."""
    return _create(19, False, False, num_classes, in_chans, **kwargs)


@register_model(family="vgg", input_size=224, paper=_PAPER, torchvision=True)
def vgg19_bn(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> VGG:
    """VGG-19 with batch normalisation."""
    return _create(19, False, True, num_classes, in_chans, **kwargs)


@register_model(family="vgg", input_size=32, paper=_PAPER)
def vgg16_small(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> VGG:
    """VGG-16 for 32x32 inputs (widths 8-16-32-64-64, four pools, 256-unit MLP)."""
    return _create(16, True, False, num_classes, in_chans, **kwargs)


@register_model(family="vgg", input_size=32, paper=_PAPER)
def vgg16_bn_small(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> VGG:
    """VGG-16 with batch normalisation for 32x32 inputs."""
    return _create(16, True, True, num_classes, in_chans, **kwargs)


@register_model(family="vgg", input_size=32, paper=_PAPER)
def vgg19_small(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> VGG:
    """VGG-19 for 32x32 inputs (widths 8-16-32-64-64, four pools, 256-unit MLP)."""
    return _create(19, True, False, num_classes, in_chans, **kwargs)


@register_model(family="vgg", input_size=32, paper=_PAPER)
def vgg19_bn_small(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> VGG:
    """VGG-19 with batch normalisation for 32x32 inputs."""
    return _create(19, True, True, num_classes, in_chans, **kwargs)
