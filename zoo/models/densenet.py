"""DenseNet (Huang, Liu, van der Maaten & Weinberger, "Densely connected convolutional networks",
CVPR 2017).

Every layer of a dense block sees the concatenation of all earlier feature maps of the block and
adds ``growth_rate`` (k) maps of its own. DenseNet-BC layers are BN-ReLU-conv1x1 (4k maps, the
"bottleneck") then BN-ReLU-conv3x3 (k maps); transitions (BN-ReLU-conv1x1-avgpool 2x2) keep a
``compression`` fraction (0.5) of the maps.

- ``densenet121/169/201/161``: the ImageNet networks, torchvision layout and state_dict keys
  (``features.denseblock1.denselayer1.norm1.weight``, ``classifier.weight``).
- ``densenet_bc100_k12`` (769,162 parameters at 10 classes) and ``densenet_bc40_k12``: the CIFAR
  DenseNet-BC, a 3x3 stem convolution with 2k maps and three dense blocks of (L - 4) / 6 layers.

``drop_path_rate=r`` drops each dense layer's new maps per sample (stochastic depth, Huang et al. 2016, in
the per-sample form of :func:`zoo.models.layers.make_drop_path`), layer ``l`` of all ``L`` with ``p = l / L * r``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from zoo.models import register_model
from zoo.models.base import FeatureInfo
from zoo.models.layers import (
    PooledClassifier,
    Stem,
    conv1x1,
    conv3x3,
    init_conv_bn,
    linear_or_identity,
    linear_rates,
    make_drop_path,
    stem_conv,
)

_PAPER = "Huang et al. 2017, Densely connected convolutional networks"


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1 to ``bn_size * growth_rate`` maps, BN-ReLU-conv3x3 to ``growth_rate`` maps.

    ``memory_efficient`` recomputes the concatenation and bottleneck in the backward pass instead of
    storing them (Pleiss et al. 2017), trading compute for memory.
    """

    def __init__(
        self, in_features: int, growth_rate: int, bn_size: int, drop_rate: float, memory_efficient: bool = False,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = conv1x1(in_features, bn_size * growth_rate)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(bn_size * growth_rate, growth_rate)
        self.dropout = nn.Dropout(drop_rate)
        self.drop_path = make_drop_path(drop_path)
        self.memory_efficient = memory_efficient

    def bottleneck(self, *features: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if self.memory_efficient and self.training and any(f.requires_grad for f in features):
            out = checkpoint(self.bottleneck, *features, use_reentrant=False)
        else:
            out = self.bottleneck(*features)
        return self.drop_path(self.dropout(self.conv2(self.relu2(self.norm2(out)))))


class DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers ``denselayer1 ..``; returns the input and all their maps, concatenated."""

    def __init__(self, num_layers: int, in_features: int, growth_rate: int, drop_paths: Sequence[float] = (),
                 **layer_kwargs: Any) -> None:
        super().__init__()
        drop_paths = list(drop_paths) or [0.0] * num_layers
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(in_features + i * growth_rate, growth_rate,
                                                             drop_path=drop_paths[i], **layer_kwargs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-ReLU-conv1x1 to ``out_features`` maps, then 2x2 average pooling."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_features)
        self.relu = nn.ReLU(inplace=True)
        self.conv = conv1x1(in_features, out_features)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


class DenseNet(PooledClassifier):
    """DenseNet-BC: ``features`` (stem, dense blocks, transitions, ``norm5``), ReLU, global pool,
    ``classifier``."""

    classifier_attr = "classifier"

    def __init__(
        self,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        num_init_features: int = 64,
        bn_size: int = 4,
        drop_rate: float = 0.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        compression: float = 0.5,
        stem: Stem = "imagenet",
        memory_efficient: bool = False,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 < compression <= 1.0:
            raise ValueError(f"compression must be in (0, 1], got {compression}")
        conv0, pool0 = stem_conv(stem, in_chans, num_init_features)
        # the CIFAR stem is the bare convolution: the first dense layer pre-activates it
        stem_layers = [("conv0", conv0)]
        if stem == "imagenet":
            stem_layers += [("norm0", nn.BatchNorm2d(num_init_features)), ("relu0", nn.ReLU(inplace=True)), ("pool0", pool0)]
        self.features = nn.Sequential(OrderedDict(stem_layers))
        # the stem's map: after relu0 (stride 2, then pool0 halves it again) or the bare CIFAR conv0
        imagenet = stem == "imagenet"
        self.feature_info = [FeatureInfo("features.relu0" if imagenet else "features.conv0", num_init_features, 2 if imagenet else 1)]
        reduction = 4 if imagenet else 1
        layer_kwargs = {"bn_size": bn_size, "drop_rate": drop_rate, "memory_efficient": memory_efficient}
        channels = num_init_features
        rates = linear_rates(sum(block_config), drop_path_rate)
        for i, num_layers in enumerate(block_config):
            first = sum(block_config[:i])
            block = DenseBlock(num_layers, channels, growth_rate, rates[first:first + num_layers], **layer_kwargs)
            self.features.add_module(f"denseblock{i + 1}", block)
            channels += num_layers * growth_rate
            self.feature_info.append(FeatureInfo(f"features.denseblock{i + 1}", channels, reduction))
            if i != len(block_config) - 1:
                out = int(channels * compression)
                self.features.add_module(f"transition{i + 1}", Transition(channels, out))
                channels, reduction = out, reduction * 2
        self.features.add_module(f"norm{len(block_config) + 1}", nn.BatchNorm2d(channels))
        self.relu = nn.ReLU(inplace=True)
        # the last block's map is taken after the final BN-ReLU, as forward_features returns it
        self.feature_info[-1] = self.feature_info[-1]._replace(module="relu")
        self.num_features = channels
        self.num_classes = num_classes
        self.classifier = linear_or_identity(channels, num_classes)
        init_conv_bn(self, mode="fan_in")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.features(x))


def _densenet(
    growth_rate: int, block_config: Sequence[int], num_init_features: int, num_classes: int, in_chans: int, **kwargs: Any
) -> DenseNet:
    """ImageNet DenseNet-BC (torchvision layout): 7x7/2 stem and max pool, four dense blocks."""
    return DenseNet(growth_rate, block_config, num_init_features, num_classes=num_classes, in_chans=in_chans, **kwargs)


def _densenet_bc_cifar(depth: int, growth_rate: int, num_classes: int, in_chans: int, **kwargs: Any) -> DenseNet:
    """CIFAR DenseNet-BC with L = ``depth`` layers: three blocks of (L - 4) / 6 bottleneck layers."""
    if (depth - 4) % 6:
        raise ValueError(f"DenseNet-BC depth must be 6n+4, got {depth}")
    n = (depth - 4) // 6
    kwargs = {"stem": "cifar", **kwargs}
    return DenseNet(growth_rate, (n, n, n), 2 * growth_rate, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model(family="densenet", input_size=224, paper=_PAPER, torchvision=True)
def densenet121(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> DenseNet:
    """DenseNet-121 (k=32, blocks 6-12-24-16)."""
    return _densenet(32, (6, 12, 24, 16), 64, num_classes, in_chans, **kwargs)


@register_model(family="densenet", input_size=224, paper=_PAPER, torchvision=True)
def densenet169(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> DenseNet:
    """DenseNet-169 (k=32, blocks 6-12-32-32)."""
    return _densenet(32, (6, 12, 32, 32), 64, num_classes, in_chans, **kwargs)


@register_model(family="densenet", input_size=224, paper=_PAPER, torchvision=True)
def densenet201(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> DenseNet:
    """DenseNet-201 (k=32, blocks 6-12-48-32)."""
    return _densenet(32, (6, 12, 48, 32), 64, num_classes, in_chans, **kwargs)


@register_model(family="densenet", input_size=224, paper=_PAPER, torchvision=True)
def densenet161(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> DenseNet:
    """DenseNet-161 (k=48, blocks 6-12-36-24, 96 stem maps)."""
    return _densenet(48, (6, 12, 36, 24), 96, num_classes, in_chans, **kwargs)


@register_model(family="densenet", input_size=32, paper=_PAPER)
def densenet_bc100_k12(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> DenseNet:
    """CIFAR DenseNet-BC, L=100, k=12 (three blocks of 16 layers)."""
    return _densenet_bc_cifar(100, 12, num_classes, in_chans, **kwargs)


@register_model(family="densenet", input_size=32, paper=_PAPER)
def densenet_bc40_k12(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> DenseNet:
    """CIFAR DenseNet-BC, L=40, k=12 (three blocks of 6 layers): small enough for CPU training."""
    return _densenet_bc_cifar(40, 12, num_classes, in_chans, **kwargs)
