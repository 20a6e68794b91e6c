"""Network in Network (Lin, Chen & Yan, "Network in network", ICLR 2014 / arXiv 2013).

Each "mlpconv" block is a k x k convolution followed by two 1x1 convolutions (a small MLP slid over
the image), all with ReLU. The CIFAR-10 configuration stacks three blocks, 192-160-96 (5x5),
192-192-192 (5x5) and 192-192-10 (3x3), with 3x3/2 max and average pooling and dropout 0.5
between them, and replaces fully connected layers by global average pooling of the last block's
class maps: 966,986 parameters at 10 classes on 32x32 inputs.

Head: the last 1x1 convolution of the third block produces one map per class, so it is the
classifier (``classifier.1``, see :class:`ClassMapClassifier`): ``forward_features`` stops at the
192 maps before it (``num_features=192``), ``forward_head`` applies it and global average pooling,
``forward_head(x, pre_logits=True)`` is the 192-d average-pooled feature and
``reset_classifier(n)`` swaps in a new 1x1 convolution with ``n`` output maps. The class maps are
linear by default (the released Caffe model also applies a ReLU to them: ``final_relu=True``).
``act`` (default ``relu``) is the activation of every mlpconv layer (:func:`zoo.models.layers.make_act`;
``maxout`` doubles each layer's outputs).

``nin_small`` halves every width (96-80-48 / 96-96-96 / 96-96-classes), max-pools twice after the
second block (the third works on 4x4 maps: 32 -> 16 -> 4 with 8x8 content such as the digits, and a
short global average) and uses no dropout: it memorises and trains in a fraction of the time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from zoo.models import register_model
from zoo.models.base import Classifier, sequential_feature_info
from zoo.models.layers import Act, act_width, make_act

_PAPER = "Lin et al. 2013, Network in network"


def class_conv(in_channels: int, num_classes: int) -> nn.Module:
    """The 1x1 convolution producing one map per class, N(0, 0.01) weights (identity for 0 classes)."""
    if num_classes <= 0:
        return nn.Identity()
    conv = nn.Conv2d(in_channels, num_classes, kernel_size=1)
    nn.init.normal_(conv.weight, 0.0, 0.01)
    nn.init.zeros_(conv.bias)
    return conv


def class_map_head(in_channels: int, num_classes: int, drop_rate: float, relu: bool) -> nn.Sequential:
    """Dropout, class-map 1x1 convolution (index 1), optional ReLU, global average pooling."""
    return nn.Sequential(
        nn.Dropout(drop_rate),
        class_conv(in_channels, num_classes),
        nn.ReLU() if relu else nn.Identity(),
        nn.AdaptiveAvgPool2d(1),
    )


class ClassMapClassifier(Classifier):
    """A classifier whose last layer is a 1x1 convolution to class maps, averaged globally (NiN,
    SqueezeNet). Subclasses set ``features`` and ``classifier = class_map_head(...)``."""

    classifier_attr = "classifier.1"
    # (``features`` and ``classifier`` are not annotated here: TorchScript reads class annotations, and these would
    # be strings under ``from __future__ import annotations``)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:  # pooling commutes with the 1x1 convolution: the pooled maps are its input
            return torch.flatten(self.classifier[-1](self.classifier[0](x)), 1)
        return torch.flatten(self.classifier(x), 1)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the class-map convolution by one with ``num_classes`` maps (identity for 0)."""
        old = self.classifier[1]
        param = next(old.parameters(), None)
        new = class_conv(self.num_features, num_classes)
        if param is not None:
            new = new.to(device=param.device, dtype=param.dtype)
        self.classifier[1] = new
        self.num_classes = num_classes

    def init_weights(self) -> None:
        """He-uniform convolutions with zero bias, except the class-map convolution (N(0, 0.01))."""
        for m in self.features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


def mlpconv(in_channels: int, widths: tuple[int, ...], kernel_size: int, act: Act = "relu") -> nn.Sequential:
    """A ``kernel_size`` convolution then 1x1 convolutions, each followed by ``act``."""
    layers: list[nn.Module] = []
    for i, width in enumerate(widths):
        k = kernel_size if i == 0 else 1
        layers += [nn.Conv2d(in_channels, act_width(width, act), k, padding=k // 2), make_act(act, width, inplace=True)]
        in_channels = width
    return nn.Sequential(*layers)


_POOLS: dict[str, type[nn.Module]] = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


@dataclass(frozen=True)
class NiNSpec:
    """Widths and kernels of the three mlpconv blocks (the third without its class-map layer), the
    3x3/2 pools after the first two blocks, and the dropout after them."""

    widths: tuple[tuple[int, ...], ...] = ((192, 160, 96), (192, 192, 192), (192, 192))
    kernels: tuple[int, ...] = (5, 5, 3)
    pools: tuple[tuple[str, ...], ...] = (("max",), ("avg",))
    drop_rate: float = 0.5


CANONICAL = NiNSpec()
SMALL = NiNSpec(
    widths=((96, 80, 48), (96, 96, 96), (96, 96)), pools=(("max",), ("max", "max")), drop_rate=0.0
)


class NiN(ClassMapClassifier):
    """Three mlpconv blocks with pooling and dropout between them, then the class-map head."""

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        drop_rate: float | None = None,
        final_relu: bool = False,
        spec: NiNSpec = CANONICAL,
        act: Act = "relu",
    ) -> None:
        super().__init__()
        drop_rate = spec.drop_rate if drop_rate is None else drop_rate
        layers: list[nn.Module] = []
        channels = in_chans
        for i, (widths, kernel) in enumerate(zip(spec.widths, spec.kernels)):
            layers.append(mlpconv(channels, widths, kernel, act))
            channels = widths[-1]
            if i < len(spec.pools):
                layers += [_POOLS[kind](3, stride=2, ceil_mode=True) for kind in spec.pools[i]]
                layers.append(nn.Dropout(drop_rate))
        self.num_classes = num_classes
        self.num_features = channels
        self.features = nn.Sequential(*layers)
        self.feature_info = sequential_feature_info(self.features)
        self.classifier = class_map_head(channels, num_classes, drop_rate=0.0, relu=final_relu)
        self.init_weights()


def _create(spec: NiNSpec, num_classes: int, in_chans: int, **kwargs: Any) -> NiN:
    return NiN(num_classes=num_classes, in_chans=in_chans, spec=spec, **kwargs)


@register_model(family="nin", input_size=32, paper=_PAPER)
def nin(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> NiN:
    """NiN, the paper's CIFAR-10 configuration (32x32 inputs)."""
    return _create(CANONICAL, num_classes, in_chans, **kwargs)


@register_model(family="nin", input_size=32, paper=_PAPER)
def nin_small(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> NiN:
    """NiN with half the widths, for fast training on 32x32 inputs."""
    return _create(SMALL, num_classes, in_chans, **kwargs)
