"""GoogLeNet / Inception v1 (Szegedy et al., "Going deeper with convolutions", CVPR 2015).

A stem (7x7/2 convolution, max pool, 1x1 and 3x3 convolutions, max pool) and nine inception
modules (3a-3b, 4a-4e, 5a-5b, Table 1 of the paper) whose four branches (1x1; 1x1 reduction then
3x3; 1x1 reduction then "5x5"; 3x3 max pool then 1x1 projection) are concatenated, then global
average pooling, dropout and one linear layer. Two auxiliary classifiers (average pool, 1x1
convolution, 1024-unit layer, 70% dropout, linear) sit on the outputs of 4a and 4d; with
``aux_logits=True`` the model returns ``(logits, aux1, aux2)`` in training mode only (the training
task weights the auxiliary losses, 0.3 in the paper) and just the logits in eval mode, so the
auxiliary heads are unused at inference.

Layout and parameter names follow ``torchvision.models.googlenet`` (batch-normalised convolutions
as in Inception v2, 6,624,904 parameters without the auxiliary heads), so its state_dicts load.
Like torchvision, the "5x5" branch uses a 3x3 kernel by default (``branch3_kernel=5`` gives the
paper's 5x5); torchvision's ``transform_input`` (re-normalising ImageNet-normalised inputs) is not
part of the model: the data pipeline owns normalisation. Dropout before the classifier is the
paper's 40% (torchvision: 20%); with both auxiliary heads the model has 13,004,888 parameters.

``googlenet_small`` takes 32x32 inputs: a quarter of every width, a 3x3/1 stem convolution, no
second stem pool (maps 32 -> 16 for inception 3, 8 for 4, 4 for 5), 2x2 auxiliary pools and
256-unit auxiliary layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.models import register_model
from zoo.models.base import Classifier, FeatureInfo

_PAPER = "Szegedy et al. 2015, Going deeper with convolutions"

#: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection) per inception module, Table 1
INCEPTIONS: dict[str, tuple[int, int, int, int, int, int]] = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


@dataclass(frozen=True)
class GoogLeNetSpec:
    """Width multiplier, stem convolution, whether the stem ends in a pool, auxiliary pool side."""

    width: float = 1.0
    stem_kernel: int = 7
    stem_stride: int = 2
    stem_pool2: bool = True
    aux_pool: int = 4

    def channels(self, c: int) -> int:
        return max(1, round(c * self.width))


CANONICAL = GoogLeNetSpec()
SMALL = GoogLeNetSpec(width=0.25, stem_kernel=3, stem_stride=1, stem_pool2=False, aux_pool=2)


class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3), ReLU."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _reduce_then(in_channels: int, reduce: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        BasicConv2d(in_channels, reduce, 1), BasicConv2d(reduce, out_channels, kernel_size, padding=kernel_size // 2)
    )


class Inception(nn.Module):
    """Four parallel branches concatenated along channels."""

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        branch3_kernel: int = 3,
    ) -> None:
        super().__init__()
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj
        self.branch1 = BasicConv2d(in_channels, ch1x1, 1)
        self.branch2 = _reduce_then(in_channels, ch3x3red, ch3x3, 3)
        self.branch3 = _reduce_then(in_channels, ch5x5red, ch5x5, branch3_kernel)
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True), BasicConv2d(in_channels, pool_proj, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier: adaptive average pool, 1x1 convolution, ReLU layer, dropout, linear."""

    def __init__(
        self, in_channels: int, num_classes: int, pool_size: int, width: int, hidden: int, drop_rate: float
    ) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.conv = BasicConv2d(in_channels, width, 1)
        self.fc1 = nn.Linear(width * pool_size * pool_size, hidden)
        self.dropout = nn.Dropout(drop_rate)
        self.fc2: nn.Module = nn.Identity()
        self.reset_classifier(num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        fc = nn.Linear(self.fc1.out_features, num_classes) if num_classes > 0 else nn.Identity()
        self.fc2 = fc.to(device=self.fc1.weight.device, dtype=self.fc1.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.conv(self.pool(x)), 1)
        return self.fc2(self.dropout(F.relu(self.fc1(x), inplace=True)))


class GoogLeNet(Classifier):
    """GoogLeNet; ``forward`` returns ``(logits, aux1, aux2)`` when training with ``aux_logits``."""

    classifier_attr = "fc"
    # added by name (``inception3a`` ... ``inception5b``) from :data:`INCEPTIONS` in ``__init__``
    inception3a: Inception
    inception3b: Inception
    inception4a: Inception
    inception4b: Inception
    inception4c: Inception
    inception4d: Inception
    inception4e: Inception
    inception5a: Inception
    inception5b: Inception

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        aux_logits: bool = True,
        drop_rate: float = 0.4,
        aux_drop_rate: float = 0.7,
        branch3_kernel: int = 3,
        spec: GoogLeNetSpec = CANONICAL,
    ) -> None:
        super().__init__()
        c = spec.channels
        self.num_classes = num_classes
        self.conv1 = BasicConv2d(in_chans, c(64), spec.stem_kernel, spec.stem_stride, spec.stem_kernel // 2)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(c(64), c(64), 1)
        self.conv3 = BasicConv2d(c(64), c(192), 3, padding=1)
        self.maxpool2: nn.Module = nn.MaxPool2d(3, stride=2, ceil_mode=True) if spec.stem_pool2 else nn.Identity()
        channels = {"stem": c(192)}
        previous = "stem"
        for name, widths in INCEPTIONS.items():
            block = Inception(channels[previous], *(c(w) for w in widths), branch3_kernel=branch3_kernel)
            self.add_module(f"inception{name}", block)
            channels[name], previous = block.out_channels, name
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.aux1: InceptionAux | None = None
        self.aux2: InceptionAux | None = None
        if aux_logits:
            aux_args = (num_classes, spec.aux_pool, c(128), c(1024), aux_drop_rate)
            self.aux1 = InceptionAux(channels["4a"], *aux_args)
            self.aux2 = InceptionAux(channels["4d"], *aux_args)
        self.num_features = channels["5b"]
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.fc: nn.Module = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        stem = spec.stem_stride * 2  # after maxpool1
        inception3 = stem * (2 if spec.stem_pool2 else 1)
        self.feature_info = [
            FeatureInfo("conv1", c(64), spec.stem_stride),
            FeatureInfo("conv3", c(192), stem),
            FeatureInfo("inception3b", channels["3b"], inception3),
            FeatureInfo("inception4e", channels["4e"], inception3 * 2),
            FeatureInfo("inception5b", channels["5b"], inception3 * 4),
        ]
        _init_weights(self)

    def _forward_features(self, x: torch.Tensor, with_aux: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        aux: list[torch.Tensor] = []
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        if with_aux and self.aux1 is not None:
            aux.append(self.aux1(x))
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        if with_aux and self.aux2 is not None:
            aux.append(self.aux2(x))
        x = self.maxpool4(self.inception4e(x))
        return self.inception5b(self.inception5a(x)), aux

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_features(x, with_aux=False)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.avgpool(x), 1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:  # type: ignore[override]
        if not (self.training and self.aux1 is not None):
            return self.forward_head(self.forward_features(x))
        x, aux = self._forward_features(x, with_aux=True)
        return (self.forward_head(x), *aux)

    def classifier_names(self) -> list[str]:
        return [self.classifier_attr] + [f"{name}.fc2" for name in ("aux1", "aux2") if getattr(self, name) is not None]

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final layer and the auxiliary classifiers' last layers."""
        super().reset_classifier(num_classes)
        for aux in (self.aux1, self.aux2):
            if aux is not None:
                aux.reset_classifier(num_classes)


def _init_weights(model: nn.Module) -> None:
    """Truncated N(0, 0.01) for convolution and linear weights, as torchvision's ``init_weights``."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _create(spec: GoogLeNetSpec, num_classes: int, in_chans: int, **kwargs: Any) -> GoogLeNet:
    return GoogLeNet(num_classes=num_classes, in_chans=in_chans, spec=spec, **kwargs)


@register_model(family="googlenet", input_size=224, paper=_PAPER, torchvision=True)
def googlenet(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> GoogLeNet:
    """GoogLeNet (Inception v1), torchvision layout, auxiliary classifiers on by default."""
    return _create(CANONICAL, num_classes, in_chans, **kwargs)


@register_model(family="googlenet", input_size=32, paper=_PAPER)
def googlenet_small(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> GoogLeNet:
    """GoogLeNet for 32x32 inputs: quarter widths, 3x3/1 stem, one stem pool, 2x2 auxiliary pools."""
    return _create(SMALL, num_classes, in_chans, **kwargs)
