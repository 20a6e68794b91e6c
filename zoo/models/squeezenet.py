"""SqueezeNet (Iandola et al., "SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and
<0.5MB model size", arXiv 2016).

Fire modules: a 1x1 "squeeze" convolution followed by parallel 1x1 and 3x3 "expand" convolutions
whose outputs are concatenated. Version 1.0 (1,248,424 parameters at 1000 classes) has a 7x7/2
stem with 96 maps and pools after fire4 and fire8; version 1.1 (1,235,496) a 3x3/2 stem with 64
maps and pools after fire3 and fire5, for 2.4x less computation. Both end in dropout, a 1x1
convolution to class maps with ReLU and global average pooling (:class:`ClassMapClassifier`: the
classifier is the convolution ``classifier.1``, ``num_features=512``, ``reset_classifier`` swaps in
a new 1x1 convolution). Parameter names match ``torchvision.models.squeezenet1_0`` / ``1_1``.

``*_small`` take 32x32 inputs: a padded 3x3/2 stem (96 or 64 maps) so the three 3x3/2 max pools
give 16 -> 8 -> 4 -> 2 pixel maps (the canonical stems would leave 1x1 maps), linear class maps
(``final_relu=False``: with the ReLU a class whose map turns negative gets a constant zero logit and
no gradient, which kills small-data runs) and no dropout by default (``drop_rate=0.5`` restores it).

``act`` (default ``relu``) replaces the ReLU after the stem and in every fire module
(:func:`zoo.models.layers.make_act`; ``maxout`` doubles the stem's, squeeze and expand outputs);
the class maps' optional ReLU stays ``final_relu``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from zoo.models import register_model
from zoo.models.base import sequential_feature_info
from zoo.models.layers import Act, act_width, make_act
from zoo.models.nin import ClassMapClassifier, class_map_head

_PAPER = "Iandola et al. 2016, SqueezeNet: AlexNet-level accuracy with 50x fewer parameters"

Layer = tuple[int, int] | Literal["M"]

#: after the stem: "M" is a 3x3/2 max pool, (s, e) a fire module with s squeeze and 2 x e expand maps
LAYERS: dict[str, tuple[Layer, ...]] = {
    "1_0": ("M", (16, 64), (16, 64), (32, 128), "M", (32, 128), (48, 192), (48, 192), (64, 256), "M", (64, 256)),
    "1_1": ("M", (16, 64), (16, 64), "M", (32, 128), (32, 128), "M", (48, 192), (48, 192), (64, 256), (64, 256)),
}


@dataclass(frozen=True)
class SqueezeNetSpec:
    """Stem convolution (maps, kernel, stride, padding), head dropout and class-map ReLU."""

    stem: tuple[int, int, int, int]
    drop_rate: float = 0.5
    final_relu: bool = True


SPECS: dict[str, SqueezeNetSpec] = {
    "1_0": SqueezeNetSpec((96, 7, 2, 0)),
    "1_1": SqueezeNetSpec((64, 3, 2, 0)),
    "1_0_small": SqueezeNetSpec((96, 3, 2, 1), drop_rate=0.0, final_relu=False),
    "1_1_small": SqueezeNetSpec((64, 3, 2, 1), drop_rate=0.0, final_relu=False),
}


class Fire(nn.Module):
    """Squeeze 1x1 -> act -> [expand 1x1, expand 3x3] -> act -> concatenate."""

    def __init__(self, in_channels: int, squeeze: int, expand1x1: int, expand3x3: int, act: Act = "relu") -> None:
        super().__init__()
        self.out_channels = expand1x1 + expand3x3
        self.squeeze = nn.Conv2d(in_channels, act_width(squeeze, act), kernel_size=1)
        self.squeeze_activation = make_act(act, squeeze, inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, act_width(expand1x1, act), kernel_size=1)
        self.expand1x1_activation = make_act(act, expand1x1, inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, act_width(expand3x3, act), kernel_size=3, padding=1)
        self.expand3x3_activation = make_act(act, expand3x3, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat(
            [self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1
        )


class SqueezeNet(ClassMapClassifier):
    """Stem convolution, fire modules and max pools, then the class-map head."""

    def __init__(
        self,
        version: Literal["1_0", "1_1"] = "1_0",
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float | None = None,
        final_relu: bool | None = None,
        small: bool = False,
        act: Act = "relu",
    ) -> None:
        super().__init__()
        if version not in LAYERS:
            raise ValueError(f"SqueezeNet version must be one of {sorted(LAYERS)}, got {version!r}")
        spec = SPECS[f"{version}_small" if small else version]
        channels, kernel, stride, padding = spec.stem
        stem = nn.Conv2d(in_chans, act_width(channels, act), kernel, stride, padding)
        layers: list[nn.Module] = [stem, make_act(act, channels, inplace=True)]
        for layer in LAYERS[version]:
            if layer == "M":
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True))
            else:
                squeeze, expand = layer
                layers.append(Fire(channels, squeeze, expand, expand, act))
                channels = 2 * expand
        self.num_classes = num_classes
        self.num_features = channels
        self.features = nn.Sequential(*layers)
        self.feature_info = sequential_feature_info(self.features)
        self.classifier = class_map_head(
            channels,
            num_classes,
            drop_rate=spec.drop_rate if drop_rate is None else drop_rate,
            relu=spec.final_relu if final_relu is None else final_relu,
        )
        self.init_weights()


def _create(version: Literal["1_0", "1_1"], small: bool, num_classes: int, in_chans: int, **kwargs: Any) -> SqueezeNet:
    return SqueezeNet(version, num_classes=num_classes, in_chans=in_chans, small=small, **kwargs)


@register_model(family="squeezenet", input_size=224, paper=_PAPER, torchvision=True)
def squeezenet1_0(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> SqueezeNet:
    """SqueezeNet 1.0."""
    return _create("1_0", False, num_classes, in_chans, **kwargs)


@register_model(family="squeezenet", input_size=224, paper=_PAPER, torchvision=True)
def squeezenet1_1(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> SqueezeNet:
    """SqueezeNet 1.1: 3x3 stem with 64 maps, earlier pooling (2.4x less computation than 1.0)."""
    return _create("1_1", False, num_classes, in_chans, **kwargs)


@register_model(family="squeezenet", input_size=32, paper=_PAPER)
def squeezenet1_0_small(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> SqueezeNet:
    """SqueezeNet 1.0 for 32x32 inputs (padded 3x3/2 stem, linear class maps)."""
    return _create("1_0", True, num_classes, in_chans, **kwargs)


@register_model(family="squeezenet", input_size=32, paper=_PAPER)
def squeezenet1_1_small(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> SqueezeNet:
    """SqueezeNet 1.1 for 32x32 inputs (padded 3x3/2 stem, linear class maps)."""
    return _create("1_1", True, num_classes, in_chans, **kwargs)
