"""AlexNet (Krizhevsky, Sutskever & Hinton, "ImageNet classification with deep convolutional neural
networks", NeurIPS 2012) and ZFNet (Zeiler & Fergus, "Visualizing and understanding convolutional
networks", ECCV 2014).

Both are five convolutions with ReLU and overlapping 3x3/2 max pooling, followed by two 4,096-unit
fully connected layers with dropout and the class scores:

- ``alexnet``: torchvision's single-tower layout 64-192-384-256-256 (61,100,840 parameters at 1000
  classes); parameter names match ``torchvision.models.alexnet`` so its state_dicts load.
- ``alexnet_original``: the paper's two-GPU layout 96-256-384-384-256, with conv2/4/5 split into two
  groups (each half sees only the maps on its own GPU) and local response normalisation after
  conv1 and conv2 (60,965,224 parameters).
- ``zfnet``: 7x7/2 first convolution and 5x5/2 second, 3x3 convolutions 384-384-256; at 224x224 the
  maps are 110 (conv1), 55 (pool1), 26 (conv2), 13 (pool2, conv3-5) and 6 (pool5), as in Fig. 3 of
  the paper. ``zfnet_wide`` widens layers 3-5 to 512-1024-512 (the paper's Table 3 variant).
- ``*_small``: 32x32 inputs (digits, CIFAR): a quarter of the widths (AlexNet 16-48-96-64-64,
  ZFNet 24-64-96-96-64), a 5x5/2 (AlexNet) or 3x3/1 (ZFNet) stem, padded overlapping pooling
  (32 -> 16 -> 8 -> 4), no pooling after conv5, a 2x2 adaptive pool, 256-unit hidden layers and
  no dropout by default (``drop_rate=0.5`` restores it). Narrow layers keep these normalisation-free
  networks stable under Adam at lr 1e-3; dropout slows their fitting more than a small model needs.

:class:`ConvMLPClassifier` (features -> adaptive average pool -> 3-layer MLP) is shared with VGG.
All weights use :func:`he_init`; the final layer starts at zero. ``act`` (default ``relu``) is the
activation after every convolution and hidden layer (:func:`zoo.models.layers.make_act`; PReLU per
channel); ``act="maxout"`` doubles those layers' outputs, so torchvision's weights no longer fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import torch
from torch import nn

from zoo.models import register_model
from zoo.models.base import Classifier, sequential_feature_info
from zoo.models.layers import Act, act_width, make_act

_ALEXNET_PAPER = "Krizhevsky et al. 2012, ImageNet classification with deep convolutional neural networks"
_ZFNET_PAPER = "Zeiler & Fergus 2014, Visualizing and understanding convolutional networks"


def mlp_head(
    in_features: int, hidden: int, num_classes: int, drop_rate: float, dropout_first: bool, act: Act = "relu"
) -> nn.Sequential:
    """Two ``hidden``-unit layers with activation ``act`` and dropout, then the class scores (index 6).

    ``dropout_first`` puts dropout before each hidden layer (torchvision's AlexNet) instead of after
    it (VGG); either way the layer indices match torchvision's ``classifier``.
    """
    layers: list[nn.Module] = []
    for width in (in_features, hidden):
        fc: list[nn.Module] = [nn.Linear(width, act_width(hidden, act)), make_act(act, hidden, inplace=True)]
        drop: list[nn.Module] = [nn.Dropout(drop_rate)]
        layers += drop + fc if dropout_first else fc + drop
    layers.append(nn.Linear(hidden, num_classes) if num_classes > 0 else nn.Identity())
    return nn.Sequential(*layers)


class ConvMLPClassifier(Classifier):
    """``features`` -> adaptive average pool to ``pool_size`` x ``pool_size`` -> :func:`mlp_head`."""

    classifier_attr = "classifier.6"

    def __init__(
        self,
        features: nn.Sequential,
        feature_channels: int,
        pool_size: int,
        hidden: int,
        num_classes: int,
        drop_rate: float,
        dropout_first: bool,
        act: Act = "relu",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_features = hidden
        self.features = features
        self.feature_info = sequential_feature_info(features)
        self.avgpool = nn.AdaptiveAvgPool2d(pool_size)
        in_features = feature_channels * pool_size * pool_size
        self.classifier = mlp_head(in_features, hidden, num_classes, drop_rate, dropout_first, act)
        he_init(self)
        if num_classes > 0:
            nn.init.zeros_(self.classifier[-1].weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        last = len(self.classifier) - 1
        for i, layer in enumerate(self.classifier):  # (no slice of the Sequential: TorchScript scripts this)
            if i < last or not pre_logits:
                x = layer(x)
        return x


def he_init(model: nn.Module) -> None:
    """He et al. 2015 (fan-in) normal weights for convolutions and linear layers, zero biases,
    unit/zero batch norm: it preserves the forward signal, so these plain, mostly normalisation-free
    networks train from scratch (the VGG paper initialised its deeper nets from a shallower one)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@dataclass(frozen=True)
class Conv:
    """A convolution + activation, then optionally local response normalisation and max pooling."""

    channels: int
    kernel: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    lrn: bool = False
    pool: Callable[[], nn.Module] | None = None

    def build(self, in_channels: int, act: Act = "relu") -> list[nn.Module]:
        out = act_width(self.channels, act)
        conv = nn.Conv2d(in_channels, out, self.kernel, self.stride, self.padding, groups=self.groups)
        layers: list[nn.Module] = [conv, make_act(act, self.channels, inplace=True)]
        if self.lrn:
            # the paper's k=2, n=5, alpha=1e-4, beta=0.75; PyTorch divides alpha by n
            layers.append(nn.LocalResponseNorm(size=5, alpha=5e-4, beta=0.75, k=2.0))
        if self.pool is not None:
            layers.append(self.pool())
        return layers


@dataclass(frozen=True)
class AlexNetSpec:
    """A five-convolution network: its layers, the adaptive pool side, hidden width, dropout."""

    convs: tuple[Conv, ...]
    pool_size: int = 6
    hidden: int = 4096
    drop_rate: float = 0.5


# overlapping 3x3/2 max pooling
_P = partial(nn.MaxPool2d, 3, 2)
_P_CEIL = partial(nn.MaxPool2d, 3, 2, ceil_mode=True)  # ZFNet: 110 -> 55, 26 -> 13, 13 -> 6
_P_PAD = partial(nn.MaxPool2d, 3, 2, padding=1)  # small variants: halves even sides (16 -> 8)

SPECS: dict[str, AlexNetSpec] = {
    "alexnet": AlexNetSpec(
        (Conv(64, 11, 4, 2, pool=_P), Conv(192, 5, padding=2, pool=_P), Conv(384, 3, padding=1),
         Conv(256, 3, padding=1), Conv(256, 3, padding=1, pool=_P))
    ),
    "alexnet_original": AlexNetSpec(
        (Conv(96, 11, 4, 2, lrn=True, pool=_P), Conv(256, 5, padding=2, groups=2, lrn=True, pool=_P),
         Conv(384, 3, padding=1), Conv(384, 3, padding=1, groups=2), Conv(256, 3, padding=1, groups=2, pool=_P))
    ),
    "alexnet_small": AlexNetSpec(
        (Conv(16, 5, 2, 2, pool=_P_PAD), Conv(48, 5, padding=2, pool=_P_PAD), Conv(96, 3, padding=1),
         Conv(64, 3, padding=1), Conv(64, 3, padding=1)),
        pool_size=2,
        hidden=256,
        drop_rate=0.0,
    ),
    "zfnet": AlexNetSpec(
        (Conv(96, 7, 2, 1, lrn=True, pool=_P_CEIL), Conv(256, 5, 2, lrn=True, pool=_P_CEIL), Conv(384, 3, padding=1),
         Conv(384, 3, padding=1), Conv(256, 3, padding=1, pool=_P_CEIL))
    ),
    "zfnet_wide": AlexNetSpec(
        (Conv(96, 7, 2, 1, lrn=True, pool=_P_CEIL), Conv(256, 5, 2, lrn=True, pool=_P_CEIL), Conv(512, 3, padding=1),
         Conv(1024, 3, padding=1), Conv(512, 3, padding=1, pool=_P_CEIL))
    ),
    "zfnet_small": AlexNetSpec(
        (Conv(24, 3, padding=1, lrn=True, pool=_P_PAD), Conv(64, 5, 2, 2, lrn=True, pool=_P_PAD),
         Conv(96, 3, padding=1), Conv(96, 3, padding=1), Conv(64, 3, padding=1)),
        pool_size=2,
        hidden=256,
        drop_rate=0.0,
    ),
}  # fmt: skip


class AlexNet(ConvMLPClassifier):
    """AlexNet-style network built from an :class:`AlexNetSpec` (also ZFNet)."""

    def __init__(
        self,
        spec: AlexNetSpec,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float | None = None,
        act: Act = "relu",
    ) -> None:
        layers: list[nn.Module] = []
        channels = in_chans
        for conv in spec.convs:
            layers += conv.build(channels, act)
            channels = conv.channels
        super().__init__(
            nn.Sequential(*layers),
            channels,
            spec.pool_size,
            spec.hidden,
            num_classes,
            spec.drop_rate if drop_rate is None else drop_rate,
            dropout_first=True,
            act=act,
        )


def _create(variant: str, num_classes: int, in_chans: int, **kwargs: Any) -> AlexNet:
    return AlexNet(SPECS[variant], num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model(family="alexnet", input_size=224, paper=_ALEXNET_PAPER, torchvision=True)
def alexnet(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> AlexNet:
    """AlexNet, torchvision's single-tower 64-192-384-256-256 layout."""
    return _create("alexnet", num_classes, in_chans, **kwargs)


@register_model(family="alexnet", input_size=224, paper=_ALEXNET_PAPER)
def alexnet_original(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> AlexNet:
    """AlexNet as in the paper: 96-256-384-384-256, two groups in conv2/4/5, LRN after conv1/2."""
    return _create("alexnet_original", num_classes, in_chans, **kwargs)


@register_model(family="alexnet", input_size=32, paper=_ALEXNET_PAPER)
def alexnet_small(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> AlexNet:
    """AlexNet for 32x32 inputs: quarter widths, 5x5/2 stem, two padded pools (32-16-8-4), 256-unit MLP."""
    return _create("alexnet_small", num_classes, in_chans, **kwargs)


@register_model(family="alexnet", input_size=224, paper=_ZFNET_PAPER)
def zfnet(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> AlexNet:
    """ZFNet: 7x7/2 and 5x5/2 convolutions, 3x3 convolutions 384-384-256, LRN after conv1/2."""
    return _create("zfnet", num_classes, in_chans, **kwargs)


@register_model(family="alexnet", input_size=224, paper=_ZFNET_PAPER)
def zfnet_wide(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> AlexNet:
    """ZFNet with 512-1024-512 maps in layers 3-5 (the paper's Table 3 variant)."""
    return _create("zfnet_wide", num_classes, in_chans, **kwargs)


@register_model(family="alexnet", input_size=32, paper=_ZFNET_PAPER)
def zfnet_small(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> AlexNet:
    """ZFNet for 32x32 inputs: quarter widths, 3x3/1 stem, 5x5/2 conv2, padded pools (32-16-8-4), 256-unit MLP."""
    return _create("zfnet_small", num_classes, in_chans, **kwargs)
