"""Building blocks shared by the residual, dense and fractal families (resnet, densenet, fractalnet)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from zoo.models.base import Classifier


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a normalisation layer follows or precedes it)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


Stem = Literal["imagenet", "cifar"]


def stem_conv(stem: Stem, in_chans: int, width: int) -> tuple[nn.Conv2d, nn.Module]:
    """The first convolution and the pooling that ends the stem: 7x7/2 and a 3x3/2 max pool for
    224x224 inputs (``"imagenet"``), or a 3x3/1 convolution without pooling for 32x32 (``"cifar"``)."""
    if stem == "imagenet":
        return nn.Conv2d(in_chans, width, 7, 2, 3, bias=False), nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    if stem == "cifar":
        return conv3x3(in_chans, width), nn.Identity()
    raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")


def init_conv_bn(module: nn.Module, mode: Literal["fan_in", "fan_out"] = "fan_out") -> None:
    """He-normal convolutions (He et al. 2015, "Delving deep into rectifiers"), unit-scale zero-shift
    batch norms and zero linear biases, applied to every submodule of ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


class PooledClassifier(Classifier):
    """A classifier whose head is global average pooling followed by the linear layer named by
    ``classifier_attr``; subclasses only build the layers and write ``forward_features``."""

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return x if pre_logits else self.get_classifier()(x)


def linear_or_identity(in_features: int, num_classes: int) -> nn.Module:
    """The final layer: ``nn.Linear`` or, for ``num_classes == 0``, an identity (feature extractor)."""
    return nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

